//! `llamafile-pack quantize` and `build --quantize`, through the real binary: the files it makes
//! are llama-quantize's byte for byte, its mixes choose llama.cpp's types, and it refuses what
//! would lose data or precision without being asked.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use common::*;

/// `tests/fixtures/reference/llama-synth/SHA256SUMS`: the sha256 of llama.cpp's llama-synth files
/// (the F32 one made by the reference's script, the others by `llama-quantize --pure`).
fn llama_cpp_sums() -> BTreeMap<String, String> {
    let path = testmodels::reference_fixtures().join("llama-synth/SHA256SUMS");
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(h, n)| (n.to_string(), h.to_string()))
        .collect()
}

#[test]
fn pure_quantization_remakes_llama_cpp_s_files_byte_for_byte() {
    let dir = test_dir("quantize-pure");
    let sums = llama_cpp_sums();
    assert_eq!(sums.len(), testmodels::SYNTH_TYPES.len());
    let f32_file = testmodels::llama_synth("F32");
    assert_eq!(
        sha256_file(&f32_file),
        sums["llama-synth-F32.gguf"],
        "the F32 input is not the reference's"
    );
    for ty in testmodels::SYNTH_TYPES.iter().filter(|t| **t != "F32") {
        let out = dir.join(format!("llama-synth-{ty}.gguf"));
        pack_ok(&["quantize", "--pure", s(&f32_file), s(&out), ty]);
        assert_eq!(
            sha256_file(&out),
            sums[&format!("llama-synth-{ty}.gguf")],
            "{ty}: not the bytes llama-quantize --pure wrote"
        );
    }
}

/// `quantize --dry-run` as a map from tensor name to the type it gets (or, with `from`, has).
fn types(file: &Path, mix: &str, column: usize) -> BTreeMap<String, String> {
    pack_ok(&["quantize", "--dry-run", "--allow-requantize", s(file), mix])
        .lines()
        .filter(|l| !l.contains(" tensors: "))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[column].to_string())
        })
        .collect()
}

/// The type each tensor of `shipped` has, and the one our Q4_K_M gives it from an F16 copy.
fn shipped_and_ours(name: &str) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let dir = test_dir(&format!("quantize-mix-{name}"));
    let shipped = testmodels::model(&format!("{name}.gguf"));
    let f16 = dir.join("f16.gguf");
    pack_ok(&[
        "quantize",
        "--allow-requantize",
        s(&shipped),
        s(&f16),
        "F16",
    ]);
    // Columns: name, shape, from, "->", to, size, "bytes".
    let have = types(&shipped, "F32", 2);
    let ours = types(&f16, "Q4_K_M", 4);
    fs::remove_file(&f16).unwrap();
    assert_eq!(
        have.keys().collect::<Vec<_>>(),
        ours.keys().collect::<Vec<_>>()
    );
    (have, ours)
}

#[test]
fn q4_k_m_chooses_the_types_of_the_shipped_gemma() {
    let (shipped, ours) = shipped_and_ours("gemma");
    assert_eq!(ours, shipped);
}

/// Qwen's file was made by an older llama.cpp whose loader sorted tensor names as strings
/// (blk.0, blk.1, blk.10, blk.11, …, blk.2, …), and Q4_K_M's "more bits" rule for attn_v and
/// ffn_down counts those tensors in that order; llama.cpp 0c1e570 (and we) count them by layer
/// number. Every other tensor gets the same type, and under the old order the rule gives what the
/// file has: the type of layer L there is ours for the layer at L's place in string order.
#[test]
fn q4_k_m_chooses_the_types_of_the_shipped_qwen() {
    let (shipped, ours) = shipped_and_ours("qwen");
    let mut layers: Vec<u32> = (0..24).collect();
    layers.sort_by_key(|l| l.to_string());
    for (name, have) in &shipped {
        let counted = ["attn_v.weight", "ffn_down.weight"]
            .iter()
            .find(|suffix| name.ends_with(*suffix));
        let expect = match counted {
            Some(suffix) => {
                let layer: u32 = name.split('.').nth(1).unwrap().parse().unwrap();
                let place = layers.iter().position(|&l| l == layer).unwrap();
                &ours[&format!("blk.{place}.{suffix}")]
            }
            None => &ours[name],
        };
        assert_eq!(have, expect, "{name}");
    }
    assert_ne!(
        shipped, ours,
        "the two orders should differ on Qwen's 24 layers"
    );
}

#[test]
fn refuses_requantizing_unknown_types_and_its_input_and_keeps_the_output() {
    let dir = test_dir("quantize-refusals");
    let q4 = synth_model();
    let out = dir.join("out.gguf");
    fs::write(&out, b"what the user had").unwrap();
    let listing = || {
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    for (args, says) in [
        (
            vec!["quantize", s(&q4), s(&out), "Q4_K_M"],
            "tensor output.weight is already Q4_0; quantizing it again to Q6_K loses precision",
        ),
        (
            vec!["quantize", s(&q4), s(&out), "Q7_K"],
            "unknown quantization type \"Q7_K\"; choose one of Q4_0",
        ),
        (
            vec!["quantize", "--allow-requantize", s(&q4), s(&q4), "Q8_0"],
            "refusing to overwrite an input",
        ),
        (
            vec!["quantize", s(&q4), "Q8_0"],
            "usage: llamafile-pack quantize IN.gguf OUT.gguf TYPE",
        ),
    ] {
        let r = pack(&args);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{args:?} succeeded");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(fs::read(&out).unwrap(), b"what the user had");
    assert_eq!(listing(), ["out.gguf"], "a temporary file was left behind");
    assert_eq!(
        sha256_file(&q4),
        sha256_file(&testmodels::llama_synth("Q4_0"))
    );
}

#[test]
fn build_quantize_packs_the_quantized_model() {
    let dir = test_dir("build-quantize");
    let out = dir.join("q.llamafile");
    let echo = echo_runtime(&dir);
    build(
        &testmodels::llama_synth("F32"),
        &out,
        std::slice::from_ref(&echo),
        &["--native", "--quantize", "q8_0"],
    );
    let json: serde_json::Value =
        serde_json::from_str(&pack_ok(&["inspect", s(&out), "--json"])).unwrap();
    let text = json.to_string();
    assert!(text.contains("llama-synth-Q8_0.gguf"), "{text}");
    // Q8_0 gives every matrix Q8_0 (the output matrix is not raised to Q6_K from Q8_0): the file
    // llama-quantize --pure wrote.
    let gguf = dir.join("model.gguf");
    pack_ok(&["extract", s(&out), "-o", s(&gguf)]);
    assert_eq!(
        sha256_file(&gguf),
        llama_cpp_sums()["llama-synth-Q8_0.gguf"]
    );
    // Only the llamafile, its runtime and what the test extracted: no quantized copy is left.
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["echo-runtime", "model.gguf", "q.llamafile"]);
}
