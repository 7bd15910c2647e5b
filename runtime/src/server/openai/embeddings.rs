//! `/v1/embeddings`: one vector per input, as floats or base64.

use serde_json::{json, Value};

use crate::jobs::{Embedding, PromptInput};
use crate::server::error::ApiError;
use crate::server::request::{parse_object, token_ids, Fields};

pub(crate) struct EmbedRequest {
    pub inputs: Vec<PromptInput>,
    pub base64: bool,
    /// `dimensions`, if asked: only the model's own width can be given (shortening a vector is
    /// meaningful only for models trained for it).
    pub dimensions: Option<usize>,
}

impl EmbedRequest {
    /// The error for a `dimensions` other than the model's `width`.
    pub fn check_dimensions(&self, width: usize) -> Result<(), ApiError> {
        match self.dimensions {
            Some(d) if d != width => Err(ApiError::bad_request(format!(
                "`dimensions`: this model's embeddings have {width} dimensions; it cannot give {d}"
            ))),
            _ => Ok(()),
        }
    }
}

pub(crate) fn parse(body: &[u8]) -> Result<EmbedRequest, ApiError> {
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
    let dimensions = f.int("dimensions", 1, 1 << 20)?.map(|d| d as usize);
    Ok(EmbedRequest {
        inputs,
        base64,
        dimensions,
    })
}

pub(crate) fn response(model: &str, embeddings: &[Embedding], base64: bool) -> Value {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_texts_or_token_ids() {
        let e = parse(br#"{"input":["a",[5,6]],"encoding_format":"base64"}"#).unwrap();
        assert_eq!(e.inputs.len(), 2);
        assert!(e.base64);
        assert!(parse(br#"{"input":[]}"#).is_err());
        assert!(parse(br#"{"input":"x","encoding_format":"hex"}"#).is_err());
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
}
