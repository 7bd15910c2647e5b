//! Quantization of weights: ggml's reference quantizers (`quantize_row_*_ref` in ggml-quants.c),
//! bit for bit, which is what `llama-quantize` runs when it has no importance matrix.
//!
//! Bit-exactness is the point (a model quantized here is byte-identical to llama.cpp's), so every
//! expression keeps C's evaluation order and types: `w*x[i]*l` is `(w * x) * l as f32`, an `int`
//! stored into a `uint8_t` wraps, `(int8_t)f` truncates toward zero. Rust never fuses a multiply
//! and an add, and neither does ggml's C (it is compiled as ISO C11, where GCC does not contract),
//! so the same operations round the same way. The loops are scalar: quantizing is done once, offline.

use crate::formats::{
    blocks_mut, f16_le, f16_to_le, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K,
    BlockQ5_0, BlockQ5_1, BlockQ6K,
};
use ggml_types::{GgmlType, QK_K};

/// ggml's nearest_int: adding 1.5 * 2^23 leaves the rounded integer (halfway cases to even) in
/// the low mantissa bits. Valid for |x| <= 2^22, which quants are far inside.
#[inline(always)]
pub(crate) fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// ggml's threshold below which a group counts as all zeros.
const GROUP_MAX_EPS: f32 = 1e-15;

/// Quantizes `src` (whole blocks) into `dst` (exactly their bytes) as ggml's reference quantizer
/// of `ty` does. Only the weight-only formats come here; Q8_0 and the float types are shared with
/// the activations (`quantize::quantize`).
pub(crate) fn quantize_weights(ty: GgmlType, src: &[f32], dst: &mut [u8]) {
    match ty {
        GgmlType::Q4_0 => q4_0(src, blocks_mut(dst)),
        GgmlType::Q4_1 => q4_1(src, blocks_mut(dst)),
        GgmlType::Q5_0 => q5_0(src, blocks_mut(dst)),
        GgmlType::Q5_1 => q5_1(src, blocks_mut(dst)),
        GgmlType::Q2_K => q2_k(src, blocks_mut(dst)),
        GgmlType::Q3_K => q3_k(src, blocks_mut(dst)),
        GgmlType::Q4_K => q4_k(src, blocks_mut(dst)),
        GgmlType::Q5_K => q5_k(src, blocks_mut(dst)),
        GgmlType::Q6_K => q6_k(src, blocks_mut(dst)),
        other => unreachable!("{} is not a weight-only format", other.name()),
    }
}

/// The element of largest magnitude (the first one on ties), with its sign.
fn signed_absmax(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// C's MIN/MAX over floats: `a < b ? a : b` style, which keeps ggml's NaN behaviour.
fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// The 32 levels of a Q4_0/Q4_1/Q5_0/Q5_1 block of `bits`-bit levels, with the block's scale and
/// minimum, as ggml computes them: the _0 formats scale the element of largest magnitude to the
/// lowest level (minimum 0), the _1 formats span minimum to maximum; a level is the scaled value
/// plus the offset, truncated, and at most the top level.
fn legacy_levels(x: &[f32], bits: u32, asymmetric: bool) -> ([u8; 32], f32, f32) {
    let top = (1i8 << bits) - 1;
    let (d, min, offset) = if asymmetric {
        let (min, max) = min_max(x);
        ((max - min) / top as f32, min, 0.5)
    } else {
        let half = f32::from(1u8 << (bits - 1));
        (signed_absmax(x) / -half, 0.0, half + 0.5)
    };
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut levels = [0u8; 32];
    for (l, &v) in levels.iter_mut().zip(x) {
        let scaled = if asymmetric { (v - min) * id } else { v * id };
        *l = ((scaled + offset) as i8).min(top) as u8;
    }
    (levels, d, min)
}

/// The low nibbles of 32 levels: elements 0..16 in the low halves of the bytes, 16..32 in the high.
fn low_nibbles(levels: &[u8; 32]) -> [u8; 16] {
    std::array::from_fn(|j| (levels[j] & 0x0f) | ((levels[j + 16] & 0x0f) << 4))
}

/// The fifth bits of 32 levels: bit j of the little-endian word belongs to element j.
fn fifth_bits(levels: &[u8; 32]) -> [u8; 4] {
    let qh = (0..32).fold(0u32, |qh, j| qh | (u32::from(levels[j] >> 4) << j));
    qh.to_le_bytes()
}

fn q4_0(x: &[f32], y: &mut [BlockQ4_0]) {
    for (b, x) in y.iter_mut().zip(x.chunks_exact(32)) {
        let (levels, d, _) = legacy_levels(x, 4, false);
        b.d = f16_to_le(d);
        b.qs = low_nibbles(&levels);
    }
}

fn q4_1(x: &[f32], y: &mut [BlockQ4_1]) {
    for (b, x) in y.iter_mut().zip(x.chunks_exact(32)) {
        let (levels, d, min) = legacy_levels(x, 4, true);
        b.d = f16_to_le(d);
        b.m = f16_to_le(min);
        b.qs = low_nibbles(&levels);
    }
}

fn q5_0(x: &[f32], y: &mut [BlockQ5_0]) {
    for (b, x) in y.iter_mut().zip(x.chunks_exact(32)) {
        let (levels, d, _) = legacy_levels(x, 5, false);
        b.d = f16_to_le(d);
        b.qh = fifth_bits(&levels);
        b.qs = low_nibbles(&levels);
    }
}

fn q5_1(x: &[f32], y: &mut [BlockQ5_1]) {
    for (b, x) in y.iter_mut().zip(x.chunks_exact(32)) {
        let (levels, d, min) = legacy_levels(x, 5, true);
        b.d = f16_to_le(d);
        b.m = f16_to_le(min);
        b.qh = fifth_bits(&levels);
        b.qs = low_nibbles(&levels);
    }
}

/// How a format searches its asymmetric group scales (make_qkx2_quants' arguments).
struct Qkx2 {
    /// Levels `0..=nmax`.
    nmax: i32,
    /// Candidate scales `(nmax + rmin + rdelta * is) / (max - min)` for `is` in `0..=nstep`.
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    /// Weigh absolute errors (Q2_K) instead of squared ones.
    use_mad: bool,
}

const Q2K_SEARCH: Qkx2 = Qkx2 {
    nmax: 3,
    rmin: -0.5,
    rdelta: 0.1,
    nstep: 15,
    use_mad: true,
};
const Q4K_SEARCH: Qkx2 = Qkx2 {
    nmax: 15,
    rmin: -1.0,
    rdelta: 0.1,
    nstep: 20,
    use_mad: false,
};
const Q5K_SEARCH: Qkx2 = Qkx2 {
    nmax: 31,
    rmin: -0.5,
    rdelta: 0.1,
    nstep: 15,
    use_mad: false,
};

/// ggml's make_qkx2_quants: the scale and (negated) minimum of an asymmetric `nmax`-level
/// quantization of `x` minimizing the weighted error, searched over `nstep + 1` candidate scales
/// around `nmax / (max - min)`. Returns `(scale, the_min)` and leaves the levels in `l`.
fn make_qkx2_quants(search: &Qkx2, x: &[f32], weights: &[f32], l: &mut [u8]) -> (f32, f32) {
    let Qkx2 {
        nmax,
        rmin,
        rdelta,
        nstep,
        use_mad,
    } = *search;
    let n = x.len();
    let mut laux = [0u8; 32];
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l[..n].fill(0);
        return (0.0, -min);
    }
    let error = |scale: f32, min: f32, levels: &[u8]| {
        let mut err = 0.0f32;
        for i in 0..n {
            let diff = scale * levels[i] as f32 + min - x[i];
            let diff = if use_mad { diff.abs() } else { diff * diff };
            err += weights[i] * diff;
        }
        err
    };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    for i in 0..n {
        l[i] = nearest_int(iscale * (x[i] - min)).clamp(0, nmax) as u8;
    }
    let mut best_error = error(scale, min, l);
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = q as u8;
            let (w, q) = (weights[i], q as f32);
            sum_l += w * q;
            sum_l2 += w * q * q;
            sum_xl += w * q * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let cur_error = error(this_scale, this_min, &laux);
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml's make_q3_quants with its RMSE refinement: a symmetric `2 * nmax`-level quantization of
/// 16 values, levels left in `l` offset by `nmax`. Returns the scale.
fn make_q3_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let max = signed_absmax(x);
    if max.abs() < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (q, &v) in l.iter_mut().zip(x) {
        let li = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        *q = li as i8;
        let w = v * v;
        sumlx += w * v * li as f32;
        suml2 += w * li as f32 * li as f32;
    }
    for _ in 0..5 {
        let mut changed = false;
        for (q, &v) in l.iter_mut().zip(x) {
            let w = v * v;
            let cur = *q as f32;
            let mut slx = sumlx - w * v * cur;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * cur * cur;
                let new_l = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != *q as i32 {
                    slx += w * v * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *q = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for q in l.iter_mut() {
        *q += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// ggml's make_qx_quants with `rmse_type` 1 (weights x², no early return), as Q6_K uses it:
/// a symmetric `2 * nmax`-level quantization, the scale refined over 18 neighbouring candidates.
fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let max = signed_absmax(x);
    if max.abs() < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for &v in x {
            let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1) as f32;
            let w = v * v;
            sumlx += w * v * q;
            suml2 += w * q * q;
        }
        (sumlx, suml2)
    };
    let levels = |iscale: f32, l: &mut [i8]| {
        for (q, &v) in l.iter_mut().zip(x) {
            *q = (nmax + nearest_int(iscale * v).clamp(-nmax, nmax - 1)) as i8;
        }
    };
    let iscale = -(nmax as f32) / max;
    levels(iscale, l);
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            levels(iscale, l);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Packs 2-bit levels as Q2_K and Q3_K store them: byte `l` of each 32-byte run holds elements
/// `l`, `l + 32`, `l + 64` and `l + 96` of a 128-element half.
fn pack_2bit(levels: &[u8; QK_K], qs: &mut [u8; QK_K / 4]) {
    for (half, q) in levels.chunks_exact(128).zip(qs.chunks_exact_mut(32)) {
        for l in 0..32 {
            q[l] = half[l] | (half[l + 32] << 2) | (half[l + 64] << 4) | (half[l + 96] << 6);
        }
    }
}

/// The groups of a Q2_K/Q4_K/Q5_K super-block: each one's scale and (negated) minimum from
/// make_qkx2_quants, and the largest of each, which the 4- or 6-bit group scales are relative to.
struct Groups {
    scales: [f32; QK_K / 16],
    mins: [f32; QK_K / 16],
    max_scale: f32,
    max_min: f32,
}

/// make_qkx2_quants on each `len`-element group of the super-block `x`, with the weights
/// `weights(group)` gives, leaving the levels in `levels`.
fn group_scales(
    x: &[f32],
    len: usize,
    search: &Qkx2,
    weights: impl Fn(&[f32], &mut [f32]),
    levels: &mut [u8; QK_K],
) -> Groups {
    let mut g = Groups {
        scales: [0.0; QK_K / 16],
        mins: [0.0; QK_K / 16],
        max_scale: 0.0,
        max_min: 0.0,
    };
    let mut w = [0.0f32; 32];
    for (j, group) in x.chunks_exact(len).enumerate() {
        weights(group, &mut w[..len]);
        let (scale, min) = make_qkx2_quants(
            search,
            group,
            &w[..len],
            &mut levels[len * j..len * (j + 1)],
        );
        (g.scales[j], g.mins[j]) = (scale, min);
        if scale > g.max_scale {
            g.max_scale = scale;
        }
        if min > g.max_min {
            g.max_min = min;
        }
    }
    g
}

fn q2_k(x: &[f32], y: &mut [BlockQ2K]) {
    const Q4SCALE: f32 = 15.0;
    for (b, x) in y.iter_mut().zip(x.chunks_exact(QK_K)) {
        let mut levels = [0u8; QK_K];
        let Groups {
            scales,
            mins,
            max_scale,
            max_min,
        } = group_scales(
            x,
            16,
            &Q2K_SEARCH,
            |g, w| {
                for (w, v) in w.iter_mut().zip(g) {
                    *w = v.abs();
                }
            },
            &mut levels,
        );
        if max_scale > 0.0 {
            let iscale = Q4SCALE / max_scale;
            for (q, &scale) in b.scales.iter_mut().zip(&scales) {
                *q = nearest_int(iscale * scale) as u8;
            }
            b.d = f16_to_le(max_scale / Q4SCALE);
        } else {
            b.scales = [0; QK_K / 16];
            b.d = f16_to_le(0.0);
        }
        if max_min > 0.0 {
            let iscale = Q4SCALE / max_min;
            for (q, &min) in b.scales.iter_mut().zip(&mins) {
                *q |= (nearest_int(iscale * min) << 4) as u8;
            }
            b.dmin = f16_to_le(max_min / Q4SCALE);
        } else {
            b.dmin = f16_to_le(0.0);
        }
        let (d_all, dmin_all) = (f16_le(b.d), f16_le(b.dmin));
        for j in 0..QK_K / 16 {
            let d = d_all * (b.scales[j] & 0xf) as f32;
            if d == 0.0 {
                continue;
            }
            let dm = dmin_all * (b.scales[j] >> 4) as f32;
            for ii in 0..16 {
                levels[16 * j + ii] = nearest_int((x[16 * j + ii] + dm) / d).clamp(0, 3) as u8;
            }
        }
        pack_2bit(&levels, &mut b.qs);
    }
}

fn q3_k(x: &[f32], y: &mut [BlockQ3K]) {
    for (b, x) in y.iter_mut().zip(x.chunks_exact(QK_K)) {
        let mut levels = [0i8; QK_K];
        let mut scales = [0.0f32; QK_K / 16];
        let (mut max_scale, mut amax) = (0.0f32, 0.0f32);
        for j in 0..QK_K / 16 {
            scales[j] =
                make_q3_quants(4, &x[16 * j..16 * j + 16], &mut levels[16 * j..16 * j + 16]);
            if scales[j].abs() > amax {
                amax = scales[j].abs();
                max_scale = scales[j];
            }
        }
        b.scales = [0; 12];
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for (j, &scale) in scales.iter().enumerate() {
                // C stores nearest_int's result in an int8_t before clamping.
                let l = ((nearest_int(iscale * scale) as i8).clamp(-32, 31) + 32) as u8;
                if j < 8 {
                    b.scales[j] = l & 0xf;
                } else {
                    b.scales[j - 8] |= (l & 0xf) << 4;
                }
                b.scales[j % 4 + 8] |= (l >> 4) << (2 * (j / 4));
            }
            b.d = f16_to_le(1.0 / iscale);
        } else {
            b.d = f16_to_le(0.0);
        }
        let d_all = f16_le(b.d);
        let sc = crate::formats::q3k_scales(&b.scales);
        for j in 0..QK_K / 16 {
            let d = d_all * sc[j] as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                levels[16 * j + ii] = (nearest_int(x[16 * j + ii] / d).clamp(-4, 3) + 4) as i8;
            }
        }
        // The high bit of element j goes to bit j / 32 of hmask byte j % 32.
        b.hmask = [0; QK_K / 8];
        let mut low = [0u8; QK_K];
        for (j, (&q, lo)) in levels.iter().zip(low.iter_mut()).enumerate() {
            let mut q = q as u8;
            if q > 3 {
                b.hmask[j % (QK_K / 8)] |= 1 << (j / (QK_K / 8));
                q -= 4;
            }
            *lo = q;
        }
        pack_2bit(&low, &mut b.qs);
    }
}

/// The scales and mins of Q4_K and Q5_K: per 32-element group, make_qkx2_quants with weights
/// `rms + |x|`; then both quantized to 6 bits against their maxima and packed in 12 bytes
/// (the layout `formats::k4_scales_mins` reads). Leaves the final levels in `levels`.
/// The header Q4_K and Q5_K share: super-block scale and minimum scale, and the 12 bytes of
/// 6-bit group scales and mins.
struct K4Header {
    d: [u8; 2],
    dmin: [u8; 2],
    scales: [u8; 12],
}

fn k4_scales(x: &[f32], search: &Qkx2, levels: &mut [u8; QK_K]) -> K4Header {
    let nmax = search.nmax;
    let mut packed = [0u8; 12];
    let Groups {
        scales,
        mins,
        max_scale,
        max_min,
    } = group_scales(
        x,
        32,
        search,
        |g, w| {
            let mut sum_x2 = 0.0f32;
            for &v in g {
                sum_x2 += v * v;
            }
            let av_x = (sum_x2 / 32.0).sqrt();
            for (w, &v) in w.iter_mut().zip(g) {
                *w = av_x + v.abs();
            }
        },
        levels,
    );
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    for j in 0..QK_K / 32 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    let header = K4Header {
        d: f16_to_le(max_scale / 63.0),
        dmin: f16_to_le(max_min / 63.0),
        scales: packed,
    };
    let (sc, mn) = crate::formats::k4_scales_mins(&header.scales);
    let (d_all, dmin_all) = (f16_le(header.d), f16_le(header.dmin));
    for j in 0..QK_K / 32 {
        let d = d_all * sc[j] as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * mn[j] as f32;
        for ii in 0..32 {
            levels[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / d).clamp(0, nmax) as u8;
        }
    }
    header
}

fn q4_k(x: &[f32], y: &mut [BlockQ4K]) {
    for (b, x) in y.iter_mut().zip(x.chunks_exact(QK_K)) {
        let mut levels = [0u8; QK_K];
        let header = k4_scales(x, &Q4K_SEARCH, &mut levels);
        (b.d, b.dmin, b.scales) = (header.d, header.dmin, header.scales);
        for (q, half) in b.qs.chunks_exact_mut(32).zip(levels.chunks_exact(64)) {
            for l in 0..32 {
                q[l] = half[l] | (half[l + 32] << 4);
            }
        }
    }
}

fn q5_k(x: &[f32], y: &mut [BlockQ5K]) {
    for (b, x) in y.iter_mut().zip(x.chunks_exact(QK_K)) {
        let mut levels = [0u8; QK_K];
        let header = k4_scales(x, &Q5K_SEARCH, &mut levels);
        (b.d, b.dmin, b.scales) = (header.d, header.dmin, header.scales);
        b.qh = [0; QK_K / 8];
        // Each 64-element run: low nibbles of elements l and l + 32 share byte l; their fifth
        // bits go to bits 2k and 2k + 1 of qh[l] for run k.
        for (k, (q, half)) in
            b.qs.chunks_exact_mut(32)
                .zip(levels.chunks_exact(64))
                .enumerate()
        {
            for l in 0..32 {
                let (lo, hi) = (half[l], half[l + 32]);
                b.qh[l] |= ((lo >> 4) << (2 * k)) | ((hi >> 4) << (2 * k + 1));
                q[l] = (lo & 0xf) | ((hi & 0xf) << 4);
            }
        }
    }
}

fn q6_k(x: &[f32], y: &mut [BlockQ6K]) {
    for (b, x) in y.iter_mut().zip(x.chunks_exact(QK_K)) {
        let mut levels = [0i8; QK_K];
        let mut scales = [0.0f32; QK_K / 16];
        let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
        for ib in 0..QK_K / 16 {
            let scale = make_qx_quants(
                32,
                &x[16 * ib..16 * ib + 16],
                &mut levels[16 * ib..16 * ib + 16],
            );
            scales[ib] = scale;
            if scale.abs() > max_abs_scale {
                max_abs_scale = scale.abs();
                max_scale = scale;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            *b = BlockQ6K {
                ql: [0; QK_K / 2],
                qh: [0; QK_K / 4],
                scales: [0; QK_K / 16],
                d: f16_to_le(0.0),
            };
            continue;
        }
        let iscale = -128.0 / max_scale;
        b.d = f16_to_le(1.0 / iscale);
        for (q, &scale) in b.scales.iter_mut().zip(&scales) {
            *q = nearest_int(iscale * scale).min(127) as i8;
        }
        let d_all = f16_le(b.d);
        for j in 0..QK_K / 16 {
            let d = d_all * b.scales[j] as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                levels[16 * j + ii] = (nearest_int(x[16 * j + ii] / d).clamp(-32, 31) + 32) as i8;
            }
        }
        for (k, half) in levels.chunks_exact(128).enumerate() {
            let (ql, qh) = (
                &mut b.ql[64 * k..64 * k + 64],
                &mut b.qh[32 * k..32 * k + 32],
            );
            for l in 0..32 {
                let q = [half[l], half[l + 32], half[l + 64], half[l + 96]].map(|v| v as u8);
                ql[l] = (q[0] & 0xf) | ((q[2] & 0xf) << 4);
                ql[l + 32] = (q[1] & 0xf) | ((q[3] & 0xf) << 4);
                qh[l] = (q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) | ((q[3] >> 4) << 6);
            }
        }
    }
}
