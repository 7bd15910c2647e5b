//! The reference dot products: one per weight type, against that type's `vec_dot_type`, computing
//! exactly what ggml's portable versions (ggml-cpu/quants.c `*_generic`, vec.cpp's scalar path)
//! compute: the same integer sums per block, then the same f32 scale products in the same order.
//!
//! The SIMD variants are tested against these. They are also the fallback on CPUs without them.

use crate::formats::{
    bf16_le, blocks, f16_le, k4_scales_mins, q3k_scales, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0,
    BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1, Q8_0Act,
};
use ggml_types::{GgmlType, QK_K};

/// Dot product of a row of `n` weights of type `ty` with `n` activations in `vec_dot_type(ty)`,
/// computed by the portable reference code whatever the CPU.
///
/// # Panics
/// Under the same conditions as [`crate::vec_dot`].
pub fn vec_dot(ty: GgmlType, n: usize, w: &[u8], act: &[u8]) -> f32 {
    let (w, act) = crate::check_dot_args(ty, n, w, act);
    kernel(ty)(n, w, &act)
}

/// The reference kernel for weights of type `ty`. Kernels take exactly one row of each operand.
pub(crate) fn kernel(ty: GgmlType) -> fn(usize, &[u8], &[u8]) -> f32 {
    match ty {
        GgmlType::F32 => vec_dot_f32,
        GgmlType::F16 => vec_dot_f16,
        GgmlType::BF16 => vec_dot_bf16,
        GgmlType::Q4_0 => vec_dot_q4_0,
        GgmlType::Q4_1 => vec_dot_q4_1,
        GgmlType::Q5_0 => vec_dot_q5_0,
        GgmlType::Q5_1 => vec_dot_q5_1,
        GgmlType::Q8_0 => vec_dot_q8_0,
        GgmlType::Q8_1 => vec_dot_q8_1,
        GgmlType::Q2_K => vec_dot_q2_k,
        GgmlType::Q3_K => vec_dot_q3_k,
        GgmlType::Q4_K => vec_dot_q4_k,
        GgmlType::Q5_K => vec_dot_q5_k,
        GgmlType::Q6_K => vec_dot_q6_k,
        GgmlType::Q8_K => vec_dot_q8_k,
    }
}

/// Float rows: f32 products summed in f64, as ggml's scalar ggml_vec_dot_f32/f16/bf16.
fn float_dot(w: &[u8], act: &[u8], width: usize, decode: impl Fn(&[u8]) -> f32) -> f32 {
    let mut sum = 0.0f64;
    for (x, y) in w.chunks_exact(width).zip(act.chunks_exact(width)) {
        sum += (decode(x) * decode(y)) as f64;
    }
    sum as f32
}

fn vec_dot_f32(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    float_dot(w, act, 4, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn vec_dot_f16(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    float_dot(w, act, 2, |b| f16_le([b[0], b[1]]))
}

fn vec_dot_bf16(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    float_dot(w, act, 2, |b| bf16_le([b[0], b[1]]))
}

/// Σ x[i] * y[i] over a block, in eight i32 lanes so that it vectorizes (the sum is exact, so
/// the order does not matter). The products fit in i16: |x| ≤ 128 and |y| ≤ 128 give ≤ 2^14.
#[inline]
fn i8_dot(x: &[i8], y: &[i8]) -> i32 {
    let mut acc = [0i32; 8];
    for (cx, cy) in x.chunks_exact(8).zip(y.chunks_exact(8)) {
        for ((a, &p), &q) in acc.iter_mut().zip(cx).zip(cy) {
            *a += (p as i16 * q as i16) as i32;
        }
    }
    acc.iter().sum()
}

/// The 32 values of a 4-bit block: low nibbles are elements 0..16, high nibbles 16..32, each
/// plus `offset` and plus 16 where `qh` (if any) has the element's bit set.
#[inline]
fn unpack_32(qs: &[u8; 16], qh: u32, offset: i8) -> [i8; 32] {
    let mut v = [0i8; 32];
    for j in 0..16 {
        let h0 = (((qh >> j) << 4) & 0x10) as u8;
        let h1 = ((qh >> (j + 12)) & 0x10) as u8;
        v[j] = ((qs[j] & 0xf) | h0) as i8 + offset;
        v[j + 16] = ((qs[j] >> 4) | h1) as i8 + offset;
    }
    v
}

fn vec_dot_q4_0(n: usize, w: &[u8], act: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in blocks::<BlockQ4_0>(w)
        .iter()
        .zip(Q8_0Act::new(n, act).blocks)
    {
        let sumi = i8_dot(&unpack_32(&x.qs, 0, -8), &y.qs);
        sumf += sumi as f32 * f16_le(x.d) * f16_le(y.d);
    }
    sumf
}

fn vec_dot_q4_1(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in blocks::<BlockQ4_1>(w).iter().zip(blocks::<BlockQ8_1>(act)) {
        let sumi = i8_dot(&unpack_32(&x.qs, 0, 0), &y.qs);
        sumf += (f16_le(x.d) * f16_le(y.d)) * sumi as f32 + f16_le(x.m) * f16_le(y.s);
    }
    sumf
}

fn vec_dot_q5_0(n: usize, w: &[u8], act: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in blocks::<BlockQ5_0>(w)
        .iter()
        .zip(Q8_0Act::new(n, act).blocks)
    {
        let sumi = i8_dot(&unpack_32(&x.qs, u32::from_le_bytes(x.qh), -16), &y.qs);
        sumf += (f16_le(x.d) * f16_le(y.d)) * sumi as f32;
    }
    sumf
}

fn vec_dot_q5_1(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in blocks::<BlockQ5_1>(w).iter().zip(blocks::<BlockQ8_1>(act)) {
        let sumi = i8_dot(&unpack_32(&x.qs, u32::from_le_bytes(x.qh), 0), &y.qs);
        sumf += (f16_le(x.d) * f16_le(y.d)) * sumi as f32 + f16_le(x.m) * f16_le(y.s);
    }
    sumf
}

fn vec_dot_q8_0(n: usize, w: &[u8], act: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in blocks::<BlockQ8_0>(w)
        .iter()
        .zip(Q8_0Act::new(n, act).blocks)
    {
        sumf += i8_dot(&x.qs, &y.qs) as f32 * (f16_le(x.d) * f16_le(y.d));
    }
    sumf
}

/// Q8_1 and Q8_K are activation formats that ggml never dots with themselves; pairing each with
/// itself like Q8_0 keeps every type usable as a weight instead of failing on an odd file.
fn vec_dot_q8_1(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in blocks::<BlockQ8_1>(w).iter().zip(blocks::<BlockQ8_1>(act)) {
        sumf += i8_dot(&x.qs, &y.qs) as f32 * (f16_le(x.d) * f16_le(y.d));
    }
    sumf
}

fn vec_dot_q8_k(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in blocks::<BlockQ8K>(w).iter().zip(blocks::<BlockQ8K>(act)) {
        sumf += i8_dot(&x.qs, &y.qs) as f32 * (x.scale() * y.scale());
    }
    sumf
}

fn vec_dot_q2_k(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in blocks::<BlockQ2K>(w).iter().zip(blocks::<BlockQ8K>(act)) {
        let summs: i32 = (0..16)
            .map(|j| y.bsum(j) as i32 * (x.scales[j] >> 4) as i32)
            .sum();
        let dall = y.scale() * f16_le(x.d);
        let dmin = y.scale() * f16_le(x.dmin);
        let mut isum = 0i32;
        // Groups of 16 in output order: half h, bit pair s, first or second 16 bytes g.
        for (h, q2) in x.qs.chunks_exact(32).enumerate() {
            for s in 0..4 {
                for g in 0..2 {
                    let group = h * 8 + s * 2 + g;
                    let q8 = &y.qs[group * 16..group * 16 + 16];
                    let q2 = &q2[g * 16..g * 16 + 16];
                    let isuml: i32 = q8
                        .iter()
                        .zip(q2)
                        .map(|(&a, &b)| a as i32 * ((b >> (2 * s)) & 3) as i32)
                        .sum();
                    isum += (x.scales[group] & 0xf) as i32 * isuml;
                }
            }
        }
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

/// ggml's k-quant dot products accumulate `scale * q8 * q` in eight i32 lanes (element i into lane
/// i % 8), scale each lane by the block's f32 factor into eight f32 sums, and add those up at the
/// end. Only the f32 steps can round, so this keeps exactly those: `lanes` per block, `sums` across.
struct Lanes {
    sums: [f32; 8],
}

impl Lanes {
    fn new() -> Self {
        Lanes { sums: [0.0; 8] }
    }

    /// Adds one block: `q` the 256 weight values, `scale_of(i)` the integer scale of group `i / group`.
    #[inline]
    fn add_block(
        &mut self,
        d: f32,
        q: &[i8; QK_K],
        q8: &[i8; QK_K],
        group: usize,
        scale_of: impl Fn(usize) -> i32,
    ) {
        let mut aux32 = [0i32; 8];
        for (g, (q, q8)) in q
            .chunks_exact(group)
            .zip(q8.chunks_exact(group))
            .enumerate()
        {
            // Integer sums are exact, so the group is summed first and scaled once per lane
            // (products fit in i16: |q| ≤ 32, |q8| ≤ 128).
            let mut lane = [0i32; 8];
            for (c, c8) in q.chunks_exact(8).zip(q8.chunks_exact(8)) {
                for ((s, &a), &b) in lane.iter_mut().zip(c).zip(c8) {
                    *s += (a as i16 * b as i16) as i32;
                }
            }
            let scale = scale_of(g);
            for (a, s) in aux32.iter_mut().zip(lane) {
                *a += scale * s;
            }
        }
        for (s, &a) in self.sums.iter_mut().zip(&aux32) {
            *s += d * a as f32;
        }
    }

    /// `sumf` (the min terms, already summed) plus the eight lanes in order.
    fn finish(&self, mut sumf: f32) -> f32 {
        for s in self.sums {
            sumf += s;
        }
        sumf
    }
}

fn vec_dot_q3_k(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    let mut lanes = Lanes::new();
    let mut q = [0i8; QK_K];
    for (x, y) in blocks::<BlockQ3K>(w).iter().zip(blocks::<BlockQ8K>(act)) {
        // Element 128h + 32s + l: bits 2s..2s+2 of qs[32h + l], minus 4 unless bit 4h + s of hmask[l].
        for (h, (qs, q)) in
            x.qs.chunks_exact(32)
                .zip(q.chunks_exact_mut(128))
                .enumerate()
        {
            for (s, q) in q.chunks_exact_mut(32).enumerate() {
                let bit = 1u8 << (4 * h + s);
                for ((v, &b), &hm) in q.iter_mut().zip(qs).zip(&x.hmask) {
                    let low = ((b >> (2 * s)) & 3) as i8;
                    *v = low - if hm & bit != 0 { 0 } else { 4 };
                }
            }
        }
        let scales = q3k_scales(&x.scales);
        lanes.add_block(f16_le(x.d) * y.scale(), &q, &y.qs, 16, |g| scales[g] as i32);
    }
    lanes.finish(0.0)
}

/// The 256 4-bit values of a Q4_K/Q5_K block (without the fifth bit): group j of 64 is the low
/// nibbles of qs[32j..32j+32] then their high nibbles.
#[inline]
fn unpack_nibbles(qs: &[u8; QK_K / 2], q: &mut [i8; QK_K]) {
    for (j, bytes) in qs.chunks_exact(32).enumerate() {
        for (l, &b) in bytes.iter().enumerate() {
            q[64 * j + l] = (b & 0xf) as i8;
            q[64 * j + 32 + l] = (b >> 4) as i8;
        }
    }
}

/// Σ bsums[j] * mins[j / 2]: the integer part of the Q4_K/Q5_K min term.
#[inline]
fn min_sum(y: &BlockQ8K, mins: &[u8; 8]) -> i32 {
    (0..QK_K / 16)
        .map(|j| y.bsum(j) as i32 * mins[j / 2] as i32)
        .sum()
}

fn vec_dot_q4_k(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    let mut lanes = Lanes::new();
    let mut sumf = 0.0f32;
    let mut q = [0i8; QK_K];
    for (x, y) in blocks::<BlockQ4K>(w).iter().zip(blocks::<BlockQ8K>(act)) {
        unpack_nibbles(&x.qs, &mut q);
        let (scales, mins) = k4_scales_mins(&x.scales);
        let sumi = min_sum(y, &mins);
        lanes.add_block(f16_le(x.d) * y.scale(), &q, &y.qs, 32, |g| scales[g] as i32);
        sumf -= f16_le(x.dmin) * y.scale() * sumi as f32;
    }
    lanes.finish(sumf)
}

fn vec_dot_q5_k(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    let mut lanes = Lanes::new();
    let mut sumf = 0.0f32;
    let mut q = [0i8; QK_K];
    for (x, y) in blocks::<BlockQ5K>(w).iter().zip(blocks::<BlockQ8K>(act)) {
        unpack_nibbles(&x.qs, &mut q);
        // Element 32k + l gets 16 when bit k of qh[l] is set.
        for (k, q) in q.chunks_exact_mut(32).enumerate() {
            for (v, &h) in q.iter_mut().zip(&x.qh) {
                *v += (((h >> k) & 1) << 4) as i8;
            }
        }
        let (scales, mins) = k4_scales_mins(&x.scales);
        let sumi = min_sum(y, &mins);
        lanes.add_block(f16_le(x.d) * y.scale(), &q, &y.qs, 32, |g| scales[g] as i32);
        sumf -= f16_le(x.dmin) * y.scale() * sumi as f32;
    }
    lanes.finish(sumf)
}

fn vec_dot_q6_k(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    let mut lanes = Lanes::new();
    let mut q = [0i8; QK_K];
    for (x, y) in blocks::<BlockQ6K>(w).iter().zip(blocks::<BlockQ8K>(act)) {
        for (h, q) in q.chunks_exact_mut(128).enumerate() {
            let ql = &x.ql[64 * h..64 * h + 64];
            let qh = &x.qh[32 * h..32 * h + 32];
            for l in 0..32 {
                q[l] = ((ql[l] & 0xf) | ((qh[l] & 3) << 4)) as i8 - 32;
                q[l + 32] = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                q[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                q[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            }
        }
        lanes.add_block(f16_le(x.d) * y.scale(), &q, &y.qs, 16, |g| {
            x.scales[g] as i32
        });
    }
    lanes.finish(0.0)
}
