//! Anthropic's Messages API, `/v1/messages`: a system prompt and a conversation of content blocks
//! (text, `tool_use`, `tool_result`) in, the assistant's content blocks out, whole or as its named
//! stream events (`message_start`, `content_block_start`/`_delta`/`_stop`, `message_delta`,
//! `message_stop`). Clients such as anthropic-python and Claude-compatible tools send this.

use serde_json::{json, Value};

use super::error::ApiError;
use super::reply::{new_id, Answer, Reply, SseFrame};
use super::request::{parse_object, short, Fields, GenRequest};
use crate::constraint::Constraint;
use crate::generator::{Delta, Finish, GenParams};
use crate::jobs::{PromptInput, Usage};
use crate::json_schema::Schema;
use crate::messages::{ChatMessage, ContentPart, ToolCall};
use crate::sampling::SamplerConfig;
use crate::tools::{Tool, ToolChoice, ToolError, ToolRequest};

/// Upper bound on `max_tokens` worth stating; the context clamps it anyway.
const MAX_TOKENS_LIMIT: i64 = 1 << 40;

pub(crate) fn parse(body: &[u8]) -> Result<GenRequest, ApiError> {
    let obj = parse_object(body)?;
    let f = Fields(&obj);
    if matches!(f.get("thinking"), Some(Value::Object(t)) if t.get("type").and_then(Value::as_str) == Some("enabled"))
    {
        return Err(ApiError::bad_request(
            "`thinking`: extended thinking is not supported",
        ));
    }
    let max_tokens = f
        .int("max_tokens", 1, MAX_TOKENS_LIMIT)?
        .ok_or_else(|| ApiError::bad_request("`max_tokens` is required"))?;
    let mut sampling = SamplerConfig::default();
    if let Some(t) = f.number("temperature", 0.0, 2.0)? {
        sampling.temp = t;
    }
    if let Some(p) = f.number("top_p", 0.0, 1.0)? {
        sampling.top_p = p;
    }
    if let Some(k) = f.int("top_k", 0, i64::from(i32::MAX))? {
        sampling.top_k = k as i32;
    }
    let stop = match f.get("stop_sequences") {
        None => Vec::new(),
        Some(Value::Array(a)) if a.len() <= 16 && a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "`stop_sequences` must be a list of at most 16 strings",
            ))
        }
    };
    let json = parse_output_format(&f)?;
    let mut messages = parse_system(f.get("system"))?;
    messages.extend(parse_messages(f.get("messages"))?);
    Ok(GenRequest {
        prompts: vec![PromptInput::Chat {
            messages,
            tools: parse_tools(&f)?,
        }],
        params: GenParams {
            sampling,
            max_tokens: Some(max_tokens as usize),
            stop,
            constraint: json.map(Constraint::Json),
            ..GenParams::default()
        },
        stream: f.bool("stream")?.unwrap_or(false),
        include_usage: false,
    })
}

/// `output_config.format`: `{"type": "json_schema", "schema": {...}}` holds the reply to the
/// schema (structured outputs); `effort` has nothing to act on here.
fn parse_output_format(f: &Fields) -> Result<Option<std::sync::Arc<Schema>>, ApiError> {
    let format = match f.get("output_config") {
        None => return Ok(None),
        Some(Value::Object(o)) => match o.get("format") {
            None | Some(Value::Null) => return Ok(None),
            Some(format) => format,
        },
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "`output_config` must be an object, got {}",
                short(v)
            )))
        }
    };
    match (
        format.get("type").and_then(Value::as_str),
        format.get("schema"),
    ) {
        (Some("json_schema"), Some(schema)) => Schema::compile(schema)
            .map(Some)
            .map_err(|e| ApiError::bad_request(format!("`output_config.format.schema`: {e}"))),
        _ => Err(ApiError::bad_request(
            "`output_config.format` must be {\"type\": \"json_schema\", \"schema\": {...}}",
        )),
    }
}

/// `system`: a string or a list of text blocks.
fn parse_system(v: Option<&Value>) -> Result<Vec<ChatMessage>, ApiError> {
    let text = match v {
        None => return Ok(Vec::new()),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .enumerate()
            .map(|(i, b)| text_block(b, &format!("system[{i}]")))
            .collect::<Result<Vec<_>, _>>()?
            .join("\n"),
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "`system` must be a string or a list of text blocks, got {}",
                short(v)
            )))
        }
    };
    Ok(vec![ChatMessage::new("system", text)])
}

/// A `{"type": "text", "text": ...}` block's text.
fn text_block(b: &Value, at: &str) -> Result<String, ApiError> {
    match (
        b.get("type").and_then(Value::as_str),
        b.get("text").and_then(Value::as_str),
    ) {
        (Some("text"), Some(t)) => Ok(t.to_string()),
        _ => Err(ApiError::bad_request(format!(
            "`{at}` must be a text block: {{\"type\": \"text\", \"text\": ...}}"
        ))),
    }
}

/// The conversation: each user turn's `tool_result` blocks become tool messages (before its
/// text), each assistant turn's `tool_use` blocks its calls.
fn parse_messages(v: Option<&Value>) -> Result<Vec<ChatMessage>, ApiError> {
    let Some(Value::Array(list)) = v else {
        return Err(ApiError::bad_request(
            "`messages` must be an array of messages",
        ));
    };
    if list.is_empty() {
        return Err(ApiError::bad_request("`messages` is empty"));
    }
    let mut out = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let role = match m.get("role").and_then(Value::as_str) {
            Some(r @ ("user" | "assistant")) => r,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "`messages[{i}].role` must be user or assistant"
                )))
            }
        };
        let blocks = match m.get("content") {
            Some(Value::String(s)) => {
                out.push(ChatMessage::new(role, s.clone()));
                continue;
            }
            Some(Value::Array(blocks)) => blocks,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "`messages[{i}].content` must be a string or a list of content blocks"
                )))
            }
        };
        let mut turn = ChatMessage::new(role, "");
        turn.content.clear();
        for (j, block) in blocks.iter().enumerate() {
            let at = format!("messages[{i}].content[{j}]");
            match (role, block.get("type").and_then(Value::as_str)) {
                (_, Some("text")) => turn
                    .content
                    .push(ContentPart::Text(text_block(block, &at)?)),
                ("assistant", Some("tool_use")) => turn.tool_calls.push(tool_use(block, &at)?),
                ("user", Some("tool_result")) => out.push(tool_result(block, &at)?),
                (_, Some(other)) => {
                    return Err(ApiError::bad_request(format!(
                        "`{at}`: {role} content blocks of type {other:?} are not supported"
                    )))
                }
                (_, None) => return Err(ApiError::bad_request(format!("`{at}.type` is missing"))),
            }
        }
        if !turn.content.is_empty() || !turn.tool_calls.is_empty() {
            out.push(turn);
        }
    }
    Ok(out)
}

/// `{"type": "tool_use", "id", "name", "input": {...}}`.
fn tool_use(block: &Value, at: &str) -> Result<ToolCall, ApiError> {
    let string = |key: &str| {
        block
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ApiError::bad_request(format!("`{at}.{key}` must be a string")))
    };
    let arguments = match block.get("input") {
        Some(v @ Value::Object(_)) => v.clone(),
        _ => {
            return Err(ApiError::bad_request(format!(
                "`{at}.input` must be an object"
            )))
        }
    };
    Ok(ToolCall {
        id: string("id")?,
        name: string("name")?,
        arguments,
    })
}

/// `{"type": "tool_result", "tool_use_id", "content": text or text blocks, "is_error"}`.
fn tool_result(block: &Value, at: &str) -> Result<ChatMessage, ApiError> {
    let id = block
        .get("tool_use_id")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request(format!("`{at}.tool_use_id` must be a string")))?;
    let mut text = match block.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(k, p)| text_block(p, &format!("{at}.content[{k}]")))
            .collect::<Result<Vec<_>, _>>()?
            .join("\n"),
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "`{at}.content` must be a string or text blocks, got {}",
                short(v)
            )))
        }
    };
    if block.get("is_error").and_then(Value::as_bool) == Some(true) {
        text = format!("Error: {text}");
    }
    let mut message = ChatMessage::new("tool", text);
    message.tool_call_id = Some(id.to_string());
    Ok(message)
}

/// `tools` (`{"name", "description", "input_schema"}`) and `tool_choice` (`auto`, `any`, `tool`
/// with a name, `none`; `disable_parallel_tool_use`).
fn parse_tools(f: &Fields) -> Result<Option<ToolRequest>, ApiError> {
    let tools = f.list("tools", parse_tool)?;
    let (choice, parallel) = match f.get("tool_choice") {
        None => (Some(ToolChoice::Auto), true),
        Some(Value::Object(c)) => {
            let parallel =
                c.get("disable_parallel_tool_use").and_then(Value::as_bool) != Some(true);
            let choice = match c.get("type").and_then(Value::as_str) {
                Some("auto") => Some(ToolChoice::Auto),
                Some("any") => Some(ToolChoice::Required),
                Some("none") => None,
                Some("tool") => {
                    let name = c.get("name").and_then(Value::as_str).ok_or_else(|| {
                        ApiError::bad_request("`tool_choice.name` must name a tool")
                    })?;
                    Some(ToolChoice::Named(name.to_string()))
                }
                _ => {
                    return Err(ApiError::bad_request(
                        "`tool_choice.type` must be auto, any, tool or none",
                    ))
                }
            };
            (choice, parallel)
        }
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "`tool_choice` must be an object, got {}",
                short(v)
            )))
        }
    };
    ToolRequest::new(tools, choice, parallel)
        .map_err(|e| ApiError::bad_request(format!("`tools`, `tool_choice`: {e}")))
}

fn parse_tool(i: usize, tool: &Value) -> Result<Tool, ApiError> {
    let bad =
        |field: &str, what: String| ApiError::bad_request(format!("`tools[{i}]{field}` {what}"));
    if let Some(kind) = tool
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| *t != "custom")
    {
        return Err(bad(
            ".type",
            format!("{kind:?}: only client tools (with an input_schema) are supported"),
        ));
    }
    let name = tool.get("name").and_then(Value::as_str).unwrap_or_default();
    let description = tool
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_string);
    let schema = tool
        .get("input_schema")
        .cloned()
        .ok_or_else(|| bad(".input_schema", "is missing".into()))?;
    Tool::new(name, description, Some(schema)).map_err(|e| match e {
        ToolError::Name => bad(".name", e.to_string()),
        ToolError::Parameters(_) => bad(".input_schema", e.to_string()),
    })
}

/// `stop_reason` and `stop_sequence`.
fn stop_reason(finish: &Finish) -> (&'static str, Value) {
    match finish {
        Finish::EndOfGeneration(_) | Finish::Constraint => ("end_turn", Value::Null),
        Finish::StopString(s) => ("stop_sequence", json!(s)),
        Finish::Length => ("max_tokens", Value::Null),
        Finish::ToolCalls(_) => ("tool_use", Value::Null),
    }
}

/// The usage object: input tokens read afresh, those the slot's cache held, output tokens.
fn usage_json(usage: &Usage) -> Value {
    json!({
        "input_tokens": usage.prompt_tokens - usage.cached_tokens.min(usage.prompt_tokens),
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": 0,
        "output_tokens": usage.completion_tokens,
    })
}

/// Characters of a call's input per `input_json_delta`.
const INPUT_PIECE: usize = 32;

/// A Messages answer's rendering.
pub(crate) struct MessagesReply {
    id: String,
    model: String,
    /// `message_start` sent.
    started: bool,
    /// The index of the text block being streamed, if one is open.
    text_block: Option<usize>,
    /// Content blocks started so far.
    blocks: usize,
}

impl MessagesReply {
    pub fn new(model: &str) -> Self {
        MessagesReply {
            id: new_id("msg"),
            model: model.to_string(),
            started: false,
            text_block: None,
            blocks: 0,
        }
    }

    fn message(&self, content: Value, stop: (Value, Value), usage: Value) -> Value {
        json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop.0,
            "stop_sequence": stop.1,
            "usage": usage,
        })
    }

    fn frame(event: &'static str, data: Value) -> SseFrame {
        SseFrame {
            event: Some(event),
            data: data.to_string(),
        }
    }

    /// `message_start`, before the first block.
    fn start(&mut self, frames: &mut Vec<SseFrame>) {
        if !std::mem::replace(&mut self.started, true) {
            let usage = json!({"input_tokens": 0, "output_tokens": 0});
            let message = self.message(json!([]), (Value::Null, Value::Null), usage);
            frames.push(Self::frame(
                "message_start",
                json!({"type": "message_start", "message": message}),
            ));
        }
    }

    fn open_block(&mut self, frames: &mut Vec<SseFrame>, block: Value) -> usize {
        let index = self.blocks;
        self.blocks += 1;
        frames.push(Self::frame(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        index
    }

    fn close_block(frames: &mut Vec<SseFrame>, index: usize) {
        frames.push(Self::frame(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
    }
}

impl Reply for MessagesReply {
    fn delta(&mut self, _choice: usize, delta: &Delta) -> Vec<SseFrame> {
        let mut frames = Vec::new();
        if delta.text.is_empty() {
            return frames;
        }
        self.start(&mut frames);
        let index = match self.text_block {
            Some(i) => i,
            None => {
                let i = self.open_block(&mut frames, json!({"type": "text", "text": ""}));
                self.text_block = Some(i);
                i
            }
        };
        frames.push(Self::frame(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index,
                   "delta": {"type": "text_delta", "text": delta.text}}),
        ));
        frames
    }

    fn done(&mut self, _choice: usize, finish: &Finish, usage: &Usage) -> Vec<SseFrame> {
        let mut frames = Vec::new();
        self.start(&mut frames);
        if let Some(i) = self.text_block.take() {
            Self::close_block(&mut frames, i);
        }
        if let Finish::ToolCalls(calls) = finish {
            for call in calls {
                let index = self.open_block(
                    &mut frames,
                    json!({"type": "tool_use", "id": call.id, "name": call.name, "input": {}}),
                );
                let input: Vec<char> = call.arguments.to_string().chars().collect();
                for piece in input.chunks(INPUT_PIECE) {
                    let piece: String = piece.iter().collect();
                    frames.push(Self::frame(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": index,
                               "delta": {"type": "input_json_delta", "partial_json": piece}}),
                    ));
                }
                Self::close_block(&mut frames, index);
            }
        }
        let (reason, sequence) = stop_reason(finish);
        frames.push(Self::frame(
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": reason, "stop_sequence": sequence},
                   "usage": usage_json(usage)}),
        ));
        frames.push(Self::frame("message_stop", json!({"type": "message_stop"})));
        frames
    }

    fn error(&mut self, e: &ApiError) -> Vec<SseFrame> {
        let kind = if e.status == 503 {
            "overloaded_error"
        } else {
            "api_error"
        };
        vec![Self::frame(
            "error",
            json!({"type": "error", "error": {"type": kind, "message": e.message}}),
        )]
    }

    fn whole(&self, answers: &[Answer], usage: &Usage) -> Value {
        let [Answer { text, finish, .. }, ..] = answers else {
            return Value::Null;
        };
        let mut content = Vec::new();
        if !text.is_empty() {
            content.push(json!({"type": "text", "text": text}));
        }
        if let Finish::ToolCalls(calls) = finish {
            content.extend(calls.iter().map(
                |c| json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}),
            ));
        }
        let (reason, sequence) = stop_reason(finish);
        self.message(json!(content), (json!(reason), sequence), usage_json(usage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(body: Value) -> Result<GenRequest, ApiError> {
        parse(body.to_string().as_bytes())
    }

    #[test]
    fn blocks_become_the_conversation_with_calls_and_results() {
        let r = parsed(json!({
            "model": "m", "max_tokens": 20, "system": [{"type": "text", "text": "Be brief."}],
            "stop_sequences": ["END"], "temperature": 0.2,
            "tools": [{"name": "get_weather", "input_schema": {"type": "object",
                       "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [{"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C"},
                    {"type": "text", "text": "Thanks"}]},
            ],
        }))
        .unwrap();
        let PromptInput::Chat { messages, tools } = &r.prompts[0] else {
            panic!("not a chat")
        };
        let roles: Vec<&str> = messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
        assert_eq!(
            messages[2].tool_calls[0].arguments,
            json!({"city": "Paris"})
        );
        assert_eq!(messages[3].tool_call_id.as_deref(), Some("toolu_1"));
        assert_eq!(messages[3].text(), "18 C");
        let tools = tools.as_ref().unwrap();
        assert_eq!(
            (tools.choice.clone(), tools.parallel),
            (ToolChoice::Required, false)
        );
        assert_eq!(
            (r.params.max_tokens, r.params.stop.clone()),
            (Some(20), vec!["END".to_string()])
        );
    }

    #[test]
    fn mistakes_are_named() {
        let base = || json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
        for (change, word) in [
            (json!({"max_tokens": null}), "`max_tokens` is required"),
            (
                json!({"messages": [{"role": "system", "content": "x"}]}),
                "`messages[0].role`",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}),
                "type \"image\"",
            ),
            (
                json!({"tools": [{"name": "f"}]}),
                "`tools[0].input_schema` is missing",
            ),
            (
                json!({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
                "only client tools",
            ),
            (
                json!({"tool_choice": {"type": "any"}}),
                "no tool is offered",
            ),
            (
                json!({"thinking": {"type": "enabled", "budget_tokens": 1024}}),
                "`thinking`",
            ),
            (json!({"stop_sequences": "END"}), "`stop_sequences`"),
            (
                json!({"output_config": {"format": {"type": "json_schema", "schema": {"type": "string", "pattern": "a"}}}}),
                "`output_config.format.schema`: `pattern`",
            ),
        ] {
            let mut body = base();
            body.as_object_mut()
                .unwrap()
                .extend(change.as_object().unwrap().clone());
            let e = parsed(body)
                .err()
                .unwrap_or_else(|| panic!("{change} parsed"));
            assert!(e.message.contains(word), "{change}: {}", e.message);
        }
    }

    #[test]
    fn answers_and_events_follow_anthropic() {
        let usage = Usage {
            prompt_tokens: 10,
            completion_tokens: 3,
            cached_tokens: 4,
            prompt_ms: 1.0,
            gen_ms: 1.0,
        };
        let call = ToolCall {
            id: "call_1".into(),
            name: "f".into(),
            arguments: json!({"a": 1}),
        };
        let mut reply = MessagesReply::new("m");
        let answer = Answer {
            text: "Hi".into(),
            tokens: Vec::new(),
            finish: Finish::ToolCalls(vec![call.clone()]),
        };
        let whole = reply.whole(&[answer], &usage);
        assert_eq!(whole["type"], "message");
        assert_eq!(whole["content"][0], json!({"type": "text", "text": "Hi"}));
        assert_eq!(whole["content"][1]["input"], json!({"a": 1}));
        assert_eq!(whole["stop_reason"], "tool_use");
        assert_eq!(whole["usage"]["input_tokens"], 6);
        assert_eq!(whole["usage"]["cache_read_input_tokens"], 4);

        let mut events: Vec<&str> = Vec::new();
        let mut frames = reply.delta(
            0,
            &Delta {
                text: "Hi".into(),
                tokens: Vec::new(),
            },
        );
        frames.extend(reply.delta(
            0,
            &Delta {
                text: " there".into(),
                tokens: Vec::new(),
            },
        ));
        frames.extend(reply.done(0, &Finish::StopString("END".into()), &usage));
        events.extend(frames.iter().map(|f| f.event.unwrap()));
        assert_eq!(
            events,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let delta: Value = serde_json::from_str(&frames[5].data).unwrap();
        assert_eq!(delta["delta"]["stop_reason"], "stop_sequence");
        assert_eq!(delta["delta"]["stop_sequence"], "END");
    }
}
