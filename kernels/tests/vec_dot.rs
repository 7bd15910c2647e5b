//! Dot products: the scalar reference against an f64 dot of the dequantized operands, for every
//! weight type on random blocks and on real rows; the dispatched kernels against the reference.

mod common;

use common::{random_row, Rng};
use kernels::{dequantize_row, quantize_row, scalar, vec_dot, vec_dot_type, GgmlType};

use GgmlType::*;

const WEIGHT_TYPES: [GgmlType; 15] = [
    F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K,
];

/// Lengths that give one block, a few, and an odd count (SIMD kernels unroll by 2 or 4 blocks).
fn lengths(ty: GgmlType) -> Vec<usize> {
    match ty.block_size() {
        1 => vec![1, 7, 16, 31, 33, 64, 100, 257, 4864],
        bs => [1, 2, 3, 5, 8, 19].iter().map(|k| k * bs).collect(),
    }
}

/// The exact dot of the operands' values, and how far a correct f32 implementation may be from it.
fn reference(ty: GgmlType, n: usize, w: &[u8], act: &[u8]) -> (f64, f64) {
    let mut wf = vec![0f32; n];
    let mut af = vec![0f32; n];
    dequantize_row(ty, w, &mut wf);
    dequantize_row(vec_dot_type(ty), act, &mut af);
    let exact: f64 = wf.iter().zip(&af).map(|(&x, &y)| x as f64 * y as f64).sum();
    let magnitude: f64 = wf
        .iter()
        .zip(&af)
        .map(|(&x, &y)| (x as f64 * y as f64).abs())
        .sum();
    let blocks = (n / ty.block_size()) as f64;
    let mut tol = 8.0 * (blocks.min(64.0) + 8.0) * f32::EPSILON as f64 * magnitude;
    if matches!(ty, Q4_1 | Q5_1) {
        // These use the activation block's `s = d * Σq`, stored as f16 from the unrounded d:
        // the min term m * s carries two f16 roundings that the dequantized values do not.
        let f16_at =
            |b: &[u8], off: usize| half::f16::from_le_bytes([b[off], b[off + 1]]).to_f32() as f64;
        let wb = w.chunks_exact(ty.type_size());
        let ab = act.chunks_exact(vec_dot_type(ty).type_size());
        tol += wb
            .zip(ab)
            .map(|(x, y)| (f16_at(x, 2) * f16_at(y, 2)).abs() * 2f64.powi(-10))
            .sum::<f64>();
    }
    (exact, tol + 1e-30)
}

fn random_act(rng: &mut Rng, ty: GgmlType, n: usize) -> Vec<u8> {
    let act_ty = vec_dot_type(ty);
    let mut act = vec![0u8; act_ty.row_size(n as u64).unwrap() as usize];
    quantize_row(act_ty, &rng.activations(n), &mut act);
    act
}

#[test]
fn scalar_reference_matches_exact_dot_on_random_rows() {
    let mut rng = Rng::new(1);
    for ty in WEIGHT_TYPES {
        for n in lengths(ty) {
            for _ in 0..20 {
                let w = random_row(&mut rng, ty, n);
                let act = random_act(&mut rng, ty, n);
                let got = scalar::vec_dot(ty, n, &w, &act) as f64;
                let (exact, tol) = reference(ty, n, &w, &act);
                assert!(
                    (got - exact).abs() <= tol,
                    "{} n={n}: scalar {got:e}, exact {exact:e}, tolerance {tol:e}",
                    ty.name()
                );
            }
        }
    }
}

#[test]
fn scalar_reference_matches_exact_dot_on_model_rows() {
    let mut rng = Rng::new(2);
    for ty in [
        F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
    ] {
        for name in ["blk.0.attn_q.weight", "blk.0.ffn_down.weight"] {
            let (info, rows) = common::read_rows(&common::synth_model(ty), name, 4);
            assert_eq!(info.ty, ty);
            let n = info.dims[0] as usize;
            let rb = rows.len() / 4;
            for w in rows.chunks_exact(rb) {
                let act = random_act(&mut rng, ty, n);
                let got = scalar::vec_dot(ty, n, w, &act) as f64;
                let (exact, tol) = reference(ty, n, w, &act);
                assert!(
                    (got - exact).abs() <= tol,
                    "{} {name}: scalar {got:e}, exact {exact:e}",
                    ty.name()
                );
            }
        }
    }
}

/// The reference is not just close to the exact value but computes ggml's formula: for Q4_0 that
/// is `Σ_blocks (sumi * d_w) * d_a` in f32, here checked bit for bit on hand-made blocks.
#[test]
fn scalar_q4_0_follows_ggml_float_order() {
    // Two blocks of bytes 0x39: low nibbles 9 (elements 0..16, value +1), high nibbles 3
    // (elements 16..32, value -5); activations all 1.0 (q = 127).
    let mut w = Vec::new();
    for d in [0.37f32, -1.9] {
        w.extend_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
        w.extend(std::iter::repeat_n(0x39u8, 16));
    }
    let mut act = vec![0u8; Q8_0.row_size(64).unwrap() as usize];
    quantize_row(Q8_0, &[1.0; 64], &mut act);
    let da = half::f16::from_f32(1.0 / 127.0).to_f32();
    // Per block: 16 elements of +1 and 16 of -5, each times 127.
    let sumi = (16 - 5 * 16) * 127;
    let mut expect = 0f32;
    for d in [0.37f32, -1.9] {
        expect += sumi as f32 * half::f16::from_f32(d).to_f32() * da;
    }
    assert_eq!(
        scalar::vec_dot(Q4_0, 64, &w, &act).to_bits(),
        expect.to_bits()
    );
}

#[test]
fn dispatched_kernels_match_scalar_reference() {
    let mut rng = Rng::new(3);
    for ty in WEIGHT_TYPES {
        for n in lengths(ty) {
            for _ in 0..10 {
                let w = random_row(&mut rng, ty, n);
                let act = random_act(&mut rng, ty, n);
                let fast = vec_dot(ty, n, &w, &act) as f64;
                let slow = scalar::vec_dot(ty, n, &w, &act) as f64;
                let (_, tol) = reference(ty, n, &w, &act);
                assert!(
                    (fast - slow).abs() <= tol,
                    "{} n={n} on {}: {fast:e} vs scalar {slow:e} (tolerance {tol:e})",
                    ty.name(),
                    kernels::isa_name()
                );
            }
        }
    }
}

#[test]
fn dot_f16_is_the_f16_vec_dot() {
    let mut rng = Rng::new(4);
    for n in lengths(F16) {
        let a: Vec<half::f16> = rng
            .activations(n)
            .iter()
            .map(|&v| half::f16::from_f32(v))
            .collect();
        let b: Vec<half::f16> = rng
            .activations(n)
            .iter()
            .map(|&v| half::f16::from_f32(v))
            .collect();
        let exact: f64 = a.iter().zip(&b).map(|(x, y)| x.to_f64() * y.to_f64()).sum();
        let magnitude: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x.to_f64() * y.to_f64()).abs())
            .sum();
        let got = kernels::dot_f16(&a, &b) as f64;
        assert!(
            (got - exact).abs() <= 64.0 * f32::EPSILON as f64 * magnitude + 1e-30,
            "n={n}: {got} vs {exact}"
        );
    }
}

#[test]
#[should_panic(expected = "not whole Q4_K blocks")]
fn partial_blocks_are_refused() {
    vec_dot(Q4_K, 100, &[0; 1000], &[0; 1000]);
}

#[test]
#[should_panic(expected = "activations need 292 bytes")]
fn short_activations_are_refused() {
    vec_dot(Q4_K, 256, &[0; 144], &[0; 291]);
}

/// The dispatcher must pick the best kernels the CPU has, capped by `LLAMAFILE_ISA` (which
/// `cargo xtask test` sets to check the lower instruction sets too), and list the caps it can run.
#[test]
fn dispatch_picks_the_best_kernels_the_cap_allows() {
    let cap = std::env::var("LLAMAFILE_ISA").ok();
    let cap = cap.as_deref();
    eprintln!("LLAMAFILE_ISA={cap:?}: kernels {}", kernels::isa_name());
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        let avx512 = avx2
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni");
        let avx2_name = if is_x86_feature_detected!("avxvnni") {
            "avx2+avxvnni"
        } else {
            "avx2"
        };
        let want = match cap {
            Some("scalar") => "scalar",
            _ if !avx2 => "scalar",
            Some("avx2" | "neon") => avx2_name,
            _ if avx512 => "avx512vnni",
            _ => avx2_name,
        };
        assert_eq!(kernels::isa_name(), want);
        let caps: Vec<&str> = [("scalar", true), ("avx2", avx2), ("avx512", avx512)]
            .iter()
            .filter(|c| c.1)
            .map(|c| c.0)
            .collect();
        assert_eq!(kernels::isa_caps(), caps);
    }
    #[cfg(target_arch = "aarch64")]
    {
        let want = if cap == Some("scalar") {
            "scalar"
        } else {
            "neon"
        };
        assert_eq!(kernels::isa_name(), want);
        assert_eq!(kernels::isa_caps(), ["scalar", "neon"]);
    }
}
