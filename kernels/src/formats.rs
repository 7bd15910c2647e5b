//! ggml's block layouts (ggml-common.h), byte for byte, as `#[repr(C)]` structs of byte arrays.
//!
//! Every field is a byte array, so each struct has alignment 1 and no padding: any byte slice of
//! the right length can be viewed as a slice of blocks without copying. That matters because GGUF
//! only aligns the start of a tensor, and a row of 18-byte Q4_0 blocks has no alignment at all.
//! Multi-byte fields are little-endian, as in GGUF files; the accessors decode them.

use ggml_types::{GgmlType, QK_K};
use half::{bf16, f16};

/// A ggml block: a `#[repr(C)]` struct of byte arrays whose size is its type's `type_size`.
///
/// # Safety
/// Implementors must have alignment 1, no padding and no invalid bit patterns, so that any
/// `type_size` bytes are a valid value. The `blocks!` macro checks size and alignment at compile time.
pub(crate) unsafe trait Block: Sized {
    const TYPE: GgmlType;
}

/// Views `bytes` as blocks.
///
/// # Panics
/// If `bytes` is not a whole number of blocks; callers check lengths against
/// [`GgmlType::row_size`] first, so this only fires on a bug in this crate.
#[inline]
pub(crate) fn blocks<B: Block>(bytes: &[u8]) -> &[B] {
    let size = std::mem::size_of::<B>();
    assert!(
        bytes.len().is_multiple_of(size),
        "{} bytes are not whole {} blocks",
        bytes.len(),
        B::TYPE.name()
    );
    // SAFETY: `Block` guarantees alignment 1 and that every bit pattern is valid; the length is
    // a whole number of blocks, so the view covers exactly the bytes borrowed.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), bytes.len() / size) }
}

/// Views `bytes` as blocks, mutably. Same contract as [`blocks`].
#[inline]
pub(crate) fn blocks_mut<B: Block>(bytes: &mut [u8]) -> &mut [B] {
    let size = std::mem::size_of::<B>();
    assert!(
        bytes.len().is_multiple_of(size),
        "{} bytes are not whole {} blocks",
        bytes.len(),
        B::TYPE.name()
    );
    // SAFETY: as in `blocks`; the exclusive borrow of `bytes` is carried over to the result.
    unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<B>(), bytes.len() / size) }
}

/// An IEEE half stored little-endian, as ggml_half is in a file.
#[inline]
pub(crate) fn f16_le(b: [u8; 2]) -> f32 {
    f16_bits_to_f32(u16::from_le_bytes(b))
}

/// Exact f16 → f32 without a call or a table, so that the scalar loops inline and vectorize it
/// (`half`'s conversion probes the CPU on every call). The exponent and mantissa bits are placed
/// in an f32 and rescaled by 2^112 (the difference of the biases), which also turns f16 subnormals
/// into the right normal f32s; infinities and NaNs keep their payload, NaNs made quiet as F16C does.
#[inline]
pub(crate) fn f16_bits_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let sign = (h & 0x8000) << 16;
    let em = h & 0x7fff;
    let bits = if em >= 0x7c00 {
        let nan_quiet = if em > 0x7c00 { 0x0040_0000 } else { 0 };
        0x7f80_0000 | ((em & 0x3ff) << 13) | nan_quiet
    } else {
        (f32::from_bits(em << 13) * f32::from_bits(0x7780_0000)).to_bits()
    };
    f32::from_bits(sign | bits)
}

/// The f16 nearest `x` (ties to even), as bits: what F16C's `vcvtps2ph` gives, in integer
/// arithmetic that vectorizes (Fabian Giesen's branch-free method; NaN becomes a quiet NaN).
#[inline]
pub(crate) fn f32_to_f16_bits(x: f32) -> u16 {
    const F16_TOO_BIG: u32 = (127 + 16) << 23;
    const F16_SMALLEST_NORMAL: u32 = 113 << 23;
    // 0.5: adding it puts a subnormal f16's 10 bits at the bottom, rounded to nearest even.
    const SUBNORMAL_MAGIC: u32 = 126 << 23;
    let bits = x.to_bits();
    let sign = (bits >> 16) & 0x8000;
    let a = bits & 0x7fff_ffff;
    let huge = if a > 0x7f80_0000 { 0x7e00 } else { 0x7c00 };
    let tiny = (f32::from_bits(a) + f32::from_bits(SUBNORMAL_MAGIC)).to_bits() - SUBNORMAL_MAGIC;
    // Rebias the exponent and round: 0xfff plus the lowest kept bit makes ties go to even.
    let normal = (a.wrapping_sub((127 - 15) << 23) + 0xfff + ((a >> 13) & 1)) >> 13;
    let h = if a >= F16_TOO_BIG {
        huge
    } else if a < F16_SMALLEST_NORMAL {
        tiny
    } else {
        normal
    };
    (h | sign) as u16
}

/// f32 to ggml_half bytes, rounding to nearest even like GGML_FP32_TO_FP16.
#[inline]
pub(crate) fn f16_to_le(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_bits().to_le_bytes()
}

/// A bfloat16 stored little-endian: its bits are the high half of an f32.
#[inline]
pub(crate) fn bf16_le(b: [u8; 2]) -> f32 {
    bf16::from_bits(u16::from_le_bytes(b)).to_f32()
}

/// f32 to bfloat16 bits exactly as ggml_compute_fp32_to_bf16: round to nearest even, NaNs made quiet
/// (keeping their sign and high payload bits) rather than rounded, which could turn them into infinities.
#[inline]
pub(crate) fn f32_to_bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

macro_rules! blocks {
    ($($(#[$doc:meta])* $name:ident = $ty:ident { $($field:ident: $fty:ty),* $(,)? })*) => {$(
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy)]
        pub(crate) struct $name { $(pub(crate) $field: $fty),* }

        // SAFETY: all fields are byte arrays (checked below: alignment 1, size = type_size).
        unsafe impl Block for $name {
            const TYPE: GgmlType = GgmlType::$ty;
        }

        const _: () = {
            assert!(std::mem::align_of::<$name>() == 1);
            assert!(std::mem::size_of::<$name>() == GgmlType::$ty.type_size());
        };
    )*};
}

blocks! {
    /// 32 weights: `(nibble - 8) * d`; the low nibbles are elements 0..16, the high ones 16..32.
    BlockQ4_0 = Q4_0 { d: [u8; 2], qs: [u8; 16] }
    /// 32 weights: `nibble * d + m`, nibbles ordered as in Q4_0.
    BlockQ4_1 = Q4_1 { d: [u8; 2], m: [u8; 2], qs: [u8; 16] }
    /// 32 weights: `(nibble | bit << 4) - 16) * d`; bit j of the little-endian `qh` belongs to element j.
    BlockQ5_0 = Q5_0 { d: [u8; 2], qh: [u8; 4], qs: [u8; 16] }
    /// 32 weights: `(nibble | bit << 4) * d + m`.
    BlockQ5_1 = Q5_1 { d: [u8; 2], m: [u8; 2], qh: [u8; 4], qs: [u8; 16] }
    /// 32 values `qs * d`.
    BlockQ8_0 = Q8_0 { d: [u8; 2], qs: [i8; 32] }
    /// 32 values `qs * d`, with `s = d * sum(qs)` for the minimum term of Q4_1/Q5_1 dot products.
    BlockQ8_1 = Q8_1 { d: [u8; 2], s: [u8; 2], qs: [i8; 32] }
    /// 256 weights in 16 groups of 16: `d * (scale & 15) * q - dmin * (scale >> 4)`, q 2-bit.
    BlockQ2K = Q2_K { scales: [u8; QK_K / 16], qs: [u8; QK_K / 4], d: [u8; 2], dmin: [u8; 2] }
    /// 256 weights in 16 groups of 16: `d * (scale - 32) * (q - 4 * !hbit)`, 6-bit scales packed in 12 bytes.
    BlockQ3K = Q3_K { hmask: [u8; QK_K / 8], qs: [u8; QK_K / 4], scales: [u8; 12], d: [u8; 2] }
    /// 256 weights in 8 groups of 32: `d * scale * q - dmin * min`, 6-bit scales and mins in 12 bytes.
    BlockQ4K = Q4_K { d: [u8; 2], dmin: [u8; 2], scales: [u8; 12], qs: [u8; QK_K / 2] }
    /// Q4_K with a fifth bit per weight in `qh`.
    BlockQ5K = Q5_K { d: [u8; 2], dmin: [u8; 2], scales: [u8; 12], qh: [u8; QK_K / 8], qs: [u8; QK_K / 2] }
    /// 256 weights in 16 groups of 16: `d * scale * (q - 32)`, q 6-bit, scale a signed byte.
    BlockQ6K = Q6_K { ql: [u8; QK_K / 2], qh: [u8; QK_K / 4], scales: [i8; QK_K / 16], d: [u8; 2] }
    /// 256 activations `qs * d` (d an f32), with the sums of each 16 quants for the k-quants' min terms.
    BlockQ8K = Q8_K { d: [u8; 4], qs: [i8; QK_K], bsums: [u8; QK_K / 16 * 2] }
}

impl BlockQ8K {
    /// The sum of quants `16 * j .. 16 * j + 16`.
    #[inline]
    pub(crate) fn bsum(&self, j: usize) -> i16 {
        i16::from_le_bytes([self.bsums[2 * j], self.bsums[2 * j + 1]])
    }

    #[inline]
    pub(crate) fn scale(&self) -> f32 {
        f32::from_le_bytes(self.d)
    }
}

/// The activation row that the dot products of Q4_0, Q5_0 and Q8_0 weights take: ggml's Q8_0
/// blocks, then every block's scale `d` as an f32, then every block's `d · Σqs` as an f32 (both
/// little-endian, unaligned, one array each so that eight blocks' values are one vector load).
///
/// Every weight row of a matrix is dotted with the same activations, so what depends on them
/// alone is worked out once per matrix rather than once per row and block: the f16 scales'
/// conversion, and the block sums that take the offset of Q4_0's and Q5_0's quants back out
/// (the kernels multiply unsigned quants, `q + 8` or `q + 16`, and subtract
/// `offset · d_w · d·Σqs` for eight blocks with one multiply-add, where a product against the
/// constant offset per block and row cost a quarter of a Q4_0 block's instructions).
pub(crate) struct Q8_0Act<'a> {
    pub(crate) blocks: &'a [BlockQ8_0],
    // Read by the AVX2 kernels only: the NEON ones compute from the blocks.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) d: &'a [[u8; 4]],
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) sums: &'a [[u8; 4]],
}

impl<'a> Q8_0Act<'a> {
    /// The bytes a block's two f32s add to the row.
    pub(crate) const EXTRA: usize = 8;

    /// Views the `n`-element row at the start of `act`.
    ///
    /// # Panics
    /// If `act` is shorter than the row; callers checked its length against the shapes.
    #[inline]
    pub(crate) fn new(n: usize, act: &'a [u8]) -> Self {
        let nb = n / 32;
        let (blocks_bytes, rest) = act.split_at(nb * std::mem::size_of::<BlockQ8_0>());
        let (d, sums) = rest.as_chunks::<4>().0[..2 * nb].split_at(nb);
        Q8_0Act {
            blocks: blocks(blocks_bytes),
            d,
            sums,
        }
    }

    /// Fills in the f32s of the `n`-element row `row` from its blocks.
    pub(crate) fn write_sums(n: usize, row: &mut [u8]) {
        let nb = n / 32;
        let (blocks_bytes, rest) = row.split_at_mut(nb * std::mem::size_of::<BlockQ8_0>());
        let (d, sums) = rest[..nb * Self::EXTRA].split_at_mut(nb * 4);
        for ((b, d), s) in blocks::<BlockQ8_0>(blocks_bytes)
            .iter()
            .zip(d.chunks_exact_mut(4))
            .zip(sums.chunks_exact_mut(4))
        {
            let scale = f16_le(b.d);
            let sum: i32 = b.qs.iter().map(|&q| i32::from(q)).sum();
            d.copy_from_slice(&scale.to_le_bytes());
            // Exact: |Σqs| ≤ 32 · 127 fits in 12 bits and an f16's significand in 11.
            s.copy_from_slice(&(scale * sum as f32).to_le_bytes());
        }
    }
}

/// The eight 6-bit scales and eight 6-bit mins of a Q4_K/Q5_K block, unpacked from their 12 bytes
/// (ggml's get_scale_min_k4 for j = 0..8): bytes 0..4 hold scales 0..4 and bytes 4..8 mins 0..4 in
/// their low 6 bits; bytes 8..12 hold the low nibbles of scales 4..8 and mins 4..8, whose top two bits
/// are the spare top bits of bytes 0..4 and 4..8.
#[inline]
pub(crate) fn k4_scales_mins(q: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..4 {
        sc[j] = q[j] & 63;
        mn[j] = q[j + 4] & 63;
        sc[j + 4] = (q[j + 8] & 0xf) | ((q[j] >> 6) << 4);
        mn[j + 4] = (q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4);
    }
    (sc, mn)
}

/// The sixteen 6-bit scales of a Q3_K block, already offset by -32: byte j (j < 8) holds the low
/// nibble of scale j and of scale j + 8; bytes 8..12 hold the two high bits of scales j, j+4, j+8, j+12.
#[inline]
pub(crate) fn q3k_scales(q: &[u8; 12]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let low = if j < 8 { q[j] & 0xf } else { q[j - 8] >> 4 };
        let high = (q[8 + j % 4] >> (2 * (j / 4))) & 3;
        *o = (low | (high << 4)) as i8 - 32;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ggml's q3_K scale unpacking is written with 32-bit masks; check the per-byte form against it.
    #[test]
    fn q3k_scales_match_ggml_word_form() {
        let mut state = 0x1234_5678u32;
        for _ in 0..1000 {
            let mut q = [0u8; 12];
            for b in q.iter_mut() {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                *b = (state >> 24) as u8;
            }
            let w =
                |i: usize| u32::from_le_bytes([q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3]]);
            let (a0, a1, tmp) = (w(0), w(1), w(2));
            let (m1, m2) = (0x0303_0303u32, 0x0f0f_0f0fu32);
            let words = [
                (a0 & m2) | ((tmp & m1) << 4),
                (a1 & m2) | (((tmp >> 2) & m1) << 4),
                ((a0 >> 4) & m2) | (((tmp >> 4) & m1) << 4),
                ((a1 >> 4) & m2) | (((tmp >> 6) & m1) << 4),
            ];
            let expect: Vec<i8> = words
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .map(|b| b as i8 - 32)
                .collect();
            assert_eq!(q3k_scales(&q).to_vec(), expect);
        }
    }

    /// Likewise for the Q4_K/Q5_K scales and mins (ggml's utmp form in the dot products).
    #[test]
    fn k4_scales_match_ggml_word_form() {
        let mut state = 0x8765_4321u32;
        for _ in 0..1000 {
            let mut q = [0u8; 12];
            for b in q.iter_mut() {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                *b = (state >> 24) as u8;
            }
            let w =
                |i: usize| u32::from_le_bytes([q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3]]);
            let mut u = [w(0), w(1), w(2), 0];
            let (k1, k2, k3) = (0x3f3f_3f3fu32, 0x0f0f_0f0fu32, 0x0303_0303u32);
            u[3] = ((u[2] >> 4) & k2) | (((u[1] >> 6) & k3) << 4);
            let uaux = u[1] & k1;
            u[1] = (u[2] & k2) | (((u[0] >> 6) & k3) << 4);
            u[2] = uaux;
            u[0] &= k1;
            let bytes: Vec<u8> = u.iter().flat_map(|w| w.to_le_bytes()).collect();
            let (sc, mn) = k4_scales_mins(&q);
            assert_eq!(sc.to_vec(), bytes[..8].to_vec());
            assert_eq!(mn.to_vec(), bytes[8..].to_vec());
        }
    }

    #[test]
    fn f32_to_f16_bits_rounds_as_f16c() {
        // Every 61st f32 bit pattern (all exponents, both signs, and every residue of the 13 bits
        // rounded off, ties among them), plus the edges.
        let edges = [
            0.0,
            -0.0,
            65504.0,
            65520.0,
            65519.99,
            f32::INFINITY,
            f32::NAN,
            5.96e-8,
        ];
        for x in (0..u32::MAX).step_by(61).map(f32::from_bits).chain(edges) {
            let want = f16::from_f32(x).to_bits();
            let got = f32_to_f16_bits(x);
            if x.is_nan() {
                assert!(f16::from_bits(got).is_nan(), "{x}: {got:#x}");
            } else {
                assert_eq!(got, want, "{x:e} ({:#x})", x.to_bits());
            }
        }
    }

    #[test]
    fn f16_conversion_is_exact_for_every_value() {
        for h in 0..=u16::MAX {
            let want = f16::from_bits(h).to_f32();
            let got = f16_bits_to_f32(h);
            if want.is_nan() {
                assert!(
                    got.is_nan() && got.is_sign_negative() == want.is_sign_negative(),
                    "{h:04x}"
                );
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{h:04x}");
            }
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even_and_keeps_nan() {
        assert_eq!(f32_to_bf16_bits(1.0), 0x3f80);
        // Exactly halfway between 0x3f80 and 0x3f81: ties go to the even one.
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f80_8001)), 0x3f81);
        // The largest finite f32 rounds up to infinity, as in ggml.
        assert_eq!(f32_to_bf16_bits(f32::MAX), 0x7f80);
        // A signalling NaN whose payload lies only in the low half stays a NaN.
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x7f80_0001)), 0x7fc0);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0xff80_0001)), 0xffc0);
    }
}
