//! OpenAI's tool calling in chat completions: the request's `tools`, `tool_choice` and
//! `parallel_tool_calls`, and the answer's `tool_calls`, whole and streamed.

use serde_json::{json, Map, Value};

use crate::messages::ToolCall;
use crate::server::error::ApiError;
use crate::server::request::{short, Fields};
use crate::tools::{Tool, ToolChoice, ToolError, ToolRequest};

/// The tools a request offers and how the reply may use them; `None` when it offers none or
/// says `tool_choice: "none"`.
pub(crate) fn parse(f: &Fields) -> Result<Option<ToolRequest>, ApiError> {
    let tools = f.list("tools", parse_tool)?;
    // Chat names the function as `{"type": "function", "function": {"name": ...}}`.
    let choice = parse_choice(f, |o| o.get("function")?.get("name")?.as_str())?;
    let parallel = f.bool("parallel_tool_calls")?.unwrap_or(true);
    ToolRequest::new(tools, choice, parallel)
        .map_err(|e| ApiError::bad_request(format!("`tools`, `tool_choice`: {e}")))
}

/// `tool_choice`: `none` (no calls: `None`), `auto`, `required`, or an object of type
/// `function` whose name `name_of` finds (chat and the Responses API put it in different places).
pub(crate) fn parse_choice(
    f: &Fields,
    name_of: impl Fn(&Map<String, Value>) -> Option<&str>,
) -> Result<Option<ToolChoice>, ApiError> {
    match f.get("tool_choice") {
        None => Ok(Some(ToolChoice::Auto)),
        Some(Value::String(s)) => match s.as_str() {
            "none" => Ok(None),
            "auto" => Ok(Some(ToolChoice::Auto)),
            "required" => Ok(Some(ToolChoice::Required)),
            other => Err(ApiError::bad_request(format!(
                "`tool_choice` must be none, auto, required or a function, got {other:?}"
            ))),
        },
        Some(Value::Object(o)) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = name_of(o)
                .ok_or_else(|| ApiError::bad_request("`tool_choice` names no function"))?;
            Ok(Some(ToolChoice::Named(name.to_string())))
        }
        Some(v) => Err(ApiError::bad_request(format!(
            "`tool_choice` must be none, auto, required or a function, got {}",
            short(v)
        ))),
    }
}

/// `{"type": "function", "function": {"name", "description", "parameters", "strict"}}`; the
/// parameters must be a JSON schema the constrained decoder can hold a call to.
fn parse_tool(i: usize, tool: &Value) -> Result<Tool, ApiError> {
    let bad =
        |field: &str, what: String| ApiError::bad_request(format!("`tools[{i}]{field}` {what}"));
    let Value::Object(tool) = tool else {
        return Err(bad("", "must be an object".into()));
    };
    match tool.get("type") {
        Some(Value::String(t)) if t == "function" => {}
        Some(v) => {
            return Err(bad(
                ".type",
                format!("must be \"function\", got {}", short(v)),
            ))
        }
        None => return Err(bad(".type", "is missing (\"function\")".into())),
    }
    let Some(Value::Object(function)) = tool.get("function") else {
        return Err(bad(".function", "must be an object with a `name`".into()));
    };
    let f = Fields(function);
    let name = f
        .string("name")
        .ok()
        .flatten()
        .ok_or_else(|| bad(".function.name", ToolError::Name.to_string()))?;
    let description = f
        .string("description")
        .map_err(|_| bad(".function.description", "must be a string".into()))?
        .map(str::to_string);
    let parameters = f.get("parameters").filter(|p| !p.is_null()).cloned();
    Tool::new(name, description, parameters).map_err(|e| match e {
        ToolError::Name => bad(".function.name", e.to_string()),
        ToolError::Parameters(_) => bad(".function.parameters", e.to_string()),
    })
}

/// A call as the answer's `message.tool_calls` lists it: the arguments a JSON text.
pub(crate) fn call_json(call: &ToolCall) -> Value {
    json!({
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments.to_string()},
    })
}

/// Characters of arguments per streamed piece.
const ARGUMENT_PIECE: usize = 32;

/// The `delta.tool_calls` entries of a stream, as OpenAI sends them: for each call, one with its
/// `index`, `id`, `type` and name (arguments empty), then its arguments in pieces.
pub(crate) fn stream_deltas(calls: &[ToolCall]) -> Vec<Value> {
    let mut out = Vec::new();
    for (index, call) in calls.iter().enumerate() {
        out.push(json!({"index": index, "id": call.id, "type": "function",
                        "function": {"name": call.name, "arguments": ""}}));
        let arguments = call.arguments.to_string();
        let chars: Vec<char> = arguments.chars().collect();
        for piece in chars.chunks(ARGUMENT_PIECE) {
            let piece: String = piece.iter().collect();
            out.push(json!({"index": index, "function": {"arguments": piece}}));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::request::parse_object;

    fn tools_of(body: &str) -> Result<Option<ToolRequest>, ApiError> {
        let obj = parse_object(body.as_bytes()).unwrap();
        parse(&Fields(&obj))
    }

    const WEATHER: &str = r#"{"type":"function","function":{"name":"get_weather","description":"d",
        "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}"#;

    #[test]
    fn tools_and_choices_parse() {
        let r = tools_of(&format!(r#"{{"tools":[{WEATHER}]}}"#))
            .unwrap()
            .unwrap();
        assert_eq!(r.choice, ToolChoice::Auto);
        assert!(r.parallel);
        assert_eq!(r.tools[0].name, "get_weather");
        let r = tools_of(&format!(
            r#"{{"tools":[{WEATHER}],"tool_choice":{{"type":"function","function":{{"name":"get_weather"}}}},"parallel_tool_calls":false}}"#
        ))
        .unwrap()
        .unwrap();
        assert_eq!(r.choice, ToolChoice::Named("get_weather".into()));
        assert!(!r.parallel);
        assert_eq!(
            tools_of(&format!(r#"{{"tools":[{WEATHER}],"tool_choice":"none"}}"#)).unwrap(),
            None
        );
        assert_eq!(tools_of(r#"{"tools":[]}"#).unwrap(), None);
    }

    #[test]
    fn bad_tools_are_named() {
        let message = |body: String| tools_of(&body).unwrap_err().message;
        for (body, want) in [
            (r#"{"tools":{}}"#.to_string(), "`tools` must be an array, got {}"),
            (r#"{"tools":[{"type":"code"}]}"#.to_string(), "`tools[0].type` must be \"function\""),
            (r#"{"tools":[{"type":"function","function":{"name":"a b"}}]}"#.to_string(), "`tools[0].function.name`"),
            (
                r#"{"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"string","pattern":"a+"}}}]}"#.to_string(),
                "`tools[0].function.parameters` is not a schema a call can be held to: `pattern`",
            ),
            (format!(r#"{{"tools":[{WEATHER},{WEATHER}]}}"#), "\"get_weather\" is offered twice"),
            (format!(r#"{{"tools":[{WEATHER}],"tool_choice":"always"}}"#), "`tool_choice` must be"),
            (
                format!(r#"{{"tools":[{WEATHER}],"tool_choice":{{"type":"function","function":{{"name":"launch"}}}}}}"#),
                "\"launch\" is asked for but not among the tools",
            ),
            (r#"{"tool_choice":"required"}"#.to_string(), "no tool is offered"),
        ] {
            let got = message(body.clone());
            assert!(got.contains(want), "{body}: {got}");
        }
    }

    #[test]
    fn streamed_calls_give_the_name_once_and_the_arguments_in_pieces() {
        let call = ToolCall {
            id: "call_1".into(),
            name: "get_weather".into(),
            arguments: json!({"city": "A city with a rather long name, Llanfairpwllgwyngyll"}),
        };
        let deltas = stream_deltas(std::slice::from_ref(&call));
        assert!(deltas.len() > 2);
        assert_eq!(deltas[0]["id"], "call_1");
        assert_eq!(deltas[0]["function"]["name"], "get_weather");
        let joined: String = deltas[1..]
            .iter()
            .map(|d| d["function"]["arguments"].as_str().unwrap())
            .collect();
        assert_eq!(joined, call.arguments.to_string());
        assert!(deltas[1..]
            .iter()
            .all(|d| d.get("id").is_none() && d["index"] == 0));
        assert_eq!(
            call_json(&call)["function"]["arguments"],
            json!(call.arguments.to_string())
        );
    }
}
