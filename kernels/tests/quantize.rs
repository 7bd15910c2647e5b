//! Quantization of activations and of weights: known values (including ggml's two different
//! rounding rules), round-trip properties on random data, and bit-exactness with llama-quantize.

mod common;

use common::Rng;
use half::{bf16, f16};
use kernels::{dequantize_row, quantize_row, GgmlType, QK_K};

use GgmlType::*;

fn quantized(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; ty.row_size(x.len() as u64).unwrap() as usize];
    quantize_row(ty, x, &mut out);
    out
}

fn dequantized(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    dequantize_row(ty, bytes, &mut out);
    out
}

fn f16_at(b: &[u8], off: usize) -> f32 {
    f16::from_le_bytes([b[off], b[off + 1]]).to_f32()
}

#[test]
fn q8_0_known_block() {
    // -16 .. 15: amax 16, d = 16/127; quants are round(x * 127/16), halfway cases away from zero.
    let x: Vec<f32> = (0..32).map(|j| j as f32 - 16.0).collect();
    let q = quantized(Q8_0, &x);
    assert_eq!(q.len(), 34);
    assert_eq!(f16_at(&q, 0), f16::from_f32(16.0 / 127.0).to_f32());
    let qs: Vec<i8> = q[2..].iter().map(|&b| b as i8).collect();
    assert_eq!(&qs[..4], &[-127, -119, -111, -103]);
    assert_eq!(qs[16], 0);
    assert_eq!(qs[17], 8); // 7.9375
    assert_eq!(qs[31], 119); // 119.0625
}

#[test]
fn q8_0_and_q8_1_round_halfway_away_from_zero() {
    // amax 127 makes d = 1 and the quants the inputs themselves: 2.5 -> 3, -0.5 -> -1 (roundf).
    let mut x = vec![0f32; 32];
    x[0] = 127.0;
    x[1] = 2.5;
    x[2] = -0.5;
    x[3] = 1.5;
    for ty in [Q8_0, Q8_1] {
        let q = quantized(ty, &x);
        let qs = &q[ty.type_size() - 32..];
        assert_eq!(
            [qs[0] as i8, qs[1] as i8, qs[2] as i8, qs[3] as i8],
            [127, 3, -1, 2],
            "{}",
            ty.name()
        );
    }
    // Q8_1's s is d times the sum of the quants: 127 + 3 - 1 + 2.
    let q = quantized(Q8_1, &x);
    assert_eq!(f16_at(&q, 2), 131.0);
}

#[test]
fn q8_k_rounds_halfway_to_even_with_the_sign_of_the_largest() {
    // The largest magnitude is positive, so iscale = -127/127 = -1 and d = -1: 2.5 -> -2 (ties to
    // even, ggml's nearest_int), -0.5 -> 0, 1.5 -> -2.
    let mut x = vec![0f32; QK_K];
    x[0] = 127.0;
    x[1] = 2.5;
    x[2] = -0.5;
    x[3] = 1.5;
    x[17] = -3.0;
    let q = quantized(Q8_K, &x);
    assert_eq!(q.len(), 292);
    assert_eq!(f32::from_le_bytes([q[0], q[1], q[2], q[3]]), -1.0);
    let qs: Vec<i8> = q[4..4 + QK_K].iter().map(|&b| b as i8).collect();
    assert_eq!(&qs[..4], &[-127, -2, 0, -2]);
    assert_eq!(qs[17], 3);
    let bsums: Vec<i16> = q[4 + QK_K..]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    assert_eq!(bsums[0], -131);
    assert_eq!(bsums[1], 3);
    assert!(bsums[2..].iter().all(|&s| s == 0));
}

#[test]
fn zero_blocks_quantize_to_zero() {
    for ty in [Q8_0, Q8_1, Q8_K] {
        let q = quantized(ty, &vec![0f32; QK_K]);
        assert!(q.iter().all(|&b| b == 0), "{}", ty.name());
    }
}

#[test]
fn q8_round_trips_within_half_a_step() {
    let mut rng = Rng::new(10);
    for ty in [Q8_0, Q8_1, Q8_K] {
        for _ in 0..50 {
            let x = rng.activations(4 * QK_K);
            let q = quantized(ty, &x);
            let y = dequantized(ty, &q, x.len());
            let bs = ty.block_size();
            for (b, (xb, yb)) in x.chunks(bs).zip(y.chunks(bs)).enumerate() {
                let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
                // Half a quantization step, plus (Q8_0/Q8_1) the f16 rounding of d over 127 steps.
                let step = amax / 127.0;
                let slack = if ty == Q8_K {
                    1e-6 * amax
                } else {
                    127.0 * step * 2f32.powi(-11)
                };
                for (i, (&a, &b2)) in xb.iter().zip(yb).enumerate() {
                    assert!(
                        (a - b2).abs() <= step / 2.0 + slack,
                        "{} block {b} element {i}: {a} came back as {b2} (step {step})",
                        ty.name()
                    );
                }
            }
        }
    }
}

#[test]
fn q8_sums_describe_the_quants() {
    let mut rng = Rng::new(11);
    let x = rng.activations(8 * QK_K);
    let q = quantized(Q8_1, &x);
    for (b, xb) in q.chunks_exact(Q8_1.type_size()).zip(x.chunks(32)) {
        let d = {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            amax / 127.0
        };
        let sum: i32 = b[4..].iter().map(|&v| v as i8 as i32).sum();
        assert_eq!(f16_at(b, 2), f16::from_f32(sum as f32 * d).to_f32());
        assert_eq!(f16_at(b, 0), f16::from_f32(d).to_f32());
    }
    let q = quantized(Q8_K, &x);
    for b in q.chunks_exact(Q8_K.type_size()) {
        let qs = &b[4..4 + QK_K];
        for (j, s) in b[4 + QK_K..].chunks_exact(2).enumerate() {
            let want: i32 = qs[16 * j..16 * j + 16]
                .iter()
                .map(|&v| v as i8 as i32)
                .sum();
            assert_eq!(i16::from_le_bytes([s[0], s[1]]) as i32, want);
        }
    }
}

#[test]
fn float_conversions_round_to_nearest_even() {
    let mut rng = Rng::new(12);
    let mut x = rng.activations(1000);
    // Ties: halfway between two f16 values around 1 (1 + 2^-11) and two bf16 values (1 + 2^-8).
    x.extend([
        1.0 + 2f32.powi(-11),
        1.0 + 3.0 * 2f32.powi(-11),
        1.0 + 2f32.powi(-8),
        65520.0,
        -1e-8,
    ]);
    let h = quantized(F16, &x);
    let b = quantized(BF16, &x);
    for (i, &v) in x.iter().enumerate() {
        assert_eq!(
            u16::from_le_bytes([h[2 * i], h[2 * i + 1]]),
            f16::from_f32(v).to_bits(),
            "f16 of {v}"
        );
        assert_eq!(
            u16::from_le_bytes([b[2 * i], b[2 * i + 1]]),
            bf16::from_f32(v).to_bits(),
            "bf16 of {v}"
        );
    }
    let n = x.len();
    let tie = |bytes: &[u8], k: usize| {
        u16::from_le_bytes([bytes[2 * (n - 5 + k)], bytes[2 * (n - 5 + k) + 1]])
    };
    assert_eq!(tie(&h, 0), 0x3c00); // down to even 1.0
    assert_eq!(tie(&h, 1), 0x3c02); // up to even
    assert_eq!(tie(&b, 2), 0x3f80);
    assert_eq!(tie(&h, 3), 0x7c00); // 65520 overflows to infinity
                                    // And the f16 row helpers agree with the byte form.
    let mut row = vec![f16::ZERO; n];
    kernels::f32_to_f16_row(&x, &mut row);
    assert!(row
        .iter()
        .enumerate()
        .all(|(i, v)| v.to_bits() == u16::from_le_bytes([h[2 * i], h[2 * i + 1]])));
    let mut back = vec![0f32; n];
    kernels::f16_to_f32_row(&row, &mut back);
    assert!(back
        .iter()
        .zip(&row)
        .all(|(a, v)| a.to_bits() == v.to_f32().to_bits()));
}

#[test]
fn f32_is_copied() {
    let x = [1.5f32, -0.0, f32::MIN_POSITIVE, 3e38];
    let q = quantized(F32, &x);
    assert_eq!(
        dequantized(F32, &q, 4)
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>(),
        x.map(f32::to_bits)
    );
}

/// Attention's f16 accumulator step against `half`'s conversions (F16C's rounding): every
/// element rounded to f16 after the rescale and again after the fused multiply-add, on random
/// rows (with subnormal, overflowing and halfway results among them) at lengths with and without
/// a vector remainder.
#[test]
fn scale_add_f16_rounds_twice_as_ggml() {
    let mut rng = Rng::new(0xf16);
    for n in [1, 7, 64, 128, 131] {
        for (acc_scale, v_scale) in [
            (1.0f32, 0.37f32),
            (0.25, 1.0),
            (0.0, 1.0),
            (2.0, 0.5),
            (1.0, 1e-6),
        ] {
            let acc: Vec<f16> = (0..n)
                .map(|i| match i % 5 {
                    0 => f16::from_f32(rng.f32() * 60000.0),
                    1 => f16::from_bits(1 + (rng.next_u64() % 1023) as u16),
                    _ => f16::from_f32(rng.f32() * 8.0),
                })
                .collect();
            let v: Vec<f16> = (0..n).map(|_| f16::from_f32(rng.f32() * 4.0)).collect();
            let want: Vec<u16> = acc
                .iter()
                .zip(&v)
                .map(|(&a, &v)| {
                    let a = if acc_scale != 1.0 {
                        f16::from_f32(a.to_f32() * acc_scale)
                    } else {
                        a
                    };
                    f16::from_f32(v.to_f32().mul_add(v_scale, a.to_f32())).to_bits()
                })
                .collect();
            let mut got = acc.clone();
            kernels::scale_add_f16(&mut got, acc_scale, &v, v_scale);
            let got: Vec<u16> = got.iter().map(|x| x.to_bits()).collect();
            assert_eq!(got, want, "n {n}, scales {acc_scale} {v_scale}");
        }
    }
}

/// One head's single-token attention against the softmax-weighted sum of values in f64, from
/// the same f16 keys, values and query: within the f16 accumulator's rounding (a few units in
/// its last place per position, relative to the largest value), for heads of 64 and 128 with
/// strides between positions, and scores spread wide enough that the running maximum changes.
#[test]
fn attend_f16_is_the_softmax_weighted_sum_of_values() {
    let mut rng = Rng::new(0xa77e);
    for (dk, dv, n) in [(64, 64, 1), (64, 64, 300), (128, 128, 77), (40, 24, 9)] {
        let (ks, vs) = (dk + 8, dv + 16);
        let half_row = |rng: &mut Rng, len: usize, amp: f32| -> Vec<f16> {
            (0..len).map(|_| f16::from_f32(rng.f32() * amp)).collect()
        };
        let q = half_row(&mut rng, dk, 2.0);
        let keys = half_row(&mut rng, n * ks, 2.0);
        let values = half_row(&mut rng, n * vs, 1.0);
        let scale = 1.0 / (dk as f32).sqrt();
        let mut acc = vec![f16::from_f32(9.0); dv];
        let sum = kernels::attend_f16(&q, &keys, ks, &values, vs, n, scale, &mut acc);
        let scores: Vec<f64> = (0..n)
            .map(|p| {
                let dot: f64 = (0..dk)
                    .map(|i| keys[p * ks + i].to_f64() * q[i].to_f64())
                    .sum();
                dot * scale as f64
            })
            .collect();
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let total: f64 = weights.iter().sum();
        assert!(
            ((sum as f64) - total).abs() <= 1e-4 * total,
            "dk {dk} n {n}: denominator {sum} vs {total}"
        );
        for e in 0..dv {
            let want: f64 = (0..n)
                .map(|p| weights[p] * values[p * vs + e].to_f64())
                .sum::<f64>()
                / total;
            let got = acc[e].to_f64() / sum as f64;
            // Each step rounds the accumulator to f16 (2^-11 relative): a random walk over the
            // positions, on the size of the sum.
            let size: f64 = (0..n)
                .map(|p| weights[p] * values[p * vs + e].to_f64().abs())
                .sum::<f64>()
                / total;
            assert!(
                (got - want).abs() <= 4.0 / 2048.0 * (1.0 + n as f64).sqrt() * size + 1e-6,
                "dk {dk} n {n} element {e}: {got} vs {want}"
            );
        }
    }
}

/// The weight formats, as llama-quantize writes them.
const WEIGHT_TYPES: [GgmlType; 10] = [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K];

#[test]
fn weight_formats_round_trip_within_their_precision() {
    // RMS error of quantize → dequantize relative to the data's RMS, on Gaussian-like weights
    // (sums of uniforms): about 1.5 times what ggml's reference quantizers reach. A wrong scale,
    // a swapped nibble or a misplaced high bit lands far above.
    let bounds = [
        (Q8_0, 0.008),
        (Q6_K, 0.026),
        (Q5_0, 0.06),
        (Q5_1, 0.055),
        (Q5_K, 0.053),
        (Q4_0, 0.12),
        (Q4_1, 0.11),
        (Q4_K, 0.1),
        (Q3_K, 0.22),
        (Q2_K, 0.43),
    ];
    let mut rng = Rng::new(77);
    let x: Vec<f32> = (0..64 * QK_K)
        .map(|_| (0..4).map(|_| rng.f32()).sum::<f32>() * 0.02)
        .collect();
    let rms = |v: &mut dyn Iterator<Item = f32>| {
        let (s, n) = v.fold((0f64, 0usize), |(s, n), e| (s + (e as f64).powi(2), n + 1));
        (s / n as f64).sqrt()
    };
    let scale = rms(&mut x.iter().copied());
    for (ty, bound) in bounds {
        let back = dequantized(ty, &quantized(ty, &x), x.len());
        let err = rms(&mut x.iter().zip(&back).map(|(a, b)| a - b)) / scale;
        eprintln!("{}: relative RMS error {err:.4}", ty.name());
        assert!(
            err < bound,
            "{}: relative RMS error {err} ≥ {bound}",
            ty.name()
        );
    }
}

#[test]
fn weight_formats_keep_zeros_and_constants() {
    for ty in WEIGHT_TYPES {
        let zeros = dequantized(ty, &quantized(ty, &vec![0f32; QK_K]), QK_K);
        assert!(zeros.iter().all(|&v| v == 0.0), "{}: zeros", ty.name());
        // A block of one value: every format represents it to within its scale's f16 rounding.
        for c in [0.5f32, -3.0] {
            let back = dequantized(ty, &quantized(ty, &vec![c; QK_K]), QK_K);
            for v in back {
                assert!(
                    (v - c).abs() <= c.abs() * 0.01,
                    "{}: {c} came back as {v}",
                    ty.name()
                );
            }
        }
    }
}

/// Bit-exactness with llama.cpp, tensor by tensor: the llama-synth files (whose sha256 are those
/// of llama.cpp's own files, checked by `cargo xtask fetch-models` and the packer's tests) hold
/// every matrix in one type, quantized by `llama-quantize --pure` from the F32 file.
#[test]
fn weight_formats_match_llama_quantize_on_llama_synth() {
    let f32_path = common::synth_model(F32);
    for ty in WEIGHT_TYPES.into_iter().chain([F16, BF16]) {
        let path = common::synth_model(ty);
        for name in [
            "token_embd.weight",
            "blk.0.attn_k.weight",
            "blk.3.ffn_down.weight",
        ] {
            let (info, _) = common::read_rows(&f32_path, name, 0);
            let rows = info.dims[1..].iter().product::<u64>() as usize;
            let (_, src) = common::read_rows(&f32_path, name, rows);
            let x: Vec<f32> = src
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let (qinfo, want) = common::read_rows(&path, name, rows);
            assert_eq!(qinfo.ty, ty, "{}: {name}", path.display());
            let got = quantized(ty, &x);
            if let Some(at) = got.iter().zip(&want).position(|(a, b)| a != b) {
                panic!(
                    "{} {name}: byte {at} of {} differs from llama-quantize's (block {})",
                    ty.name(),
                    want.len(),
                    at / ty.type_size()
                );
            }
            assert_eq!(got.len(), want.len(), "{} {name}", ty.name());
        }
    }
}
