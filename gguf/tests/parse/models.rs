//! The reference models: the 13 llama-synth files and the two real models. Tensor bytes are
//! checked through the exact dequantized rows in `dequant.json` (made by ggml from these files),
//! so a wrong offset or size shows up as wrong numbers, not just as a different count.

use std::time::Instant;

use ggml_types::GgmlType;
use gguf::{Gguf, TensorInfo, Value};
use testmodels::SYNTH_TYPES;

fn map(path: &std::path::Path) -> memmap2::Mmap {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // SAFETY: test inputs are read-only reference files that nothing modifies while mapped.
    unsafe { memmap2::Mmap::map(&f) }.unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn type_named(name: &str) -> GgmlType {
    (0..64)
        .filter_map(GgmlType::from_id)
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("type {name}"))
}

/// The entries of `dequant.json` for the file whose description starts with `file`.
fn dequant_entries(file: &str) -> Vec<serde_json::Value> {
    let path = testmodels::reference_fixtures().join("dequant.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["file"].as_str().unwrap().starts_with(file))
        .cloned()
        .collect()
}

/// Checks the tensors against ggml's dequantized rows: same type, row length, and bits.
fn check_dequant(g: &Gguf, entries: &[serde_json::Value]) {
    assert!(!entries.is_empty());
    for e in entries {
        let name = e["tensor"].as_str().unwrap();
        let t = g.tensor(name).unwrap_or_else(|| panic!("no tensor {name}"));
        assert_eq!(t.ty, type_named(e["type"].as_str().unwrap()), "{name}");
        let cols = e["row_length"].as_u64().unwrap();
        assert_eq!(t.cols(), cols, "{name}");
        let row_bytes = t.ty.row_size(cols).unwrap() as usize;
        for (i, row) in e["rows"].as_array().unwrap().iter().enumerate() {
            let want: Vec<u32> = row
                .as_array()
                .unwrap()
                .iter()
                .map(|h| u32::from_str_radix(h.as_str().unwrap(), 16).unwrap())
                .collect();
            let mut got = vec![0f32; cols as usize];
            kernels::dequantize_row(t.ty, &t.data[i * row_bytes..(i + 1) * row_bytes], &mut got);
            assert!(
                got.iter().map(|x| x.to_bits()).eq(want.iter().copied()),
                "{name} row {i}: bytes differ from ggml's"
            );
        }
    }
}

/// The writers used for these files place tensors one after another, each padded to the
/// alignment, and end the file with the last one (padded or not): check that the located data
/// tiles the data section exactly that way.
fn check_tiling(g: &Gguf, file_len: usize) {
    let mut ts: Vec<&TensorInfo> = g.tensors.iter().collect();
    ts.sort_by_key(|t| t.offset);
    let mut next = 0u64;
    for t in &ts {
        assert_eq!(t.offset, next, "{}", t.name);
        assert_eq!(
            t.data.len() as u64,
            t.ty.row_size(t.cols()).unwrap() * t.rows(),
            "{}",
            t.name
        );
        next = (t.offset + t.data.len() as u64).next_multiple_of(g.alignment);
    }
    let last = ts.last().unwrap();
    let end = g.data_offset + last.offset + last.data.len() as u64;
    assert!(
        end == file_len as u64 || g.data_offset + next == file_len as u64,
        "data ends at {end}, file at {file_len}"
    );
}

fn n_tokens(g: &Gguf) -> usize {
    match g.get("tokenizer.ggml.tokens") {
        Some(Value::Array(a)) => a.as_strings().unwrap().len(),
        other => panic!("tokenizer.ggml.tokens: {other:?}"),
    }
}

#[test]
fn llama_synth_files() {
    for ty in SYNTH_TYPES {
        let name = format!("llama-synth-{ty}.gguf");
        let bytes = map(&testmodels::llama_synth(ty));
        let g = Gguf::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(g.version, 3);
        assert_eq!(g.architecture().unwrap(), "llama");
        assert_eq!(g.alignment, 32);
        assert_eq!(g.tensors.len(), 39, "{name}");
        // --pure: every matrix in the file's type; norms stay F32.
        let ty = type_named(ty);
        for t in &g.tensors {
            let want = if t.dims.len() == 1 { GgmlType::F32 } else { ty };
            assert_eq!(t.ty, want, "{name} {}", t.name);
        }
        let embd = g.tensor("token_embd.weight").unwrap();
        assert_eq!(embd.rows() as usize, n_tokens(&g), "{name}");
        assert_eq!(g.get_u32("llama.block_count").unwrap(), Some(4), "{name}");
        check_tiling(&g, bytes.len());
        if ty != GgmlType::F32 {
            check_dequant(&g, &dequant_entries(&format!("llama-synth/models/{name}")));
        }
    }
}

#[test]
fn real_models() {
    let dir = testmodels::models_dir();
    for (file, arch, tokens, prefix, types) in [
        (
            "qwen.gguf",
            "qwen2",
            151_936,
            "qwen2.5",
            ["Q5_0", "Q8_0", "Q6_K", "Q4_K"],
        ),
        (
            "gemma.gguf",
            "gemma3",
            262_144,
            "gemma-3",
            ["Q5_0", "Q8_0", "Q6_K", "Q4_K"],
        ),
    ] {
        let bytes = map(&dir.join(file));
        let t0 = Instant::now();
        let g = Gguf::parse(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
        let parse_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t1 = Instant::now();
        let n = n_tokens(&g);
        let strings_ms = t1.elapsed().as_secs_f64() * 1e3;
        eprintln!("{file}: parsed in {parse_ms:.2} ms, {n} token strings in {strings_ms:.2} ms");
        assert_eq!(g.architecture().unwrap(), arch);
        assert_eq!(n, tokens, "{file}");
        for ty in types {
            assert!(
                g.tensors.iter().any(|t| t.ty == type_named(ty)),
                "{file} has no {ty} tensor"
            );
        }
        check_tiling(&g, bytes.len());
        check_dequant(&g, &dequant_entries(prefix));
    }
}

/// The writer lays files out as ggml and gguf-py do: the 13 llama-synth files (one written by
/// gguf-py, twelve by llama-quantize's ggml writer) come back byte for byte from what was parsed.
#[test]
fn writer_rebuilds_the_llama_synth_files() {
    for ty in SYNTH_TYPES {
        let bytes = map(&testmodels::llama_synth(ty));
        let g = Gguf::parse(&bytes).unwrap();
        let specs: Vec<gguf::TensorSpec> = g
            .tensors
            .iter()
            .map(|t| gguf::TensorSpec {
                name: t.name,
                dims: t.dims.clone(),
                ty: t.ty,
            })
            .collect();
        let mut out = gguf::header(&g.metadata, &specs, g.alignment);
        assert_eq!(out.len() as u64, g.data_offset, "{ty}: header size");
        for t in &g.tensors {
            assert_eq!(
                out.len() as u64,
                g.data_offset + t.offset,
                "{ty}: {}",
                t.name
            );
            out.extend_from_slice(t.data);
            out.resize(
                out.len() + gguf::padding(t.data.len() as u64, g.alignment),
                0,
            );
        }
        assert!(out[..] == bytes[..], "{ty}: the rebuilt file differs");
    }
}
