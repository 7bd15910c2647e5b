//! Well-formed synthetic files: every value type, nested arrays, tensors of several types, both
//! supported versions.

use ggml_types::GgmlType;
use gguf::{Gguf, Value, ValueType};

use crate::writer::{bytes, ggml, small_valid, ty, Builder, T, W};

/// Metadata with every value type, as scalars and as arrays, plus nested and empty arrays.
fn every_type(version: u32) -> Builder {
    Builder::new(version)
        .kv("general.architecture", W::str("test"))
        .kv("u8", W::U8(200))
        .kv("i8", W::I8(-100))
        .kv("u16", W::U16(60000))
        .kv("i16", W::I16(-30000))
        .kv("u32", W::U32(4_000_000_000))
        .kv("i32", W::I32(-2_000_000_000))
        .kv("f32", W::F32(1.5e-6))
        .kv("bool_true", W::Bool(1))
        .kv("bool_false", W::Bool(0))
        .kv("str", W::str("héllo ▁world"))
        .kv("not_utf8", W::Str(vec![0xE2, 0x96, b'a', 0xFF]))
        .kv("empty_str", W::Str(vec![]))
        .kv("u64", W::U64(u64::MAX))
        .kv("i64", W::I64(i64::MIN))
        .kv("f64", W::F64(-2.5e300))
        .kv("arr_u8", W::Arr(ty::U8, vec![W::U8(0), W::U8(255)]))
        .kv("arr_i8", W::Arr(ty::I8, vec![W::I8(-128), W::I8(127)]))
        .kv("arr_u16", W::Arr(ty::U16, vec![W::U16(1), W::U16(65535)]))
        .kv("arr_i16", W::Arr(ty::I16, vec![W::I16(-32768)]))
        .kv(
            "arr_u32",
            W::Arr(ty::U32, vec![W::U32(1), W::U32(2), W::U32(3)]),
        )
        .kv(
            "arr_u32_big",
            W::Arr(ty::U32, vec![W::U32(1), W::U32(u32::MAX)]),
        )
        .kv(
            "arr_i32",
            W::Arr(ty::I32, vec![W::I32(-1), W::I32(6), W::I32(3)]),
        )
        .kv(
            "arr_f32",
            W::Arr(
                ty::F32,
                vec![W::F32(-0.0), W::F32(f32::INFINITY), W::F32(3.25)],
            ),
        )
        .kv(
            "arr_bool",
            W::Arr(ty::BOOL, vec![W::Bool(0), W::Bool(1), W::Bool(2)]),
        )
        .kv(
            "arr_str",
            W::Arr(
                ty::STRING,
                vec![W::str("<s>"), W::Str(vec![0xF0, 0x9F]), W::str("")],
            ),
        )
        .kv("arr_u64", W::Arr(ty::U64, vec![W::U64(u64::MAX)]))
        .kv("arr_i64", W::Arr(ty::I64, vec![W::I64(-5)]))
        .kv("arr_f64", W::Arr(ty::F64, vec![W::F64(0.1)]))
        .kv("arr_empty", W::Arr(ty::STRING, vec![]))
        .kv(
            "arr_nested",
            W::Arr(
                ty::ARRAY,
                vec![
                    W::Arr(ty::U8, vec![W::U8(1), W::U8(2)]),
                    W::Arr(ty::STRING, vec![W::str("a"), W::str("bc")]),
                    W::Arr(
                        ty::ARRAY,
                        vec![W::Arr(ty::I64, vec![W::I64(-1), W::I64(7)])],
                    ),
                    W::Arr(ty::F32, vec![]),
                ],
            ),
        )
        .kv("last", W::U8(9))
}

/// Whether the reader's `v` is the writer's `w`, recursively through arrays.
fn same(w: &W, v: &Value) -> bool {
    match (w, v) {
        (W::U8(a), Value::U8(b)) => a == b,
        (W::I8(a), Value::I8(b)) => a == b,
        (W::U16(a), Value::U16(b)) => a == b,
        (W::I16(a), Value::I16(b)) => a == b,
        (W::U32(a), Value::U32(b)) => a == b,
        (W::I32(a), Value::I32(b)) => a == b,
        (W::U64(a), Value::U64(b)) => a == b,
        (W::I64(a), Value::I64(b)) => a == b,
        (W::F32(a), Value::F32(b)) => a.to_bits() == b.to_bits(),
        (W::F64(a), Value::F64(b)) => a.to_bits() == b.to_bits(),
        (W::Bool(a), Value::Bool(b)) => (*a != 0) == *b,
        (W::Str(a), Value::String(b)) => a == b,
        (W::Arr(t, items), Value::Array(arr)) => {
            arr.elem_type() as u32 == *t
                && arr.len() == items.len()
                && arr.iter().len() == items.len()
                && arr.iter().count() == items.len()
                && arr.iter().zip(items).all(|(v, w)| same(w, &v))
        }
        _ => false,
    }
}

#[test]
fn every_value_type_round_trips_in_v2_and_v3() {
    for version in [2, 3] {
        let b = every_type(version);
        let file = b.build();
        let g = Gguf::parse(&file).unwrap();
        assert_eq!(g.version, version);
        assert_eq!(g.alignment, 32);
        assert!(g.tensors.is_empty());
        // No tensors: the data section starts, empty, where the metadata ends.
        assert_eq!(g.data_offset, file.len() as u64);
        assert_eq!(g.metadata.len(), b.kv.len());
        for ((wk, wv), (k, v)) in b.kv.iter().zip(&g.metadata) {
            assert_eq!(wk, k.as_bytes());
            assert!(same(wv, v), "{k}: wrote {wv:?}, read {v:?}");
            assert!(std::ptr::eq(g.get(k).unwrap(), v));
        }
        assert_eq!(g.architecture().unwrap(), "test");
    }
}

#[test]
fn array_fast_paths() {
    let file = every_type(3).build();
    let g = Gguf::parse(&file).unwrap();
    let arr = |k| g.get_array(k).unwrap().unwrap();

    let s = arr("arr_str").as_strings().unwrap();
    assert_eq!(s, vec![&b"<s>"[..], &[0xF0, 0x9F][..], &b""[..]]);
    assert_eq!(arr("arr_empty").as_strings().unwrap(), Vec::<&[u8]>::new());
    assert!(arr("arr_empty").is_empty());
    assert_eq!(arr("arr_str").elem_type(), ValueType::String);

    let f = arr("arr_f32").as_f32s().unwrap();
    assert_eq!(
        f.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        [
            (-0.0f32).to_bits(),
            f32::INFINITY.to_bits(),
            3.25f32.to_bits()
        ]
    );
    assert_eq!(arr("arr_i32").as_i32s().unwrap(), [-1, 6, 3]);
    // token_type arrays come as i32 or u32; a u32 that does not fit is not an i32 array.
    assert_eq!(arr("arr_u32").as_i32s().unwrap(), [1, 2, 3]);
    assert_eq!(arr("arr_u32_big").as_i32s(), None);

    // Fast paths refuse other element types instead of reinterpreting bytes.
    assert_eq!(arr("arr_i32").as_f32s(), None);
    assert_eq!(arr("arr_f32").as_i32s(), None);
    assert_eq!(arr("arr_u8").as_strings(), None);
    assert_eq!(arr("arr_nested").as_strings(), None);

    let nested: Vec<Value> = arr("arr_nested").iter().collect();
    assert_eq!(nested.len(), 4);
    let Value::Array(inner) = nested[2] else {
        panic!("{:?}", nested[2])
    };
    let Some(Value::Array(innermost)) = inner.iter().next() else {
        panic!()
    };
    assert_eq!(
        innermost.iter().collect::<Vec<_>>(),
        [Value::I64(-1), Value::I64(7)]
    );
    let Value::Array(strs) = nested[1] else {
        panic!()
    };
    assert_eq!(strs.as_strings().unwrap(), [&b"a"[..], b"bc"]);
    assert_eq!(format!("{:?}", arr("arr_nested")), "Array(4 x array)");
}

#[test]
fn typed_getters_convert_integers_and_name_the_key_on_mismatch() {
    let file = every_type(3).build();
    let g = Gguf::parse(&file).unwrap();
    assert_eq!(g.get_u32("u8").unwrap(), Some(200));
    assert_eq!(g.get_u32("u32").unwrap(), Some(4_000_000_000));
    assert_eq!(g.get_u64("u64").unwrap(), Some(u64::MAX));
    assert_eq!(g.get_i32("i16").unwrap(), Some(-30000));
    assert_eq!(g.get_i64("i64").unwrap(), Some(i64::MIN));
    assert_eq!(g.get_i64("u32").unwrap(), Some(4_000_000_000));
    assert_eq!(g.get_u32("missing").unwrap(), None);
    assert_eq!(g.get_f32("f32").unwrap(), Some(1.5e-6));
    assert_eq!(g.get_f32("f64").unwrap(), Some(f32::NEG_INFINITY)); // -2.5e300 rounds to -inf
    assert_eq!(g.get_bool("bool_true").unwrap(), Some(true));
    assert_eq!(g.get_bool("bool_false").unwrap(), Some(false));
    assert_eq!(g.get_str("str").unwrap(), Some("héllo ▁world"));
    assert_eq!(g.get_str("empty_str").unwrap(), Some(""));
    assert_eq!(
        g.get_bytes("not_utf8").unwrap(),
        Some(&[0xE2, 0x96, b'a', 0xFF][..])
    );
    assert_eq!(g.get_array("arr_u8").unwrap().map(|a| a.len()), Some(2));

    let e = g.get_u32("i32").unwrap_err();
    assert_eq!(
        e.to_string(),
        "GGUF: key \"i32\": expected an integer that fits u32, found i32 -2000000000"
    );
    assert_eq!(
        g.get_u32("u64").unwrap_err().to_string(),
        format!(
            "GGUF: key \"u64\": expected an integer that fits u32, found u64 {}",
            u64::MAX
        )
    );
    assert_eq!(g.get_i64("u64").unwrap_err().field, "key \"u64\"");
    assert_eq!(
        g.get_u32("f32").unwrap_err().to_string(),
        "GGUF: key \"f32\": expected an integer that fits u32, found f32"
    );
    assert_eq!(
        g.get_bool("u8").unwrap_err().to_string(),
        "GGUF: key \"u8\": expected a bool, found u8 200"
    );
    assert_eq!(
        g.get_str("arr_str").unwrap_err().to_string(),
        "GGUF: key \"arr_str\": expected a string, found array of 3 string"
    );
    assert!(g
        .get_str("not_utf8")
        .unwrap_err()
        .to_string()
        .contains("not valid UTF-8"));
    assert!(g.get_array("str").is_err());
    assert!(g.get_f32("u32").is_err());
}

#[test]
fn architecture_is_required_and_must_be_a_string() {
    let file = Builder::new(3).kv("x", W::U8(1)).build();
    let e = Gguf::parse(&file).unwrap().architecture().unwrap_err();
    assert!(
        e.to_string()
            .starts_with("GGUF: key \"general.architecture\": missing"),
        "{e}"
    );
    let file = Builder::new(3)
        .kv("general.architecture", W::U32(1))
        .build();
    assert!(Gguf::parse(&file).unwrap().architecture().is_err());
}

/// A file with tensors of several types and shapes, aligned to `alignment`.
fn with_tensors(alignment: u64, align_value: W) -> Builder {
    let mut b = Builder::new(3)
        .kv("general.architecture", W::str("llama"))
        .kv("general.alignment", align_value)
        .tensor(T::new("f32", &[4, 3], ggml::F32, bytes(48, 1)))
        .tensor(T::new("f16", &[8], ggml::F16, bytes(16, 2)))
        .tensor(T::new("bf16", &[2, 2, 2, 2], ggml::BF16, bytes(32, 3)))
        .tensor(T::new("q4_0", &[64, 2], ggml::Q4_0, bytes(2 * 2 * 18, 4)))
        .tensor(T::new("q6_k", &[256, 1, 1], ggml::Q6_K, bytes(210, 5)))
        .tensor(T::new("scalar", &[], ggml::F32, bytes(4, 6)))
        .tensor(T::new("empty", &[0, 5], ggml::Q8_0, vec![]));
    b.alignment = alignment;
    b
}

#[test]
fn tensors_are_located_exactly() {
    for (alignment, value) in [
        (32, W::U32(32)),
        (64, W::U32(64)),
        (256, W::U64(256)),
        (1, W::I32(1)),
    ] {
        let b = with_tensors(alignment, value);
        let file = b.build();
        let g = Gguf::parse(&file).unwrap();
        assert_eq!(g.alignment, alignment);
        assert_eq!(g.data_offset % alignment, 0);
        assert_eq!(g.tensors.len(), b.tensors.len());
        for (w, t) in b.tensors.iter().zip(&g.tensors) {
            assert_eq!(t.name, w.name);
            assert_eq!(t.dims, w.dims);
            assert_eq!(t.ty as u32, w.ty);
            assert_eq!(t.data, &w.data[..], "{}", t.name);
            assert_eq!(t.offset % alignment, 0);
            assert_eq!(
                t.data.as_ptr() as usize - file.as_ptr() as usize,
                (g.data_offset + t.offset) as usize
            );
            assert!(std::ptr::eq(g.tensor(&w.name).unwrap(), t));
        }
        let t = g.tensor("bf16").unwrap();
        assert_eq!(
            (t.n_elements(), t.rows(), t.cols(), t.ty),
            (16, 8, 2, GgmlType::BF16)
        );
        let t = g.tensor("q6_k").unwrap();
        assert_eq!((t.n_elements(), t.rows(), t.cols()), (256, 1, 256));
        let t = g.tensor("scalar").unwrap();
        assert_eq!((t.n_elements(), t.rows(), t.cols()), (1, 1, 1));
        let t = g.tensor("empty").unwrap();
        assert_eq!(
            (t.n_elements(), t.rows(), t.cols(), t.data.len()),
            (0, 5, 0, 0)
        );
        assert!(g.tensor("nope").is_none());
    }
}

#[test]
fn parses_a_region_inside_a_bigger_buffer() {
    // As when the GGUF is stored inside a llamafile: alignment counts from the region's start.
    let file = small_valid(3).build();
    let mut outer = vec![0xAAu8; 13];
    outer.extend_from_slice(&file);
    outer.extend_from_slice(&[0x55; 7]);
    let region = &outer[13..13 + file.len()];
    let a = Gguf::parse(&file).unwrap();
    let b = Gguf::parse(region).unwrap();
    assert_eq!(a.data_offset, b.data_offset);
    for (x, y) in a.tensors.iter().zip(&b.tensors) {
        assert_eq!(x.data, y.data);
        assert_eq!(x.offset, y.offset);
    }
    // Bytes after the last tensor are allowed (trailing padding, or the rest of a container).
    assert!(Gguf::parse(&outer[13..]).is_ok());
}

#[test]
fn debug_output_leaves_out_bulk_bytes() {
    let file = small_valid(3).build();
    let g = Gguf::parse(&file).unwrap();
    let s = format!("{g:?}");
    assert!(
        s.contains(
            "TensorInfo { name: \"a.weight\", dims: [32, 2], ty: Q8_0, offset: 0, bytes: 68 }"
        ),
        "{s}"
    );
    assert!(
        s.contains("(\"tokenizer.ggml.tokens\", Array(3 x string))"),
        "{s}"
    );
}
