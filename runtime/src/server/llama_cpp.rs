//! llama.cpp's own endpoints, with llama-server's field names: `/completion` and `/infill` (fill
//! in the middle, as editor plugins such as llama.vim and llama.vscode send it), `/tokenize`,
//! `/detokenize`, `/apply-template`.

use serde_json::{json, Value};

use super::error::ApiError;
use super::openai::chat::parse_messages;
use super::reply::{Answer, Reply, SseFrame};
use super::request::{
    constraint, parse_object, parse_sampling, short, token_ids, Fields, GenRequest,
};
use crate::generator::{Delta, Finish, GenParams, Sampled};
use crate::jobs::{Embedding, Infill, PromptInput, Usage};
use crate::json_schema::Schema;
use crate::messages::ChatMessage;
use crate::timings::timings_json;

/// `/completion`: `prompt` (a text, token ids, or a list of one of those) and the generation
/// fields.
pub(crate) fn parse_completion(body: &[u8]) -> Result<GenRequest, ApiError> {
    let obj = parse_object(body)?;
    let f = Fields(&obj);
    let prompt = match f.get("prompt") {
        Some(Value::String(s)) => PromptInput::Text(s.clone()),
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_number) => {
            PromptInput::Tokens(token_ids(a, "prompt")?)
        }
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
            PromptInput::Text(a[0].as_str().unwrap_or_default().to_string())
        }
        _ => {
            return Err(ApiError::bad_request(
                "`prompt` must be a text or an array of token ids (one prompt per request)",
            ))
        }
    };
    generation(&f, prompt)
}

/// `/infill`: `input_prefix`, `input_suffix`, `input_extra` (`[{"filename", "text"}]`) and
/// `prompt` (where the middle starts), and the generation fields.
pub(crate) fn parse_infill(body: &[u8]) -> Result<GenRequest, ApiError> {
    let obj = parse_object(body)?;
    let f = Fields(&obj);
    let text = |key: &str| f.string(key).map(|s| s.unwrap_or_default().to_string());
    let extra = f.list("input_extra", |i, chunk| {
        let field = |key: &str, default: &str| match chunk.get(key) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(ApiError::bad_request(format!(
                "`input_extra[{i}].{key}` must be a string, got {}",
                short(v)
            ))),
        };
        Ok((field("filename", "tmp")?, field("text", "")?))
    })?;
    let infill = Infill {
        prefix: text("input_prefix")?,
        suffix: text("input_suffix")?,
        extra,
        prompt: text("prompt")?,
    };
    generation(&f, PromptInput::Infill(infill))
}

/// The fields `/completion` and `/infill` share.
fn generation(f: &Fields, prompt: PromptInput) -> Result<GenRequest, ApiError> {
    let sampling = parse_sampling(f)?;
    let n_predict = f.int("n_predict", -1, 1 << 40)?.unwrap_or(-1);
    let stop = f.list("stop", |i, s| {
        s.as_str()
            .map(str::to_string)
            .ok_or_else(|| ApiError::bad_request(format!("`stop[{i}]` must be a string")))
    })?;
    let json = match f.get("json_schema") {
        None => None,
        Some(schema) => Some(
            Schema::compile(schema)
                .map_err(|e| ApiError::bad_request(format!("`json_schema`: {e}")))?,
        ),
    };
    let n_probs = f
        .int("n_probs", 0, 20)?
        .filter(|&n| n > 0)
        .map(|n| n as usize);
    let ignore_eos = f.bool("ignore_eos")?.unwrap_or(false);
    Ok(GenRequest {
        prompts: vec![prompt],
        params: GenParams {
            sampling,
            max_tokens: usize::try_from(n_predict).ok(),
            stop,
            constraint: constraint(f, json)?,
            logprobs: n_probs,
            ends_at_eog: !ignore_eos,
            ..GenParams::default()
        },
        stream: f.bool("stream")?.unwrap_or(false),
        include_usage: false,
    })
}

/// llama.cpp's `stop_type`, and the stop string that ended the reply.
fn stop_type(finish: &Finish) -> (&'static str, &str) {
    match finish {
        Finish::EndOfGeneration(_) | Finish::Constraint | Finish::ToolCalls(_) => ("eos", ""),
        Finish::StopString(s) => ("word", s),
        Finish::Length => ("limit", ""),
    }
}

/// The answer of `/completion` and `/infill`: `{"content", "stop", ...}`, whole, or a stream of
/// such objects of which the last has `stop: true`, the timings and the settings (llama-server
/// sends no `[DONE]` here).
pub(crate) struct CompletionReply {
    model: String,
    n_probs: Option<usize>,
    settings: Value,
}

impl CompletionReply {
    pub fn new(req: &GenRequest, model: &str) -> Self {
        let p = &req.params;
        let s = &p.sampling;
        CompletionReply {
            model: model.to_string(),
            n_probs: p.logprobs,
            settings: json!({
                "n_predict": p.max_tokens.map_or(-1, |n| n as i64),
                "temperature": s.temp, "top_k": s.top_k, "top_p": s.top_p, "min_p": s.min_p,
                "repeat_penalty": s.repeat_penalty, "repeat_last_n": s.repeat_last_n,
                "presence_penalty": s.presence_penalty, "frequency_penalty": s.frequency_penalty,
                "seed": s.seed, "stop": p.stop, "ignore_eos": !p.ends_at_eog,
                "n_probs": p.logprobs.unwrap_or(0),
            }),
        }
    }

    /// `completion_probabilities`: each token with its log-probability and the alternatives.
    fn probabilities(&self, tokens: &[Sampled]) -> Option<Value> {
        self.n_probs?;
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Some(
            tokens
                .iter()
                .filter_map(|t| t.logprob.as_ref().map(|lp| (t.id, lp)))
                .map(|(id, lp)| {
                    let top: Vec<Value> = lp
                        .top
                        .iter()
                        .map(|c| json!({"id": c.id, "token": text(&c.bytes), "logprob": c.logprob, "bytes": c.bytes}))
                        .collect();
                    json!({"id": id, "token": text(&lp.bytes), "logprob": lp.logprob,
                           "bytes": lp.bytes, "top_logprobs": top})
                })
                .collect(),
        )
    }

    fn last(&self, content: &str, finish: &Finish, usage: &Usage) -> Value {
        let (stop_type, word) = stop_type(finish);
        json!({
            "index": 0,
            "content": content,
            "tokens": [],
            "id_slot": 0,
            "stop": true,
            "model": self.model,
            "tokens_predicted": usage.completion_tokens,
            "tokens_evaluated": usage.prompt_tokens,
            "tokens_cached": usage.cached_tokens,
            "generation_settings": self.settings,
            "has_new_line": content.contains('\n'),
            "truncated": false,
            "stop_type": stop_type,
            "stopping_word": word,
            "timings": timings_json(usage),
        })
    }
}

impl Reply for CompletionReply {
    fn delta(&mut self, _choice: usize, delta: &Delta) -> Vec<SseFrame> {
        let mut chunk =
            json!({"index": 0, "content": delta.text, "tokens": [], "stop": false, "id_slot": 0});
        if let Some(p) = self.probabilities(&delta.tokens) {
            chunk["completion_probabilities"] = p;
        }
        vec![SseFrame::json(&chunk)]
    }

    fn done(&mut self, _choice: usize, finish: &Finish, usage: &Usage) -> Vec<SseFrame> {
        vec![SseFrame::json(&self.last("", finish, usage))]
    }

    fn error(&mut self, e: &ApiError) -> Vec<SseFrame> {
        vec![SseFrame::json(&e.to_json())]
    }

    fn whole(&self, answers: &[Answer], usage: &Usage) -> Value {
        let [Answer {
            text,
            tokens,
            finish,
        }, ..] = answers
        else {
            return Value::Null;
        };
        let mut v = self.last(text, finish, usage);
        if let Some(p) = self.probabilities(tokens) {
            v["completion_probabilities"] = p;
        }
        v
    }
}

pub(crate) struct TokenizeRequest {
    pub text: String,
    pub add_special: bool,
    pub parse_special: bool,
    pub with_pieces: bool,
}

pub(crate) fn parse_tokenize(body: &[u8]) -> Result<TokenizeRequest, ApiError> {
    let obj = parse_object(body)?;
    let f = Fields(&obj);
    Ok(TokenizeRequest {
        text: f
            .string("content")?
            .ok_or_else(|| ApiError::bad_request("`content` is missing"))?
            .to_string(),
        add_special: f.bool("add_special")?.unwrap_or(false),
        parse_special: f.bool("parse_special")?.unwrap_or(true),
        with_pieces: f.bool("with_pieces")?.unwrap_or(false),
    })
}

pub(crate) fn parse_detokenize(body: &[u8]) -> Result<Vec<u32>, ApiError> {
    let obj = parse_object(body)?;
    match obj.get("tokens") {
        Some(Value::Array(a)) => token_ids(a, "tokens"),
        _ => Err(ApiError::bad_request(
            "`tokens` must be an array of token ids",
        )),
    }
}

pub(crate) fn parse_apply_template(body: &[u8]) -> Result<Vec<ChatMessage>, ApiError> {
    let obj = parse_object(body)?;
    parse_messages(obj.get("messages"))
}

pub(crate) fn tokenize_response(tokens: &[(u32, Vec<u8>)], with_pieces: bool) -> Value {
    if !with_pieces {
        return json!({"tokens": tokens.iter().map(|(id, _)| *id).collect::<Vec<_>>()});
    }
    // As llama.cpp: the piece as a string when it is valid UTF-8, else its bytes.
    let list: Vec<Value> = tokens
        .iter()
        .map(|(id, piece)| match std::str::from_utf8(piece) {
            Ok(s) => json!({"id": id, "piece": s}),
            Err(_) => json!({"id": id, "piece": piece}),
        })
        .collect();
    json!({"tokens": list})
}

/// `/embedding`'s answer, as llama-server gives it with pooling: one entry per input, its vector
/// inside a list.
pub(crate) fn embedding_response(embeddings: &[Embedding]) -> Value {
    Value::Array(
        embeddings
            .iter()
            .enumerate()
            .map(|(i, e)| json!({"index": i, "embedding": [e.vector]}))
            .collect(),
    )
}
