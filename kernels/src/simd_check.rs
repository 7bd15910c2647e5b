//! Checks of one instruction set's kernels against [`crate::scalar`], shared by the architectures'
//! test modules (each includes this file as its own submodule).
//!
//! Three checks per kernel:
//! - integer exactness: weights of random bits with integer scales against small-integer
//!   activations, where every partial sum is an integer below 2^24, so that any f32 summation
//!   order gives the exact value; one wrong bit of one quant shows;
//! - random rows of several lengths with random scales, against the scalar reference within a
//!   tolerance for the f32 summation order;
//! - rows of the test models (llama-synth for every type, Qwen and Gemma for theirs).

use crate::formats::f16_to_le;
use crate::vec_dot_fn::VecDotFn;
use crate::{dequantize_row, quantize_row, scalar, vec_dot_type};
use ggml_types::GgmlType;
use std::path::PathBuf;

use GgmlType::*;

/// xorshift64*: deterministic test data.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u64) as usize]
    }

    fn fill(&mut self, bytes: &mut [u8]) {
        for b in bytes {
            *b = self.next() as u8;
        }
    }

    /// Activation-like values: mostly small, some outliers, some exact zeros.
    fn activations(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| match self.below(64) {
                0 => 0.0,
                1 => self.unit() * 40.0,
                _ => self.unit() * 2.0,
            })
            .collect()
    }

    /// A small integer quant, now and then a full-range one (never -128: see `quantize_row`).
    fn small_quant(&mut self) -> i8 {
        if self.below(24) == 0 {
            (self.below(255) as i32 - 127) as i8
        } else {
            self.below(5) as i8 - 2
        }
    }
}

/// Byte offsets in a block of the f16 fields that multiply the quants, and of those that are
/// added per block (the mins), for the weight formats.
fn f16_fields(ty: GgmlType) -> (&'static [usize], &'static [usize]) {
    match ty {
        Q4_0 | Q5_0 | Q8_0 => (&[0], &[]),
        Q4_1 | Q5_1 | Q4_K | Q5_K => (&[0], &[2]),
        Q2_K => (&[80], &[82]),
        Q3_K => (&[108], &[]),
        Q6_K => (&[208], &[]),
        _ => (&[], &[]),
    }
}

/// Runs `k` on one row; the caller has checked that the CPU has its features.
fn run(k: VecDotFn, ty: GgmlType, n: usize, w: &[u8], act: &[u8]) -> f32 {
    let (w, act) = crate::check_dot_args(ty, n, w, act);
    // SAFETY: the test calling this checked the kernel's CPU features; the rows are whole.
    unsafe { k(n, w, &act) }
}

fn dequant(ty: GgmlType, n: usize, bytes: &[u8]) -> Vec<f64> {
    let mut out = vec![0f32; n];
    dequantize_row(ty, bytes, &mut out);
    out.into_iter().map(f64::from).collect()
}

/// A copy of weight row `w` with the f16 fields at `offsets` set to zero in every block.
fn zero_fields(ty: GgmlType, w: &[u8], offsets: &[usize]) -> Vec<u8> {
    let mut w = w.to_vec();
    for block in w.chunks_exact_mut(ty.type_size()) {
        for &o in offsets {
            block[o..o + 2].fill(0);
        }
    }
    w
}

/// The exact dot product (f64, from the dequantized operands) and Σ|term| over its terms, which
/// bounds every partial sum in any order and sizes the f32 rounding.
fn exact_and_magnitude(ty: GgmlType, n: usize, w: &[u8], act: &[u8]) -> (f64, f64) {
    let a = dequant(vec_dot_type(ty), n, act);
    let (scales, mins) = f16_fields(ty);
    let dot = |w: &[f64]| -> (f64, f64) {
        let exact = w.iter().zip(&a).map(|(x, y)| x * y).sum();
        let mag = w.iter().zip(&a).map(|(x, y)| (x * y).abs()).sum();
        (exact, mag)
    };
    if mins.is_empty() {
        return dot(&dequant(ty, n, w));
    }
    // The multiplied part and the min part separately: their terms do not cancel in the kernels.
    let (e1, m1) = dot(&dequant(ty, n, &zero_fields(ty, w, mins)));
    if matches!(ty, Q4_1 | Q5_1) {
        // The min term is m * s with s the activation block's stored d * Σq, not Σ of its values.
        let half = |b: &[u8], o: usize| f64::from(crate::formats::f16_le([b[o], b[o + 1]]));
        let wb = w.chunks_exact(ty.type_size());
        let ab = act.chunks_exact(vec_dot_type(ty).type_size());
        let terms: Vec<f64> = wb.zip(ab).map(|(x, y)| half(x, 2) * half(y, 2)).collect();
        let e2: f64 = terms.iter().sum();
        let m2: f64 = terms.iter().map(|t| t.abs()).sum();
        return (e1 + e2, m1 + m2);
    }
    let (e2, m2) = dot(&dequant(ty, n, &zero_fields(ty, w, scales)));
    (e1 + e2, m1 + m2)
}

/// Weights of random bits whose f16 scales are small integers (exact products), or small integer
/// floats for the float types.
fn integer_weights(rng: &mut Rng, ty: GgmlType, n: usize) -> Vec<u8> {
    let bytes = ty.row_size(n as u64).expect("whole blocks") as usize;
    let mut w = vec![0u8; bytes];
    let small = |rng: &mut Rng| (rng.below(17) as i32 - 8) as f32;
    match ty {
        F32 => {
            for e in w.chunks_exact_mut(4) {
                e.copy_from_slice(&small(rng).to_le_bytes());
            }
        }
        F16 => {
            for e in w.chunks_exact_mut(2) {
                e.copy_from_slice(&f16_to_le(small(rng)));
            }
        }
        BF16 => {
            for e in w.chunks_exact_mut(2) {
                // Small integers are exact in bfloat16: the high half of their f32.
                e.copy_from_slice(&small(rng).to_bits().to_le_bytes()[2..]);
            }
        }
        _ => {
            rng.fill(&mut w);
            let (scales, mins) = f16_fields(ty);
            for block in w.chunks_exact_mut(ty.type_size()) {
                for &o in scales.iter().chain(mins) {
                    let v = rng.pick(&[1.0f32, -1.0, 2.0, -2.0]);
                    block[o..o + 2].copy_from_slice(&f16_to_le(v));
                }
            }
        }
    }
    w
}

/// Activations in `vec_dot_type(ty)` that are small integers with integer scales.
fn integer_activations(rng: &mut Rng, ty: GgmlType, n: usize) -> Vec<u8> {
    let act_ty = vec_dot_type(ty);
    let bytes = act_ty.row_size(n as u64).expect("whole blocks") as usize;
    let mut act = vec![0u8; bytes];
    match act_ty {
        F32 | F16 | BF16 => return integer_weights(rng, ty, n),
        Q8_0 | Q8_1 => {
            for b in act.chunks_exact_mut(act_ty.type_size()) {
                b[..2].copy_from_slice(&f16_to_le(rng.pick(&[1.0, 2.0])));
                let start = if act_ty == Q8_1 { 4 } else { 2 };
                let mut sum = 0i32;
                for q in &mut b[start..] {
                    let v = rng.small_quant();
                    sum += v as i32;
                    *q = v as u8;
                }
                if act_ty == Q8_1 {
                    // Any integer does for s; near d * Σq like a real one.
                    b[2..4].copy_from_slice(&f16_to_le(sum as f32));
                }
            }
        }
        Q8_K => {
            for b in act.chunks_exact_mut(act_ty.type_size()) {
                b[..4].copy_from_slice(&rng.pick(&[1.0f32, 2.0]).to_le_bytes());
                let qs: Vec<i8> = (0..256).map(|_| rng.small_quant()).collect();
                for (q, &v) in b[4..260].iter_mut().zip(&qs) {
                    *q = v as u8;
                }
                for (j, group) in qs.chunks_exact(16).enumerate() {
                    let s: i16 = group.iter().map(|&v| v as i16).sum();
                    b[260 + 2 * j..262 + 2 * j].copy_from_slice(&s.to_le_bytes());
                }
            }
        }
        _ => unreachable!("{} is not an activation type", act_ty.name()),
    }
    act
}

/// Weights of random bits with random scales (either sign), or random floats.
fn random_weights(rng: &mut Rng, ty: GgmlType, n: usize) -> Vec<u8> {
    let bytes = ty.row_size(n as u64).expect("whole blocks") as usize;
    let (scales, mins) = f16_fields(ty);
    if scales.is_empty() {
        let mut w = vec![0u8; bytes];
        quantize_row(ty, &rng.activations(n), &mut w);
        return w;
    }
    let mut w = vec![0u8; bytes];
    rng.fill(&mut w);
    for block in w.chunks_exact_mut(ty.type_size()) {
        for &o in scales.iter().chain(mins) {
            let mag = (rng.unit().abs() + 0.01) * 2f32.powi(-(rng.below(9) as i32) - 4);
            let v = if rng.below(4) == 0 { -mag } else { mag };
            block[o..o + 2].copy_from_slice(&f16_to_le(v));
        }
    }
    w
}

fn random_activations(rng: &mut Rng, ty: GgmlType, n: usize) -> Vec<u8> {
    let act_ty = vec_dot_type(ty);
    let mut act = vec![0u8; act_ty.row_size(n as u64).expect("whole blocks") as usize];
    quantize_row(act_ty, &rng.activations(n), &mut act);
    act
}

/// How far from the scalar reference an f32 evaluation of a sum of `terms` terms in another
/// order may land.
fn tolerance(terms: usize, magnitude: f64) -> f64 {
    (terms as f64 + 16.0) * 4.0 * f32::EPSILON as f64 * magnitude + 1e-30
}

/// Number of f32 terms a row of `n` elements is summed from: one per block (floats: per 32).
fn float_terms(ty: GgmlType, n: usize) -> usize {
    n / ty.block_size().max(32)
}

fn lengths(ty: GgmlType, long: bool) -> Vec<usize> {
    match (ty.block_size(), long) {
        (1, false) => vec![1, 7, 8, 9, 31, 32, 33, 63, 64, 65, 100, 257],
        (1, true) => vec![896, 4096, 4099, 4864],
        (bs, false) => [1, 2, 3, 4, 5, 6].iter().map(|k| k * bs).collect(),
        (bs, true) => [7, 8, 9]
            .iter()
            .map(|k| k * bs)
            .chain([4096, 4864])
            .collect(),
    }
}

fn check_exact(isa: &str, ty: GgmlType, k: VecDotFn, rng: &mut Rng) {
    let (mut ran, mut skipped) = (0, 0);
    for n in lengths(ty, false) {
        for _ in 0..40 {
            let w = integer_weights(rng, ty, n);
            let act = integer_activations(rng, ty, n);
            let (exact, magnitude) = exact_and_magnitude(ty, n, &w, &act);
            if magnitude >= (1 << 24) as f64 {
                skipped += 1;
                continue;
            }
            ran += 1;
            let want = scalar::vec_dot(ty, n, &w, &act);
            assert_eq!(
                want as f64,
                exact,
                "{} n={n}: the scalar reference",
                ty.name()
            );
            let got = run(k, ty, n, &w, &act);
            assert_eq!(
                got as f64,
                exact,
                "{isa} {} n={n}: not the exact integer result",
                ty.name()
            );
        }
    }
    assert!(
        ran > 3 * skipped,
        "{} integer check: {skipped} samples too large, {ran} run",
        ty.name()
    );
}

fn check_random(isa: &str, ty: GgmlType, k: VecDotFn, rng: &mut Rng) {
    for long in [false, true] {
        for n in lengths(ty, long) {
            for _ in 0..if long { 4 } else { 20 } {
                let w = random_weights(rng, ty, n);
                let act = random_activations(rng, ty, n);
                let (_, magnitude) = exact_and_magnitude(ty, n, &w, &act);
                let want = scalar::vec_dot(ty, n, &w, &act) as f64;
                let got = run(k, ty, n, &w, &act) as f64;
                let tol = tolerance(float_terms(ty, n), magnitude);
                assert!(
                    (got - want).abs() <= tol,
                    "{isa} {} n={n}: {got:e}, scalar {want:e}, tolerance {tol:e}",
                    ty.name()
                );
            }
        }
    }
}

/// Checks every kernel that `kernel` supplies: exact integer sums, then random rows.
pub(super) fn check_isa(isa: &str, kernel: fn(GgmlType) -> Option<VecDotFn>) {
    let mut rng = Rng::new(0x5eed);
    let mut covered = Vec::new();
    for ty in GgmlType::ALL {
        if let Some(k) = kernel(ty) {
            check_exact(isa, ty, k, &mut rng);
            check_random(isa, ty, k, &mut rng);
            covered.push(ty.name());
        }
    }
    eprintln!("{isa}: checked {}", covered.join(" "));
    assert!(!covered.is_empty(), "{isa} supplies no kernel");
}

/// The first `rows` rows of every matrix of each listed type in one model file, checked.
fn check_model(
    isa: &str,
    kernel: fn(GgmlType) -> Option<VecDotFn>,
    path: &std::path::Path,
    rows: usize,
    rng: &mut Rng,
) -> usize {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // SAFETY: a read-only map of a test fixture that nothing modifies while the test runs.
    let map = unsafe { memmap2::Mmap::map(&file) }.expect("mmap");
    let model = gguf::Gguf::parse(&map).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut checked = 0;
    for t in &model.tensors {
        let ty = GgmlType::from_id(t.ty as u32).expect("the gguf crate's types are ours");
        let Some(k) = kernel(ty) else { continue };
        if t.dims.len() != 2 {
            continue;
        }
        let n = t.dims[0] as usize;
        let row = ty.row_size(n as u64).expect("whole blocks") as usize;
        for w in t.data.chunks_exact(row).take(rows) {
            let act = random_activations(rng, ty, n);
            let (_, magnitude) = exact_and_magnitude(ty, n, w, &act);
            let want = scalar::vec_dot(ty, n, w, &act) as f64;
            let got = run(k, ty, n, w, &act) as f64;
            let tol = tolerance(float_terms(ty, n), magnitude);
            assert!(
                (got - want).abs() <= tol,
                "{isa} {} {} ({}): {got:e}, scalar {want:e}, tolerance {tol:e}",
                path.display(),
                t.name,
                ty.name()
            );
            checked += 1;
        }
    }
    checked
}

/// Checks every kernel on the first rows of the matrices of the llama-synth models (one per type)
/// and of the real test models.
pub(super) fn check_isa_on_models(isa: &str, kernel: fn(GgmlType) -> Option<VecDotFn>) {
    let mut rng = Rng::new(0xcafe);
    for ty in GgmlType::ALL {
        // ggml never stores Q8_1 or Q8_K weights: there is no model of them.
        if kernel(ty).is_none() || matches!(ty, Q8_1 | Q8_K) {
            continue;
        }
        let path = testmodels::llama_synth(ty.name());
        let checked = check_model(isa, kernel, &path, 2, &mut rng);
        assert!(checked > 0, "{}: no {} rows", path.display(), ty.name());
    }
    for name in ["qwen.gguf", "gemma.gguf"] {
        let checked = check_model(isa, kernel, &testmodels::model(name), 2, &mut rng);
        eprintln!("{isa}: {checked} rows of {name}");
    }
}

/// The f64 product of `ty` weights with f32 activations `x`, and the most that quantizing `x` per
/// 32-block to 8 bits (error at most d/2 per element, d = amax/127) and f32 arithmetic can move
/// an f32 result away from it.
fn exact_with_q8_bound(ty: GgmlType, n: usize, w: &[u8], x: &[f32]) -> (f64, f64) {
    let wd = dequant(ty, n, w);
    let exact = wd.iter().zip(x).map(|(a, &b)| a * b as f64).sum();
    let mut bound = 0.0;
    for (wb, xb) in wd.chunks(32).zip(x.chunks(32)) {
        let amax = xb.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
        let mag: f64 = wb.iter().zip(xb).map(|(a, &b)| (a * b as f64).abs()).sum();
        let wabs: f64 = wb.iter().map(|a| a.abs()).sum();
        bound += wabs * amax / 127.0 * 0.5 * 1.001 + mag * 64.0 * f32::EPSILON as f64;
    }
    (exact, bound + 1e-30)
}

/// Checks a [`crate::gemm`] tile kernel: against the scalar tile on random rows (integer sums
/// exact, so only the f32 order differs), then the whole tiled matmul on random and model rows
/// against the f64 product within the bound of its 8-bit activations.
pub(super) fn check_tile(isa: &str, kernels: crate::gemm::Kernels) {
    let tile = kernels.tile;
    use crate::gemm::{self, ActGroup, WGroup, RM, RN};
    let mut rng = Rng::new(0x711e);
    for ty in [Q8_0, Q4_0, Q5_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K] {
        let shape = gemm::shape(ty).expect("a gemm type");
        let bs = ty.block_size().max(32);
        for n in [bs, 3 * bs, 17 * 32 * bs / 32, 28 * 32, 20 * 32]
            .into_iter()
            .filter(|n| n % ty.block_size() == 0)
        {
            let groups = gemm::groups(n);
            let mut w: Vec<WGroup> = vec![gemm::ZERO_W; RM * groups];
            let mut a: Vec<ActGroup> = vec![gemm::ZERO_ACT; RN * groups];
            let ws: Vec<Vec<u8>> = (0..RM).map(|_| random_weights(&mut rng, ty, n)).collect();
            let xs: Vec<Vec<f32>> = (0..RN).map(|_| rng.activations(n)).collect();
            for (r, wr) in ws.iter().enumerate() {
                let dst = &mut w[r * groups..(r + 1) * groups];
                gemm::unpack_row(ty, wr, dst);
                // The SIMD unpacking, where there is one, writes the very same groups (over
                // garbage, which it must replace entirely).
                let mut simd = vec![
                    gemm::WGroup {
                        min: [f32::NAN; 16],
                        ..gemm::ZERO_W
                    };
                    groups
                ];
                simd.iter_mut().for_each(|g| g.u = [[0xa5; 64]; 8]);
                // SAFETY: the caller checked the kernels' CPU features.
                if kernels
                    .unpack
                    .is_some_and(|f| unsafe { f(ty, wr, &mut simd) })
                {
                    for (g, (a, b)) in dst.iter().zip(&simd).enumerate() {
                        let bits = |x: &[f32; 16]| x.map(f32::to_bits);
                        assert!(
                            a.u == b.u
                                && bits(&a.scale_lo) == bits(&b.scale_lo)
                                && bits(&a.scale_hi) == bits(&b.scale_hi)
                                && bits(&a.min) == bits(&b.min),
                            "{isa} unpack {} n={n}: group {g} differs from the scalar unpacking",
                            ty.name()
                        );
                    }
                }
            }
            // Besides the random tokens, one of exact halfway quants (127 sets d = 1) and an
            // all-zero block.
            let halfway: Vec<f32> = (0..n)
                .map(|i| match (i / 32) % 3 {
                    0 if i % 32 == 0 => 127.0,
                    0 => (i % 32) as f32 * 0.5 - 8.0,
                    1 => 0.0,
                    _ => (i % 7) as f32 - 3.0,
                })
                .collect();
            for (t, xt) in xs.iter().chain([&halfway]).enumerate() {
                let mut scalar = vec![gemm::ZERO_ACT; groups];
                gemm::pack_activations(shape, xt, &mut scalar);
                // The SIMD packing writes the very same groups, over garbage.
                let mut simd = vec![
                    ActGroup {
                        d: [f32::NAN; 16],
                        bias_hi: [7; 16],
                        ..gemm::ZERO_ACT
                    };
                    groups
                ];
                simd.iter_mut().for_each(|g| g.qs = [[0x5a; 64]; 8]);
                // SAFETY: the caller checked the kernels' CPU features.
                unsafe { (kernels.pack)(shape, xt, &mut simd) };
                for (g, (a, b)) in scalar.iter().zip(&simd).enumerate() {
                    let bits = |x: &[f32; 16]| x.map(f32::to_bits);
                    assert!(
                        a.qs == b.qs
                            && bits(&a.d) == bits(&b.d)
                            && bits(&a.dsum) == bits(&b.dsum)
                            && a.bias_lo == b.bias_lo
                            && a.bias_hi == b.bias_hi,
                        "{isa} pack {} n={n} token {t}: group {g} differs from the scalar packing",
                        ty.name()
                    );
                }
                if t < RN {
                    a[t * groups..(t + 1) * groups].copy_from_slice(&scalar);
                }
            }
            let (mut want, mut got) = ([0f32; RM * RN], [0f32; RM * RN]);
            let half = matches!((n / 32) % 16, 1..=8);
            gemm::tile_scalar(shape, &w, &a, groups, groups, half, &mut want);
            // SAFETY: the caller checked the tile's CPU features; the slices hold RM and RN rows.
            unsafe { tile(shape, &w, &a, groups, groups, half, &mut got) };
            for i in 0..RM {
                let wd = dequant(ty, n, &ws[i]);
                for j in 0..RN {
                    let magnitude: f64 = wd
                        .iter()
                        .zip(&xs[j])
                        .map(|(a, &b)| (a * b as f64).abs())
                        .sum();
                    // Two scales and a min per block, 16 lanes: a few f32 terms per 32 elements.
                    let tol = tolerance(3 * n / 32, 1.01 * magnitude);
                    let (g, s) = (got[j * RM + i] as f64, want[j * RM + i] as f64);
                    assert!(
                        (g - s).abs() <= tol,
                        "{isa} tile {} n={n} ({i},{j}): {g:e}, scalar {s:e}, tolerance {tol:e}",
                        ty.name()
                    );
                }
            }
        }
        check_tile_extremes(isa, tile, ty);
        // The whole matmul (padding, panels, threads) on random rows.
        // 80 blocks: five groups, more than one group chunk; 88: a half last group.
        for n in [2560, 2816] {
            let rows = 37;
            let w: Vec<u8> = (0..rows)
                .flat_map(|_| random_weights(&mut rng, ty, n))
                .collect();
            check_matmul(
                &format!("{isa}, random rows"),
                kernels,
                ty,
                &w,
                rows,
                n,
                &mut rng,
            );
        }
    }
}

/// The largest integer sums a tile can meet: every quant of every block at its largest
/// magnitude (`u` at 0 and at its top, so both signs of Q8_0's weights), against activations at
/// ±127, in patterns where products add up rather than cancel: a tile that keeps partial sums in
/// 16 bits must not saturate.
fn check_tile_extremes(isa: &str, tile: crate::gemm::TileFn, ty: GgmlType) {
    use crate::gemm::{self, ActGroup, WGroup, RM, RN, STEPS};
    let shape = gemm::shape(ty).expect("a gemm type");
    let top = ((1u32 << shape.bits) - 1) as u8;
    let groups = 2;
    let w: Vec<WGroup> = (0..RM * groups)
        .map(|k| WGroup {
            // Rows 0 and 2 at the top, 1 and 3 at zero (the most negative weight once the offset
            // is taken).
            u: [[if (k / groups) % 2 == 0 { top } else { 0 }; 64]; STEPS],
            scale_lo: [1.0; 16],
            scale_hi: [0.5; 16],
            min: [if shape.min { 0.25 } else { 0.0 }; 16],
        })
        .collect();
    let act: Vec<ActGroup> = (0..RN * groups)
        .map(|k| {
            // Tokens all +127, all -127, and alternating in sign by element.
            let q = |e: usize| match k / groups {
                0 => 127i8,
                1 => -127,
                _ if e.is_multiple_of(2) => 127,
                _ => -127,
            };
            let mut a = ActGroup {
                qs: std::array::from_fn(|_| std::array::from_fn(q)),
                d: [1.0; 16],
                ..gemm::ZERO_ACT
            };
            for l in 0..16 {
                let sum = |steps: std::ops::Range<usize>| -> i32 {
                    steps
                        .map(|s| (0..4).map(|b| a.qs[s][4 * l + b] as i32).sum::<i32>())
                        .sum()
                };
                let (lo, hi) = (sum(0..STEPS / 2), sum(STEPS / 2..STEPS));
                a.dsum[l] = (lo + hi) as f32;
                if shape.split {
                    (a.bias_lo[l], a.bias_hi[l]) = (-shape.offset * lo, -shape.offset * hi);
                } else {
                    a.bias_lo[l] = -shape.offset * (lo + hi);
                }
            }
            a
        })
        .collect();
    let (mut want, mut got) = ([0f32; RM * RN], [0f32; RM * RN]);
    gemm::tile_scalar(shape, &w, &act, groups, groups, false, &mut want);
    // SAFETY: the caller checked the tile's CPU features; the slices hold RM and RN rows.
    unsafe { tile(shape, &w, &act, groups, groups, false, &mut got) };
    for (k, (g, s)) in got.iter().zip(&want).enumerate() {
        // Sums of a few hundred exact integers times powers of two: f32 holds them exactly.
        assert_eq!(
            g,
            s,
            "{isa} tile {} at extreme quants, row {} token {}",
            ty.name(),
            k % RM,
            k / RM
        );
    }
}

/// `gemm::matmul` through `kernels` on `rows × n` weights and 7 random tokens, against f64.
/// `label` names the kernels and the rows in failure messages.
fn check_matmul(
    label: &str,
    kernels: crate::gemm::Kernels,
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    n: usize,
    rng: &mut Rng,
) {
    let m = crate::QMatrix {
        ty,
        data: w,
        rows,
        cols: n,
    };
    let tokens = 7;
    let x: Vec<f32> = (0..tokens).flat_map(|_| rng.activations(n)).collect();
    let mut y = vec![0f32; tokens * rows];
    crate::gemm::matmul(&m, &x, tokens, &mut y, kernels);
    let row = ty.row_size(n as u64).expect("whole blocks") as usize;
    for t in 0..tokens {
        for r in 0..rows {
            let (exact, bound) =
                exact_with_q8_bound(ty, n, &w[r * row..(r + 1) * row], &x[t * n..(t + 1) * n]);
            let got = y[t * rows + r] as f64;
            assert!(
                (got - exact).abs() <= bound,
                "{label}: gemm {} row {r} token {t}: {got:e}, exact {exact:e}, bound {bound:e}",
                ty.name()
            );
        }
    }
}

/// [`check_matmul`] on the first rows of every gemm-typed matrix of the synth and real models.
pub(super) fn check_tile_on_models(isa: &str, kernels: crate::gemm::Kernels) {
    let mut rng = Rng::new(0x90de1);
    let mut paths: Vec<PathBuf> = [
        "Q8_0", "Q4_0", "Q5_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
    ]
    .iter()
    .map(|t| testmodels::llama_synth(t))
    .collect();
    paths.push(testmodels::model("qwen.gguf"));
    paths.push(testmodels::model("gemma.gguf"));
    for path in paths {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // SAFETY: a read-only map of a test fixture that nothing modifies while the test runs.
        let map = unsafe { memmap2::Mmap::map(&file) }.expect("mmap");
        let model = gguf::Gguf::parse(&map).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut checked = 0;
        for t in model.tensors.iter().filter(|t| t.dims.len() == 2) {
            let ty = GgmlType::from_id(t.ty as u32).expect("the gguf crate's types are ours");
            if crate::gemm::shape(ty).is_none() || !t.name.starts_with("blk.") {
                continue;
            }
            let n = t.dims[0] as usize;
            let row = ty.row_size(n as u64).expect("whole blocks") as usize;
            let rows = 5;
            check_matmul(
                &format!("{isa}, {}", t.name),
                kernels,
                ty,
                &t.data[..rows * row],
                rows,
                n,
                &mut rng,
            );
            checked += 1;
        }
        assert!(checked > 0, "{}: no gemm-typed matrices", path.display());
    }
}
