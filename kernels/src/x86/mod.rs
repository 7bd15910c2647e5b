//! x86_64 dot-product kernels: AVX2 (with FMA and F16C, Haswell and later) and AVX-512 with VNNI
//! (Ice Lake, Zen 4 and later).
//!
//! Every kernel computes what the matching [`crate::scalar`] kernel computes: the same integer sum
//! per block, exactly, then the same f32 scale products; only the order in which the f32 terms are
//! added differs (SIMD lanes are summed at the end), as it does in ggml's own x86 kernels.
//!
//! Nothing here is compiled for a fixed CPU: each kernel is a `#[target_feature]` function, callable
//! only where its module's `available()` said yes.

pub(crate) mod avx2;
pub(crate) mod avx512;

/// The checks shared with the other architectures' kernels.
#[cfg(test)]
#[path = "../simd_check.rs"]
mod simd_check;

#[cfg(test)]
mod tests {
    use super::simd_check;
    use super::{avx2, avx512};

    #[test]
    fn avx2_kernels_match_scalar_reference() {
        if !avx2::available() {
            eprintln!("skipping the AVX2 kernels: this CPU lacks AVX2, FMA or F16C");
            return;
        }
        simd_check::check_isa("avx2", avx2::kernel);
    }

    #[test]
    fn avx512_kernels_match_scalar_reference() {
        if !avx512::available() {
            eprintln!("skipping the AVX-512 kernels: this CPU lacks AVX-512 F/BW/VL/VNNI");
            return;
        }
        simd_check::check_isa("avx512", avx512::kernel);
    }

    /// The attention blocks sum in the generic blocks' order, so they match plain `mul_add`
    /// loops bit for bit (on data whose sums round differently in other orders).
    #[test]
    fn attention_blocks_match_plain_loops_exactly() {
        let mut isas: Vec<(&str, Columns, Weighted)> = Vec::new();
        if avx2::available() {
            isas.push(("avx2", avx2::columns_8x16, avx2::weighted_4x32));
        }
        if avx512::available() {
            isas.push(("avx512", avx512::columns_8x16, avx512::weighted_4x32));
        }
        for (isa, columns, weighted) in isas {
            check_attention_blocks(isa, columns, weighted);
        }
    }

    /// An instruction set's `columns_8x16`.
    type Columns = unsafe fn(&[f32], usize, &[f32], usize, usize) -> [[f32; 16]; 8];
    /// An instruction set's `weighted_4x32`.
    type Weighted = unsafe fn(&[f32], usize, &[f32], usize, usize) -> [[f32; 32]; 4];

    fn check_attention_blocks(isa: &str, columns: Columns, weighted: Weighted) {
        let data = |n: usize, seed: u64| -> Vec<f32> {
            let mut x = seed;
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % 20001) as f32 / 1000.0 - 10.0
                })
                .collect()
        };
        for (dim, n, stride, at) in [
            (256, 40, 48, 16),
            (64, 16, 40, 0),
            (1, 3, 35, 3),
            (0, 5, 32, 0),
        ] {
            let q = data(8 * dim, 1);
            let keys = data(dim.max(1) * stride, 2);
            // SAFETY: the caller checked that the CPU has the blocks' features.
            let got = unsafe { columns(&q, dim, &keys, stride, at) };
            for (r, got) in got.iter().enumerate() {
                for (l, &g) in got.iter().enumerate() {
                    let want = (0..dim).fold(0.0f32, |s, i| {
                        q[r * dim + i].mul_add(keys[i * stride + at + l], s)
                    });
                    assert_eq!(
                        g.to_bits(),
                        want.to_bits(),
                        "{isa} columns dim {dim} row {r} key {l}"
                    );
                }
            }
            let w = data(4 * n, 3);
            let values = data(n * stride, 4);
            // SAFETY: as above.
            let got = unsafe { weighted(&w, n, &values, stride, 0) };
            for (r, got) in got.iter().enumerate() {
                for (e, &g) in got.iter().enumerate() {
                    let want = (0..n).fold(0.0f32, |s, p| {
                        w[r * n + p].mul_add(values[p * stride + e], s)
                    });
                    assert_eq!(
                        g.to_bits(),
                        want.to_bits(),
                        "{isa} weighted n {n} row {r} elem {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn avx2_gemm_tile_matches_scalar_tile() {
        if !avx2::available() {
            eprintln!("skipping the AVX2 tile: this CPU lacks AVX2, FMA or F16C");
            return;
        }
        let mut kernels = avx2::gemm_kernels();
        kernels.tile = avx2::gemm_tile;
        simd_check::check_tile("avx2", kernels);
        if avx2::vnni_available() {
            kernels.tile = avx2::gemm_tile_vnni;
            simd_check::check_tile("avx2-vnni", kernels);
        } else {
            eprintln!("skipping the AVX-VNNI tile: this CPU lacks AVX-VNNI");
        }
    }

    #[test]
    fn avx2_gemm_matches_on_model_rows() {
        if !avx2::available() {
            eprintln!("skipping the AVX2 tile: this CPU lacks AVX2, FMA or F16C");
            return;
        }
        simd_check::check_tile_on_models("avx2", avx2::gemm_kernels());
    }

    #[test]
    fn avx512_gemm_tile_matches_scalar_tile() {
        if !avx512::available() {
            eprintln!("skipping the AVX-512 tile: this CPU lacks AVX-512 F/BW/VL/VNNI");
            return;
        }
        simd_check::check_tile("avx512", avx512::GEMM);
    }

    #[test]
    fn avx512_gemm_matches_on_model_rows() {
        if !avx512::available() {
            eprintln!("skipping the AVX-512 tile: this CPU lacks AVX-512 F/BW/VL/VNNI");
            return;
        }
        simd_check::check_tile_on_models("avx512", avx512::GEMM);
    }

    #[test]
    fn avx2_kernels_match_on_model_rows() {
        if !avx2::available() {
            eprintln!("skipping the AVX2 kernels: this CPU lacks AVX2, FMA or F16C");
            return;
        }
        simd_check::check_isa_on_models("avx2", avx2::kernel);
    }

    #[test]
    fn avx512_kernels_match_on_model_rows() {
        if !avx512::available() {
            eprintln!("skipping the AVX-512 kernels: this CPU lacks AVX-512 F/BW/VL/VNNI");
            return;
        }
        simd_check::check_isa_on_models("avx512", avx512::kernel);
    }
}
