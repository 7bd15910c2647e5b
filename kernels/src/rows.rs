//! Attention's two products over the cache, in f32: a query against many keys (stored as
//! columns), and the softmax-weighted sum of many values (rows).
//!
//! Both keep their running sums in fixed-size arrays, which the compiler holds in vector registers
//! for the whole pass over the rows (a query's scores or an output chunk never round-trips through
//! memory per row), and both are [`multiversion`](crate::multiversion)ed. They multiply-add with
//! `mul_add` (one rounding, as ggml's FMA-built loops), an instruction wherever there are vectors
//! worth using (x86_64 with FMA, every AArch64); only a pre-AVX2 x86_64 pays a libm call.

crate::multiversion::multiversion! {
    /// Queries against keys stored as columns: `out[r * n + p] = Σ_i qs[r * dim + i] ·
    /// keys[i * stride + p]`, for the `qs.len() / dim` query rows and `n = out.len() / rows`
    /// keys. Eight rows and sixteen keys at a time: each loaded key vector serves eight rows.
    ///
    /// # Panics
    /// If the slices do not hold what the shapes say.
    pub fn dot_columns(qs: &[f32], dim: usize, keys: &[f32], stride: usize, out: &mut [f32]) = dot_columns_body;
}

#[inline(always)]
fn dot_columns_body(qs: &[f32], dim: usize, keys: &[f32], stride: usize, out: &mut [f32]) {
    let rows = qs.len() / dim;
    let n = out.len() / rows.max(1);
    assert!(
        rows * dim == qs.len() && rows * n == out.len() && n <= stride,
        "dot_columns: {rows} rows of {dim}, {n} keys, stride {stride}"
    );
    assert!(
        dim == 0 || keys.len() >= (dim - 1) * stride + n,
        "dot_columns: {dim} rows of {n} keys (stride {stride}) do not fit in {} values",
        keys.len()
    );
    let mut r0 = 0;
    while r0 < rows {
        if rows - r0 >= 8 {
            columns_block::<8>(&qs[r0 * dim..], dim, keys, stride, &mut out[r0 * n..], n);
            r0 += 8;
        } else {
            columns_block::<1>(&qs[r0 * dim..], dim, keys, stride, &mut out[r0 * n..], n);
            r0 += 1;
        }
    }
}

/// [`dot_columns`] for `R` rows.
#[inline(always)]
fn columns_block<const R: usize>(
    qs: &[f32],
    dim: usize,
    keys: &[f32],
    stride: usize,
    out: &mut [f32],
    n: usize,
) {
    // Rows cut to exactly `dim`, so that indexing them by `i < dim` needs no checks in the loop.
    let q: [&[f32]; R] = std::array::from_fn(|r| &qs[r * dim..][..dim]);
    let mut p0 = 0;
    while p0 < n {
        let width = (n - p0).min(16);
        // A short last block still loads 16 keys where the slice has room for them past `n`
        // (attention's key columns are padded so); only its first `width` sums are kept.
        if width < 16 && keys.len() < (dim - 1) * stride + p0 + 16 {
            break;
        }
        // (A match, not `unwrap_or_else`: a closure is compiled without the multiversioned
        // body's features, and its `mul_add` became a libm call.)
        let acc = match simd_columns::<R>(qs, dim, keys, stride, p0) {
            Some(acc) => acc,
            None => {
                let mut acc = [[0.0f32; 16]; R];
                for i in 0..dim {
                    let k: &[f32; 16] = keys[i * stride + p0..][..16].try_into().expect("16 keys");
                    for (acc, q) in acc.iter_mut().zip(&q) {
                        let q = q[i];
                        for l in 0..16 {
                            acc[l] = q.mul_add(k[l], acc[l]);
                        }
                    }
                }
                acc
            }
        };
        for (r, acc) in acc.iter().enumerate() {
            out[r * n + p0..][..width].copy_from_slice(&acc[..width]);
        }
        p0 += 16;
    }
    for (r, q) in q.iter().enumerate() {
        for p in p0..n {
            let mut s = 0.0f32;
            for (i, &q) in q.iter().enumerate() {
                s = q.mul_add(keys[i * stride + p], s);
            }
            out[r * n + p] = s;
        }
    }
}

/// Value elements per register-held chunk.
const CHUNK: usize = 32;

crate::multiversion::multiversion! {
    /// Weighted sums of value rows: `out[r * dim + e] = Σ_p weights[r * n + p] ·
    /// values[p * stride + e]`, for `n` values, `dim = out.len() / rows` and
    /// `rows = weights.len() / n`. Four rows and 32 elements at a time: each loaded value vector
    /// serves four rows.
    ///
    /// # Panics
    /// If the slices do not hold what the shapes say.
    pub fn weighted_sum_rows(weights: &[f32], n: usize, values: &[f32], stride: usize, out: &mut [f32]) = weighted_sum_body;
}

#[inline(always)]
fn weighted_sum_body(weights: &[f32], n: usize, values: &[f32], stride: usize, out: &mut [f32]) {
    let rows = weights.len() / n.max(1);
    let dim = out.len() / rows.max(1);
    assert!(
        rows * n == weights.len() && rows * dim == out.len() && dim <= stride,
        "weighted_sum_rows: {rows} rows of {n} weights, {dim} elements, stride {stride}"
    );
    assert!(
        n == 0 || values.len() >= (n - 1) * stride + dim,
        "weighted_sum_rows: {n} rows of stride {stride} do not fit in {} values",
        values.len()
    );
    let mut r0 = 0;
    while r0 < rows {
        if rows - r0 >= 4 {
            weighted_block::<4>(
                &weights[r0 * n..],
                n,
                values,
                stride,
                &mut out[r0 * dim..],
                dim,
            );
            r0 += 4;
        } else {
            weighted_block::<1>(
                &weights[r0 * n..],
                n,
                values,
                stride,
                &mut out[r0 * dim..],
                dim,
            );
            r0 += 1;
        }
    }
}

/// [`weighted_sum_rows`] for `R` rows.
#[inline(always)]
fn weighted_block<const R: usize>(
    weights: &[f32],
    n: usize,
    values: &[f32],
    stride: usize,
    out: &mut [f32],
    dim: usize,
) {
    // Rows cut to exactly `n`, so that indexing them by `p < n` needs no checks in the loop.
    let w: [&[f32]; R] = std::array::from_fn(|r| &weights[r * n..][..n]);
    let mut c0 = 0;
    while c0 + CHUNK <= dim {
        // (A match, not `unwrap_or_else`, as in `columns_block`.)
        let acc = match simd_weighted::<R>(weights, n, values, stride, c0) {
            Some(acc) => acc,
            None => {
                let mut acc = [[0.0f32; CHUNK]; R];
                for p in 0..n {
                    let v: &[f32; CHUNK] = values[p * stride + c0..][..CHUNK]
                        .try_into()
                        .expect("a whole chunk");
                    for (acc, w) in acc.iter_mut().zip(&w) {
                        let w = w[p];
                        for i in 0..CHUNK {
                            acc[i] = w.mul_add(v[i], acc[i]);
                        }
                    }
                }
                acc
            }
        };
        for (r, acc) in acc.iter().enumerate() {
            out[r * dim + c0..][..CHUNK].copy_from_slice(acc);
        }
        c0 += CHUNK;
    }
    for (r, w) in w.iter().enumerate() {
        for e in c0..dim {
            let mut s = 0.0f32;
            for (p, &w) in w.iter().enumerate() {
                s = w.mul_add(values[p * stride + e], s);
            }
            out[r * dim + e] = s;
        }
    }
}

/// The hand-written [`columns_block`] of this CPU for `R` rows (AVX-512 and AVX2, 8 rows), if
/// any: the same sums in the same order, kept in registers (the compiled generic block spilled
/// them).
#[inline(always)]
fn simd_columns<const R: usize>(
    qs: &[f32],
    dim: usize,
    keys: &[f32],
    stride: usize,
    p0: usize,
) -> Option<[[f32; 16]; R]> {
    #[cfg(target_arch = "x86_64")]
    if R == 8 {
        use crate::multiversion::Width;
        let block = match crate::dispatch::get().width {
            // SAFETY: the dispatch reports a width only where the CPU has its features.
            Width::Avx512 => unsafe { crate::x86::avx512::columns_8x16(qs, dim, keys, stride, p0) },
            // SAFETY: as above.
            Width::Avx2 => unsafe { crate::x86::avx2::columns_8x16(qs, dim, keys, stride, p0) },
            Width::Baseline => return None,
        };
        return Some(std::array::from_fn(|r| block[r]));
    }
    let _ = (qs, dim, keys, stride, p0);
    None
}

/// The hand-written [`weighted_block`] of this CPU for `R` rows (AVX-512 and AVX2, 4 rows), if
/// any, as [`simd_columns`].
#[inline(always)]
fn simd_weighted<const R: usize>(
    weights: &[f32],
    n: usize,
    values: &[f32],
    stride: usize,
    c0: usize,
) -> Option<[[f32; CHUNK]; R]> {
    #[cfg(target_arch = "x86_64")]
    if R == 4 {
        use crate::multiversion::Width;
        use crate::x86::{avx2, avx512};
        let block = match crate::dispatch::get().width {
            // SAFETY: as in `simd_columns`.
            Width::Avx512 => unsafe { avx512::weighted_4x32(weights, n, values, stride, c0) },
            // SAFETY: as above.
            Width::Avx2 => unsafe { avx2::weighted_4x32(weights, n, values, stride, c0) },
            Width::Baseline => return None,
        };
        return Some(std::array::from_fn(|r| block[r]));
    }
    let _ = (weights, n, values, stride, c0);
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32
                    / 16_777_216.0
                    - 0.5
            })
            .collect()
    }

    /// Every width computes what the plain loops compute, to rounding (the sums are grouped
    /// differently from a straight loop, identically across widths), for row counts that use
    /// the blocks and the single rows, and key/element counts with and without tails.
    #[test]
    fn columns_and_weighted_sums_match_plain_loops() {
        for (rows, dim, n, stride) in [
            (28, 64, 37, 48),
            (16, 256, 5, 16),
            (9, 80, 100, 112),
            (3, 7, 3, 3),
        ] {
            let qs = data(rows * dim, 1);
            let keys = data(dim * stride, 2);
            let mut got = vec![0.0; rows * n];
            dot_columns(&qs, dim, &keys, stride, &mut got);
            for r in 0..rows {
                for p in 0..n {
                    let want: f64 = (0..dim)
                        .map(|i| qs[r * dim + i] as f64 * keys[i * stride + p] as f64)
                        .sum();
                    let g = got[r * n + p] as f64;
                    assert!(
                        (g - want).abs() < 1e-4,
                        "dot_columns row {r} key {p}: {g} vs {want}"
                    );
                }
            }
            let w = data(rows * n, 3);
            let values = data(n * stride.max(dim), 4);
            let vstride = stride.max(dim);
            let mut out = vec![0.0; rows * dim];
            weighted_sum_rows(&w, n, &values, vstride, &mut out);
            for r in 0..rows {
                for e in 0..dim {
                    let want: f64 = (0..n)
                        .map(|p| w[r * n + p] as f64 * values[p * vstride + e] as f64)
                        .sum();
                    let o = out[r * dim + e] as f64;
                    assert!(
                        (o - want).abs() < 1e-4,
                        "weighted_sum_rows row {r} elem {e}: {o} vs {want}"
                    );
                }
            }
        }
    }
}
