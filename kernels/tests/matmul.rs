//! matmul against per-row vec_dot: same kernels, so the same bits, for any shape, token count
//! and thread count.

mod common;

use common::{random_row, Rng};
use kernels::{matmul, quantize_row, vec_dot, vec_dot_type, GgmlType, QMatrix};
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
            assert_same(
                &y,
                &per_row(&w, &x, n_tokens),
                &format!("{} {rows}x{cols}, {n_tokens} tokens", ty.name()),
            );
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
        let want = per_row(&w, &x, n_tokens);
        for threads in [1, 2, 5] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut y = vec![f32::NAN; n_tokens * rows];
            pool.install(|| matmul(&w, &x, n_tokens, &mut y));
            assert_same(&y, &want, &format!("{} on {threads} threads", ty.name()));
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
        assert_same(
            y,
            &per_row(
                &QMatrix {
                    ty: *ty,
                    data,
                    rows,
                    cols,
                },
                &x,
                n_tokens,
            ),
            ty.name(),
        );
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
