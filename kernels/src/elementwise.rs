//! Element-by-element functions of activations that need `exp`: the softmax of attention scores
//! and SiLU. libm's `expf` is one call per element, which no compiler vectorizes; [`exp`] is a
//! polynomial in plain arithmetic, so the loops around it are [`multiversion`]ed into 16-wide
//! AVX-512 (ggml does the same with its `ggml_v_expf`).
//!
//! [`multiversion`]: crate::multiversion

/// `e^x` within 2 ulp of the exact value wherever that is a normal f32 (`x` in [-87.3, 88.72]);
/// below, subnormal results within 2 of the smallest subnormal, and 0 from about -103.9 on
/// (-infinity included); above, infinity; NaN stays NaN.
///
/// Cephes' method: `x = n·ln2 + r` with `n` an integer and `|r| ≤ ln2/2`, `e^r` by a degree-6
/// polynomial, and `2^n` put into exponent bits.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n · LN2_HI is exact for the n here (|n| < 2^14).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2^23: adding it rounds to an integer, halfway cases to even.
    const ROUND: f32 = 12_582_912.0;
    // Past these the result is 0 or infinity anyway; inside them n fits the two scales below.
    let x = x.clamp(-110.0, 89.0);
    let n = x.mul_add(LOG2E, ROUND) - ROUND;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let mut p = 1.987_569_1e-4f32;
    p = p.mul_add(r, 1.398_2e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let er = (p * r).mul_add(r, r) + 1.0;
    // 2^n as two powers of two, each a normal f32 for n in [-159, 128]: the product then
    // overflows, or rounds into the subnormals, exactly once. (NaN makes n 0: NaN · 1.)
    let n = n as i32;
    let half = n >> 1;
    let pow2 = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    er * pow2(half) * pow2(n - half)
}

crate::multiversion::multiversion! {
    /// Attention's softmax numerators: `scores[i] = e^(scores[i] · scale - max)`, returning
    /// their sum (for the caller to divide by). `max` is the largest `score · scale`, so every
    /// exponent is at most 0.
    pub fn softmax_numerators(scores: &mut [f32], scale: f32, max: f32) -> f32 = softmax_body;
}

#[inline(always)]
fn softmax_body(scores: &mut [f32], scale: f32, max: f32) -> f32 {
    // Sixteen running sums (one vector), added up at the end.
    let mut sums = [0.0f32; 16];
    let mut chunks = scores.chunks_exact_mut(16);
    for c in &mut chunks {
        for (s, sum) in c.iter_mut().zip(&mut sums) {
            *s = exp(s.mul_add(scale, -max));
            *sum += *s;
        }
    }
    let mut total = sums.iter().sum::<f32>();
    for s in chunks.into_remainder() {
        *s = exp(s.mul_add(scale, -max));
        total += *s;
    }
    total
}

crate::multiversion::multiversion! {
    /// The largest of `xs` (-infinity for none); NaNs are skipped.
    pub fn max(xs: &[f32]) -> f32 = max_body;
}

#[inline(always)]
fn max_body(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let mut chunks = xs.chunks_exact(16);
    for c in &mut chunks {
        for (m, &x) in lanes.iter_mut().zip(c) {
            *m = m.max(x);
        }
    }
    chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x))
}

crate::multiversion::multiversion! {
    /// SiLU-gated linear unit: `gate[i] = silu(gate[i]) · up[i]`, `silu(g) = g / (1 + e^-g)`.
    ///
    /// # Panics
    /// If the slices differ in length.
    pub fn silu_mul(gate: &mut [f32], up: &[f32]) = silu_mul_body;
}

#[inline(always)]
fn silu_mul_body(gate: &mut [f32], up: &[f32]) {
    assert_eq!(
        gate.len(),
        up.len(),
        "silu_mul: gate and up differ in length"
    );
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + exp(-*g)) * u;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two finite f32s of the same sign.
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let smallest = f32::from_bits(1);
        let mut worst = (0, 0.0f32);
        // Every 97th f32 bit pattern up to 89: about 11 million points, both signs.
        for bits in (0..0x42b2_0000u32).step_by(97) {
            for x in [f32::from_bits(bits), -f32::from_bits(bits)] {
                let (got, want) = (exp(x), (x as f64).exp());
                if want < f32::MIN_POSITIVE as f64 {
                    assert!(
                        (got as f64 - want).abs() <= 2.0 * smallest as f64,
                        "exp({x}) = {got:e}, not {want:e}"
                    );
                    continue;
                }
                let d = ulps(got, want as f32);
                if d > worst.0 {
                    worst = (d, x);
                }
            }
        }
        assert!(worst.0 <= 2, "exp({}) is {} ulp off", worst.1, worst.0);
    }

    #[test]
    fn exp_edges() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-1000.0), 0.0);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        let top = exp(88.7);
        assert!(top.is_finite() && ulps(top, (88.7f32 as f64).exp() as f32) <= 2);
    }

    #[test]
    fn softmax_silu_and_max_match_plain_loops() {
        for n in [0, 1, 15, 16, 17, 100, 513] {
            let xs: Vec<f32> = (0..n)
                .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 37.0)
                .collect();
            let m = max(&xs);
            let want_max = xs.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            assert_eq!(m, want_max);

            let scale = 0.125;
            let mut got = xs.clone();
            let sum = softmax_numerators(&mut got, scale, m * scale);
            let mut want_sum = 0.0f64;
            for (g, &x) in got.iter().zip(&xs) {
                let w = ((x * scale - m * scale) as f64).exp();
                want_sum += w;
                assert!((*g as f64 - w).abs() <= 1e-6 * w.max(1e-30), "{g} vs {w}");
            }
            assert!((sum as f64 - want_sum).abs() <= 1e-5 * want_sum.max(1.0));

            let up: Vec<f32> = xs.iter().map(|x| 1.0 - x / 3.0).collect();
            let mut gate = xs.clone();
            silu_mul(&mut gate, &up);
            for ((g, &x), &u) in gate.iter().zip(&xs).zip(&up) {
                let w = x as f64 / (1.0 + (-x as f64).exp()) * u as f64;
                assert!(
                    (*g as f64 - w).abs() <= 1e-6 * w.abs().max(1e-6),
                    "{g} vs {w}"
                );
            }
        }
        assert_eq!(max(&[f32::NAN, 1.0]), 1.0);
    }
}
