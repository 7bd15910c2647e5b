//! One sequence's generation: from each row of logits to the next token and the text it adds.
//!
//! The scheduler drives one [`Generator`] per request, in every mode (the one-shot command line,
//! the terminal chat, the server): sampling, the JSON constraint, stop strings, UTF-8 streaming
//! and log-probabilities are decided here and nowhere else. Its outputs ([`Delta`], [`Finish`])
//! know no protocol; each edge turns them into its own format. Tool calls are found here too: a
//! [`CallDetector`] watches the text as the stop strings do, and a reply that made calls ends with
//! [`Finish::ToolCalls`].

use std::cell::OnceCell;

use tokenizer::{Tokenizer, Utf8Stream};

use crate::constraint::{Constraint, ConstraintState};
use crate::messages::ToolCall;
use crate::sampling::{log_sum_exp, top_logprobs, Sampler, SamplerConfig};
use crate::tools::CallDetector;

/// How a generation samples and when it ends.
#[derive(Clone)]
pub(crate) struct GenParams {
    pub sampling: SamplerConfig,
    /// Tokens to generate at most; `None`: until the reply ends or the context is full.
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    /// Report each generated token's log-probability and this many alternatives.
    pub logprobs: Option<usize>,
    /// Report this many most likely tokens at every prompt position (the prompt is then
    /// evaluated whole, no cached prefix reused).
    pub prompt_logprobs: Option<usize>,
    /// Added to these tokens' logits before anything else sees them.
    pub logit_bias: Vec<(u32, f32)>,
    /// Hold the output to a JSON schema or a grammar.
    pub constraint: Option<Constraint>,
    /// Whether an end-of-generation token ends the reply; when not (the command line's `-n -2`),
    /// it is kept as any other token and generation goes on to the length limit.
    pub ends_at_eog: bool,
    /// Whether the last token may be one chosen from the logits of a full context, with no
    /// position left to evaluate it in (the command line: every position is used). Otherwise
    /// each token of the reply has a position to go to, so that a conversation carrying the reply
    /// on still fits (the server and the chat, as llama.cpp's server).
    pub use_whole_context: bool,
    /// Tool calls to look for: set by the intake, which knows the chat template's format (and,
    /// when a call is required, puts the constraint in `constraint`).
    pub tools: Option<Box<CallDetector>>,
    /// Control tokens whose text goes into the reply all the same: the tool-call markers of
    /// models that have them as control tokens (Qwen 2.5's `<tool_call>`).
    pub shown_controls: Vec<u32>,
}

impl Default for GenParams {
    fn default() -> Self {
        GenParams {
            sampling: SamplerConfig::default(),
            max_tokens: None,
            stop: Vec::new(),
            logprobs: None,
            prompt_logprobs: None,
            logit_bias: Vec::new(),
            constraint: None,
            ends_at_eog: true,
            use_whole_context: false,
            tools: None,
            shown_controls: Vec::new(),
        }
    }
}

/// What the generator needs to know of the vocabulary.
pub(crate) struct Vocab<'t> {
    pub tokenizer: &'t Tokenizer,
    /// Every token's bytes in generated text, for the JSON constraint's mask: worked out the first
    /// time a constrained request comes (152k tokens take milliseconds, which a one-shot
    /// completion's time to first token would otherwise pay).
    pieces: OnceCell<Vec<Vec<u8>>>,
}

impl<'t> Vocab<'t> {
    pub fn new(tokenizer: &'t Tokenizer) -> Self {
        Vocab {
            tokenizer,
            pieces: OnceCell::new(),
        }
    }

    /// A token's bytes in generated text (control tokens: none).
    fn piece(&self, id: u32) -> Vec<u8> {
        match self.pieces.get() {
            Some(pieces) => pieces[id as usize].clone(),
            None => self.tokenizer.token_to_piece(id, false),
        }
    }

    fn pieces(&self) -> &[Vec<u8>] {
        self.pieces.get_or_init(|| {
            (0..self.tokenizer.n_vocab() as u32)
                .map(|id| self.tokenizer.token_to_piece(id, false))
                .collect()
        })
    }

    /// The `k` most likely tokens of `row`, with their log-probabilities and their bytes as
    /// log-probabilities show them (control tokens written out).
    pub fn candidates(&self, row: &[f32], k: usize) -> Vec<Candidate> {
        top_logprobs(row, k)
            .into_iter()
            .map(|(id, logprob)| Candidate {
                id,
                bytes: self.tokenizer.token_to_piece(id, true),
                logprob,
            })
            .collect()
    }
}

/// A token and its log-probability.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Candidate {
    pub id: u32,
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// A generated token's log-probability and the most likely alternatives.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TokenLogprob {
    pub bytes: Vec<u8>,
    pub logprob: f32,
    pub top: Vec<Candidate>,
}

/// A token the generator chose.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Sampled {
    pub id: u32,
    /// When log-probabilities were asked for.
    pub logprob: Option<TokenLogprob>,
}

/// New text (never a partial UTF-8 character or part of a stop string) and the tokens chosen
/// since the last delta. A token whose text a stop string cut away still comes with the last.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Delta {
    pub text: String,
    pub tokens: Vec<Sampled>,
}

/// Why a reply ended.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Finish {
    /// The model chose an end-of-generation token: it is reported here, since it adds no text.
    EndOfGeneration(Sampled),
    /// The text ends before this stop string.
    StopString(String),
    /// The JSON the constraint asked for is complete (or no token can continue it).
    Constraint,
    /// The token limit, or the context is full.
    Length,
    /// The reply called these tools (the text before the calls, if any, came as deltas).
    ToolCalls(Vec<ToolCall>),
}

/// What the scheduler does next for this sequence.
#[derive(Debug, PartialEq)]
pub(crate) enum Next {
    /// Evaluate this token, then call [`Generator::advance`] with the logits after it.
    Token(u32),
    Finished(Finish),
}

/// The state of one sequence's generation.
pub(crate) struct Generator {
    sampler: Sampler,
    constraint: Option<ConstraintState>,
    stop: StopMatcher,
    calls: Option<Box<CallDetector>>,
    shown_controls: Vec<u32>,
    utf8: Utf8Stream,
    logprobs: Option<usize>,
    logit_bias: Vec<(u32, f32)>,
    ends_at_eog: bool,
    max_new: usize,
    generated: usize,
    /// Tokens chosen since the last delta.
    pending: Vec<Sampled>,
}

impl Generator {
    pub fn new(params: GenParams, n_vocab: usize) -> Result<Self, String> {
        Ok(Generator {
            sampler: Sampler::new(params.sampling, n_vocab).map_err(|e| e.to_string())?,
            constraint: params.constraint.map(ConstraintState::new),
            stop: StopMatcher::new(params.stop),
            calls: params.tools,
            shown_controls: params.shown_controls,
            utf8: Utf8Stream::new(),
            logprobs: params.logprobs,
            logit_bias: params.logit_bias,
            ends_at_eog: params.ends_at_eog,
            max_new: params.max_tokens.unwrap_or(usize::MAX),
            generated: 0,
            pending: Vec::new(),
        })
    }

    /// Tokens generated so far (an end-of-generation token that ended the reply not counted).
    pub fn generated(&self) -> usize {
        self.generated
    }

    /// Chooses the next token from `row`, the logits after `history`, and says what to do next.
    /// `context_full`: the context has no room to evaluate another token, so the one chosen now
    /// is the last.
    pub fn advance(
        &mut self,
        row: &[f32],
        history: &[u32],
        vocab: &Vocab,
        context_full: bool,
    ) -> (Option<Delta>, Next) {
        if self.generated >= self.max_new {
            return self.finish(Finish::Length);
        }
        let biased;
        let row = if self.logit_bias.is_empty() {
            row
        } else {
            let mut copy = row.to_vec();
            for &(id, bias) in &self.logit_bias {
                copy[id as usize] += bias;
            }
            biased = copy;
            &biased
        };
        let tokenizer = vocab.tokenizer;
        let picked = match &self.constraint {
            Some(state) => pick_constrained(
                row,
                state,
                &mut self.sampler,
                history,
                vocab.pieces(),
                |id| tokenizer.is_eog(id),
            ),
            None => Some(self.sampler.sample(row, history)),
        };
        let Some(tok) = picked else {
            return self.finish(Finish::Constraint);
        };
        let sampled = Sampled {
            id: tok,
            logprob: self.logprobs.map(|k| TokenLogprob {
                bytes: tokenizer.token_to_piece(tok, true),
                logprob: (f64::from(row[tok as usize]) - log_sum_exp(row)) as f32,
                top: vocab.candidates(row, k),
            }),
        };
        if self.ends_at_eog && tokenizer.is_eog(tok) {
            return self.finish(Finish::EndOfGeneration(sampled));
        }
        self.generated += 1;
        self.pending.push(sampled);
        let piece = match self.shown_controls.contains(&tok) {
            true => tokenizer.token_to_piece(tok, true),
            false => vocab.piece(tok),
        };
        if let Some(state) = &mut self.constraint {
            state.feed(&piece);
        }
        let text = self.utf8.push(&piece);
        let (mut text, stopped) = self.stop.push(&text);
        if let Some(calls) = &mut self.calls {
            text = calls.push(&text);
        }
        let delta = (!text.is_empty()).then(|| Delta {
            text,
            tokens: std::mem::take(&mut self.pending),
        });
        let finish = if stopped {
            self.stop.found.clone().map(Finish::StopString)
        } else if self
            .constraint
            .as_ref()
            .is_some_and(ConstraintState::is_complete)
        {
            Some(Finish::Constraint)
        } else if self.generated >= self.max_new || context_full {
            Some(Finish::Length)
        } else {
            None
        };
        match finish {
            None => (delta, Next::Token(tok)),
            Some(finish) => {
                let (rest, next) = self.finish(finish);
                (merge(delta, rest), next)
            }
        }
    }

    /// Ends the reply: the text held back (a partial character, the start of a stop string that
    /// never came) goes out unless a stop string cut it, with the tokens not yet reported; a
    /// reply that made tool calls ends with them.
    fn finish(&mut self, mut finish: Finish) -> (Option<Delta>, Next) {
        let mut text = String::new();
        if self.stop.found.is_none() {
            let rest = self.utf8.finish();
            text.push_str(&self.stop.push(&rest).0);
            text.push_str(&self.stop.finish());
        }
        if let Some(calls) = &mut self.calls {
            text = calls.push(&text);
            match calls.finish() {
                Ok(made) => finish = Finish::ToolCalls(made),
                Err(held) => text.push_str(&held),
            }
        }
        let delta = (!text.is_empty() || !self.pending.is_empty()).then(|| Delta {
            text,
            tokens: std::mem::take(&mut self.pending),
        });
        (delta, Next::Finished(finish))
    }
}

fn merge(a: Option<Delta>, b: Option<Delta>) -> Option<Delta> {
    match (a, b) {
        (Some(mut a), Some(b)) => {
            a.text.push_str(&b.text);
            a.tokens.extend(b.tokens);
            Some(a)
        }
        (a, b) => a.or(b),
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
    state: &ConstraintState,
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
    /// The stop string found, once one is.
    found: Option<String>,
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
        if let Some((pos, stop)) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()).map(|pos| (pos, s)))
            .min_by_key(|(pos, _)| *pos)
        {
            self.found = Some(stop.clone());
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
    use crate::json_schema::Schema;

    #[test]
    fn stop_strings_cut_the_output_and_partial_matches_wait() {
        let mut m = StopMatcher::new(vec!["</end>".into(), "STOP".into()]);
        assert_eq!(m.push("Hello </"), ("Hello ".to_string(), false));
        assert_eq!(m.push("b> x ST"), ("</b> x ".to_string(), false));
        assert_eq!(m.push("OP and more"), (String::new(), true));
        assert_eq!(m.found.as_deref(), Some("STOP"));
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
        let state = ConstraintState::new(Constraint::Json(Schema::any_object()));
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
        // A grammar the same way: `"[" ` and `"a"` are refused by `root ::= "{" [^}]* "}"`.
        let grammar = crate::grammar::Grammar::parse(r#"root ::= "{" [^}]* "}""#).unwrap();
        let mut state = ConstraintState::new(Constraint::Grammar(grammar));
        let cfg = SamplerConfig {
            temp: 0.0,
            ..SamplerConfig::default()
        };
        let mut sampler = Sampler::new(cfg, pieces.len()).unwrap();
        assert_eq!(
            pick_constrained(&row, &state, &mut sampler, &[], &pieces, |id| id == 6),
            Some(1)
        );
        assert!(state.feed(b"{"));
        // Now "x" (the likeliest but for the end token) fits; the end token does not, yet.
        assert_eq!(
            pick_constrained(&row, &state, &mut sampler, &[], &pieces, |id| id == 6),
            Some(0)
        );
        assert!(state.feed(b"}") && state.is_complete());
        assert_eq!(
            pick_constrained(&row, &state, &mut sampler, &[], &pieces, |id| id == 6),
            Some(6)
        );
    }
}
