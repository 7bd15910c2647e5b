//! Register-tiled matrix multiplication for batches of tokens (prompt processing).
//!
//! [`crate::matmul`]'s per-row dot products unpack every weight block once per token. Here a panel
//! of weight rows is unpacked once into [`WGroup`]s and then met by every token, and the inner loop
//! computes a tile of `RM` rows × `RN` tokens at a time from registers (the idea of llamafile's
//! tinyBLAS and ikawrakow's iqk_mul_mat).
//!
//! The layout makes that inner loop almost all integer multiply-adds: 16 blocks of 32 elements
//! are *interleaved* so that one 64-byte step holds 4 elements of each of the 16 blocks, and a
//! u8×i8 four-way dot-product instruction (VNNI's `vpdpbusd`, NEON's `udot`-like forms) on it adds
//! each block's products into its own 32-bit lane. Eight steps give 16 exact block sums, which are
//! then scaled in f32 once, 16 at a time. Per tile and 512 elements that is 8 integer
//! instructions and 3 float ones, where a block-at-a-time kernel needs about 4 per 32 elements.
//!
//! Every weight type here is "unsigned quant times scale, minus offset, minus min":
//! `w = scale · (u - offset) - min`, with `u` a byte, one or two scales per 32-block (Q3_K's and
//! Q6_K's 16-element groups give two), and a min only for Q4_K/Q5_K. Q2_K's min per 16 elements does
//! not fit a group's one min per block: the tile runs it without, and [`subtract_half_mins`] subtracts
//! `min · d · Σ q` per 16-element half beside the tile. The activations are quantized per
//! 32-block exactly as ggml's Q8_0 (`quantize_row_q8_0_ref`), so the Q8_0/Q4_0/Q5_0 results are
//! ggml's integer sums with the same scales; for the k-quants this is finer than ggml's Q8_K (one
//! scale per 256), which keeps them at least as close to the f32 result.

use crate::formats::{
    blocks, f16_le, k4_scales_mins, q3k_scales, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ5K,
    BlockQ5_0, BlockQ6K, BlockQ8_0,
};
use crate::QMatrix;
use ggml_types::GgmlType;
use rayon::prelude::*;
use std::cell::Cell;

/// Blocks per group: one 32-bit lane each in a 512-bit register.
pub(crate) const LANES: usize = 16;
/// 4-byte steps per 32-element block.
pub(crate) const STEPS: usize = 8;
/// Elements per group.
const GROUP: usize = LANES * 32;

/// 16 activation blocks of one token, interleaved.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(crate) struct ActGroup {
    /// `qs[s][4 * l + b]` is element `4 * s + b` of block `l`.
    pub(crate) qs: [[i8; 64]; STEPS],
    /// Each block's Q8_0 scale (0 for padding).
    pub(crate) d: [f32; LANES],
    /// `-offset · Σ q` over elements 0..16 of each block (0..32 for types with one scale), the
    /// weights' offset folded in so the integer sums start from it.
    pub(crate) bias_lo: [i32; LANES],
    /// `-offset · Σ q` over elements 16..32 (types with two scales; else 0).
    pub(crate) bias_hi: [i32; LANES],
    /// `d · Σ q`: the block's activation sum, for the mins.
    pub(crate) dsum: [f32; LANES],
}

/// 16 weight blocks of one row, interleaved as [`ActGroup`].
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(crate) struct WGroup {
    pub(crate) u: [[u8; 64]; STEPS],
    /// Scale of elements 0..16 of each block (0..32 for types with one scale).
    pub(crate) scale_lo: [f32; LANES],
    /// Scale of elements 16..32 (types with two scales).
    pub(crate) scale_hi: [f32; LANES],
    /// Subtracted per element (Q4_K/Q5_K), so `min · d · Σ q` per block.
    pub(crate) min: [f32; LANES],
}

impl ActGroup {
    /// Block `l`'s `dsum` and biases from its scale `d` (as stored, f16-rounded) and the sums of
    /// its quants over elements 0..16 (`lo`) and 16..32 (`hi`).
    #[inline(always)]
    pub(crate) fn set_sums(&mut self, l: usize, shape: Shape, d: f32, lo: i32, hi: i32) {
        self.dsum[l] = d * (lo + hi) as f32;
        (self.bias_lo[l], self.bias_hi[l]) = if shape.split {
            (-shape.offset * lo, -shape.offset * hi)
        } else {
            (-shape.offset * (lo + hi), 0)
        };
    }
}

pub(crate) const ZERO_ACT: ActGroup = ActGroup {
    qs: [[0; 64]; STEPS],
    d: [0.0; LANES],
    bias_lo: [0; LANES],
    bias_hi: [0; LANES],
    dsum: [0.0; LANES],
};

pub(crate) const ZERO_W: WGroup = WGroup {
    u: [[0; 64]; STEPS],
    scale_lo: [0.0; LANES],
    scale_hi: [0.0; LANES],
    min: [0.0; LANES],
};

/// How a weight type maps onto [`WGroup`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    /// `w = scale · (u - offset) - min`.
    pub(crate) offset: i32,
    /// Two scales per 32-block (16-element groups).
    pub(crate) split: bool,
    /// Has a min term.
    pub(crate) min: bool,
    /// Bits of `u` (`u < 2^bits`): what bounds the integer sums, for tiles that add products in
    /// 16 bits (AVX2's `vpmaddubsw`).
    pub(crate) bits: u32,
    /// A min per 16-element half (Q2_K), subtracted beside the tile ([`subtract_half_mins`]).
    pub(crate) half_mins: bool,
}

/// The weight types this module handles, and how.
pub(crate) fn shape(ty: GgmlType) -> Option<Shape> {
    let (offset, split, min, bits) = match ty {
        GgmlType::Q2_K => (0, true, false, 2),
        GgmlType::Q8_0 => (128, false, false, 8),
        GgmlType::Q4_0 => (8, false, false, 4),
        GgmlType::Q5_0 => (16, false, false, 5),
        GgmlType::Q4_K => (0, false, true, 4),
        GgmlType::Q5_K => (0, false, true, 5),
        GgmlType::Q3_K => (4, true, false, 3),
        GgmlType::Q6_K => (32, true, false, 6),
        _ => return None,
    };
    Some(Shape {
        offset,
        split,
        min,
        bits,
        half_mins: ty == GgmlType::Q2_K,
    })
}

/// A SIMD [`unpack_row`] for some types: false (having written nothing) for the others, which
/// [`unpack_row`] then does. `unsafe` as [`TileFn`].
pub(crate) type UnpackFn = unsafe fn(GgmlType, &[u8], &mut [WGroup]) -> bool;

/// A SIMD [`pack_activations`], writing the very same groups. `unsafe` as [`TileFn`].
pub(crate) type PackFn = unsafe fn(Shape, &[f32], &mut [ActGroup]);

/// The kernels of one instruction set.
#[derive(Clone, Copy)]
pub(crate) struct Kernels {
    pub(crate) tile: TileFn,
    /// None: [`unpack_row`] for every type.
    pub(crate) unpack: Option<UnpackFn>,
    pub(crate) pack: PackFn,
}

/// A tile kernel: `out[j * RM + i] += Σ_{g < count} dot(w[i * stride + g], act[j * stride + g])`
/// for the `RM × RN` tile (see [`tile_scalar`] for the arithmetic). With `half`, lanes 8..16 of
/// the last group are padding, which a tile may skip. `unsafe` because a SIMD tile may only run
/// on a CPU with its features.
pub(crate) type TileFn =
    unsafe fn(Shape, &[WGroup], &[ActGroup], usize, usize, bool, &mut [f32; RM * RN]);

/// A [`TileFn`]'s arguments after the shape, as one value: what the SIMD tiles pass from the
/// entry point to the variant chosen for the shape.
pub(crate) type TileArgs<'a> = (
    &'a [WGroup],
    &'a [ActGroup],
    usize,
    usize,
    bool,
    &'a mut [f32; RM * RN],
);

/// Weight rows per tile.
pub(crate) const RM: usize = 4;
/// Tokens per tile.
pub(crate) const RN: usize = 3;
/// Weight rows one task unpacks and keeps (in L2) while all tokens pass.
const PANEL_ROWS: usize = 32;
/// Tokens per pass over a panel: their activations stay in L2 while the panel's tiles use them.
const TOKEN_CHUNK: usize = 24;
/// Groups per pass: a row tile's (4 × 4 × 640 bytes) stays in L1 across the chunk's tokens.
const GROUP_CHUNK: usize = 4;
const _: () = assert!(PANEL_ROWS.is_multiple_of(RM) && TOKEN_CHUNK.is_multiple_of(RN));

thread_local! {
    static ACT: Cell<Vec<ActGroup>> = const { Cell::new(Vec::new()) };
    static PANEL: Cell<Vec<WGroup>> = const { Cell::new(Vec::new()) };
    static MINS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// [`crate::matmul`] for a weight type with a [`shape`], through tile kernel `tile`.
pub(crate) fn matmul(w: &QMatrix, x: &[f32], n_tokens: usize, y: &mut [f32], isa: Kernels) {
    let shape = shape(w.ty).expect("gemm::matmul is only called for types with a shape");
    let groups = groups(w.cols);
    // Whether the last group's upper 8 lanes are all padding.
    let half_tail = matches!((w.cols / 32) % LANES, 1..=8);
    let padded_tokens = n_tokens.next_multiple_of(RN);
    // Buffers are reused without clearing: every group a call uses is written whole below.
    let mut act = ACT.take();
    grow(&mut act, padded_tokens * groups, ZERO_ACT);
    act[n_tokens * groups..padded_tokens * groups].fill(ZERO_ACT);
    act[..n_tokens * groups]
        .par_chunks_mut(groups)
        .zip(x.par_chunks(w.cols))
        // SAFETY: the kernels were chosen for features this CPU has.
        .for_each(|(dst, src)| unsafe { (isa.pack)(shape, src, dst) });
    // Q2_K: each token's `d · Σ q` per 16-element half, for the min terms.
    let halves = w.cols / 16;
    let mut half_sums = Vec::new();
    if shape.half_mins {
        half_sums.resize(n_tokens * halves, 0.0);
        half_sums
            .par_chunks_mut(halves)
            .zip(act.par_chunks(groups))
            .for_each(|(dst, src)| half_sums_of(src, dst));
    }

    let w_row = crate::row_bytes(w.ty, w.cols, "matmul weights");
    let out = Out(y.as_mut_ptr());
    let panels = w.rows.div_ceil(PANEL_ROWS);
    (0..panels).into_par_iter().for_each(|p| {
        let r0 = p * PANEL_ROWS;
        let r1 = (r0 + PANEL_ROWS).min(w.rows);
        let mut panel = PANEL.take();
        let padded_rows = (r1 - r0).next_multiple_of(RM);
        grow(&mut panel, padded_rows * groups, ZERO_W);
        panel[(r1 - r0) * groups..padded_rows * groups].fill(ZERO_W);
        // Q2_K: the panel's mins, half by half ([`half_mins`]), in a buffer kept like the panel
        // (for a 14336-column row it is 112 KiB: allocating and zeroing it per panel cost more
        // than the panel's min terms). Every row of the panel is written below; rows past the
        // matrix must be 0.
        let mut mins = MINS.take();
        if shape.half_mins {
            grow(&mut mins, halves * PANEL_ROWS, 0.0);
            if r1 - r0 < PANEL_ROWS {
                mins[..halves * PANEL_ROWS].fill(0.0);
            }
        }
        for (r, dst) in (r0..r1).zip(panel.chunks_mut(groups)) {
            let row = &w.data[r * w_row..(r + 1) * w_row];
            // SAFETY: the kernels were chosen for features this CPU has.
            let unpacked = isa.unpack.is_some_and(|f| unsafe { f(w.ty, row, dst) });
            if !unpacked {
                unpack_row(w.ty, row, dst);
            }
            if shape.half_mins {
                half_mins(row, r - r0, &mut mins);
            }
        }
        // Token chunk by group chunk: a row tile's groups of one chunk stay in L1 while every
        // token tile of the chunk passes, and those tokens' groups stay in L2.
        let mut sums = [[0.0f32; RM * RN]; PANEL_ROWS / RM * TOKEN_CHUNK / RN];
        for t0 in (0..padded_tokens).step_by(TOKEN_CHUNK) {
            let t1 = (t0 + TOKEN_CHUNK).min(padded_tokens);
            // The next chunk's outputs are about to be written: ask for their cache lines now,
            // while this chunk computes, instead of stalling on them at the stores.
            for j in t1..(t1 + TOKEN_CHUNK).min(n_tokens) {
                for i in (0..r1 - r0).step_by(16) {
                    out.prefetch(j * w.rows + r0 + i);
                }
            }
            sums.iter_mut().for_each(|s| *s = [0.0; RM * RN]);
            for g0 in (0..groups).step_by(GROUP_CHUNK) {
                let count = GROUP_CHUNK.min(groups - g0);
                let half = half_tail && g0 + count == groups;
                for i0 in (0..padded_rows).step_by(RM) {
                    let wt = &panel[i0 * groups + g0..];
                    for j0 in (t0..t1).step_by(RN) {
                        let at = &act[j0 * groups + g0..];
                        let sum = &mut sums[i0 / RM * (TOKEN_CHUNK / RN) + (j0 - t0) / RN];
                        // SAFETY: the kernels were chosen for features this CPU has, and the
                        // slices hold RM and RN rows of `groups` groups from g0 on.
                        unsafe { (isa.tile)(shape, wt, at, groups, count, half, sum) };
                    }
                }
            }
            for j in t0..t1.min(n_tokens) {
                let (tile, jj) = ((j - t0) / RN, (j - t0) % RN);
                // Gathered first (a row tile's 4 sums of a token lie together), then stored as
                // one run: y's rows are far apart (a power of two, often), so each run is a
                // cache miss, and wide stores keep many in flight where one store per element
                // would stall on them.
                let mut run: [f32; PANEL_ROWS] = std::array::from_fn(|i| {
                    sums[i / RM * (TOKEN_CHUNK / RN) + tile][jj * RM + i % RM]
                });
                if shape.half_mins {
                    subtract_half_mins(
                        &mut run,
                        &mins[..halves * PANEL_ROWS],
                        &half_sums[j * halves..(j + 1) * halves],
                    );
                }
                // SAFETY: token j < n_tokens and rows r0..r1 are inside y; only this panel
                // writes them.
                let dst = unsafe { out.run(j * w.rows + r0, r1 - r0) };
                match <&mut [f32; PANEL_ROWS]>::try_from(&mut *dst) {
                    // A whole panel (all but a matrix's last): a fixed-size copy, inlined.
                    Ok(whole) => *whole = run,
                    Err(_) => dst.copy_from_slice(&run[..dst.len()]),
                }
            }
        }
        PANEL.set(panel);
        MINS.set(mins);
    });
    ACT.set(act);
}

/// Makes `v` at least `len` long; what it held stays (the caller overwrites what it uses).
fn grow<T: Copy>(v: &mut Vec<T>, len: usize, fill: T) {
    if v.len() < len {
        v.resize(len, fill);
    }
}

/// Q2_K's mins of panel row `i`, `dmin · m` per 16-element half, into `mins[k · PANEL_ROWS + i]`
/// for half `k` (all rows' mins of a half side by side, for [`subtract_half_mins`]). A block's
/// scale byte `k` holds half `k`'s scale (low nibble) and min (high nibble).
fn half_mins(row: &[u8], i: usize, mins: &mut [f32]) {
    for (x, mins) in blocks::<BlockQ2K>(row)
        .iter()
        .zip(mins.chunks_exact_mut(16 * PANEL_ROWS))
    {
        let dmin = f16_le(x.dmin);
        for (half, &sc) in mins.chunks_exact_mut(PANEL_ROWS).zip(&x.scales) {
            half[i] = dmin * (sc >> 4) as f32;
        }
    }
}

/// One token's `d · Σ q` per 16-element half, in element order, from its packed groups: half
/// `2 b` is steps 0..4 of block `b`'s lane, half `2 b + 1` steps 4..8.
fn half_sums_of(groups: &[ActGroup], dst: &mut [f32]) {
    for (b, dst) in dst.chunks_exact_mut(2).enumerate() {
        let (a, l) = (&groups[b / LANES], b % LANES);
        let sum = |steps: &[[i8; 64]]| -> i32 {
            steps
                .iter()
                .flat_map(|s| &s[4 * l..4 * l + 4])
                .map(|&q| i32::from(q))
                .sum()
        };
        dst[0] = a.d[l] * sum(&a.qs[..STEPS / 2]) as f32;
        dst[1] = a.d[l] * sum(&a.qs[STEPS / 2..]) as f32;
    }
}

crate::multiversion::multiversion! {
    /// Takes Q2_K's min terms off one token's sums of a panel's rows: `run[i]` loses
    /// `Σ_k mins[k · PANEL_ROWS + i] · sums[k]` ([`half_mins`], [`half_sums_of`]). n/16 products
    /// per row and token beside the tile's n, so written for the vectorizer: the rows are the
    /// vector lanes, two halves at a time for independent additions.
    fn subtract_half_mins(run: &mut [f32; PANEL_ROWS], mins: &[f32], sums: &[f32]) =
        subtract_half_mins_body;
}

#[inline(always)]
fn subtract_half_mins_body(run: &mut [f32; PANEL_ROWS], mins: &[f32], sums: &[f32]) {
    let mut acc = [[0.0f32; PANEL_ROWS]; 2];
    // Q2_K rows are whole 256-element blocks, so the halves come in multiples of 16.
    for (m, s) in mins.chunks_exact(2 * PANEL_ROWS).zip(sums.chunks_exact(2)) {
        for (h, acc) in acc.iter_mut().enumerate() {
            for (a, &m) in acc.iter_mut().zip(&m[h * PANEL_ROWS..(h + 1) * PANEL_ROWS]) {
                *a += m * s[h];
            }
        }
    }
    for ((v, a), b) in run.iter_mut().zip(acc[0]).zip(acc[1]) {
        *v -= a + b;
    }
}

/// `y`, shared by the panels, each writing only its own rows' elements.
struct Out(*mut f32);

// SAFETY: panels write disjoint elements, and `matmul` holds `&mut y` until all are done.
unsafe impl Sync for Out {}

impl Out {
    /// The `len` elements from `start` on.
    ///
    /// # Safety
    /// They are inside the output, and nothing else reads or writes them while the slice lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn run(&self, start: usize, len: usize) -> &mut [f32] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }

    /// Hints that element `i` (inside the output) will be written soon.
    fn prefetch(&self, i: usize) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch never faults, and `i` is inside the output anyway.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_ET0};
            _mm_prefetch::<_MM_HINT_ET0>(self.0.add(i).cast::<i8>());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = i;
    }
}

/// Quantizes one token's activations (ggml's Q8_0 rounding) into interleaved groups: the
/// reference for the SIMD [`PackFn`]s, and AArch64's [`PackFn`] (the quantization is the
/// dispatched one; the interleaving is a small part of a matmul).
#[cfg(any(test, target_arch = "aarch64"))]
pub(crate) fn pack_activations(shape: Shape, x: &[f32], dst: &mut [ActGroup]) {
    let mut q8 = vec![0; crate::row_bytes(GgmlType::Q8_0, x.len(), "gemm activations")];
    crate::quantize::quantize(GgmlType::Q8_0, x, &mut q8);
    if !x.len().is_multiple_of(GROUP) {
        // The padding lanes of the last group must be zero; the rest is overwritten.
        dst[x.len() / GROUP] = ZERO_ACT;
    }
    for (b, block) in blocks::<BlockQ8_0>(&q8).iter().enumerate() {
        let (g, l) = (b / LANES, b % LANES);
        let a = &mut dst[g];
        for (s, step) in a.qs.iter_mut().enumerate() {
            step[4 * l..4 * l + 4].copy_from_slice(&block.qs[4 * s..4 * s + 4]);
        }
        let d = f16_le(block.d);
        let lo: i32 = block.qs[..16].iter().map(|&q| q as i32).sum();
        let hi: i32 = block.qs[16..].iter().map(|&q| q as i32).sum();
        a.d[l] = d;
        a.set_sums(l, shape, d, lo, hi);
    }
}

/// One 32-element weight block, unpacked: its unsigned quants, scales and min.
struct Unpacked {
    u: [u8; 32],
    scale_lo: f32,
    scale_hi: f32,
    min: f32,
}

impl Unpacked {
    #[inline(always)]
    fn store(&self, b: usize, dst: &mut [WGroup]) {
        let (g, l) = (b / LANES, b % LANES);
        let w = &mut dst[g];
        for (s, step) in w.u.iter_mut().enumerate() {
            step[4 * l..4 * l + 4].copy_from_slice(&self.u[4 * s..4 * s + 4]);
        }
        w.scale_lo[l] = self.scale_lo;
        w.scale_hi[l] = self.scale_hi;
        w.min[l] = self.min;
    }
}

crate::multiversion::multiversion! {
    /// Unpacks one row of weights of type `ty` (one with a [`shape`]) into interleaved groups;
    /// the padding lanes of the last group stay zero. Every block's quants are computed as a
    /// whole 32-byte array (loops the compiler vectorizes), then moved 4 bytes at a time.
    pub(crate) fn unpack_row(ty: GgmlType, row: &[u8], dst: &mut [WGroup]) = unpack_row_body;
}

#[inline(always)]
fn unpack_row_body(ty: GgmlType, row: &[u8], dst: &mut [WGroup]) {
    let blocks_in_row = row.len() / ty.type_size() * ty.block_size() / 32;
    if !blocks_in_row.is_multiple_of(LANES) {
        // The padding lanes of the last group must be zero; the rest is overwritten.
        dst[blocks_in_row / LANES] = ZERO_W;
    }
    let one = |d: f32, u: [u8; 32]| Unpacked {
        u,
        scale_lo: d,
        scale_hi: d,
        min: 0.0,
    };
    match ty {
        GgmlType::Q8_0 => {
            for (b, x) in blocks::<BlockQ8_0>(row).iter().enumerate() {
                one(f16_le(x.d), x.qs.map(|q| (q as u8) ^ 0x80)).store(b, dst);
            }
        }
        GgmlType::Q4_0 => {
            for (b, x) in blocks::<BlockQ4_0>(row).iter().enumerate() {
                one(f16_le(x.d), nibbles(&x.qs)).store(b, dst);
            }
        }
        GgmlType::Q5_0 => {
            for (b, x) in blocks::<BlockQ5_0>(row).iter().enumerate() {
                let qh = u32::from_le_bytes(x.qh);
                let mut u = nibbles(&x.qs);
                for (e, u) in u.iter_mut().enumerate() {
                    *u |= (((qh >> e) & 1) << 4) as u8;
                }
                one(f16_le(x.d), u).store(b, dst);
            }
        }
        GgmlType::Q4_K => {
            for (k, x) in blocks::<BlockQ4K>(row).iter().enumerate() {
                unpack_k4(x.d, x.dmin, &x.scales, &x.qs, None, k, dst);
            }
        }
        GgmlType::Q5_K => {
            for (k, x) in blocks::<BlockQ5K>(row).iter().enumerate() {
                unpack_k4(x.d, x.dmin, &x.scales, &x.qs, Some(&x.qh), k, dst);
            }
        }
        GgmlType::Q2_K => {
            for (k, x) in blocks::<BlockQ2K>(row).iter().enumerate() {
                let d = f16_le(x.d);
                for sb in 0..8 {
                    // Sub-block sb: bits 2·(sb % 4) of the 32 bytes qs[32·(sb / 4)..]; its
                    // halves' scales are the low nibbles of scale bytes 2·sb and 2·sb + 1 (the
                    // mins, the high nibbles, are `half_mins`').
                    let qs = &x.qs[32 * (sb / 4)..32 * (sb / 4) + 32];
                    let shift = 2 * (sb % 4);
                    let mut u = [0u8; 32];
                    for l in 0..32 {
                        u[l] = (qs[l] >> shift) & 3;
                    }
                    Unpacked {
                        u,
                        scale_lo: d * (x.scales[2 * sb] & 15) as f32,
                        scale_hi: d * (x.scales[2 * sb + 1] & 15) as f32,
                        min: 0.0,
                    }
                    .store(8 * k + sb, dst);
                }
            }
        }
        GgmlType::Q3_K => {
            for (k, x) in blocks::<BlockQ3K>(row).iter().enumerate() {
                let d = f16_le(x.d);
                let sc = q3k_scales(&x.scales);
                for sb in 0..8 {
                    // Sub-block sb: bits 2·(sb % 4) of the 32 bytes qs[32·(sb / 4)..], and bit sb
                    // of hmask, which set means +4 (ggml subtracts 4 where it is clear).
                    let qs = &x.qs[32 * (sb / 4)..32 * (sb / 4) + 32];
                    let shift = 2 * (sb % 4);
                    let mut u = [0u8; 32];
                    for l in 0..32 {
                        u[l] = ((qs[l] >> shift) & 3) | (((x.hmask[l] >> sb) & 1) << 2);
                    }
                    Unpacked {
                        u,
                        scale_lo: d * sc[2 * sb] as f32,
                        scale_hi: d * sc[2 * sb + 1] as f32,
                        min: 0.0,
                    }
                    .store(8 * k + sb, dst);
                }
            }
        }
        GgmlType::Q6_K => {
            for (k, x) in blocks::<BlockQ6K>(row).iter().enumerate() {
                let d = f16_le(x.d);
                let mut q = [0u8; 256];
                for half in 0..2 {
                    let (ql, qh) = (&x.ql[64 * half..], &x.qh[32 * half..]);
                    let y = &mut q[128 * half..];
                    for l in 0..32 {
                        y[l] = (ql[l] & 15) | ((qh[l] & 3) << 4);
                        y[l + 32] = (ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4);
                        y[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                        y[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
                    }
                }
                for sb in 0..8 {
                    Unpacked {
                        u: q[32 * sb..32 * sb + 32].try_into().expect("32 quants"),
                        scale_lo: d * x.scales[2 * sb] as f32,
                        scale_hi: d * x.scales[2 * sb + 1] as f32,
                        min: 0.0,
                    }
                    .store(8 * k + sb, dst);
                }
            }
        }
        other => unreachable!("unpack_row: {} has no gemm shape", other.name()),
    }
}

/// Superblock `k` of a Q4_K row, or of a Q5_K row with its fifth bits `qh`: eight sub-blocks of
/// 32, each `d · scale · q - dmin · min`.
#[inline(always)]
fn unpack_k4(
    d: [u8; 2],
    dmin: [u8; 2],
    scales: &[u8; 12],
    qs: &[u8; 128],
    qh: Option<&[u8; 32]>,
    k: usize,
    dst: &mut [WGroup],
) {
    let (sc, mn) = k4_scales_mins(scales);
    let (d, dmin) = (f16_le(d), f16_le(dmin));
    for sb in 0..8 {
        // Sub-block sb is in bytes 32·(sb/2)..: low nibbles for even sb, high ones for odd.
        let bytes = &qs[32 * (sb / 2)..32 * (sb / 2) + 32];
        let shift = 4 * (sb % 2);
        let mut u = [0u8; 32];
        for l in 0..32 {
            u[l] = (bytes[l] >> shift) & 15;
        }
        if let Some(h) = qh {
            for l in 0..32 {
                u[l] |= ((h[l] >> sb) & 1) << 4;
            }
        }
        Unpacked {
            u,
            scale_lo: d * sc[sb] as f32,
            scale_hi: d * sc[sb] as f32,
            min: dmin * mn[sb] as f32,
        }
        .store(8 * k + sb, dst);
    }
}

/// A Q4_0/Q5_0 block's 32 nibbles: the low ones are elements 0..16, the high ones 16..32.
#[inline(always)]
fn nibbles(qs: &[u8; 16]) -> [u8; 32] {
    let mut u = [0u8; 32];
    for e in 0..16 {
        u[e] = qs[e] & 15;
        u[e + 16] = qs[e] >> 4;
    }
    u
}

/// The reference tile: what every SIMD tile computes, in plain arithmetic (the tests hold each
/// SIMD tile to it).
#[cfg(test)]
///
/// Per block: the integer sums `Σ u·q + bias` over each scale's elements (exact), times the
/// weight scale times the activation scale, minus `min · d · Σ q`.
pub(crate) fn tile_scalar(
    shape: Shape,
    w: &[WGroup],
    act: &[ActGroup],
    stride: usize,
    count: usize,
    // Padding lanes are zero: the reference simply sums them.
    _half: bool,
    out: &mut [f32; RM * RN],
) {
    for i in 0..RM {
        for j in 0..RN {
            let mut sum = 0.0f32;
            for g in 0..count {
                let (wg, ag) = (&w[i * stride + g], &act[j * stride + g]);
                for l in 0..LANES {
                    let dot = |steps: std::ops::Range<usize>, bias: i32| {
                        steps.fold(bias, |acc, s| {
                            (0..4).fold(acc, |acc, b| {
                                acc + wg.u[s][4 * l + b] as i32 * ag.qs[s][4 * l + b] as i32
                            })
                        })
                    };
                    let block = if shape.split {
                        dot(0..4, ag.bias_lo[l]) as f32 * (wg.scale_lo[l] * ag.d[l])
                            + dot(4..8, ag.bias_hi[l]) as f32 * (wg.scale_hi[l] * ag.d[l])
                    } else {
                        dot(0..8, ag.bias_lo[l]) as f32 * (wg.scale_lo[l] * ag.d[l])
                    };
                    sum += block - wg.min[l] * ag.dsum[l];
                }
            }
            out[j * RM + i] += sum;
        }
    }
}

/// Groups a row of `cols` elements takes (the last one padded with zero blocks).
pub(crate) fn groups(cols: usize) -> usize {
    cols.div_ceil(GROUP)
}
