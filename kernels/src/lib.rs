//! ggml's tensor element types and the arithmetic on them.
//!
//! Block layouts are stated once, in [`GgmlType`] (geometry, from the `ggml-types` crate) and the
//! `formats` module (fields), and used everywhere else. Dequantization is bit-exact with ggml's; activations are quantized and dot
//! products computed the way ggml's CPU backend does it (weights of type `ty` meet activations
//! converted to [`vec_dot_type`]`(ty)`), so results follow llama.cpp's closely.
//!
//! Slice-length and shape mismatches are caller bugs and panic with a message naming them; the
//! data itself is never trusted beyond its length (any bytes are a valid block).

#[cfg(target_endian = "big")]
compile_error!("ggml data is little-endian and this crate views f16 slices as its bytes");

#[cfg(target_arch = "aarch64")]
mod aarch64;
mod dequant;
mod dispatch;
pub mod elementwise;

mod formats;
mod gemm;
mod matmul;
#[macro_use]
mod multiversion;
mod quantize;
mod quantize_weights;
mod rows;
pub mod scalar;
mod vec_dot_fn;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use ggml_types::{GgmlType, QK_K};
pub use matmul::{is_tiled as matmul_is_tiled, matmul, QMatrix};
pub use rows::{dot_columns, weighted_sum_rows};

use half::f16;

/// Bytes of `n` elements of `ty`, checking that they are whole blocks.
pub(crate) fn row_bytes(ty: GgmlType, n: usize, what: &str) -> usize {
    let bs = ty.block_size();
    assert!(
        n.is_multiple_of(bs),
        "{what}: {n} elements are not whole {} blocks of {bs}",
        ty.name()
    );
    n / bs * ty.type_size()
}

/// Bytes of the activation row that the kernels for `ty` weights take for `n` elements: the row
/// in `vec_dot_type(ty)`, followed for Q8_0 by the per-block f32s of [`formats::Q8_0Act`].
pub(crate) fn act_row_bytes(ty: GgmlType, n: usize, what: &str) -> usize {
    let act_ty = vec_dot_type(ty);
    let bytes = row_bytes(act_ty, n, what);
    match act_ty {
        GgmlType::Q8_0 => bytes + n / 32 * formats::Q8_0Act::EXTRA,
        _ => bytes,
    }
}

/// Checks `vec_dot`'s arguments, cuts the weights to exactly one row and makes the activations
/// (one row in `vec_dot_type(ty)`) into the row the kernels take (see [`act_row_bytes`]).
pub(crate) fn check_dot_args<'a>(
    ty: GgmlType,
    n: usize,
    w: &'a [u8],
    act: &[u8],
) -> (&'a [u8], Vec<u8>) {
    let act_ty = vec_dot_type(ty);
    let wb = row_bytes(ty, n, "vec_dot weights");
    let ab = row_bytes(act_ty, n, "vec_dot activations");
    assert!(
        w.len() >= wb,
        "vec_dot: {n} {} weights need {wb} bytes, got {}",
        ty.name(),
        w.len()
    );
    assert!(
        act.len() >= ab,
        "vec_dot: {n} {} activations need {ab} bytes, got {}",
        act_ty.name(),
        act.len()
    );
    let mut row = act[..ab].to_vec();
    row.resize(act_row_bytes(ty, n, "vec_dot activations"), 0);
    quantize::complete_act_row(act_ty, n, &mut row);
    (&w[..wb], row)
}

/// Exact dequantization of `dst.len()` elements (a whole number of blocks) from ggml-layout bytes:
/// the bits ggml's `to_float` gives.
///
/// # Panics
/// If `dst.len()` is not a whole number of blocks or `src` is shorter than those blocks
/// (extra bytes after them are ignored).
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    let bytes = row_bytes(ty, dst.len(), "dequantize_row");
    assert!(
        src.len() >= bytes,
        "dequantize_row: {} {} elements need {bytes} bytes, got {}",
        dst.len(),
        ty.name(),
        src.len()
    );
    dequant::dequantize(ty, &src[..bytes], dst);
}

/// The activation type ggml quantizes the other operand to for a dot product with weights of type
/// `ty`: Q4_0, Q5_0, Q8_0 → Q8_0; Q4_1, Q5_1 → Q8_1; k-quants → Q8_K; float types → themselves.
/// The activation formats Q8_1 and Q8_K (which ggml never uses as weights) pair with themselves.
pub fn vec_dot_type(ty: GgmlType) -> GgmlType {
    use GgmlType::*;
    match ty {
        F32 => F32,
        F16 => F16,
        BF16 => BF16,
        Q4_0 | Q5_0 | Q8_0 => Q8_0,
        Q4_1 | Q5_1 | Q8_1 => Q8_1,
        Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | Q8_K => Q8_K,
    }
}

/// Converts f32 values to `ty` bit for bit as ggml does: every block format as its
/// `quantize_row_*_ref` (activations' Q8_0/Q8_1/Q8_K, and the weights' Q4_0 ... Q6_K as
/// `llama-quantize` writes them without an importance matrix), F16 and BF16 rounding to nearest
/// even, F32 copied.
///
/// # Panics
/// If `src.len()` is not a whole number of blocks, or `dst` is not exactly their size.
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) {
    let bytes = row_bytes(ty, src.len(), "quantize_row");
    assert_eq!(
        dst.len(),
        bytes,
        "quantize_row: {} {} elements take {bytes} bytes",
        src.len(),
        ty.name()
    );
    quantize::quantize(ty, src, dst);
}

/// Dot product of one weight row (type `ty`, `n` elements) with one activation row already in
/// `vec_dot_type(ty)`, by the best kernel this CPU has (see [`isa_name`]).
///
/// # Panics
/// If `n` is not a whole number of blocks, or `w` / `act` hold fewer than `n` elements (only the
/// first `n` are used).
pub fn vec_dot(ty: GgmlType, n: usize, w: &[u8], act: &[u8]) -> f32 {
    let (w, act) = check_dot_args(ty, n, w, act);
    let kernel = dispatch::get().kernel(ty);
    // SAFETY: dispatch only hands out kernels whose CPU features were detected, and the operands
    // are exactly one row each.
    unsafe { kernel(n, w, &act) }
}

/// Which instruction set the dot products use: "avx512vnni", "avx2" ("avx2+avxvnni" where the
/// GEMM tile also runs AVX-VNNI), "neon" or "scalar".
pub fn isa_name() -> &'static str {
    dispatch::get().isa
}

/// The values of `LLAMAFILE_ISA` that select different kernels on this CPU, lowest first (the last
/// is the default): what a test run must go through to check every variant the CPU can run.
pub fn isa_caps() -> Vec<&'static str> {
    dispatch::caps()
}

/// f32 → f16, rounding to nearest even (as ggml stores the KV cache).
///
/// # Panics
/// If the lengths differ.
pub fn f32_to_f16_row(src: &[f32], dst: &mut [f16]) {
    assert_eq!(src.len(), dst.len(), "f32_to_f16_row: lengths differ");
    quantize::f32_to_f16(src, dst);
}

/// f16 → f32 (exact).
///
/// # Panics
/// If the lengths differ.
pub fn f16_to_f32_row(src: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "f16_to_f32_row: lengths differ");
    quantize::f16_to_f32(src, dst);
}

/// `acc = f16(f16(acc · acc_scale) + v · v_scale)` element by element (with one fused
/// multiply-add): attention's running sum of values in the f16 accumulator of ggml's
/// single-token path, which calls ggml_vec_scale_f16 then ggml_vec_mad_f16 (the first rounding is
/// skipped when `acc_scale` is 1, as ggml skips the call). One pass instead of converting the
/// accumulator and the value row to f32 and back.
///
/// # Panics
/// If the lengths differ.
pub fn scale_add_f16(acc: &mut [f16], acc_scale: f32, v: &[f16], v_scale: f32) {
    assert_eq!(acc.len(), v.len(), "scale_add_f16: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if dispatch::get().width != multiversion::Width::Baseline {
        // SAFETY: the dispatch allows AVX2 widths only where the CPU has AVX2, FMA and F16C.
        return unsafe { x86::avx2::scale_add_f16(acc, acc_scale, v, v_scale) };
    }
    quantize::scale_add_f16(acc, acc_scale, v, v_scale);
}

/// One query head of ggml's single-token attention (its flash-attention vector path, used for
/// fewer than 64 queries) over `n` cached positions: key `p` is `keys[p * key_stride..]` (as
/// long as `q`), value `p` is `values[p * value_stride..]` (as long as `acc`). Scores are
/// [`dot_f16`] times `scale`; an online softmax keeps the f16 weighted sum of values in `acc`
/// ([`scale_add_f16`]'s two roundings), whose denominator is returned.
///
/// One call per head rather than per position: at a depth of thousands of positions the calls
/// and dispatch per position cost as much as the arithmetic.
///
/// # Panics
/// If `keys` or `values` do not hold `n` positions at their strides.
#[allow(clippy::too_many_arguments)]
pub fn attend_f16(
    q: &[f16],
    keys: &[f16],
    key_stride: usize,
    values: &[f16],
    value_stride: usize,
    n: usize,
    scale: f32,
    acc: &mut [f16],
) -> f32 {
    let fits = |len: usize, stride: usize, row: usize| n == 0 || len >= (n - 1) * stride + row;
    assert!(
        fits(keys.len(), key_stride, q.len()) && fits(values.len(), value_stride, acc.len()),
        "attend_f16: {n} positions of {} keys (stride {key_stride}) and {} values (stride \
         {value_stride}) do not fit in {} and {}",
        q.len(),
        acc.len(),
        keys.len(),
        values.len()
    );
    let head = AttentionHead {
        q,
        keys,
        key_stride,
        values,
        value_stride,
        n,
        scale,
    };
    #[cfg(target_arch = "x86_64")]
    if dispatch::get().width != multiversion::Width::Baseline {
        // SAFETY: the dispatch allows AVX2 widths only where the CPU has AVX2, FMA and F16C.
        return unsafe { x86::avx2::attend_f16(&head, acc) };
    }
    head.attend(acc, dot_f16, quantize::scale_add_f16)
}

/// One query head and its cached keys and values: [`attend_f16`]'s arguments, and its loop.
pub(crate) struct AttentionHead<'a> {
    q: &'a [f16],
    keys: &'a [f16],
    key_stride: usize,
    values: &'a [f16],
    value_stride: usize,
    n: usize,
    scale: f32,
}

impl AttentionHead<'_> {
    /// The online softmax, with the instruction set's dot product and accumulator step (inlined
    /// into the caller, so that a SIMD caller's closures get its features).
    #[inline(always)]
    pub(crate) fn attend(
        &self,
        acc: &mut [f16],
        dot: impl Fn(&[f16], &[f16]) -> f32,
        scale_add: impl Fn(&mut [f16], f32, &[f16], f32),
    ) -> f32 {
        let (dk, dv) = (self.q.len(), acc.len());
        acc.fill(f16::ZERO);
        let (mut max, mut sum) = (f32::NEG_INFINITY, 0.0f32);
        for p in 0..self.n {
            let key = &self.keys[p * self.key_stride..][..dk];
            let s = dot(key, self.q) * self.scale;
            let (ms, vs) = if s > max {
                let ms = (max - s).exp();
                max = s;
                (ms, 1.0)
            } else {
                (1.0, (s - max).exp())
            };
            scale_add(acc, ms, &self.values[p * self.value_stride..][..dv], vs);
            sum = sum * ms + vs;
        }
        sum
    }
}

/// Dot product of two f16 rows with f32 products, as ggml's ggml_vec_dot_f16 (attention's K·Q).
///
/// # Panics
/// If the lengths differ.
pub fn dot_f16(a: &[f16], b: &[f16]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f16: lengths differ");
    // Called once per (query, key) pair in attention, so straight to the kernel: any length is
    // whole F16 blocks and both byte views are exactly one row.
    let kernel = dispatch::get().kernel(GgmlType::F16);
    // SAFETY: as in `vec_dot`.
    unsafe { kernel(a.len(), f16_bytes(a), f16_bytes(b)) }
}

/// The bytes of an f16 slice, which on a little-endian machine are its ggml encoding.
fn f16_bytes(s: &[f16]) -> &[u8] {
    // SAFETY: f16 is a plain 2-byte value without padding; u8 has alignment 1 and the view covers
    // exactly the borrowed memory.
    unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), std::mem::size_of_val(s)) }
}
