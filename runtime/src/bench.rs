//! `llamafile --bench`: llama-bench's two measurements, so the two programs can be compared number
//! for number.
//!
//! As in llama-bench, "pp N" evaluates N tokens from an empty context in batches of `-b`, and
//! "tg N" generates N tokens one forward pass at a time from an empty context; the tokens are
//! random vocabulary ids (the text does not change the arithmetic). Each test runs once untimed to
//! warm caches and page in the weights, then `repetitions` times; tokens/s is averaged over the
//! runs, as llama-bench does.

use std::time::Instant;

use serde_json::{json, Value};

use crate::engine::Engine;
use crate::model::Rows;

/// What to measure.
pub struct BenchPlan {
    pub n_prompt: usize,
    pub n_gen: usize,
    /// Tokens in the context before each test (llama-bench's `-d`): attention then reads them.
    pub n_depth: usize,
    pub repetitions: usize,
}

/// One test's timings.
pub struct BenchResult {
    /// "pp512" or "tg128", with " @ d4096" at a depth, as llama-bench names them.
    pub test: String,
    pub n_depth: usize,
    pub n_prompt: usize,
    pub n_gen: usize,
    /// Seconds per repetition.
    pub samples: Vec<f64>,
}

impl BenchResult {
    fn tokens(&self) -> usize {
        self.n_prompt + self.n_gen
    }

    fn rates(&self) -> Vec<f64> {
        self.samples
            .iter()
            .map(|s| self.tokens() as f64 / s)
            .collect()
    }

    /// Mean and sample standard deviation of tokens/s over the repetitions.
    pub fn tokens_per_second(&self) -> (f64, f64) {
        mean_stddev(&self.rates())
    }

    /// llama-bench's `-o json` fields, for tools that read either program's output.
    pub fn to_json(&self, model: &str, n_threads: usize) -> Value {
        let ns: Vec<f64> = self.samples.iter().map(|s| s * 1e9).collect();
        let (avg_ns, stddev_ns) = mean_stddev(&ns);
        let (avg_ts, stddev_ts) = self.tokens_per_second();
        json!({
            "model_filename": model,
            "test": self.test,
            // Which kernels ran (`LLAMAFILE_ISA` caps them): what a comparison must name.
            "isa": kernels::isa_name(),
            "n_threads": n_threads,
            "n_prompt": self.n_prompt,
            "n_depth": self.n_depth,
            "n_gen": self.n_gen,
            "avg_ns": avg_ns.round() as u64,
            "stddev_ns": stddev_ns.round() as u64,
            "avg_ts": avg_ts,
            "stddev_ts": stddev_ts,
            "samples_ns": ns.iter().map(|v| v.round() as u64).collect::<Vec<_>>(),
            "samples_ts": self.rates(),
        })
    }
}

fn mean_stddev(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
    (mean, var.sqrt())
}

/// Runs the tests `plan` asks for (a count of 0 skips that test). The engine's `n_ctx` must hold
/// `n_depth`, `n_prompt` and `n_gen` tokens.
pub fn run(engine: &Engine, plan: &BenchPlan) -> Vec<BenchResult> {
    let mut session = engine.new_session();
    let mut tokens = RandomTokens(0x9E37_79B9_7F4A_7C15, engine.n_vocab() as u64);
    // The depth is evaluated once, untimed; each run then starts from it (llama-bench evaluates
    // it again before every run: the cache holds the same keys and values either way).
    let depth: Vec<u32> = (0..plan.n_depth).map(|_| tokens.next()).collect();
    if !depth.is_empty() {
        eval(engine, &mut session, &depth);
    }
    let mut time = |n_prompt: usize, n_gen: usize| {
        session.truncate(plan.n_depth);
        let prompt: Vec<u32> = (0..n_prompt).map(|_| tokens.next()).collect();
        let gen: Vec<u32> = (0..n_gen).map(|_| tokens.next()).collect();
        let start = Instant::now();
        if n_prompt > 0 {
            eval(engine, &mut session, &prompt);
        }
        for &t in &gen {
            eval(engine, &mut session, &[t]);
        }
        start.elapsed().as_secs_f64()
    };
    let mut results = Vec::new();
    for (n_prompt, n_gen) in [(plan.n_prompt, 0), (0, plan.n_gen)] {
        if n_prompt + n_gen == 0 {
            continue;
        }
        // Warm-up: llama-bench runs the prompt test once, and one generated token, untimed.
        time(n_prompt, n_gen.min(1));
        let samples = (0..plan.repetitions.max(1))
            .map(|_| time(n_prompt, n_gen))
            .collect();
        let at_depth = match plan.n_depth {
            0 => String::new(),
            d => format!(" @ d{d}"),
        };
        results.push(BenchResult {
            test: if n_prompt > 0 {
                format!("pp{n_prompt}{at_depth}")
            } else {
                format!("tg{n_gen}{at_depth}")
            },
            n_depth: plan.n_depth,
            n_prompt,
            n_gen,
            samples,
        });
    }
    results
}

fn eval(engine: &Engine, session: &mut crate::engine::Session, tokens: &[u32]) {
    engine
        .eval(session, tokens, Rows::Last, |_, _| {})
        .expect("the bench context was sized to hold every token it evaluates");
}

/// xorshift64: reproducible token ids without a dependency; their values do not matter.
struct RandomTokens(u64, u64);

impl RandomTokens {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % self.1) as u32
    }
}
