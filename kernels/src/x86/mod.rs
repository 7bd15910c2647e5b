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

    #[test]
    fn avx512_gemm_tile_matches_scalar_tile() {
        if !avx512::available() {
            eprintln!("skipping the AVX-512 tile: this CPU lacks AVX-512 F/BW/VL/VNNI");
            return;
        }
        simd_check::check_tile(
            "avx512",
            crate::gemm::Kernels {
                tile: avx512::gemm_tile,
                unpack: avx512::gemm_unpack,
                pack: avx512::gemm_pack_activations,
            },
        );
    }

    #[test]
    fn avx512_gemm_matches_on_model_rows() {
        if !avx512::available() {
            eprintln!("skipping the AVX-512 tile: this CPU lacks AVX-512 F/BW/VL/VNNI");
            return;
        }
        simd_check::check_tile_on_models("avx512");
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
