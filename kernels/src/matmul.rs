//! Matrix times a batch of activation rows, parallel over weight rows.

use crate::dispatch;
use crate::gemm;
use crate::quantize::quantize_act;
use crate::vec_dot_fn::VecDotFn;
use ggml_types::GgmlType;
use rayon::prelude::*;
use std::cell::Cell;

/// A 2-D weight matrix in ggml layout: `rows` rows of `cols` elements each, row-major, rows are
/// contiguous (`ty.row_size(cols)` bytes apart).
#[derive(Clone, Copy, Debug)]
pub struct QMatrix<'a> {
    pub ty: GgmlType,
    pub data: &'a [u8],
    pub rows: usize,
    pub cols: usize,
}

thread_local! {
    /// The quantized activations of the last `matmul` on this thread, kept so that the next call
    /// (the same shapes, layer after layer) allocates nothing.
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// From this many tokens on, unpacking a panel of weights once for all of them (the tiled
/// [`gemm`]) beats unpacking each block once per token.
const GEMM_MIN_TOKENS: usize = 4;

/// Weight bytes one task's tile of rows aims at: small enough to stay in L2 while every token of a
/// token tile is dotted with it, so each weight row is read from memory once per call.
const ROW_TILE_BYTES: usize = 32 << 10;
/// Activation bytes one token tile aims at, for the same reason.
const TOKEN_TILE_BYTES: usize = 64 << 10;

/// `y[t * rows + r] = dot(w row r, x row t)` for `t` in `0..n_tokens`; `x` is `n_tokens × cols`
/// f32 (row-major), `y` is `n_tokens × rows`.
///
/// `x` is converted once to the weights' `vec_dot_type`, as ggml does, plus what the kernels take
/// beside it (see [`crate::act_row_bytes`]), into a buffer reused across calls on the same thread.
/// Tiles of weight rows then run in parallel on rayon's pool, each dotted with every token while
/// it is in cache.
///
/// # Panics
/// If `cols` is not a whole number of blocks, or the slices do not have the sizes the shapes give.
pub fn matmul(w: &QMatrix, x: &[f32], n_tokens: usize, y: &mut [f32]) {
    let w_row = crate::row_bytes(w.ty, w.cols, "matmul weights");
    let a_row = crate::act_row_bytes(w.ty, w.cols, "matmul activations");
    assert!(
        w.data.len() >= w.rows * w_row,
        "matmul: {} rows of {} {} elements need {} bytes, the matrix has {}",
        w.rows,
        w.cols,
        w.ty.name(),
        w.rows * w_row,
        w.data.len()
    );
    assert_eq!(
        x.len(),
        n_tokens * w.cols,
        "matmul: x must be n_tokens ({n_tokens}) × cols ({})",
        w.cols
    );
    assert_eq!(
        y.len(),
        n_tokens * w.rows,
        "matmul: y must be n_tokens ({n_tokens}) × rows ({})",
        w.rows
    );
    if n_tokens == 0 || w.rows == 0 {
        return;
    }

    if is_tiled(w.ty, n_tokens) {
        if let Some(isa) = dispatch::get().gemm {
            return gemm::matmul(w, x, n_tokens, y, isa);
        }
    }

    // Taken rather than borrowed: if rayon runs another matmul on this thread while this one waits,
    // that one simply starts with an empty buffer.
    let mut act = SCRATCH.take();
    act.resize(n_tokens * a_row, 0);
    if n_tokens == 1 {
        quantize_act(w.ty, x, &mut act);
    } else {
        act.par_chunks_mut(a_row)
            .zip(x.par_chunks(w.cols))
            .for_each(|(dst, src)| quantize_act(w.ty, src, dst));
    }

    let kernel = dispatch::get().kernel(w.ty);
    // At least four tiles per thread, so that a small matrix (a 128-row K projection) does not
    // leave a thread idle while another does two of three tiles.
    let rows_per_tile = (ROW_TILE_BYTES / w_row)
        .clamp(1, 64)
        .min(w.rows.div_ceil(4 * rayon::current_num_threads()))
        .max(1);
    let tokens_per_tile = (TOKEN_TILE_BYTES / a_row).max(1);
    let out = Out(y.as_mut_ptr());
    let tiles = w.rows.div_ceil(rows_per_tile);
    let job = Job {
        kernel,
        n: w.cols,
        w: w.data,
        w_row,
        act: &act,
        a_row,
        rows: w.rows,
        n_tokens,
    };
    (0..tiles).into_par_iter().for_each(|tile| {
        let r0 = tile * rows_per_tile;
        job.run(r0..(r0 + rows_per_tile).min(w.rows), tokens_per_tile, &out);
    });
    SCRATCH.set(act);
}

/// What every tile needs.
struct Job<'a> {
    kernel: VecDotFn,
    n: usize,
    w: &'a [u8],
    w_row: usize,
    act: &'a [u8],
    a_row: usize,
    rows: usize,
    n_tokens: usize,
}

impl Job<'_> {
    fn run(&self, rows: std::ops::Range<usize>, tokens_per_tile: usize, out: &Out) {
        for t0 in (0..self.n_tokens).step_by(tokens_per_tile) {
            let t1 = (t0 + tokens_per_tile).min(self.n_tokens);
            for r in rows.clone() {
                let w = &self.w[r * self.w_row..(r + 1) * self.w_row];
                for t in t0..t1 {
                    let a = &self.act[t * self.a_row..(t + 1) * self.a_row];
                    // SAFETY: the kernel was chosen for features this CPU has (dispatch), and both
                    // slices are exactly one row of the types it expects.
                    let v = unsafe { (self.kernel)(self.n, w, a) };
                    // SAFETY: t < n_tokens and r < rows, so the index is inside y, and no other
                    // tile writes row r.
                    unsafe { out.write(t * self.rows + r, v) };
                }
            }
        }
    }
}

/// Whether [`matmul`] takes the register-tiled path for `n_tokens` tokens of `ty` weights on this
/// CPU. Its results then differ from per-row [`crate::vec_dot`] in the order of f32 additions and,
/// for the k-quants, in how the activations are quantized (per 32 values, not per 256).
pub fn is_tiled(ty: GgmlType, n_tokens: usize) -> bool {
    n_tokens >= GEMM_MIN_TOKENS && gemm::shape(ty).is_some() && dispatch::get().gemm.is_some()
}

/// `y`, shared by the tiles: each writes only the elements of its own rows, which are not
/// contiguous (one per token), so they cannot be handed out as disjoint slices.
struct Out(*mut f32);

// SAFETY: tiles write disjoint elements (see `Job::run`), and `matmul` holds `&mut y` until all
// tiles are done.
unsafe impl Sync for Out {}

impl Out {
    /// # Safety
    /// `i` is inside the output and no other thread writes it.
    unsafe fn write(&self, i: usize, v: f32) {
        unsafe { self.0.add(i).write(v) };
    }
}
