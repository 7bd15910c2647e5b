//! Agreement with llama.cpp's reference outputs (`tests/fixtures/reference`), within the bounds
//! that its README states. One rule for every test that compares a run with llama.cpp: the
//! fidelity tests, and the runtimes of other instruction sets (the aarch64 one under qemu).
//!
//! Runs of different kernels never have to give the same bits, nor the same greedy tokens past a
//! near tie: SIMD variants add their terms in different orders, and where llama.cpp's two best
//! tokens are 0.005 apart either order may win. So each run is held to llama.cpp's numbers, never
//! to another of our runs on other kernels.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

/// Bounds on |our logprob − llama.cpp's| over llama.cpp's five most likely tokens at every prompt
/// position of a fixture file.
pub struct Bounds {
    pub mean: f64,
    pub p99: f64,
}

pub const QUANTIZED: Bounds = Bounds {
    mean: 0.10,
    p99: 0.5,
};
pub const FLOAT: Bounds = Bounds {
    mean: 0.005,
    p99: 0.02,
};
/// Gemma 3 is numerically touchy.
pub const GEMMA: Bounds = Bounds {
    mean: 0.25,
    p99: 1.5,
};

/// Greedy tokens must agree up to the first step llama.cpp itself decides by less than this.
pub const GREEDY_MARGIN: f64 = 0.25;

/// How many log-probabilities per position we ask for: enough that llama.cpp's top 5 are nearly
/// always among them.
const OUR_K: usize = 64;

/// The `llamafile` arguments (after the model's) that print, as one JSON object, what
/// [`Agreement::add`] compares: the prompt read from `prompt_file` as it is, its tokens and top
/// logprobs, and `steps` greedy tokens.
pub fn run_args(prompt_file: &str, steps: usize, threads: usize) -> Vec<String> {
    [
        "-f",
        prompt_file,
        "--no-escape",
        "--json",
        "--prompt-logprobs",
        "--top-logprobs",
        &OUR_K.to_string(),
        "-n",
        &steps.to_string(),
        "--temp",
        "0",
        "-c",
        "2048",
        "-t",
        &threads.to_string(),
    ]
    .map(String::from)
    .to_vec()
}

/// The cases of a fixture file (`reference*.jsonl`: one JSON object a line).
pub fn cases(fixture: &Path) -> Vec<Value> {
    std::fs::read_to_string(fixture)
        .unwrap_or_else(|e| panic!("{}: {e}", fixture.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}", fixture.display())))
        .collect()
}

fn pairs(v: &Value) -> Vec<(u64, f64)> {
    v.as_array()
        .expect("array of pairs")
        .iter()
        .map(|p| (p[0].as_u64().expect("id"), p[1].as_f64().expect("logprob")))
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

/// The comparisons of a fixture file's cases, gathered until [`Agreement::assert_within`].
#[derive(Default)]
pub struct Agreement {
    diffs: Vec<f64>,
    /// Positions where llama.cpp's top-1 beats its top-2 by at least 0.05, and how many of them
    /// our top-1 agrees on.
    eligible: usize,
    agree: usize,
    greedy_checked: usize,
    failures: Vec<String>,
}

impl Agreement {
    /// Compares one fixture case with our `--json` output for it (made with [`run_args`]), for as
    /// many greedy steps as the fixture has, or `steps` where that is fewer.
    pub fn add(&mut self, case: &Value, ours: &Value, steps: usize) {
        let id = case["id"].as_str().expect("id");
        if ours["prompt_tokens"] != case["prompt_tokens"] {
            self.failures.push(format!(
                "{id}: tokens {} != llama.cpp's {}",
                ours["prompt_tokens"], case["prompt_tokens"]
            ));
            return;
        }
        let theirs_top = case["prompt_top"].as_array().expect("prompt_top");
        let ours_top = ours["prompt_logprobs"].as_array().expect("prompt_logprobs");
        assert_eq!(theirs_top.len(), ours_top.len(), "{id}: positions");
        for (pos, (t, o)) in theirs_top.iter().zip(ours_top).enumerate() {
            self.add_position(id, pos, &pairs(t), &pairs(o));
        }
        let greedy = case["greedy"].as_array().expect("greedy");
        let ours_tokens = ours["tokens"].as_array().expect("tokens");
        for (step, g) in greedy.iter().take(steps).enumerate() {
            let top = pairs(&g["top"]);
            if top.len() >= 2 && top[0].1 - top[1].1 < GREEDY_MARGIN {
                break;
            }
            self.greedy_checked += 1;
            if ours_tokens.get(step).and_then(Value::as_u64) != g["token"].as_u64() {
                self.failures.push(format!(
                    "{id}: greedy step {step}: ours {:?}, llama.cpp {}",
                    ours_tokens.get(step),
                    g["token"]
                ));
                break;
            }
        }
    }

    /// |ours − llama.cpp's| for llama.cpp's five most likely tokens, and whether the top-1 agrees.
    fn add_position(&mut self, id: &str, pos: usize, theirs: &[(u64, f64)], ours: &[(u64, f64)]) {
        let ours_map: HashMap<u64, f64> = ours.iter().copied().collect();
        let floor = ours.last().map_or(f64::NEG_INFINITY, |p| p.1);
        self.diffs.extend(theirs.iter().take(5).map(|&(id, lp)| {
            match ours_map.get(&id) {
                Some(&o) => (o - lp).abs(),
                // Not in our top K: our logprob is below `floor`, so the difference is at least this.
                None => (lp - floor).max(0.0),
            }
        }));
        let margin = theirs[0].1 - theirs.get(1).map_or(f64::NEG_INFINITY, |p| p.1);
        let top1_agrees = ours.first().map(|p| p.0) == Some(theirs[0].0);
        if margin >= 0.05 {
            self.eligible += 1;
            self.agree += top1_agrees as usize;
        }
        if margin >= 0.5 && !top1_agrees {
            self.failures.push(format!(
                "{id}: position {pos}: top-1 differs where llama.cpp wins by {margin:.3}"
            ));
        }
    }

    /// Prints the figures under `label` and asserts them against `bounds`.
    pub fn assert_within(mut self, label: &str, bounds: &Bounds) {
        let diffs = &mut self.diffs;
        diffs.sort_by(f64::total_cmp);
        let mean = diffs.iter().sum::<f64>() / diffs.len().max(1) as f64;
        let p99 = percentile(diffs, 0.99);
        let max = diffs.last().copied().unwrap_or(0.0);
        let agreement = self.agree as f64 / self.eligible.max(1) as f64;
        eprintln!(
            "{label}: logprob diff mean {mean:.4} p99 {p99:.4} max {max:.4}; top-1 {:.1}% of {}; greedy steps checked {}",
            agreement * 100.0,
            self.eligible,
            self.greedy_checked
        );
        let failures = &mut self.failures;
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
}
