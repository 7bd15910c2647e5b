//! `/v1/completions`: a prompt (text or token ids) continued, whole or as `text_completion`
//! events.

use serde_json::{json, Value};

use super::{finish_reason, parse_common, refuse_tools, stream_error, Envelope};
use crate::generator::{Delta, Finish, Sampled};
use crate::jobs::{PromptInput, Usage};
use crate::server::error::ApiError;
use crate::server::reply::{Reply, SseFrame};
use crate::server::request::{parse_object, token_ids, Fields, GenRequest};

pub(crate) fn parse(body: &[u8]) -> Result<GenRequest, ApiError> {
    let obj = parse_object(body)?;
    let f = Fields(&obj);
    refuse_tools(&f, &["tools", "tool_choice", "functions", "function_call"])?;
    let prompt = parse_prompt(f.get("prompt"))?;
    let logprobs = f.int("logprobs", 0, 20)?.map(|k| k as usize);
    parse_common(&f, prompt, logprobs)
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

const OBJECT: &str = "text_completion";

/// The legacy completions shape of log-probabilities: parallel lists of tokens, their logprobs,
/// the top alternatives as objects, and each token's character offset in the completion, counted
/// on from `offset`.
fn logprobs_json(tokens: &[Sampled], offset: &mut usize) -> Value {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let entries: Vec<_> = tokens.iter().filter_map(|t| t.logprob.as_ref()).collect();
    let mut offsets = Vec::new();
    for e in &entries {
        offsets.push(*offset);
        *offset += text(&e.bytes).chars().count();
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

/// A completion's rendering.
pub(crate) struct CompletionReply {
    envelope: Envelope,
    logprobs: bool,
    include_usage: bool,
    /// Characters of text sent so far: `text_offset` counts from the start of the completion.
    offset: usize,
}

impl CompletionReply {
    pub fn new(req: &GenRequest, model: &str) -> Self {
        CompletionReply {
            envelope: Envelope::new("cmpl", model),
            logprobs: req.params.logprobs.is_some(),
            include_usage: req.include_usage,
            offset: 0,
        }
    }

    fn chunk(&self, text: &str, logprobs: Value, finish: Option<&Finish>) -> Value {
        let finish_reason = finish.map_or(Value::Null, |f| json!(finish_reason(f)));
        let mut chunk = self.envelope.object(OBJECT);
        chunk["choices"] = json!([{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}]);
        chunk
    }
}

impl Reply for CompletionReply {
    fn delta(&mut self, delta: &Delta) -> Vec<SseFrame> {
        let logprobs = if self.logprobs {
            logprobs_json(&delta.tokens, &mut self.offset)
        } else {
            Value::Null
        };
        vec![SseFrame::json(&self.chunk(&delta.text, logprobs, None))]
    }

    fn done(&mut self, finish: &Finish, usage: &Usage) -> Vec<SseFrame> {
        let last = self.chunk("", Value::Null, Some(finish));
        self.envelope
            .stream_end(OBJECT, last, self.include_usage, usage)
    }

    fn error(&mut self, e: &ApiError) -> Vec<SseFrame> {
        stream_error(e)
    }

    fn whole(&self, text: &str, tokens: &[Sampled], finish: &Finish, usage: &Usage) -> Value {
        let logprobs = if self.logprobs {
            logprobs_json(tokens, &mut 0)
        } else {
            Value::Null
        };
        let choice = json!({
            "index": 0,
            "text": text,
            "logprobs": logprobs,
            "finish_reason": finish_reason(finish),
        });
        self.envelope.whole(OBJECT, choice, usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::{Candidate, TokenLogprob};

    #[test]
    fn prompts_are_text_or_token_ids_one_per_request() {
        let r = parse(br#"{"prompt":[[1,2,3]],"logprobs":2}"#).unwrap();
        assert!(matches!(&r.prompt, PromptInput::Tokens(t) if t == &[1, 2, 3]));
        assert_eq!(r.params.logprobs, Some(2));
        let e = parse(br#"{"prompt":["a","b"]}"#).err().unwrap();
        assert!(e.message.contains("one prompt"));
        let e = parse(br#"{"prompt":[1,-2]}"#).err().unwrap();
        assert!(e.message.contains("token ids"));
        let e = parse(br#"{"prompt":"x","best_of":3}"#).err().unwrap();
        assert!(e.message.contains("`best_of`"));
    }

    #[test]
    fn text_offsets_run_on_across_chunks() {
        let req = parse(br#"{"prompt":"x","logprobs":1}"#).unwrap();
        let mut reply = CompletionReply::new(&req, "m");
        let token = Sampled {
            id: 7,
            logprob: Some(TokenLogprob {
                bytes: b"Hi".to_vec(),
                logprob: -0.5,
                top: vec![Candidate {
                    id: 9,
                    bytes: b"Yo".to_vec(),
                    logprob: -1.5,
                }],
            }),
        };
        let delta = Delta {
            text: "Hi".into(),
            tokens: vec![token],
        };
        let chunk =
            |frames: Vec<SseFrame>| -> Value { serde_json::from_str(&frames[0].data).unwrap() };
        let a = chunk(reply.delta(&delta));
        let b = chunk(reply.delta(&delta));
        let lp = |c: &Value, key: &str| c["choices"][0]["logprobs"][key].clone();
        assert_eq!(a["object"], "text_completion");
        assert_eq!(
            (lp(&a, "text_offset"), lp(&b, "text_offset")),
            (json!([0]), json!([2]))
        );
        assert_eq!(lp(&a, "top_logprobs")[0]["Yo"], json!(-1.5));
    }
}
