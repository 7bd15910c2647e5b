//! The OpenAI-compatible API: parsing requests (every field checked, errors naming the field) and
//! the JSON shapes of responses and stream chunks. Pure functions of bytes and values, so that
//! they can be tested and fuzzed without a model.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::chat_template::ChatMessage;
use crate::generator::{Finish, GenParams, Sampled};
use crate::json_schema::Schema;
use crate::sampling::SamplerConfig;
use crate::scheduler::{Embedding, PromptInput, Refusal, Usage};

/// An error answered with OpenAI's error JSON: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Invalid(message) => ApiError::bad_request(message),
            Refusal::Busy(message) => ApiError::unavailable(message),
        }
    }
}

impl ApiError {
    fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request_error", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            401,
            "authentication_error",
            "invalid or missing API key: send the header `Authorization: Bearer KEY`",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "permission_error", message)
    }

    pub fn not_found(path: &str) -> Self {
        Self::new(404, "not_found_error", format!("no such endpoint: {path}"))
    }

    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            405,
            "invalid_request_error",
            format!("{method} is not allowed on {path}"),
        )
    }

    pub fn timeout() -> Self {
        Self::new(
            408,
            "invalid_request_error",
            "the request body did not arrive in time",
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "invalid_request_error",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "unavailable_error", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "server_error", message)
    }

    pub fn to_json(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": null, "code": self.status}})
    }
}

/// Requests that generate text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Chat,
    Completion,
}

pub(crate) struct GenRequest {
    pub prompt: PromptInput,
    pub params: GenParams,
    pub stream: bool,
    pub include_usage: bool,
}

pub(crate) struct EmbedRequest {
    pub inputs: Vec<PromptInput>,
    pub base64: bool,
}

/// The body as a JSON object.
pub(crate) fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(ApiError::bad_request(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

/// Typed access to a request's fields; `null` counts as absent, as OpenAI's API treats it.
struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    fn number(&self, key: &str, min: f64, max: f64) -> Result<Option<f32>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v.as_f64() {
            Some(x) if x >= min && x <= max => Ok(Some(x as f32)),
            _ => Err(ApiError::bad_request(format!(
                "`{key}` must be a number from {min} to {max}, got {}",
                short(v)
            ))),
        }
    }

    fn int(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v.as_i64() {
            Some(x) if x >= min && x <= max => Ok(Some(x)),
            _ => Err(ApiError::bad_request(format!(
                "`{key}` must be an integer from {min} to {max}, got {}",
                short(v)
            ))),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        v.as_bool().map(Some).ok_or_else(|| {
            ApiError::bad_request(format!("`{key}` must be true or false, got {}", short(v)))
        })
    }

    fn string(&self, key: &str) -> Result<Option<&'a str>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        v.as_str().map(Some).ok_or_else(|| {
            ApiError::bad_request(format!("`{key}` must be a string, got {}", short(v)))
        })
    }
}

/// A value for an error message, cut short.
fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

/// Upper bound on `max_tokens` worth stating; the context clamps it anyway.
const MAX_TOKENS_LIMIT: i64 = 1 << 40;

pub(crate) fn parse_generation(body: &[u8], endpoint: Endpoint) -> Result<GenRequest, ApiError> {
    let obj = parse_object(body)?;
    let f = Fields(&obj);
    let prompt = match endpoint {
        Endpoint::Chat => PromptInput::Chat(parse_messages(f.get("messages"))?),
        Endpoint::Completion => parse_prompt(f.get("prompt"))?,
    };
    f.int("n", 1, 1)
        .map_err(|_| ApiError::bad_request("`n` must be 1: one choice per request"))?;
    if f.bool("echo")? == Some(true) {
        return Err(ApiError::bad_request("`echo` is not supported"));
    }
    if f.string("suffix")?.is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_request("`suffix` is not supported"));
    }

    let mut sampling = SamplerConfig::default();
    if let Some(t) = f.number("temperature", 0.0, 100.0)? {
        sampling.temp = t;
    }
    if let Some(p) = f.number("top_p", 0.0, 1.0)? {
        sampling.top_p = p;
    }
    if let Some(k) = f.int("top_k", i64::from(i32::MIN), i64::from(i32::MAX))? {
        sampling.top_k = k as i32;
    }
    if let Some(p) = f.number("min_p", 0.0, 1.0)? {
        sampling.min_p = p;
    }
    if let Some(p) = f.number("presence_penalty", -2.0, 2.0)? {
        sampling.presence_penalty = p;
    }
    if let Some(p) = f.number("frequency_penalty", -2.0, 2.0)? {
        sampling.frequency_penalty = p;
    }
    if let Some(p) = f.number("repeat_penalty", 0.0, 100.0)? {
        sampling.repeat_penalty = p;
    }
    if let Some(n) = f.int("repeat_last_n", -1, i64::from(i32::MAX))? {
        sampling.repeat_last_n = n as i32;
    }
    if let Some(v) = f.get("seed") {
        sampling.seed = match (v.as_u64(), v.as_i64()) {
            (Some(u), _) => u,
            (None, Some(i)) => i as u64,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "`seed` must be an integer, got {}",
                    short(v)
                )))
            }
        };
    }

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

    let logprobs = match endpoint {
        Endpoint::Chat => match f.bool("logprobs")? {
            Some(true) => Some(f.int("top_logprobs", 0, 20)?.unwrap_or(0) as usize),
            _ => None,
        },
        Endpoint::Completion => f.int("logprobs", 0, 20)?.map(|k| k as usize),
    };

    let json = parse_response_format(&f)?;
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
        prompt,
        params: GenParams {
            sampling,
            max_tokens,
            stop,
            logprobs,
            json,
            ..GenParams::default()
        },
        stream,
        include_usage,
    })
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

fn parse_messages(v: Option<&Value>) -> Result<Vec<ChatMessage>, ApiError> {
    let Some(Value::Array(list)) = v else {
        return Err(ApiError::bad_request(
            "`messages` must be an array of messages",
        ));
    };
    if list.is_empty() {
        return Err(ApiError::bad_request("`messages` is empty"));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| parse_message(i, m))
        .collect()
}

fn parse_message(i: usize, m: &Value) -> Result<ChatMessage, ApiError> {
    let Value::Object(m) = m else {
        return Err(ApiError::bad_request(format!(
            "`messages[{i}]` must be an object"
        )));
    };
    let f = Fields(m);
    let role = match f.string("role").map_err(|_| ApiError::bad_request(format!("`messages[{i}].role` must be a string")))? {
        Some("developer") => "system",
        Some(r @ ("system" | "user" | "assistant" | "tool")) => r,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`messages[{i}].role` must be system, developer, user, assistant or tool, got {other:?}"
            )))
        }
        None => return Err(ApiError::bad_request(format!("`messages[{i}].role` is missing"))),
    };
    let content = match f.get("content") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::new();
            for (j, part) in parts.iter().enumerate() {
                let kind = part.get("type").and_then(Value::as_str);
                match (kind, part.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(text)) => texts.push(text),
                    (Some("text"), None) => {
                        return Err(ApiError::bad_request(format!("`messages[{i}].content[{j}].text` must be a string")))
                    }
                    (Some(other), _) => {
                        return Err(ApiError::bad_request(format!(
                            "`messages[{i}].content[{j}]`: content parts of type {other:?} are not supported; this server reads text"
                        )))
                    }
                    (None, _) => return Err(ApiError::bad_request(format!("`messages[{i}].content[{j}].type` is missing"))),
                }
            }
            // llama.cpp joins text parts with newlines.
            texts.join("\n")
        }
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "`messages[{i}].content` must be a string or an array of text parts, got {}",
                short(v)
            )))
        }
    };
    Ok(ChatMessage {
        role: role.to_string(),
        content,
    })
}

fn token_ids(v: &[Value], what: &str) -> Result<Vec<u32>, ApiError> {
    v.iter()
        .map(|t| {
            t.as_u64()
                .and_then(|t| u32::try_from(t).ok())
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "`{what}` must hold token ids (non-negative integers), got {}",
                        short(t)
                    ))
                })
        })
        .collect()
}

/// One prompt: a string, token ids, or a list holding exactly one of those.
fn parse_prompt(v: Option<&Value>) -> Result<PromptInput, ApiError> {
    match v {
        Some(Value::String(s)) => Ok(PromptInput::Text(s.clone())),
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_number) => {
            Ok(PromptInput::Tokens(token_ids(a, "prompt")?))
        }
        Some(Value::Array(a)) if a.len() == 1 => parse_prompt(a.first()),
        Some(Value::Array(a)) if a.len() > 1 => {
            Err(ApiError::bad_request("send one prompt per request"))
        }
        _ => Err(ApiError::bad_request(
            "`prompt` must be a string or an array of token ids",
        )),
    }
}

pub(crate) fn parse_embeddings(body: &[u8]) -> Result<EmbedRequest, ApiError> {
    let obj = parse_object(body)?;
    let f = Fields(&obj);
    let bad = || {
        ApiError::bad_request("`input` must be a string, an array of strings, an array of token ids or an array of those")
    };
    let inputs = match f.get("input").or(f.get("content")) {
        Some(Value::String(s)) => vec![PromptInput::Text(s.clone())],
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_number) => {
            vec![PromptInput::Tokens(token_ids(a, "input")?)]
        }
        Some(Value::Array(a)) if !a.is_empty() && a.len() <= 2048 => a
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(PromptInput::Text(s.clone())),
                Value::Array(ids) => Ok(PromptInput::Tokens(token_ids(ids, "input")?)),
                _ => Err(bad()),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad()),
    };
    let base64 = match f.string("encoding_format")? {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`encoding_format` must be float or base64, got {other:?}"
            )))
        }
    };
    Ok(EmbedRequest { inputs, base64 })
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

pub(crate) fn embeddings_response(model: &str, embeddings: &[Embedding], base64: bool) -> Value {
    let data: Vec<Value> = embeddings
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let vector = if base64 {
                let bytes: Vec<u8> = e.vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                Value::String(base64_encode(&bytes))
            } else {
                json!(e.vector)
            };
            json!({"object": "embedding", "index": i, "embedding": vector})
        })
        .collect();
    let n: usize = embeddings.iter().map(|e| e.n_tokens).sum();
    json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": n, "total_tokens": n}})
}

/// Standard base64 with padding (RFC 4648), the encoding OpenAI uses for `encoding_format: base64`.
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What every response of one request shares.
pub(crate) struct ResponseMeta {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub endpoint: Endpoint,
    pub logprobs: bool,
    pub include_usage: bool,
}

pub(crate) fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

/// OpenAI's `finish_reason`: `stop` for every way the reply ends by itself.
fn finish_reason(finish: &Finish) -> &'static str {
    match finish {
        Finish::EndOfGeneration(_) | Finish::StopString(_) | Finish::Constraint => "stop",
        Finish::Length => "length",
    }
}

/// Formats log-probabilities in the shape of the request's endpoint; keeps the running character
/// offset that completions' `text_offset` needs.
#[derive(Default)]
pub(crate) struct LogprobFormatter {
    offset: usize,
}

impl LogprobFormatter {
    pub fn format(&mut self, endpoint: Endpoint, tokens: &[Sampled]) -> Value {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let entries: Vec<_> = tokens.iter().filter_map(|t| t.logprob.as_ref()).collect();
        match endpoint {
            Endpoint::Chat => {
                let content: Vec<Value> = entries
                    .iter()
                    .map(|e| {
                        let top: Vec<Value> =
                            e.top.iter().map(|c| json!({"token": text(&c.bytes), "logprob": c.logprob, "bytes": c.bytes})).collect();
                        json!({"token": text(&e.bytes), "logprob": e.logprob, "bytes": e.bytes, "top_logprobs": top})
                    })
                    .collect();
                json!({"content": content, "refusal": null})
            }
            Endpoint::Completion => {
                let mut offsets = Vec::new();
                for e in &entries {
                    offsets.push(self.offset);
                    self.offset += text(&e.bytes).chars().count();
                }
                let top: Vec<Value> = entries
                    .iter()
                    .map(|e| {
                        Value::Object(
                            e.top
                                .iter()
                                .map(|c| (text(&c.bytes), json!(c.logprob)))
                                .collect(),
                        )
                    })
                    .collect();
                json!({
                    "tokens": entries.iter().map(|e| text(&e.bytes)).collect::<Vec<_>>(),
                    "token_logprobs": entries.iter().map(|e| e.logprob).collect::<Vec<_>>(),
                    "top_logprobs": top,
                    "text_offset": offsets,
                })
            }
        }
    }
}

impl ResponseMeta {
    /// The whole answer of a non-streaming request.
    pub fn complete(
        &self,
        text: &str,
        tokens: &[Sampled],
        finish: &Finish,
        usage: &Usage,
    ) -> Value {
        let lp = if self.logprobs {
            LogprobFormatter::default().format(self.endpoint, tokens)
        } else {
            Value::Null
        };
        let choice = match self.endpoint {
            Endpoint::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": lp,
                "finish_reason": finish_reason(finish),
            }),
            Endpoint::Completion => {
                json!({"index": 0, "text": text, "logprobs": lp, "finish_reason": finish_reason(finish)})
            }
        };
        json!({
            "id": self.id,
            "object": match self.endpoint { Endpoint::Chat => "chat.completion", Endpoint::Completion => "text_completion" },
            "created": self.created,
            "model": self.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [choice],
            "usage": usage_json(usage),
            "timings": usage.timings_json(),
        })
    }

    /// One stream chunk: new text (the first chat chunk also carries the role) or the end.
    pub fn chunk(
        &self,
        text: Option<&str>,
        logprobs: Option<Value>,
        first: bool,
        finish: Option<&Finish>,
    ) -> Value {
        let lp = logprobs.unwrap_or(Value::Null);
        let finish_reason = finish.map_or(Value::Null, |f| json!(finish_reason(f)));
        let choice = match self.endpoint {
            Endpoint::Chat => {
                let mut delta = Map::new();
                if first {
                    delta.insert("role".into(), json!("assistant"));
                }
                if let Some(t) = text {
                    delta.insert("content".into(), json!(t));
                }
                json!({"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish_reason})
            }
            Endpoint::Completion => {
                json!({"index": 0, "text": text.unwrap_or(""), "logprobs": lp, "finish_reason": finish_reason})
            }
        };
        let mut chunk = self.chunk_envelope();
        chunk["choices"] = json!([choice]);
        chunk
    }

    /// The extra last chunk with `stream_options.include_usage`: no choices, the usage.
    pub fn usage_chunk(&self, usage: &Usage) -> Value {
        let mut chunk = self.chunk_envelope();
        chunk["choices"] = json!([]);
        chunk["usage"] = usage_json(usage);
        chunk["timings"] = usage.timings_json();
        chunk
    }

    fn chunk_envelope(&self) -> Value {
        json!({
            "id": self.id,
            "object": match self.endpoint { Endpoint::Chat => "chat.completion.chunk", Endpoint::Completion => "text_completion" },
            "created": self.created,
            "model": self.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        })
    }
}

const SYSTEM_FINGERPRINT: &str = concat!("llamafile-rs-", env!("CARGO_PKG_VERSION"));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::{Candidate, TokenLogprob};

    fn gen(body: &str) -> Result<GenRequest, ApiError> {
        parse_generation(body.as_bytes(), Endpoint::Chat)
    }

    #[test]
    fn chat_requests_parse_with_defaults_and_options() {
        let r = gen(r#"{"messages":[{"role":"developer","content":"be brief"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
                       "temperature":0,"max_tokens":5,"stop":"\n","seed":-1,"stream":true,"stream_options":{"include_usage":true},
                       "logprobs":true,"top_logprobs":3,"response_format":{"type":"json_object"},"tools":[],"user":"x"}"#)
        .unwrap();
        let PromptInput::Chat(m) = &r.prompt else {
            panic!("chat")
        };
        assert_eq!(m[0], ChatMessage::new("system", "be brief"));
        assert_eq!(m[1], ChatMessage::new("user", "a\nb"));
        assert_eq!(r.params.sampling.temp, 0.0);
        assert_eq!(r.params.sampling.seed, u64::MAX);
        assert_eq!(r.params.max_tokens, Some(5));
        assert_eq!(r.params.stop, vec!["\n"]);
        assert_eq!(r.params.logprobs, Some(3));
        assert!(r.params.json.is_some() && r.stream && r.include_usage);
        let d = gen(r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":null}"#).unwrap();
        assert_eq!(
            (d.params.max_tokens, d.stream, d.params.sampling.temp),
            (None, false, 0.8)
        );
    }

    #[test]
    fn bad_requests_name_the_field() {
        for (body, word) in [
            ("{", "not valid JSON"),
            ("[1]", "JSON object"),
            (r#"{"messages":[]}"#, "`messages` is empty"),
            (r#"{"messages":"hi"}"#, "`messages`"),
            (r#"{"messages":[{"content":"x"}]}"#, "role` is missing"),
            (
                r#"{"messages":[{"role":"wizard","content":"x"}]}"#,
                "wizard",
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#,
                "image_url",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#,
                "`temperature`",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"temperature":-1}"#,
                "`temperature`",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
                "`max_tokens`",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"n":2}"#,
                "`n`",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"top_logprobs":3,"logprobs":true,"top_p":7}"#,
                "`top_p`",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"yaml"}}"#,
                "yaml",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"schema":{"type":"date"}}}}"#,
                "JSON schema",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"stop":[1]}"#,
                "`stop`",
            ),
        ] {
            let e = gen(body).err().unwrap_or_else(|| panic!("{body} parsed"));
            assert_eq!(e.status, 400);
            assert!(e.message.contains(word), "{body}: {}", e.message);
        }
        let e = parse_generation(br#"{"prompt":["a","b"]}"#, Endpoint::Completion)
            .err()
            .unwrap();
        assert!(e.message.contains("one prompt"));
        let e = parse_generation(br#"{"prompt":[1,-2]}"#, Endpoint::Completion)
            .err()
            .unwrap();
        assert!(e.message.contains("token ids"));
    }

    #[test]
    fn completion_prompts_and_embedding_inputs() {
        let r = parse_generation(
            br#"{"prompt":[[1,2,3]],"logprobs":2}"#,
            Endpoint::Completion,
        )
        .unwrap();
        assert!(matches!(&r.prompt, PromptInput::Tokens(t) if t == &[1, 2, 3]));
        assert_eq!(r.params.logprobs, Some(2));
        let e = parse_embeddings(br#"{"input":["a",[5,6]],"encoding_format":"base64"}"#).unwrap();
        assert_eq!(e.inputs.len(), 2);
        assert!(e.base64);
        assert!(parse_embeddings(br#"{"input":[]}"#).is_err());
        assert!(parse_embeddings(br#"{"input":"x","encoding_format":"hex"}"#).is_err());
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), enc);
        }
    }

    #[test]
    fn response_shapes_follow_openai() {
        let meta = ResponseMeta {
            id: "chatcmpl-1".into(),
            created: 1,
            model: "m".into(),
            endpoint: Endpoint::Chat,
            logprobs: true,
            include_usage: false,
        };
        let usage = Usage {
            prompt_tokens: 3,
            completion_tokens: 2,
            cached_tokens: 1,
            prompt_ms: 1.0,
            gen_ms: 2.0,
        };
        let candidate = |id, bytes: &[u8], logprob| Candidate {
            id,
            bytes: bytes.to_vec(),
            logprob,
        };
        let lp = [Sampled {
            id: 7,
            logprob: Some(TokenLogprob {
                bytes: b"Hi".to_vec(),
                logprob: -0.5,
                top: vec![candidate(7, b"Hi", -0.5), candidate(9, b"Yo", -1.5)],
            }),
        }];
        let v = meta.complete("Hi", &lp, &Finish::StopString("\n".into()), &usage);
        assert_eq!(v["choices"][0]["message"]["content"], "Hi");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"]["total_tokens"], 5);
        assert_eq!(
            v["choices"][0]["logprobs"]["content"][0]["top_logprobs"][1]["token"],
            "Yo"
        );
        let c = meta.chunk(Some("Hi"), None, true, None);
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["choices"][0]["delta"]["role"], "assistant");
        let mut f = LogprobFormatter::default();
        let a = f.format(Endpoint::Completion, &lp);
        let b = f.format(Endpoint::Completion, &lp);
        assert_eq!(
            (a["text_offset"][0].clone(), b["text_offset"][0].clone()),
            (json!(0), json!(2))
        );
        assert_eq!(a["top_logprobs"][0]["Yo"], json!(-1.5));
        let err = ApiError::bad_request("nope").to_json();
        assert_eq!(err["error"]["message"], "nope");
        assert_eq!(err["error"]["code"], 400);
    }
}
