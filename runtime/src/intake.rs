//! The intake: a thread between the clients and the scheduler that turns what they send into
//! tokens. Chat templates render and texts tokenize here, and `/tokenize`, `/detokenize` and
//! `/apply-template` are answered here, so that the scheduler's thread does nothing but run the
//! model: an 8 MiB text to tokenize, 2048 embeddings inputs or a template that runs long hold up
//! the requests behind them in the intake, never a stream in progress. A request whose client has
//! gone is dropped before any work is done for it.

use std::sync::mpsc::{Receiver, Sender};

use tokio::sync::{mpsc as events, oneshot};

use crate::chat_template::{ChatTemplate, ChatTemplateError};
use crate::constraint::Constraint;
use crate::engine::Engine;
use crate::generator::GenParams;
use crate::jobs::{Embedding, Event, GenJob, Infill, Job, PromptInput, Refusal};
use crate::json_schema::Schema;
use crate::messages::ChatMessage;
use crate::tools::{self, CallDetector, Instructions, Tool, ToolRequest};

/// A job whose prompts are tokens: what the scheduler receives.
pub(crate) enum Ready {
    Generate {
        prompt: Vec<u32>,
        params: GenParams,
        events: events::UnboundedSender<Event>,
    },
    Embed {
        inputs: Vec<Vec<u32>>,
        reply: oneshot::Sender<Result<Vec<Embedding>, Refusal>>,
    },
}

pub(crate) struct Intake<'e, 'a> {
    engine: &'e Engine<'a>,
    /// `None` where the mode reads raw prompts only (the one-shot command line).
    template: Option<ChatTemplate>,
}

impl<'e, 'a> Intake<'e, 'a> {
    pub fn new(engine: &'e Engine<'a>, template: Option<ChatTemplate>) -> Self {
        Intake { engine, template }
    }

    /// Serves `jobs` until every client is gone (or the scheduler is), handing on to `ready` what
    /// needs the model.
    pub fn run(self, jobs: Receiver<Job>, ready: Sender<Ready>) {
        for job in jobs {
            if let Some(job) = self.accept(job) {
                if ready.send(job).is_err() {
                    return;
                }
            }
        }
    }

    fn accept(&self, job: Job) -> Option<Ready> {
        let tokenizer = &self.engine.tokenizer;
        match job {
            Job::Tokenize {
                text,
                add_special,
                parse_special,
                reply,
            } => {
                if !reply.is_closed() {
                    let ids = tokenizer.encode(&text, add_special, parse_special);
                    let pieces = ids
                        .iter()
                        .map(|&id| (id, tokenizer.token_to_piece(id, true)))
                        .collect();
                    let _ = reply.send(pieces);
                }
                None
            }
            Job::Detokenize { tokens, reply } => {
                let text = self.check_ids(&tokens).map(|()| {
                    let bytes: Vec<u8> = tokens
                        .iter()
                        .flat_map(|&id| tokenizer.token_to_piece(id, true))
                        .collect();
                    String::from_utf8_lossy(&bytes).into_owned()
                });
                let _ = reply.send(text);
                None
            }
            Job::ApplyTemplate { messages, reply } => {
                if !reply.is_closed() {
                    let _ = reply.send(self.render(&messages, None));
                }
                None
            }
            Job::Generate(job) => {
                let GenJob {
                    prompt,
                    mut params,
                    events,
                } = *job;
                if events.is_closed() {
                    return None;
                }
                let biased: Vec<u32> = params.logit_bias.iter().map(|&(id, _)| id).collect();
                let prompt = self
                    .check_ids(&biased)
                    .map_err(|e| Refusal::invalid(format!("logit_bias: {e}")))
                    .and_then(|()| match &prompt {
                        PromptInput::Chat {
                            tools: Some(request),
                            ..
                        } => self.watch_for_calls(request, &mut params),
                        _ => Ok(()),
                    })
                    .and_then(|()| self.prompt_tokens(prompt));
                match prompt {
                    Ok(prompt) => Some(Ready::Generate {
                        prompt,
                        params,
                        events,
                    }),
                    Err(e) => {
                        let _ = events.send(Event::Error(e));
                        None
                    }
                }
            }
            Job::Embed { inputs, reply } => {
                if reply.is_closed() {
                    return None;
                }
                let tokens: Result<Vec<Vec<u32>>, Refusal> = inputs
                    .into_iter()
                    .map(|input| self.prompt_tokens(input))
                    .collect();
                match tokens {
                    Ok(inputs) => Some(Ready::Embed { inputs, reply }),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        None
                    }
                }
            }
        }
    }

    fn template(&self) -> Result<&ChatTemplate, Refusal> {
        self.template
            .as_ref()
            .ok_or_else(|| Refusal::invalid("this mode takes raw prompts: it has no chat template"))
    }

    /// The prompt of a conversation. With tools, a template that renders them gets them; one
    /// that does not gets the generic format's conversation. A required call's prompt ends where
    /// the call starts.
    fn render(
        &self,
        messages: &[ChatMessage],
        tools: Option<&ToolRequest>,
    ) -> Result<String, Refusal> {
        let template = self.template()?;
        let rendered = match tools {
            None => template.render(messages, true),
            Some(request) if template.tool_format().native() => {
                let tools: Vec<_> = request.tools.iter().map(Tool::template_json).collect();
                template.render_with_tools(messages, &tools, true)
            }
            Some(request) => {
                let generic = |place| {
                    let messages = tools::generic_messages(messages, &request.tools, place);
                    template.render(&messages, true)
                };
                // Templates that refuse a system role get the instructions in the first turn.
                match generic(Instructions::System) {
                    Err(ChatTemplateError::Raised(_)) => generic(Instructions::FirstUserMessage),
                    other => other,
                }
            }
        };
        let mut prompt = rendered.map_err(|e| Refusal::invalid(e.to_string()))?;
        if tools.is_some_and(ToolRequest::forced) {
            prompt.push_str(template.tool_format().prefill());
        }
        Ok(prompt)
    }

    /// Sets `params` to find the calls of `request` in the reply, written as this template's
    /// model writes them, and holds a required call to the tools' schemas.
    fn watch_for_calls(
        &self,
        request: &ToolRequest,
        params: &mut GenParams,
    ) -> Result<(), Refusal> {
        let format = self.template()?.tool_format();
        if request.forced() {
            if params.constraint.is_some() {
                return Err(Refusal::invalid(
                    "`response_format` (or `grammar`) and a required tool call cannot both shape the reply",
                ));
            }
            let schema = Schema::compile(&format.call_schema(request))
                .map_err(|e| Refusal::invalid(format!("tools: {e}")))?;
            params.constraint = Some(Constraint::Json(schema));
        }
        params.tools = Some(Box::new(CallDetector::new(format, request)));
        let tokenizer = &self.engine.tokenizer;
        params.shown_controls = format
            .markers()
            .iter()
            .filter_map(|marker| match tokenizer.encode(marker, false, true)[..] {
                [id] => Some(id),
                _ => None,
            })
            .collect();
        Ok(())
    }

    /// llama.cpp's fill-in-the-middle prompt (the repo-level pattern of Qwen2.5-Coder):
    /// `[REPO]myproject\n [SEP]file\n text ... [SEP]filename\n [PRE]prefix prompt [SUF]suffix [MID]`,
    /// the prefix cut to its last 3/4 of a batch and the suffix to what is left of the batch's
    /// quarter, the other files to what the context leaves (taken from their end).
    fn infill_tokens(&self, infill: &Infill) -> Result<Vec<u32>, Refusal> {
        let tokenizer = &self.engine.tokenizer;
        let fim = tokenizer.fim();
        let (Some(pre), Some(suf), Some(mid)) = (fim.prefix, fim.suffix, fim.middle) else {
            return Err(Refusal::invalid(
                "this model has no fill-in-the-middle tokens (tokenizer.ggml.fim_pre_token_id, ...)",
            ));
        };
        let text = |s: &str| tokenizer.encode(s, false, false);
        let mut extra = Vec::new();
        if let Some(repo) = fim.repo {
            extra.push(repo);
            extra.extend(text("myproject\n"));
        }
        for (filename, content) in &infill.extra {
            match fim.file_sep {
                Some(sep) => {
                    extra.push(sep);
                    extra.extend(text(&format!("{filename}\n")));
                }
                None => extra.extend(text("\n\n--- snippet ---\n\n")),
            }
            extra.extend(text(content));
        }
        if let Some(sep) = fim.file_sep {
            extra.push(sep);
            extra.extend(text("filename\n"));
        }
        let n_batch = self.engine.n_batch;
        let prompt = text(&infill.prompt);
        let mut prefix = text(&infill.prefix);
        let mut suffix = text(&infill.suffix);
        let prefix_take = prefix.len().min(3 * (n_batch / 4));
        let suffix_take = suffix
            .len()
            .min((n_batch / 4).saturating_sub(2 + prompt.len()));
        prefix.drain(..prefix.len() - prefix_take);
        suffix.truncate(suffix_take);
        let extra_take = self.engine.n_ctx.saturating_sub(n_batch).min(extra.len());
        let mut ids = Vec::new();
        ids.extend_from_slice(&extra[extra.len() - extra_take..]);
        if tokenizer.add_bos() {
            ids.extend(tokenizer.bos());
        }
        ids.push(pre);
        ids.extend(prefix);
        ids.extend(prompt);
        ids.push(suf);
        ids.extend(suffix);
        ids.push(mid);
        Ok(ids)
    }

    fn check_ids(&self, ids: &[u32]) -> Result<(), Refusal> {
        let n_vocab = self.engine.n_vocab();
        match ids.iter().find(|&&id| id as usize >= n_vocab) {
            Some(id) => Err(Refusal::invalid(format!(
                "token id {id} is outside the vocabulary of {n_vocab} tokens"
            ))),
            None => Ok(()),
        }
    }

    fn prompt_tokens(&self, prompt: PromptInput) -> Result<Vec<u32>, Refusal> {
        let ids = match prompt {
            PromptInput::Chat { messages, tools } => self
                .engine
                .tokenize_prompt(&self.render(&messages, tools.as_ref())?),
            PromptInput::Text(text) => self.engine.tokenize_prompt(&text),
            PromptInput::Tokens(ids) => {
                self.check_ids(&ids)?;
                ids
            }
            PromptInput::Infill(infill) => self.infill_tokens(&infill)?,
        };
        if ids.is_empty() {
            return Err(Refusal::invalid("the prompt is empty"));
        }
        Ok(ids)
    }
}
