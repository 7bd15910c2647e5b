//! Plain Rust loops compiled once per instruction set.
//!
//! The crate is built for baseline x86_64 (SSE2), so the compiler vectorizes ordinary loops 4
//! lanes wide. For loops that are not worth hand-written intrinsics (activation quantization,
//! `y += a·x`), [`multiversion!`] compiles the same body again inside `#[target_feature]`
//! wrappers, where the compiler may use AVX2 or AVX-512 registers, and calls the widest one the
//! dispatch allows. Rust never contracts `a * b + c` into an FMA, and a body fixes its own order
//! of additions, so every version computes bit-identical results. AArch64 needs none of this:
//! NEON is part of its baseline.

/// The widest vector registers the dispatch allows for multiversioned loops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Width {
    Baseline,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx2,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx512,
}

/// `$vis fn $name(args) -> ret = $body;` defines `$name`, which runs `$body` (an
/// `#[inline(always)]` function with the same signature) compiled for the widest [`Width`].
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? = $body:path;) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                use $crate::multiversion::Width;
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma,f16c")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                match $crate::dispatch::get().width {
                    // SAFETY: the dispatch reports a width only where the CPU has its features.
                    Width::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    Width::Avx2 => return unsafe { avx2($($arg),*) },
                    Width::Baseline => {}
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use multiversion;
