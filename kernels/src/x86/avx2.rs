//! AVX2 + FMA + F16C dot products.
//!
//! The integer core is `vpmaddubsw` (unsigned bytes times signed bytes, adjacent pairs summed to
//! i16) followed by `vpmaddwd` (i16 pairs times i16, summed to i32). The first step saturates, so
//! every use below keeps each pair sum within i16: weights are made unsigned (the offset of the
//! signed formats is taken back out through the activations' block sums: Q8_K's `bsums`, or the
//! f32 sums of [`Q8_0Act`]), and the one signed×signed case (Q8_0) moves the sign onto the
//! activation, which [`crate::quantize_row`] keeps within ±127.

use crate::formats::{
    bf16_le, blocks, f16_le, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K,
    BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1, Q8_0Act,
};
use crate::gemm::{self, ActGroup, Shape, TileArgs, WGroup, LANES, RM, RN, STEPS};
use crate::vec_dot_fn::VecDotFn;
use ggml_types::GgmlType;
use half::f16;
use std::arch::x86_64::*;

/// Whether this CPU can run these kernels.
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// The AVX2 kernel for weights of type `ty`, if there is one. Only to be called when
/// [`available`] is true.
pub(crate) fn kernel(ty: GgmlType) -> Option<VecDotFn> {
    use GgmlType::*;
    Some(match ty {
        F32 => vec_dot_f32,
        F16 => vec_dot_f16,
        BF16 => vec_dot_bf16,
        Q4_0 => vec_dot_q4_0,
        Q4_1 => vec_dot_q4_1,
        Q5_0 => vec_dot_q5_0,
        Q5_1 => vec_dot_q5_1,
        Q8_0 => vec_dot_q8_0,
        Q2_K => vec_dot_q2_k,
        Q3_K => vec_dot_q3_k,
        Q4_K => vec_dot_q4_k,
        Q5_K => vec_dot_q5_k,
        Q6_K => vec_dot_q6_k,
        Q8_1 | Q8_K => return None,
    })
}

// ---- helpers ---------------------------------------------------------------------------------

// The loads copy the bytes out of a reference and reinterpret them: the same unaligned vector
// load once compiled, without `_mm256_loadu_si256`'s pointer, whose debug-build precondition
// checks would sit in every inner loop of the (optimized, debug-asserting) test profile.

/// 32 bytes from the start of `s`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load(s: &[u8]) -> __m256i {
    let a: [u8; 32] = s[..32].try_into().expect("a 32-byte range");
    // SAFETY: any 32 bytes are a valid __m256i.
    unsafe { std::mem::transmute::<[u8; 32], __m256i>(a) }
}

/// 32 signed bytes from the start of `s`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load_i8(s: &[i8]) -> __m256i {
    let a: [i8; 32] = s[..32].try_into().expect("a 32-byte range");
    // SAFETY: as in `load`.
    unsafe { std::mem::transmute::<[i8; 32], __m256i>(a) }
}

/// 16 bytes from the start of `s`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load16(s: &[u8]) -> __m128i {
    let a: [u8; 16] = s[..16].try_into().expect("a 16-byte range");
    // SAFETY: any 16 bytes are a valid __m128i.
    unsafe { std::mem::transmute::<[u8; 16], __m128i>(a) }
}

/// Eight little-endian f32s.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load_f32x8(s: &[[u8; 4]]) -> __m256 {
    let a: [[u8; 4]; 8] = s[..8].try_into().expect("eight f32s");
    // SAFETY: any 32 bytes are a valid __m256.
    unsafe { std::mem::transmute::<[[u8; 4]; 8], __m256>(a) }
}

/// A little-endian f16 (a block's scale) as f32, by F16C: [`f16_le`]'s integer form has a branch
/// and a multiply on the load's critical path, which per-row loops over blocks stall on.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn f16_one(a: [u8; 2]) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(
        _mm_cvtsi32_si128(u16::from_le_bytes(a) as i32),
    ))
}

/// Two little-endian f16s (a block's scale and min scale) as f32, by F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn f16_pair(a: [u8; 2], b: [u8; 2]) -> (f32, f32) {
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from_le_bytes([
        a[0], a[1], b[0], b[1],
    ])));
    (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
}

/// The product of two block scales.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn scale_product(a: [u8; 2], b: [u8; 2]) -> f32 {
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from_le_bytes([
        a[0], a[1], b[0], b[1],
    ])));
    _mm_cvtss_f32(_mm_mul_ss(v, _mm_movehdup_ps(v)))
}

/// The sum of the eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum(v: __m256) -> f32 {
    hsum128(_mm_add_ps(
        _mm256_castps256_ps128(v),
        _mm256_extractf128_ps::<1>(v),
    ))
}

/// The sum of the four lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum128(v: __m128) -> f32 {
    let v = _mm_add_ps(v, _mm_movehl_ps(v, v));
    _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v)))
}

/// The 32 four-bit values of a Q4_0/Q4_1/Q5_x block in element order: the low nibbles of the 16
/// bytes are elements 0..16, the high nibbles 16..32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn nibbles32(qs: &[u8; 16]) -> __m256i {
    // Both lanes get the 16 bytes straight from memory (a broadcast is a plain load); the high
    // lane is shifted by 4 in place. One shift where a shift and a lane insert were two.
    let both = _mm256_broadcastsi128_si256(load16(qs));
    let shifted = _mm256_srlv_epi64(both, _mm256_set_epi64x(4, 4, 0, 0));
    _mm256_and_si256(shifted, _mm256_set1_epi8(0x0f))
}

/// The 32 five-bit values of a Q5_0/Q5_1 block in element order: [`nibbles32`] plus 16 where
/// bit j of `qh` is set.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn five_bits32(qs: &[u8; 16], qh: [u8; 4]) -> __m256i {
    let high = _mm256_and_si256(
        bits_to_bytes(u32::from_le_bytes(qh)),
        _mm256_set1_epi8(0x10),
    );
    _mm256_or_si256(nibbles32(qs), high)
}

/// Byte j is 0xff where bit j of `bits` is set, else 0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn bits_to_bytes(bits: u32) -> __m256i {
    // Byte j gets byte j / 8 of `bits`, then is tested against bit j % 8.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits as i32),
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit)
}

/// Sums adjacent i16 pairs into eight i32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pairs_to_i32(p16: __m256i) -> __m256i {
    _mm256_madd_epi16(p16, _mm256_set1_epi16(1))
}

/// Σ x * y in eight i32 partial sums for any signed x and |y| ≤ 127: |x| (as unsigned, so
/// -128 is 128) times y with x's sign; a pair is at most 2 · 128 · 127 < 2^15.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_signed(x: __m256i, y: __m256i) -> __m256i {
    pairs_to_i32(_mm256_maddubs_epi16(
        _mm256_abs_epi8(x),
        _mm256_sign_epi8(y, x),
    ))
}

/// How far ahead of the block being read a matrix-vector product asks for weights: generating a
/// token reads every weight once, in order, and the hardware prefetcher alone left a thread
/// waiting on memory (the seed-shaped Q4_K_M at one thread on Zen 4: 3.45 → 3.70 tokens/s; 1 to
/// 4 KiB ahead all did as well, 512 bytes less).
const PREFETCH_AHEAD: usize = 2048;

/// Asks the cache for the cache lines [`PREFETCH_AHEAD`] bytes after `blocks`, a block or a run
/// of blocks of a weight row (past the row's end it reads the next row, or nothing: a prefetch
/// never faults). One request per 64 bytes: consecutive runs cover the row without gaps, and a
/// 32-element block (18 to 34 bytes) asking for its own lines repeated each line's request.
#[inline(always)]
pub(super) fn prefetch_ahead<X: ?Sized>(blocks: &X) {
    let ahead = (blocks as *const X)
        .cast::<i8>()
        .wrapping_add(PREFETCH_AHEAD);
    for line in (0..std::mem::size_of_val(blocks)).step_by(64) {
        // SAFETY: SSE is part of every x86_64 CPU, and a prefetch reads nothing it could fault on.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line)) };
    }
}

/// Up to eight f16s (little-endian bits, one block scale each) as f32 lanes, the lanes past `N`
/// zero. Inserted from integer registers: built on the stack instead (as `_mm_set_epi16`
/// compiles), the vector load would wait for the narrow stores before it to retire.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn f16x8<const N: usize>(h: [[u8; 2]; N]) -> __m256 {
    let h = |k: usize| h.get(k).map_or(0, |&w| i32::from(u16::from_le_bytes(w)));
    let mut v = _mm_cvtsi32_si128(h(0));
    // `N` is a constant: exactly the inserts the width needs are compiled.
    macro_rules! insert {
        ($($k:literal)*) => {$(
            if N > $k {
                v = _mm_insert_epi16::<$k>(v, h($k));
            }
        )*};
    }
    insert!(1 2 3 4 5 6 7);
    _mm256_cvtph_ps(v)
}

/// Up to eight little-endian f32s, the lanes past the slice's end zero. The masked load reads
/// nothing past the end, so a row's last blocks need no copy: copied to the stack (as the tail was
/// first written), the vector load waited on the narrow stores, and a 896-wide row's last four
/// blocks cost as much as eight.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load_f32_first(s: &[[u8; 4]]) -> __m256 {
    let n = s.len().min(8) as i32;
    let mask = _mm256_cmpgt_epi32(
        _mm256_set1_epi32(n),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    );
    // SAFETY: the mask enables lanes 0..n only, and those lie inside `s`; a masked-off lane is not
    // read. `vmaskmovps` needs no alignment.
    unsafe { _mm256_maskload_ps(s.as_ptr().cast::<f32>(), mask) }
}

/// `N` (eight or four) blocks' integer sums as f32, lane k block k's (lanes past `N` zero): each
/// block's eight i32 lanes are summed by a tree of `vphaddd` and one exchange of halves, so that
/// one conversion and one FMA serve eight blocks. Converted and scaled block by block, pairs of
/// blocks at a time, the same work took 16 instructions to this one's 11: Q4_0 4096×4096 one
/// thread 15.0 → 16.5 GB/s, Q5_0 4864×896 10.0 → 11.0, Q8_0 16384×896 20.2 → 21.5 (interleaved).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn block_sums<const N: usize>(sums: [__m256i; N]) -> __m256 {
    const { assert!(N == 4 || N == 8) };
    let pairs = |a: usize| _mm256_hadd_epi32(sums[a], sums[a + 1]);
    // Lanes 0..4 of each 128-bit half: blocks 0..4 (4..8), each summed over its lanes in that half.
    let lo = _mm256_hadd_epi32(pairs(0), pairs(2));
    let hi = if N == 8 {
        _mm256_hadd_epi32(pairs(4), pairs(6))
    } else {
        _mm256_setzero_si256()
    };
    _mm256_cvtepi32_ps(_mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(lo, hi),
        _mm256_permute2x128_si256::<0x31>(lo, hi),
    ))
}

/// One 32-element block prepared for [`sum_blocks`]: the weights' and the activations' scales
/// (f16 bits), the block's integer sums (eight lanes), and the min term, added as it is.
type Prepared = ([u8; 2], [u8; 2], __m256i, f32);

/// Σ over blocks of `d_w · d_a · Σ sumi` plus the per-block min terms, for the weights dotted with
/// Q8_1 activations. The scale products are made eight blocks at a time, by two conversions and
/// one multiply (per block they were a scalar chain of seven instructions), then taken lane by
/// lane: the same products, so the same result.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sum_blocks<X>(x: &[X], y: &[BlockQ8_1], prepare: impl Fn(&X, &BlockQ8_1) -> Prepared) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0.0f32;
    let (xs, ys) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail = xs.remainder().iter().zip(ys.remainder());
    for (x, y) in xs.zip(ys) {
        prefetch_ahead(x);
        let p: [Prepared; 8] = std::array::from_fn(|k| prepare(&x[k], &y[k]));
        let scales = _mm256_mul_ps(f16x8(p.map(|b| b.0)), f16x8(p.map(|b| b.1)));
        acc = _mm256_fmadd_ps(scales, block_sums(p.map(|b| b.2)), acc);
        mins += p.iter().map(|b| b.3).sum::<f32>();
    }
    // The last few blocks one by one.
    for (x, y) in tail {
        let (dw, da, sumi, min) = prepare(x, y);
        let d = _mm256_set1_ps(scale_product(dw, da));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
        mins += min;
    }
    hsum(acc) + mins
}

/// Σ over blocks of `d_w · d · Σ sumi`, for the weights dotted with Q8_0 activations, as
/// [`sum_blocks`] does it, with the activation scales as f32s (eight blocks in one load). Weights
/// whose quants `prepare` takes as unsigned, `q + OFFSET` (Q4_0's 8, Q5_0's 16), get the offset
/// taken back out at the end: `OFFSET · Σ d_w · (d · Σqs)`, one multiply-add per eight blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sum_q8_0_blocks<X, const OFFSET: u8>(
    x: &[X],
    y: Q8_0Act,
    prepare: impl Fn(&X, &BlockQ8_0) -> ([u8; 2], __m256i),
) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut offsets = _mm256_setzero_ps();
    let groups = x
        .chunks_exact(8)
        .zip(y.blocks.chunks_exact(8))
        .zip(y.d.chunks_exact(8).zip(y.sums.chunks_exact(8)));
    for ((x, y), (d, sums)) in groups {
        prefetch_ahead(x);
        let p: [([u8; 2], __m256i); 8] = std::array::from_fn(|k| prepare(&x[k], &y[k]));
        let dw = f16x8(p.map(|b| b.0));
        if OFFSET != 0 {
            offsets = _mm256_fmadd_ps(dw, load_f32x8(sums), offsets);
        }
        let d = _mm256_mul_ps(dw, load_f32x8(d));
        acc = _mm256_fmadd_ps(d, block_sums(p.map(|b| b.1)), acc);
    }
    // The last blocks (up to seven) in groups of four, the missing ones with zero scales. One by
    // one they made a row of 640 (Gemma 3's width: 20 blocks, 4 left over) 5 % slower; as one
    // group of eight, a row of 896 (Qwen2's: 28 blocks) spent as long on its last four blocks as
    // on eight.
    let mut start = x.len() / 8 * 8;
    while start < x.len() {
        let count = (x.len() - start).min(4);
        let block = |k: usize| prepare(&x[start + k], &y.blocks[start + k]);
        let p: [([u8; 2], __m256i); 4] = if count == 4 {
            std::array::from_fn(block)
        } else {
            std::array::from_fn(|k| {
                if k < count {
                    block(k)
                } else {
                    ([0; 2], _mm256_setzero_si256())
                }
            })
        };
        let dw = f16x8(p.map(|b| b.0));
        if OFFSET != 0 {
            let sums = load_f32_first(&y.sums[start..start + count]);
            offsets = _mm256_fmadd_ps(dw, sums, offsets);
        }
        let d = _mm256_mul_ps(dw, load_f32_first(&y.d[start..start + count]));
        acc = _mm256_fmadd_ps(d, block_sums(p.map(|b| b.1)), acc);
        start += count;
    }
    if OFFSET != 0 {
        acc = _mm256_fnmadd_ps(_mm256_set1_ps(f32::from(OFFSET)), offsets, acc);
    }
    hsum(acc)
}

// ---- 32-element blocks ---------------------------------------------------------------------

/// # Safety
/// The CPU must have AVX2, FMA and F16C; `w` and `act` must be whole rows of `n` elements.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q8_0(n: usize, w: &[u8], act: &[u8]) -> f32 {
    sum_q8_0_blocks::<_, 0>(blocks::<BlockQ8_0>(w), Q8_0Act::new(n, act), |x, y| {
        (x.d, dot_signed(load_i8(&x.qs), load_i8(&y.qs)))
    })
}

/// # Safety
/// As for [`vec_dot_q8_0`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q4_0(n: usize, w: &[u8], act: &[u8]) -> f32 {
    sum_q8_0_blocks::<_, 8>(blocks::<BlockQ4_0>(w), Q8_0Act::new(n, act), |x, y| {
        (
            x.d,
            pairs_to_i32(_mm256_maddubs_epi16(nibbles32(&x.qs), load_i8(&y.qs))),
        )
    })
}

/// # Safety
/// As for [`vec_dot_q8_0`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q5_0(n: usize, w: &[u8], act: &[u8]) -> f32 {
    sum_q8_0_blocks::<_, 16>(blocks::<BlockQ5_0>(w), Q8_0Act::new(n, act), |x, y| {
        // The unsigned quants, q + 16: a pair of products is at most 2 · 31 · 127, within i16.
        let q = five_bits32(&x.qs, x.qh);
        (x.d, pairs_to_i32(_mm256_maddubs_epi16(q, load_i8(&y.qs))))
    })
}

/// # Safety
/// As for [`vec_dot_q8_0`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q4_1(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    sum_blocks(blocks::<BlockQ4_1>(w), blocks::<BlockQ8_1>(act), |x, y| {
        let sumi = pairs_to_i32(_mm256_maddubs_epi16(nibbles32(&x.qs), load_i8(&y.qs)));
        (x.d, y.d, sumi, scale_product(x.m, y.s))
    })
}

/// # Safety
/// As for [`vec_dot_q8_0`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q5_1(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    sum_blocks(blocks::<BlockQ5_1>(w), blocks::<BlockQ8_1>(act), |x, y| {
        let sumi = pairs_to_i32(_mm256_maddubs_epi16(
            five_bits32(&x.qs, x.qh),
            load_i8(&y.qs),
        ));
        (x.d, y.d, sumi, scale_product(x.m, y.s))
    })
}

// ---- k-quants -----------------------------------------------------------------------------------

/// A shuffle that puts i16 number `lo` of a 128-bit lane in all of the low lane's eight words and
/// number `hi` in all of the high lane's (`vpshufb` works within lanes, so the source must hold
/// the same eight words in both).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn word_pick(lo: usize, hi: usize) -> __m256i {
    let w = |i: usize| (((2 * i + 1) << 8) | (2 * i)) as i16;
    _mm256_set_m128i(_mm_set1_epi16(w(hi)), _mm_set1_epi16(w(lo)))
}

/// The sixteen 6-bit Q3_K scales as 16 bytes, before their offset of -32 (the word-wise form of
/// [`crate::formats::q3k_scales`]).
#[inline]
pub(super) fn q3k_scales(s: &[u8; 12]) -> [u32; 4] {
    let w = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (a0, a1, hi) = (w(0), w(1), w(2));
    let low4 = 0x0f0f_0f0f;
    let low2 = 0x0303_0303;
    [
        (a0 & low4) | ((hi & low2) << 4),
        (a1 & low4) | (((hi >> 2) & low2) << 4),
        ((a0 >> 4) & low4) | (((hi >> 4) & low2) << 4),
        ((a1 >> 4) & low4) | (((hi >> 6) & low2) << 4),
    ]
}

/// Four words as one 128-bit vector, first word lowest.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn words128(w: [u32; 4]) -> __m128i {
    _mm_set_epi32(w[3] as i32, w[2] as i32, w[1] as i32, w[0] as i32)
}

/// What a Q2_K block's dot product needs besides its quants: `d` (the weights' times the
/// activations') and the sixteen 4-bit scales as words; the block's min term, `dmin · Σ min ·
/// bsum` per pair of 16-element groups, is added to `acc_min` (subtracted once at the end).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q2k_head(x: &BlockQ2K, y: &BlockQ8K, acc_min: &mut __m256) -> (f32, __m256i) {
    let (d, dmin) = f16_pair(x.d, x.dmin);
    let (d, dmin) = (d * y.scale(), dmin * y.scale());
    let packed = load16(&x.scales);
    let nibble = _mm_set1_epi8(0x0f);
    let scales = _mm256_cvtepu8_epi16(_mm_and_si128(packed, nibble));
    let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(packed), nibble));
    let min_sum = _mm256_madd_epi16(mins, load(&y.bsums));
    *acc_min = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(min_sum), *acc_min);
    (d, scales)
}

/// # Safety
/// The CPU must have AVX2, FMA and F16C; `w` and `act` must be whole rows of `n` elements.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q2_k(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    let m3 = _mm256_set1_epi8(3);
    let mut acc = _mm256_setzero_ps();
    let mut acc_min = _mm256_setzero_ps();
    for (x, y) in blocks::<BlockQ2K>(w).iter().zip(blocks::<BlockQ8K>(act)) {
        prefetch_ahead(x);
        let (d, scales) = q2k_head(x, y, &mut acc_min);
        let mut sumi = _mm256_setzero_si256();
        for h in 0..2 {
            // Scales 8h..8h+8 in both lanes; chunk s of this half uses 8h+2s and 8h+2s+1.
            let sc = if h == 0 {
                _mm256_permute2x128_si256::<0x00>(scales, scales)
            } else {
                _mm256_permute2x128_si256::<0x11>(scales, scales)
            };
            let bits = load(&x.qs[32 * h..]);
            let q = [
                _mm256_and_si256(bits, m3),
                _mm256_and_si256(_mm256_srli_epi16::<2>(bits), m3),
                _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m3),
                _mm256_and_si256(_mm256_srli_epi16::<6>(bits), m3),
            ];
            for (s, q) in q.into_iter().enumerate() {
                let q8 = load_i8(&y.qs[128 * h + 32 * s..]);
                let p = _mm256_maddubs_epi16(q, q8);
                let scale = _mm256_shuffle_epi8(sc, word_pick(2 * s, 2 * s + 1));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(scale, p));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum(acc) - hsum(acc_min)
}

/// What a Q3_K block's dot product needs besides its quants: `d` (the weights' times the
/// activations'), the sixteen scales as words (their offset of -32 taken), and the correction
/// for taking the quants unsigned, q + 4 (the low two bits, plus 4 where the high bit is set):
/// `4 · Σ scale · bsum` per 16-element group, summed in pairs (eight i32), to subtract. One
/// product per block where a second `vpmaddubsw` per 32 elements did it.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q3k_head(x: &BlockQ3K, y: &BlockQ8K) -> (f32, __m256i, __m256i) {
    let d = f16_one(x.d) * y.scale();
    let scales = _mm_sub_epi8(words128(q3k_scales(&x.scales)), _mm_set1_epi8(32));
    let scales = _mm256_cvtepi8_epi16(scales);
    let offsets = _mm256_slli_epi32::<2>(_mm256_madd_epi16(scales, load(&y.bsums)));
    (d, scales, offsets)
}

/// # Safety
/// As for [`vec_dot_q2_k`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q3_k(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    let m3 = _mm256_set1_epi8(3);
    let four = _mm256_set1_epi8(4);
    let mut acc = _mm256_setzero_ps();
    for (x, y) in blocks::<BlockQ3K>(w).iter().zip(blocks::<BlockQ8K>(act)) {
        prefetch_ahead(x);
        let (d, scales, offsets) = q3k_head(x, y);
        let mut sumi = _mm256_sub_epi32(_mm256_setzero_si256(), offsets);
        let hbits = load(&x.hmask);
        for h in 0..2 {
            let sc = if h == 0 {
                _mm256_permute2x128_si256::<0x00>(scales, scales)
            } else {
                _mm256_permute2x128_si256::<0x11>(scales, scales)
            };
            let bits = load(&x.qs[32 * h..]);
            let low = [
                _mm256_and_si256(bits, m3),
                _mm256_and_si256(_mm256_srli_epi16::<2>(bits), m3),
                _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m3),
                _mm256_and_si256(_mm256_srli_epi16::<6>(bits), m3),
            ];
            // Chunk s takes bit 4h + s of each hmask byte: moved to bit 2 (the value 4) by one
            // shift of 16-bit words, then masked (what crosses from the neighbouring byte lands
            // outside bit 2).
            let hh = if h == 0 {
                _mm256_slli_epi16::<2>(hbits)
            } else {
                _mm256_srli_epi16::<2>(hbits)
            };
            let high = [
                _mm256_and_si256(hh, four),
                _mm256_and_si256(_mm256_srli_epi16::<1>(hh), four),
                _mm256_and_si256(_mm256_srli_epi16::<2>(hh), four),
                _mm256_and_si256(_mm256_srli_epi16::<3>(hh), four),
            ];
            for (s, (low, high)) in low.into_iter().zip(high).enumerate() {
                let q8 = load_i8(&y.qs[128 * h + 32 * s..]);
                let p = _mm256_maddubs_epi16(_mm256_or_si256(low, high), q8);
                let scale = _mm256_shuffle_epi8(sc, word_pick(2 * s, 2 * s + 1));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(scale, p));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum(acc)
}

/// Σ mins[j] * (bsums[2j] + bsums[2j+1]) as four i32: the integer part of the Q4_K/Q5_K min term,
/// from the mins as eight i16 and the block's sixteen i16 bsums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn k4_min_sum(mins: __m128i, bsums: &[u8; 32]) -> __m128i {
    let b = load(bsums);
    let pairs = _mm_hadd_epi16(_mm256_castsi256_si128(b), _mm256_extracti128_si256::<1>(b));
    _mm_madd_epi16(mins, pairs)
}

/// The fields a Q4_K and a Q5_K block share, and Q5_K's fifth bits.
pub(super) struct K4<'a> {
    /// d, dmin and the 12 bytes of packed scales and mins: one 16-byte load ([`k4_head`]).
    pub(super) head: &'a [u8; 16],
    pub(super) qs: &'a [u8; 128],
    pub(super) qh: Option<&'a [u8; 32]>,
}

/// The first 16 bytes of a Q4_K or Q5_K block.
fn k4_head_bytes<X>(x: &X) -> &[u8; 16] {
    const {
        assert!(std::mem::offset_of!(BlockQ4K, scales) + 12 == 16);
        assert!(std::mem::offset_of!(BlockQ5K, scales) + 12 == 16);
    };
    assert!(std::mem::size_of::<X>() >= 16 && std::mem::align_of::<X>() == 1);
    // SAFETY: X (a #[repr(C)] block of byte arrays, alignment 1) is at least 16 bytes; its first
    // 16 are d, dmin and scales, as asserted for both types this is called with.
    unsafe { &*(x as *const X).cast::<[u8; 16]>() }
}

impl<'a> From<&'a BlockQ4K> for K4<'a> {
    fn from(x: &'a BlockQ4K) -> Self {
        K4 {
            head: k4_head_bytes(x),
            qs: &x.qs,
            qh: None,
        }
    }
}

impl<'a> From<&'a BlockQ5K> for K4<'a> {
    fn from(x: &'a BlockQ5K) -> Self {
        K4 {
            head: k4_head_bytes(x),
            qs: &x.qs,
            qh: Some(&x.qh),
        }
    }
}

/// A Q4_K/Q5_K block's head decoded in registers: d and dmin in f32 lanes 0 and 1, and the eight
/// 6-bit scales then eight 6-bit mins as 16 bytes ([`crate::formats::k4_scales_mins`], by two
/// byte shuffles instead of a dozen general-register operations and four inserts).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn k4_head(head: &[u8; 16]) -> (__m128, __m128i) {
    let x = load16(head);
    let d_dmin = _mm_cvtph_ps(x);
    // Scale byte s[i] is x[4 + i]. Lanes 0..4: s0..4 (scales 0..4, low 6 bits); 4..8: s8..12
    // (scales 4..8, low nibbles); 8..12: s4..8 (mins 0..4, low 6 bits); 12..16: s8..12 (mins
    // 4..8, high nibbles).
    let a = _mm_shuffle_epi8(
        x,
        _mm_setr_epi8(4, 5, 6, 7, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15),
    );
    // The bytes whose top two bits are bits 4 and 5 of scales 4..8 (s0..4) and mins 4..8 (s4..8).
    let b = _mm_shuffle_epi8(
        x,
        _mm_setr_epi8(-1, -1, -1, -1, 4, 5, 6, 7, -1, -1, -1, -1, 8, 9, 10, 11),
    );
    let low = _mm_and_si128(
        a,
        _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0),
    );
    // (16-bit shifts: the mask keeps only bits that came from the same byte.)
    let high_nibbles = _mm_and_si128(
        _mm_srli_epi16::<4>(a),
        _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15),
    );
    let top = _mm_and_si128(_mm_srli_epi16::<2>(b), _mm_set1_epi8(0x30));
    (d_dmin, _mm_or_si128(_mm_or_si128(low, high_nibbles), top))
}

/// The Q4_K/Q5_K dot product: chunk j of 32 bytes holds elements 64j.. (low nibbles, scale 2j)
/// and 64j+32.. (high nibbles, scale 2j+1); Q5_K adds bit 2j resp. 2j+1 of qh[l] as 16.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn k4_dot<'a, X: 'a>(x: &'a [X], y: &[BlockQ8K]) -> f32
where
    K4<'a>: From<&'a X>,
{
    let m4 = _mm256_set1_epi8(0x0f);
    let mut acc = _mm256_setzero_ps();
    let mut acc_min = _mm_setzero_ps();
    for (x, y) in x.iter().zip(y) {
        prefetch_ahead(x);
        let x = K4::from(x);
        let (d_dmin, sm) = k4_head(x.head);
        let d_dmin = _mm_mul_ps(d_dmin, _mm_set1_ps(y.scale()));
        let sm = _mm256_cvtepu8_epi16(sm);
        let min_sum = k4_min_sum(_mm256_extracti128_si256::<1>(sm), &y.bsums);
        let dmin = _mm_permute_ps::<0x55>(d_dmin);
        acc_min = _mm_fmadd_ps(dmin, _mm_cvtepi32_ps(min_sum), acc_min);
        let scales = _mm256_permute2x128_si256::<0x00>(sm, sm);
        let mut hbits = x.qh.map(|qh| load(qh));
        let mut sumi = _mm256_setzero_si256();
        for j in 0..4 {
            let bits = load(&x.qs[32 * j..]);
            let mut lo = _mm256_and_si256(bits, m4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4);
            if let Some(hb) = hbits {
                // Bits 2j and 2j+1 of each qh byte are now bits 0 and 1 (see the shift below).
                let b0 = _mm256_slli_epi16::<4>(_mm256_and_si256(hb, _mm256_set1_epi8(1)));
                let b1 = _mm256_slli_epi16::<3>(_mm256_and_si256(hb, _mm256_set1_epi8(2)));
                lo = _mm256_or_si256(lo, b0);
                hi = _mm256_or_si256(hi, b1);
                // Shifting 16-bit words by 2 moves the high byte's low bits into bits 6 and 7 of
                // the low byte, never into bits 0 and 1, for the four steps taken.
                hbits = Some(_mm256_srli_epi16::<2>(hb));
            }
            let plo = _mm256_maddubs_epi16(lo, load_i8(&y.qs[64 * j..]));
            let phi = _mm256_maddubs_epi16(hi, load_i8(&y.qs[64 * j + 32..]));
            let slo = _mm256_shuffle_epi8(scales, word_pick(2 * j, 2 * j));
            let shi = _mm256_shuffle_epi8(scales, word_pick(2 * j + 1, 2 * j + 1));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(slo, plo));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(shi, phi));
        }
        let d = _mm256_broadcastss_ps(d_dmin);
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum(acc) - hsum128(acc_min)
}

/// # Safety
/// As for [`vec_dot_q2_k`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q4_k(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    k4_dot(blocks::<BlockQ4K>(w), blocks::<BlockQ8K>(act))
}

/// # Safety
/// As for [`vec_dot_q2_k`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q5_k(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    k4_dot(blocks::<BlockQ5K>(w), blocks::<BlockQ8K>(act))
}

/// # Safety
/// As for [`vec_dot_q2_k`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q6_k(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    let m4 = _mm256_set1_epi8(0x0f);
    let m3 = _mm256_set1_epi8(3);
    let mut acc = _mm256_setzero_ps();
    for (x, y) in blocks::<BlockQ6K>(w).iter().zip(blocks::<BlockQ8K>(act)) {
        prefetch_ahead(x);
        let d = f16_one(x.d) * y.scale();
        // SAFETY: any 16 bytes are a valid __m128i.
        let sc = unsafe { std::mem::transmute::<[i8; 16], __m128i>(x.scales) };
        // The values are stored plus 32: Σ scale * 32 * bsum is taken back out at the end.
        let offset =
            _mm256_slli_epi32::<5>(_mm256_madd_epi16(load(&y.bsums), _mm256_cvtepi8_epi16(sc)));
        let mut sumi = _mm256_setzero_si256();
        for h in 0..2 {
            let l0 = load(&x.ql[64 * h..]);
            let l1 = load(&x.ql[64 * h + 32..]);
            let hb = load(&x.qh[32 * h..]);
            let q = [
                _mm256_or_si256(
                    _mm256_and_si256(l0, m4),
                    _mm256_slli_epi16::<4>(_mm256_and_si256(hb, m3)),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(l1, m4),
                    _mm256_slli_epi16::<2>(_mm256_and_si256(hb, _mm256_set1_epi8(0x0c))),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(l0), m4),
                    _mm256_and_si256(hb, _mm256_set1_epi8(0x30)),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(l1), m4),
                    _mm256_srli_epi16::<2>(_mm256_and_si256(hb, _mm256_set1_epi8(0xc0u8 as i8))),
                ),
            ];
            for (s, q) in q.into_iter().enumerate() {
                let g = 8 * h + 2 * s;
                let pick = _mm_set_epi64x(
                    0x0101_0101_0101_0101 * (g as i64 + 1),
                    0x0101_0101_0101_0101 * g as i64,
                );
                let scale = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc, pick));
                let p = _mm256_maddubs_epi16(q, load_i8(&y.qs[128 * h + 32 * s..]));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(scale, p));
            }
        }
        let sumi = _mm256_sub_epi32(sumi, offset);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum(acc)
}

// ---- floats -------------------------------------------------------------------------------------

/// Σ x * y over float rows of `width`-byte elements: four accumulators of eight lanes over
/// 32-element steps, then 8-element steps, then the last few elements one by one.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn float_dot(
    w: &[u8],
    act: &[u8],
    width: usize,
    load8: impl Fn(&[u8]) -> __m256,
    one: impl Fn(&[u8]) -> f32,
) -> f32 {
    let step = 8 * width;
    let mut acc = [_mm256_setzero_ps(); 4];
    let (wc, ac) = (w.chunks_exact(4 * step), act.chunks_exact(4 * step));
    let (wr, ar) = (wc.remainder(), ac.remainder());
    for (x, y) in wc.zip(ac) {
        for (k, a) in acc.iter_mut().enumerate() {
            *a = _mm256_fmadd_ps(load8(&x[k * step..]), load8(&y[k * step..]), *a);
        }
    }
    let (wc, ac) = (wr.chunks_exact(step), ar.chunks_exact(step));
    let (wr, ar) = (wc.remainder(), ac.remainder());
    for (x, y) in wc.zip(ac) {
        acc[0] = _mm256_fmadd_ps(load8(x), load8(y), acc[0]);
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let tail: f32 = wr
        .chunks_exact(width)
        .zip(ar.chunks_exact(width))
        .map(|(x, y)| one(x) * one(y))
        .sum();
    hsum(sum) + tail
}

/// # Safety
/// As for [`vec_dot_q8_0`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_f32(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    float_dot(
        w,
        act,
        4,
        |b| _mm256_castsi256_ps(load(b)),
        |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
    )
}

/// # Safety
/// As for [`vec_dot_q8_0`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_f16(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    float_dot(
        w,
        act,
        2,
        |b| _mm256_cvtph_ps(load16(b)),
        |b| f16_le([b[0], b[1]]),
    )
}

/// # Safety
/// As for [`vec_dot_q8_0`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_bf16(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    float_dot(
        w,
        act,
        2,
        // A bfloat16 is the high half of an f32.
        |b| _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(load16(b)))),
        |b| bf16_le([b[0], b[1]]),
    )
}

// ---- the register-tiled GEMM ----------------------------------------------------------------

/// The register-tiled GEMM's kernels for this CPU, for [`crate::gemm::matmul`]: an AVX2 tile
/// (with AVX-VNNI's `vpdpbusd` where the CPU has it: Intel since Alder Lake and Sapphire Rapids,
/// AMD since Zen 4) and activation packing; weights are unpacked once per matmul. Only to be used
/// where [`available`] is true.
pub(crate) fn gemm_kernels() -> gemm::Kernels {
    gemm::Kernels {
        tile: if vnni_available() {
            gemm_tile_vnni
        } else {
            gemm_tile
        },
        unpack: Some(gemm_unpack),
        pack: gemm_pack_activations,
    }
}

/// Whether this CPU has AVX-VNNI (the VEX-encoded `vpdpbusd` on ymm), besides [`available`].
pub(crate) fn vnni_available() -> bool {
    is_x86_feature_detected!("avxvnni")
}

/// [`gemm::unpack_row`] in AVX2, writing the very same groups: each block's quants made in one
/// register, the 16 blocks of a group transposed into its steps in registers ([`interleave`]),
/// the scales multiplied as the plain loop does. (The plain loop moved each block's quants 4
/// bytes at a time: 22 % of a short Q3_K prompt.) Returns false, having written nothing, for a
/// type without a [`gemm::shape`].
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `dst` holds the row's groups.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm_unpack(ty: GgmlType, row: &[u8], dst: &mut [WGroup]) -> bool {
    unpack_row_with(ty, row, dst, |b| interleave(b))
}

/// [`gemm_unpack`] with the transposition of a group's blocks into its steps given: AVX-512's
/// takes whole 512-bit steps in fewer shuffles (5 % of a 7B-shaped Q4_K_M prompt).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn unpack_row_with(
    ty: GgmlType,
    row: &[u8],
    dst: &mut [WGroup],
    interleave: impl Fn(&[__m256i; LANES]) -> [[u8; 64]; STEPS] + Copy,
) -> bool {
    match ty {
        GgmlType::Q8_0 => {
            let flip = _mm256_set1_epi8(0x80u8 as i8);
            unpack_blocks(blocks::<BlockQ8_0>(row), dst, interleave, |x| {
                (x.d, _mm256_xor_si256(load_i8(&x.qs), flip))
            })
        }
        GgmlType::Q4_0 => unpack_blocks(blocks::<BlockQ4_0>(row), dst, interleave, |x| {
            (x.d, nibbles32(&x.qs))
        }),
        GgmlType::Q5_0 => unpack_blocks(blocks::<BlockQ5_0>(row), dst, interleave, |x| {
            (x.d, five_bits32(&x.qs, x.qh))
        }),
        GgmlType::Q2_K => unpack_superblocks(blocks::<BlockQ2K>(row), dst, interleave, |x, sub| {
            unpack_q2k(x, sub)
        }),
        GgmlType::Q3_K => unpack_superblocks(blocks::<BlockQ3K>(row), dst, interleave, |x, sub| {
            unpack_q3k(x, sub)
        }),
        GgmlType::Q4_K => unpack_superblocks(blocks::<BlockQ4K>(row), dst, interleave, |x, sub| {
            unpack_k4(x.into(), sub)
        }),
        GgmlType::Q5_K => unpack_superblocks(blocks::<BlockQ5K>(row), dst, interleave, |x, sub| {
            unpack_k4(x.into(), sub)
        }),
        GgmlType::Q6_K => unpack_superblocks(blocks::<BlockQ6K>(row), dst, interleave, |x, sub| {
            unpack_q6k(x, sub)
        }),
        _ => return false,
    }
    true
}

/// Groups of 16 blocks of 32 elements, one scale each.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn unpack_blocks<B>(
    blocks: &[B],
    dst: &mut [WGroup],
    interleave: impl Fn(&[__m256i; LANES]) -> [[u8; 64]; STEPS],
    quants: impl Fn(&B) -> ([u8; 2], __m256i),
) {
    for (group, w) in blocks.chunks(LANES).zip(dst.iter_mut()) {
        // Lanes past the row's last block stay zero, as the plain loop leaves them.
        let mut buf = [_mm256_setzero_si256(); LANES];
        let mut d = [[[0u8; 2]; 8]; 2];
        for (l, b) in group.iter().enumerate() {
            (d[l / 8][l % 8], buf[l]) = quants(b);
        }
        w.u = interleave(&buf);
        // F16C's conversion, eight at a time: each block's through a branchy scalar one cost as
        // much as its quants (a 16-token Qwen prompt unpacks every Q5_0 row for 18 tokens).
        let halves = d.map(|d| f16x8(d));
        // SAFETY: any 64 bytes are 16 valid f32s.
        let scales = unsafe { std::mem::transmute::<[__m256; 2], [f32; LANES]>(halves) };
        w.scale_lo = scales;
        w.scale_hi = scales;
        w.min = [0.0; LANES];
    }
}

/// One 256-element superblock's eight sub-blocks: quants, and per sub-block `scale_lo`,
/// `scale_hi` and `min` as in [`WGroup`].
struct Sub {
    u: [__m256i; 8],
    scale_lo: [f32; 8],
    scale_hi: [f32; 8],
    min: [f32; 8],
}

/// Two superblocks per group; the second half of a row's last group stays zero without one.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn unpack_superblocks<B>(
    blocks: &[B],
    dst: &mut [WGroup],
    interleave: impl Fn(&[__m256i; LANES]) -> [[u8; 64]; STEPS],
    unpack: impl Fn(&B, &mut Sub),
) {
    let mut sub = Sub {
        u: [_mm256_setzero_si256(); 8],
        scale_lo: [0.0; 8],
        scale_hi: [0.0; 8],
        min: [0.0; 8],
    };
    for (pair, w) in blocks.chunks(2).zip(dst.iter_mut()) {
        let mut buf = [_mm256_setzero_si256(); LANES];
        *w = gemm::ZERO_W;
        for (half, x) in pair.iter().enumerate() {
            unpack(x, &mut sub);
            let lanes = 8 * half..8 * half + 8;
            buf[lanes.clone()].copy_from_slice(&sub.u);
            w.scale_lo[lanes.clone()].copy_from_slice(&sub.scale_lo);
            w.scale_hi[lanes.clone()].copy_from_slice(&sub.scale_hi);
            w.min[lanes].copy_from_slice(&sub.min);
        }
        w.u = interleave(&buf);
    }
}

/// A Q4_K superblock, or a Q5_K one with its fifth bits: sub-block `sb` is the low (even `sb`)
/// or high nibbles of bytes `32 (sb / 2) ..`, plus bit `sb` of each `qh` byte as 16.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn unpack_k4(x: K4, sub: &mut Sub) {
    let low = _mm256_set1_epi8(15);
    // The plain loop's products `d · scale` and `dmin · min`, eight lanes at a time.
    let (d_dmin, sm) = k4_head(x.head);
    let times = |d: __m128, bytes: __m128i| {
        let v = _mm256_mul_ps(
            _mm256_broadcastss_ps(d),
            _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes)),
        );
        // SAFETY: any 32 bytes are valid f32s.
        unsafe { std::mem::transmute::<__m256, [f32; 8]>(v) }
    };
    sub.scale_lo = times(d_dmin, sm);
    sub.scale_hi = sub.scale_lo;
    sub.min = times(_mm_movehdup_ps(d_dmin), _mm_unpackhi_epi64(sm, sm));
    let high_bits = x.qh.map(|h| load(h));
    for j in 0..4 {
        let bytes = load(&x.qs[32 * j..]);
        let nibbles = [
            _mm256_and_si256(bytes, low),
            _mm256_and_si256(_mm256_srli_epi16::<4>(bytes), low),
        ];
        for (half, mut u) in nibbles.into_iter().enumerate() {
            let sb = 2 * j + half;
            if let Some(h) = high_bits {
                u = _mm256_or_si256(u, bit_as(h, sb, 16));
            }
            sub.u[sb] = u;
        }
    }
}

/// `value` in each byte of `bytes` whose bit `bit` is set, else 0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bit_as(bytes: __m256i, bit: usize, value: i8) -> __m256i {
    let mask = _mm256_set1_epi8((1u8 << bit) as i8);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, mask), mask);
    _mm256_and_si256(set, _mm256_set1_epi8(value))
}

/// A Q2_K superblock: sub-block `sb`'s quants are its [`two_bit_planes`], its halves' scales the
/// low nibbles of scale bytes `2 sb` and `2 sb + 1` (the high nibbles, the mins, are subtracted
/// beside the tile: [`gemm::matmul`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn unpack_q2k(x: &BlockQ2K, sub: &mut Sub) {
    let d = f16_le(x.d);
    sub.u = two_bit_planes(&x.qs);
    for sb in 0..8 {
        sub.scale_lo[sb] = d * (x.scales[2 * sb] & 15) as f32;
        sub.scale_hi[sb] = d * (x.scales[2 * sb + 1] & 15) as f32;
    }
    sub.min = [0.0; 8];
}

/// The eight 32-element sub-blocks of Q2_K's and Q3_K's low two bits: sub-block `sb` is bits
/// `2 (sb % 4)` of the 32 bytes `qs[32 (sb / 4)..]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn two_bit_planes(qs: &[u8; 64]) -> [__m256i; 8] {
    let m3 = _mm256_set1_epi8(3);
    let (a, b) = (load(&qs[..32]), load(&qs[32..]));
    let plane = |v: __m256i| _mm256_and_si256(v, m3);
    [
        plane(a),
        plane(_mm256_srli_epi16::<2>(a)),
        plane(_mm256_srli_epi16::<4>(a)),
        plane(_mm256_srli_epi16::<6>(a)),
        plane(b),
        plane(_mm256_srli_epi16::<2>(b)),
        plane(_mm256_srli_epi16::<4>(b)),
        plane(_mm256_srli_epi16::<6>(b)),
    ]
}

/// A Q3_K superblock: sub-block `sb` is its [`two_bit_planes`] plus bit `sb` of each `hmask` byte
/// as 4 (ggml subtracts 4 where it is clear; the shape's offset does).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn unpack_q3k(x: &BlockQ3K, sub: &mut Sub) {
    let hmask = load(&x.hmask);
    let d = f16_le(x.d);
    let sc = crate::formats::q3k_scales(&x.scales);
    for (sb, low) in two_bit_planes(&x.qs).into_iter().enumerate() {
        sub.u[sb] = _mm256_or_si256(low, bit_as(hmask, sb, 4));
        sub.scale_lo[sb] = d * sc[2 * sb] as f32;
        sub.scale_hi[sb] = d * sc[2 * sb + 1] as f32;
    }
    sub.min = [0.0; 8];
}

/// A Q6_K superblock: per half of 128, sub-blocks from the low nibbles of `ql[0..32]`, of
/// `ql[32..64]`, then their high nibbles, with bits 0-1, 2-3, 4-5, 6-7 of `qh[0..32]` on top.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn unpack_q6k(x: &BlockQ6K, sub: &mut Sub) {
    let low = _mm256_set1_epi8(15);
    let top = _mm256_set1_epi8(0x30);
    let d = f16_le(x.d);
    for half in 0..2 {
        let a = load(&x.ql[64 * half..]);
        let b = load(&x.ql[64 * half + 32..]);
        let h = load(&x.qh[32 * half..]);
        let u = [
            (_mm256_and_si256(a, low), _mm256_slli_epi16::<4>(h)),
            (_mm256_and_si256(b, low), _mm256_slli_epi16::<2>(h)),
            (_mm256_and_si256(_mm256_srli_epi16::<4>(a), low), h),
            (
                _mm256_and_si256(_mm256_srli_epi16::<4>(b), low),
                _mm256_srli_epi16::<2>(h),
            ),
        ];
        for (i, (q, h)) in u.into_iter().enumerate() {
            // Each byte's two high bits now sit at bits 4-5 of that same byte.
            sub.u[4 * half + i] = _mm256_or_si256(q, _mm256_and_si256(h, top));
        }
    }
    for sb in 0..8 {
        sub.scale_lo[sb] = d * x.scales[2 * sb] as f32;
        sub.scale_hi[sb] = d * x.scales[2 * sb + 1] as f32;
    }
    sub.min = [0.0; 8];
}

/// 16 blocks of 32 bytes (one per lane) into a group's 8 steps: step `s` holds bytes
/// `4 s .. 4 s + 4` of every block, as one u32 per lane.
///
/// Two 8 × 8 transpositions of u32s (lanes 0..8, then 8..16), in registers: gathers from the
/// blocks just stored would wait for those stores to reach the cache.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn interleave(blocks: &[__m256i; LANES]) -> [[u8; 64]; STEPS] {
    let halves = [transpose8(&blocks[..8]), transpose8(&blocks[8..])];
    std::array::from_fn(|s| {
        // SAFETY: any 64 bytes are a valid [u8; 64].
        unsafe { std::mem::transmute::<[__m256i; 2], [u8; 64]>([halves[0][s], halves[1][s]]) }
    })
}

/// Row `c` of the result is u32 `c` of each of the eight registers `r`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn transpose8(r: &[__m256i]) -> [__m256i; 8] {
    // u32s (i, c) and (i + 1, c) next to each other: pair p holds rows 2p, 2p + 1 of columns
    // {0, 1 | 4, 5} (lo) and {2, 3 | 6, 7} (hi), per 128-bit lane.
    let lo: [__m256i; 4] = std::array::from_fn(|p| _mm256_unpacklo_epi32(r[2 * p], r[2 * p + 1]));
    let hi: [__m256i; 4] = std::array::from_fn(|p| _mm256_unpackhi_epi32(r[2 * p], r[2 * p + 1]));
    // Rows 4q .. 4q + 4 of column c (lane 0) and c + 4 (lane 1), for c = 0, 1, 2, 3.
    let quads: [[__m256i; 4]; 2] = std::array::from_fn(|q| {
        let (a, b) = (2 * q, 2 * q + 1);
        [
            _mm256_unpacklo_epi64(lo[a], lo[b]),
            _mm256_unpackhi_epi64(lo[a], lo[b]),
            _mm256_unpacklo_epi64(hi[a], hi[b]),
            _mm256_unpackhi_epi64(hi[a], hi[b]),
        ]
    });
    std::array::from_fn(|c| {
        let (a, b) = (quads[0][c % 4], quads[1][c % 4]);
        if c < 4 {
            _mm256_permute2x128_si256::<0x20>(a, b)
        } else {
            _mm256_permute2x128_si256::<0x31>(a, b)
        }
    })
}

/// The [`crate::gemm`] tile in 256-bit halves (lanes 0..8, then 8..16 of each group).
///
/// Without VNNI a step's products are `vpmaddubsw` pairs in 16 bits, which saturate: as many
/// steps are added in 16 bits as `shape.bits` allows (8 for 4-bit quants, 4 for 5-bit, 2 for
/// 6-bit, a split part's 4 for 3-bit: at most 2·127·(2^bits - 1) per pair and step), then widened
/// with `vpmaddwd` into the 32-bit sums. Q8_0's unsigned `u = w + 128` would overflow even one
/// step, so its tile takes ggml's route: `|w|` times the activation carrying `w`'s sign (at most
/// 2·128·127), no offset.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `w` holds `RM` rows and `act` `RN` tokens of `count`
/// groups each, `stride` groups apart.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm_tile(
    shape: Shape,
    w: &[WGroup],
    act: &[ActGroup],
    stride: usize,
    count: usize,
    half: bool,
    out: &mut [f32; RM * RN],
) {
    let t = (w, act, stride, count, half, out);
    // SAFETY: the caller checked the features.
    unsafe {
        match (shape.bits, shape.split, shape.min, shape.offset != 0) {
            (8, false, false, true) => tile::<1, true, false, false, false, false>(t),
            (4, false, false, true) => tile::<8, false, false, false, true, false>(t),
            (5, false, false, true) => tile::<4, false, false, false, true, false>(t),
            (4, false, true, false) => tile::<8, false, false, true, false, false>(t),
            (5, false, true, false) => tile::<4, false, false, true, false, false>(t),
            (2, true, false, false) => tile::<4, false, true, false, false, false>(t),
            (3, true, false, true) => tile::<4, false, true, false, true, false>(t),
            (6, true, false, true) => tile::<2, false, true, false, true, false>(t),
            other => unreachable!("avx2 gemm tile: no variant for {other:?}"),
        }
    }
}

/// [`gemm_tile`] with AVX-VNNI: `vpdpbusd` adds each step's four-byte products straight into
/// the 32-bit sums, so no type needs 16-bit steps or a widening, and Q8_0 takes the unsigned
/// route of the others (`u = w + 128`, its offset's bias starting the sums).
///
/// # Safety
/// As [`gemm_tile`]; the CPU must also have AVX-VNNI.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub(crate) unsafe fn gemm_tile_vnni(
    shape: Shape,
    w: &[WGroup],
    act: &[ActGroup],
    stride: usize,
    count: usize,
    half: bool,
    out: &mut [f32; RM * RN],
) {
    let t = (w, act, stride, count, half, out);
    // SAFETY: the caller checked the features.
    unsafe {
        match (shape.split, shape.min, shape.offset != 0) {
            (false, false, true) => tile::<0, false, false, false, true, true>(t),
            (false, true, false) => tile::<0, false, false, true, false, true>(t),
            (true, false, false) => tile::<0, false, true, false, false, true>(t),
            (true, false, true) => tile::<0, false, true, false, true, true>(t),
            other => unreachable!("avx2 vnni gemm tile: no variant for {other:?}"),
        }
    }
}

/// The tile for `FLUSH` steps added in 16 bits, Q8_0's `SIGNED` products, two scales per block
/// (`SPLIT`), a min term (`MIN`), an offset whose activation biases start the integer sums
/// (`BIAS`: without one, Q4_K's and Q5_K's sums start from zero, an add and a load less per token
/// and half group, 3 % of a 7B-shaped Q4_K_M prompt), and `VNNI`'s `vpdpbusd` (then `FLUSH` is
/// unused). Inlined into [`gemm_tile`] or [`gemm_tile_vnni`], whose features its instructions
/// take: it has none of its own, so that the plain tile is never compiled with AVX-VNNI (LLVM
/// would fuse its `vpmaddwd` and add into a `vpdpwssd`).
///
/// One row at a time meets the `RN` tokens: its 16- and 32-bit sums, the row's bytes and a
/// token's bytes take 9 of the 16 ymm registers. Two or four rows at a time spill sums to the
/// stack and were slower (7B-shaped Q4_K_M, pp128, one thread: 8.5 and 9.6 t/s, against 10.5).
///
/// # Safety
/// As [`gemm_tile`], and AVX-VNNI with `VNNI`.
#[inline(always)]
unsafe fn tile<
    const FLUSH: usize,
    const SIGNED: bool,
    const SPLIT: bool,
    const MIN: bool,
    const BIAS: bool,
    const VNNI: bool,
>(
    (w, act, stride, count, half, out): TileArgs,
) {
    let (w, act) = (
        &w[..(RM - 1) * stride + count],
        &act[..(RN - 1) * stride + count],
    );
    // SAFETY: forwarded from the caller.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); RN]; RM];
        for g in 0..count {
            let ag: [&ActGroup; RN] = std::array::from_fn(|j| &act[j * stride + g]);
            for (i, acc) in acc.iter_mut().enumerate() {
                let wg = &w[i * stride + g];
                row_part::<0, FLUSH, SIGNED, SPLIT, MIN, BIAS, VNNI>(wg, &ag, acc);
                // A group whose upper 8 lanes are padding (the last group of a row whose block
                // count leaves at most 8 over) needs only its lower half.
                if !(half && g + 1 == count) {
                    row_part::<1, FLUSH, SIGNED, SPLIT, MIN, BIAS, VNNI>(wg, &ag, acc);
                }
            }
        }
        const { assert!(RM == 4) };
        for (j, out) in out.chunks_exact_mut(RM).enumerate() {
            // Three horizontal adds give the four rows' sums of each 128-bit half side by side.
            let ab = _mm256_hadd_ps(acc[0][j], acc[1][j]);
            let cd = _mm256_hadd_ps(acc[2][j], acc[3][j]);
            let abcd = _mm256_hadd_ps(ab, cd);
            let sums = _mm_add_ps(
                _mm256_castps256_ps128(abcd),
                _mm256_extractf128_ps::<1>(abcd),
            );
            // SAFETY: any 16 bytes are four valid f32s.
            let sums = std::mem::transmute::<__m128, [f32; 4]>(sums);
            for (o, v) in out.iter_mut().zip(sums) {
                *o += v;
            }
        }
    }
}

/// Half `H` (lanes 8H..8H+8) of one group of one row × `RN` tokens: exact integer sums per
/// block, scaled by weight scale × activation scale into the f32 accumulators.
///
/// # Safety
/// As [`tile`].
#[inline(always)]
unsafe fn row_part<
    const H: usize,
    const FLUSH: usize,
    const SIGNED: bool,
    const SPLIT: bool,
    const MIN: bool,
    const BIAS: bool,
    const VNNI: bool,
>(
    wg: &WGroup,
    ag: &[&ActGroup; RN],
    acc: &mut [__m256; RN],
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        let bytes = |v: &[u8; 64]| load(&v[32 * H..]);
        let signed_bytes = |v: &[i8; 64]| load_i8(&v[32 * H..]);
        let floats = |v: &[f32; 16]| -> __m256 {
            let a: [f32; 8] = v[8 * H..8 * H + 8].try_into().expect("8 lanes");
            // SAFETY: any 32 bytes are a valid __m256.
            std::mem::transmute::<[f32; 8], __m256>(a)
        };
        let ints = |v: &[i32; 16]| -> __m256i {
            let a: [i32; 8] = v[8 * H..8 * H + 8].try_into().expect("8 lanes");
            // SAFETY: any 32 bytes are a valid __m256i.
            std::mem::transmute::<[i32; 8], __m256i>(a)
        };
        let ones = _mm256_set1_epi16(1);
        let flip = _mm256_set1_epi8(0x80u8 as i8);
        // (A macro, not a closure: the sums must stay in registers.)
        macro_rules! part {
            ($steps:expr, $bias:ident, $scale:ident) => {{
                let mut dot: [__m256i; RN] = std::array::from_fn(|j| {
                    if BIAS {
                        ints(&ag[j].$bias)
                    } else {
                        _mm256_setzero_si256()
                    }
                });
                if VNNI {
                    for s in $steps {
                        let u = bytes(&wg.u[s]);
                        for (dot, ag) in dot.iter_mut().zip(ag) {
                            *dot = _mm256_dpbusd_avx_epi32(*dot, u, signed_bytes(&ag.qs[s]));
                        }
                    }
                } else {
                    for s0 in $steps.step_by(FLUSH) {
                        let mut dot16 = [_mm256_setzero_si256(); RN];
                        for s in s0..s0 + FLUSH {
                            let u = bytes(&wg.u[s]);
                            // Q8_0: the signed weights, and their magnitudes as unsigned bytes.
                            let signed = _mm256_xor_si256(u, flip);
                            let magnitude = _mm256_sign_epi8(signed, signed);
                            for (dot16, ag) in dot16.iter_mut().zip(ag) {
                                let q = signed_bytes(&ag.qs[s]);
                                let p = if SIGNED {
                                    _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(q, signed))
                                } else {
                                    _mm256_maddubs_epi16(u, q)
                                };
                                *dot16 = _mm256_add_epi16(*dot16, p);
                            }
                        }
                        for (dot, dot16) in dot.iter_mut().zip(dot16) {
                            *dot = _mm256_add_epi32(*dot, _mm256_madd_epi16(dot16, ones));
                        }
                    }
                }
                let sw = floats(&wg.$scale);
                for ((acc, dot), ag) in acc.iter_mut().zip(dot).zip(ag) {
                    let scale = _mm256_mul_ps(sw, floats(&ag.d));
                    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, *acc);
                }
            }};
        }
        if SPLIT {
            part!(0..STEPS / 2, bias_lo, scale_lo);
            part!(STEPS / 2..STEPS, bias_hi, scale_hi);
        } else {
            part!(0..STEPS, bias_lo, scale_lo);
        }
        if MIN {
            let min = floats(&wg.min);
            for (acc, ag) in acc.iter_mut().zip(ag) {
                // acc -= min · d Σq
                *acc = _mm256_fnmadd_ps(min, floats(&ag.dsum), *acc);
            }
        }
    }
}

// ---- attention's f16 accumulator ---------------------------------------------------------------

/// [`crate::scale_add_f16`] by F16C, 8 elements at a time, with the same bits as the plain loop
/// (whose integer rounding is F16C's round-to-nearest-even, tested), which also does the tail.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn scale_add_f16(acc: &mut [f16], acc_scale: f32, v: &[f16], v_scale: f32) {
    let n = acc.len().min(v.len());
    let whole = n - n % 8;
    let (scale_a, scale_v) = (_mm256_set1_ps(acc_scale), _mm256_set1_ps(v_scale));
    let to_f16 = |x: __m256| _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
    for (a, v) in acc[..whole]
        .chunks_exact_mut(8)
        .zip(v[..whole].chunks_exact(8))
    {
        // SAFETY: both chunks are 8 f16s, 16 bytes, read and written unaligned.
        unsafe {
            let pa = a.as_mut_ptr().cast::<__m128i>();
            let mut x = _mm256_cvtph_ps(_mm_loadu_si128(pa));
            if acc_scale != 1.0 {
                x = _mm256_cvtph_ps(to_f16(_mm256_mul_ps(x, scale_a)));
            }
            let y = _mm256_cvtph_ps(_mm_loadu_si128(v.as_ptr().cast::<__m128i>()));
            _mm_storeu_si128(pa, to_f16(_mm256_fmadd_ps(y, scale_v, x)));
        }
    }
    crate::quantize::scale_add_f16(&mut acc[whole..n], acc_scale, &v[whole..n], v_scale);
}

// ---- attention's f32 blocks ---------------------------------------------------------------------

/// What a hand-written 8-row × 16-key query block may read: 8 rows of `dim` in `q`, and keys
/// `p0..p0 + 16` of `dim` rows `stride` apart.
///
/// # Panics
/// If they are not there.
pub(super) fn check_columns_block(q: &[f32], dim: usize, keys: &[f32], stride: usize, p0: usize) {
    assert!(q.len() >= 8 * dim, "columns_8x16: 8 rows of {dim}");
    assert!(
        dim == 0 || keys.len() >= (dim - 1) * stride + p0 + 16,
        "columns_8x16: 16 keys from {p0} in {dim} rows of stride {stride}"
    );
}

/// What a hand-written 4-row × 32-element weighted block may read: 4 rows of `n` weights, and
/// elements `c0..c0 + 32` of `n` value rows `stride` apart.
///
/// # Panics
/// If they are not there.
pub(super) fn check_weighted_block(w: &[f32], n: usize, values: &[f32], stride: usize, c0: usize) {
    assert!(w.len() >= 4 * n, "weighted_4x32: 4 rows of {n}");
    assert!(
        n == 0 || values.len() >= (n - 1) * stride + c0 + 32,
        "weighted_4x32: 32 elements from {c0} in {n} rows of stride {stride}"
    );
}

/// [`crate::rows`]'s query block in AVX2: what [`super::avx512::columns_8x16`] computes (each sum
/// fused-multiply-added in order of `i`, the generic block's bits), as two passes of 4 rows × 16
/// keys: eight ymm sums, two key vectors and a broadcast fit the 16 registers, where 8 × 16 would
/// spill.
///
/// # Panics
/// If `q` holds fewer than 8 rows of `dim` or `keys` lacks the 16 columns from `p0` in a row.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn columns_8x16(
    q: &[f32],
    dim: usize,
    keys: &[f32],
    stride: usize,
    p0: usize,
) -> [[f32; 16]; 8] {
    check_columns_block(q, dim, keys, stride, p0);
    let mut out = [[0.0f32; 16]; 8];
    for (r0, out) in [0, 4].into_iter().zip(out.chunks_exact_mut(4)) {
        let mut acc = [[_mm256_setzero_ps(); 2]; 4];
        for i in 0..dim {
            // SAFETY: i < dim, so i · stride + p0 + 16 is within `keys` (checked above).
            let k = unsafe {
                let at = keys.as_ptr().add(i * stride + p0);
                [_mm256_loadu_ps(at), _mm256_loadu_ps(at.add(8))]
            };
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: (r0 + r) · dim + i < 8 · dim ≤ q.len() (checked above).
                let qi = _mm256_set1_ps(unsafe { *q.get_unchecked((r0 + r) * dim + i) });
                acc[0] = _mm256_fmadd_ps(qi, k[0], acc[0]);
                acc[1] = _mm256_fmadd_ps(qi, k[1], acc[1]);
            }
        }
        for (out, acc) in out.iter_mut().zip(acc) {
            // SAFETY: two vectors of 8 f32s are 16 f32s.
            *out = unsafe { std::mem::transmute::<[__m256; 2], [f32; 16]>(acc) };
        }
    }
    out
}

/// [`crate::rows`]'s weighted block in AVX2: what [`super::avx512::weighted_4x32`] computes (in
/// order of `p`, the generic block's bits), as two passes of 4 rows × 16 elements, for the
/// registers as in [`columns_8x16`].
///
/// # Panics
/// If `w` holds fewer than 4 rows of `n` or `values` lacks the 32 elements from `c0` in a row.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn weighted_4x32(
    w: &[f32],
    n: usize,
    values: &[f32],
    stride: usize,
    c0: usize,
) -> [[f32; 32]; 4] {
    check_weighted_block(w, n, values, stride, c0);
    let mut out = [[0.0f32; 32]; 4];
    for half in 0..2 {
        let mut acc = [[_mm256_setzero_ps(); 2]; 4];
        for p in 0..n {
            // SAFETY: p < n, so p · stride + c0 + 32 is within `values` (checked above).
            let v = unsafe {
                let at = values.as_ptr().add(p * stride + c0 + 16 * half);
                [_mm256_loadu_ps(at), _mm256_loadu_ps(at.add(8))]
            };
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: r · n + p < 4 · n ≤ w.len() (checked above).
                let wp = _mm256_set1_ps(unsafe { *w.get_unchecked(r * n + p) });
                acc[0] = _mm256_fmadd_ps(wp, v[0], acc[0]);
                acc[1] = _mm256_fmadd_ps(wp, v[1], acc[1]);
            }
        }
        for (out, acc) in out.iter_mut().zip(acc) {
            // SAFETY: two vectors of 8 f32s are 16 f32s.
            out[16 * half..16 * half + 16]
                .copy_from_slice(&unsafe { std::mem::transmute::<[__m256; 2], [f32; 16]>(acc) });
        }
    }
    out
}

/// [`crate::gemm::pack_activations`] in AVX2, with the same bits: per block `d = amax / 127`
/// and quants `x / d` rounded half away from zero (ggml's `quantize_row_q8_0_ref`), eight
/// blocks' scales at a time; each block's 32 quants then go to their 4-byte slots.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm_pack_activations(shape: Shape, x: &[f32], dst: &mut [ActGroup]) {
    let sign = _mm256_set1_ps(-0.0);
    let load_block = |xb: &[f32]| -> [__m256; 4] {
        let xb: &[f32; 32] = xb.try_into().expect("a whole block");
        // SAFETY: xb holds 32 f32s.
        std::array::from_fn(|i| unsafe { _mm256_loadu_ps(xb.as_ptr().add(8 * i)) })
    };
    for (xg, a) in x.chunks(32 * 16).zip(dst.iter_mut()) {
        let blocks = xg.len() / 32;
        let mut amax = [0.0f32; 16];
        for (m, xb) in amax.iter_mut().zip(xg.chunks_exact(32)) {
            let v = load_block(xb).map(|v| _mm256_andnot_ps(sign, v));
            let m8 = _mm256_max_ps(_mm256_max_ps(v[0], v[1]), _mm256_max_ps(v[2], v[3]));
            let m4 = _mm_max_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps::<1>(m8));
            let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            *m = _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)));
        }
        let mut d = [0.0f32; 16];
        let mut id = [0.0f32; 16];
        for h in 0..2 {
            // SAFETY: 8 f32s each way.
            let dv = _mm256_div_ps(
                unsafe { _mm256_loadu_ps(amax.as_ptr().add(8 * h)) },
                _mm256_set1_ps(127.0),
            );
            let nonzero = _mm256_cmp_ps::<_CMP_NEQ_OQ>(dv, _mm256_setzero_ps());
            let idv = _mm256_and_ps(nonzero, _mm256_div_ps(_mm256_set1_ps(1.0), dv));
            // The scales as stored in f16 (as Q8_0 keeps them), back in f32.
            let dv = _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(dv));
            // SAFETY: as above.
            unsafe {
                _mm256_storeu_ps(d.as_mut_ptr().add(8 * h), dv);
                _mm256_storeu_ps(id.as_mut_ptr().add(8 * h), idv);
            }
        }
        let mut qs = [[0i8; 64]; STEPS];
        for (l, xb) in xg.chunks_exact(32).enumerate() {
            let scale = _mm256_set1_ps(id[l]);
            let q = load_block(xb).map(|v| round_away(_mm256_mul_ps(v, scale)));
            let sum = |a: __m256i, b: __m256i| -> i32 {
                let s = _mm256_add_epi32(a, b);
                let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
                let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
                _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s)))
            };
            let (lo, hi) = (sum(q[0], q[1]), sum(q[2], q[3]));
            // i32 -> i8 in element order: the packs work within 128-bit halves, the permute
            // puts the four 4-element runs back in order.
            let bytes = _mm256_permutevar8x32_epi32(
                _mm256_packs_epi16(
                    _mm256_packs_epi32(q[0], q[1]),
                    _mm256_packs_epi32(q[2], q[3]),
                ),
                _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7),
            );
            // SAFETY: any 32 bytes are eight 4-byte runs.
            let runs = unsafe { std::mem::transmute::<__m256i, [[i8; 4]; 8]>(bytes) };
            for (step, run) in qs.iter_mut().zip(runs) {
                step[4 * l..4 * l + 4].copy_from_slice(&run);
            }
            a.set_sums(l, shape, d[l], lo, hi);
        }
        for l in blocks..16 {
            a.set_sums(l, shape, 0.0, 0, 0);
        }
        a.qs = qs;
        a.d = d;
    }
}

/// `x` rounded half away from zero, as ggml's `roundf` in `quantize_row_q8_0_ref`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn round_away(x: __m256) -> __m256i {
    let t = _mm256_cvttps_epi32(x);
    let frac = _mm256_sub_ps(x, _mm256_cvtepi32_ps(t));
    // The comparisons give all-ones (-1) lanes: subtracting adds one, adding subtracts one.
    let up = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GE_OQ>(frac, _mm256_set1_ps(0.5)));
    let down = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(frac, _mm256_set1_ps(-0.5)));
    _mm256_add_epi32(_mm256_sub_epi32(t, up), down)
}

/// [`crate::attend_f16`] with this module's f16 dot product and accumulator step inlined into the
/// loop over positions.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn attend_f16(head: &crate::AttentionHead, acc: &mut [f16]) -> f32 {
    let bytes = |v: &[f16]| -> &[u8] {
        // SAFETY: f16 is a plain 2-byte value; the view covers exactly the borrowed memory.
        unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
    };
    head.attend(
        acc,
        // SAFETY: the caller checked the features; both rows are as long as the query.
        |k, q| unsafe { vec_dot_f16(q.len(), bytes(k), bytes(q)) },
        // SAFETY: as above.
        |a, ms, v, vs| unsafe { scale_add_f16(a, ms, v, vs) },
    )
}
