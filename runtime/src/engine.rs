//! Model plus tokenizer plus KV cache: evaluating prompts in batches, generating, and perplexity.

use std::time::Instant;

use serde_json::{json, Value};
use tokenizer::Tokenizer;

use crate::model::{KvCache, Logits, Model};
use crate::sampling::{log_sum_exp, top_logprobs, Sampler};

/// The model, its tokenizer and the run-time sizes chosen on the command line.
pub struct Engine<'a> {
    pub model: Model<'a>,
    pub tokenizer: Tokenizer,
    /// Positions the KV cache holds.
    pub n_ctx: usize,
    /// Tokens per forward pass while evaluating a prompt.
    pub n_batch: usize,
}

/// The state of one conversation: which tokens the KV cache holds.
pub struct Session {
    cache: KvCache,
    tokens: Vec<u32>,
}

impl Session {
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Forgets everything after the first `n` tokens (their cache entries are overwritten later).
    pub fn truncate(&mut self, n: usize) {
        self.tokens.truncate(n);
    }
}

/// The context is full: no room for the tokens to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextFull {
    pub n_ctx: usize,
    pub needed: usize,
}

impl std::fmt::Display for ContextFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the context holds {} tokens, {} are needed (raise -c)",
            self.n_ctx, self.needed
        )
    }
}

impl std::error::Error for ContextFull {}

/// Which logits [`Engine::eval`] returns.
pub enum Want {
    /// Every evaluated token's logits, n × n_vocab.
    All,
    /// The last token's logits only.
    Last,
}

impl<'a> Engine<'a> {
    pub fn new_session(&self) -> Session {
        Session {
            cache: self.model.new_cache(self.n_ctx),
            tokens: Vec::new(),
        }
    }

    pub fn n_vocab(&self) -> usize {
        self.model.config.n_vocab
    }

    /// Appends `tokens` to the session, evaluating them in batches of `n_batch`.
    pub fn eval(
        &self,
        s: &mut Session,
        tokens: &[u32],
        want: Want,
    ) -> Result<Vec<f32>, ContextFull> {
        let needed = s.tokens.len() + tokens.len();
        if needed > self.n_ctx {
            return Err(ContextFull {
                n_ctx: self.n_ctx,
                needed,
            });
        }
        let n_vocab = self.n_vocab();
        let mut all = Vec::new();
        let mut last = Vec::new();
        let batches: Vec<&[u32]> = tokens.chunks(self.n_batch.max(1)).collect();
        for (i, batch) in batches.iter().enumerate() {
            let is_last = i + 1 == batches.len();
            let logits = match want {
                Want::All => Logits::All,
                Want::Last => Logits::Last,
            };
            // Intermediate batches need no logits when only the last token's are wanted;
            // their output projection is still computed for the last row, which is cheap.
            let out = self
                .model
                .forward(&mut s.cache, batch, s.tokens.len(), logits);
            s.tokens.extend_from_slice(batch);
            match want {
                Want::All => all.extend_from_slice(&out),
                Want::Last if is_last => last = out,
                Want::Last => {}
            }
        }
        debug_assert!(matches!(want, Want::Last) || all.len() == tokens.len() * n_vocab);
        Ok(match want {
            Want::All => all,
            Want::Last => last,
        })
    }

    /// The prompt's token ids the way llama.cpp's CLI makes them: BOS as the metadata says, special
    /// tokens written in the text parsed, and a literal BOS at the start not doubled.
    pub fn tokenize_prompt(&self, text: &str) -> Vec<u32> {
        let mut ids = self.tokenizer.encode(text, true, true);
        if let Some(bos) = self.tokenizer.bos() {
            if self.tokenizer.add_bos() && ids.len() >= 2 && ids[0] == bos && ids[1] == bos {
                ids.remove(0);
            }
        }
        ids
    }

    /// Evaluates `prompt` and generates up to `n_predict` tokens (negative: until end of generation
    /// or a full context), calling `on_token` with each one as it is chosen; it returns false to stop.
    pub fn generate(
        &self,
        s: &mut Session,
        prompt: &[u32],
        n_predict: i64,
        sampler: &mut Sampler,
        opts: &GenerateOptions,
        mut on_token: impl FnMut(u32) -> bool,
    ) -> Result<Generation, ContextFull> {
        let n_vocab = self.n_vocab();
        let mut out = Generation::default();
        if prompt.is_empty() {
            return Ok(out);
        }
        let t0 = Instant::now();
        let want = if opts.prompt_logprobs.is_some() {
            Want::All
        } else {
            Want::Last
        };
        let logits = self.eval(s, prompt, want)?;
        let mut last: Vec<f32> = logits[logits.len() - n_vocab..].to_vec();
        if let Some(k) = opts.prompt_logprobs {
            out.prompt_logprobs = logits
                .chunks_exact(n_vocab)
                .map(|row| top_logprobs(row, k))
                .collect();
        }
        out.prompt_ms = t0.elapsed().as_secs_f64() * 1e3;
        out.prompt_n = prompt.len();

        let t1 = Instant::now();
        let limit = if n_predict < 0 {
            usize::MAX
        } else {
            n_predict as usize
        };
        while out.tokens.len() < limit {
            if let Some(k) = opts.top_logprobs {
                out.top_logprobs.push(top_logprobs(&last, k));
            }
            let tok = sampler.sample(&last, s.tokens());
            out.tokens.push(tok);
            let eog = self.tokenizer.is_eog(tok);
            if !on_token(tok) || (eog && n_predict != -2) {
                out.stopped_by_eog = eog;
                break;
            }
            if out.tokens.len() >= limit {
                break;
            }
            if s.tokens.len() >= self.n_ctx {
                out.context_full = true;
                break;
            }
            last = self.eval(s, &[tok], Want::Last)?;
        }
        out.gen_ms = t1.elapsed().as_secs_f64() * 1e3;
        Ok(out)
    }

    /// llama.cpp's perplexity: the text tokenized once, cut into chunks of `n_chunk_ctx` tokens, the
    /// first token of each chunk replaced by BOS when the model adds one, and the negative
    /// log-likelihood of the second half of each chunk averaged.
    pub fn perplexity(
        &self,
        text: &str,
        n_chunk_ctx: usize,
        mut progress: impl FnMut(usize, usize, f64),
    ) -> Result<Perplexity, String> {
        let mut tokens = self.tokenizer.encode(text, true, false);
        if n_chunk_ctx < 2 || tokens.len() < 2 * n_chunk_ctx {
            return Err(format!(
                "perplexity needs at least {} tokens for a context of {n_chunk_ctx}; the text has {}",
                2 * n_chunk_ctx,
                tokens.len()
            ));
        }
        if n_chunk_ctx > self.n_ctx {
            return Err(format!(
                "the chunk size {n_chunk_ctx} exceeds the context {}",
                self.n_ctx
            ));
        }
        let n_vocab = self.n_vocab();
        let n_chunks = tokens.len() / n_chunk_ctx;
        let first = n_chunk_ctx / 2;
        let mut nll = 0.0f64;
        let mut count = 0usize;
        let mut session = self.new_session();
        for chunk in 0..n_chunks {
            let start = chunk * n_chunk_ctx;
            let chunk_tokens = &mut tokens[start..start + n_chunk_ctx];
            if self.tokenizer.add_bos() {
                if let Some(bos) = self.tokenizer.bos() {
                    chunk_tokens[0] = bos;
                }
            }
            let chunk_tokens = chunk_tokens.to_vec();
            session.truncate(0);
            let logits = self
                .eval(&mut session, &chunk_tokens, Want::All)
                .map_err(|e| e.to_string())?;
            for j in first..n_chunk_ctx - 1 {
                let row = &logits[j * n_vocab..(j + 1) * n_vocab];
                let target = tokens[start + j + 1] as usize;
                nll -= f64::from(row[target]) - log_sum_exp(row);
                count += 1;
            }
            progress(chunk + 1, n_chunks, (nll / count as f64).exp());
        }
        Ok(Perplexity {
            perplexity: (nll / count as f64).exp(),
            chunks: n_chunks,
            tokens: tokens.len(),
        })
    }
}

/// How many tokens two sequences share from their start: the part of a prompt whose keys and
/// values a cache already holds.
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// llama.cpp's `timings` object (its server's and its CLI's), from tokens and milliseconds.
pub fn timings_json(
    prompt_n: usize,
    prompt_ms: f64,
    predicted_n: usize,
    predicted_ms: f64,
) -> Value {
    let per_s = |n: usize, ms: f64| if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 };
    json!({
        "prompt_n": prompt_n,
        "prompt_ms": prompt_ms,
        "prompt_per_second": per_s(prompt_n, prompt_ms),
        "predicted_n": predicted_n,
        "predicted_ms": predicted_ms,
        "predicted_per_second": per_s(predicted_n, predicted_ms),
    })
}

/// What to record besides the tokens.
#[derive(Default)]
pub struct GenerateOptions {
    /// Top-K log-probabilities at every prompt position.
    pub prompt_logprobs: Option<usize>,
    /// Top-K log-probabilities at every generated step.
    pub top_logprobs: Option<usize>,
}

#[derive(Default, Debug)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub prompt_logprobs: Vec<Vec<(u32, f32)>>,
    pub top_logprobs: Vec<Vec<(u32, f32)>>,
    pub prompt_n: usize,
    pub prompt_ms: f64,
    pub gen_ms: f64,
    pub stopped_by_eog: bool,
    pub context_full: bool,
}

#[derive(Debug)]
pub struct Perplexity {
    pub perplexity: f64,
    pub chunks: usize,
    pub tokens: usize,
}
