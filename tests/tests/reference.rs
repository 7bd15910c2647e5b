//! Agreement with llama.cpp: every fixture of shared/reference, through the real `llamafile` binary,
//! within the bounds that shared/reference/README.md states.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use e2e::{fixtures, json_stdout, llamafile, models_dir, shared_reference};
use serde_json::Value;

/// How many log-probabilities per position we ask for: enough that llama.cpp's top 5 are nearly
/// always among them.
const OUR_K: usize = 64;

struct Bounds {
    mean: f64,
    p99: f64,
}

const QUANTIZED: Bounds = Bounds {
    mean: 0.10,
    p99: 0.5,
};
const FLOAT: Bounds = Bounds {
    mean: 0.005,
    p99: 0.02,
};
const GEMMA: Bounds = Bounds {
    mean: 0.25,
    p99: 1.5,
};

fn pairs(v: &Value) -> Vec<(u64, f64)> {
    v.as_array()
        .expect("array of pairs")
        .iter()
        .map(|p| (p[0].as_u64().expect("id"), p[1].as_f64().expect("logprob")))
        .collect()
}

/// |ours − llama.cpp's| for llama.cpp's five most likely tokens, and whether the top-1 agrees.
struct PositionCheck {
    diffs: Vec<f64>,
    margin: f64,
    top1_agrees: bool,
}

fn check_position(theirs: &[(u64, f64)], ours: &[(u64, f64)]) -> PositionCheck {
    let ours_map: HashMap<u64, f64> = ours.iter().copied().collect();
    let floor = ours.last().map_or(f64::NEG_INFINITY, |p| p.1);
    let diffs = theirs
        .iter()
        .take(5)
        .map(|&(id, lp)| match ours_map.get(&id) {
            Some(&o) => (o - lp).abs(),
            // Not in our top K: our logprob is below `floor`, so the difference is at least this.
            None => (lp - floor).max(0.0),
        })
        .collect();
    PositionCheck {
        diffs,
        margin: theirs[0].1 - theirs.get(1).map_or(f64::NEG_INFINITY, |p| p.1),
        top1_agrees: ours.first().map(|p| p.0) == Some(theirs[0].0),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

/// Runs every case of `fixture` on `model` and asserts the bounds.
fn check_fixture(label: &str, model: &Path, fixture: &Path, bounds: &Bounds) {
    let text =
        std::fs::read_to_string(fixture).unwrap_or_else(|e| panic!("{}: {e}", fixture.display()));
    let tmp = std::env::temp_dir().join(format!("llamafile-ref-{}-{label}", std::process::id()));
    let mut diffs = Vec::new();
    let (mut eligible, mut agree) = (0usize, 0usize);
    let mut failures = Vec::new();
    let mut greedy_checked = 0usize;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let case: Value = serde_json::from_str(line).expect("fixture line");
        let id = case["id"].as_str().expect("id");
        std::fs::write(&tmp, case["text"].as_str().expect("text")).expect("write prompt");
        let greedy = case["greedy"].as_array().expect("greedy");
        let n = greedy.len().to_string();
        let k = OUR_K.to_string();
        let out = llamafile(&[
            "-m",
            model.to_str().unwrap(),
            "-f",
            tmp.to_str().unwrap(),
            "--no-escape",
            "--json",
            "--prompt-logprobs",
            "--top-logprobs",
            &k,
            "-n",
            &n,
            "--temp",
            "0",
            "-c",
            "2048",
            "-t",
            "1",
        ]);
        let ours = json_stdout(&out);
        if ours["prompt_tokens"] != case["prompt_tokens"] {
            failures.push(format!(
                "{id}: tokens {} != llama.cpp's {}",
                ours["prompt_tokens"], case["prompt_tokens"]
            ));
            continue;
        }
        let theirs_top = case["prompt_top"].as_array().expect("prompt_top");
        let ours_top = ours["prompt_logprobs"].as_array().expect("prompt_logprobs");
        assert_eq!(theirs_top.len(), ours_top.len(), "{id}: positions");
        for (pos, (t, o)) in theirs_top.iter().zip(ours_top).enumerate() {
            let c = check_position(&pairs(t), &pairs(o));
            diffs.extend_from_slice(&c.diffs);
            if c.margin >= 0.05 {
                eligible += 1;
                agree += c.top1_agrees as usize;
            }
            if c.margin >= 0.5 && !c.top1_agrees {
                failures.push(format!(
                    "{id}: position {pos}: top-1 differs where llama.cpp wins by {:.3}",
                    c.margin
                ));
            }
        }
        // Greedy tokens must agree up to the first step llama.cpp itself decides by less than 0.25.
        let our_tokens = ours["tokens"].as_array().expect("tokens");
        for (step, g) in greedy.iter().enumerate() {
            let top = pairs(&g["top"]);
            if top.len() >= 2 && top[0].1 - top[1].1 < 0.25 {
                break;
            }
            greedy_checked += 1;
            if our_tokens.get(step).and_then(Value::as_u64) != g["token"].as_u64() {
                failures.push(format!(
                    "{id}: greedy step {step}: ours {:?}, llama.cpp {}",
                    our_tokens.get(step),
                    g["token"]
                ));
                break;
            }
        }
    }
    let _ = std::fs::remove_file(&tmp);
    diffs.sort_by(f64::total_cmp);
    let mean = diffs.iter().sum::<f64>() / diffs.len().max(1) as f64;
    let p99 = percentile(&diffs, 0.99);
    let max = diffs.last().copied().unwrap_or(0.0);
    let agreement = agree as f64 / eligible.max(1) as f64;
    eprintln!(
        "{label}: logprob diff mean {mean:.4} p99 {p99:.4} max {max:.4}; top-1 {:.1}% of {eligible}; greedy steps checked {greedy_checked}",
        agreement * 100.0
    );
    if mean > bounds.mean {
        failures.push(format!(
            "mean logprob difference {mean:.4} > {}",
            bounds.mean
        ));
    }
    if p99 > bounds.p99 {
        failures.push(format!("p99 logprob difference {p99:.4} > {}", bounds.p99));
    }
    if agreement < 0.93 {
        failures.push(format!("top-1 agreement {:.1}% < 93%", agreement * 100.0));
    }
    assert!(
        failures.is_empty(),
        "{label} disagrees with llama.cpp:\n{}",
        failures.join("\n")
    );
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
    eprintln!("{label}: perplexity {ppl:.4} vs llama.cpp {expected:.4} ({dev:+.3}%)");
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
    let model = shared_reference().join(format!("llama-synth/models/llama-synth-{ty}.gguf"));
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
