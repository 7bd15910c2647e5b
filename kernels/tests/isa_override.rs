//! LLAMAFILE_ISA=scalar forces the reference kernels. Its own test binary (one test), because the
//! choice is made once per process.

mod common;

use common::{random_row, Rng};
use kernels::{matmul, quantize_row, scalar, vec_dot_type, GgmlType, QMatrix};

#[test]
fn scalar_override_makes_matmul_the_reference() {
    // SAFETY: the only test in this binary, run before anything reads the environment.
    std::env::set_var("LLAMAFILE_ISA", "scalar");
    assert_eq!(kernels::isa_name(), "scalar");
    let mut rng = Rng::new(30);
    use GgmlType::*;
    for ty in [
        F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
    ] {
        let (rows, cols, n_tokens) = (9, 512, 3);
        let data: Vec<u8> = (0..rows)
            .flat_map(|_| random_row(&mut rng, ty, cols))
            .collect();
        let x = rng.activations(n_tokens * cols);
        let mut y = vec![0f32; n_tokens * rows];
        matmul(
            &QMatrix {
                ty,
                data: &data,
                rows,
                cols,
            },
            &x,
            n_tokens,
            &mut y,
        );
        let act_ty = vec_dot_type(ty);
        let w_row = data.len() / rows;
        let mut act = vec![0u8; act_ty.row_size(cols as u64).unwrap() as usize];
        for t in 0..n_tokens {
            quantize_row(act_ty, &x[t * cols..(t + 1) * cols], &mut act);
            for r in 0..rows {
                let want = scalar::vec_dot(ty, cols, &data[r * w_row..(r + 1) * w_row], &act);
                assert_eq!(
                    y[t * rows + r].to_bits(),
                    want.to_bits(),
                    "{} row {r} token {t}",
                    ty.name()
                );
            }
        }
    }
}
