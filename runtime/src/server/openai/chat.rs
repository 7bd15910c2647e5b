//! `/v1/chat/completions`: a conversation in, the assistant's reply out, whole or as
//! `chat.completion.chunk` events.

use serde_json::{json, Map, Value};

use super::{chat_tools, finish_reason, parse_common, refuse_tools, stream_error, Envelope};
use crate::generator::{Delta, Finish, Sampled};
use crate::jobs::{PromptInput, Usage};
use crate::messages::{ChatMessage, ContentPart, ToolCall};
use crate::server::error::ApiError;
use crate::server::reply::{Answer, Reply, SseFrame};
use crate::server::request::{parse_object, short, Fields, GenRequest};

pub(crate) fn parse(body: &[u8]) -> Result<GenRequest, ApiError> {
    let obj = parse_object(body)?;
    let f = Fields(&obj);
    refuse_tools(&f, &["functions", "function_call"])?;
    let prompt = PromptInput::Chat {
        messages: parse_messages(f.get("messages"))?,
        tools: chat_tools::parse(&f)?,
    };
    let logprobs = match f.bool("logprobs")? {
        Some(true) => Some(f.int("top_logprobs", 0, 20)?.unwrap_or(0) as usize),
        _ => None,
    };
    parse_common(&f, vec![prompt], logprobs)
}

pub(crate) fn parse_messages(v: Option<&Value>) -> Result<Vec<ChatMessage>, ApiError> {
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
        None => Vec::new(),
        Some(Value::String(s)) => vec![ContentPart::Text(s.clone())],
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| parse_part(i, j, part))
            .collect::<Result<_, _>>()?,
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "`messages[{i}].content` must be a string or an array of text parts, got {}",
                short(v)
            )))
        }
    };
    let tool_calls = match (role, f.get("tool_calls")) {
        (_, None) => Vec::new(),
        ("assistant", Some(Value::Array(calls))) => calls
            .iter()
            .enumerate()
            .map(|(j, call)| parse_tool_call(i, j, call))
            .collect::<Result<_, _>>()?,
        ("assistant", Some(v)) => {
            return Err(ApiError::bad_request(format!(
                "`messages[{i}].tool_calls` must be an array of tool calls, got {}",
                short(v)
            )))
        }
        (_, Some(_)) => {
            return Err(ApiError::bad_request(format!(
                "`messages[{i}].tool_calls`: only assistant messages carry tool calls"
            )))
        }
    };
    let field = |key: &str| {
        f.string(key)
            .map_err(|_| ApiError::bad_request(format!("`messages[{i}].{key}` must be a string")))
            .map(|v| v.map(str::to_string))
    };
    Ok(ChatMessage {
        role: role.to_string(),
        content,
        tool_calls,
        tool_call_id: field("tool_call_id")?,
        name: field("name")?,
    })
}

fn parse_part(i: usize, j: usize, part: &Value) -> Result<ContentPart, ApiError> {
    let kind = part.get("type").and_then(Value::as_str);
    match (kind, part.get("text").and_then(Value::as_str)) {
        (Some("text"), Some(text)) => Ok(ContentPart::Text(text.to_string())),
        (Some("text"), None) => Err(ApiError::bad_request(format!(
            "`messages[{i}].content[{j}].text` must be a string"
        ))),
        (Some(other), _) => Err(ApiError::bad_request(format!(
            "`messages[{i}].content[{j}]`: content parts of type {other:?} are not supported; this server reads text"
        ))),
        (None, _) => Err(ApiError::bad_request(format!(
            "`messages[{i}].content[{j}].type` is missing"
        ))),
    }
}

/// `{"id", "type": "function", "function": {"name", "arguments"}}`, the arguments a JSON text
/// (OpenAI's form) or already an object.
fn parse_tool_call(i: usize, j: usize, call: &Value) -> Result<ToolCall, ApiError> {
    let at = |field: &str| format!("`messages[{i}].tool_calls[{j}]{field}`");
    let bad = |field: &str, what: &str| ApiError::bad_request(format!("{} {what}", at(field)));
    let Value::Object(call) = call else {
        return Err(bad("", "must be an object"));
    };
    let f = Fields(call);
    match f.get("type") {
        None => {}
        Some(Value::String(t)) if t == "function" => {}
        Some(v) => {
            return Err(bad(
                ".type",
                &format!("must be \"function\", got {}", short(v)),
            ))
        }
    }
    let id = f
        .string("id")
        .map_err(|_| bad(".id", "must be a string"))?
        .unwrap_or_default()
        .to_string();
    let Some(Value::Object(function)) = f.get("function") else {
        return Err(bad(
            ".function",
            "must be an object with `name` and `arguments`",
        ));
    };
    let function = Fields(function);
    let name = match function.string("name") {
        Ok(Some(name)) => name.to_string(),
        _ => return Err(bad(".function.name", "must be a string")),
    };
    let arguments = match function.get("arguments") {
        None => Value::Object(Default::default()),
        Some(Value::String(text)) => serde_json::from_str(text).map_err(|e| {
            bad(
                ".function.arguments",
                &format!("must be a JSON text, but it does not parse: {e}"),
            )
        })?,
        Some(v @ Value::Object(_)) => v.clone(),
        Some(v) => {
            return Err(bad(
                ".function.arguments",
                &format!("must be a JSON text or an object, got {}", short(v)),
            ))
        }
    };
    Ok(ToolCall {
        id,
        name,
        arguments,
    })
}

/// A chat answer's rendering.
pub(crate) struct ChatReply {
    envelope: Envelope,
    logprobs: bool,
    include_usage: bool,
    /// Choices that have sent no chunk yet: a choice's first carries the role.
    started: Vec<bool>,
}

impl ChatReply {
    pub fn new(req: &GenRequest, model: &str) -> Self {
        ChatReply {
            envelope: Envelope::new("chatcmpl", model),
            logprobs: req.params.logprobs.is_some(),
            include_usage: req.include_usage,
            started: vec![false; req.prompts.len()],
        }
    }

    fn logprobs_json(&self, tokens: &[Sampled]) -> Value {
        if !self.logprobs {
            return Value::Null;
        }
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let content: Vec<Value> = tokens
            .iter()
            .filter_map(|t| t.logprob.as_ref())
            .map(|e| {
                let top: Vec<Value> = e
                    .top
                    .iter()
                    .map(|c| json!({"token": text(&c.bytes), "logprob": c.logprob, "bytes": c.bytes}))
                    .collect();
                json!({"token": text(&e.bytes), "logprob": e.logprob, "bytes": e.bytes, "top_logprobs": top})
            })
            .collect();
        json!({"content": content, "refusal": null})
    }

    /// One chunk of a choice: new text, calls, or its end.
    fn chunk(
        &mut self,
        index: usize,
        mut delta: Map<String, Value>,
        logprobs: Value,
        finish: Option<&Finish>,
    ) -> Value {
        if let Some(started) = self.started.get_mut(index) {
            if !std::mem::replace(started, true) {
                delta.insert("role".into(), json!("assistant"));
            }
        }
        let finish_reason = finish.map_or(Value::Null, |f| json!(finish_reason(f)));
        let mut chunk = self.envelope.object(CHUNK);
        chunk["choices"] = json!([{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}]);
        chunk
    }
}

const CHUNK: &str = "chat.completion.chunk";

impl Reply for ChatReply {
    fn delta(&mut self, choice: usize, delta: &Delta) -> Vec<SseFrame> {
        // Tokens whose text was held back (a tool call) and no log-probabilities to report.
        if delta.text.is_empty() && !self.logprobs {
            return Vec::new();
        }
        let logprobs = self.logprobs_json(&delta.tokens);
        let mut content = Map::new();
        content.insert("content".into(), json!(delta.text));
        vec![SseFrame::json(&self.chunk(choice, content, logprobs, None))]
    }

    fn done(&mut self, choice: usize, finish: &Finish, _usage: &Usage) -> Vec<SseFrame> {
        let mut frames = Vec::new();
        if let Finish::ToolCalls(calls) = finish {
            for call in chat_tools::stream_deltas(calls) {
                let mut delta = Map::new();
                delta.insert("tool_calls".into(), json!([call]));
                frames.push(SseFrame::json(&self.chunk(
                    choice,
                    delta,
                    Value::Null,
                    None,
                )));
            }
        }
        frames.push(SseFrame::json(&self.chunk(
            choice,
            Map::new(),
            Value::Null,
            Some(finish),
        )));
        frames
    }

    fn end(&mut self, usage: &Usage) -> Vec<SseFrame> {
        self.envelope.stream_end(CHUNK, self.include_usage, usage)
    }

    fn error(&mut self, e: &ApiError) -> Vec<SseFrame> {
        stream_error(e)
    }

    fn whole(&self, answers: &[Answer], usage: &Usage) -> Value {
        let choices = answers
            .iter()
            .enumerate()
            .map(|(index, a)| {
                let mut message = json!({"role": "assistant", "content": a.text});
                if let Finish::ToolCalls(calls) = &a.finish {
                    if a.text.is_empty() {
                        message["content"] = Value::Null;
                    }
                    message["tool_calls"] = calls.iter().map(chat_tools::call_json).collect();
                }
                json!({
                    "index": index,
                    "message": message,
                    "logprobs": self.logprobs_json(&a.tokens),
                    "finish_reason": finish_reason(&a.finish),
                })
            })
            .collect();
        self.envelope.whole("chat.completion", choices, usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::{Candidate, TokenLogprob};

    fn gen(body: &str) -> Result<GenRequest, ApiError> {
        parse(body.as_bytes())
    }

    #[test]
    fn chat_requests_parse_with_defaults_and_options() {
        let r = gen(r#"{"messages":[{"role":"developer","content":"be brief"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
                       "temperature":0,"max_tokens":5,"stop":"\n","seed":-1,"stream":true,"stream_options":{"include_usage":true},
                       "logprobs":true,"top_logprobs":3,"response_format":{"type":"json_object"},"tools":[],"user":"x"}"#)
        .unwrap();
        let PromptInput::Chat { messages: m, .. } = &r.prompts[0] else {
            panic!("chat")
        };
        assert_eq!(m[0], ChatMessage::new("system", "be brief"));
        assert_eq!(
            (m[1].role.as_str(), m[1].text()),
            ("user", "a\nb".to_string())
        );
        assert_eq!(r.params.sampling.temp, 0.0);
        assert_eq!(r.params.sampling.seed, u64::MAX);
        assert_eq!(r.params.max_tokens, Some(5));
        assert_eq!(r.params.stop, vec!["\n"]);
        assert_eq!(r.params.logprobs, Some(3));
        assert!(r.params.constraint.is_some() && r.stream && r.include_usage);
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
                r#"{"messages":[{"role":"user","content":"x"}],"n":0}"#,
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
    }

    #[test]
    fn tool_calls_and_tool_results_are_kept() {
        let r = gen(r#"{"messages":[{"role":"user","content":"weather?"},
            {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function",
              "function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}}]},
            {"role":"tool","tool_call_id":"call_1","name":"get_weather","content":"18 C"}]}"#)
        .unwrap();
        let PromptInput::Chat { messages: m, .. } = &r.prompts[0] else {
            panic!("chat")
        };
        assert_eq!(
            m[1].tool_calls,
            [ToolCall {
                id: "call_1".into(),
                name: "get_weather".into(),
                arguments: serde_json::json!({"city": "Paris"}),
            }]
        );
        assert_eq!(m[1].text(), "");
        assert_eq!(m[2].tool_call_id.as_deref(), Some("call_1"));
        assert_eq!(
            (m[2].name.as_deref(), m[2].text()),
            (Some("get_weather"), "18 C".into())
        );
        for (body, word) in [
            (
                r#"{"messages":[{"role":"user","content":"x","tool_calls":[]}]}"#,
                "only assistant messages",
            ),
            (
                r#"{"messages":[{"role":"assistant","tool_calls":[{"function":{"name":"f","arguments":"{oops"}}]}]}"#,
                "`messages[0].tool_calls[0].function.arguments` must be a JSON text",
            ),
            (
                r#"{"messages":[{"role":"assistant","tool_calls":[{"function":{"arguments":"{}"}}]}]}"#,
                "`messages[0].tool_calls[0].function.name`",
            ),
            (
                r#"{"messages":[{"role":"tool","content":"x","tool_call_id":7}]}"#,
                "`messages[0].tool_call_id` must be a string",
            ),
        ] {
            let e = gen(body).err().unwrap_or_else(|| panic!("{body} parsed"));
            assert!(e.message.contains(word), "{body}: {}", e.message);
        }
    }

    #[test]
    fn fields_that_change_the_answer_are_honoured_or_refused() {
        let r = gen(r#"{"messages":[{"role":"user","content":"x"}],"logit_bias":{"15":100,"7":-100.0},
                       "tools":[],"tool_choice":"none","parallel_tool_calls":false,"user":"u","store":false}"#)
        .unwrap();
        let mut bias = r.params.logit_bias.clone();
        bias.sort_by_key(|b| b.0);
        assert_eq!(bias, [(7, -100.0), (15, 100.0)]);
        for (body, word) in [
            (r#""tool_choice":"required""#, "no tool is offered"),
            (
                r#""functions":[{"name":"f"}]"#,
                "`functions` is not supported here; send `tools`",
            ),
            (r#""logit_bias":{"abc":1}"#, "\"abc\" is not a token id"),
            (r#""logit_bias":{"5":101}"#, "from -100 to 100"),
            (r#""logit_bias":[[5,1]]"#, "must map token ids"),
        ] {
            let body = format!(r#"{{"messages":[{{"role":"user","content":"x"}}],{body}}}"#);
            let e = gen(&body).err().unwrap_or_else(|| panic!("{body} parsed"));
            assert!(e.message.contains(word), "{body}: {}", e.message);
        }
    }

    #[test]
    fn answers_and_chunks_follow_openai() {
        let req = gen(r#"{"messages":[{"role":"user","content":"x"}],"logprobs":true}"#).unwrap();
        let mut reply = ChatReply::new(&req, "m");
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
        let tokens = vec![Sampled {
            id: 7,
            logprob: Some(TokenLogprob {
                bytes: b"Hi".to_vec(),
                logprob: -0.5,
                top: vec![candidate(7, b"Hi", -0.5), candidate(9, b"Yo", -1.5)],
            }),
        }];
        let answer = Answer {
            text: "Hi".into(),
            tokens: tokens.clone(),
            finish: Finish::StopString("\n".into()),
        };
        let v = reply.whole(&[answer], &usage);
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"]["content"], "Hi");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"]["total_tokens"], 5);
        assert_eq!(
            v["choices"][0]["logprobs"]["content"][0]["top_logprobs"][1]["token"],
            "Yo"
        );
        let frames = reply.delta(
            0,
            &Delta {
                text: "Hi".into(),
                tokens,
            },
        );
        let c: Value = serde_json::from_str(&frames[0].data).unwrap();
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["choices"][0]["delta"]["role"], "assistant");
        let end = reply.done(0, &Finish::Length, &usage);
        assert_eq!(reply.end(&usage).last().unwrap().data, "[DONE]");
        let c: Value = serde_json::from_str(&end[0].data).unwrap();
        assert_eq!(c["choices"][0]["finish_reason"], "length");
        assert!(c["choices"][0]["delta"].get("role").is_none());
    }
}
