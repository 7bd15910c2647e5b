//! The batch scheduler: one thread owns the slots (each a KV cache and the tokens it holds) and
//! runs continuous batching. Every step gathers one token from each generating slot plus a chunk
//! of the prompt of each slot still reading one, runs them through a single forward pass, and
//! hands each slot's logits to its [`Generator`]. Every mode generates here: the one-shot command
//! line and the terminal chat through a [`Client`], the HTTP side through the same channel; none
//! of them touches the model. Their [`Job`]s reach it through the intake (`intake.rs`, a thread
//! of its own), which renders and tokenizes, so that this thread only ever runs the model; answers
//! go back over the channel each job carries. It knows no protocol: its requests, events and
//! refusals (`jobs.rs`) are its own, and each edge converts them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc as events, oneshot};

use crate::chat_template::ChatTemplate;
use crate::engine::{common_prefix, Engine};
use crate::generator::{Finish, GenParams, Generator, Next, Vocab};
use crate::intake::{Intake, Ready};
use crate::jobs::{self, Client, Embedding, Event, Job, Refusal, Usage};
use crate::model::{KvCache, Output, Rows, SeqInput};

/// What `/health`, `/props` and `/metrics` report; written by the scheduler, read by the HTTP side.
#[derive(Default)]
pub(crate) struct Status {
    pub ready: AtomicBool,
    pub busy_slots: AtomicUsize,
    pub queued: AtomicUsize,
    /// Totals over finished generations: prompt tokens evaluated and their time, tokens
    /// generated and theirs (microseconds), and forward passes run.
    pub prompt_tokens: AtomicU64,
    pub prompt_us: AtomicU64,
    pub predicted_tokens: AtomicU64,
    pub predicted_us: AtomicU64,
    pub decodes: AtomicU64,
    /// Each slot as `/slots` shows it, updated after every step.
    pub slots: std::sync::Mutex<Vec<SlotState>>,
}

/// One slot, as `/slots` reports it.
#[derive(Clone, Debug, Default)]
pub(crate) struct SlotState {
    pub n_ctx: usize,
    pub is_processing: bool,
    /// Tokens whose keys and values the slot's cache holds.
    pub n_cached: usize,
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
    generator: Generator,
    prompt_logprobs: Option<usize>,
    events: events::UnboundedSender<Event>,
    /// The token chosen last, to be evaluated in the next step; `None` while reading the prompt.
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
    /// An embeddings request this slot serves, a slice per step (never with `task`).
    embedding: Option<EmbedTask>,
    last_used: u64,
}

impl Slot {
    fn is_free(&self) -> bool {
        self.task.is_none() && self.embedding.is_none()
    }
}

/// An embeddings request in progress. Each step evaluates a slice of it between the generating
/// slots' tokens, so that a long request does not stall their streams: several inputs at once as
/// sequences of one forward pass, each in a KV cache of its own length, dropped when it is done.
struct EmbedTask {
    inputs: Vec<Vec<u32>>,
    /// The next input not yet started.
    next: usize,
    /// Inputs being read.
    active: Vec<EmbedInput>,
    done: Vec<Option<Embedding>>,
    reply: oneshot::Sender<Result<Vec<Embedding>, Refusal>>,
}

struct EmbedInput {
    index: usize,
    cache: KvCache,
    /// Tokens evaluated so far.
    pos: usize,
    /// The hidden states pooled so far.
    pooled: Vec<f64>,
}

/// Tokens of an embeddings request evaluated per step while other slots generate: small enough
/// that a stream's next token waits well under a second, large enough to batch well.
const EMBED_TOKENS_BESIDE_GENERATION: usize = 64;

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
    /// Handed to the intake when the scheduler runs.
    template: Option<ChatTemplate>,
    pooling: Pooling,
    vocab: Vocab<'e>,
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
        template: Option<ChatTemplate>,
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
                embedding: None,
                last_used: 0,
            })
            .collect();
        Ok(Scheduler {
            engine,
            template,
            pooling: cfg.pooling,
            vocab: Vocab::new(&engine.tokenizer),
            slots,
            queue: VecDeque::new(),
            max_queue: cfg.max_queue,
            slot_ctx,
            tick: 0,
            status,
        })
    }

    /// Serves jobs until every client is gone. They go through the intake first, on a thread of
    /// its own, which turns their texts into tokens; this thread runs the model.
    pub fn run(mut self, jobs: Receiver<Job>) {
        let intake = Intake::new(self.engine, self.template.take());
        std::thread::scope(|scope| {
            let (ready, tokens) = mpsc::channel();
            let started = std::thread::Builder::new()
                .name("llamafile-intake".into())
                .spawn_scoped(scope, move || intake.run(jobs, ready));
            if let Err(e) = started {
                eprintln!("llamafile: cannot start the intake thread: {e}");
                return;
            }
            self.serve(tokens);
        });
    }

    fn serve(&mut self, jobs: Receiver<Ready>) {
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
            self.embed_step();
            self.publish_status();
        }
    }

    fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.slots.iter().all(Slot::is_free)
    }

    fn publish_status(&self) {
        let busy = self.slots.iter().filter(|s| !s.is_free()).count();
        self.status.busy_slots.store(busy, Ordering::Relaxed);
        self.status
            .queued
            .store(self.queue.len(), Ordering::Relaxed);
        if let Ok(mut slots) = self.status.slots.lock() {
            *slots = self
                .slots
                .iter()
                .map(|s| SlotState {
                    n_ctx: self.slot_ctx,
                    is_processing: !s.is_free(),
                    n_cached: s.tokens.len(),
                })
                .collect();
        }
    }

    fn free_slots(&self) -> usize {
        self.slots.iter().filter(|s| s.is_free()).count()
    }

    fn accept(&mut self, job: Ready) {
        match job {
            Ready::Generate {
                prompt,
                params,
                events,
            } => match self
                .prepare(prompt, params, events.clone())
                .and_then(|task| self.queue_full().map_or(Ok(task), Err))
            {
                Ok(task) => self.queue.push_back(Queued::Generate(Box::new(task))),
                Err(e) => {
                    let _ = events.send(Event::Error(e));
                }
            },
            Ready::Embed { inputs, reply } => {
                let fits = inputs
                    .iter()
                    .try_for_each(|ids| self.check_length(ids.len(), 0));
                match fits.and_then(|()| self.queue_full().map_or(Ok(()), Err)) {
                    Ok(()) => self.queue.push_back(Queued::Embed { inputs, reply }),
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

    fn prepare(
        &self,
        prompt: Vec<u32>,
        mut params: GenParams,
        events: events::UnboundedSender<Event>,
    ) -> Result<Task, Refusal> {
        // At least one token must fit after the prompt.
        self.check_length(prompt.len(), 1)?;
        if !params.use_whole_context {
            let room = self.slot_ctx - prompt.len();
            params.max_tokens = Some(params.max_tokens.map_or(room, |m| m.min(room)));
        }
        let prompt_logprobs = params.prompt_logprobs;
        let generator = Generator::new(params, self.engine.n_vocab()).map_err(Refusal::invalid)?;
        Ok(Task {
            prompt,
            generator,
            prompt_logprobs,
            events,
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
            if slot.embedding.as_ref().is_some_and(|e| e.reply.is_closed()) {
                slot.embedding = None;
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
            .filter(|(_, s)| s.is_free())
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
                    // since its logits are needed, and every one when their logprobs are.
                    let common = match task.prompt_logprobs {
                        Some(_) => 0,
                        None => {
                            common_prefix(&slot.tokens, &task.prompt).min(task.prompt.len() - 1)
                        }
                    };
                    slot.tokens.truncate(common);
                    task.cached = common;
                    task.started = Instant::now();
                    slot.task = Some(*task);
                }
                Queued::Embed { inputs, reply } => {
                    slot.embedding = Some(EmbedTask {
                        next: 0,
                        active: Vec::new(),
                        done: (0..inputs.len()).map(|_| None).collect(),
                        inputs,
                        reply,
                    });
                }
            }
        }
    }

    /// Evaluates the next slice of one embeddings request: up to `-b` tokens when nothing else
    /// runs, fewer beside generating slots; as many inputs at once as fit.
    fn embed_step(&mut self) {
        let Some(i) = self.slots.iter().position(|s| s.embedding.is_some()) else {
            return;
        };
        let generating = self.slots.iter().any(|s| s.task.is_some());
        let n_batch = self.engine.n_batch.max(1);
        let mut budget = if generating {
            EMBED_TOKENS_BESIDE_GENERATION.min(n_batch)
        } else {
            n_batch
        };
        let model = &self.engine.model;
        let d = model.config.n_embd;
        let pooling = self.pooling;
        let Some(task) = self.slots[i].embedding.as_mut() else {
            return;
        };
        // Start inputs while the slice has room: each gets a cache of its own length.
        let mut planned: usize = task
            .active
            .iter()
            .map(|a| task.inputs[a.index].len() - a.pos)
            .sum();
        while planned < budget && task.next < task.inputs.len() {
            let len = task.inputs[task.next].len();
            task.active.push(EmbedInput {
                index: task.next,
                cache: model.new_cache(len),
                pos: 0,
                pooled: vec![0.0; d],
            });
            task.next += 1;
            planned += len;
        }
        let rows = match pooling {
            Pooling::Last => Rows::Last,
            Pooling::Mean | Pooling::First => Rows::All,
        };
        let mut slices = Vec::with_capacity(task.active.len());
        let hidden = {
            let mut seqs = Vec::with_capacity(task.active.len());
            for a in task.active.iter_mut() {
                if budget == 0 {
                    break;
                }
                let ids = &task.inputs[a.index];
                let take = (ids.len() - a.pos).min(budget);
                budget -= take;
                slices.push((a.pos, take));
                seqs.push(SeqInput {
                    cache: &mut a.cache,
                    tokens: &ids[a.pos..a.pos + take],
                    pos0: a.pos,
                    rows,
                });
            }
            model.forward_batch(&mut seqs, Output::Hidden)
        };
        let mut out = hidden.chunks_exact(d);
        for (a, &(pos0, take)) in task.active.iter_mut().zip(&slices) {
            let n_rows = match rows {
                Rows::All => take,
                Rows::Last => 1,
            };
            for (t, row) in out.by_ref().take(n_rows).enumerate() {
                let keep = match pooling {
                    Pooling::Mean => true,
                    Pooling::First => pos0 == 0 && t == 0,
                    // Only the slice's last row was computed; the input's last one is kept.
                    Pooling::Last => {
                        a.pooled.fill(0.0);
                        true
                    }
                };
                if keep {
                    a.pooled
                        .iter_mut()
                        .zip(row)
                        .for_each(|(p, &v)| *p += f64::from(v));
                }
            }
            a.pos += take;
        }
        let inputs = &task.inputs;
        let done = &mut task.done;
        task.active.retain(|a| {
            let n_tokens = inputs[a.index].len();
            if a.pos < n_tokens {
                return true;
            }
            // Euclidean normalization, llama.cpp's default for embeddings (the mean's scale
            // cancels).
            let norm = a.pooled.iter().map(|v| v * v).sum::<f64>().sqrt();
            let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
            done[a.index] = Some(Embedding {
                vector: a.pooled.iter().map(|&v| (v * scale) as f32).collect(),
                n_tokens,
            });
            false
        });
        if task.active.is_empty() && task.next == task.inputs.len() {
            if let Some(task) = self.slots[i].embedding.take() {
                let _ = task
                    .reply
                    .send(Ok(task.done.into_iter().flatten().collect()));
            }
        }
    }

    /// One forward pass over every busy slot: one token from each generating slot, then prompt
    /// chunks within the `-b` budget.
    fn step(&mut self) {
        let mut budget = self.engine.n_batch.max(1);
        let mut plan: Vec<(usize, Vec<u32>, Rows)> = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            if let Some(tok) = slot.task.as_ref().and_then(|t| t.next) {
                plan.push((i, vec![tok], Rows::Last));
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
                let rows = match task.prompt_logprobs {
                    Some(_) => Rows::All,
                    None => Rows::Last,
                };
                plan.push((i, rest[..take].to_vec(), rows));
                budget -= take;
            }
        }
        if plan.is_empty() {
            return;
        }
        plan.sort_by_key(|(i, _, _)| *i);
        let logits = {
            let mut seqs = Vec::with_capacity(plan.len());
            let mut planned = plan.iter().peekable();
            for (i, slot) in self.slots.iter_mut().enumerate() {
                if let Some((_, tokens, rows)) = planned.next_if(|(j, _, _)| *j == i) {
                    let pos0 = slot.tokens.len();
                    seqs.push(SeqInput {
                        cache: &mut slot.cache,
                        tokens,
                        pos0,
                        rows: *rows,
                    });
                }
            }
            self.status.decodes.fetch_add(1, Ordering::Relaxed);
            self.engine.model.forward_batch(&mut seqs, Output::Logits)
        };
        let n_vocab = self.engine.n_vocab();
        let mut rows_of = logits.chunks_exact(n_vocab);
        for (i, tokens, rows) in plan {
            let n_rows = match rows {
                Rows::All => tokens.len(),
                Rows::Last => 1,
            };
            let seq_rows: Vec<&[f32]> = rows_of.by_ref().take(n_rows).collect();
            let slot = &mut self.slots[i];
            slot.tokens.extend_from_slice(&tokens);
            let Some(task) = slot.task.as_mut() else {
                continue;
            };
            if task.next.is_none() {
                if let Some(k) = task.prompt_logprobs {
                    let top = seq_rows.iter().map(|row| self.vocab.candidates(row, k));
                    let _ = task.events.send(Event::PromptLogprobs(top.collect()));
                }
                if slot.tokens.len() < task.prompt.len() {
                    continue;
                }
                task.prompt_done = Some(Instant::now());
            }
            if let Some(last) = seq_rows.last() {
                self.advance(i, last);
            }
        }
    }

    /// Hands slot `i`'s logits `row` to its generator and sends what it adds.
    fn advance(&mut self, i: usize, row: &[f32]) {
        let slot = &mut self.slots[i];
        let Some(task) = slot.task.as_mut() else {
            return;
        };
        let context_full = slot.tokens.len() >= self.slot_ctx;
        let (delta, next) = task
            .generator
            .advance(row, &slot.tokens, &self.vocab, context_full);
        if let Some(delta) = delta {
            let _ = task.events.send(Event::Delta(delta));
        }
        match next {
            Next::Token(tok) => task.next = Some(tok),
            Next::Finished(finish) => self.finish(i, finish),
        }
    }

    /// Ends slot `i`'s task and reports its usage.
    fn finish(&mut self, i: usize, finish: Finish) {
        let Some(task) = self.slots[i].task.take() else {
            return;
        };
        let now = Instant::now();
        let prompt_done = task.prompt_done.unwrap_or(now);
        let usage = Usage {
            prompt_tokens: task.prompt.len(),
            completion_tokens: task.generator.generated(),
            cached_tokens: task.cached,
            prompt_ms: (prompt_done - task.started).as_secs_f64() * 1e3,
            gen_ms: (now - prompt_done).as_secs_f64() * 1e3,
        };
        let st = &self.status;
        let evaluated = usage.prompt_tokens - usage.cached_tokens;
        st.prompt_tokens
            .fetch_add(evaluated as u64, Ordering::Relaxed);
        st.prompt_us
            .fetch_add((usage.prompt_ms * 1e3) as u64, Ordering::Relaxed);
        st.predicted_tokens
            .fetch_add(usage.completion_tokens as u64, Ordering::Relaxed);
        st.predicted_us
            .fetch_add((usage.gen_ms * 1e3) as u64, Ordering::Relaxed);
        let _ = task.events.send(Event::Done { finish, usage });
    }
}

/// A scheduler of one slot without HTTP, on a thread of `scope`: the one-shot command line
/// (without a template: it reads raw prompts) and `-i` generate through it. It stops when the
/// returned client and its clones are dropped.
pub(crate) fn spawn_local<'scope, 'env>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    engine: &'env Engine<'env>,
    template: Option<ChatTemplate>,
    pooling: Pooling,
) -> Result<Client, String> {
    let cfg = Config {
        parallel: 1,
        max_queue: 1,
        pooling,
    };
    let scheduler = Scheduler::new(engine, template, &cfg, Arc::new(Status::default()))?;
    let (client, rx) = jobs::channel();
    scope.spawn(move || scheduler.run(rx));
    Ok(client)
}
