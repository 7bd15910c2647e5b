//! Tokenizers built from GGUF metadata that give llama.cpp's token ids exactly.
//!
//! Two vocabulary types are supported, as llama.cpp implements them (`src/llama-vocab.cpp`):
//! `tokenizer.ggml.model = "llama"` (SentencePiece-style, score-driven merges with byte fallback) and
//! `"gpt2"` (byte-level BPE with a pre-tokenizer chosen by `tokenizer.ggml.pre`). Everything llama.cpp
//! decides while loading a vocabulary and that changes token ids is reproduced: default special ids,
//! text-based detection of end-of-generation tokens, attribute fix-ups, special-token partitioning,
//! the space prefix, and the exact merge order with its tie-breaking.

mod bpe;
mod pretokenize;
mod special;
mod spm;
mod stream;
mod table;
mod unicode;
mod unicode_table;
#[cfg(test)]
mod variant_tests;
mod vocab;

use std::collections::BTreeSet;
use std::fmt;

use gguf::{Gguf, Value};

use bpe::Bpe;
use pretokenize::PreTokenizer;
use special::{Fragment, Specials};
use table::StrTable;
use vocab::{attr, Vocab};

pub use stream::Utf8Stream;

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_SCORES: &str = "tokenizer.ggml.scores";
const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
const KEY_MERGES: &str = "tokenizer.ggml.merges";
const KEY_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
const KEY_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
const KEY_ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
const KEY_NAME: &str = "general.name";
const KEY_ARCH: &str = "general.architecture";

/// Why a tokenizer could not be built; each names the GGUF key at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerError {
    /// A required key is absent.
    MissingKey(&'static str),
    /// A key holds a value of another type than the one expected.
    WrongType {
        key: &'static str,
        expected: &'static str,
    },
    /// A per-token array has fewer entries than there are tokens.
    TooShort {
        key: &'static str,
        len: usize,
        n_tokens: usize,
    },
    /// `tokenizer.ggml.tokens` is empty.
    NoTokens,
    /// Two tokens have the same text (llama.cpp refuses such a vocabulary too).
    DuplicateToken { id: u32, first: u32, text: String },
    /// `tokenizer.ggml.model` names a tokenizer other than `llama` and `gpt2`.
    UnsupportedModel(String),
    /// `tokenizer.ggml.pre` names a pre-tokenizer this crate does not implement.
    UnsupportedPreTokenizer(String),
}

impl fmt::Display for TokenizerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenizerError::MissingKey(key) => write!(f, "GGUF metadata lacks {key}"),
            TokenizerError::WrongType { key, expected } => {
                write!(f, "GGUF key {key} is not {expected}")
            }
            TokenizerError::TooShort { key, len, n_tokens } => write!(
                f,
                "GGUF key {key} has {len} entries for {n_tokens} tokens in {KEY_TOKENS}"
            ),
            TokenizerError::NoTokens => write!(f, "GGUF key {KEY_TOKENS} is an empty list"),
            TokenizerError::DuplicateToken { id, first, text } => write!(
                f,
                "GGUF key {KEY_TOKENS}: token {id} has the same text as token {first}: {text:?}"
            ),
            TokenizerError::UnsupportedModel(m) => write!(
                f,
                "GGUF key {KEY_MODEL} is {m:?}; supported: \"llama\" (SentencePiece) and \"gpt2\" (BPE)"
            ),
            TokenizerError::UnsupportedPreTokenizer(p) => {
                write!(f, "GGUF key {KEY_PRE} is {p:?}, a pre-tokenizer not supported")
            }
        }
    }
}

impl std::error::Error for TokenizerError {}

/// The tokenizer algorithm and what only it needs.
enum Model {
    Spm {
        add_space_prefix: bool,
        /// `<0xNN>` token of each byte (else the one-byte token), as llama.cpp's `byte_to_token`.
        byte_tokens: Box<[Option<u32>; 256]>,
    },
    Bpe(Bpe),
}

/// A vocabulary loaded from GGUF metadata: text → ids and ids → text, as llama.cpp does them.
pub struct Tokenizer {
    vocab: Vocab,
    model: Model,
    specials: Specials,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    /// End-of-generation ids, sorted.
    eog: Vec<u32>,
    fim: FimTokens,
    /// `token_to_piece(id, true)` of every token, concatenated; token `i` ends at `piece_ends[i]`.
    pieces: Vec<u8>,
    piece_ends: Vec<usize>,
}

// ---- metadata access ----

fn opt_str<'a>(g: &Gguf<'a>, key: &'static str) -> Result<Option<&'a [u8]>, TokenizerError> {
    match g.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(TokenizerError::WrongType {
            key,
            expected: "a string",
        }),
    }
}

fn opt_bool(g: &Gguf, key: &'static str) -> Result<Option<bool>, TokenizerError> {
    match g.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(TokenizerError::WrongType {
            key,
            expected: "a bool",
        }),
    }
}

fn opt_u32(g: &Gguf, key: &'static str) -> Result<Option<u32>, TokenizerError> {
    let wrong = TokenizerError::WrongType {
        key,
        expected: "an unsigned 32-bit integer",
    };
    match g.get(key) {
        None => Ok(None),
        Some(Value::U32(v)) => Ok(Some(*v)),
        Some(Value::I32(v)) => u32::try_from(*v).map(Some).map_err(|_| wrong),
        Some(Value::U64(v)) => u32::try_from(*v).map(Some).map_err(|_| wrong),
        Some(_) => Err(wrong),
    }
}

fn opt_strings<'a>(
    g: &Gguf<'a>,
    key: &'static str,
) -> Result<Option<Vec<&'a [u8]>>, TokenizerError> {
    let wrong = TokenizerError::WrongType {
        key,
        expected: "an array of strings",
    };
    match g.get(key) {
        None => Ok(None),
        Some(Value::Array(a)) => a.as_strings().map(Some).ok_or(wrong),
        Some(_) => Err(wrong),
    }
}

/// A per-token array of f32 (or i32, which llama.cpp also accepts for scores), cut to `n` entries.
fn opt_per_token_f32(
    g: &Gguf,
    key: &'static str,
    n: usize,
) -> Result<Option<Vec<f32>>, TokenizerError> {
    let wrong = TokenizerError::WrongType {
        key,
        expected: "an array of f32 or i32",
    };
    let v = match g.get(key) {
        None => return Ok(None),
        Some(Value::Array(a)) => match (a.as_f32s(), a.as_i32s()) {
            (Some(v), _) => v,
            (None, Some(v)) => v.into_iter().map(|x| x as f32).collect(),
            (None, None) => return Err(wrong),
        },
        Some(_) => return Err(wrong),
    };
    per_token(v, key, n).map(Some)
}

fn opt_per_token_i32(
    g: &Gguf,
    key: &'static str,
    n: usize,
) -> Result<Option<Vec<i32>>, TokenizerError> {
    let wrong = TokenizerError::WrongType {
        key,
        expected: "an array of i32",
    };
    let v = match g.get(key) {
        None => return Ok(None),
        Some(Value::Array(a)) => a.as_i32s().ok_or(wrong)?,
        Some(_) => return Err(wrong),
    };
    per_token(v, key, n).map(Some)
}

fn per_token<T>(mut v: Vec<T>, key: &'static str, n: usize) -> Result<Vec<T>, TokenizerError> {
    if v.len() < n {
        return Err(TokenizerError::TooShort {
            key,
            len: v.len(),
            n_tokens: n,
        });
    }
    v.truncate(n);
    Ok(v)
}

// ---- llama.cpp's load-time decisions ----

/// What `tokenizer.ggml.pre` selects for a BPE vocabulary (llama.cpp's `llama_vocab::impl::load`).
struct PreChoice {
    pre: PreTokenizer,
    ignore_merges: bool,
    /// Default of `add_bos` where the pre-tokenizer sets one.
    add_bos: Option<bool>,
    /// The pre-tokenizer clears the default BOS id (ChatGLM).
    no_bos: bool,
}

fn pre_choice(name: &[u8]) -> Option<PreChoice> {
    let plain = |pre| PreChoice {
        pre,
        ignore_merges: false,
        add_bos: None,
        no_bos: false,
    };
    let name = std::str::from_utf8(name).ok()?;
    Some(match name {
        // a missing or empty name is llama.cpp's "default" too
        "" | "default" => plain(PreTokenizer::Default),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => PreChoice {
            pre: PreTokenizer::Llama3,
            ignore_merges: true,
            add_bos: Some(true),
            no_bos: false,
        },
        "dbrx" | "smaug-bpe" => plain(PreTokenizer::Llama3),
        "chatglm-bpe" => PreChoice {
            no_bos: true,
            ..plain(PreTokenizer::Llama3)
        },
        "glm4" | "glm5" => PreChoice {
            pre: PreTokenizer::Llama3,
            ignore_merges: true,
            add_bos: None,
            no_bos: true,
        },
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
        | "a.x-4.0" | "mellum" | "modern-bert" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe"
        | "mpt" | "olmo" | "jais" | "trillion" | "granite-docling" | "exaone4" => {
            plain(PreTokenizer::Gpt2)
        }
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" | "stablelm2" | "hunyuan"
        | "solar-open" | "grok-2" => plain(PreTokenizer::Qwen2),
        "qwen35" => plain(PreTokenizer::Qwen35),
        _ => return None,
    })
}

/// Texts llama.cpp takes for an EOT token when the metadata names none.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];
/// Texts of tokens that end generation (llama.cpp's `special_eog_ids` list).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];
/// gpt-oss tokens llama.cpp always renders (made user-defined).
const ALWAYS_RENDERED_TEXTS: &[&str] =
    &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The fill-in-the-middle tokens of a code model (llama.cpp's `llama_vocab_fim_*`): what
/// `/infill` builds its prompt from. `None` where the model has no such token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FimTokens {
    pub prefix: Option<u32>,
    pub suffix: Option<u32>,
    pub middle: Option<u32>,
    /// Starts the repository's name in a repo-level prompt.
    pub repo: Option<u32>,
    /// Starts each file of a repo-level prompt.
    pub file_sep: Option<u32>,
}

/// Special token ids; `None` is llama.cpp's `LLAMA_TOKEN_NULL`. (Separator, padding and mask ids
/// play no part in SPM or BPE tokenization and are not read.)
#[derive(Default)]
struct SpecialIds {
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eom: Option<u32>,
    unk: Option<u32>,
    fim_pre: Option<u32>,
    fim_suf: Option<u32>,
    fim_mid: Option<u32>,
    fim_pad: Option<u32>,
    fim_rep: Option<u32>,
    fim_sep: Option<u32>,
}

impl SpecialIds {
    /// Applies the metadata over the defaults: a default outside the vocabulary is dropped, a
    /// metadata id outside it is ignored (both as llama.cpp does, which only warns).
    fn read(&mut self, g: &Gguf, n: usize) -> Result<(), TokenizerError> {
        let apply = |slot: &mut Option<u32>, key: &'static str| -> Result<(), TokenizerError> {
            if slot.is_some_and(|id| id as usize >= n) {
                *slot = None;
            }
            if let Some(id) = opt_u32(g, key)? {
                if (id as usize) < n {
                    *slot = Some(id);
                }
            }
            Ok(())
        };
        apply(&mut self.bos, "tokenizer.ggml.bos_token_id")?;
        apply(&mut self.eos, "tokenizer.ggml.eos_token_id")?;
        apply(&mut self.eot, "tokenizer.ggml.eot_token_id")?;
        apply(&mut self.eom, "tokenizer.ggml.eom_token_id")?;
        apply(&mut self.unk, "tokenizer.ggml.unknown_token_id")?;
        apply(&mut self.fim_pre, "tokenizer.ggml.fim_pre_token_id")?;
        apply(&mut self.fim_suf, "tokenizer.ggml.fim_suf_token_id")?;
        apply(&mut self.fim_mid, "tokenizer.ggml.fim_mid_token_id")?;
        apply(&mut self.fim_pad, "tokenizer.ggml.fim_pad_token_id")?;
        apply(&mut self.fim_rep, "tokenizer.ggml.fim_rep_token_id")?;
        apply(&mut self.fim_sep, "tokenizer.ggml.fim_sep_token_id")?;
        // deprecated names of the first three FIM ids
        apply(&mut self.fim_pre, "tokenizer.ggml.prefix_token_id")?;
        apply(&mut self.fim_suf, "tokenizer.ggml.suffix_token_id")?;
        apply(&mut self.fim_mid, "tokenizer.ggml.middle_token_id")?;
        Ok(())
    }
}

impl Tokenizer {
    /// Builds the tokenizer of a model from its GGUF metadata.
    pub fn from_gguf(g: &Gguf) -> Result<Tokenizer, TokenizerError> {
        Self::build(g, None)
    }

    /// `pre_override`: a `tokenizer.ggml.pre` to use instead of the file's (tests run the
    /// pre-tokenizers no test model uses over a real vocabulary this way).
    fn build(g: &Gguf, pre_override: Option<&[u8]>) -> Result<Tokenizer, TokenizerError> {
        let model_name = opt_str(g, KEY_MODEL)?.ok_or(TokenizerError::MissingKey(KEY_MODEL))?;
        let is_spm = match model_name {
            b"llama" => true,
            b"gpt2" => false,
            other => {
                return Err(TokenizerError::UnsupportedModel(
                    String::from_utf8_lossy(other).into_owned(),
                ))
            }
        };
        let pre_name = match pre_override {
            Some(p) => Some(p),
            None => opt_str(g, KEY_PRE)?,
        };

        let tokens = opt_strings(g, KEY_TOKENS)?.ok_or(TokenizerError::MissingKey(KEY_TOKENS))?;
        let n = tokens.len();
        if n == 0 {
            return Err(TokenizerError::NoTokens);
        }
        if u32::try_from(n).is_err() {
            return Err(TokenizerError::WrongType {
                key: KEY_TOKENS,
                expected: "a list of fewer than 2^32 tokens",
            });
        }
        let scores = opt_per_token_f32(g, KEY_SCORES, n)?.unwrap_or_else(|| vec![0.0; n]);
        let mut attrs: Vec<u16> = match opt_per_token_i32(g, KEY_TOKEN_TYPE, n)? {
            Some(types) => types.into_iter().map(attr::from_token_type).collect(),
            None => vec![attr::NORMAL; n],
        };
        // llama.cpp renames empty tokens so that each text stays unique
        let renamed: Vec<String> = (0..n)
            .filter(|&i| tokens[i].is_empty())
            .map(|i| format!("[EMPTY_{i}]"))
            .collect();
        let with_names: Vec<&[u8]>;
        let token_texts: &[&[u8]] = if renamed.is_empty() {
            &tokens
        } else {
            let mut names = renamed.iter();
            with_names = tokens
                .iter()
                .map(|&t| match t {
                    b"" => names.next().expect("one name per empty token").as_bytes(),
                    t => t,
                })
                .collect();
            &with_names
        };
        let (texts, repeat) = StrTable::build(token_texts);
        if let Some((id, first)) = repeat {
            return Err(TokenizerError::DuplicateToken {
                id,
                first,
                text: String::from_utf8_lossy(token_texts[id as usize]).into_owned(),
            });
        }

        let mut ids = SpecialIds::default();
        let mut add_space_prefix;
        let mut add_bos;
        let bpe_setup;
        if is_spm {
            ids.bos = Some(1);
            ids.eos = Some(2);
            ids.unk = Some(0);
            add_space_prefix = true;
            add_bos = true;
            bpe_setup = None;
        } else {
            let name = pre_name.unwrap_or(b"");
            let choice = pre_choice(name).ok_or_else(|| {
                TokenizerError::UnsupportedPreTokenizer(String::from_utf8_lossy(name).into_owned())
            })?;
            ids.bos = (!choice.no_bos).then_some(11);
            ids.eos = Some(11);
            add_space_prefix = false;
            add_bos = choice.add_bos.unwrap_or(false);
            bpe_setup = Some(choice);
        }
        if let Some(v) = opt_bool(g, KEY_ADD_SPACE_PREFIX)? {
            add_space_prefix = v;
        }
        ids.read(g, n)?;
        if let Some(v) = opt_bool(g, KEY_ADD_BOS)? {
            add_bos = v;
        }
        let add_eos = opt_bool(g, KEY_ADD_EOS)?.unwrap_or(false);

        let mut vocab = Vocab {
            texts,
            scores,
            attrs: Vec::new(),
        };
        let eog = fix_up_special_tokens(&vocab, &mut attrs, &mut ids);
        vocab.attrs = attrs;

        let specials = Specials::new(&vocab);
        let model = match bpe_setup {
            None => {
                let mut byte_tokens = Box::new([None; 256]);
                for (b, slot) in byte_tokens.iter_mut().enumerate() {
                    *slot = vocab
                        .id(format!("<0x{b:02X}>").as_bytes())
                        .or_else(|| vocab.id(&[b as u8]));
                }
                Model::Spm {
                    add_space_prefix,
                    byte_tokens,
                }
            }
            Some(choice) => {
                let merges =
                    opt_strings(g, KEY_MERGES)?.ok_or(TokenizerError::MissingKey(KEY_MERGES))?;
                Model::Bpe(Bpe::new(choice.pre, choice.ignore_merges, &merges))
            }
        };

        let mut tok = Tokenizer {
            vocab,
            model,
            specials,
            bos: ids.bos,
            eos: ids.eos,
            unk: ids.unk,
            add_bos,
            add_eos,
            eog,
            fim: FimTokens {
                prefix: ids.fim_pre,
                suffix: ids.fim_suf,
                middle: ids.fim_mid,
                repo: ids.fim_rep,
                file_sep: ids.fim_sep,
            },
            pieces: Vec::new(),
            piece_ends: Vec::with_capacity(n),
        };
        let mut pieces = Vec::with_capacity(token_texts.iter().map(|t| t.len()).sum());
        for id in 0..n as u32 {
            tok.render(id, &mut pieces);
            tok.piece_ends.push(pieces.len());
        }
        tok.pieces = pieces;
        set_strip_attributes(g, &mut tok)?;
        Ok(tok)
    }

    /// llama.cpp's `token_to_piece` with `special = true`, from the attributes, appended to `out`.
    fn render(&self, id: u32, out: &mut Vec<u8>) {
        let a = self.vocab.attr(id);
        let text = self.vocab.text(id);
        if a & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
            out.extend_from_slice(text);
        } else if a & attr::NORMAL != 0 {
            match self.model {
                Model::Spm { .. } => unescape_spaces(text, out),
                Model::Bpe(_) => bpe::decode_byte_level(text, out),
            }
        } else if a & attr::BYTE != 0 {
            out.push(byte_token_value(text));
        }
    }

    /// Token ids for `text`.
    ///
    /// `add_special`: add BOS (and EOS) as the metadata says (llama.cpp's `add_special`).
    /// `parse_special`: control tokens written in the text (`<|im_start|>`, `<start_of_turn>`, `<s>`)
    /// become those tokens; user-defined tokens always do, as in llama.cpp.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let bytes = text.as_bytes();
        let fragments = if bytes.is_empty() {
            Vec::new()
        } else {
            self.specials.partition(&self.vocab, bytes, parse_special)
        };
        let mut out = Vec::new();
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        match &self.model {
            Model::Spm {
                add_space_prefix,
                byte_tokens,
            } => {
                // llama.cpp adds the space to the first text and to every text after a special token
                let mut after_special = true;
                let mut buf = Vec::new();
                for f in fragments {
                    match f {
                        Fragment::Text(r) => {
                            buf.clear();
                            if *add_space_prefix && after_special {
                                buf.extend_from_slice("▁".as_bytes());
                            }
                            for &b in &bytes[r] {
                                if b == b' ' {
                                    buf.extend_from_slice("▁".as_bytes());
                                } else {
                                    buf.push(b);
                                }
                            }
                            spm::tokenize(&self.vocab, byte_tokens, self.unk, &buf, &mut out);
                            after_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            after_special = true;
                        }
                    }
                }
            }
            Model::Bpe(bpe) => {
                for f in fragments {
                    match f {
                        Fragment::Text(r) => bpe.tokenize(&self.vocab, &bytes[r], &mut out),
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    /// The bytes a token stands for in generated text (SPM: '▁' → ' ', `<0xNN>` → that byte; BPE: the
    /// byte-level mapping undone). Control and unknown tokens give their text only when `special` is
    /// true (llama.cpp's `token_to_piece`); an id outside the vocabulary gives nothing.
    pub fn token_to_piece(&self, id: u32, special: bool) -> Vec<u8> {
        let i = id as usize;
        if i >= self.piece_ends.len() {
            return Vec::new();
        }
        if !special && self.vocab.attr(id) & (attr::UNKNOWN | attr::CONTROL) != 0 {
            return Vec::new();
        }
        let start = if i == 0 { 0 } else { self.piece_ends[i - 1] };
        self.pieces[start..self.piece_ends[i]].to_vec()
    }

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.vocab.len()
    }

    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    pub fn fim(&self) -> FimTokens {
        self.fim
    }

    /// Whether `encode` with `add_special` starts with BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }

    /// Whether generation stops at `id`: EOS, EOT, EOM, FIM pad/repo/separator tokens, and the
    /// end-of-turn tokens llama.cpp recognises by text (`<|im_end|>`, `<|endoftext|>`, `<end_of_turn>`, ...).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// The token's text as stored in the vocabulary (empty for an id outside it).
    pub fn token_text(&self, id: u32) -> &[u8] {
        if (id as usize) < self.vocab.len() {
            self.vocab.text(id)
        } else {
            &[]
        }
    }
}

/// SentencePiece writes spaces as U+2581.
fn unescape_spaces(text: &[u8], out: &mut Vec<u8>) {
    const MARK: &[u8] = "▁".as_bytes();
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with(MARK) {
            out.push(b' ');
            i += MARK.len();
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
}

/// The byte of a `<0xNN>` token: llama.cpp reads the two characters after `<0x` as hex (`strtol`,
/// stopping at the first non-hex character).
fn byte_token_value(text: &[u8]) -> u8 {
    let digits = text.get(3..text.len().min(5)).unwrap_or(&[]);
    let mut v = 0u8;
    for &d in digits {
        match (d as char).to_digit(16) {
            Some(x) => v = v.wrapping_mul(16).wrapping_add(x as u8),
            None => break,
        }
    }
    v
}

/// llama.cpp's fix-ups after reading the special ids: EOT/EOM/FIM tokens found by text (and made
/// control tokens), the end-of-generation set, and its exceptions. Returns the sorted EOG ids.
fn fix_up_special_tokens(vocab: &Vocab, attrs: &mut [u16], ids: &mut SpecialIds) -> Vec<u32> {
    // llama.cpp walks a hash map here, so with several candidate texts in one vocabulary the one it
    // picks is arbitrary; this takes the lowest id.
    let found: [(&mut Option<u32>, &[&str]); 8] = [
        (&mut ids.eot, EOT_TEXTS),
        (&mut ids.eom, &["<|eom_id|>"]),
        (&mut ids.fim_pre, FIM_PRE_TEXTS),
        (&mut ids.fim_suf, FIM_SUF_TEXTS),
        (&mut ids.fim_mid, FIM_MID_TEXTS),
        (&mut ids.fim_pad, FIM_PAD_TEXTS),
        (&mut ids.fim_rep, FIM_REP_TEXTS),
        (&mut ids.fim_sep, FIM_SEP_TEXTS),
    ];
    let ids_of = |texts: &[&str]| -> Vec<u32> {
        texts
            .iter()
            .filter_map(|t| vocab.id(t.as_bytes()))
            .collect()
    };
    for (slot, texts) in found {
        if slot.is_none() {
            *slot = ids_of(texts).into_iter().min();
            if let Some(id) = *slot {
                attrs[id as usize] |= attr::CONTROL;
            }
        }
    }

    let mut eog: BTreeSet<u32> = [ids.fim_pad, ids.fim_rep, ids.fim_sep]
        .into_iter()
        .flatten()
        .collect();
    for id in ids_of(EOG_TEXTS) {
        eog.insert(id);
        attrs[id as usize] |= attr::CONTROL;
    }
    for id in ids_of(ALWAYS_RENDERED_TEXTS) {
        attrs[id as usize] = attr::USER_DEFINED;
    }
    eog.extend([ids.eos, ids.eot, ids.eom].into_iter().flatten());

    // o200k_harmony (gpt-oss) and solar-open: "<|end|>" ends a message, not the generation
    let eog_with = |eog: &BTreeSet<u32>, t: &str| {
        eog.iter()
            .copied()
            .find(|&id| vocab.text(id) == t.as_bytes())
    };
    let end = eog_with(&eog, "<|end|>");
    let has_return = eog_with(&eog, "<|return|>").is_some();
    let has_call = eog_with(&eog, "<|call|>").is_some() || eog_with(&eog, "<|calls|>").is_some();
    let has_flush = eog_with(&eog, "<|flush|>").is_some();
    if let Some(end) = end {
        if has_call && (has_return || has_flush) {
            eog.remove(&end);
            attrs[end as usize] = attr::USER_DEFINED;
        }
    }
    // Gemma 4 and PLaMo have an ordinary "</s>"
    let has_marker =
        eog_with(&eog, "<|tool_response>").is_some() || eog_with(&eog, "<|plamo:eos|>").is_some();
    if let (true, Some(s)) = (has_marker, eog_with(&eog, "</s>")) {
        eog.remove(&s);
        attrs[s as usize] = attr::NORMAL;
    }
    eog.into_iter().collect()
}

/// llama.cpp's per-model LSTRIP/RSTRIP attributes (whitespace next to these special tokens is
/// dropped when they are cut out of the text), chosen by model name, pre-tokenizer and architecture.
fn set_strip_attributes(g: &Gguf, tok: &mut Tokenizer) -> Result<(), TokenizerError> {
    let name = opt_str(g, KEY_NAME)?.unwrap_or(b"").to_ascii_lowercase();
    let pre = opt_str(g, KEY_PRE)?.unwrap_or(b"");
    let arch = opt_str(g, KEY_ARCH)?.unwrap_or(b"");
    let vocab = &mut tok.vocab;
    let any = |hay: &[u8], needles: &[&str]| needles.iter().any(|n| contains(hay, n));
    if any(pre, &["jina-v2-de", "jina-v2-es", "jina-v2-code"])
        || any(arch, &["nomic-bert-moe", "jina-bert-v3"])
    {
        set_attr(vocab, "<mask>", attr::LSTRIP, true);
    } else if any(&name, &["phi-3", "phi3"]) {
        for &id in tok.specials.ids() {
            vocab.attrs[id as usize] |= attr::RSTRIP;
        }
        set_attr(vocab, "</s>", attr::RSTRIP, true);
        for t in ["<unk>", "<s>", "<|endoftext|>"] {
            set_attr(vocab, t, attr::RSTRIP, false);
        }
    } else if any(&name, &["modern-bert"]) {
        set_attr(vocab, "[MASK]", attr::LSTRIP, true);
    }
    Ok(())
}

/// Sets or clears `bit` on the token with `text`, if there is one (llama.cpp throws where there is not).
fn set_attr(vocab: &mut Vocab, text: &str, bit: u16, on: bool) {
    if let Some(id) = vocab.id(text.as_bytes()) {
        let a = &mut vocab.attrs[id as usize];
        *a = if on { *a | bit } else { *a & !bit };
    }
}
