//! Attention's two products over cached rows, in f32: a query against many keys, and the
//! softmax-weighted sum of many values.
//!
//! Both keep their running sums in fixed-size arrays, which the compiler holds in vector registers
//! for the whole pass over the rows (a query's scores or an output chunk never round-trips through
//! memory per row), and both are [`multiversion`](crate::multiversion)ed.

/// Elements per register-held chunk: four AVX-512 registers, eight AVX2 ones.
const CHUNK: usize = 64;

crate::multiversion::multiversion! {
    /// `out[p] = q · row p`, where row `p` is `keys[p * stride ..][.. q.len()]`, for `p` in
    /// `0..out.len()`.
    ///
    /// # Panics
    /// If `keys` is too short for `out.len()` rows.
    pub fn dot_rows(q: &[f32], keys: &[f32], stride: usize, out: &mut [f32]) = dot_rows_body;
}

#[inline(always)]
fn dot_rows_body(q: &[f32], keys: &[f32], stride: usize, out: &mut [f32]) {
    let n = q.len();
    if !out.is_empty() {
        assert!(
            keys.len() >= (out.len() - 1) * stride + n,
            "dot_rows: {} rows of stride {stride} do not fit in {} keys",
            out.len(),
            keys.len()
        );
    }
    for (p, o) in out.iter_mut().enumerate() {
        let row = &keys[p * stride..p * stride + n];
        let mut acc = [0.0f32; 16];
        let (qc, rc) = (q.chunks_exact(16), row.chunks_exact(16));
        let tail: f32 = qc
            .remainder()
            .iter()
            .zip(rc.remainder())
            .map(|(a, b)| a * b)
            .sum();
        for (a, b) in qc.zip(rc) {
            for i in 0..16 {
                acc[i] += a[i] * b[i];
            }
        }
        *o = acc.iter().sum::<f32>() + tail;
    }
}

crate::multiversion::multiversion! {
    /// `out = Σ_p weights[p] · row p`, where row `p` is `values[p * stride ..][.. out.len()]`.
    ///
    /// # Panics
    /// If `values` is too short for `weights.len()` rows.
    pub fn weighted_sum_rows(weights: &[f32], values: &[f32], stride: usize, out: &mut [f32]) = weighted_sum_body;
}

#[inline(always)]
fn weighted_sum_body(weights: &[f32], values: &[f32], stride: usize, out: &mut [f32]) {
    let n = out.len();
    if !weights.is_empty() {
        assert!(
            values.len() >= (weights.len() - 1) * stride + n,
            "weighted_sum_rows: {} rows of stride {stride} do not fit in {} values",
            weights.len(),
            values.len()
        );
    }
    let mut c0 = 0;
    while c0 < n {
        let len = CHUNK.min(n - c0);
        let mut acc = [0.0f32; CHUNK];
        if len == CHUNK {
            for (p, &w) in weights.iter().enumerate() {
                let row: &[f32; CHUNK] = values[p * stride + c0..p * stride + c0 + CHUNK]
                    .try_into()
                    .expect("a whole chunk");
                for i in 0..CHUNK {
                    acc[i] += w * row[i];
                }
            }
        } else {
            for (p, &w) in weights.iter().enumerate() {
                let row = &values[p * stride + c0..p * stride + c0 + len];
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += w * v;
                }
            }
        }
        out[c0..c0 + len].copy_from_slice(&acc[..len]);
        c0 += len;
    }
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
    /// differently from a straight loop, identically across widths).
    #[test]
    fn rows_match_plain_loops() {
        for (n, stride, rows) in [(64, 128, 37), (256, 256, 5), (80, 96, 9), (7, 7, 3)] {
            let q = data(n, 1);
            let keys = data(rows * stride, 2);
            let mut got = vec![0.0; rows];
            dot_rows(&q, &keys, stride, &mut got);
            for (p, g) in got.iter().enumerate() {
                let want: f64 = (0..n)
                    .map(|i| q[i] as f64 * keys[p * stride + i] as f64)
                    .sum();
                assert!(
                    (*g as f64 - want).abs() < 1e-4,
                    "dot_rows n={n} row {p}: {g} vs {want}"
                );
            }
            let w = data(rows, 3);
            let mut out = vec![0.0; n];
            weighted_sum_rows(&w, &keys, stride, &mut out);
            for (i, o) in out.iter().enumerate() {
                let want: f64 = (0..rows)
                    .map(|p| w[p] as f64 * keys[p * stride + i] as f64)
                    .sum();
                assert!(
                    (*o as f64 - want).abs() < 1e-4,
                    "weighted_sum_rows n={n} elem {i}: {o} vs {want}"
                );
            }
        }
    }
}
