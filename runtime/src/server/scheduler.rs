//! The model side of the server: one thread owns the slots (each a KV cache and the tokens it
//! holds) and runs continuous batching. Every step gathers one token from each generating slot
//! plus a chunk of the prompt of each slot still reading one, runs them through a single forward
//! pass, and samples each slot's next token. Requests arrive as [`Job`]s over a channel and get
//! their answers back over the channel each job carries; the HTTP side never touches the model.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use tokenizer::Utf8Stream;
use tokio::sync::{mpsc, oneshot};

use super::json_schema::{JsonState, Schema};
use crate::chat_template::{ChatMessage, ChatTemplate};
use crate::engine::{common_prefix, Engine};
use crate::model::{KvCache, Logits, SeqInput};
use crate::sampling::{log_sum_exp, top_logprobs, Sampler, SamplerConfig};

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
    fn invalid(message: impl Into<String>) -> Self {
        Refusal::Invalid(message.into())
    }

    fn busy(message: impl Into<String>) -> Self {
        Refusal::Busy(message.into())
    }
}

/// What a generation starts from.
pub(crate) enum PromptInput {
    /// Rendered with the model's chat template, then tokenized.
    Chat(Vec<ChatMessage>),
    /// Tokenized as the CLI tokenizes `-p` (BOS per metadata, special tokens parsed).
    Text(String),
    /// Used as given.
    Tokens(Vec<u32>),
}

pub(crate) struct GenParams {
    pub sampling: SamplerConfig,
    /// Tokens to generate at most; `None`: until end of generation or a full context.
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    /// Report each token's log-probability and this many alternatives.
    pub logprobs: Option<usize>,
    /// Constrain the output to JSON matching this schema.
    pub json: Option<Arc<Schema>>,
}

pub(crate) struct GenJob {
    pub prompt: PromptInput,
    pub params: GenParams,
    /// Dropped by the HTTP side when the client goes away: the generation then stops.
    pub events: mpsc::UnboundedSender<Event>,
}

pub(crate) enum Job {
    Generate(GenJob),
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

/// A generated token's log-probability and the most likely alternatives, as (bytes, logprob).
pub(crate) struct TokenLogprob {
    pub bytes: Vec<u8>,
    pub logprob: f32,
    pub top: Vec<(Vec<u8>, f32)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Finish {
    Stop,
    Length,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
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

pub(crate) enum Event {
    /// The request failed before producing anything.
    Error(Refusal),
    /// New text (never a partial UTF-8 character or part of a stop string) and its tokens' logprobs.
    Delta {
        text: String,
        logprobs: Vec<TokenLogprob>,
    },
    Done {
        finish: Finish,
        usage: Usage,
    },
}

/// What `/health` reports; written by the scheduler, read by the HTTP side.
#[derive(Default)]
pub(crate) struct Status {
    pub ready: AtomicBool,
    pub busy_slots: AtomicUsize,
    pub queued: AtomicUsize,
}

/// How a sequence's hidden states become one embedding (`<arch>.pooling_type`; mean unless the
/// model says CLS or last).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pooling {
    Mean,
    First,
    Last,
}

impl Pooling {
    pub fn from_gguf(g: &gguf::Gguf) -> Pooling {
        let key = format!("{}.pooling_type", g.architecture().unwrap_or_default());
        match g.get_u32(&key).ok().flatten() {
            Some(2) => Pooling::First,
            Some(3) => Pooling::Last,
            _ => Pooling::Mean,
        }
    }
}

pub(crate) struct Config {
    pub parallel: usize,
    pub max_queue: usize,
    pub pooling: Pooling,
}

struct Task {
    prompt: Vec<u32>,
    max_new: usize,
    sampler: Sampler,
    json: Option<JsonState>,
    stop: StopMatcher,
    utf8: Utf8Stream,
    logprobs: Option<usize>,
    pending_logprobs: Vec<TokenLogprob>,
    events: mpsc::UnboundedSender<Event>,
    generated: usize,
    /// The token sampled last, to be evaluated in the next step; `None` while reading the prompt.
    next: Option<u32>,
    cached: usize,
    started: Instant,
    prompt_done: Option<Instant>,
}

struct Slot {
    cache: KvCache,
    /// The tokens whose keys and values `cache` holds, in order.
    tokens: Vec<u32>,
    task: Option<Task>,
    last_used: u64,
}

enum Queued {
    Generate(Box<Task>),
    Embed {
        inputs: Vec<Vec<u32>>,
        reply: oneshot::Sender<Result<Vec<Embedding>, Refusal>>,
    },
}

impl Queued {
    fn abandoned(&self) -> bool {
        match self {
            Queued::Generate(t) => t.events.is_closed(),
            Queued::Embed { reply, .. } => reply.is_closed(),
        }
    }

    fn first_tokens(&self) -> &[u32] {
        match self {
            Queued::Generate(t) => &t.prompt,
            Queued::Embed { inputs, .. } => inputs.first().map_or(&[], Vec::as_slice),
        }
    }
}

pub(crate) struct Scheduler<'e, 'a> {
    engine: &'e Engine<'a>,
    template: ChatTemplate,
    pooling: Pooling,
    /// Each token's bytes in generated text (control tokens: none), for output and the JSON mask.
    pieces: Vec<Vec<u8>>,
    slots: Vec<Slot>,
    queue: VecDeque<Queued>,
    max_queue: usize,
    slot_ctx: usize,
    tick: u64,
    status: Arc<Status>,
}

impl<'e, 'a> Scheduler<'e, 'a> {
    /// The context `-c` is shared by the slots: each gets `n_ctx / parallel` positions.
    pub fn new(
        engine: &'e Engine<'a>,
        template: ChatTemplate,
        cfg: &Config,
        status: Arc<Status>,
    ) -> Result<Self, String> {
        let parallel = cfg.parallel.max(1);
        let slot_ctx = engine.n_ctx / parallel;
        if slot_ctx < 2 {
            return Err(format!("a context of {} tokens cannot be shared by {parallel} slots (raise -c or lower --parallel)", engine.n_ctx));
        }
        let slots = (0..parallel)
            .map(|_| Slot {
                cache: engine.model.new_cache(slot_ctx),
                tokens: Vec::new(),
                task: None,
                last_used: 0,
            })
            .collect();
        let pieces = (0..engine.n_vocab() as u32)
            .map(|id| engine.tokenizer.token_to_piece(id, false))
            .collect();
        Ok(Scheduler {
            engine,
            template,
            pooling: cfg.pooling,
            pieces,
            slots,
            queue: VecDeque::new(),
            max_queue: cfg.max_queue,
            slot_ctx,
            tick: 0,
            status,
        })
    }

    /// Serves jobs until every sender is gone.
    pub fn run(mut self, jobs: Receiver<Job>) {
        self.status.ready.store(true, Ordering::SeqCst);
        loop {
            if self.is_idle() {
                match jobs.recv() {
                    Ok(job) => self.accept(job),
                    Err(_) => return,
                }
            }
            loop {
                match jobs.try_recv() {
                    Ok(job) => self.accept(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) if self.is_idle() => return,
                    Err(TryRecvError::Disconnected) => break,
                }
            }
            self.drop_abandoned();
            self.start_queued();
            self.step();
            self.publish_status();
        }
    }

    fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.slots.iter().all(|s| s.task.is_none())
    }

    fn publish_status(&self) {
        let busy = self.slots.iter().filter(|s| s.task.is_some()).count();
        self.status.busy_slots.store(busy, Ordering::Relaxed);
        self.status
            .queued
            .store(self.queue.len(), Ordering::Relaxed);
    }

    fn free_slots(&self) -> usize {
        self.slots.iter().filter(|s| s.task.is_none()).count()
    }

    fn accept(&mut self, job: Job) {
        match job {
            Job::Tokenize {
                text,
                add_special,
                parse_special,
                reply,
            } => {
                let ids = self
                    .engine
                    .tokenizer
                    .encode(&text, add_special, parse_special);
                let pieces = ids
                    .iter()
                    .map(|&id| (id, self.engine.tokenizer.token_to_piece(id, true)))
                    .collect();
                let _ = reply.send(pieces);
            }
            Job::Detokenize { tokens, reply } => {
                let text = self.check_ids(&tokens).map(|()| {
                    let bytes: Vec<u8> = tokens
                        .iter()
                        .flat_map(|&id| self.engine.tokenizer.token_to_piece(id, true))
                        .collect();
                    String::from_utf8_lossy(&bytes).into_owned()
                });
                let _ = reply.send(text);
            }
            Job::ApplyTemplate { messages, reply } => {
                let _ = reply.send(self.render(&messages));
            }
            Job::Generate(job) => {
                let events = job.events.clone();
                match self
                    .prepare(job)
                    .and_then(|task| self.queue_full().map_or(Ok(task), Err))
                {
                    Ok(task) => self.queue.push_back(Queued::Generate(Box::new(task))),
                    Err(e) => {
                        let _ = events.send(Event::Error(e));
                    }
                }
            }
            Job::Embed { inputs, reply } => {
                let tokens: Result<Vec<Vec<u32>>, Refusal> = inputs
                    .into_iter()
                    .map(|input| {
                        let ids = self.prompt_tokens(input)?;
                        self.check_length(ids.len(), 0)?;
                        Ok(ids)
                    })
                    .collect();
                match tokens.and_then(|inputs| self.queue_full().map_or(Ok(inputs), Err)) {
                    Ok(inputs) => self.queue.push_back(Queued::Embed { inputs, reply }),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
        }
    }

    /// The error for a request that finds every slot busy and the queue full.
    fn queue_full(&self) -> Option<Refusal> {
        (self.queue.len() >= self.max_queue + self.free_slots()).then(|| {
            Refusal::busy(format!(
                "all {} slots are busy and {} requests are waiting (--max-queue); try again later",
                self.slots.len(),
                self.queue.len()
            ))
        })
    }

    fn render(&self, messages: &[ChatMessage]) -> Result<String, Refusal> {
        self.template
            .render(messages, true)
            .map_err(|e| Refusal::invalid(e.to_string()))
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
            PromptInput::Chat(messages) => self.engine.tokenize_prompt(&self.render(&messages)?),
            PromptInput::Text(text) => self.engine.tokenize_prompt(&text),
            PromptInput::Tokens(ids) => {
                self.check_ids(&ids)?;
                ids
            }
        };
        if ids.is_empty() {
            return Err(Refusal::invalid("the prompt is empty"));
        }
        Ok(ids)
    }

    /// A prompt of `n` tokens must leave `room` positions (for the reply) in a slot.
    fn check_length(&self, n: usize, room: usize) -> Result<(), Refusal> {
        if n + room > self.slot_ctx {
            let reply = if room > 0 {
                ", and it must leave room for the reply"
            } else {
                ""
            };
            return Err(Refusal::invalid(format!(
                "the prompt is {n} tokens, but the context of a slot holds {} tokens (-c {} shared by {} slots){reply}; \
                 shorten the prompt or raise -c",
                self.slot_ctx,
                self.engine.n_ctx,
                self.slots.len()
            )));
        }
        Ok(())
    }

    fn prepare(&self, job: GenJob) -> Result<Task, Refusal> {
        let prompt = self.prompt_tokens(job.prompt)?;
        // At least one token must fit after the prompt.
        self.check_length(prompt.len(), 1)?;
        let room = self.slot_ctx - prompt.len();
        let p = job.params;
        let sampler = Sampler::new(p.sampling, self.engine.n_vocab())
            .map_err(|e| Refusal::invalid(e.to_string()))?;
        Ok(Task {
            prompt,
            max_new: p.max_tokens.map_or(room, |m| m.min(room)),
            sampler,
            json: p.json.map(JsonState::new),
            stop: StopMatcher::new(p.stop),
            utf8: Utf8Stream::new(),
            logprobs: p.logprobs,
            pending_logprobs: Vec::new(),
            events: job.events,
            generated: 0,
            next: None,
            cached: 0,
            started: Instant::now(),
            prompt_done: None,
        })
    }

    /// Forgets requests whose client has gone: a slot it held is free again at once.
    fn drop_abandoned(&mut self) {
        for slot in &mut self.slots {
            if slot.task.as_ref().is_some_and(|t| t.events.is_closed()) {
                slot.task = None;
            }
        }
        self.queue.retain(|q| !q.abandoned());
    }

    /// The free slot whose cache shares the longest prefix with `tokens`; the least recently
    /// used among equals.
    fn pick_slot(&self, tokens: &[u32]) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.task.is_none())
            .max_by_key(|(_, s)| {
                (
                    common_prefix(&s.tokens, tokens),
                    std::cmp::Reverse(s.last_used),
                )
            })
            .map(|(i, _)| i)
    }

    fn start_queued(&mut self) {
        while let Some(front) = self.queue.front() {
            let Some(i) = self.pick_slot(front.first_tokens()) else {
                break;
            };
            let Some(q) = self.queue.pop_front() else {
                break;
            };
            self.tick += 1;
            let slot = &mut self.slots[i];
            slot.last_used = self.tick;
            match q {
                Queued::Generate(mut task) => {
                    // Keep the shared prefix; the last prompt token is always evaluated again,
                    // since its logits are needed.
                    let common =
                        common_prefix(&slot.tokens, &task.prompt).min(task.prompt.len() - 1);
                    slot.tokens.truncate(common);
                    task.cached = common;
                    task.started = Instant::now();
                    slot.task = Some(*task);
                }
                Queued::Embed { inputs, reply } => {
                    let result = inputs.iter().map(|ids| self.embed(i, ids)).collect();
                    let _ = reply.send(Ok(result));
                }
            }
        }
    }

    /// Evaluates `ids` in slot `i` (whose cache then holds them) and pools the final hidden states.
    fn embed(&mut self, i: usize, ids: &[u32]) -> Embedding {
        let model = &self.engine.model;
        let d = model.config.n_embd;
        let slot = &mut self.slots[i];
        slot.tokens.clear();
        let mut pooled = vec![0.0f64; d];
        let mut last = Vec::new();
        for chunk in ids.chunks(self.engine.n_batch.max(1)) {
            let hidden = model.forward(&mut slot.cache, chunk, slot.tokens.len(), Logits::Hidden);
            for (t, row) in hidden.chunks_exact(d).enumerate() {
                let take = match self.pooling {
                    Pooling::Mean => true,
                    Pooling::First => slot.tokens.is_empty() && t == 0,
                    Pooling::Last => false,
                };
                if take {
                    pooled
                        .iter_mut()
                        .zip(row)
                        .for_each(|(p, &v)| *p += f64::from(v));
                }
            }
            last = hidden[hidden.len() - d..].to_vec();
            slot.tokens.extend_from_slice(chunk);
        }
        if self.pooling == Pooling::Last {
            pooled = last.iter().map(|&v| f64::from(v)).collect();
        }
        // Euclidean normalization, llama.cpp's default for embeddings (the mean's scale cancels).
        let norm = pooled.iter().map(|v| v * v).sum::<f64>().sqrt();
        let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
        Embedding {
            vector: pooled.iter().map(|&v| (v * scale) as f32).collect(),
            n_tokens: ids.len(),
        }
    }

    /// One forward pass over every busy slot: one token from each generating slot, then prompt
    /// chunks within the `-b` budget.
    fn step(&mut self) {
        let mut budget = self.engine.n_batch.max(1);
        let mut plan: Vec<(usize, Vec<u32>)> = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            if let Some(tok) = slot.task.as_ref().and_then(|t| t.next) {
                plan.push((i, vec![tok]));
                budget = budget.saturating_sub(1);
            }
        }
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(task) = slot.task.as_ref().filter(|t| t.next.is_none()) else {
                continue;
            };
            let rest = &task.prompt[slot.tokens.len()..];
            let take = rest.len().min(budget);
            if take > 0 {
                plan.push((i, rest[..take].to_vec()));
                budget -= take;
            }
        }
        if plan.is_empty() {
            return;
        }
        plan.sort_by_key(|(i, _)| *i);
        let logits = {
            let mut seqs = Vec::with_capacity(plan.len());
            let mut planned = plan.iter().peekable();
            for (i, slot) in self.slots.iter_mut().enumerate() {
                if let Some((_, tokens)) = planned.next_if(|(j, _)| *j == i) {
                    let pos0 = slot.tokens.len();
                    seqs.push(SeqInput {
                        cache: &mut slot.cache,
                        tokens,
                        pos0,
                    });
                }
            }
            self.engine.model.forward_batch(&mut seqs, Logits::Last)
        };
        let n_vocab = self.engine.n_vocab();
        for (k, (i, tokens)) in plan.into_iter().enumerate() {
            let slot = &mut self.slots[i];
            slot.tokens.extend_from_slice(&tokens);
            let Some(task) = slot.task.as_mut() else {
                continue;
            };
            if task.next.is_none() {
                if slot.tokens.len() < task.prompt.len() {
                    continue;
                }
                task.prompt_done = Some(Instant::now());
            }
            self.advance(i, &logits[k * n_vocab..(k + 1) * n_vocab]);
        }
    }

    /// Samples slot `i`'s next token from `row` and sends what it adds.
    fn advance(&mut self, i: usize, row: &[f32]) {
        let tokenizer = &self.engine.tokenizer;
        let slot = &mut self.slots[i];
        let Some(task) = slot.task.as_mut() else {
            return;
        };
        let picked = match &task.json {
            Some(state) => pick_constrained(
                row,
                state,
                &mut task.sampler,
                &slot.tokens,
                &self.pieces,
                |id| tokenizer.is_eog(id),
            ),
            None => Some(task.sampler.sample(row, &slot.tokens)),
        };
        let Some(tok) = picked.filter(|&t| !tokenizer.is_eog(t)) else {
            self.finish(i, Finish::Stop);
            return;
        };
        task.generated += 1;
        task.next = Some(tok);
        let piece = &self.pieces[tok as usize];
        if let Some(state) = &mut task.json {
            state.feed(piece);
        }
        if let Some(k) = task.logprobs {
            task.pending_logprobs.push(logprob_entry(row, tok, k, |id| {
                tokenizer.token_to_piece(id, true)
            }));
        }
        let text = task.utf8.push(piece);
        let (out, stopped) = task.stop.push(&text);
        if !out.is_empty() {
            let logprobs = std::mem::take(&mut task.pending_logprobs);
            let _ = task.events.send(Event::Delta {
                text: out,
                logprobs,
            });
        }
        if stopped || task.json.as_ref().is_some_and(JsonState::is_complete) {
            self.finish(i, Finish::Stop);
        } else if task.generated >= task.max_new || slot.tokens.len() >= self.slot_ctx {
            self.finish(i, Finish::Length);
        }
    }

    /// Ends slot `i`'s task: flushes held-back text and reports usage.
    fn finish(&mut self, i: usize, finish: Finish) {
        let Some(mut task) = self.slots[i].task.take() else {
            return;
        };
        let mut text = String::new();
        if finish == Finish::Length || task.stop.found.is_none() {
            let rest = task.utf8.finish();
            let (out, _) = task.stop.push(&rest);
            text.push_str(&out);
            text.push_str(&task.stop.finish());
        }
        if !text.is_empty() || !task.pending_logprobs.is_empty() {
            let logprobs = std::mem::take(&mut task.pending_logprobs);
            let _ = task.events.send(Event::Delta { text, logprobs });
        }
        let now = Instant::now();
        let prompt_done = task.prompt_done.unwrap_or(now);
        let usage = Usage {
            prompt_tokens: task.prompt.len(),
            completion_tokens: task.generated,
            cached_tokens: task.cached,
            prompt_ms: (prompt_done - task.started).as_secs_f64() * 1e3,
            gen_ms: (now - prompt_done).as_secs_f64() * 1e3,
        };
        let _ = task.events.send(Event::Done { finish, usage });
    }
}

fn logprob_entry(row: &[f32], tok: u32, k: usize, text: impl Fn(u32) -> Vec<u8>) -> TokenLogprob {
    let lse = log_sum_exp(row);
    TokenLogprob {
        bytes: text(tok),
        logprob: (f64::from(row[tok as usize]) - lse) as f32,
        top: top_logprobs(row, k)
            .into_iter()
            .map(|(id, lp)| (text(id), lp))
            .collect(),
    }
}

/// Candidates looked at when sampling (not greedy) under a JSON constraint: the mask is computed
/// over the most likely tokens only, which is where sampling's top-k/top-p mass is.
const CONSTRAINED_SAMPLING_POOL: usize = 256;

/// The next token under a JSON constraint: greedy takes the most likely token the validator
/// accepts; sampling masks every other token among the most likely ones and samples among those
/// left. End of generation is allowed once the document can end.
fn pick_constrained(
    row: &[f32],
    state: &JsonState,
    sampler: &mut Sampler,
    history: &[u32],
    pieces: &[Vec<u8>],
    is_eog: impl Fn(u32) -> bool,
) -> Option<u32> {
    let cfg = sampler.config();
    let greedy = cfg.temp <= 0.0
        && (cfg.repeat_penalty == 1.0
            && cfg.presence_penalty == 0.0
            && cfg.frequency_penalty == 0.0);
    let pool = if greedy { 1 } else { CONSTRAINED_SAMPLING_POOL };
    let mut allowed = Vec::new();
    let valid = |id: u32| {
        if is_eog(id) {
            state.can_end()
        } else {
            state.allows(&pieces[id as usize])
        }
    };
    for_each_by_logit(row, |rank, id| {
        if rank >= pool && !allowed.is_empty() {
            return false;
        }
        if valid(id) {
            allowed.push(id);
        }
        allowed.len() < pool || !greedy
    });
    match allowed.as_slice() {
        [] => None,
        [only] if greedy => Some(*only),
        _ => {
            let mut masked = vec![f32::NEG_INFINITY; row.len()];
            for &id in &allowed {
                masked[id as usize] = row[id as usize];
            }
            Some(sampler.sample(&masked, history))
        }
    }
}

/// Visits token ids from the most to the least likely (NaN and -inf logits never), until `visit`
/// returns false. The first few hundred are selected and sorted; the rest only if needed.
fn for_each_by_logit(row: &[f32], mut visit: impl FnMut(usize, u32) -> bool) {
    const FIRST: usize = 256;
    let desc = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
    let mut ids: Vec<u32> = (0..row.len() as u32)
        .filter(|&i| row[i as usize] > f32::NEG_INFINITY)
        .collect();
    let first = FIRST.min(ids.len());
    if first < ids.len() {
        ids.select_nth_unstable_by(first, desc);
    }
    ids[..first].sort_unstable_by(desc);
    for (rank, &id) in ids[..first].iter().enumerate() {
        if !visit(rank, id) {
            return;
        }
    }
    ids[first..].sort_unstable_by(desc);
    for (rank, &id) in ids[first..].iter().enumerate() {
        if !visit(first + rank, id) {
            return;
        }
    }
}

/// Holds back generated text that may be the start of a stop string, and cuts the output at the
/// first stop string found.
struct StopMatcher {
    stops: Vec<String>,
    held: String,
    found: Option<usize>,
}

impl StopMatcher {
    fn new(stops: Vec<String>) -> Self {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
            found: None,
        }
    }

    /// Adds `text`; returns the text that can be shown now and whether a stop string was found
    /// (the output ends before it).
    fn push(&mut self, text: &str) -> (String, bool) {
        if self.found.is_some() {
            return (String::new(), true);
        }
        self.held.push_str(text);
        if let Some(pos) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            self.found = Some(pos);
            let out = self.held[..pos].to_string();
            self.held.clear();
            return (out, true);
        }
        // Keep the longest tail that some stop string starts with.
        let keep_from = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| self.stops.iter().any(|s| s.starts_with(&self.held[i..])))
            .unwrap_or(self.held.len());
        let out = self.held[..keep_from].to_string();
        self.held.drain(..keep_from);
        (out, false)
    }

    /// The text still held back, when generation ends without a stop string.
    fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_cut_the_output_and_partial_matches_wait() {
        let mut m = StopMatcher::new(vec!["</end>".into(), "STOP".into()]);
        assert_eq!(m.push("Hello </"), ("Hello ".to_string(), false));
        assert_eq!(m.push("b> x ST"), ("</b> x ".to_string(), false));
        assert_eq!(m.push("OP and more"), (String::new(), true));
        let mut m = StopMatcher::new(vec!["\n\n".into()]);
        assert_eq!(m.push("a\n"), ("a".to_string(), false));
        assert_eq!(m.finish(), "\n");
        let mut m = StopMatcher::new(vec!["é!".into()]);
        assert_eq!(m.push("caféé"), ("café".to_string(), false));
        assert_eq!(m.push("!"), (String::new(), true));
        let mut none = StopMatcher::new(vec![String::new()]);
        assert_eq!(none.push("text"), ("text".to_string(), false));
    }

    #[test]
    fn logit_order_visits_best_first_and_skips_masked() {
        let mut row: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 1000) as f32).collect();
        row[5] = f32::NEG_INFINITY;
        let mut seen = Vec::new();
        for_each_by_logit(&row, |_, id| {
            seen.push(id);
            true
        });
        assert_eq!(seen.len(), 999);
        assert!(!seen.contains(&5));
        assert!(seen
            .windows(2)
            .all(|w| row[w[0] as usize] >= row[w[1] as usize]));
    }

    #[test]
    fn constrained_greedy_takes_the_best_valid_token() {
        let pieces: Vec<Vec<u8>> = ["x", "{", "}", " ", "\"a\"", "[", ""]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        let state = JsonState::new(Schema::any_object());
        let cfg = SamplerConfig {
            temp: 0.0,
            ..SamplerConfig::default()
        };
        let mut sampler = Sampler::new(cfg, pieces.len()).unwrap();
        // "x" and "[" are likelier but cannot start an object; token 6 (end of generation) cannot end yet.
        let row = [9.0, 5.0, 1.0, 2.0, 0.0, 8.0, 10.0];
        assert_eq!(
            pick_constrained(&row, &state, &mut sampler, &[], &pieces, |id| id == 6),
            Some(1)
        );
        let mut done = state.clone();
        assert!(done.feed(b"{}"));
        assert!(done.is_complete());
        assert_eq!(
            pick_constrained(&row, &done, &mut sampler, &[], &pieces, |id| id == 6),
            Some(6)
        );
        // Sampling only ever draws valid tokens.
        let cfg = SamplerConfig {
            temp: 1.5,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 7,
            ..SamplerConfig::default()
        };
        let mut sampler = Sampler::new(cfg, pieces.len()).unwrap();
        for _ in 0..50 {
            let t =
                pick_constrained(&row, &state, &mut sampler, &[], &pieces, |id| id == 6).unwrap();
            assert!(t == 1 || t == 3, "{t}");
        }
    }
}
