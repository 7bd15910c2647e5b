//! The signature of every dot-product kernel, scalar or SIMD: what the dispatch table holds and the
//! instruction-set modules supply (a module of its own, so that neither imports the other for it).

/// A dot-product kernel: `n` weights of one type against `n` activations of its `vec_dot_type`,
/// each slice exactly one row long. `unsafe` because a SIMD kernel may only run on a CPU with the
/// features it was compiled for.
pub(crate) type VecDotFn = unsafe fn(usize, &[u8], &[u8]) -> f32;
