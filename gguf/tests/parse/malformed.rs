//! Malformed files: each must give an error naming the problem, never a panic, and hostile
//! counts must never size an allocation.

use gguf::Gguf;

use crate::largest_allocation;
use crate::writer::{bytes, ggml, put_str, small_valid, ty, Builder, T, W};

/// No parse of these small inputs needs more than this in one allocation.
const ALLOCATION_BOUND: usize = 64 * 1024;

/// Parses `file`, expecting an error whose Display contains every one of `needles`; also checks
/// that no single allocation was large.
#[track_caller]
fn rejects(file: &[u8], needles: &[&str]) -> String {
    let (result, largest) = largest_allocation(|| Gguf::parse(file));
    let e = match result {
        Ok(g) => panic!("accepted: {g:?}"),
        Err(e) => e.to_string(),
    };
    for n in needles {
        assert!(e.contains(n), "error {e:?} does not mention {n:?}");
    }
    assert!(e.starts_with("GGUF: at byte offset "), "{e}");
    assert!(!e.contains('\n'), "{e}");
    assert!(
        largest <= ALLOCATION_BOUND,
        "{e}: allocated {largest} bytes at once"
    );
    e
}

/// A header followed by `body`.
fn raw(version: u32, n_tensors: u64, n_kv: u64, body: &[u8]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(version.to_le_bytes());
    out.extend(n_tensors.to_le_bytes());
    out.extend(n_kv.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// The encoding of one metadata entry whose value payload is `payload`.
fn kv(key: &str, type_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_str(&mut out, key.as_bytes());
    out.extend(type_id.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The encoding of one tensor info.
fn tensor_info(name: &[u8], dims: &[u64], type_id: u32, offset: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put_str(&mut out, name);
    out.extend((dims.len() as u32).to_le_bytes());
    for d in dims {
        out.extend(d.to_le_bytes());
    }
    out.extend(type_id.to_le_bytes());
    out.extend(offset.to_le_bytes());
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn every_truncation_is_an_error() {
    for version in [2, 3] {
        let file = small_valid(version).build();
        assert!(Gguf::parse(&file).is_ok());
        for n in 0..file.len() {
            let (result, largest) = largest_allocation(|| Gguf::parse(&file[..n]));
            assert!(
                result.is_err(),
                "v{version} truncated to {n} of {} bytes was accepted",
                file.len()
            );
            assert!(largest <= ALLOCATION_BOUND);
        }
    }
    let (file, layout) = small_valid(3).build_with_layout();
    let norm_offset_at = layout.tensor_info_at[2] + 8 + "norm".len() + 4 + 8 + 4;
    let e = rejects(&file[..file.len() - 1], &[]);
    assert_eq!(
        e,
        format!(
            "GGUF: at byte offset {norm_offset_at}, tensor \"norm\": 12 bytes of data at offset 256 in the data \
             section (which starts at {}) run past the end of the file ({} bytes)",
            layout.data_offset,
            file.len() - 1
        )
    );
    rejects(
        &file[..layout.tensor_info_at[2] + 3],
        &[
            "tensor #2",
            "truncated: tensor name needs 8 bytes but only 3 remain",
        ],
    );
}

#[test]
fn bad_magic_and_versions() {
    let mut file = small_valid(3).build();
    file[0] = b'g';
    rejects(&file, &["at byte offset 0, header: bad magic \"gGUF\""]);
    rejects(b"GGU", &["header", "truncated"]);
    rejects(b"", &["header", "truncated"]);
    for (version, needle) in [
        (0, "unsupported version 0"),
        (1, "version 1 is not supported"),
        (4, "unsupported version 4"),
        (0x0300_0000, "big-endian"),
    ] {
        let mut file = small_valid(3).build();
        file[4..8].copy_from_slice(&u32::to_le_bytes(version));
        rejects(&file, &["at byte offset 4, header", needle]);
    }
}

#[test]
fn huge_counts_and_lengths_do_not_allocate() {
    let near = [u64::MAX, u64::MAX - 7, 1 << 63, 1 << 61, 1 << 40];
    for n in near {
        rejects(&raw(3, n, 0, &[0; 64]), &["tensor infos cannot fit"]);
        rejects(&raw(3, 0, n, &[0; 64]), &["metadata entries cannot fit"]);
        // key length
        let mut body = n.to_le_bytes().to_vec();
        body.extend([0; 64]);
        rejects(&raw(3, 0, 1, &body), &["key #0", "truncated"]);
        // string value length
        rejects(
            &raw(3, 0, 1, &kv("k", ty::STRING, &n.to_le_bytes())),
            &["key \"k\"", "truncated"],
        );
        // array counts, for fixed-size, string and array elements
        for elem in [ty::U8, ty::U64, ty::STRING, ty::ARRAY] {
            let payload = cat(&[&elem.to_le_bytes(), &n.to_le_bytes(), &[0; 40]]);
            rejects(
                &raw(3, 0, 1, &kv("arr", ty::ARRAY, &payload)),
                &["key \"arr\"", "truncated: array of"],
            );
        }
        // the count of an array nested in an array
        let payload = cat(&[
            &ty::ARRAY.to_le_bytes(),
            &1u64.to_le_bytes(),
            &ty::U16.to_le_bytes(),
            &n.to_le_bytes(),
        ]);
        rejects(
            &raw(3, 0, 1, &kv("nest", ty::ARRAY, &payload)),
            &["key \"nest\"", "truncated: array of"],
        );
        // tensor name length
        let body = cat(&[&n.to_le_bytes(), &[0; 64]]);
        rejects(&raw(3, 1, 0, &body), &["tensor #0", "truncated"]);
    }
    // n_dims near 2^32
    let mut body = Vec::new();
    put_str(&mut body, b"t");
    body.extend(u32::MAX.to_le_bytes());
    body.extend([0; 64]);
    rejects(
        &raw(3, 1, 0, &body),
        &["tensor \"t\"", "4294967295 dimensions, at most 4"],
    );
}

#[test]
fn dimension_and_size_overflow() {
    let cases: &[(&[u64], u32, &str)] = &[
        (&[1 << 32, 1 << 32], ggml::F32, "too many elements"),
        (&[u64::MAX], ggml::F32, "too many elements"),
        (&[0, u64::MAX, u64::MAX], ggml::F32, "too many elements"),
        (&[1 << 62, 2], ggml::F32, "too many elements"),
        (&[1 << 62], ggml::F32, "too many bytes"),
        (&[1 << 61, 3], ggml::F32, "too many bytes"),
        (&[1 << 40], ggml::F32, "run past the end"),
    ];
    for (dims, type_id, needle) in cases {
        let file = raw(
            3,
            1,
            0,
            &cat(&[&tensor_info(b"t", dims, *type_id, 0), &[0; 64]]),
        );
        rejects(&file, &["tensor \"t\"", needle]);
    }
    let five = tensor_info(b"t", &[1, 1, 1, 1, 1], ggml::F32, 0);
    rejects(
        &raw(3, 1, 0, &cat(&[&five, &[0; 64]])),
        &["5 dimensions, at most 4"],
    );
}

#[test]
fn unknown_and_partial_block_types() {
    let b = Builder::new(3).tensor(T::new("blk.0.attn_q.weight", &[32, 2], 99, vec![0; 64]));
    let (file, layout) = b.build_with_layout();
    let type_at = layout.tensor_info_at[0] + 8 + "blk.0.attn_q.weight".len() + 4 + 2 * 8;
    let e = rejects(&file, &[]);
    assert_eq!(e, format!("GGUF: at byte offset {type_at}, tensor \"blk.0.attn_q.weight\": unknown tensor type 99"));
    // Ids ggml retired (Q4_2 = 4) or this runtime does not implement are as unknown.
    rejects(
        &Builder::new(3)
            .tensor(T::new("t", &[32], 4, vec![0; 32]))
            .build(),
        &["unknown tensor type 4"],
    );
    rejects(
        &Builder::new(3)
            .tensor(T::new("t", &[100, 1], ggml::Q4_K, vec![0; 144]))
            .build(),
        &[
            "tensor \"t\"",
            "100 elements are not a whole number of Q4_K blocks of 256",
        ],
    );
}

#[test]
fn tensor_data_out_of_bounds_misaligned_or_overlapping() {
    let t = |name: &str, offset: u64, n: usize| T {
        offset: Some(offset),
        ..T::new(name, &[n as u64], ggml::F32, bytes(4 * n, 9))
    };
    let ok = Builder::new(3).tensor(t("a", 0, 16)).tensor(t("b", 64, 8));
    assert!(Gguf::parse(&ok.build()).is_ok());

    let mut file = ok.build();
    file.truncate(file.len() - 1);
    rejects(&file, &["tensor \"b\"", "run past the end"]);
    let far = raw(
        3,
        1,
        0,
        &cat(&[&tensor_info(b"a", &[8], ggml::F32, 4096), &[0; 64]]),
    );
    rejects(
        &far,
        &[
            "tensor \"a\"",
            "32 bytes of data at offset 4096",
            "run past the end",
        ],
    );
    // An offset so large that adding the data section's start overflows.
    let file = raw(
        3,
        1,
        0,
        &cat(&[&tensor_info(b"a", &[8], ggml::F32, u64::MAX - 31), &[0; 64]]),
    );
    rejects(&file, &["tensor \"a\"", "run past the end"]);

    rejects(
        &Builder::new(3)
            .tensor(t("a", 0, 16))
            .tensor(t("b", 16, 8))
            .build(),
        &["tensor \"b\"", "not a multiple of the alignment 32"],
    );
    let mut b = Builder::new(3)
        .kv("general.alignment", W::U32(64))
        .tensor(t("a", 0, 8))
        .tensor(t("b", 32, 8));
    b.alignment = 64;
    rejects(
        &b.build(),
        &["tensor \"b\"", "not a multiple of the alignment 64"],
    );

    rejects(
        &Builder::new(3)
            .tensor(t("a", 0, 16))
            .tensor(t("b", 32, 8))
            .build(),
        &["tensor \"b\"", "overlaps that of tensor \"a\""],
    );
    rejects(
        &Builder::new(3)
            .tensor(t("a", 64, 8))
            .tensor(t("b", 0, 32))
            .build(),
        &["tensor \"a\"", "overlaps that of tensor \"b\""],
    );
    rejects(
        &Builder::new(3)
            .tensor(t("a", 0, 8))
            .tensor(t("b", 0, 8))
            .build(),
        &["overlaps"],
    );
    // Tensors without bytes overlap nothing.
    let empty = |name: &str| T {
        offset: Some(0),
        ..T::new(name, &[0], ggml::F32, vec![])
    };
    assert!(Gguf::parse(
        &Builder::new(3)
            .tensor(t("a", 0, 8))
            .tensor(empty("e1"))
            .tensor(empty("e2"))
            .build()
    )
    .is_ok());
}

#[test]
fn bad_metadata() {
    let dup = Builder::new(3).kv("a", W::U8(1)).kv("a", W::U8(2)).build();
    rejects(&dup, &["key \"a\"", "duplicate key"]);
    rejects(
        &Builder::new(3).kv("", W::U8(1)).build(),
        &["key #0", "empty key"],
    );
    let mut bad_key = kv("ab", ty::U8, &[1]);
    bad_key[8] = 0xFF; // the key's first byte, after its u64 length
    rejects(&raw(3, 0, 1, &bad_key), &["key #0", "not valid UTF-8"]);
    rejects(
        &raw(3, 0, 1, &kv("k", 13, &[0; 16])),
        &["key \"k\"", "unknown value type 13"],
    );
    rejects(
        &raw(
            3,
            0,
            1,
            &kv(
                "k",
                ty::ARRAY,
                &cat(&[&13u32.to_le_bytes(), &0u64.to_le_bytes()]),
            ),
        ),
        &["key \"k\"", "unknown array element type 13"],
    );
    let dup = Builder::new(3)
        .tensor(T::new("t", &[1], ggml::F32, vec![0; 4]))
        .tensor(T::new("t", &[1], ggml::F32, vec![0; 4]))
        .build();
    rejects(&dup, &["tensor \"t\"", "duplicate tensor name"]);
    let bad_name = raw(
        3,
        1,
        0,
        &cat(&[&tensor_info(&[0xC3, 0x28], &[1], ggml::F32, 0), &[0; 64]]),
    );
    rejects(&bad_name, &["tensor #0", "not valid UTF-8"]);
}

#[test]
fn bad_alignment() {
    for (value, found) in [
        (W::U32(0), "u32 0"),
        (W::U32(48), "u32 48"),
        (W::I32(-32), "i32 -32"),
        (W::str("32"), "string"),
        (W::F32(32.0), "f32"),
    ] {
        let file = Builder::new(3)
            .kv("x", W::U8(1))
            .kv("general.alignment", value)
            .build();
        // header 24, "x" entry 8 + 1 + 4 + 1, the key 8 + 17: the value's type comes next
        let e = rejects(&file, &[]);
        assert_eq!(
            e,
            format!("GGUF: at byte offset 63, key \"general.alignment\": must be a power of two, found {found}")
        );
    }
    // A huge alignment pushes the data section past the end of the file.
    let mut b = small_valid(3).kv("general.alignment", W::U64(1 << 63));
    b.alignment = 32;
    rejects(&b.build(), &["data section", "past the end"]);
}

#[test]
fn nesting_depth_is_bounded() {
    let nested = |depth: usize| {
        let mut v = W::Arr(ty::U8, vec![W::U8(1)]);
        for _ in 0..depth {
            v = W::Arr(ty::ARRAY, vec![v]);
        }
        Builder::new(3).kv("deep", v).build()
    };
    assert!(Gguf::parse(&nested(10)).is_ok());
    rejects(&nested(100), &["key \"deep\"", "nested more than 32 deep"]);
    // Deep enough to overflow the stack if recursion were unbounded.
    let mut body = Vec::new();
    for _ in 0..1_000_000 {
        body.extend(ty::ARRAY.to_le_bytes());
        body.extend(1u64.to_le_bytes());
    }
    rejects(
        &raw(3, 0, 1, &kv("deep", ty::ARRAY, &body)),
        &["nested more than 32 deep"],
    );
}

#[test]
fn random_corruption_never_panics() {
    let file = small_valid(3).build();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut accepted = 0;
    for _ in 0..20_000 {
        let mut f = file.clone();
        for _ in 0..1 + rand() % 4 {
            let i = (rand() % f.len() as u64) as usize;
            f[i] = match rand() % 3 {
                0 => rand() as u8,
                1 => f[i] ^ (1 << (rand() % 8)),
                _ => 0xFF,
            };
        }
        let cut = if rand() % 4 == 0 {
            (rand() % f.len() as u64) as usize
        } else {
            f.len()
        };
        let (result, largest) = largest_allocation(|| Gguf::parse(&f[..cut]));
        assert!(largest <= ALLOCATION_BOUND);
        if let Ok(g) = result {
            accepted += 1;
            // Whatever parses must be usable throughout.
            for (_, v) in &g.metadata {
                if let gguf::Value::Array(a) = v {
                    assert_eq!(a.iter().count(), a.len());
                }
            }
            for t in &g.tensors {
                assert_eq!(
                    t.data.len() as u64,
                    t.ty.row_size(t.cols()).unwrap() * t.rows()
                );
            }
        }
    }
    // Flipped bytes inside tensor data or values leave the file valid: the test sees both sides.
    assert!(accepted > 100, "{accepted}");
}
