//! Conversion of f32 activations to the type a weight's dot product wants (its `vec_dot_type`),
//! as ggml's quantize_row_q8_0_ref / q8_1_ref / q8_K_ref and its f16/bf16 conversions do it.

use crate::formats::{
    blocks_mut, f16_bits_to_f32, f16_to_le, f32_to_bf16_bits, f32_to_f16_bits, BlockQ8K, BlockQ8_0,
    BlockQ8_1, Q8_0Act,
};
use crate::quantize_weights::nearest_int;
use ggml_types::GgmlType;
use half::f16;

crate::multiversion::multiversion! {
    /// Converts `src` into `dst`, which is exactly `src.len()` elements' worth of `ty` bytes. The
    /// weight-only formats (Q4_0 ... Q6_K) go to `quantize_weights`: ggml never produces them
    /// for activations, only offline.
    pub(crate) fn quantize(ty: GgmlType, src: &[f32], dst: &mut [u8]) = quantize_body;
}

#[inline(always)]
fn quantize_body(ty: GgmlType, src: &[f32], dst: &mut [u8]) {
    match ty {
        GgmlType::F32 => {
            for (d, &s) in dst.chunks_exact_mut(4).zip(src) {
                d.copy_from_slice(&s.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (d, &s) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&f16_to_le(s));
            }
        }
        GgmlType::BF16 => {
            for (d, &s) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&f32_to_bf16_bits(s).to_le_bytes());
            }
        }
        GgmlType::Q8_0 => q8_0(src, blocks_mut(dst)),
        GgmlType::Q8_1 => q8_1(src, blocks_mut(dst)),
        GgmlType::Q8_K => q8_k(src, blocks_mut(dst)),
        weight => crate::quantize_weights::quantize_weights(weight, src, dst),
    }
}

/// Converts one row of activations into the row the kernels for `ty` weights take
/// ([`crate::act_row_bytes`] long): `quantize`d to `vec_dot_type(ty)`, then completed.
pub(crate) fn quantize_act(ty: GgmlType, src: &[f32], dst: &mut [u8]) {
    let act_ty = crate::vec_dot_type(ty);
    let bytes = crate::row_bytes(act_ty, src.len(), "activations");
    quantize(act_ty, src, &mut dst[..bytes]);
    complete_act_row(act_ty, src.len(), dst);
}

/// Adds to an `n`-element row in `act_ty` what the kernels take after it: Q8_0's per-block f32s
/// ([`Q8_0Act`]); other rows are complete as they are.
pub(crate) fn complete_act_row(act_ty: GgmlType, n: usize, row: &mut [u8]) {
    if act_ty == GgmlType::Q8_0 {
        Q8_0Act::write_sums(n, row);
    }
}

/// ggml's MAX(a, b) is `a > b ? a : b`; kept as such so NaNs propagate the way they do in ggml.
#[inline(always)]
fn c_max(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// The scale of a Q8_0/Q8_1 block and its inverse: `d = amax / 127`, `id = 1 / d` (0 for an all-zero block).
#[inline(always)]
fn q8_scale(x: &[f32]) -> (f32, f32) {
    // Eight running maxima, then their maximum: the same value for any finite input (a maximum
    // does not depend on order) and a loop the compiler vectorizes, where one running maximum is
    // a chain of dependent compares. (With NaNs ggml's result depends on their positions anyway.)
    let mut lanes = [0.0f32; 8];
    for c in x.chunks_exact(8) {
        for i in 0..8 {
            lanes[i] = c_max(lanes[i], c[i].abs());
        }
    }
    let amax = lanes.iter().fold(0.0f32, |m, &v| c_max(m, v));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    (d, id)
}

/// C's roundf (halfway cases away from zero) for |x| < 2^23, the range of quants; NaN gives 0.
/// Written out because `f32::round` is a libm call on baseline x86_64 (no SSE4.1), one per
/// activation; this form vectorizes. `x - trunc(x)` is exact there.
#[inline(always)]
fn round_away(x: f32) -> i32 {
    // Limited to ±2^23 (NaN to 0) before converting: a plain `as` must saturate out-of-range
    // values, which kept the compiler from vectorizing it (Q8_0 quantization ran 2x slower).
    const LIMIT: f32 = (1 << 23) as f32;
    let x = if x.is_nan() {
        0.0
    } else {
        x.clamp(-LIMIT, LIMIT)
    };
    // SAFETY: x is finite and inside i32's range.
    let t = unsafe { x.to_int_unchecked::<i32>() };
    let frac = x - t as f32;
    t + (frac >= 0.5) as i32 - (frac <= -0.5) as i32
}

#[inline(always)]
fn q8_0(x: &[f32], y: &mut [BlockQ8_0]) {
    for (b, x) in y.iter_mut().zip(x.chunks_exact(32)) {
        let (d, id) = q8_scale(x);
        b.d = f16_to_le(d);
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = round_away(v * id) as i8;
        }
    }
}

#[inline(always)]
fn q8_1(x: &[f32], y: &mut [BlockQ8_1]) {
    for (b, x) in y.iter_mut().zip(x.chunks_exact(32)) {
        let (d, id) = q8_scale(x);
        b.d = f16_to_le(d);
        let mut sum = 0i32;
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = round_away(v * id) as i8;
            sum += *q as i32;
        }
        b.s = f16_to_le(sum as f32 * d);
    }
}

#[inline(always)]
fn q8_k(x: &[f32], y: &mut [BlockQ8K]) {
    for (b, x) in y.iter_mut().zip(x.chunks_exact(256)) {
        // The element of largest magnitude, the first one on ties; its sign sets the scale's sign.
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            // ggml leaves bsums untouched here; zero is what they sum to.
            *b = BlockQ8K {
                d: [0; 4],
                qs: [0; 256],
                bsums: [0; 32],
            };
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (j, group) in b.qs.chunks_exact(16).enumerate() {
            let sum: i16 = group.iter().map(|&q| q as i16).sum();
            b.bsums[2 * j..2 * j + 2].copy_from_slice(&sum.to_le_bytes());
        }
        b.d = (1.0 / iscale).to_le_bytes();
    }
}

crate::multiversion::multiversion! {
    /// f32 to f16 for a whole row, rounding to nearest even (as F16C does, and ggml with it), in
    /// integer arithmetic that vectorizes (`half`'s conversion probes the CPU every 8 values).
    pub(crate) fn f32_to_f16(src: &[f32], dst: &mut [f16]) = f32_to_f16_body;
}

#[inline(always)]
fn f32_to_f16_body(src: &[f32], dst: &mut [f16]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f16::from_bits(f32_to_f16_bits(s));
    }
}

crate::multiversion::multiversion! {
    /// f16 to f32 for a whole row (exact), vectorized as [`f32_to_f16`].
    pub(crate) fn f16_to_f32(src: &[f16], dst: &mut [f32]) = f16_to_f32_body;
}

#[inline(always)]
fn f16_to_f32_body(src: &[f16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f16_bits_to_f32(s.to_bits());
    }
}

crate::multiversion::multiversion! {
    /// [`crate::scale_add_f16`]'s loop: both of ggml's roundings to f16, in one pass.
    pub(crate) fn scale_add_f16(acc: &mut [f16], acc_scale: f32, v: &[f16], v_scale: f32) = scale_add_f16_body;
}

#[inline(always)]
fn scale_add_f16_body(acc: &mut [f16], acc_scale: f32, v: &[f16], v_scale: f32) {
    let rescale = acc_scale != 1.0;
    for (a, v) in acc.iter_mut().zip(v) {
        let mut x = f16_bits_to_f32(a.to_bits());
        if rescale {
            x = f16_bits_to_f32(f32_to_f16_bits(x * acc_scale));
        }
        // (`mul_add` rather than `v * v_scale + x`: ggml's f16 vector loop is a fused
        // multiply-add, and Rust never contracts the two on its own.)
        let y = f16_bits_to_f32(v.to_bits()).mul_add(v_scale, x);
        *a = f16::from_bits(f32_to_f16_bits(y));
    }
}

#[cfg(test)]
mod tests {
    use super::round_away;
    use crate::quantize_weights::nearest_int;

    /// Both rounding helpers against the std definitions, over every multiple of 1/64 in ±140
    /// (which includes all the halfway cases) and some values just off them.
    #[test]
    fn rounding_helpers_match_std() {
        for i in -140 * 64..=140 * 64 {
            for x in [
                i as f32 / 64.0,
                f32::from_bits((i as f32 / 64.0).to_bits() + 1),
            ] {
                assert_eq!(round_away(x), x.round() as i32, "roundf({x})");
                assert_eq!(
                    nearest_int(x),
                    x.round_ties_even() as i32,
                    "nearest_int({x})"
                );
            }
        }
        assert_eq!(round_away(f32::NAN), 0);
    }
}
