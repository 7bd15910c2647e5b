//! Model plus tokenizer plus KV cache: evaluating tokens in batches, and perplexity. Generation
//! runs in the scheduler (`scheduler.rs`), for every mode.

use tokenizer::Tokenizer;

use crate::model::{KvCache, Model, Output, Rows};
use crate::sampling::log_sum_exp;

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

    /// Appends `tokens` to the session, evaluating them in batches of `n_batch`, and hands each
    /// batch's logits to `each` with the batch's offset in `tokens`: every token's row
    /// (`Rows::All`, n × n_vocab) or the batch's last. A batch's logits are dropped before the
    /// next is evaluated, so memory stays at one batch's whatever the length.
    pub fn eval(
        &self,
        s: &mut Session,
        tokens: &[u32],
        rows: Rows,
        mut each: impl FnMut(usize, &[f32]),
    ) -> Result<(), ContextFull> {
        let needed = s.tokens.len() + tokens.len();
        if needed > self.n_ctx {
            return Err(ContextFull {
                n_ctx: self.n_ctx,
                needed,
            });
        }
        let n_batch = self.n_batch.max(1);
        for (i, batch) in tokens.chunks(n_batch).enumerate() {
            let logits =
                self.model
                    .forward(&mut s.cache, batch, s.tokens.len(), rows, Output::Logits);
            s.tokens.extend_from_slice(batch);
            each(i * n_batch, &logits);
        }
        Ok(())
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
            // Scored batch by batch: a chunk's logits (n_ctx × n_vocab, gigabytes at long
            // contexts) are never held at once.
            self.eval(&mut session, &chunk_tokens, Rows::All, |offset, logits| {
                for (k, row) in logits.chunks_exact(n_vocab).enumerate() {
                    let j = offset + k;
                    if j >= first && j + 1 < n_chunk_ctx {
                        let target = tokens[start + j + 1] as usize;
                        nll -= f64::from(row[target]) - log_sum_exp(row);
                        count += 1;
                    }
                }
            })
            .map_err(|e| e.to_string())?;
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

#[derive(Debug)]
pub struct Perplexity {
    pub perplexity: f64,
    pub chunks: usize,
    pub tokens: usize,
}
