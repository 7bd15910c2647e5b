//! The chat message model: a conversation as every edge hands it to the chat template — roles,
//! content parts, the tool calls an assistant made and the results tools gave back. Each protocol
//! converts its own JSON into these; the template renders them. They reach the template in the
//! shape Hugging Face's transformers gives it (content a string; `tool_calls` as
//! `{id, type, function: {name, arguments}}` with the arguments an object), so a model's own
//! template finds what it was written for.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{json, Value};

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`: the protocols check it, the template decides
    /// what it accepts.
    pub role: String,
    pub content: Vec<ContentPart>,
    /// The functions an assistant turn called.
    pub tool_calls: Vec<ToolCall>,
    /// A tool result: the id of the call it answers.
    pub tool_call_id: Option<String>,
    /// A tool result: the function that gave it (some templates print the name).
    pub name: Option<String>,
}

/// A piece of a message's content. Only text reaches this model: the protocols refuse parts
/// it cannot read (images, audio) with a message naming them.
#[derive(Debug, Clone, PartialEq)]
pub enum ContentPart {
    Text(String),
}

/// A function call an assistant made.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as JSON (an object, as the model wrote them).
    pub arguments: Value,
}

impl ChatMessage {
    /// A message of one text part.
    pub fn new(role: impl Into<String>, text: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: vec![ContentPart::Text(text.into())],
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        }
    }

    /// The content as one string, text parts joined by newlines as llama.cpp joins them for
    /// templates that take a string.
    pub fn text(&self) -> String {
        let texts: Vec<&str> = self
            .content
            .iter()
            .map(|part| match part {
                ContentPart::Text(t) => t.as_str(),
            })
            .collect();
        texts.join("\n")
    }
}

impl Serialize for ChatMessage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("role", &self.role)?;
        map.serialize_entry("content", &self.text())?;
        // Absent rather than empty: templates test `message.tool_calls is defined` as well as
        // its truth.
        if !self.tool_calls.is_empty() {
            let calls: Vec<Value> = self
                .tool_calls
                .iter()
                .map(|c| {
                    json!({"id": c.id, "type": "function",
                           "function": {"name": c.name, "arguments": c.arguments}})
                })
                .collect();
            map.serialize_entry("tool_calls", &calls)?;
        }
        if let Some(id) = &self.tool_call_id {
            map.serialize_entry("tool_call_id", id)?;
        }
        if let Some(name) = &self.name {
            map.serialize_entry("name", name)?;
        }
        map.end()
    }
}
