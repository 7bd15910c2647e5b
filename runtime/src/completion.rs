//! One-shot completion of `-p` (or `-f`): the command line's edge on the scheduler. The prompt is
//! continued by a scheduler of one slot, through the same generator as the terminal chat and the
//! server; this module only turns its events into the command line's output: the text as it
//! streams, or with `--json` one object with the token ids, the text, llama.cpp's timings and the
//! log-probabilities asked for.

use std::io::Write;

use serde_json::json;

use crate::config::{CompletionConfig, Config};
use crate::engine::Engine;
use crate::generator::{Candidate, Finish, GenParams, Sampled};
use crate::jobs::{Event, PromptInput, Usage};
use crate::scheduler::{self, Pooling};
use crate::timings::timings_json;

/// The log-probabilities `--prompt-logprobs` gives when `--top-logprobs` does not say how many.
const DEFAULT_PROMPT_LOGPROBS: usize = 10;

/// Continues the prompt, sampling as `sampling` says, and prints the result on stdout (one JSON
/// object with `json`; timings on stderr).
pub fn run(engine: &Engine, cfg: &CompletionConfig, run: &Config) -> Result<(), String> {
    let json = run.json;
    let prompt = &cfg.prompt;
    let ids = engine.tokenize_prompt(prompt);
    let params = GenParams {
        sampling: run.sampling.clone(),
        stop: run.output.stop.clone(),
        constraint: run.output.constraint.clone(),
        logit_bias: run.output.logit_bias(&engine.tokenizer),
        // -1: until end of generation or a full context; -2: until a full context.
        max_tokens: usize::try_from(cfg.n_predict).ok(),
        ends_at_eog: cfg.n_predict != -2,
        use_whole_context: true,
        tools: None,
        shown_controls: Vec::new(),
        logprobs: cfg.top_logprobs.filter(|_| json),
        prompt_logprobs: (json && cfg.prompt_logprobs)
            .then(|| cfg.top_logprobs.unwrap_or(DEFAULT_PROMPT_LOGPROBS)),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if !json && cfg.display_prompt {
        let _ = write!(out, "{prompt}");
        let _ = out.flush();
    }
    let mut result = Completion {
        want_logprobs: params.logprobs.is_some(),
        want_prompt_logprobs: params.prompt_logprobs.is_some(),
        ..Completion::default()
    };
    // An empty prompt (a model without BOS, no text) has nothing to continue from.
    if !ids.is_empty() {
        std::thread::scope(|scope| {
            let client = scheduler::spawn_local(scope, engine, None, Pooling::Mean)?;
            let mut events = client
                .generate(PromptInput::Tokens(ids.clone()), params)
                .map_err(|e| e.to_string())?;
            // The scheduler stops once this generation is done and no client is left.
            drop(client);
            loop {
                match events.blocking_recv() {
                    Some(Event::Error(refusal)) => return Err(refusal.to_string()),
                    Some(Event::PromptLogprobs(rows)) => {
                        result.prompt_logprobs.extend(rows.iter().map(|r| pairs(r)));
                    }
                    Some(Event::Delta(delta)) => {
                        if !json {
                            let _ = out.write_all(delta.text.as_bytes());
                            let _ = out.flush();
                        }
                        result.text.push_str(&delta.text);
                        delta.tokens.iter().for_each(|t| result.add(t));
                    }
                    Some(Event::Done { finish, usage }) => {
                        // llama.cpp's command line prints the reverse prompt that stopped it,
                        // and the end-of-generation token.
                        if let Finish::StopString(stop) = &finish {
                            if !json {
                                let _ = out.write_all(stop.as_bytes());
                            }
                            result.text.push_str(stop);
                        }
                        if let Finish::EndOfGeneration(t) = &finish {
                            let piece = engine.tokenizer.token_to_piece(t.id, false);
                            let piece = String::from_utf8_lossy(&piece);
                            if !json {
                                let _ = out.write_all(piece.as_bytes());
                            }
                            result.text.push_str(&piece);
                            result.add(t);
                        }
                        result.usage = usage;
                        return Ok(());
                    }
                    None => return Err("the model stopped".to_string()),
                }
            }
        })?;
    }
    if json {
        let _ = writeln!(out, "{}", result.to_json(&ids));
    } else {
        let _ = writeln!(out);
    }
    print_timings(&result.usage);
    Ok(())
}

/// What the generation gave, gathered for the output.
#[derive(Default)]
struct Completion {
    want_logprobs: bool,
    want_prompt_logprobs: bool,
    tokens: Vec<u32>,
    text: String,
    top_logprobs: Vec<Vec<(u32, f32)>>,
    prompt_logprobs: Vec<Vec<(u32, f32)>>,
    usage: Usage,
}

impl Completion {
    fn add(&mut self, t: &Sampled) {
        self.tokens.push(t.id);
        if let Some(lp) = &t.logprob {
            self.top_logprobs.push(pairs(&lp.top));
        }
    }

    fn to_json(&self, prompt: &[u32]) -> serde_json::Value {
        let mut obj = json!({
            "prompt_tokens": prompt,
            "tokens": self.tokens,
            "text": self.text,
            "timings": timings_json(&self.usage),
            "isa": kernels::isa_name(),
        });
        if self.want_logprobs {
            obj["top_logprobs"] = json!(self.top_logprobs);
        }
        if self.want_prompt_logprobs {
            obj["prompt_logprobs"] = json!(self.prompt_logprobs);
        }
        obj
    }
}

/// Candidates as `[id, logprob]` pairs, the shape of the command line's JSON.
fn pairs(candidates: &[Candidate]) -> Vec<(u32, f32)> {
    candidates.iter().map(|c| (c.id, c.logprob)).collect()
}

fn print_timings(usage: &Usage) {
    let t = timings_json(usage);
    let number = |key: &str| t[key].as_f64().unwrap_or(0.0);
    eprintln!(
        "llamafile: prompt {} tokens in {:.1} ms ({:.1} t/s); generated {} tokens in {:.1} ms ({:.1} t/s)",
        t["prompt_n"],
        number("prompt_ms"),
        number("prompt_per_second"),
        t["predicted_n"],
        number("predicted_ms"),
        number("predicted_per_second"),
    );
}
