//! Dequantization to f32, bit for bit what ggml's `to_float` (dequantize_row_*) gives.
//!
//! Each element is computed with the same f32 operations in the same order as ggml (for example
//! Q6_K is `(d * scale) * q`, not `d * (scale * q)`), because the results are compared bit-exactly.

use crate::formats::{
    bf16_le, blocks, f16_le, k4_scales_mins, q3k_scales, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0,
    BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1,
};
use ggml_types::GgmlType;

/// Dequantizes whole blocks: `src` is exactly `dst.len()` elements' worth of `ty` bytes.
pub(crate) fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    match ty {
        GgmlType::F32 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            }
        }
        GgmlType::F16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = f16_le([s[0], s[1]]);
            }
        }
        GgmlType::BF16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = bf16_le([s[0], s[1]]);
            }
        }
        GgmlType::Q4_0 => q4_0(blocks(src), dst),
        GgmlType::Q4_1 => q4_1(blocks(src), dst),
        GgmlType::Q5_0 => q5_0(blocks(src), dst),
        GgmlType::Q5_1 => q5_1(blocks(src), dst),
        GgmlType::Q8_0 => q8_0(blocks(src), dst),
        GgmlType::Q8_1 => q8_1(blocks(src), dst),
        GgmlType::Q2_K => q2_k(blocks(src), dst),
        GgmlType::Q3_K => q3_k(blocks(src), dst),
        GgmlType::Q4_K => q4_k(blocks(src), dst),
        GgmlType::Q5_K => q5_k(blocks(src), dst),
        GgmlType::Q6_K => q6_k(blocks(src), dst),
        GgmlType::Q8_K => q8_k(blocks(src), dst),
    }
}

fn q4_0(x: &[BlockQ4_0], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(32)) {
        let d = f16_le(b.d);
        for (j, &q) in b.qs.iter().enumerate() {
            y[j] = ((q & 0xf) as i32 - 8) as f32 * d;
            y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

fn q4_1(x: &[BlockQ4_1], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(32)) {
        let (d, m) = (f16_le(b.d), f16_le(b.m));
        for (j, &q) in b.qs.iter().enumerate() {
            y[j] = (q & 0xf) as f32 * d + m;
            y[j + 16] = (q >> 4) as f32 * d + m;
        }
    }
}

fn q5_0(x: &[BlockQ5_0], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(32)) {
        let d = f16_le(b.d);
        let qh = u32::from_le_bytes(b.qh);
        for (j, &q) in b.qs.iter().enumerate() {
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            y[j] = (((q & 0xf) as u32 | h0) as i32 - 16) as f32 * d;
            y[j + 16] = (((q >> 4) as u32 | h1) as i32 - 16) as f32 * d;
        }
    }
}

fn q5_1(x: &[BlockQ5_1], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(32)) {
        let (d, m) = (f16_le(b.d), f16_le(b.m));
        let qh = u32::from_le_bytes(b.qh);
        for (j, &q) in b.qs.iter().enumerate() {
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            y[j] = ((q & 0xf) as u32 | h0) as f32 * d + m;
            y[j + 16] = ((q >> 4) as u32 | h1) as f32 * d + m;
        }
    }
}

fn q8_0(x: &[BlockQ8_0], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(32)) {
        let d = f16_le(b.d);
        for (y, &q) in y.iter_mut().zip(b.qs.iter()) {
            *y = q as f32 * d;
        }
    }
}

/// ggml has no to_float for Q8_1 (it is only ever an activation format); this is its meaning,
/// `qs * d`, which the tests use to check dot products.
fn q8_1(x: &[BlockQ8_1], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(32)) {
        let d = f16_le(b.d);
        for (y, &q) in y.iter_mut().zip(b.qs.iter()) {
            *y = q as f32 * d;
        }
    }
}

fn q2_k(x: &[BlockQ2K], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(256)) {
        let (d, min) = (f16_le(b.d), f16_le(b.dmin));
        let mut out = y.iter_mut();
        // Two halves of 128 elements; each reads 32 bytes of qs four times, two bits deeper each time.
        for (half, q) in b.qs.chunks_exact(32).enumerate() {
            for shift in 0..4 {
                for g in 0..2 {
                    let sc = b.scales[half * 8 + shift * 2 + g];
                    let dl = d * (sc & 0xf) as f32;
                    let ml = min * (sc >> 4) as f32;
                    for &qb in &q[g * 16..g * 16 + 16] {
                        let v = ((qb >> (2 * shift)) & 3) as f32;
                        *out.next().expect("256 outputs per block") = dl * v - ml;
                    }
                }
            }
        }
    }
}

fn q3_k(x: &[BlockQ3K], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(256)) {
        let d_all = f16_le(b.d);
        let scales = q3k_scales(&b.scales);
        let mut out = y.iter_mut();
        let mut m = 1u8;
        for (half, q) in b.qs.chunks_exact(32).enumerate() {
            for shift in 0..4 {
                for g in 0..2 {
                    let dl = d_all * scales[half * 8 + shift * 2 + g] as f32;
                    let range = g * 16..g * 16 + 16;
                    for (&qb, &hb) in q[range.clone()].iter().zip(&b.hmask[range]) {
                        let low = ((qb >> (2 * shift)) & 3) as i32;
                        let v = low - if hb & m != 0 { 0 } else { 4 };
                        *out.next().expect("256 outputs per block") = dl * v as f32;
                    }
                }
                m <<= 1;
            }
        }
    }
}

fn q4_k(x: &[BlockQ4K], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(256)) {
        let (d, min) = (f16_le(b.d), f16_le(b.dmin));
        let (sc, mn) = k4_scales_mins(&b.scales);
        for (j, (q, y)) in
            b.qs.chunks_exact(32)
                .zip(y.chunks_exact_mut(64))
                .enumerate()
        {
            let (d1, m1) = (d * sc[2 * j] as f32, min * mn[2 * j] as f32);
            let (d2, m2) = (d * sc[2 * j + 1] as f32, min * mn[2 * j + 1] as f32);
            for l in 0..32 {
                y[l] = d1 * (q[l] & 0xf) as f32 - m1;
                y[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

fn q5_k(x: &[BlockQ5K], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(256)) {
        let (d, min) = (f16_le(b.d), f16_le(b.dmin));
        let (sc, mn) = k4_scales_mins(&b.scales);
        for (j, (q, y)) in
            b.qs.chunks_exact(32)
                .zip(y.chunks_exact_mut(64))
                .enumerate()
        {
            let (d1, m1) = (d * sc[2 * j] as f32, min * mn[2 * j] as f32);
            let (d2, m2) = (d * sc[2 * j + 1] as f32, min * mn[2 * j + 1] as f32);
            let (u1, u2) = (1u8 << (2 * j), 2u8 << (2 * j));
            for l in 0..32 {
                let h1 = if b.qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if b.qh[l] & u2 != 0 { 16 } else { 0 };
                y[l] = d1 * ((q[l] & 0xf) + h1) as f32 - m1;
                y[l + 32] = d2 * ((q[l] >> 4) + h2) as f32 - m2;
            }
        }
    }
}

fn q6_k(x: &[BlockQ6K], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(256)) {
        let d = f16_le(b.d);
        for (h, y) in y.chunks_exact_mut(128).enumerate() {
            let ql = &b.ql[64 * h..64 * h + 64];
            let qh = &b.qh[32 * h..32 * h + 32];
            let sc = &b.scales[8 * h..8 * h + 8];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xf) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                y[l] = d * sc[is] as f32 * q1 as f32;
                y[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
                y[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
                y[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
            }
        }
    }
}

fn q8_k(x: &[BlockQ8K], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(256)) {
        let d = b.scale();
        for (y, &q) in y.iter_mut().zip(b.qs.iter()) {
            *y = d * q as f32;
        }
    }
}
