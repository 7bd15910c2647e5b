//! Element-by-element functions of activations: the softmax of attention scores, SiLU and GELU.
//! libm's `expf` is one call per element, which no compiler vectorizes; [`exp`] is a polynomial in
//! plain arithmetic, so the loops around it are [`multiversion`]ed into 16-wide AVX-512 (ggml does
//! the same with its `ggml_v_expf`). GELU is ggml's table lookup, its index the input's f16 bits.
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

crate::multiversion::multiversion! {
    /// GELU-gated linear unit, the way ggml's CPU backend computes GELU (tanh approximation):
    /// `gate[i] = gelu(gate[i]) · up[i]`, with `gelu` looked up in a table of its f16 results by
    /// the input rounded to f16 (inputs past ±10 give 0 or themselves).
    ///
    /// # Panics
    /// If the slices differ in length.
    pub fn gelu_mul(gate: &mut [f32], up: &[f32]) = gelu_mul_body;
}

#[inline(always)]
fn gelu_mul_body(gate: &mut [f32], up: &[f32]) {
    assert_eq!(
        gate.len(),
        up.len(),
        "gelu_mul: gate and up differ in length"
    );
    let table = gelu_table();
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        // Looked up for every x, and then chosen without a branch: the loop vectorizes.
        let t = table[f32_to_f16_bits(x) as usize];
        let y = if x <= -10.0 {
            0.0
        } else if x >= 10.0 {
            x
        } else {
            t
        };
        *g = y * u;
    }
}

/// GELU of every f16 value, rounded to f16 (kept as f32), by f16 bits: built once, on first use.
fn gelu_table() -> &'static [f32; 1 << 16] {
    static TABLE: std::sync::OnceLock<Box<[f32; 1 << 16]>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        const SQRT_2_OVER_PI: f32 = 0.797_884_6;
        const GELU_COEF_A: f32 = 0.044715;
        let mut table = Box::new([0.0f32; 1 << 16]);
        for (bits, t) in table.iter_mut().enumerate() {
            let x = half::f16::from_bits(bits as u16).to_f32();
            let y = 0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + GELU_COEF_A * x * x)).tanh());
            *t = half::f16::from_f32(y).to_f32();
        }
        table
    })
}

use crate::formats::f32_to_f16_bits;

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

    #[test]
    fn gelu_mul_is_the_table_lookup() {
        let xs: Vec<f32> = (-1300..1300)
            .map(|i| i as f32 / 97.0)
            .chain([f32::NAN])
            .collect();
        let up: Vec<f32> = xs.iter().map(|x| 1.5 - x / 7.0).collect();
        let mut gate = xs.clone();
        gelu_mul(&mut gate, &up);
        for ((&g, &x), &u) in gate.iter().zip(&xs).zip(&up) {
            let y = if x <= -10.0 {
                0.0
            } else if x >= 10.0 {
                x
            } else {
                gelu_table()[half::f16::from_f32(x).to_bits() as usize]
            };
            assert!(
                g.to_bits() == (y * u).to_bits() || (g.is_nan() && x.is_nan()),
                "{x}: {g}"
            );
            let exact = 0.5 * x * (1.0 + (0.797_884_6 * x * (1.0 + 0.044715 * x * x)).tanh());
            assert!(
                x.is_nan() || (y - exact).abs() <= 1e-3 * exact.abs().max(1.0),
                "{x}"
            );
        }
    }
}
