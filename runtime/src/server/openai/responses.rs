//! `/v1/responses`, OpenAI's Responses API: `input` (a text or a list of items: messages,
//! `function_call`s and their `function_call_output`s), `instructions`, function tools, and
//! `previous_response_id`, which continues a conversation this server kept ([`ResponseStore`]).
//! The answer is a `response` whose `output` holds a message and the function calls, whole or as
//! the typed stream events OpenAI names (`response.created` … `response.completed`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::chat_tools::parse_choice;
use super::usage_json;
use crate::constraint::Constraint;
use crate::generator::{Delta, Finish, GenParams};
use crate::jobs::{PromptInput, Usage};
use crate::json_schema::Schema;
use crate::messages::{ChatMessage, ContentPart, ToolCall};
use crate::server::error::ApiError;
use crate::server::reply::{new_id, unix_now, Answer, Reply, SseFrame};
use crate::server::request::{parse_object, parse_sampling, Fields, GenRequest};
use crate::tools::{Tool, ToolError, ToolRequest};

/// Conversations kept for `previous_response_id`: the most recent ones, within both bounds.
const STORED_RESPONSES: usize = 1024;
const STORED_BYTES: usize = 64 << 20;

/// The conversations of recent responses, in memory, by response id: the oldest go first when
/// either bound is reached (a continuation of one gone is refused with 400).
#[derive(Default)]
pub(crate) struct ResponseStore {
    entries: Mutex<VecDeque<Stored>>,
}

struct Stored {
    id: String,
    messages: Vec<ChatMessage>,
    bytes: usize,
}

impl ResponseStore {
    fn get(&self, id: &str) -> Option<Vec<ChatMessage>> {
        let entries = self.entries.lock().ok()?;
        entries
            .iter()
            .find(|e| e.id == id)
            .map(|e| e.messages.clone())
    }

    fn put(&self, id: &str, messages: Vec<ChatMessage>) {
        let bytes = messages
            .iter()
            .map(|m| {
                m.text().len()
                    + m.tool_calls
                        .iter()
                        .map(|c| c.arguments.to_string().len())
                        .sum::<usize>()
            })
            .sum::<usize>();
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if bytes > STORED_BYTES {
            return;
        }
        entries.push_back(Stored {
            id: id.to_string(),
            messages,
            bytes,
        });
        let mut total: usize = entries.iter().map(|e| e.bytes).sum();
        while entries.len() > STORED_RESPONSES || total > STORED_BYTES {
            match entries.pop_front() {
                Some(old) => total -= old.bytes,
                None => break,
            }
        }
    }
}

/// A parsed request: what to generate, and what the response echoes and keeps.
pub(crate) struct ResponsesRequest {
    pub gen: GenRequest,
    echo: Echo,
    /// The conversation so far (without `instructions`), to keep with the answer.
    conversation: Option<Vec<ChatMessage>>,
}

/// The request's settings a response repeats.
struct Echo {
    instructions: Value,
    previous_response_id: Value,
    tools: Value,
    tool_choice: Value,
    parallel_tool_calls: bool,
    temperature: Value,
    top_p: Value,
    max_output_tokens: Value,
    text: Value,
}

pub(crate) fn parse(body: &[u8], store: &ResponseStore) -> Result<ResponsesRequest, ApiError> {
    let obj = parse_object(body)?;
    let f = Fields(&obj);
    let sampling = parse_sampling(&f)?;
    let max_tokens = f.int("max_output_tokens", 1, 1 << 40)?;
    let previous = f.string("previous_response_id")?;
    let mut conversation = match previous {
        None => Vec::new(),
        Some(id) => store.get(id).ok_or_else(|| {
            ApiError::bad_request(format!(
                "`previous_response_id`: no response {id:?} is kept here (this server keeps the latest {STORED_RESPONSES} in memory)"
            ))
        })?,
    };
    conversation.extend(parse_input(f.get("input"))?);
    let instructions = f.string("instructions")?.map(str::to_string);
    let mut messages: Vec<ChatMessage> = instructions
        .iter()
        .map(|i| ChatMessage::new("system", i.clone()))
        .collect();
    messages.extend(conversation.iter().cloned());
    let tools = f.list("tools", parse_tool)?;
    // The Responses API names the function as `{"type": "function", "name": ...}`.
    let choice = parse_choice(&f, |o| o.get("name")?.as_str())?;
    let parallel = f.bool("parallel_tool_calls")?.unwrap_or(true);
    let echo = Echo {
        instructions: json!(instructions),
        previous_response_id: json!(previous),
        tools: Value::Array(
            tools
                .iter()
                .map(|t| {
                    json!({"type": "function", "name": t.name, "description": t.description,
                           "parameters": t.parameters, "strict": false})
                })
                .collect(),
        ),
        tool_choice: f.get("tool_choice").cloned().unwrap_or(json!("auto")),
        parallel_tool_calls: parallel,
        temperature: json!(sampling.temp),
        top_p: json!(sampling.top_p),
        max_output_tokens: json!(max_tokens),
        text: f
            .get("text")
            .cloned()
            .unwrap_or(json!({"format": {"type": "text"}})),
    };
    let tools = ToolRequest::new(tools, choice, parallel)
        .map_err(|e| ApiError::bad_request(format!("`tools`, `tool_choice`: {e}")))?;
    let store_it = f.bool("store")?.unwrap_or(true);
    Ok(ResponsesRequest {
        gen: GenRequest {
            prompts: vec![PromptInput::Chat { messages, tools }],
            params: GenParams {
                sampling,
                max_tokens: max_tokens.map(|n| n as usize),
                constraint: parse_text_format(&f)?.map(Constraint::Json),
                ..GenParams::default()
            },
            stream: f.bool("stream")?.unwrap_or(false),
            include_usage: false,
        },
        echo,
        conversation: store_it.then_some(conversation),
    })
}

/// `text.format`: `text`, `json_object`, or `json_schema` with its `schema`.
fn parse_text_format(f: &Fields) -> Result<Option<Arc<Schema>>, ApiError> {
    let Some(format) = f.get("text").and_then(|t| t.get("format")) else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Schema::any_object())),
        Some("json_schema") => {
            let schema = format
                .get("schema")
                .ok_or_else(|| ApiError::bad_request("`text.format.schema` is missing"))?;
            Schema::compile(schema)
                .map(Some)
                .map_err(|e| ApiError::bad_request(format!("`text.format.schema`: {e}")))
        }
        _ => Err(ApiError::bad_request(
            "`text.format.type` must be text, json_object or json_schema",
        )),
    }
}

/// `input`: a text (one user message) or a list of items. Consecutive `function_call` items are
/// one assistant turn's calls; a `function_call_output` is a tool message.
fn parse_input(v: Option<&Value>) -> Result<Vec<ChatMessage>, ApiError> {
    let items = match v {
        Some(Value::String(s)) => return Ok(vec![ChatMessage::new("user", s.clone())]),
        Some(Value::Array(items)) if !items.is_empty() => items,
        _ => {
            return Err(ApiError::bad_request(
                "`input` must be a text or a non-empty list of items",
            ))
        }
    };
    let mut out: Vec<ChatMessage> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("input[{i}]");
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message");
        match kind {
            "message" => out.push(input_message(item, &at)?),
            "function_call" => {
                let string = |key: &str| {
                    item.get(key).and_then(Value::as_str).ok_or_else(|| {
                        ApiError::bad_request(format!("`{at}.{key}` must be a string"))
                    })
                };
                let arguments: Value = serde_json::from_str(string("arguments")?).map_err(|e| {
                    ApiError::bad_request(format!("`{at}.arguments` is not JSON: {e}"))
                })?;
                let call = ToolCall {
                    id: string("call_id")?.to_string(),
                    name: string("name")?.to_string(),
                    arguments,
                };
                match out.last_mut() {
                    Some(last) if last.role == "assistant" => last.tool_calls.push(call),
                    _ => {
                        let mut turn = ChatMessage::new("assistant", "");
                        turn.content.clear();
                        turn.tool_calls.push(call);
                        out.push(turn);
                    }
                }
            }
            "function_call_output" => {
                let call_id = item.get("call_id").and_then(Value::as_str).ok_or_else(|| {
                    ApiError::bad_request(format!("`{at}.call_id` must be a string"))
                })?;
                let output = match item.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => String::new(),
                };
                let mut message = ChatMessage::new("tool", output);
                message.tool_call_id = Some(call_id.to_string());
                out.push(message);
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "`{at}.type`: items of type {other:?} are not supported"
                )))
            }
        }
    }
    Ok(out)
}

/// `{"role", "content"}`: content a text or a list of `input_text`/`output_text` parts.
fn input_message(item: &Value, at: &str) -> Result<ChatMessage, ApiError> {
    let role = match item.get("role").and_then(Value::as_str) {
        Some("developer") => "system",
        Some(r @ ("system" | "user" | "assistant")) => r,
        _ => {
            return Err(ApiError::bad_request(format!(
                "`{at}.role` must be user, assistant, system or developer"
            )))
        }
    };
    let mut message = ChatMessage::new(role, "");
    message.content = match item.get("content") {
        Some(Value::String(s)) => vec![ContentPart::Text(s.clone())],
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                (Some("input_text" | "output_text" | "text"), Some(t)) => Ok(ContentPart::Text(t.to_string())),
                (kind, _) => Err(ApiError::bad_request(format!(
                    "`{at}.content[{j}]`: parts of type {kind:?} are not supported; this server reads text"
                ))),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(ApiError::bad_request(format!(
                "`{at}.content` must be a text or a list of text parts"
            )))
        }
    };
    Ok(message)
}

/// `{"type": "function", "name", "description", "parameters", "strict"}`.
fn parse_tool(i: usize, tool: &Value) -> Result<Tool, ApiError> {
    let bad =
        |field: &str, what: String| ApiError::bad_request(format!("`tools[{i}]{field}` {what}"));
    match tool.get("type").and_then(Value::as_str) {
        Some("function") => {}
        other => {
            return Err(bad(
                ".type",
                format!("{other:?}: only function tools are supported"),
            ))
        }
    }
    let name = tool.get("name").and_then(Value::as_str).unwrap_or_default();
    let description = tool
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_string);
    let parameters = tool.get("parameters").filter(|p| !p.is_null()).cloned();
    Tool::new(name, description, parameters).map_err(|e| match e {
        ToolError::Name => bad(".name", e.to_string()),
        ToolError::Parameters(_) => bad(".parameters", e.to_string()),
    })
}

/// Characters of a call's arguments per streamed delta.
const ARGUMENT_PIECE: usize = 32;

/// A response's rendering, and the keeping of its conversation.
pub(crate) struct ResponsesReply {
    id: String,
    created_at: u64,
    model: String,
    echo: Echo,
    store: Arc<ResponseStore>,
    conversation: Option<Vec<ChatMessage>>,
    /// Events sent so far: each event's `sequence_number`.
    sequence: u64,
    /// The message item's id, and its text so far, once text has come.
    message: Option<(String, String)>,
}

impl ResponsesReply {
    pub fn new(
        req: ResponsesRequest,
        model: &str,
        store: Arc<ResponseStore>,
    ) -> (GenRequest, Self) {
        let reply = ResponsesReply {
            id: new_id("resp"),
            created_at: unix_now(),
            model: model.to_string(),
            echo: req.echo,
            store,
            conversation: req.conversation,
            sequence: 0,
            message: None,
        };
        (req.gen, reply)
    }

    fn response(
        &self,
        status: &str,
        output: Vec<Value>,
        finish: Option<&Finish>,
        usage: Option<&Usage>,
    ) -> Value {
        let incomplete = match finish {
            Some(Finish::Length) => json!({"reason": "max_output_tokens"}),
            _ => Value::Null,
        };
        let e = &self.echo;
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "model": self.model,
            "output": output,
            "instructions": e.instructions,
            "previous_response_id": e.previous_response_id,
            "tools": e.tools,
            "tool_choice": e.tool_choice,
            "parallel_tool_calls": e.parallel_tool_calls,
            "temperature": e.temperature,
            "top_p": e.top_p,
            "max_output_tokens": e.max_output_tokens,
            "text": e.text,
            "truncation": "disabled",
            "metadata": {},
            "error": null,
            "incomplete_details": incomplete,
            "usage": usage.map(usage_object),
        })
    }

    fn event(&mut self, kind: &'static str, mut data: Value) -> SseFrame {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        SseFrame {
            event: Some(kind),
            data: data.to_string(),
        }
    }

    fn message_item(id: &str, text: &str, status: &str) -> Value {
        json!({"type": "message", "id": id, "status": status, "role": "assistant",
               "content": if status == "completed" || !text.is_empty() {
                   json!([{"type": "output_text", "text": text, "annotations": [], "logprobs": []}])
               } else { json!([]) }})
    }

    fn call_item(call: &ToolCall, item_id: &str, status: &str, arguments: &str) -> Value {
        json!({"type": "function_call", "id": item_id, "call_id": call.id, "name": call.name,
               "arguments": arguments, "status": status})
    }

    /// The output items of a finished answer (the message, then the calls, each with its id).
    fn output(&self, text: &str, message_id: &str, finish: &Finish) -> Vec<Value> {
        let mut output = Vec::new();
        if !text.is_empty() {
            output.push(Self::message_item(message_id, text, "completed"));
        }
        if let Finish::ToolCalls(calls) = finish {
            for call in calls {
                let args = call.arguments.to_string();
                output.push(Self::call_item(
                    call,
                    &format!("fc_{}", call.id),
                    "completed",
                    &args,
                ));
            }
        }
        output
    }

    /// Keeps the conversation with this answer, for a later `previous_response_id`.
    fn keep(&self, text: &str, finish: &Finish) {
        let Some(conversation) = &self.conversation else {
            return;
        };
        let mut answer = ChatMessage::new("assistant", text);
        if let Finish::ToolCalls(calls) = finish {
            answer.tool_calls = calls.clone();
        }
        let mut messages = conversation.clone();
        messages.push(answer);
        self.store.put(&self.id, messages);
    }

    fn status(finish: &Finish) -> &'static str {
        match finish {
            Finish::Length => "incomplete",
            _ => "completed",
        }
    }
}

fn usage_object(usage: &Usage) -> Value {
    let u = usage_json(usage);
    json!({
        "input_tokens": u["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": u["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u["total_tokens"],
    })
}

impl Reply for ResponsesReply {
    fn delta(&mut self, _choice: usize, delta: &Delta) -> Vec<SseFrame> {
        let mut frames = Vec::new();
        if self.sequence == 0 {
            let response = self.response("in_progress", Vec::new(), None, None);
            frames.push(self.event("response.created", json!({"response": response})));
            frames.push(self.event("response.in_progress", json!({"response": response})));
        }
        if delta.text.is_empty() {
            return frames;
        }
        if self.message.is_none() {
            let id = new_id("msg");
            frames.push(self.event(
                "response.output_item.added",
                json!({"output_index": 0, "item": Self::message_item(&id, "", "in_progress")}),
            ));
            frames.push(self.event(
                "response.content_part.added",
                json!({"item_id": id, "output_index": 0, "content_index": 0,
                       "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
            ));
            self.message = Some((id, String::new()));
        }
        let Some((id, text)) = &mut self.message else {
            return frames;
        };
        text.push_str(&delta.text);
        let id = id.clone();
        frames.push(self.event(
            "response.output_text.delta",
            json!({"item_id": id, "output_index": 0, "content_index": 0, "delta": delta.text, "logprobs": []}),
        ));
        frames
    }

    fn done(&mut self, _choice: usize, finish: &Finish, usage: &Usage) -> Vec<SseFrame> {
        let mut frames = self.delta(0, &Delta::default());
        let (message_id, text) = self.message.take().unwrap_or_default();
        let mut index = 0;
        if !text.is_empty() {
            frames.push(self.event(
                "response.output_text.done",
                json!({"item_id": message_id, "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
            ));
            frames.push(self.event(
                "response.content_part.done",
                json!({"item_id": message_id, "output_index": 0, "content_index": 0,
                       "part": {"type": "output_text", "text": text, "annotations": [], "logprobs": []}}),
            ));
            frames.push(self.event(
                "response.output_item.done",
                json!({"output_index": 0, "item": Self::message_item(&message_id, &text, "completed")}),
            ));
            index = 1;
        }
        if let Finish::ToolCalls(calls) = finish {
            for call in calls {
                let item_id = format!("fc_{}", call.id);
                frames.push(self.event(
                    "response.output_item.added",
                    json!({"output_index": index, "item": Self::call_item(call, &item_id, "in_progress", "")}),
                ));
                let arguments = call.arguments.to_string();
                let chars: Vec<char> = arguments.chars().collect();
                for piece in chars.chunks(ARGUMENT_PIECE) {
                    let piece: String = piece.iter().collect();
                    frames.push(self.event(
                        "response.function_call_arguments.delta",
                        json!({"item_id": item_id, "output_index": index, "delta": piece}),
                    ));
                }
                frames.push(self.event(
                    "response.function_call_arguments.done",
                    json!({"item_id": item_id, "output_index": index, "name": call.name, "arguments": arguments}),
                ));
                frames.push(self.event(
                    "response.output_item.done",
                    json!({"output_index": index, "item": Self::call_item(call, &item_id, "completed", &arguments)}),
                ));
                index += 1;
            }
        }
        self.keep(&text, finish);
        let output = self.output(&text, &message_id, finish);
        let status = Self::status(finish);
        let response = self.response(status, output, Some(finish), Some(usage));
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        frames.push(self.event(kind, json!({"response": response})));
        frames
    }

    fn error(&mut self, e: &ApiError) -> Vec<SseFrame> {
        vec![self.event(
            "error",
            json!({"code": e.kind, "message": e.message, "param": null}),
        )]
    }

    fn whole(&self, answers: &[Answer], usage: &Usage) -> Value {
        let [Answer { text, finish, .. }, ..] = answers else {
            return Value::Null;
        };
        self.keep(text, finish);
        let output = self.output(text, &new_id("msg"), finish);
        self.response(Self::status(finish), output, Some(finish), Some(usage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(body: Value, store: &ResponseStore) -> Result<ResponsesRequest, ApiError> {
        parse(body.to_string().as_bytes(), store)
    }

    fn messages(r: &ResponsesRequest) -> &[ChatMessage] {
        match &r.gen.prompts[0] {
            PromptInput::Chat { messages, .. } => messages,
            _ => panic!("not a chat"),
        }
    }

    #[test]
    fn items_become_the_conversation_and_previous_responses_continue_it() {
        let store = ResponseStore::default();
        let r = parsed(
            json!({"input": [
                {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
                {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{\"city\": \"Oslo\"}"},
                {"type": "function_call_output", "call_id": "c1", "output": "3 C"},
            ], "instructions": "Be brief.", "max_output_tokens": 9}),
            &store,
        )
        .unwrap();
        let roles: Vec<&str> = messages(&r).iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool"]);
        assert_eq!(messages(&r)[2].tool_calls[0].arguments["city"], "Oslo");
        assert_eq!(r.gen.params.max_tokens, Some(9));

        // The answer is kept with the conversation (not the instructions) under the response id.
        let (_, reply) = ResponsesReply::new(r, "m", Arc::new(ResponseStore::default()));
        let store = Arc::clone(&reply.store);
        let answer = reply.whole(
            &[Answer {
                text: "It is 3 C.".into(),
                tokens: Vec::new(),
                finish: Finish::Length,
            }],
            &Usage::default(),
        );
        assert_eq!(answer["status"], "incomplete");
        assert_eq!(answer["output"][0]["content"][0]["text"], "It is 3 C.");
        let id = answer["id"].as_str().unwrap();
        let next = parsed(
            json!({"input": "And tomorrow?", "previous_response_id": id}),
            &store,
        )
        .unwrap();
        let roles: Vec<&str> = messages(&next).iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["user", "assistant", "tool", "assistant", "user"]);
        let e = parsed(
            json!({"input": "x", "previous_response_id": "resp-gone"}),
            &store,
        )
        .err()
        .unwrap();
        assert!(
            e.message.contains("no response \"resp-gone\""),
            "{}",
            e.message
        );
    }

    #[test]
    fn the_store_keeps_the_latest_within_its_bounds() {
        let store = ResponseStore::default();
        for i in 0..STORED_RESPONSES + 5 {
            store.put(&format!("r{i}"), vec![ChatMessage::new("user", "x")]);
        }
        assert!(store.get("r0").is_none());
        assert!(store.get(&format!("r{}", STORED_RESPONSES + 4)).is_some());
        store.put(
            "big",
            vec![ChatMessage::new("user", "y".repeat(STORED_BYTES / 2 + 1))],
        );
        store.put(
            "bigger",
            vec![ChatMessage::new("user", "z".repeat(STORED_BYTES / 2 + 1))],
        );
        assert!(store.get("big").is_none() && store.get("bigger").is_some());
    }

    #[test]
    fn mistakes_are_named() {
        let store = ResponseStore::default();
        for (body, word) in [
            (json!({}), "`input` must be"),
            (
                json!({"input": [{"type": "input_image"}]}),
                "`input[0].type`",
            ),
            (
                json!({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}),
                "`input[0].content[0]`",
            ),
            (
                json!({"input": "x", "tools": [{"type": "web_search"}]}),
                "only function tools",
            ),
            (
                json!({"input": "x", "tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "function", "name": "g"}}),
                "\"g\" is asked for but not among",
            ),
            (
                json!({"input": "x", "text": {"format": {"type": "json_schema", "schema": {"type": "string", "pattern": "a"}}}}),
                "`text.format.schema`: `pattern`",
            ),
        ] {
            let e = parsed(body.clone(), &store)
                .err()
                .unwrap_or_else(|| panic!("{body} parsed"));
            assert!(e.message.contains(word), "{body}: {}", e.message);
        }
    }

    #[test]
    fn a_stream_is_openais_event_sequence() {
        let r = parsed(
            json!({"input": "hi", "stream": true}),
            &ResponseStore::default(),
        )
        .unwrap();
        let (_, mut reply) = ResponsesReply::new(r, "m", Arc::new(ResponseStore::default()));
        let mut frames = reply.delta(
            0,
            &Delta {
                text: "Hel".into(),
                tokens: Vec::new(),
            },
        );
        frames.extend(reply.delta(
            0,
            &Delta {
                text: "lo".into(),
                tokens: Vec::new(),
            },
        ));
        let call = ToolCall {
            id: "call_1".into(),
            name: "f".into(),
            arguments: json!({"a": 1}),
        };
        frames.extend(reply.done(0, &Finish::ToolCalls(vec![call]), &Usage::default()));
        let kinds: Vec<&str> = frames.iter().map(|f| f.event.unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let numbers: Vec<u64> = frames
            .iter()
            .map(|f| {
                serde_json::from_str::<Value>(&f.data).unwrap()["sequence_number"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(numbers, (0..frames.len() as u64).collect::<Vec<_>>());
        let last: Value = serde_json::from_str(&frames.last().unwrap().data).unwrap();
        assert_eq!(last["response"]["output"][1]["type"], "function_call");
        assert_eq!(last["response"]["output"][0]["content"][0]["text"], "Hello");
    }
}
