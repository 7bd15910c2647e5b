//! Agreement with llama.cpp: every fixture of tests/fixtures/reference, through the real `llamafile`
//! binary, within the bounds that its README.md states.

use std::path::{Path, PathBuf};

use e2e::agreement::{self, Agreement, Bounds, FLOAT, GEMMA, QUANTIZED};
use e2e::{fixtures, json_stdout, llama_synth, llamafile, models_dir};
use serde_json::Value;

/// The kernels a run used (its `--json` says), checked against what `LLAMAFILE_ISA` asked for:
/// `cargo xtask test` runs these tests once per instruction set the host has, and a cap that was
/// not applied would check the same kernels twice.
fn isa_of(out: &Value) -> String {
    let isa = out["isa"].as_str().expect("isa").to_string();
    if let Ok(cap @ ("scalar" | "avx2")) = std::env::var("LLAMAFILE_ISA").as_deref() {
        // "avx2+avxvnni": AVX2 with the extension the CPU adds to it.
        let base = isa.split('+').next().unwrap_or_default();
        assert_eq!(base, cap, "LLAMAFILE_ISA={cap} was not applied");
    }
    isa
}

/// Runs every case of `fixture` on `model` and asserts the bounds.
fn check_fixture(label: &str, model: &Path, fixture: &Path, bounds: &Bounds) {
    let tmp = std::env::temp_dir().join(format!("llamafile-ref-{}-{label}", std::process::id()));
    let mut agreement = Agreement::default();
    let mut isa = String::new();
    for case in agreement::cases(fixture) {
        std::fs::write(&tmp, case["text"].as_str().expect("text")).expect("write prompt");
        let steps = case["greedy"].as_array().expect("greedy").len();
        let mut args = vec!["-m".to_string(), model.to_str().unwrap().to_string()];
        args.extend(agreement::run_args(tmp.to_str().unwrap(), steps, 1));
        let ours = json_stdout(&llamafile(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        ));
        isa = isa_of(&ours);
        agreement.add(&case, &ours, steps);
    }
    let _ = std::fs::remove_file(&tmp);
    agreement.assert_within(&format!("{label} [{isa}]"), bounds);
}

/// Perplexity over the shared text with chunks of 256 tokens, within 1 % of llama.cpp's.
fn check_perplexity(label: &str, model: &Path, expected: f64) {
    let text = fixtures().join("reference/perplexity-text.txt");
    let out = llamafile(&[
        "-m",
        model.to_str().unwrap(),
        "--perplexity",
        "-f",
        text.to_str().unwrap(),
        "-c",
        "256",
        "--json",
    ]);
    let v = json_stdout(&out);
    let ppl = v["perplexity"].as_f64().expect("perplexity");
    let dev = (ppl / expected - 1.0) * 100.0;
    let isa = isa_of(&v);
    eprintln!("{label} [{isa}]: perplexity {ppl:.4} vs llama.cpp {expected:.4} ({dev:+.3}%)");
    assert!(
        dev.abs() <= 1.0,
        "{label}: perplexity {ppl} deviates {dev:.3}% from llama.cpp's {expected}"
    );
}

fn reference_ppl(file: PathBuf, key: Option<&str>) -> f64 {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).expect("perplexity.json"))
        .expect("json");
    let v = match key {
        Some(k) => &v[k],
        None => &v,
    };
    v["perplexity"].as_f64().expect("perplexity value")
}

fn synth(ty: &str) {
    let model = llama_synth(ty);
    let dir = fixtures().join("reference/llama-synth");
    let bounds = if ty == "F32" || ty == "F16" {
        &FLOAT
    } else {
        &QUANTIZED
    };
    check_fixture(
        &format!("llama-synth {ty}"),
        &model,
        &dir.join(format!("reference-{ty}.jsonl")),
        bounds,
    );
    check_perplexity(
        &format!("llama-synth {ty}"),
        &model,
        reference_ppl(dir.join("perplexity.json"), Some(ty)),
    );
}

macro_rules! synth_tests {
    ($($name:ident => $ty:literal),* $(,)?) => {
        $(#[test] fn $name() { synth($ty); })*
    };
}

synth_tests! {
    synth_f32 => "F32", synth_f16 => "F16", synth_bf16 => "BF16", synth_q8_0 => "Q8_0",
    synth_q4_0 => "Q4_0", synth_q4_1 => "Q4_1", synth_q5_0 => "Q5_0", synth_q5_1 => "Q5_1",
    synth_q2_k => "Q2_K", synth_q3_k => "Q3_K", synth_q4_k => "Q4_K", synth_q5_k => "Q5_K", synth_q6_k => "Q6_K",
}

#[test]
fn qwen2_5_coder() {
    let model = models_dir().join("qwen.gguf");
    let dir = fixtures().join("reference/qwen2.5-coder-0.5b-instruct");
    check_fixture(
        "qwen2.5-coder-0.5b",
        &model,
        &dir.join("reference.jsonl"),
        &QUANTIZED,
    );
    check_perplexity(
        "qwen2.5-coder-0.5b",
        &model,
        reference_ppl(dir.join("perplexity.json"), None),
    );
}

#[test]
fn gemma3_270m() {
    let model = models_dir().join("gemma.gguf");
    let dir = fixtures().join("reference/gemma-3-270m");
    check_fixture("gemma-3-270m", &model, &dir.join("reference.jsonl"), &GEMMA);
    check_perplexity(
        "gemma-3-270m",
        &model,
        reference_ppl(dir.join("perplexity.json"), None),
    );
}
