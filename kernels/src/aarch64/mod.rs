//! AArch64 dot-product kernels: NEON (every AArch64 CPU has it), and the same kernels with the
//! dot-product extension's `sdot` where the CPU has that (ARMv8.2+, most cores since 2017).
//!
//! As on x86, every kernel computes the matching [`crate::scalar`] kernel's integer sums exactly
//! and differs only in the order in which the f32 terms are added.

pub(crate) mod neon;

/// The checks shared with the other architectures' kernels.
#[cfg(test)]
#[path = "../simd_check.rs"]
mod simd_check;

#[cfg(test)]
mod tests {
    use super::neon;
    use super::simd_check;

    #[test]
    fn neon_kernels_match_scalar_reference() {
        simd_check::check_isa("neon", neon::kernel_plain);
    }

    #[test]
    fn dotprod_kernels_match_scalar_reference() {
        if !neon::dotprod_available() {
            eprintln!(
                "skipping the NEON dotprod kernels: this CPU lacks the dot-product extension"
            );
            return;
        }
        simd_check::check_isa("neon-dotprod", neon::kernel_dotprod);
    }

    #[test]
    fn neon_kernels_match_on_model_rows() {
        simd_check::check_isa_on_models("neon", neon::kernel_plain);
    }

    #[test]
    fn dotprod_kernels_match_on_model_rows() {
        if !neon::dotprod_available() {
            eprintln!(
                "skipping the NEON dotprod kernels: this CPU lacks the dot-product extension"
            );
            return;
        }
        simd_check::check_isa_on_models("neon-dotprod", neon::kernel_dotprod);
    }

    #[test]
    fn neon_gemm_tiles_match_scalar_tile() {
        let mut kernels = neon::gemm_kernels();
        kernels.tile = neon::gemm_tile_plain;
        simd_check::check_tile("neon", kernels);
        if neon::dotprod_available() {
            kernels.tile = neon::gemm_tile_dotprod;
            simd_check::check_tile("neon-dotprod", kernels);
        } else {
            eprintln!("skipping the NEON dotprod tile: this CPU lacks the dot-product extension");
        }
    }

    #[test]
    fn neon_gemm_matches_on_model_rows() {
        simd_check::check_tile_on_models("neon", neon::gemm_kernels());
    }

    /// The table the dispatcher uses takes the dotprod kernels exactly when the CPU has them.
    #[test]
    fn kernel_picks_dotprod_when_available() {
        use ggml_types::GgmlType;
        let best = neon::kernel(GgmlType::Q8_0).expect("a Q8_0 kernel");
        let want = if neon::dotprod_available() {
            neon::kernel_dotprod(GgmlType::Q8_0)
        } else {
            neon::kernel_plain(GgmlType::Q8_0)
        };
        assert!(std::ptr::fn_addr_eq(best, want.expect("a Q8_0 kernel")));
    }
}
