//! `/v1/completions`: a prompt (text or token ids) continued, whole or as `text_completion`
//! events.

use serde_json::{json, Value};

use super::{finish_reason, parse_common, refuse_tools, stream_error, Envelope};
use crate::generator::{Delta, Finish, Sampled};
use crate::jobs::{PromptInput, Usage};
use crate::server::error::ApiError;
use crate::server::reply::{Answer, Reply, SseFrame};
use crate::server::request::{parse_object, token_ids, Fields, GenRequest};

/// The request, and whether its prompts are echoed before their completions (`echo`).
pub(crate) fn parse(body: &[u8]) -> Result<(GenRequest, bool), ApiError> {
    let obj = parse_object(body)?;
    let f = Fields(&obj);
    refuse_tools(&f, &["tools", "tool_choice", "functions", "function_call"])?;
    let prompts = parse_prompts(f.get("prompt"))?;
    let logprobs = f.int("logprobs", 0, 20)?.map(|k| k as usize);
    let echo = f.bool("echo")?.unwrap_or(false);
    if echo && logprobs.is_some() {
        return Err(ApiError::bad_request(
            "`echo` with `logprobs` is not supported (the prompt's log-probabilities are not given)",
        ));
    }
    if echo && prompts.iter().any(|p| !matches!(p, PromptInput::Text(_))) {
        return Err(ApiError::bad_request(
            "`echo` needs text prompts, not token ids",
        ));
    }
    Ok((parse_common(&f, prompts, logprobs)?, echo))
}

/// The prompts: a string, token ids, or a list of strings or of token-id lists (one choice each).
fn parse_prompts(v: Option<&Value>) -> Result<Vec<PromptInput>, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "`prompt` must be a string, an array of token ids, or an array of those",
        )
    };
    match v {
        Some(Value::String(s)) => Ok(vec![PromptInput::Text(s.clone())]),
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_number) => {
            Ok(vec![PromptInput::Tokens(token_ids(a, "prompt")?)])
        }
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .enumerate()
            .map(|(i, p)| match p {
                Value::String(s) => Ok(PromptInput::Text(s.clone())),
                Value::Array(ids) if !ids.is_empty() => Ok(PromptInput::Tokens(token_ids(
                    ids,
                    &format!("prompt[{i}]"),
                )?)),
                _ => Err(bad()),
            })
            .collect(),
        _ => Err(bad()),
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
    /// Characters of text sent so far in each choice: `text_offset` counts from its start.
    offsets: Vec<usize>,
    /// With `echo`, each choice's prompt, sent before its text (taken once sent).
    echo: Vec<Option<String>>,
}

impl CompletionReply {
    pub fn new(req: &GenRequest, model: &str, echo: bool) -> Self {
        CompletionReply {
            envelope: Envelope::new("cmpl", model),
            logprobs: req.params.logprobs.is_some(),
            include_usage: req.include_usage,
            offsets: vec![0; req.prompts.len()],
            echo: req
                .prompts
                .iter()
                .map(|p| match p {
                    PromptInput::Text(t) if echo => Some(t.clone()),
                    _ => None,
                })
                .collect(),
        }
    }

    fn chunk(&self, index: usize, text: &str, logprobs: Value, finish: Option<&Finish>) -> Value {
        let finish_reason = finish.map_or(Value::Null, |f| json!(finish_reason(f)));
        let mut chunk = self.envelope.object(OBJECT);
        chunk["choices"] = json!([{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}]);
        chunk
    }

    /// The prompt a choice's text starts with, if echoed and not yet sent.
    fn echoed(&mut self, choice: usize) -> String {
        self.echo
            .get_mut(choice)
            .and_then(Option::take)
            .unwrap_or_default()
    }
}

impl Reply for CompletionReply {
    fn delta(&mut self, choice: usize, delta: &Delta) -> Vec<SseFrame> {
        let logprobs = match self.offsets.get_mut(choice) {
            Some(offset) if self.logprobs => logprobs_json(&delta.tokens, offset),
            _ => Value::Null,
        };
        let text = self.echoed(choice) + &delta.text;
        vec![SseFrame::json(&self.chunk(choice, &text, logprobs, None))]
    }

    fn done(&mut self, choice: usize, finish: &Finish, _usage: &Usage) -> Vec<SseFrame> {
        let text = self.echoed(choice);
        vec![SseFrame::json(&self.chunk(
            choice,
            &text,
            Value::Null,
            Some(finish),
        ))]
    }

    fn end(&mut self, usage: &Usage) -> Vec<SseFrame> {
        self.envelope.stream_end(OBJECT, self.include_usage, usage)
    }

    fn error(&mut self, e: &ApiError) -> Vec<SseFrame> {
        stream_error(e)
    }

    fn whole(&self, answers: &[Answer], usage: &Usage) -> Value {
        let choices = answers
            .iter()
            .enumerate()
            .map(|(index, a)| {
                let logprobs = if self.logprobs {
                    logprobs_json(&a.tokens, &mut 0)
                } else {
                    Value::Null
                };
                let prompt = self.echo.get(index).cloned().flatten().unwrap_or_default();
                json!({
                    "index": index,
                    "text": prompt + &a.text,
                    "logprobs": logprobs,
                    "finish_reason": finish_reason(&a.finish),
                })
            })
            .collect();
        self.envelope.whole(OBJECT, choices, usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::{Candidate, TokenLogprob};

    #[test]
    fn prompts_are_text_or_token_ids_and_n_copies_of_each_make_the_choices() {
        let (r, echo) = parse(br#"{"prompt":[[1,2,3]],"logprobs":2}"#).unwrap();
        assert!(matches!(&r.prompts[..], [PromptInput::Tokens(t)] if t == &[1, 2, 3]));
        assert_eq!((r.params.logprobs, echo), (Some(2), false));
        let (r, echo) = parse(br#"{"prompt":["a",[7]],"n":2,"echo":false}"#).unwrap();
        assert!(matches!(
            &r.prompts[..],
            [PromptInput::Text(a), PromptInput::Text(b), PromptInput::Tokens(c), PromptInput::Tokens(_)]
                if a == "a" && b == "a" && c == &[7]
        ));
        assert!(!echo);
        let e = parse(br#"{"prompt":"x","n":200}"#).err().unwrap();
        assert!(e.message.contains("`n`"), "{}", e.message);
        let e = parse(br#"{"prompt":[1],"echo":true}"#).err().unwrap();
        assert!(
            e.message.contains("`echo` needs text prompts"),
            "{}",
            e.message
        );
        let e = parse(br#"{"prompt":"x","echo":true,"logprobs":1}"#)
            .err()
            .unwrap();
        assert!(
            e.message.contains("`echo` with `logprobs`"),
            "{}",
            e.message
        );
        let e = parse(br#"{"prompt":[1,-2]}"#).err().unwrap();
        assert!(e.message.contains("token ids"));
        let e = parse(br#"{"prompt":"x","best_of":3}"#).err().unwrap();
        assert!(e.message.contains("`best_of`"));
    }

    #[test]
    fn text_offsets_run_on_across_chunks() {
        let (req, echo) = parse(br#"{"prompt":"x","logprobs":1}"#).unwrap();
        let mut reply = CompletionReply::new(&req, "m", echo);
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
        let a = chunk(reply.delta(0, &delta));
        let b = chunk(reply.delta(0, &delta));
        let lp = |c: &Value, key: &str| c["choices"][0]["logprobs"][key].clone();
        assert_eq!(a["object"], "text_completion");
        assert_eq!(
            (lp(&a, "text_offset"), lp(&b, "text_offset")),
            (json!([0]), json!([2]))
        );
        assert_eq!(lp(&a, "top_logprobs")[0]["Yo"], json!(-1.5));
    }
}
