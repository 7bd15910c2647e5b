//! Typed access to a JSON request body's fields, shared by every protocol: each wrong field is
//! refused with a message naming it.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::error::ApiError;
use crate::constraint::Constraint;
use crate::generator::GenParams;
use crate::grammar::Grammar;
use crate::jobs::PromptInput;
use crate::json_schema::Schema;
use crate::sampling::SamplerConfig;

/// A generation request as a protocol parsed it: what to continue, how, and how to answer.
pub(crate) struct GenRequest {
    /// One prompt per choice of the answer, in the answer's order (OpenAI's `n` copies of each
    /// of its prompts); the others have one.
    pub prompts: Vec<PromptInput>,
    pub params: GenParams,
    pub stream: bool,
    /// OpenAI's `stream_options.include_usage`: a last chunk with the usage.
    pub include_usage: bool,
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

/// What holds the reply: llama-server's `grammar` (GBNF text; empty means none, as there), or
/// the JSON schema the protocol's own field gave. One at most.
pub(crate) fn constraint(
    f: &Fields,
    json: Option<Arc<Schema>>,
) -> Result<Option<Constraint>, ApiError> {
    match (f.string("grammar")?.filter(|g| !g.trim().is_empty()), json) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "`grammar` and a JSON schema cannot both shape the reply",
        )),
        (Some(text), None) => Grammar::parse(text)
            .map(|g| Some(Constraint::Grammar(g)))
            .map_err(|e| ApiError::bad_request(format!("`grammar`: {e}"))),
        (None, json) => Ok(json.map(Constraint::Json)),
    }
}

/// Typed access to a request's fields; `null` counts as absent, as OpenAI's API treats it.
pub(crate) struct Fields<'a>(pub &'a Map<String, Value>);

impl<'a> Fields<'a> {
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    pub fn number(&self, key: &str, min: f64, max: f64) -> Result<Option<f32>, ApiError> {
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

    pub fn int(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
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

    pub fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        v.as_bool().map(Some).ok_or_else(|| {
            ApiError::bad_request(format!("`{key}` must be true or false, got {}", short(v)))
        })
    }

    /// An array field, each item parsed by `item` (which gets its index, for its messages); an
    /// absent field is an empty list.
    pub fn list<T>(
        &self,
        key: &str,
        item: impl Fn(usize, &Value) -> Result<T, ApiError>,
    ) -> Result<Vec<T>, ApiError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => {
                items.iter().enumerate().map(|(i, v)| item(i, v)).collect()
            }
            Some(v) => Err(ApiError::bad_request(format!(
                "`{key}` must be an array, got {}",
                short(v)
            ))),
        }
    }

    pub fn string(&self, key: &str) -> Result<Option<&'a str>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        v.as_str().map(Some).ok_or_else(|| {
            ApiError::bad_request(format!("`{key}` must be a string, got {}", short(v)))
        })
    }
}

/// A value for an error message, cut short.
pub(crate) fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

/// Token ids: non-negative integers that fit 32 bits.
pub(crate) fn token_ids(v: &[Value], what: &str) -> Result<Vec<u32>, ApiError> {
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

/// The sampling options (OpenAI's and llama.cpp's names), shared by every endpoint that takes them.
pub(crate) fn parse_sampling(f: &Fields) -> Result<SamplerConfig, ApiError> {
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
    Ok(sampling)
}
