//! AVX-512 (F, BW, VL) with VNNI dot products, for the types the test models use most.
//!
//! VNNI's `vpdpbusd` multiplies unsigned by signed bytes and adds each group of four products to
//! an i32 without any intermediate saturation, so the 32-element formats need no sign tricks:
//! every weight byte is read as an unsigned `u` with `w = u - offset` (Q8_0: `u = w ^ 0x80`,
//! offset 128; Q4_0: the nibble, offset 8; Q5_0: offset 16), and `Σ w·y = Σ u·y - offset·Σ y`, both
//! by `vpdpbusd`, exact for any bytes. Two blocks share one 512-bit register.
//!
//! The k-quants keep AVX2's `vpmaddubsw` (its unsigned weights stay clear of saturation) but take
//! 64 quants at a time and fold the scale multiply and the i32 accumulation into one `vpdpwssd`.
//! Types without a kernel here use the AVX2 one.

use super::avx2::{
    self, f16_one, f16x8, hsum, hsum128, k4_head, k4_min_sum, load, load_i8, nibbles32,
    prefetch_ahead, q2k_head, q3k_head, scale_product, K4,
};
use crate::formats::{
    blocks, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ5K, BlockQ5_0, BlockQ6K, BlockQ8K,
    BlockQ8_0, Q8_0Act,
};
use crate::gemm::{ActGroup, Shape, WGroup, RM, RN, STEPS};
use crate::vec_dot_fn::VecDotFn;
use ggml_types::GgmlType;
use std::arch::x86_64::*;

/// Whether this CPU can run these kernels (which also use the AVX2 helpers).
pub(crate) fn available() -> bool {
    avx2::available()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

/// The AVX-512 kernel for weights of type `ty`, if there is one. Only to be called when
/// [`available`] is true.
pub(crate) fn kernel(ty: GgmlType) -> Option<VecDotFn> {
    use GgmlType::*;
    Some(match ty {
        Q2_K => vec_dot_q2_k,
        Q3_K => vec_dot_q3_k,
        Q4_0 => vec_dot_q4_0,
        Q5_0 => vec_dot_q5_0,
        Q8_0 => vec_dot_q8_0,
        Q4_K => vec_dot_q4_k,
        Q5_K => vec_dot_q5_k,
        Q6_K => vec_dot_q6_k,
        _ => return None,
    })
}

/// 64 signed bytes from the start of `s` (see AVX2's `load` for why not `_mm512_loadu_si512`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load512_i8(s: &[i8]) -> __m512i {
    let a: [i8; 64] = s[..64].try_into().expect("a 64-byte range");
    // SAFETY: any 64 bytes are a valid __m512i.
    unsafe { std::mem::transmute::<[i8; 64], __m512i>(a) }
}

/// 64 bytes from the start of `s`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load512(s: &[u8]) -> __m512i {
    let a: [u8; 64] = s[..64].try_into().expect("a 64-byte range");
    // SAFETY: any 64 bytes are a valid __m512i.
    unsafe { std::mem::transmute::<[u8; 64], __m512i>(a) }
}

/// `lo` in bytes 0..32, `hi` in 32..64.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// Words: `a` in the low 16, `b` in the high 16.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn halves_epi16(a: i16, b: i16) -> __m512i {
    _mm512_mask_blend_epi16(0xffff_0000, _mm512_set1_epi16(a), _mm512_set1_epi16(b))
}

/// One 32-element block prepared for [`sum_blocks`]: the weights' and the activations' scales
/// (f16 bits), its weights as unsigned bytes, its activations.
type Prepared = ([u8; 2], [u8; 2], __m256i, __m256i);

/// Σ over blocks of `d_w · d_a · Σ (u - OFFSET) · y`, with two accumulators so that consecutive
/// blocks' FMAs do not wait on each other. The scale products are made eight blocks at a time,
/// by one conversion and one multiply (per block that was eight scalar instructions, most of a
/// block's cost), then taken lane by lane: the same products, so the same result.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn sum_blocks<X, Y, const OFFSET: u8>(
    x: &[X],
    y: &[Y],
    prepare: impl Fn(&X, &Y) -> Prepared,
) -> f32 {
    let off = _mm256_set1_epi8(OFFSET as i8);
    let zero = _mm256_setzero_si256();
    let mut acc = [_mm256_setzero_ps(); 2];
    // (A macro, not a closure: called from two places, a closure is not inlined, and then its
    // intrinsics are calls compiled without this function's features.)
    macro_rules! block {
        ($u:expr, $q8:expr, $d:expr, $acc:expr) => {{
            let mut sumi = _mm256_dpbusd_epi32(zero, $u, $q8);
            if OFFSET != 0 {
                sumi = _mm256_sub_epi32(sumi, _mm256_dpbusd_epi32(zero, off, $q8));
            }
            $acc = _mm256_fmadd_ps($d, _mm256_cvtepi32_ps(sumi), $acc);
        }};
    }
    let (xs, ys) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail = xs.remainder().iter().zip(ys.remainder());
    for (x, y) in xs.zip(ys) {
        prefetch_ahead(x);
        let p: [Prepared; 8] = std::array::from_fn(|k| prepare(&x[k], &y[k]));
        let scales = _mm256_mul_ps(f16x8(p.map(|b| b.0)), f16x8(p.map(|b| b.1)));
        for (k, &(_, _, u, q8)) in p.iter().enumerate() {
            let d = _mm256_permutexvar_ps(_mm256_set1_epi32(k as i32), scales);
            block!(u, q8, d, acc[k % 2]);
        }
    }
    // The last few blocks one by one; the first of them has an even index, as above.
    for (k, (x, y)) in tail.enumerate() {
        let (dw, da, u, q8) = prepare(x, y);
        block!(u, q8, _mm256_set1_ps(scale_product(dw, da)), acc[k % 2]);
    }
    hsum(_mm256_add_ps(acc[0], acc[1]))
}

/// # Safety
/// The CPU must have AVX-512 F, BW, VL and VNNI (and AVX2, FMA, F16C); `w` and `act` must be
/// whole rows of `n` elements.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q8_0(n: usize, w: &[u8], act: &[u8]) -> f32 {
    // Signed by signed: |w| times q with w's sign, which vpdpbusd takes as unsigned by signed
    // (|w| ≤ 128 fits a byte; q is at most 127 in size, so negating it cannot overflow).
    sum_blocks::<_, _, 0>(
        blocks::<BlockQ8_0>(w),
        Q8_0Act::new(n, act).blocks,
        |x, y| {
            let w = load_i8(&x.qs);
            let q = _mm256_sign_epi8(load_i8(&y.qs), w);
            (x.d, y.d, _mm256_abs_epi8(w), q)
        },
    )
}

/// # Safety
/// As for [`vec_dot_q8_0`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q4_0(n: usize, w: &[u8], act: &[u8]) -> f32 {
    sum_blocks::<_, _, 8>(
        blocks::<BlockQ4_0>(w),
        Q8_0Act::new(n, act).blocks,
        |x, y| (x.d, y.d, nibbles32(&x.qs), load_i8(&y.qs)),
    )
}

/// # Safety
/// As for [`vec_dot_q8_0`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q5_0(n: usize, w: &[u8], act: &[u8]) -> f32 {
    let sixteen = _mm256_set1_epi8(16);
    sum_blocks::<_, _, 16>(
        blocks::<BlockQ5_0>(w),
        Q8_0Act::new(n, act).blocks,
        |x, y| {
            // Bit j of qh adds 16 to element j.
            let q = nibbles32(&x.qs);
            let u = _mm256_mask_add_epi8(q, u32::from_le_bytes(x.qh), q, sixteen);
            (x.d, y.d, u, load_i8(&y.qs))
        },
    )
}

/// The Q4_K/Q5_K dot product (layout as in AVX2's): per 64 quants one `vpmaddubsw` and one
/// `vpdpwssd` with the two chunks' scales.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn k4_dot<'a, X: 'a>(x: &'a [X], y: &[BlockQ8K]) -> f32
where
    K4<'a>: From<&'a X>,
{
    let m4 = _mm256_set1_epi8(0x0f);
    let mut acc = _mm512_setzero_ps();
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
        let scales = _mm512_castsi256_si512(sm);
        let mut hbits = x.qh.map(|qh| load(qh));
        let mut sumi = _mm512_setzero_si512();
        for j in 0..4 {
            let bits = load(&x.qs[32 * j..]);
            let mut lo = _mm256_and_si256(bits, m4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4);
            if let Some(hb) = hbits {
                // As in AVX2's: bits 2j and 2j+1 of each qh byte are at bits 0 and 1 by now.
                let b0 = _mm256_slli_epi16::<4>(_mm256_and_si256(hb, _mm256_set1_epi8(1)));
                let b1 = _mm256_slli_epi16::<3>(_mm256_and_si256(hb, _mm256_set1_epi8(2)));
                lo = _mm256_or_si256(lo, b0);
                hi = _mm256_or_si256(hi, b1);
                hbits = Some(_mm256_srli_epi16::<2>(hb));
            }
            let p = _mm512_maddubs_epi16(join(lo, hi), load512_i8(&y.qs[64 * j..]));
            let pick = halves_epi16(2 * j as i16, 2 * j as i16 + 1);
            sumi = _mm512_dpwssd_epi32(sumi, p, _mm512_permutexvar_epi16(pick, scales));
        }
        let d = _mm512_broadcastss_ps(d_dmin);
        acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi), acc);
    }
    _mm512_reduce_add_ps(acc) - hsum128(acc_min)
}

/// # Safety
/// As for [`vec_dot_q8_0`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q4_k(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    k4_dot(blocks::<BlockQ4K>(w), blocks::<BlockQ8K>(act))
}

/// # Safety
/// As for [`vec_dot_q8_0`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q5_k(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    k4_dot(blocks::<BlockQ5K>(w), blocks::<BlockQ8K>(act))
}

/// # Safety
/// As for [`vec_dot_q8_0`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q6_k(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    let m4 = _mm512_set1_epi8(0x0f);
    let m3 = _mm512_set1_epi8(3);
    // The high bits of chunks 0/1 (first register) and 2/3 (second) sit at these shifts in qh.
    let shift_a = halves_epi16(0, 2);
    let shift_b = halves_epi16(4, 6);
    let mut acc = _mm512_setzero_ps();
    for (x, y) in blocks::<BlockQ6K>(w).iter().zip(blocks::<BlockQ8K>(act)) {
        prefetch_ahead(x);
        let d = f16_one(x.d) * y.scale();
        // SAFETY: any 16 bytes are a valid __m128i.
        let sc = unsafe { std::mem::transmute::<[i8; 16], __m128i>(x.scales) };
        let sc = _mm256_cvtepi8_epi16(sc);
        // The values are stored plus 32: Σ scale * 32 * bsum is taken back out at the end.
        let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(load(&y.bsums), sc));
        let scales = _mm512_castsi256_si512(sc);
        let mut sumi = _mm512_setzero_si512();
        for h in 0..2 {
            let ql = load512(&x.ql[64 * h..]);
            let hb = _mm512_broadcast_i64x4(load(&x.qh[32 * h..]));
            let high =
                |shift| _mm512_slli_epi16::<4>(_mm512_and_si512(_mm512_srlv_epi16(hb, shift), m3));
            let a = _mm512_or_si512(_mm512_and_si512(ql, m4), high(shift_a));
            let b = _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4),
                high(shift_b),
            );
            let pa = _mm512_maddubs_epi16(a, load512_i8(&y.qs[128 * h..]));
            let pb = _mm512_maddubs_epi16(b, load512_i8(&y.qs[128 * h + 64..]));
            // 128-bit lane L of the first register is group 8h + L, of the second 8h + 4 + L.
            let sa = _mm512_permutexvar_epi16(lane_words(8 * h as i64), scales);
            let sb = _mm512_permutexvar_epi16(lane_words(8 * h as i64 + 4), scales);
            sumi = _mm512_dpwssd_epi32(sumi, pa, sa);
            sumi = _mm512_dpwssd_epi32(sumi, pb, sb);
        }
        let sumi = _mm512_sub_epi32(sumi, _mm512_zextsi256_si512(offset));
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    _mm512_reduce_add_ps(acc)
}

/// Word indices `first + L` in each 128-bit lane `L`: with `vpermw`, a 16-element group's scale
/// under each word of a `vpmaddubsw` over 64 consecutive k-quant elements (eight words per group).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn lane_words(first: i64) -> __m512i {
    let w = |l: i64| 0x0001_0001_0001_0001 * (first + l);
    _mm512_set_epi64(w(3), w(3), w(2), w(2), w(1), w(1), w(0), w(0))
}

/// The 2-bit fields of a 32-byte run of Q2_K/Q3_K quants for 64 consecutive elements: field `2k`
/// (chunk `2k`, bytes 0..32) and field `2k + 1` (chunk `2k + 1`, bytes 32..64), from `bits`
/// broadcast to both halves.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn two_bit_pair(bits: __m512i, k: i16) -> __m512i {
    let shift = halves_epi16(4 * k, 4 * k + 2);
    _mm512_and_si512(_mm512_srlv_epi16(bits, shift), _mm512_set1_epi8(3))
}

/// Q2_K as AVX2's (scales and mins from the packed nibbles, the mins' term through the
/// activations' sums), 64 elements per `vpmaddubsw` and `vpdpwssd`, as Q6_K's: half the AVX2
/// kernel's instructions a block.
///
/// # Safety
/// As for [`vec_dot_q8_0`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q2_k(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    let mut acc = _mm512_setzero_ps();
    let mut acc_min = _mm256_setzero_ps();
    for (x, y) in blocks::<BlockQ2K>(w).iter().zip(blocks::<BlockQ8K>(act)) {
        prefetch_ahead(x);
        let (d, scales) = q2k_head(x, y, &mut acc_min);
        let scales = _mm512_castsi256_si512(scales);
        let mut sumi = _mm512_setzero_si512();
        for h in 0..2 {
            let bits = _mm512_broadcast_i64x4(load(&x.qs[32 * h..]));
            for k in 0..2 {
                let p = _mm512_maddubs_epi16(
                    two_bit_pair(bits, k as i16),
                    load512_i8(&y.qs[128 * h + 64 * k..]),
                );
                let sc = _mm512_permutexvar_epi16(lane_words(8 * h as i64 + 4 * k as i64), scales);
                sumi = _mm512_dpwssd_epi32(sumi, p, sc);
            }
        }
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    _mm512_reduce_add_ps(acc) - hsum(acc_min)
}

/// Q3_K as [`vec_dot_q2_k`], each element's high bit adding 4 by a `vptestmb` mask and a masked
/// byte add.
///
/// # Safety
/// As for [`vec_dot_q8_0`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q3_k(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    let four = _mm512_set1_epi8(4);
    // Chunk s of half h takes bit 4h + s of each hmask byte; register k of half h holds chunks
    // 2k and 2k + 1.
    let high_bit = |h: i32, k: i32| {
        let b = |s: i32| 1i8.wrapping_shl((4 * h + 2 * k + s) as u32);
        _mm512_mask_blend_epi8(
            0xffff_ffff_0000_0000,
            _mm512_set1_epi8(b(0)),
            _mm512_set1_epi8(b(1)),
        )
    };
    let high_bits = [
        [high_bit(0, 0), high_bit(0, 1)],
        [high_bit(1, 0), high_bit(1, 1)],
    ];
    let mut acc = _mm512_setzero_ps();
    for (x, y) in blocks::<BlockQ3K>(w).iter().zip(blocks::<BlockQ8K>(act)) {
        prefetch_ahead(x);
        let (d, scales, offsets) = q3k_head(x, y);
        let scales = _mm512_castsi256_si512(scales);
        let hmask = _mm512_broadcast_i64x4(load(&x.hmask));
        let mut sumi = _mm512_setzero_si512();
        for (h, high_bits) in high_bits.iter().enumerate() {
            let bits = _mm512_broadcast_i64x4(load(&x.qs[32 * h..]));
            for (k, &high_bit) in high_bits.iter().enumerate() {
                let low = two_bit_pair(bits, k as i16);
                let set = _mm512_test_epi8_mask(hmask, high_bit);
                let u = _mm512_mask_add_epi8(low, set, low, four);
                let p = _mm512_maddubs_epi16(u, load512_i8(&y.qs[128 * h + 64 * k..]));
                let sc = _mm512_permutexvar_epi16(lane_words(8 * h as i64 + 4 * k as i64), scales);
                sumi = _mm512_dpwssd_epi32(sumi, p, sc);
            }
        }
        let sumi = _mm512_sub_epi32(sumi, _mm512_zextsi256_si512(offsets));
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    _mm512_reduce_add_ps(acc)
}

/// The register-tiled GEMM's kernels, for [`crate::gemm::matmul`]. Only to be used where
/// [`available`] is true.
pub(crate) const GEMM: crate::gemm::Kernels = crate::gemm::Kernels {
    tile: gemm_tile,
    unpack: Some(gemm_unpack),
    pack: gemm_pack_activations,
};

/// The [`crate::gemm`] tile: adds `RM × RN` sums of `count` interleaved groups to `out`, 16
/// blocks per `vpdpbusd` (8 in the last group when `half`).
///
/// # Safety
/// The CPU must have AVX-512 F, BW, VL and VNNI; `w` holds `RM` rows and `act` `RN` tokens of
/// `count` groups each, `stride` groups apart.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn gemm_tile(
    shape: Shape,
    w: &[WGroup],
    act: &[ActGroup],
    stride: usize,
    count: usize,
    half: bool,
    out: &mut [f32; RM * RN],
) {
    match (shape.split, shape.min) {
        (false, false) => tile::<false, false>(w, act, stride, count, half, out),
        (false, true) => tile::<false, true>(w, act, stride, count, half, out),
        (true, false) => tile::<true, false>(w, act, stride, count, half, out),
        (true, true) => tile::<true, true>(w, act, stride, count, half, out),
    }
}

/// A 64-byte-aligned field as a vector.
#[inline]
#[target_feature(enable = "avx512f")]
fn vec_i<T>(v: &T) -> __m512i {
    const { assert!(std::mem::size_of::<T>() == 64) };
    // SAFETY: T is 64 bytes of plain integers or floats, and every field given here starts at a
    // multiple of 64 in a #[repr(C, align(64))] struct.
    unsafe { _mm512_load_si512((v as *const T).cast()) }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn vec_f(v: &[f32; 16]) -> __m512 {
    _mm512_castsi512_ps(vec_i(v))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn tile<const SPLIT: bool, const MIN: bool>(
    w: &[WGroup],
    act: &[ActGroup],
    stride: usize,
    count: usize,
    half: bool,
    out: &mut [f32; RM * RN],
) {
    let (w, act) = (
        &w[..(RM - 1) * stride + count],
        &act[..(RN - 1) * stride + count],
    );
    let mut acc = [[_mm512_setzero_ps(); RN]; RM];
    for g in 0..count {
        let wg: [&WGroup; RM] = std::array::from_fn(|i| &w[i * stride + g]);
        let ag: [&ActGroup; RN] = std::array::from_fn(|j| &act[j * stride + g]);
        // A group whose upper 8 lanes are padding (the last group of a row whose block count
        // leaves at most 8 over) is done on 256-bit halves: half the work for those rows.
        if half && g + 1 == count {
            group_part::<SPLIT, MIN, true>(&wg, &ag, &mut acc);
        } else {
            group_part::<SPLIT, MIN, false>(&wg, &ag, &mut acc);
        }
    }
    const { assert!(RM == 4) };
    for (j, out) in out.chunks_exact_mut(RM).enumerate() {
        let sums = hsum4([acc[0][j], acc[1][j], acc[2][j], acc[3][j]]);
        for (o, v) in out.iter_mut().zip(sums) {
            *o += v;
        }
    }
}

/// One group of a tile: the exact integer sums of its steps, started from the activations'
/// folded-in offset, scaled by weight scale × activation scale into the f32 accumulators; with
/// `HALF`, only the lower 8 lanes, in 256-bit registers.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn group_part<const SPLIT: bool, const MIN: bool, const HALF: bool>(
    wg: &[&WGroup; RM],
    ag: &[&ActGroup; RN],
    acc: &mut [[__m512; RN]; RM],
) {
    // (A macro, not a closure: the tile must stay one function for its accumulators to live in
    // registers.) `$w` names the width's operations: see `Wide` and `Narrow`.
    macro_rules! part {
        ($w:ident, $steps:expr, $bias:ident, $scale:ident) => {{
            let mut dot: [[<$w as Width>::I; RN]; RM] =
                std::array::from_fn(|_| std::array::from_fn(|j| $w::load_i(&ag[j].$bias)));
            for s in $steps {
                let u: [<$w as Width>::I; RM] = std::array::from_fn(|i| $w::load_i(&wg[i].u[s]));
                for j in 0..RN {
                    let q = $w::load_i(&ag[j].qs[s]);
                    for i in 0..RM {
                        dot[i][j] = $w::dpbusd(dot[i][j], u[i], q);
                    }
                }
            }
            for i in 0..RM {
                let sw = $w::load_f(&wg[i].$scale);
                for j in 0..RN {
                    let scale = $w::mul(sw, $w::load_f(&ag[j].d));
                    acc[i][j] = $w::fma_into(acc[i][j], $w::cvt(dot[i][j]), scale);
                }
            }
            if MIN {
                for i in 0..RM {
                    let min = $w::load_f(&wg[i].min);
                    for j in 0..RN {
                        // acc -= min · d Σq
                        let m = $w::mul(min, $w::load_f(&ag[j].dsum));
                        acc[i][j] = $w::fma_into(acc[i][j], m, $w::minus_one());
                    }
                }
            }
        }};
    }
    macro_rules! parts {
        ($w:ident) => {{
            if SPLIT {
                part!($w, 0..STEPS / 2, bias_lo, scale_lo);
                part!($w, STEPS / 2..STEPS, bias_hi, scale_hi);
            } else {
                part!($w, 0..STEPS, bias_lo, scale_lo);
            }
        }};
    }
    if HALF {
        parts!(Narrow);
    } else {
        parts!(Wide);
    }
}

/// The vector operations [`group_part`] uses, at one register width; the f32 results always
/// land in 512-bit accumulators.
trait Width {
    type I: Copy;
    type F: Copy;
}

/// All 16 lanes.
struct Wide;
/// The lower 8 lanes.
struct Narrow;

impl Width for Wide {
    type I = __m512i;
    type F = __m512;
}

impl Width for Narrow {
    type I = __m256i;
    type F = __m256;
}

impl Wide {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    fn load_i<T>(v: &T) -> __m512i {
        vec_i(v)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    fn load_f(v: &[f32; 16]) -> __m512 {
        vec_f(v)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    fn dpbusd(acc: __m512i, u: __m512i, q: __m512i) -> __m512i {
        _mm512_dpbusd_epi32(acc, u, q)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    fn cvt(v: __m512i) -> __m512 {
        _mm512_cvtepi32_ps(v)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    fn mul(a: __m512, b: __m512) -> __m512 {
        _mm512_mul_ps(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    fn minus_one() -> __m512 {
        _mm512_set1_ps(-1.0)
    }
    /// `acc + a · b`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    fn fma_into(acc: __m512, a: __m512, b: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, acc)
    }
}

impl Narrow {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    fn load_i<T>(v: &T) -> __m256i {
        _mm512_castsi512_si256(vec_i(v))
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    fn load_f(v: &[f32; 16]) -> __m256 {
        _mm512_castps512_ps256(vec_f(v))
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    fn dpbusd(acc: __m256i, u: __m256i, q: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(acc, u, q)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    fn cvt(v: __m256i) -> __m256 {
        _mm256_cvtepi32_ps(v)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    fn mul(a: __m256, b: __m256) -> __m256 {
        _mm256_mul_ps(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    fn minus_one() -> __m256 {
        _mm256_set1_ps(-1.0)
    }
    /// `acc + a · b` in the lower 8 lanes.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    fn fma_into(acc: __m512, a: __m256, b: __m256) -> __m512 {
        _mm512_add_ps(acc, _mm512_zextps256_ps512(_mm256_mul_ps(a, b)))
    }
}

/// The lane sums of four vectors, sharing the shuffles: with short rows (two groups for 896
/// columns) a tile's reductions are a large part of its work.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn hsum4(v: [__m512; 4]) -> [f32; 4] {
    // Within each 128-bit lane: pairs of a, b and of c, d, then one sum of each per 32-bit slot.
    let ab = _mm512_add_ps(
        _mm512_unpacklo_ps(v[0], v[1]),
        _mm512_unpackhi_ps(v[0], v[1]),
    );
    let cd = _mm512_add_ps(
        _mm512_unpacklo_ps(v[2], v[3]),
        _mm512_unpackhi_ps(v[2], v[3]),
    );
    let abcd = _mm512_add_ps(
        _mm512_shuffle_ps::<0x44>(ab, cd),
        _mm512_shuffle_ps::<0xee>(ab, cd),
    );
    // Then the four 128-bit lanes.
    let half = _mm256_add_ps(
        _mm512_castps512_ps256(abcd),
        _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(abcd))),
    );
    let quarter = _mm_add_ps(
        _mm256_castps256_ps128(half),
        _mm256_extractf128_ps::<1>(half),
    );
    // SAFETY: any 16 bytes are four valid f32s.
    unsafe { std::mem::transmute::<__m128, [f32; 4]>(quarter) }
}

/// [`avx2::gemm_unpack`] with AVX-512's [`interleave`].
///
/// # Safety
/// The CPU must have AVX-512 F, BW, VL and VNNI; `dst` holds the row's groups.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn gemm_unpack(ty: GgmlType, row: &[u8], dst: &mut [WGroup]) -> bool {
    avx2::unpack_row_with(ty, row, dst, |b| interleave(b))
}

/// 16 blocks of 32 bytes (one per lane) into a group's 8 steps: step `s` holds bytes
/// `4 s .. 4 s + 4` of every block, as one u32 per lane.
///
/// A 16 × 8 transposition of u32s, in registers: gathers from the blocks just stored would wait
/// for those stores to reach the cache, and did for most of the unpacking's time. Element
/// `(b, c)` is u32 `c` of block `b`; each stage below merges two registers into two.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn interleave(blocks: &[__m256i; 16]) -> [[u8; 64]; STEPS] {
    // Blocks 2k and 2k + 1, one after the other: u32 i is (2k + i / 8, i % 8).
    let pairs: [__m512i; 8] = std::array::from_fn(|k| {
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(blocks[2 * k]), blocks[2 * k + 1])
    });
    // Blocks 4p .. 4p + 4, u32s 4h .. 4h + 4 (128-bit lanes, one block each): i is
    // (4p + i / 4, 4h + i % 4).
    let quads: [[__m512i; 2]; 4] = std::array::from_fn(|p| {
        let (a, b) = (pairs[2 * p], pairs[2 * p + 1]);
        [
            _mm512_shuffle_i32x4::<0b10_00_10_00>(a, b),
            _mm512_shuffle_i32x4::<0b11_01_11_01>(a, b),
        ]
    });
    // Blocks 8q .. 8q + 8, u32s 4h + 2m and 4h + 2m + 1: i is (8q + i % 8, 4h + 2m + i / 8).
    let to_eights: [__m512i; 2] = std::array::from_fn(|m| {
        let idx: [i32; 16] = std::array::from_fn(|i| {
            let (row, col) = (i % 8, 2 * m + i / 8);
            if row < 4 {
                (row * 4 + col) as i32
            } else {
                (16 + (row - 4) * 4 + col) as i32
            }
        });
        // SAFETY: any 64 bytes are a valid __m512i.
        unsafe { std::mem::transmute::<[i32; 16], __m512i>(idx) }
    });
    let eights: [[__m512i; 4]; 2] = std::array::from_fn(|q| {
        std::array::from_fn(|hm| {
            let (h, m) = (hm / 2, hm % 2);
            _mm512_permutex2var_epi32(quads[2 * q][h], to_eights[m], quads[2 * q + 1][h])
        })
    });
    // All 16 blocks, u32 4h + 2m + t: i is (i, 4h + 2m + t).
    let to_steps: [__m512i; 2] = std::array::from_fn(|t| {
        let idx: [i32; 16] =
            std::array::from_fn(|l| (if l < 8 { t * 8 + l } else { 16 + t * 8 + l - 8 }) as i32);
        // SAFETY: any 64 bytes are a valid __m512i.
        unsafe { std::mem::transmute::<[i32; 16], __m512i>(idx) }
    });
    std::array::from_fn(|s| {
        let (hm, t) = (s / 2, s % 2);
        let step = _mm512_permutex2var_epi32(eights[0][hm], to_steps[t], eights[1][hm]);
        // SAFETY: any 64 bytes are a valid [u8; 64].
        unsafe { std::mem::transmute::<__m512i, [u8; 64]>(step) }
    })
}

/// [`crate::gemm::pack_activations`] in AVX-512, with the same bits: per block `d = amax / 127`
/// and quants `x / d` rounded half away from zero (ggml's `quantize_row_q8_0_ref`), the block
/// sums by vector reductions, 16 blocks' scales at a time.
///
/// # Safety
/// The CPU must have AVX-512 F, BW, VL and VNNI, and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn gemm_pack_activations(shape: Shape, x: &[f32], dst: &mut [ActGroup]) {
    let one = _mm512_set1_epi32(1);
    let offset = _mm512_set1_epi32(-shape.offset);
    for (xg, a) in x.chunks(32 * 16).zip(dst.iter_mut()) {
        let blocks = xg.len() / 32;
        let load = |b: usize| {
            let xb: &[f32; 32] = xg[32 * b..32 * b + 32].try_into().expect("a whole block");
            // SAFETY: xb holds 32 f32s.
            unsafe {
                (
                    _mm512_loadu_ps(xb.as_ptr()),
                    _mm512_loadu_ps(xb.as_ptr().add(16)),
                )
            }
        };
        let mut amax = [0.0f32; 16];
        for (b, m) in amax.iter_mut().enumerate().take(blocks) {
            let (v0, v1) = load(b);
            *m = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        }
        // SAFETY: any 64 bytes are valid f32s, and the other way round.
        let d = _mm512_div_ps(
            unsafe { std::mem::transmute::<[f32; 16], __m512>(amax) },
            _mm512_set1_ps(127.0),
        );
        let nonzero = _mm512_cmpneq_ps_mask(d, _mm512_setzero_ps());
        let id = _mm512_maskz_div_ps(nonzero, _mm512_set1_ps(1.0), d);
        // SAFETY: as above.
        let id = unsafe { std::mem::transmute::<__m512, [f32; 16]>(id) };
        let mut quants = [_mm256_setzero_si256(); 16];
        let (mut lo, mut hi) = ([0i32; 16], [0i32; 16]);
        for b in 0..blocks {
            let (v0, v1) = load(b);
            let scale = _mm512_set1_ps(id[b]);
            let (q0, q1) = (
                round_away(_mm512_mul_ps(v0, scale), one),
                round_away(_mm512_mul_ps(v1, scale), one),
            );
            quants[b] = _mm256_inserti128_si256::<1>(
                _mm256_castsi128_si256(_mm512_cvtsepi32_epi8(q0)),
                _mm512_cvtsepi32_epi8(q1),
            );
            (lo[b], hi[b]) = (_mm512_reduce_add_epi32(q0), _mm512_reduce_add_epi32(q1));
        }
        // SAFETY: any bytes are valid i8s.
        a.qs = unsafe {
            std::mem::transmute::<[[u8; 64]; STEPS], [[i8; 64]; STEPS]>(interleave(&quants))
        };
        // The scales as stored in f16 (as Q8_0 keeps them), back in f32.
        let d = _mm512_cvtph_ps(_mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(d));
        // SAFETY: any 64 bytes are valid i32s.
        let (lo, hi) = unsafe {
            (
                std::mem::transmute::<[i32; 16], __m512i>(lo),
                std::mem::transmute::<[i32; 16], __m512i>(hi),
            )
        };
        let sum = _mm512_add_epi32(lo, hi);
        let (bias_lo, bias_hi) = if shape.split {
            (
                _mm512_mullo_epi32(offset, lo),
                _mm512_mullo_epi32(offset, hi),
            )
        } else {
            (_mm512_mullo_epi32(offset, sum), _mm512_setzero_si512())
        };
        // SAFETY: any 64 bytes are valid [f32; 16] / [i32; 16].
        unsafe {
            a.d = std::mem::transmute::<__m512, [f32; 16]>(d);
            a.dsum =
                std::mem::transmute::<__m512, [f32; 16]>(_mm512_mul_ps(d, _mm512_cvtepi32_ps(sum)));
            a.bias_lo = std::mem::transmute::<__m512i, [i32; 16]>(bias_lo);
            a.bias_hi = std::mem::transmute::<__m512i, [i32; 16]>(bias_hi);
        }
    }
}

/// C's roundf (halfway cases away from zero) of quants, as the scalar `round_away`: truncate,
/// then step away from zero where the dropped fraction is at least one half.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn round_away(x: __m512, one: __m512i) -> __m512i {
    let t = _mm512_cvttps_epi32(x);
    let frac = _mm512_sub_ps(x, _mm512_cvtepi32_ps(t));
    let up = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(frac, _mm512_set1_ps(0.5));
    let down = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(frac, _mm512_set1_ps(-0.5));
    _mm512_mask_sub_epi32(_mm512_mask_add_epi32(t, up, t, one), down, t, one)
}

/// [`crate::rows`]'s query block: `out[r][l] = Σ_i q[r · dim + i] · keys[i · stride + p0 + l]` for
/// 8 rows and 16 keys, each sum fused-multiply-added in order of `i` as the generic block does
/// (so the same bits). In registers throughout: the compiled generic block kept eight row
/// pointers and their bounds checks, spilling its sums every step.
///
/// # Panics
/// If `q` holds fewer than 8 rows of `dim` or `keys` lacks the 16 columns from `p0` in a row.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) fn columns_8x16(
    q: &[f32],
    dim: usize,
    keys: &[f32],
    stride: usize,
    p0: usize,
) -> [[f32; 16]; 8] {
    avx2::check_columns_block(q, dim, keys, stride, p0);
    let mut acc = [_mm512_setzero_ps(); 8];
    for i in 0..dim {
        // SAFETY: i < dim, so i · stride + p0 + 16 is within `keys` (checked above).
        let k = unsafe { _mm512_loadu_ps(keys.as_ptr().add(i * stride + p0)) };
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: r · dim + i < 8 · dim ≤ q.len() (checked above).
            let qi = unsafe { *q.get_unchecked(r * dim + i) };
            *acc = _mm512_fmadd_ps(_mm512_set1_ps(qi), k, *acc);
        }
    }
    // SAFETY: eight vectors of 16 f32s are 8 × 16 f32s.
    unsafe { std::mem::transmute::<[__m512; 8], [[f32; 16]; 8]>(acc) }
}

/// [`crate::rows`]'s weighted block: `out[r][e] = Σ_p w[r · n + p] · values[p · stride + c0 + e]`
/// for 4 rows and 32 elements, in order of `p` as the generic block (the same bits), in registers.
///
/// # Panics
/// If `w` holds fewer than 4 rows of `n` or `values` lacks the 32 elements from `c0` in a row.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) fn weighted_4x32(
    w: &[f32],
    n: usize,
    values: &[f32],
    stride: usize,
    c0: usize,
) -> [[f32; 32]; 4] {
    avx2::check_weighted_block(w, n, values, stride, c0);
    let mut acc = [[_mm512_setzero_ps(); 2]; 4];
    for p in 0..n {
        // SAFETY: p < n, so p · stride + c0 + 32 is within `values` (checked above).
        let v = unsafe {
            let at = values.as_ptr().add(p * stride + c0);
            [_mm512_loadu_ps(at), _mm512_loadu_ps(at.add(16))]
        };
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: r · n + p < 4 · n ≤ w.len() (checked above).
            let wp = _mm512_set1_ps(unsafe { *w.get_unchecked(r * n + p) });
            acc[0] = _mm512_fmadd_ps(wp, v[0], acc[0]);
            acc[1] = _mm512_fmadd_ps(wp, v[1], acc[1]);
        }
    }
    // SAFETY: four pairs of vectors of 16 f32s are 4 × 32 f32s.
    unsafe { std::mem::transmute::<[[__m512; 2]; 4], [[f32; 32]; 4]>(acc) }
}
