//! What the edges ask of the model and what they get back: the jobs that the command line, the
//! terminal chat and the HTTP side send through a [`Client`], the events and refusals that come
//! back. Protocol-free: each edge converts these to and from its own format. The intake
//! (`intake.rs`) takes the jobs first and turns their texts into tokens; the scheduler
//! (`scheduler.rs`) runs what is left.

use std::sync::mpsc::{self, Receiver, Sender};

use tokio::sync::{mpsc as events, oneshot};

use crate::generator::{Candidate, Delta, Finish, GenParams};
use crate::messages::ChatMessage;
use crate::tools::ToolRequest;

/// Why the scheduler refused a job. It knows no protocol: each edge turns this into its own
/// error (the HTTP side into 400 and 503 responses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The request cannot be served as asked: an unknown token id, a prompt longer than the
    /// context, a chat template that fails on these messages.
    Invalid(String),
    /// Every slot is busy and the queue is full; the same request may succeed later.
    Busy(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Invalid(m) | Refusal::Busy(m) => f.write_str(m),
        }
    }
}

impl Refusal {
    pub fn invalid(message: impl Into<String>) -> Self {
        Refusal::Invalid(message.into())
    }

    pub fn busy(message: impl Into<String>) -> Self {
        Refusal::Busy(message.into())
    }
}

/// What a generation starts from.
#[derive(Clone)]
pub(crate) enum PromptInput {
    /// Rendered with the model's chat template, then tokenized; with the tools the reply may
    /// call.
    Chat {
        messages: Vec<ChatMessage>,
        tools: Option<ToolRequest>,
    },
    /// Tokenized as the CLI tokenizes `-p` (BOS per metadata, special tokens parsed).
    Text(String),
    /// Used as given.
    Tokens(Vec<u32>),
    /// Fill in the middle: a code model's FIM prompt, made from the code before and after the
    /// gap, other files of the project, and text the middle starts with.
    Infill(Infill),
}

/// What `/infill` fills: llama.cpp's `input_prefix`, `input_suffix`, `input_extra`, `prompt`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Infill {
    pub prefix: String,
    pub suffix: String,
    /// Other files, `(filename, text)`, given as the project's context.
    pub extra: Vec<(String, String)>,
    /// Where the middle starts.
    pub prompt: String,
}

pub(crate) struct GenJob {
    pub prompt: PromptInput,
    pub params: GenParams,
    /// Dropped by the client when it goes away: the generation then stops.
    pub events: events::UnboundedSender<Event>,
}

pub(crate) enum Job {
    Generate(Box<GenJob>),
    Embed {
        inputs: Vec<PromptInput>,
        reply: oneshot::Sender<Result<Vec<Embedding>, Refusal>>,
    },
    Tokenize {
        text: String,
        add_special: bool,
        parse_special: bool,
        reply: oneshot::Sender<Vec<(u32, Vec<u8>)>>,
    },
    Detokenize {
        tokens: Vec<u32>,
        reply: oneshot::Sender<Result<String, Refusal>>,
    },
    ApplyTemplate {
        messages: Vec<ChatMessage>,
        reply: oneshot::Sender<Result<String, Refusal>>,
    },
}

pub(crate) struct Embedding {
    pub vector: Vec<f32>,
    pub n_tokens: usize,
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens whose keys and values the slot already held.
    pub cached_tokens: usize,
    pub prompt_ms: f64,
    pub gen_ms: f64,
}

impl Usage {
    /// Adds another generation's counts and times (the usage of an answer of several choices).
    pub fn add(&mut self, other: &Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cached_tokens += other.cached_tokens;
        self.prompt_ms += other.prompt_ms;
        self.gen_ms += other.gen_ms;
    }
}

pub(crate) enum Event {
    /// The request failed before producing anything.
    Error(Refusal),
    /// The most likely tokens at each prompt position, in order, a batch of positions at a time
    /// (when asked for with `prompt_logprobs`).
    PromptLogprobs(Vec<Vec<Candidate>>),
    Delta(Delta),
    Done {
        finish: Finish,
        usage: Usage,
    },
}

/// The sending end of a scheduler's job channel: how the HTTP side, the terminal chat and the
/// one-shot command line reach the model.
#[derive(Clone)]
pub(crate) struct Client {
    jobs: Sender<Job>,
}

/// The model is gone: the scheduler has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the model is not running")
    }
}

impl Client {
    pub fn submit(&self, job: Job) -> Result<(), Stopped> {
        self.jobs.send(job).map_err(|_| Stopped)
    }

    /// Starts a generation; its events arrive on the returned receiver, and dropping the receiver
    /// stops it.
    pub fn generate(
        &self,
        prompt: PromptInput,
        params: GenParams,
    ) -> Result<events::UnboundedReceiver<Event>, Stopped> {
        let (events, rx) = events::unbounded_channel();
        self.submit(Job::Generate(Box::new(GenJob {
            prompt,
            params,
            events,
        })))?;
        Ok(rx)
    }
}

/// A job channel: the clients' end, and the end [`Scheduler::run`] serves until every client is
/// dropped.
pub(crate) fn channel() -> (Client, Receiver<Job>) {
    let (jobs, rx) = mpsc::channel();
    (Client { jobs }, rx)
}
