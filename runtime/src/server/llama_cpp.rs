//! llama.cpp's own endpoints: `/tokenize`, `/detokenize`, `/apply-template`.

use serde_json::{json, Value};

use super::error::ApiError;
use super::openai::chat::parse_messages;
use super::request::{parse_object, token_ids, Fields};
use crate::messages::ChatMessage;

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
