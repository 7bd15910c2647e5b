//! OpenAI's API: chat completions, completions and embeddings, one module each. What chat and
//! completions share is here: the sampling and limit fields, structured output, the usage object
//! and the envelope of every response.

pub(crate) mod chat;
pub(crate) mod chat_tools;
pub(crate) mod completions;
pub(crate) mod embeddings;
pub(crate) mod responses;

use std::sync::Arc;

use serde_json::{json, Value};

use super::error::ApiError;
use super::reply::{new_id, unix_now, SseFrame};
use super::request::{constraint, parse_sampling, short, Fields, GenRequest};
use crate::generator::{Finish, GenParams};
use crate::jobs::{PromptInput, Usage};
use crate::json_schema::Schema;
use crate::timings::timings_json;

/// Upper bound on `max_tokens` worth stating; the context clamps it anyway.
const MAX_TOKENS_LIMIT: i64 = 1 << 40;

/// Choices one request may ask for (`n` times its prompts).
const MAX_CHOICES: usize = 128;

/// The fields chat and completions share (all but the prompts and the shape of `logprobs`);
/// `n` copies of each prompt make the answer's choices.
fn parse_common(
    f: &Fields,
    prompts: Vec<PromptInput>,
    logprobs: Option<usize>,
) -> Result<GenRequest, ApiError> {
    let n = f.int("n", 1, MAX_CHOICES as i64)?.unwrap_or(1) as usize;
    if n * prompts.len() > MAX_CHOICES {
        return Err(ApiError::bad_request(format!(
            "{} prompts times `n` {n} is more than the {MAX_CHOICES} choices one request may ask for",
            prompts.len()
        )));
    }
    let prompts: Vec<PromptInput> = prompts
        .into_iter()
        .flat_map(|p| std::iter::repeat_n(p, n))
        .collect();
    if f.string("suffix")?.is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_request("`suffix` is not supported"));
    }
    f.int("best_of", 1, 1)
        .map_err(|_| ApiError::bad_request("`best_of` must be 1: one choice per request"))?;

    let sampling = parse_sampling(f)?;

    let mut max_tokens = None;
    for key in ["max_tokens", "max_completion_tokens"] {
        if let Some(n) = f.int(key, 1, MAX_TOKENS_LIMIT)? {
            max_tokens = Some(n as usize);
        }
    }
    // llama.cpp's name; -1 means no limit.
    if let Some(n) = f.int("n_predict", -1, MAX_TOKENS_LIMIT)? {
        max_tokens = usize::try_from(n).ok().filter(|&n| n > 0).or(max_tokens);
    }

    let stop = match f.get("stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.len() <= 16 => a
            .iter()
            .map(|s| {
                s.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::bad_request("`stop` must be a string or a list of strings")
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ApiError::bad_request(
                "`stop` must be a string or a list of at most 16 strings",
            ))
        }
    };

    let logit_bias = parse_logit_bias(f)?;
    let constraint = constraint(f, parse_response_format(f)?)?;
    let stream = f.bool("stream")?.unwrap_or(false);
    let include_usage = match f.get("stream_options") {
        None => false,
        Some(Value::Object(o)) => Fields(o).bool("include_usage")?.unwrap_or(false),
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "`stream_options` must be an object, got {}",
                short(v)
            )))
        }
    };
    Ok(GenRequest {
        prompts,
        params: GenParams {
            sampling,
            max_tokens,
            stop,
            logprobs,
            logit_bias,
            constraint,
            ..GenParams::default()
        },
        stream,
        include_usage,
    })
}

/// Completions have no tool calling (and chat completions take `tools`, not the legacy
/// `functions`): a request that offers tools there, or asks for a call, is refused rather than
/// answered as if it had not. `keys` are the fields to refuse.
fn refuse_tools(f: &Fields, keys: &[&str]) -> Result<(), ApiError> {
    for &key in keys {
        let asked = match f.get(key) {
            None | Some(Value::Null) => false,
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::String(s)) => s != "none" && s != "auto",
            Some(_) => true,
        };
        if asked {
            let instead = match key {
                "functions" | "function_call" => "send `tools` and `tool_choice` instead",
                _ => "tools are served by /v1/chat/completions",
            };
            return Err(ApiError::bad_request(format!(
                "`{key}` is not supported here; {instead}"
            )));
        }
    }
    Ok(())
}

/// `logit_bias`: token ids (as the object's keys, OpenAI's form) and a bias from -100 to 100 added
/// to each one's logit; -100 all but bans a token, 100 all but forces it.
fn parse_logit_bias(f: &Fields) -> Result<Vec<(u32, f32)>, ApiError> {
    let Some(v) = f.get("logit_bias") else {
        return Ok(Vec::new());
    };
    let Value::Object(map) = v else {
        return Err(ApiError::bad_request(format!(
            "`logit_bias` must map token ids to biases, got {}",
            short(v)
        )));
    };
    map.iter()
        .map(|(id, bias)| {
            let id = id.parse::<u32>().map_err(|_| {
                ApiError::bad_request(format!(
                    "`logit_bias`: the key {id:?} is not a token id"
                ))
            })?;
            match bias.as_f64() {
                Some(b) if (-100.0..=100.0).contains(&b) => Ok((id, b as f32)),
                _ => Err(ApiError::bad_request(format!(
                    "`logit_bias`: the bias of token {id} must be a number from -100 to 100, got {}",
                    short(bias)
                ))),
            }
        })
        .collect()
}

/// `response_format` (`{"type": "json_object"}`, `{"type": "json_schema", "json_schema": {"schema": ...}}`,
/// or llama.cpp's `{"type": "json_object", "schema": ...}`) and llama.cpp's top-level `json_schema`.
fn parse_response_format(f: &Fields) -> Result<Option<Arc<Schema>>, ApiError> {
    let compile = |s: &Value| {
        Schema::compile(s).map_err(|e| ApiError::bad_request(format!("JSON schema: {e}")))
    };
    if let Some(schema) = f.get("json_schema") {
        return compile(schema).map(Some);
    }
    let Some(rf) = f.get("response_format") else {
        return Ok(None);
    };
    let Value::Object(rf) = rf else {
        return Err(ApiError::bad_request("`response_format` must be an object"));
    };
    let rf = Fields(rf);
    match rf.string("type")? {
        None | Some("text") => Ok(None),
        Some("json_object") => match rf.get("schema") {
            Some(schema) => compile(schema).map(Some),
            None => Ok(Some(Schema::any_object())),
        },
        Some("json_schema") => {
            let schema = match rf.get("json_schema") {
                Some(Value::Object(js)) => js.get("schema").or(rf.get("schema")),
                _ => rf.get("schema"),
            };
            let schema = schema.ok_or_else(|| {
                ApiError::bad_request("`response_format.json_schema.schema` is missing")
            })?;
            compile(schema).map(Some)
        }
        Some(other) => Err(ApiError::bad_request(format!(
            "`response_format.type` must be text, json_object or json_schema, got {other:?}"
        ))),
    }
}

/// What every response of one request shares: its id, creation time and model.
pub(crate) struct Envelope {
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl Envelope {
    pub fn new(prefix: &str, model: &str) -> Self {
        Envelope {
            id: new_id(prefix),
            created: unix_now(),
            model: model.to_string(),
        }
    }

    /// The fields every response object starts with.
    fn object(&self, object: &str) -> Value {
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        })
    }

    /// The frames that end a stream: the chunk with the `finish_reason`, then, with
    /// What ends a stream once every choice has ended: the usage chunk when asked for, and
    /// `[DONE]`.
    fn stream_end(&self, object: &str, include_usage: bool, usage: &Usage) -> Vec<SseFrame> {
        let mut frames = Vec::new();
        if include_usage {
            let mut chunk = self.object(object);
            chunk["choices"] = json!([]);
            chunk["usage"] = usage_json(usage);
            chunk["timings"] = timings_json(usage);
            frames.push(SseFrame::json(&chunk));
        }
        frames.push(SseFrame::data(DONE));
        frames
    }

    /// A whole answer: its choices, the usage and llama.cpp's timings.
    fn whole(&self, object: &str, choices: Vec<Value>, usage: &Usage) -> Value {
        let mut v = self.object(object);
        v["choices"] = Value::Array(choices);
        v["usage"] = usage_json(usage);
        v["timings"] = timings_json(usage);
        v
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

/// `finish_reason`: `stop` for every way the reply ends by itself.
fn finish_reason(finish: &Finish) -> &'static str {
    match finish {
        Finish::EndOfGeneration(_) | Finish::StopString(_) | Finish::Constraint => "stop",
        Finish::ToolCalls(_) => "tool_calls",
        Finish::Length => "length",
    }
}

/// The end of an OpenAI stream.
const DONE: &str = "[DONE]";

/// A stream that fails after it started ends with the error object as its last event.
fn stream_error(e: &ApiError) -> Vec<SseFrame> {
    vec![SseFrame::json(&e.to_json())]
}

const SYSTEM_FINGERPRINT: &str = concat!("llamafile-rs-", env!("CARGO_PKG_VERSION"));
