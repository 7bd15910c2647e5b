//! NEON dot products, each in two builds: plain NEON, where a signed byte product is `smull`
//! (8×8→16 bits, exact even for -128·-128) and `sadalp` (pairs added into i32 lanes), and with
//! `sdot`, which adds each four byte products straight into an i32 lane.
//!
//! The weights are unpacked to signed bytes (offset subtracted), so no product needs a sign trick;
//! scales are applied per group with `mla` on i32 lanes, then once per block in f32.
//!
//! Rust's `vdotq_s32` is not stable yet, hence the one line of inline assembly for `sdot`; and
//! `fcvtl` (f16 to f32, base ARMv8) is written the same way because the f16 vector types are not
//! stable either.

use crate::formats::{
    bf16_le, blocks, f16_le, k4_scales_mins, q3k_scales, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0,
    BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1, Q8_0Act,
};
use crate::vec_dot_fn::VecDotFn;
use ggml_types::GgmlType;
use std::arch::aarch64::*;
use std::arch::asm;

/// Whether the CPU has the dot-product extension.
pub(crate) fn dotprod_available() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}

/// The best NEON kernel for weights of type `ty` on this CPU: the `sdot` build where the CPU has
/// the dot-product extension, else the plain one.
pub(crate) fn kernel(ty: GgmlType) -> Option<VecDotFn> {
    if dotprod_available() {
        kernel_dotprod(ty)
    } else {
        kernel_plain(ty)
    }
}

/// Expands to the plain and the `sdot` table and one wrapper function per kernel and build, from
/// a list of `type => generic body`.
macro_rules! tables {
    ($($ty:ident => $body:ident),* $(,)?) => {
        /// The bodies instantiated with `smull`/`sadalp` products.
        mod plain {
            use super::*;
            $(
                /// # Safety
                /// `w` and `act` must be whole rows of `n` elements.
                pub(super) unsafe fn $body(n: usize, w: &[u8], act: &[u8]) -> f32 {
                    super::$body::<Mull>(n, w, act)
                }
            )*
        }

        /// The bodies instantiated with `sdot`, compiled for the dot-product extension.
        mod dotprod {
            use super::*;
            $(
                /// # Safety
                /// The CPU must have the dot-product extension; `w` and `act` must be whole rows
                /// of `n` elements.
                #[target_feature(enable = "dotprod")]
                pub(super) unsafe fn $body(n: usize, w: &[u8], act: &[u8]) -> f32 {
                    super::$body::<Sdot>(n, w, act)
                }
            )*
        }

        /// The plain NEON kernel for weights of type `ty` (any AArch64 CPU).
        pub(crate) fn kernel_plain(ty: GgmlType) -> Option<VecDotFn> {
            Some(match ty {
                $(GgmlType::$ty => plain::$body,)*
                _ => return float_kernel(ty),
            })
        }

        /// The kernel with `sdot` for weights of type `ty` (the float types, which do not use
        /// it, get their one kernel). Only to be called when [`dotprod_available`] is true.
        pub(crate) fn kernel_dotprod(ty: GgmlType) -> Option<VecDotFn> {
            Some(match ty {
                $(GgmlType::$ty => dotprod::$body,)*
                _ => return float_kernel(ty),
            })
        }
    };
}

tables! {
    Q4_0 => q4_0,
    Q4_1 => q4_1,
    Q5_0 => q5_0,
    Q5_1 => q5_1,
    Q8_0 => q8_0,
    Q2_K => q2_k,
    Q3_K => q3_k,
    Q4_K => q4_k,
    Q5_K => q5_k,
    Q6_K => q6_k,
}

/// The float kernels, which have one build.
fn float_kernel(ty: GgmlType) -> Option<VecDotFn> {
    Some(match ty {
        GgmlType::F32 => vec_dot_f32,
        GgmlType::F16 => vec_dot_f16,
        GgmlType::BF16 => vec_dot_bf16,
        _ => return None,
    })
}

// ---- byte products ----------------------------------------------------------------------------

/// Signed byte dot products into i32 lanes: `acc` plus Σ a·b over the 16 bytes, spread over the
/// four lanes in a way each implementation chooses (callers only ever sum the lanes, possibly
/// after scaling them all by one factor).
trait Dot {
    /// Adds the 16 byte products into the four lanes, in some grouping (the per-row kernels sum
    /// all lanes alike).
    ///
    /// # Safety
    /// The CPU must have what the implementation uses.
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t;

    /// Adds the products of bytes `4l..4l + 4` into lane `l` (the GEMM tile's lanes are
    /// different blocks).
    ///
    /// # Safety
    /// As [`Dot::dot`].
    unsafe fn dot4(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t;
}

/// `smull` + `sadalp`: products are exact in i16 (|a·b| ≤ 2^14), pairs are added in i32.
struct Mull;

impl Dot for Mull {
    #[inline(always)]
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        let hi = vmull_high_s8(a, b);
        vpadalq_s16(vpadalq_s16(acc, lo), hi)
    }

    #[inline(always)]
    unsafe fn dot4(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // Pairs of products (bytes 2k, 2k+1) in i32, then pairs of those side by side.
        let lo = vpaddlq_s16(vmull_s8(vget_low_s8(a), vget_low_s8(b)));
        let hi = vpaddlq_s16(vmull_high_s8(a, b));
        vaddq_s32(acc, vpaddq_s32(lo, hi))
    }
}

/// The dot-product extension's `sdot`.
struct Sdot;

impl Dot for Sdot {
    #[inline(always)]
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        sdot(acc, a, b)
    }

    #[inline(always)]
    unsafe fn dot4(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        sdot(acc, a, b)
    }
}

/// `acc[i] += Σ_{k<4} a[4i+k]·b[4i+k]`. Its own function so that the assembler always sees the
/// extension enabled; inlined into the `dotprod` wrappers, which enable it too.
#[inline]
#[target_feature(enable = "dotprod")]
unsafe fn sdot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    asm!(
        "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
        acc = inout(vreg) acc,
        a = in(vreg) a,
        b = in(vreg) b,
        options(pure, nomem, nostack, preserves_flags),
    );
    acc
}

// ---- loads ------------------------------------------------------------------------------------

// The loads copy the bytes out of a reference and reinterpret them: the same unaligned load once
// compiled, without `vld1q`'s pointer, whose debug-build precondition checks would sit in every
// inner loop of the (optimized, debug-asserting) test profile.

/// 16 bytes from the start of `s`.
#[inline(always)]
fn ld_u8(s: &[u8]) -> uint8x16_t {
    let a: [u8; 16] = s[..16].try_into().expect("a 16-byte range");
    // SAFETY: any 16 bytes are a valid uint8x16_t.
    unsafe { std::mem::transmute::<[u8; 16], uint8x16_t>(a) }
}

/// 16 signed bytes from the start of `s`.
#[inline(always)]
fn ld_s8(s: &[i8]) -> int8x16_t {
    let a: [i8; 16] = s[..16].try_into().expect("a 16-byte range");
    // SAFETY: any 16 bytes are a valid int8x16_t.
    unsafe { std::mem::transmute::<[i8; 16], int8x16_t>(a) }
}

/// Eight little-endian i16 from the start of `s`.
#[inline(always)]
fn ld_s16(s: &[u8]) -> int16x8_t {
    let a: [u8; 16] = s[..16].try_into().expect("a 16-byte range");
    // SAFETY: any 16 bytes are a valid int16x8_t (AArch64 Linux is little-endian).
    unsafe { std::mem::transmute::<[u8; 16], int16x8_t>(a) }
}

#[inline(always)]
unsafe fn signed(v: uint8x16_t) -> int8x16_t {
    vreinterpretq_s8_u8(v)
}

/// `v >> (2 * s)` per byte, for the 2-bit fields of Q2_K/Q3_K (`s` < 4, a constant after
/// unrolling).
#[inline(always)]
unsafe fn shr_pair(v: uint8x16_t, s: usize) -> uint8x16_t {
    match s {
        0 => v,
        1 => vshrq_n_u8::<2>(v),
        2 => vshrq_n_u8::<4>(v),
        _ => vshrq_n_u8::<6>(v),
    }
}

// ---- 32-element blocks ------------------------------------------------------------------------

/// Σ over blocks of `scale * Σ lanes` plus the optional per-block `extra`, with two accumulators
/// so that consecutive blocks' FMAs do not wait on each other.
#[inline(always)]
unsafe fn sum_blocks<X, Y>(
    x: &[X],
    y: &[Y],
    block: impl Fn(&X, &Y) -> (f32, int32x4_t, Option<f32>),
) -> f32 {
    let mut acc = [vdupq_n_f32(0.0); 2];
    let mut extra = 0.0f32;
    let mut add = |(d, sumi, e): (f32, int32x4_t, Option<f32>), acc: &mut float32x4_t| {
        *acc = vfmaq_n_f32(*acc, vcvtq_f32_s32(sumi), d);
        if let Some(e) = e {
            extra += e;
        }
    };
    let (xs, ys) = (x.chunks_exact(2), y.chunks_exact(2));
    let tail = xs.remainder().iter().zip(ys.remainder());
    for (x, y) in xs.zip(ys) {
        add(block(&x[0], &y[0]), &mut acc[0]);
        add(block(&x[1], &y[1]), &mut acc[1]);
    }
    for (x, y) in tail {
        add(block(x, y), &mut acc[0]);
    }
    vaddvq_f32(vaddq_f32(acc[0], acc[1])) + extra
}

/// The 32 four-bit values of a block as two vectors: the low nibbles (elements 0..16) and the
/// high ones (16..32).
#[inline(always)]
unsafe fn nibbles(qs: &[u8; 16]) -> (uint8x16_t, uint8x16_t) {
    let v = ld_u8(qs);
    (vandq_u8(v, vdupq_n_u8(0x0f)), vshrq_n_u8::<4>(v))
}

/// 16 where bit j of `qh` is set, for elements 0..16 and 16..32.
#[inline(always)]
unsafe fn fifth_bits(qh: [u8; 4]) -> (uint8x16_t, uint8x16_t) {
    let bytes = vreinterpretq_u8_u32(vdupq_n_u32(u32::from_le_bytes(qh)));
    // Byte j of the first half gets qh byte j / 8, of the second qh byte 2 + j / 8; each is then
    // tested for bit j % 8.
    const FIRST: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
    const SECOND: [u8; 16] = [2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3];
    const BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    let bit = ld_u8(&BIT);
    let sixteen = vdupq_n_u8(16);
    (
        vandq_u8(vtstq_u8(vqtbl1q_u8(bytes, ld_u8(&FIRST)), bit), sixteen),
        vandq_u8(vtstq_u8(vqtbl1q_u8(bytes, ld_u8(&SECOND)), bit), sixteen),
    )
}

/// Σ q·y over a block's 32 elements, `q` as (elements 0..16, elements 16..32).
#[inline(always)]
unsafe fn block_dot<D: Dot>(q: (int8x16_t, int8x16_t), y: &[i8; 32]) -> int32x4_t {
    let s = D::dot(vdupq_n_s32(0), q.0, ld_s8(y));
    D::dot(s, q.1, ld_s8(&y[16..]))
}

#[inline(always)]
unsafe fn q8_0<D: Dot>(n: usize, w: &[u8], act: &[u8]) -> f32 {
    sum_blocks(
        blocks::<BlockQ8_0>(w),
        Q8_0Act::new(n, act).blocks,
        |x, y| {
            let q = (ld_s8(&x.qs), ld_s8(&x.qs[16..]));
            (f16_le(x.d) * f16_le(y.d), block_dot::<D>(q, &y.qs), None)
        },
    )
}

#[inline(always)]
unsafe fn q4_0<D: Dot>(n: usize, w: &[u8], act: &[u8]) -> f32 {
    let eight = vdupq_n_s8(8);
    sum_blocks(
        blocks::<BlockQ4_0>(w),
        Q8_0Act::new(n, act).blocks,
        |x, y| {
            let (lo, hi) = nibbles(&x.qs);
            let q = (vsubq_s8(signed(lo), eight), vsubq_s8(signed(hi), eight));
            (f16_le(x.d) * f16_le(y.d), block_dot::<D>(q, &y.qs), None)
        },
    )
}

#[inline(always)]
unsafe fn q5_0<D: Dot>(n: usize, w: &[u8], act: &[u8]) -> f32 {
    let sixteen = vdupq_n_s8(16);
    sum_blocks(
        blocks::<BlockQ5_0>(w),
        Q8_0Act::new(n, act).blocks,
        |x, y| {
            let (lo, hi) = nibbles(&x.qs);
            let (hlo, hhi) = fifth_bits(x.qh);
            let q = (
                vsubq_s8(signed(vorrq_u8(lo, hlo)), sixteen),
                vsubq_s8(signed(vorrq_u8(hi, hhi)), sixteen),
            );
            (f16_le(x.d) * f16_le(y.d), block_dot::<D>(q, &y.qs), None)
        },
    )
}

#[inline(always)]
unsafe fn q4_1<D: Dot>(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    sum_blocks(blocks::<BlockQ4_1>(w), blocks::<BlockQ8_1>(act), |x, y| {
        let (lo, hi) = nibbles(&x.qs);
        let sumi = block_dot::<D>((signed(lo), signed(hi)), &y.qs);
        let min = f16_le(x.m) * f16_le(y.s);
        (f16_le(x.d) * f16_le(y.d), sumi, Some(min))
    })
}

#[inline(always)]
unsafe fn q5_1<D: Dot>(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    sum_blocks(blocks::<BlockQ5_1>(w), blocks::<BlockQ8_1>(act), |x, y| {
        let (lo, hi) = nibbles(&x.qs);
        let (hlo, hhi) = fifth_bits(x.qh);
        let q = (signed(vorrq_u8(lo, hlo)), signed(vorrq_u8(hi, hhi)));
        let min = f16_le(x.m) * f16_le(y.s);
        (
            f16_le(x.d) * f16_le(y.d),
            block_dot::<D>(q, &y.qs),
            Some(min),
        )
    })
}

// ---- k-quants -----------------------------------------------------------------------------------

/// Σ mins[g] · bsums[g] over the 16 groups of 16, `mins` as unsigned bytes.
#[inline(always)]
unsafe fn min_sum16(mins: uint8x16_t, bsums: &[u8; 32]) -> i32 {
    let m_lo = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(mins)));
    let m_hi = vreinterpretq_s16_u16(vmovl_high_u8(mins));
    let (b_lo, b_hi) = (ld_s16(bsums), ld_s16(&bsums[16..]));
    let p = vmull_s16(vget_low_s16(m_lo), vget_low_s16(b_lo));
    let p = vmlal_high_s16(p, m_lo, b_lo);
    let p = vmlal_s16(p, vget_low_s16(m_hi), vget_low_s16(b_hi));
    vaddvq_s32(vmlal_high_s16(p, m_hi, b_hi))
}

#[inline(always)]
unsafe fn q2_k<D: Dot>(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    let m3 = vdupq_n_u8(3);
    let mut sumf = 0.0f32;
    for (x, y) in blocks::<BlockQ2K>(w).iter().zip(blocks::<BlockQ8K>(act)) {
        let d = f16_le(x.d) * y.scale();
        let dmin = f16_le(x.dmin) * y.scale();
        let msum = min_sum16(vshrq_n_u8::<4>(ld_u8(&x.scales)), &y.bsums);
        let mut isum = vdupq_n_s32(0);
        // Element 128h + 32s + l: bits 2s of qs[32h + l]; group 8h + 2s (l < 16) or 8h + 2s + 1.
        for h in 0..2 {
            let qa = ld_u8(&x.qs[32 * h..]);
            let qb = ld_u8(&x.qs[32 * h + 16..]);
            for s in 0..4 {
                let g = 8 * h + 2 * s;
                let q8 = &y.qs[128 * h + 32 * s..];
                let a = signed(vandq_u8(shr_pair(qa, s), m3));
                let b = signed(vandq_u8(shr_pair(qb, s), m3));
                let da = D::dot(vdupq_n_s32(0), a, ld_s8(q8));
                let db = D::dot(vdupq_n_s32(0), b, ld_s8(&q8[16..]));
                isum = vmlaq_n_s32(isum, da, (x.scales[g] & 0xf) as i32);
                isum = vmlaq_n_s32(isum, db, (x.scales[g + 1] & 0xf) as i32);
            }
        }
        sumf += d * vaddvq_s32(isum) as f32 - dmin * msum as f32;
    }
    sumf
}

#[inline(always)]
unsafe fn q3_k<D: Dot>(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    let m3 = vdupq_n_u8(3);
    let four = vdupq_n_u8(4);
    let mut sumf = 0.0f32;
    for (x, y) in blocks::<BlockQ3K>(w).iter().zip(blocks::<BlockQ8K>(act)) {
        let d = f16_le(x.d) * y.scale();
        let scales = q3k_scales(&x.scales);
        let hm = [ld_u8(&x.hmask), ld_u8(&x.hmask[16..])];
        let mut isum = vdupq_n_s32(0);
        // As Q2_K, minus 4 where bit 4h + s of hmask[l] is clear.
        for h in 0..2 {
            let q = [ld_u8(&x.qs[32 * h..]), ld_u8(&x.qs[32 * h + 16..])];
            for s in 0..4 {
                let bit = vdupq_n_u8(1 << (4 * h + s));
                for part in 0..2 {
                    let low = vandq_u8(shr_pair(q[part], s), m3);
                    let high = vandq_u8(vtstq_u8(hm[part], bit), four);
                    let v = vsubq_s8(signed(vorrq_u8(low, high)), signed(four));
                    let q8 = ld_s8(&y.qs[128 * h + 32 * s + 16 * part..]);
                    let scale = scales[8 * h + 2 * s + part] as i32;
                    isum = vmlaq_n_s32(isum, D::dot(vdupq_n_s32(0), v, q8), scale);
                }
            }
        }
        sumf += d * vaddvq_s32(isum) as f32;
    }
    sumf
}

/// The Q4_K/Q5_K dot product: chunk j of 32 bytes holds elements 64j.. (low nibbles, scale 2j)
/// and 64j+32.. (high nibbles, scale 2j+1); Q5_K adds bit 2j resp. 2j+1 of qh[l] as 16.
#[inline(always)]
unsafe fn k4_block<D: Dot>(
    d: [u8; 2],
    dmin: [u8; 2],
    packed: &[u8; 12],
    qs: &[u8; 128],
    qh: Option<&[u8; 32]>,
    y: &BlockQ8K,
) -> f32 {
    let m4 = vdupq_n_u8(0x0f);
    let (scales, mins) = k4_scales_mins(packed);
    // Σ mins[j] · (bsums[2j] + bsums[2j+1]).
    let pairs = vpaddq_s16(ld_s16(&y.bsums), ld_s16(&y.bsums[16..]));
    // SAFETY: any 8 bytes are a valid uint8x8_t.
    let m = unsafe { std::mem::transmute::<[u8; 8], uint8x8_t>(mins) };
    let m = vreinterpretq_s16_u16(vmovl_u8(m));
    let p = vmlal_high_s16(vmull_s16(vget_low_s16(m), vget_low_s16(pairs)), m, pairs);
    let msum = vaddvq_s32(p);
    let mut hbits = qh.map(|qh| [ld_u8(qh), ld_u8(&qh[16..])]);
    let mut isum = vdupq_n_s32(0);
    for j in 0..4 {
        let v = [ld_u8(&qs[32 * j..]), ld_u8(&qs[32 * j + 16..])];
        let mut lo = v.map(|v| vandq_u8(v, m4));
        let mut hi = v.map(|v| vshrq_n_u8::<4>(v));
        if let Some(hb) = hbits {
            for k in 0..2 {
                // Bits 2j and 2j+1 of each qh byte have been shifted down to bits 0 and 1.
                lo[k] = vorrq_u8(lo[k], vshlq_n_u8::<4>(vandq_u8(hb[k], vdupq_n_u8(1))));
                hi[k] = vorrq_u8(hi[k], vshlq_n_u8::<3>(vandq_u8(hb[k], vdupq_n_u8(2))));
            }
            hbits = Some(hb.map(|h| vshrq_n_u8::<2>(h)));
        }
        let q8 = &y.qs[64 * j..];
        let dlo = D::dot(vdupq_n_s32(0), signed(lo[0]), ld_s8(q8));
        let dlo = D::dot(dlo, signed(lo[1]), ld_s8(&q8[16..]));
        let dhi = D::dot(vdupq_n_s32(0), signed(hi[0]), ld_s8(&q8[32..]));
        let dhi = D::dot(dhi, signed(hi[1]), ld_s8(&q8[48..]));
        isum = vmlaq_n_s32(isum, dlo, scales[2 * j] as i32);
        isum = vmlaq_n_s32(isum, dhi, scales[2 * j + 1] as i32);
    }
    let ys = y.scale();
    (f16_le(d) * ys) * vaddvq_s32(isum) as f32 - (f16_le(dmin) * ys) * msum as f32
}

#[inline(always)]
unsafe fn q4_k<D: Dot>(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in blocks::<BlockQ4K>(w).iter().zip(blocks::<BlockQ8K>(act)) {
        sumf += k4_block::<D>(x.d, x.dmin, &x.scales, &x.qs, None, y);
    }
    sumf
}

#[inline(always)]
unsafe fn q5_k<D: Dot>(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    let mut sumf = 0.0f32;
    for (x, y) in blocks::<BlockQ5K>(w).iter().zip(blocks::<BlockQ8K>(act)) {
        sumf += k4_block::<D>(x.d, x.dmin, &x.scales, &x.qs, Some(&x.qh), y);
    }
    sumf
}

#[inline(always)]
unsafe fn q6_k<D: Dot>(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    let m4 = vdupq_n_u8(0x0f);
    let m3 = vdupq_n_u8(3);
    let m32 = vdupq_n_s8(32);
    let mut sumf = 0.0f32;
    for (x, y) in blocks::<BlockQ6K>(w).iter().zip(blocks::<BlockQ8K>(act)) {
        let d = f16_le(x.d) * y.scale();
        let mut isum = vdupq_n_s32(0);
        for h in 0..2 {
            let ql = &x.ql[64 * h..];
            let qh = [ld_u8(&x.qh[32 * h..]), ld_u8(&x.qh[32 * h + 16..])];
            for part in 0..2 {
                let l0 = ld_u8(&ql[16 * part..]);
                let l1 = ld_u8(&ql[32 + 16 * part..]);
                let hb = qh[part];
                // Element 128h + 32s + 16·part + l, s = 0..4.
                let q = [
                    vorrq_u8(vandq_u8(l0, m4), vshlq_n_u8::<4>(vandq_u8(hb, m3))),
                    vorrq_u8(
                        vandq_u8(l1, m4),
                        vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<2>(hb), m3)),
                    ),
                    vorrq_u8(
                        vshrq_n_u8::<4>(l0),
                        vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<4>(hb), m3)),
                    ),
                    vorrq_u8(vshrq_n_u8::<4>(l1), vshlq_n_u8::<4>(vshrq_n_u8::<6>(hb))),
                ];
                for (s, q) in q.into_iter().enumerate() {
                    let v = vsubq_s8(signed(q), m32);
                    let q8 = ld_s8(&y.qs[128 * h + 32 * s + 16 * part..]);
                    let scale = x.scales[8 * h + 2 * s + part] as i32;
                    isum = vmlaq_n_s32(isum, D::dot(vdupq_n_s32(0), v, q8), scale);
                }
            }
        }
        sumf += d * vaddvq_s32(isum) as f32;
    }
    sumf
}

// ---- floats -------------------------------------------------------------------------------------

/// f16 → f32 of the low four halves (`fcvtl`, exact).
#[inline(always)]
unsafe fn f16_low(h: uint16x8_t) -> float32x4_t {
    let r: float32x4_t;
    asm!(
        "fcvtl {r:v}.4s, {h:v}.4h",
        r = out(vreg) r,
        h = in(vreg) h,
        options(pure, nomem, nostack, preserves_flags),
    );
    r
}

/// f16 → f32 of the high four halves (`fcvtl2`, exact).
#[inline(always)]
unsafe fn f16_high(h: uint16x8_t) -> float32x4_t {
    let r: float32x4_t;
    asm!(
        "fcvtl2 {r:v}.4s, {h:v}.8h",
        r = out(vreg) r,
        h = in(vreg) h,
        options(pure, nomem, nostack, preserves_flags),
    );
    r
}

/// Σ x·y over float rows: four accumulators of four lanes over 16-byte steps of eight (16-bit
/// types) or four (f32) elements each, then the last few elements one by one. `load` turns 16
/// bytes into two vectors of four (the second unused for f32).
#[inline(always)]
unsafe fn float_dot(
    w: &[u8],
    act: &[u8],
    width: usize,
    load: impl Fn(&[u8]) -> [float32x4_t; 2],
    one: impl Fn(&[u8]) -> f32,
) -> f32 {
    let per16 = 16 / width;
    let mut acc = [vdupq_n_f32(0.0); 4];
    let (wc, ac) = (w.chunks_exact(32), act.chunks_exact(32));
    let (wr, ar) = (wc.remainder(), ac.remainder());
    for (x, y) in wc.zip(ac) {
        let (a0, b0) = (load(x), load(y));
        let (a1, b1) = (load(&x[16..]), load(&y[16..]));
        if per16 == 8 {
            acc[0] = vfmaq_f32(acc[0], a0[0], b0[0]);
            acc[1] = vfmaq_f32(acc[1], a0[1], b0[1]);
            acc[2] = vfmaq_f32(acc[2], a1[0], b1[0]);
            acc[3] = vfmaq_f32(acc[3], a1[1], b1[1]);
        } else {
            acc[0] = vfmaq_f32(acc[0], a0[0], b0[0]);
            acc[1] = vfmaq_f32(acc[1], a1[0], b1[0]);
        }
    }
    let sum = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
    let tail: f32 = wr
        .chunks_exact(width)
        .zip(ar.chunks_exact(width))
        .map(|(x, y)| one(x) * one(y))
        .sum();
    vaddvq_f32(sum) + tail
}

/// # Safety
/// `w` and `act` must be whole rows of `n` elements.
unsafe fn vec_dot_f32(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    float_dot(
        w,
        act,
        4,
        |b| {
            let v = vreinterpretq_f32_u8(ld_u8(b));
            [v, v]
        },
        |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
    )
}

/// # Safety
/// As for [`vec_dot_f32`].
unsafe fn vec_dot_f16(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    float_dot(
        w,
        act,
        2,
        |b| {
            let h = vreinterpretq_u16_u8(ld_u8(b));
            [f16_low(h), f16_high(h)]
        },
        |b| f16_le([b[0], b[1]]),
    )
}

/// # Safety
/// As for [`vec_dot_f32`].
unsafe fn vec_dot_bf16(_n: usize, w: &[u8], act: &[u8]) -> f32 {
    float_dot(
        w,
        act,
        2,
        |b| {
            // A bfloat16 is the high half of an f32.
            let h = vreinterpretq_u16_u8(ld_u8(b));
            [
                vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h))),
                vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h)),
            ]
        },
        |b| bf16_le([b[0], b[1]]),
    )
}

// ---- the register-tiled GEMM ----------------------------------------------------------------

use crate::gemm::{self, ActGroup, Shape, TileArgs, WGroup, RM, RN, STEPS};

/// The register-tiled GEMM's kernels for this CPU, for [`crate::gemm::matmul`]: the tile with
/// `sdot` where the CPU has the dot-product extension, else with `smull`/`sadalp`; weights are
/// unpacked and activations packed by the plain loops.
pub(crate) fn gemm_kernels() -> gemm::Kernels {
    gemm::Kernels {
        tile: if dotprod_available() {
            gemm_tile_dotprod
        } else {
            gemm_tile_plain
        },
        unpack: None,
        pack: gemm::pack_activations,
    }
}

/// The [`crate::gemm`] tile with `smull`/`sadalp` products.
///
/// # Safety
/// As [`crate::gemm::TileFn`] (any AArch64 CPU has NEON).
pub(crate) unsafe fn gemm_tile_plain(
    shape: Shape,
    w: &[WGroup],
    act: &[ActGroup],
    stride: usize,
    count: usize,
    half: bool,
    out: &mut [f32; RM * RN],
) {
    // SAFETY: NEON is part of AArch64.
    unsafe { gemm_tile::<Mull>(shape, (w, act, stride, count, half, out)) }
}

/// The [`crate::gemm`] tile with `sdot`.
///
/// # Safety
/// As [`crate::gemm::TileFn`]; the CPU must have the dot-product extension.
#[target_feature(enable = "dotprod")]
pub(crate) unsafe fn gemm_tile_dotprod(
    shape: Shape,
    w: &[WGroup],
    act: &[ActGroup],
    stride: usize,
    count: usize,
    half: bool,
    out: &mut [f32; RM * RN],
) {
    // SAFETY: the caller checked the extension.
    unsafe { gemm_tile::<Sdot>(shape, (w, act, stride, count, half, out)) }
}

/// Signed byte products need no saturation care: `u < 64` for every type but Q8_0 is a valid
/// signed byte as it is, and Q8_0's `u = w + 128` is flipped back to `w` (its offset then not
/// applied).
#[inline(always)]
unsafe fn gemm_tile<D: Dot>(shape: Shape, t: TileArgs) {
    // SAFETY (all four): forwarded from the caller.
    unsafe {
        match (shape.bits == 8, shape.split, shape.min) {
            (true, false, false) => tile::<D, true, false, false>(t),
            (false, false, false) => tile::<D, false, false, false>(t),
            (false, false, true) => tile::<D, false, false, true>(t),
            (false, true, false) => tile::<D, false, true, false>(t),
            other => unreachable!("neon gemm tile: no variant for {other:?}"),
        }
    }
}

/// The tile in quarters of a group (4 lanes, 16 bytes per step): the `RM × RN` integer sums of a
/// quarter (12 registers), the rows' bytes (4) and a token's (1), and the f32 accumulators (12)
/// fit the 32 vector registers.
#[inline(always)]
unsafe fn tile<D: Dot, const SIGNED: bool, const SPLIT: bool, const MIN: bool>(
    (w, act, stride, count, half, out): TileArgs,
) {
    let (w, act) = (
        &w[..(RM - 1) * stride + count],
        &act[..(RN - 1) * stride + count],
    );
    // SAFETY: NEON is part of AArch64; D's instructions the caller checked.
    unsafe {
        let flip = vdupq_n_u8(0x80);
        let mut acc = [[vdupq_n_f32(0.0); RN]; RM];
        for g in 0..count {
            let wg: [&WGroup; RM] = std::array::from_fn(|i| &w[i * stride + g]);
            let ag: [&ActGroup; RN] = std::array::from_fn(|j| &act[j * stride + g]);
            // The last group of a row whose block count leaves at most 8 over: lanes 8..16 are
            // padding.
            let quarters = if half && g + 1 == count { 2 } else { 4 };
            for qt in 0..quarters {
                let lanes = 4 * qt..4 * qt + 4;
                let f32s = |v: &[f32; 16]| vld1q_f32(v[lanes.clone()].as_ptr());
                let i32s = |v: &[i32; 16]| vld1q_s32(v[lanes.clone()].as_ptr());
                macro_rules! part {
                    ($steps:expr, $bias:ident, $scale:ident) => {{
                        let mut dot: [[int32x4_t; RN]; RM] = std::array::from_fn(|_| {
                            std::array::from_fn(|j| {
                                if SIGNED {
                                    vdupq_n_s32(0)
                                } else {
                                    i32s(&ag[j].$bias)
                                }
                            })
                        });
                        for s in $steps {
                            let u: [int8x16_t; RM] = std::array::from_fn(|i| {
                                let u = ld_u8(&wg[i].u[s][16 * qt..]);
                                signed(if SIGNED { veorq_u8(u, flip) } else { u })
                            });
                            for j in 0..RN {
                                let q = ld_s8(&ag[j].qs[s][16 * qt..]);
                                for i in 0..RM {
                                    dot[i][j] = D::dot4(dot[i][j], u[i], q);
                                }
                            }
                        }
                        for i in 0..RM {
                            let sw = f32s(&wg[i].$scale);
                            for j in 0..RN {
                                let scale = vmulq_f32(sw, f32s(&ag[j].d));
                                acc[i][j] = vfmaq_f32(acc[i][j], vcvtq_f32_s32(dot[i][j]), scale);
                            }
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
                    for i in 0..RM {
                        let min = f32s(&wg[i].min);
                        for j in 0..RN {
                            // acc -= min · d Σq
                            acc[i][j] = vfmsq_f32(acc[i][j], min, f32s(&ag[j].dsum));
                        }
                    }
                }
            }
        }
        for (j, out) in out.chunks_exact_mut(RM).enumerate() {
            for (i, o) in out.iter_mut().enumerate() {
                *o += vaddvq_f32(acc[i][j]);
            }
        }
    }
}
