//! Dequantization against ggml's own output (tests/fixtures/reference/dequant.json): the first two rows of one tensor per type, bit for bit.

mod common;

use kernels::GgmlType;
use serde_json::Value;
use std::path::PathBuf;

fn fixture() -> Value {
    let path = testmodels::reference_fixtures().join("dequant.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("dequant.json")
}

fn type_named(name: &str) -> GgmlType {
    (0..=30)
        .filter_map(GgmlType::from_id)
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("type {name}"))
}

/// Checks one fixture entry against the tensor's bytes in `model`; returns the type checked.
fn check_entry(entry: &Value, model: PathBuf) -> GgmlType {
    let name = entry["tensor"].as_str().expect("tensor");
    let ty = type_named(entry["type"].as_str().expect("type"));
    let n = entry["row_length"].as_u64().expect("row_length") as usize;
    let rows = entry["rows"].as_array().expect("rows");
    let (info, bytes) = common::read_rows(&model, name, rows.len());
    assert_eq!(
        info.ty,
        ty,
        "{}: {name} has type {:?} in the file",
        model.display(),
        info.ty
    );
    assert_eq!(info.dims[0] as usize, n, "{name}: row length");
    let row_bytes = ty.row_size(n as u64).expect("whole blocks") as usize;
    let mut out = vec![0f32; n];
    for (r, expect) in rows.iter().enumerate() {
        kernels::dequantize_row(ty, &bytes[r * row_bytes..(r + 1) * row_bytes], &mut out);
        let expect = expect.as_array().expect("row");
        assert_eq!(expect.len(), n);
        for (i, (got, want)) in out.iter().zip(expect).enumerate() {
            let want = u32::from_str_radix(want.as_str().expect("hex"), 16).expect("hex");
            assert_eq!(
                got.to_bits(),
                want,
                "{} {name} ({}) row {r} element {i}: got {got:e} ({:08x}), ggml gives {:e} ({want:08x})",
                model.display(),
                ty.name(),
                got.to_bits(),
                f32::from_bits(want)
            );
        }
    }
    ty
}

#[test]
fn dequantization_matches_ggml_on_llama_synth() {
    let fixture = fixture();
    let mut checked = Vec::new();
    for entry in fixture["tensors"].as_array().expect("tensors") {
        let file = entry["file"].as_str().expect("file");
        // Named as in the reference: llama-synth/models/llama-synth-TYPE.gguf.
        if let Some(ty) = file
            .strip_prefix("llama-synth/models/llama-synth-")
            .and_then(|f| f.strip_suffix(".gguf"))
        {
            checked.push(check_entry(entry, testmodels::llama_synth(ty)));
        }
    }
    // Every type of the synth family except F32 (which ggml has no to_float for) is in the fixture.
    use GgmlType::*;
    for ty in [
        F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
    ] {
        assert!(
            checked.contains(&ty),
            "{} missing from the fixture",
            ty.name()
        );
    }
}

#[test]
fn dequantization_matches_ggml_on_real_models() {
    let dir = testmodels::models_dir();
    let mut n = 0;
    for entry in fixture()["tensors"].as_array().expect("tensors") {
        let file = entry["file"].as_str().expect("file");
        let model = if file.starts_with("qwen2.5-coder") {
            dir.join("qwen.gguf")
        } else if file.starts_with("gemma-3") {
            dir.join("gemma.gguf")
        } else {
            continue;
        };
        check_entry(entry, model);
        n += 1;
    }
    assert_eq!(
        n, 8,
        "the fixture names eight tensors of the two real models"
    );
}

/// F32 has no entry (it is stored as is); its rows must come back unchanged.
#[test]
fn f32_rows_come_back_unchanged() {
    let (info, bytes) = common::read_rows(
        &common::synth_model(GgmlType::F32),
        "blk.0.attn_q.weight",
        2,
    );
    assert_eq!(info.ty, GgmlType::F32);
    let mut out = vec![0f32; bytes.len() / 4];
    kernels::dequantize_row(GgmlType::F32, &bytes, &mut out);
    for (v, b) in out.iter().zip(bytes.chunks_exact(4)) {
        assert_eq!(v.to_bits(), u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    }
}
