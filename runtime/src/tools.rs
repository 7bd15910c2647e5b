//! Tool calling, protocol-free. A request offers [`Tool`]s and says how the model may use them
//! ([`ToolChoice`]); each model family writes a call its own way, the way its chat template
//! teaches it ([`ToolFormat`]): Qwen 2.5 and Hermes inside `<tool_call>` tags, Mistral v0.3 after
//! `[TOOL_CALLS]`, Llama 3.1 as a bare JSON object. A template that knows no tools gets the
//! generic format: the tools and the tags explained in the system prompt, and the conversation's
//! calls and results written as text in those tags.
//!
//! A call the request requires is not left to the model: the prompt ends with the format's
//! opening and the reply is held to a JSON schema of the tools' names and parameters
//! ([`ToolFormat::call_schema`]), so that even a small model writes a valid call. Otherwise
//! [`CallDetector`] watches the reply as it streams: text that is not a call goes out as text, and
//! a call is parsed when the reply ends ([`ToolFormat::parse`]).

use serde_json::{json, Map, Value};

use crate::messages::{ChatMessage, ToolCall};

/// A function the model may call.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// A JSON schema of the arguments (an object).
    pub parameters: Value,
}

impl Tool {
    /// A tool whose name and parameters this server can hold a call to; the error says what is
    /// wrong with which of the two, for the protocol to name the field.
    pub fn new(
        name: &str,
        description: Option<String>,
        parameters: Option<Value>,
    ) -> Result<Tool, ToolError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(ToolError::Name);
        }
        let parameters = parameters.unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        if !parameters.is_object() {
            return Err(ToolError::Parameters(
                "it must be a JSON schema object".into(),
            ));
        }
        crate::json_schema::Schema::compile(&parameters).map_err(ToolError::Parameters)?;
        Ok(Tool {
            name: name.to_string(),
            description,
            parameters,
        })
    }

    /// The tool as templates receive it (OpenAI's shape, as transformers passes it).
    pub fn template_json(&self) -> Value {
        let mut function = Map::new();
        function.insert("name".into(), json!(self.name));
        if let Some(d) = &self.description {
            function.insert("description".into(), json!(d));
        }
        function.insert("parameters".into(), self.parameters.clone());
        json!({"type": "function", "function": function})
    }
}

/// Why a tool cannot be offered.
#[derive(Debug, PartialEq)]
pub(crate) enum ToolError {
    /// Names are 1 to 64 letters, digits, `_` or `-` (OpenAI's and Anthropic's rule).
    Name,
    /// The schema of the arguments does not compile: a call could not be held to it.
    Parameters(String),
}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ToolError::Name => {
                f.write_str("must be 1 to 64 letters, digits, underscores or dashes")
            }
            ToolError::Parameters(e) => write!(f, "is not a schema a call can be held to: {e}"),
        }
    }
}

/// How the reply may use the tools (`none` leaves them out of the request altogether).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ToolChoice {
    /// The model decides: a call or text.
    Auto,
    /// A call to one of the tools.
    Required,
    /// A call to this tool.
    Named(String),
}

/// The tools a chat request offers.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ToolRequest {
    pub tools: Vec<Tool>,
    pub choice: ToolChoice,
    /// Whether a reply may hold more than one call.
    pub parallel: bool,
}

impl ToolRequest {
    /// What a request's tool fields come to: `None` when the reply may not call (`none`, or
    /// nothing offered under `auto`). The error says what is inconsistent, for the protocol to
    /// name its field: a choice that asks for a call with no tools, or a name offered twice.
    pub fn new(
        tools: Vec<Tool>,
        choice: Option<ToolChoice>,
        parallel: bool,
    ) -> Result<Option<ToolRequest>, String> {
        for (i, tool) in tools.iter().enumerate() {
            if tools[..i].iter().any(|t| t.name == tool.name) {
                return Err(format!("tool {:?} is offered twice", tool.name));
            }
        }
        if let Some(ToolChoice::Named(name)) = &choice {
            if !tools.iter().any(|t| &t.name == name) {
                return Err(format!("{name:?} is asked for but not among the tools"));
            }
        }
        match choice {
            None => Ok(None),
            Some(ToolChoice::Auto) if tools.is_empty() => Ok(None),
            Some(_) if tools.is_empty() => {
                Err("a call is asked for, but no tool is offered".into())
            }
            Some(choice) => Ok(Some(ToolRequest {
                tools,
                choice,
                parallel,
            })),
        }
    }

    pub fn forced(&self) -> bool {
        self.choice != ToolChoice::Auto
    }
}

/// How a model family writes a tool call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ToolFormat {
    /// `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`, once per call (Qwen 2.5,
    /// Hermes 2 Pro and 3).
    Hermes,
    /// `[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]` (Mistral v0.3 and later).
    MistralV3,
    /// `{"name": ..., "parameters": {...}}` as the whole reply (Llama 3.1 and 3.2).
    Llama3,
    /// Hermes's tags, taught by a system prompt, for templates that render no tools.
    Generic,
}

/// Where a generic template is told about the tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Instructions {
    /// In the system message (added if there is none).
    System,
    /// At the start of the first user message, for templates that refuse a system role.
    FirstUserMessage,
}

impl ToolFormat {
    /// The format a chat template's text teaches its model.
    pub fn of_template(source: &str) -> ToolFormat {
        if source.contains("<tool_call>") {
            ToolFormat::Hermes
        } else if source.contains("[TOOL_CALLS]") {
            ToolFormat::MistralV3
        } else if source.contains("<|python_tag|>") || source.contains("ipython") {
            ToolFormat::Llama3
        } else {
            ToolFormat::Generic
        }
    }

    /// Whether the template renders the `tools` variable and tool messages itself.
    pub fn native(self) -> bool {
        self != ToolFormat::Generic
    }

    /// Text that starts a call anywhere in a reply (Llama 3's calls are the whole reply instead).
    fn opening(self) -> Option<&'static str> {
        match self {
            ToolFormat::Hermes | ToolFormat::Generic => Some("<tool_call>"),
            ToolFormat::MistralV3 => Some("[TOOL_CALLS]"),
            ToolFormat::Llama3 => None,
        }
    }

    /// The texts that mark calls: where a model has them as control tokens, their text must
    /// still reach the reply for the calls to be found (llama.cpp's "preserved tokens").
    pub fn markers(self) -> &'static [&'static str] {
        match self {
            ToolFormat::Hermes | ToolFormat::Generic => &["<tool_call>", "</tool_call>"],
            ToolFormat::MistralV3 => &["[TOOL_CALLS]"],
            ToolFormat::Llama3 => &[PYTHON_TAG],
        }
    }

    /// What the prompt ends with when a call is required: the reply then starts inside it.
    pub fn prefill(self) -> &'static str {
        match self {
            ToolFormat::Hermes | ToolFormat::Generic => "<tool_call>\n",
            ToolFormat::MistralV3 => "[TOOL_CALLS] ",
            ToolFormat::Llama3 => "",
        }
    }

    /// The key of a call's arguments.
    fn arguments_key(self) -> &'static str {
        match self {
            ToolFormat::Llama3 => "parameters",
            _ => "arguments",
        }
    }

    /// The JSON schema a required call is held to, after [`prefill`](Self::prefill): one call
    /// of the allowed tools (Mistral's: a list of them), its arguments valid for the tool.
    pub fn call_schema(self, request: &ToolRequest) -> Value {
        let allowed = request.tools.iter().filter(|t| match &request.choice {
            ToolChoice::Named(name) => &t.name == name,
            _ => true,
        });
        let calls: Vec<Value> = allowed
            .map(|t| {
                json!({
                    "type": "object",
                    "properties": {
                        "name": {"const": t.name},
                        self.arguments_key(): t.parameters,
                    },
                    "required": ["name", self.arguments_key()],
                    "additionalProperties": false,
                })
            })
            .collect();
        let call = match <[Value; 1]>::try_from(calls) {
            Ok([one]) => one,
            Err(many) => json!({"anyOf": many}),
        };
        match self {
            ToolFormat::MistralV3 => {
                let mut list = json!({"type": "array", "items": call, "minItems": 1});
                if !request.parallel {
                    list["maxItems"] = json!(1);
                }
                list
            }
            _ => call,
        }
    }

    /// The calls in a whole reply and the text around them; `None` when it holds no call that
    /// names one of `tools` with arguments that are a JSON object (the reply is then text).
    pub fn parse(self, reply: &str, tools: &[Tool]) -> Option<(String, Vec<ToolCall>)> {
        let (text, calls) = match self {
            ToolFormat::Hermes | ToolFormat::Generic if reply.contains("<tool_call>") => {
                parse_tagged(reply)?
            }
            ToolFormat::MistralV3 if reply.contains("[TOOL_CALLS]") => {
                let (before, after) = reply.split_once("[TOOL_CALLS]")?;
                let list: Vec<Value> = serde_json::from_str(after.trim()).ok()?;
                (before.trim().to_string(), list)
            }
            // Calls written as bare JSON objects, the whole reply: Llama 3's way, and what small
            // models of the other families often write (llama.cpp accepts it from them too).
            _ => {
                let body = without_fence(reply).trim_start_matches(PYTHON_TAG).trim();
                let values = serde_json::Deserializer::from_str(body).into_iter::<Value>();
                (String::new(), values.collect::<Result<Vec<_>, _>>().ok()?)
            }
        };
        let calls = calls
            .into_iter()
            .map(|v| Self::call(v, tools))
            .collect::<Option<Vec<_>>>()?;
        (!calls.is_empty()).then_some((text, calls))
    }

    /// One call object, checked: a known tool's name and an object of arguments (some models
    /// write the arguments as a JSON text).
    fn call(mut v: Value, tools: &[Tool]) -> Option<ToolCall> {
        let name = v.get("name")?.as_str()?.to_string();
        if !tools.iter().any(|t| t.name == name) {
            return None;
        }
        // Either key, whatever the family: small models mix them up.
        let arguments = v
            .get_mut("arguments")
            .map(Value::take)
            .or_else(|| v.get_mut("parameters").map(Value::take));
        let arguments = match arguments {
            Some(Value::String(text)) => serde_json::from_str(&text).ok()?,
            Some(args @ Value::Object(_)) => args,
            None => json!({}),
            Some(_) => return None,
        };
        if !arguments.is_object() {
            return None;
        }
        Some(ToolCall {
            id: format!("call_{:016x}", crate::sampling::random_seed()),
            name,
            arguments,
        })
    }
}

/// Llama 3's marker of a call.
const PYTHON_TAG: &str = "<|python_tag|>";

/// A Markdown code fence, which small models put around a call they write bare.
const FENCE: &str = "```";

/// The text inside a reply's code fence (```json ... ```), or the reply, trimmed.
fn without_fence(reply: &str) -> &str {
    let reply = reply.trim();
    let Some(rest) = reply.strip_prefix(FENCE) else {
        return reply;
    };
    let body = rest
        .split_once('\n')
        .map_or("", |(_, body)| body)
        .trim_end();
    body.strip_suffix(FENCE).unwrap_or(body).trim()
}

/// Hermes's blocks: `<tool_call>` JSON `</tool_call>`, the last one possibly unclosed (a reply
/// cut at the end of its JSON); the text outside them, trimmed.
fn parse_tagged(reply: &str) -> Option<(String, Vec<Value>)> {
    const OPEN: &str = "<tool_call>";
    const CLOSE: &str = "</tool_call>";
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut rest = reply;
    while let Some(start) = rest.find(OPEN) {
        text.push_str(&rest[..start]);
        let body = &rest[start + OPEN.len()..];
        let (json, after) = match body.find(CLOSE) {
            Some(end) => (&body[..end], &body[end + CLOSE.len()..]),
            None => (body, ""),
        };
        calls.push(serde_json::from_str(json.trim()).ok()?);
        rest = after;
    }
    text.push_str(rest);
    Some((text.trim().to_string(), calls))
}

/// The generic format's teaching: the tools and how to call them.
fn generic_instructions(tools: &[Tool]) -> String {
    let mut out = String::from(
        "You may call the following functions. Each is described by a JSON schema of its \
         arguments:\n",
    );
    for tool in tools {
        out.push_str(&tool.template_json().to_string());
        out.push('\n');
    }
    out.push_str(
        "\nTo call a function, reply with a block\n<tool_call>\n{\"name\": \"<function name>\", \
         \"arguments\": {<arguments>}}\n</tool_call>\nfor each call, and nothing else. The \
         results come back in <tool_response></tool_response> blocks. When no function is \
         needed, answer as usual.",
    );
    out
}

/// The conversation for a template that renders no tools: the instructions put where `place`
/// says, each assistant call written as its block, each tool result as a user turn in
/// `<tool_response>` tags, and turns of one role that now follow each other joined (templates
/// that check alternating roles accept the result).
pub(crate) fn generic_messages(
    messages: &[ChatMessage],
    tools: &[Tool],
    place: Instructions,
) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = Vec::new();
    for m in messages {
        let (role, text) = match m.role.as_str() {
            "tool" => (
                "user".to_string(),
                format!("<tool_response>\n{}\n</tool_response>", m.text()),
            ),
            role => {
                let mut text = m.text();
                for call in &m.tool_calls {
                    let block = json!({"name": call.name, "arguments": call.arguments});
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&format!("<tool_call>\n{block}\n</tool_call>"));
                }
                (role.to_string(), text)
            }
        };
        match out.last_mut() {
            Some(last) if last.role == role && role != "system" => {
                let joined = format!("{}\n{text}", last.text());
                *last = ChatMessage::new(role, joined);
            }
            _ => out.push(ChatMessage::new(role, text)),
        }
    }
    let instructions = generic_instructions(tools);
    match place {
        Instructions::System => match out.first_mut() {
            Some(first) if first.role == "system" => {
                *first = ChatMessage::new("system", format!("{}\n\n{instructions}", first.text()));
            }
            _ => out.insert(0, ChatMessage::new("system", instructions)),
        },
        Instructions::FirstUserMessage => {
            if let Some(first) = out.iter_mut().find(|m| m.role == "user") {
                *first = ChatMessage::new("user", format!("{instructions}\n\n{}", first.text()));
            }
        }
    }
    out
}

/// Watches a reply as it streams for the start of a call: text before it goes out, the call is
/// kept until the reply ends and then parsed.
#[derive(Clone)]
pub(crate) struct CallDetector {
    format: ToolFormat,
    tools: Vec<Tool>,
    parallel: bool,
    /// Text that may be the start of a call's opening, not yet sent.
    held: String,
    /// The call text since its opening.
    call: Option<String>,
    /// Nothing but whitespace has come yet (Llama 3's calls are the whole reply).
    at_start: bool,
}

impl CallDetector {
    /// For a request whose call is required, the reply starts inside the call: the prompt ended
    /// with the format's [`prefill`](ToolFormat::prefill).
    pub fn new(format: ToolFormat, request: &ToolRequest) -> Self {
        CallDetector {
            format,
            tools: request.tools.clone(),
            parallel: request.parallel,
            held: String::new(),
            call: request.forced().then(|| format.prefill().to_string()),
            at_start: true,
        }
    }

    /// Takes the next text of the reply; returns what may go out as text.
    pub fn push(&mut self, text: &str) -> String {
        if let Some(call) = &mut self.call {
            call.push_str(text);
            return String::new();
        }
        self.held.push_str(text);
        // A reply that opens with an object (or Llama 3's tag), perhaps inside a Markdown code
        // fence, may be calls written bare.
        if self.at_start {
            let start = self.held.trim_start();
            let tagged = self.format == ToolFormat::Llama3;
            let body = match start.strip_prefix(FENCE) {
                // The fence's first line (its language) has not ended yet.
                Some(rest) => match rest.split_once('\n') {
                    Some((_, body)) => body.trim_start(),
                    None => return String::new(),
                },
                None => start,
            };
            let may_still_open = body.is_empty()
                || FENCE.starts_with(start)
                || (tagged && PYTHON_TAG.starts_with(body));
            if may_still_open {
                return String::new();
            }
            if body.starts_with('{') || (tagged && body.starts_with(PYTHON_TAG)) {
                self.call = Some(std::mem::take(&mut self.held));
                return String::new();
            }
            self.at_start = false;
        }
        let Some(opening) = self.format.opening() else {
            return std::mem::take(&mut self.held);
        };
        if let Some(pos) = self.held.find(opening) {
            self.call = Some(self.held[pos..].to_string());
            let out = self.held[..pos].to_string();
            self.held.clear();
            return out;
        }
        // Keep the longest tail the opening starts with.
        let keep_from = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| opening.starts_with(&self.held[i..]))
            .unwrap_or(self.held.len());
        let out = self.held[..keep_from].to_string();
        self.held.drain(..keep_from);
        out
    }

    /// The reply has ended: the calls it made, or the text it held back when it made none.
    pub fn finish(&mut self) -> Result<Vec<ToolCall>, String> {
        let held = std::mem::take(&mut self.held);
        let Some(call) = self.call.take() else {
            return Err(held);
        };
        match self.format.parse(&call, &self.tools) {
            Some((_, mut calls)) => {
                if !self.parallel {
                    calls.truncate(1);
                }
                Ok(calls)
            }
            None => Err(call + &held),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Tool {
        Tool {
            name: "get_weather".into(),
            description: Some("Weather in a city".into()),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}},
                               "required": ["city"]}),
        }
    }

    fn request(choice: ToolChoice) -> ToolRequest {
        ToolRequest {
            tools: vec![weather()],
            choice,
            parallel: true,
        }
    }

    #[test]
    fn each_family_is_parsed_and_text_that_is_no_call_stays_text() {
        let tools = [weather()];
        let (text, calls) = ToolFormat::Hermes
            .parse(
                "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Rome\\\"}\"}\n</tool_call>",
                &tools,
            )
            .unwrap();
        assert_eq!(text, "Let me look.");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1].arguments, json!({"city": "Rome"}));
        assert_ne!(calls[0].id, calls[1].id);
        // Small models write the object bare, one or several.
        let (_, calls) = ToolFormat::Hermes
            .parse(
                " {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Nice\"}}",
                &tools,
            )
            .unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(ToolFormat::Hermes.parse("{\"a\": 1}", &tools), None);
        let fenced =
            "```json\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}\n```";
        let (_, calls) = ToolFormat::Hermes.parse(fenced, &tools).unwrap();
        assert_eq!(calls[0].arguments["city"], "Rome");
        let (_, calls) = ToolFormat::MistralV3
            .parse(
                "[TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}]",
                &tools,
            )
            .unwrap();
        assert_eq!(calls[0].arguments["city"], "Oslo");
        let (_, calls) = ToolFormat::Llama3
            .parse(
                "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Lima\"}}",
                &tools,
            )
            .unwrap();
        assert_eq!(calls[0].arguments["city"], "Lima");
        // Unknown tools, arguments that are not an object, broken JSON: text.
        for reply in [
            "<tool_call>{\"name\": \"launch\", \"arguments\": {}}</tool_call>",
            "<tool_call>{\"name\": \"get_weather\", \"arguments\": [1]}</tool_call>",
            "<tool_call>{\"name\": \"get_weather\", </tool_call>",
            "just text",
        ] {
            assert_eq!(ToolFormat::Hermes.parse(reply, &tools), None, "{reply}");
        }
    }

    #[test]
    fn the_detector_sends_text_and_keeps_the_call() {
        let mut d = CallDetector::new(ToolFormat::Hermes, &request(ToolChoice::Auto));
        assert_eq!(d.push("Sure, <to"), "Sure, ");
        assert_eq!(d.push("ol"), "");
        assert_eq!(d.push("_call>\n{\"name\": \"get_weather\", "), "");
        assert_eq!(
            d.push("\"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"),
            ""
        );
        let calls = d.finish().unwrap();
        assert_eq!(calls[0].name, "get_weather");
        // A near miss goes out; a reply with no call gives back what it held.
        let mut d = CallDetector::new(ToolFormat::Hermes, &request(ToolChoice::Auto));
        assert_eq!(d.push("a <tool"), "a ");
        assert_eq!(d.push("box>"), "<toolbox>");
        assert_eq!(d.push(" <"), " ");
        assert_eq!(d.finish(), Err("<".to_string()));
        // A required call starts inside the call: the reply is its JSON.
        let mut d = CallDetector::new(ToolFormat::Hermes, &request(ToolChoice::Required));
        assert_eq!(
            d.push("{\"name\": \"get_weather\", \"arguments\": {\"city\": \"X\"}}"),
            ""
        );
        assert_eq!(d.finish().unwrap()[0].arguments["city"], "X");
        // Llama 3: a reply that opens an object is a call; one that does not is text at once.
        let mut d = CallDetector::new(ToolFormat::Llama3, &request(ToolChoice::Auto));
        assert_eq!(d.push("  "), "");
        assert_eq!(
            d.push("{\"name\": \"get_weather\", \"parameters\": {}}"),
            ""
        );
        assert_eq!(d.finish().unwrap().len(), 1);
        let mut d = CallDetector::new(ToolFormat::Llama3, &request(ToolChoice::Auto));
        assert_eq!(d.push(" Hello {x}"), " Hello {x}");
        // A call in a code fence is held from the fence on; code that is no call goes out.
        let mut d = CallDetector::new(ToolFormat::Hermes, &request(ToolChoice::Auto));
        assert_eq!(d.push("``"), "");
        assert_eq!(d.push("`json"), "");
        assert_eq!(
            d.push("\n{\"name\": \"get_weather\", \"arguments\": {}}\n```"),
            ""
        );
        assert_eq!(d.finish().unwrap().len(), 1);
        let mut d = CallDetector::new(ToolFormat::Hermes, &request(ToolChoice::Auto));
        assert_eq!(d.push("```python\n"), "");
        assert_eq!(d.push("def f():"), "```python\ndef f():");
        // A reply that is a JSON object but no call comes out whole at the end.
        let mut d = CallDetector::new(ToolFormat::Hermes, &request(ToolChoice::Auto));
        assert_eq!(d.push("{\"answer\": 42}"), "");
        assert_eq!(d.finish(), Err("{\"answer\": 42}".to_string()));
    }

    #[test]
    fn a_required_call_is_held_to_the_tools_schema() {
        let mut req = request(ToolChoice::Required);
        req.tools.push(Tool {
            name: "now".into(),
            description: None,
            parameters: json!({"type": "object", "properties": {}}),
        });
        let schema =
            crate::json_schema::Schema::compile(&ToolFormat::Hermes.call_schema(&req)).unwrap();
        let valid = |doc: &str| {
            let mut s = crate::json_schema::JsonState::new(schema.clone());
            s.feed(doc.as_bytes()) && s.is_complete()
        };
        assert!(valid(
            r#"{"name": "get_weather", "arguments": {"city": "Paris"}}"#
        ));
        assert!(valid(r#"{"name": "now", "arguments": {}}"#));
        assert!(!valid(r#"{"name": "launch", "arguments": {}}"#));
        assert!(!valid(
            r#"{"name": "get_weather", "arguments": {"city": 3}}"#
        ));
        req.choice = ToolChoice::Named("now".into());
        let named = ToolFormat::Hermes.call_schema(&req);
        assert_eq!(named["properties"]["name"], json!({"const": "now"}));
        assert_eq!(
            ToolFormat::MistralV3.call_schema(&req)["type"],
            json!("array")
        );
    }

    #[test]
    fn generic_templates_get_instructions_and_calls_as_text() {
        let mut assistant = ChatMessage::new("assistant", "");
        assistant.tool_calls.push(ToolCall {
            id: "c1".into(),
            name: "get_weather".into(),
            arguments: json!({"city": "Paris"}),
        });
        let mut result = ChatMessage::new("tool", "18 C");
        result.tool_call_id = Some("c1".into());
        let conversation = vec![
            ChatMessage::new("user", "Weather in Paris?"),
            assistant,
            result.clone(),
            result,
        ];
        let out = generic_messages(&conversation, &[weather()], Instructions::System);
        let roles: Vec<&str> = out.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        assert!(out[0].text().contains("\"get_weather\""));
        let call = out[2].text();
        assert!(
            call.starts_with("<tool_call>\n{") && call.ends_with("}\n</tool_call>"),
            "{call}"
        );
        assert!(call.contains(r#""name":"get_weather""#) && call.contains(r#""city":"Paris""#));
        assert_eq!(out[3].text().matches("<tool_response>").count(), 2);
        let out = generic_messages(&conversation, &[weather()], Instructions::FirstUserMessage);
        assert_eq!(out[0].role, "user");
        assert!(out[0].text().ends_with("Weather in Paris?"));
    }
}
