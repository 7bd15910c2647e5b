//! matmul against per-row vec_dot: same kernels, so the same bits, for any shape, token count
//! and thread count — except where matmul takes its register-tiled path, whose sums are grouped
//! differently (and whose k-quant activations are quantized per 32 values, not per 256): there the
//! result is the same for every thread count and within its 8-bit activations' error of the exact
//! product.

mod common;

use common::{random_row, Rng};
use kernels::{
    dequantize_row, matmul, matmul_is_tiled, quantize_row, vec_dot, vec_dot_type, GgmlType, QMatrix,
};
use rayon::prelude::*;

use GgmlType::*;

/// y computed one dot at a time: the activations quantized per token, then vec_dot per row.
fn per_row(w: &QMatrix, x: &[f32], n_tokens: usize) -> Vec<f32> {
    let act_ty = vec_dot_type(w.ty);
    let a_row = act_ty.row_size(w.cols as u64).unwrap() as usize;
    let w_row = w.ty.row_size(w.cols as u64).unwrap() as usize;
    let mut y = vec![0f32; n_tokens * w.rows];
    let mut act = vec![0u8; a_row];
    for t in 0..n_tokens {
        quantize_row(act_ty, &x[t * w.cols..(t + 1) * w.cols], &mut act);
        for r in 0..w.rows {
            y[t * w.rows + r] = vec_dot(w.ty, w.cols, &w.data[r * w_row..(r + 1) * w_row], &act);
        }
    }
    y
}

fn random_matrix(rng: &mut Rng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    (0..rows).flat_map(|_| random_row(rng, ty, cols)).collect()
}

/// Per-row vec_dot's bits where matmul uses it; else the exact product within what quantizing
/// the activations per 32 values to 8 bits (an error of at most d/2 each) and f32 sums allow.
fn assert_matches_per_row(w: &QMatrix, x: &[f32], n_tokens: usize, got: &[f32], what: &str) {
    if !matmul_is_tiled(w.ty, n_tokens) {
        return assert_same(got, &per_row(w, x, n_tokens), what);
    }
    let w_row = w.ty.row_size(w.cols as u64).unwrap() as usize;
    let mut wd = vec![0f32; w.cols];
    for r in 0..w.rows {
        dequantize_row(w.ty, &w.data[r * w_row..(r + 1) * w_row], &mut wd);
        for t in 0..n_tokens {
            let xt = &x[t * w.cols..(t + 1) * w.cols];
            let (mut exact, mut bound) = (0f64, 1e-30);
            for (wb, xb) in wd.chunks(32).zip(xt.chunks(32)) {
                let amax = xb.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
                let wabs: f64 = wb.iter().map(|a| a.abs() as f64).sum();
                let mag: f64 = wb.iter().zip(xb).map(|(a, b)| (a * b).abs() as f64).sum();
                exact += wb
                    .iter()
                    .zip(xb)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>();
                bound += wabs * amax / 127.0 * 0.5 * 1.001 + mag * 64.0 * f32::EPSILON as f64;
            }
            let g = got[t * w.rows + r] as f64;
            assert!(
                (g - exact).abs() <= bound,
                "{what}: y[{t}, {r}] = {g:e} (tiled), exact {exact:e}, bound {bound:e}"
            );
        }
    }
}

fn assert_same(got: &[f32], want: &[f32], what: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "{what}: y[{i}] = {g:e}, per-row vec_dot gives {w:e}"
        );
    }
}

#[test]
fn matmul_equals_per_row_vec_dot() {
    let mut rng = Rng::new(20);
    let shapes = [
        (Q4_0, 7, 64),
        (Q4_1, 33, 96),
        (Q5_0, 5, 896),
        (Q5_1, 9, 32),
        (Q8_0, 130, 256),
        (Q2_K, 3, 512),
        (Q3_K, 17, 256),
        (Q4_K, 65, 768),
        (Q5_K, 2, 256),
        (Q6_K, 40, 4864),
        (F16, 11, 100),
        (BF16, 6, 33),
        (F32, 70, 17),
    ];
    for (ty, rows, cols) in shapes {
        let data = random_matrix(&mut rng, ty, rows, cols);
        let w = QMatrix {
            ty,
            data: &data,
            rows,
            cols,
        };
        for n_tokens in [1, 2, 7, 33] {
            let x = rng.activations(n_tokens * cols);
            let mut y = vec![f32::NAN; n_tokens * rows];
            matmul(&w, &x, n_tokens, &mut y);
            let what = format!("{} {rows}x{cols}, {n_tokens} tokens", ty.name());
            assert_matches_per_row(&w, &x, n_tokens, &y, &what);
        }
    }
}

#[test]
fn matmul_on_model_weights_with_several_thread_counts() {
    let mut rng = Rng::new(21);
    for ty in [Q4_K, Q6_K, Q8_0] {
        let rows = 64;
        let (info, data) =
            common::read_rows(&common::synth_model(ty), "blk.0.ffn_down.weight", rows);
        let cols = info.dims[0] as usize;
        let w = QMatrix {
            ty,
            data: &data,
            rows,
            cols,
        };
        let n_tokens = 12;
        let x = rng.activations(n_tokens * cols);
        let mut want = Vec::new();
        for threads in [1, 2, 5] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut y = vec![f32::NAN; n_tokens * rows];
            pool.install(|| matmul(&w, &x, n_tokens, &mut y));
            let what = format!("{} on {threads} threads", ty.name());
            if want.is_empty() {
                assert_matches_per_row(&w, &x, n_tokens, &y, &what);
                want = y;
            } else {
                assert_same(&y, &want, &what);
            }
        }
    }
}

/// matmul called from inside rayon tasks (as a runtime may do per head or per sequence) must not
/// trip over its own per-thread scratch buffer.
#[test]
fn matmul_nested_in_rayon_tasks() {
    let mut rng = Rng::new(22);
    let (rows, cols, n_tokens) = (300, 256, 3);
    let mats: Vec<(GgmlType, Vec<u8>)> = [Q4_K, Q8_0, Q5_0, Q6_K, F16, Q3_K]
        .iter()
        .map(|&ty| (ty, random_matrix(&mut rng, ty, rows, cols)))
        .collect();
    let x = rng.activations(n_tokens * cols);
    let results: Vec<Vec<f32>> = mats
        .par_iter()
        .map(|(ty, data)| {
            let mut y = vec![f32::NAN; n_tokens * rows];
            matmul(
                &QMatrix {
                    ty: *ty,
                    data,
                    rows,
                    cols,
                },
                &x,
                n_tokens,
                &mut y,
            );
            y
        })
        .collect();
    for ((ty, data), y) in mats.iter().zip(&results) {
        let w = QMatrix {
            ty: *ty,
            data,
            rows,
            cols,
        };
        assert_matches_per_row(&w, &x, n_tokens, y, ty.name());
    }
}

#[test]
fn matmul_with_no_tokens_or_rows_writes_nothing() {
    let data = vec![0u8; 0];
    matmul(
        &QMatrix {
            ty: Q4_0,
            data: &data,
            rows: 0,
            cols: 32,
        },
        &[1.0; 64],
        2,
        &mut [],
    );
    let data = vec![0u8; 18];
    matmul(
        &QMatrix {
            ty: Q4_0,
            data: &data,
            rows: 1,
            cols: 32,
        },
        &[],
        0,
        &mut [],
    );
}

#[test]
#[should_panic(expected = "matmul: y must be n_tokens (2) × rows (1)")]
fn matmul_checks_output_size() {
    let data = vec![0u8; 18];
    matmul(
        &QMatrix {
            ty: Q4_0,
            data: &data,
            rows: 1,
            cols: 32,
        },
        &[0.0; 64],
        2,
        &mut [0.0; 3],
    );
}

#[test]
#[should_panic(expected = "matmul: 2 rows of 32 Q4_0 elements need 36 bytes, the matrix has 18")]
fn matmul_checks_matrix_size() {
    let data = vec![0u8; 18];
    matmul(
        &QMatrix {
            ty: Q4_0,
            data: &data,
            rows: 2,
            cols: 32,
        },
        &[0.0; 32],
        1,
        &mut [0.0; 2],
    );
}
