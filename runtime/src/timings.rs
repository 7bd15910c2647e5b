//! llama.cpp's `timings` object, from a generation's usage: its command line prints it with
//! `--json`, its server adds it to every answer, and so do ours (`completion.rs`, `server/openai`).

use serde_json::{json, Value};

use crate::jobs::Usage;

/// Only the tokens evaluated count: llama.cpp's `prompt_n` leaves out the cached ones.
pub(crate) fn timings_json(usage: &Usage) -> Value {
    let per_s = |n: usize, ms: f64| if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 };
    let evaluated = usage.prompt_tokens - usage.cached_tokens;
    json!({
        "prompt_n": evaluated,
        "prompt_ms": usage.prompt_ms,
        "prompt_per_second": per_s(evaluated, usage.prompt_ms),
        "predicted_n": usage.completion_tokens,
        "predicted_ms": usage.gen_ms,
        "predicted_per_second": per_s(usage.completion_tokens, usage.gen_ms),
    })
}
