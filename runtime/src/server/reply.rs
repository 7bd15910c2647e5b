//! What a protocol module hands the HTTP side for a generation: how to write its answer, as one
//! JSON body or as server-sent events. The HTTP side collects or streams the scheduler's events
//! and knows no format; a protocol module knows no transport.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::error::ApiError;
use crate::generator::{Delta, Finish, Sampled};
use crate::jobs::Usage;

/// One server-sent event: `event: NAME` when the protocol names its events, then `data: ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseFrame {
    pub event: Option<&'static str>,
    pub data: String,
}

impl SseFrame {
    pub fn data(data: impl Into<String>) -> Self {
        SseFrame {
            event: None,
            data: data.into(),
        }
    }

    pub fn json(v: &Value) -> Self {
        Self::data(v.to_string())
    }
}

/// One choice of an answer, whole: its text, its tokens and why it ended.
pub(crate) struct Answer {
    pub text: String,
    pub tokens: Vec<Sampled>,
    pub finish: Finish,
}

/// A protocol's rendering of one request's answer: one choice, or several (OpenAI's `n` and lists
/// of prompts), numbered from 0 in the request's order.
pub(crate) trait Reply: Send {
    /// The frames for new text of a choice in a streamed answer.
    fn delta(&mut self, choice: usize, delta: &Delta) -> Vec<SseFrame>;
    /// The frames that end a choice of a streamed answer (`usage` is that choice's).
    fn done(&mut self, choice: usize, finish: &Finish, usage: &Usage) -> Vec<SseFrame>;
    /// The frames that end a streamed answer once every choice is done (`usage`: all of them).
    fn end(&mut self, _usage: &Usage) -> Vec<SseFrame> {
        Vec::new()
    }
    /// The frames that end a streamed answer that failed after it started.
    fn error(&mut self, e: &ApiError) -> Vec<SseFrame>;
    /// The body of an answer that is not streamed, from every choice whole.
    fn whole(&self, answers: &[Answer], usage: &Usage) -> Value;
}

/// Seconds since the Unix epoch, the `created` of responses and models.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A response id: the protocol's prefix and 64 random bits.
pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", crate::sampling::random_seed())
}
