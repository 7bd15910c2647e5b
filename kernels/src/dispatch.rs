//! Run-time choice of the dot-product kernels.
//!
//! The CPU is probed once; each weight type then gets the kernel of the best instruction set that
//! has one for it, falling back to the next lower one and finally to [`crate::scalar`]. Nothing is
//! compiled for a fixed CPU: the SIMD kernels are `#[target_feature]` functions, only ever called
//! after the features they enable were detected, so a baseline x86_64 build runs anywhere.
//!
//! `LLAMAFILE_ISA=scalar|avx2|avx512|neon` caps the choice (never raises it beyond what the CPU
//! has), to compare the variants in tests and benchmarks.

use crate::gemm;
use crate::multiversion::Width;
use crate::vec_dot_fn::VecDotFn;
use ggml_types::GgmlType;
use std::sync::OnceLock;

/// The kernels picked for this CPU.
pub(crate) struct Dispatch {
    /// The highest instruction set that supplied at least one kernel.
    pub(crate) isa: &'static str,
    kernels: [VecDotFn; GgmlType::ALL.len()],
    /// The kernels of [`crate::gemm`], where this CPU has them.
    pub(crate) gemm: Option<gemm::Kernels>,
    /// What [`crate::multiversion`]'s loops may use (x86_64 only: AArch64's baseline has NEON).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) width: Width,
}

impl Dispatch {
    pub(crate) fn kernel(&self, ty: GgmlType) -> VecDotFn {
        self.kernels[ty.index()]
    }

    fn scalar() -> Self {
        Dispatch {
            isa: "scalar",
            kernels: GgmlType::ALL.map(|ty| crate::scalar::kernel(ty) as VecDotFn),
            gemm: None,
            width: Width::Baseline,
        }
    }

    /// Replaces the kernels that `table` (an instruction set module's `kernel` function, where
    /// adding a kernel is one line) has; called in increasing order of instruction set, after the
    /// CPU was found to support it.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    fn overlay(&mut self, isa: &'static str, table: fn(GgmlType) -> Option<VecDotFn>) {
        for ty in GgmlType::ALL {
            if let Some(k) = table(ty) {
                self.kernels[ty.index()] = k;
                self.isa = isa;
            }
        }
    }
}

/// The dispatch table, built on first use.
pub(crate) fn get() -> &'static Dispatch {
    static DISPATCH: OnceLock<Dispatch> = OnceLock::new();
    DISPATCH.get_or_init(detect)
}

/// The most `LLAMAFILE_ISA` allows, in increasing order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cap {
    Scalar,
    /// AVX2 on x86_64, NEON on aarch64.
    Simd,
    Avx512,
}

fn cap_from_env() -> Cap {
    match std::env::var("LLAMAFILE_ISA") {
        Err(_) => Cap::Avx512,
        Ok(v) => match v.as_str() {
            "scalar" => Cap::Scalar,
            "avx2" | "neon" => Cap::Simd,
            "avx512" => Cap::Avx512,
            other => {
                // Detection runs once per process, so this is printed once; a typo must not
                // silently benchmark the wrong kernels.
                eprintln!("kernels: ignoring LLAMAFILE_ISA={other:?} (expected scalar, avx2, avx512 or neon)");
                Cap::Avx512
            }
        },
    }
}

/// The values of `LLAMAFILE_ISA` that give different kernels on this CPU, lowest first: the last
/// one is what runs uncapped.
pub(crate) fn caps() -> Vec<&'static str> {
    let mut caps = vec!["scalar"];
    #[cfg(target_arch = "x86_64")]
    {
        use crate::x86::{avx2, avx512};
        if avx2::available() {
            caps.push("avx2");
        }
        if avx512::available() {
            caps.push("avx512");
        }
    }
    #[cfg(target_arch = "aarch64")]
    caps.push("neon");
    caps
}

fn detect() -> Dispatch {
    let cap = cap_from_env();
    let mut d = Dispatch::scalar();
    #[cfg(target_arch = "x86_64")]
    {
        use crate::x86::{avx2, avx512};
        if cap >= Cap::Simd && avx2::available() {
            // The label says when the GEMM tile runs AVX-VNNI's `vpdpbusd` (the dot products
            // do not need it): a benchmark row must say what ran.
            let label = if avx2::vnni_available() {
                "avx2+avxvnni"
            } else {
                "avx2"
            };
            d.overlay(label, avx2::kernel);
            d.gemm = Some(avx2::gemm_kernels());
            d.width = Width::Avx2;
        }
        if cap >= Cap::Avx512 && avx512::available() {
            d.overlay("avx512vnni", avx512::kernel);
            d.gemm = Some(avx512::GEMM);
            d.width = Width::Avx512;
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        // NEON is part of AArch64; the module picks its `sdot` variants where the CPU has them.
        if cap >= Cap::Simd {
            d.overlay("neon", crate::aarch64::neon::kernel);
            d.gemm = Some(crate::aarch64::neon::gemm_kernels());
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = cap;
    d
}
