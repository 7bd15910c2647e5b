//! The configuration the modes read, resolved once from the parsed flags: which mode runs, and
//! each mode's settings in its own terms. What depends on several flags (the mode, the prompt
//! from -p or -f, the seed, --bench's reading of -p and -n) is decided here and nowhere else.

use std::path::PathBuf;
use std::time::Duration;

use crate::bench::BenchPlan;
use crate::constraint::Constraint;
use crate::flags::Args;
use crate::grammar::Grammar;
use crate::json_schema::Schema;
use crate::sampling::SamplerConfig;
use crate::server::Options;

/// The context when -c is not given, capped at the model's trained length.
pub const DEFAULT_CTX: usize = 4096;

/// Everything a run needs from the command line.
pub struct Config {
    pub mode: Mode,
    /// `-m`; without it, the model this executable carries.
    pub model: Option<PathBuf>,
    pub threads: usize,
    /// The context asked for with -c (0: the model's trained length); `None`: [`DEFAULT_CTX`].
    pub ctx_size: Option<usize>,
    pub batch_size: usize,
    /// `-ngl` asked for layers on a GPU, which this runtime does not have.
    pub gpu_layers: bool,
    /// Print one JSON object instead of text (completion, perplexity, bench).
    pub json: bool,
    pub sampling: SamplerConfig,
    /// How the command line's and the chat's replies end and what they may contain.
    pub(crate) output: OutputRules,
    pub chat: ChatConfig,
    pub server: Options,
    /// What flags accepted for compatibility do not do here, a line each, to print at start.
    pub notes: Vec<String>,
}

/// `-r`, `--ignore-eos`, `--json-schema` and `--grammar`: the same for a completion and every chat reply.
#[derive(Clone, Default)]
pub(crate) struct OutputRules {
    /// Texts that end the reply (`-r`).
    pub stop: Vec<String>,
    /// End-of-generation tokens are never chosen.
    pub ignore_eos: bool,
    /// `--json-schema` or `--grammar`.
    pub constraint: Option<Constraint>,
}

/// What a run does.
pub enum Mode {
    /// llama-bench's measurements.
    Bench(BenchPlan),
    /// The HTTP server.
    Server,
    /// No prompt and no mode, as a double-click or a plain `./model.llamafile` runs: the chat in a
    /// terminal with the server beside it, or the server and a browser without a terminal.
    Bare,
    /// Perplexity over the text of this file.
    Perplexity(PathBuf),
    /// The terminal chat (`-i`).
    Chat,
    /// Print the prompt's token ids.
    Tokenize(String),
    /// Continue the prompt once.
    Complete(CompletionConfig),
}

/// The one-shot completion's settings.
pub struct CompletionConfig {
    pub prompt: String,
    /// -1: until end of generation or a full context; -2: until a full context.
    pub n_predict: i64,
    /// With --json: the alternatives reported at each generated step.
    pub top_logprobs: Option<usize>,
    /// With --json: report the most likely tokens at every prompt position.
    pub prompt_logprobs: bool,
    /// Echo the prompt before the generated text.
    pub display_prompt: bool,
}

/// The terminal chat's settings.
pub struct ChatConfig {
    /// A built-in template by name instead of the model's own.
    pub template: Option<String>,
    pub system_prompt: Option<String>,
    /// `-p` with `-i`: the first message, sent before the terminal is read.
    pub first_message: Option<String>,
    /// `--color`, unless `NO_COLOR` is set (https://no-color.org); the chat also needs a terminal.
    pub color: bool,
    /// Tokens per reply at most.
    pub max_tokens: Option<usize>,
    /// `--in-prefix`, `--in-suffix` or `-no-cnv`: the raw interactive mode.
    pub raw: Option<RawTurns>,
}

/// llama-cli's raw interactive mode: no chat template; the model continues one text, which `-p`
/// starts; `-r` gives control back; each input goes in between `prefix` and `suffix`.
pub struct RawTurns {
    /// `-p`: the text the model continues first.
    pub prompt: String,
    pub prefix: String,
    pub suffix: String,
}

impl Config {
    pub fn resolve(args: Args) -> Result<Config, String> {
        let mode = mode(&args)?;
        let output = OutputRules {
            stop: args
                .reverse_prompts
                .iter()
                .map(|r| process_escapes(r))
                .collect(),
            ignore_eos: args.ignore_eos,
            constraint: constraint(&args)?,
        };
        let escaped = |text: &Option<String>| {
            let text = text.clone().unwrap_or_default();
            if args.no_escape {
                text
            } else {
                process_escapes(&text)
            }
        };
        if !args.interactive && (args.in_prefix.is_some() || args.in_suffix.is_some()) {
            return Err("--in-prefix and --in-suffix are for the interactive mode: add -i".into());
        }
        let raw = (args.interactive
            && (args.in_prefix.is_some() || args.in_suffix.is_some() || args.no_conversation))
            .then(|| -> Result<RawTurns, String> {
                Ok(RawTurns {
                    prompt: prompt_text(&args)?,
                    prefix: escaped(&args.in_prefix),
                    suffix: escaped(&args.in_suffix),
                })
            })
            .transpose()?;
        let first_message = match args.interactive && args.prompt.is_some() && raw.is_none() {
            true => Some(prompt_text(&args)?),
            false => None,
        };
        let seed = match args.seed {
            Some(s) if s >= 0 => s as u64,
            _ => crate::sampling::random_seed(),
        };
        Ok(Config {
            mode,
            threads: args.threads.unwrap_or_else(crate::physical_cores).max(1),
            ctx_size: args.ctx_size,
            batch_size: args.batch_size.max(1),
            gpu_layers: matches!(args.n_gpu_layers, Some(n) if n != 0),
            json: args.json,
            sampling: SamplerConfig {
                temp: args.temp,
                top_k: args.top_k,
                top_p: args.top_p,
                min_p: args.min_p,
                repeat_penalty: args.repeat_penalty,
                repeat_last_n: args.repeat_last_n,
                presence_penalty: args.presence_penalty,
                frequency_penalty: args.frequency_penalty,
                seed,
            },
            output,
            chat: ChatConfig {
                template: args.chat_template,
                system_prompt: args.system_prompt,
                first_message,
                color: args.color && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
                max_tokens: usize::try_from(args.n_predict).ok(),
                raw,
            },
            server: Options {
                host: args.host,
                port: args.port,
                api_key: args.api_key.filter(|k| !k.is_empty()),
                parallel: args.parallel.max(1),
                max_queue: args.max_queue,
                timeout: Duration::from_secs(args.timeout.max(1)),
                open_browser: !args.nobrowser,
                metrics: args.metrics,
                cors_origins: args.cors_origins.clone(),
            },
            model: args.model,
            notes: args.notes,
        })
    }
}

/// The mode the flags select; the first of these that applies: --bench, --server, a bare launch,
/// --perplexity, -i, --tokenize, a completion.
fn mode(args: &Args) -> Result<Mode, String> {
    if args.bench {
        return bench_plan(args).map(Mode::Bench);
    }
    if args.server {
        return Ok(Mode::Server);
    }
    let bare = args.prompt.is_none()
        && args.file.is_none()
        && !args.tokenize
        && !args.perplexity
        && !args.interactive;
    if bare {
        return Ok(Mode::Bare);
    }
    if args.perplexity {
        return match &args.file {
            Some(file) => Ok(Mode::Perplexity(file.clone())),
            None => Err("--perplexity needs the text: -f FILE".into()),
        };
    }
    if args.interactive {
        return Ok(Mode::Chat);
    }
    let prompt = prompt_text(args)?;
    if args.tokenize {
        return Ok(Mode::Tokenize(prompt));
    }
    Ok(Mode::Complete(CompletionConfig {
        prompt,
        n_predict: args.n_predict,
        top_logprobs: args.top_logprobs,
        prompt_logprobs: args.prompt_logprobs,
        display_prompt: !args.no_display_prompt,
    }))
}

impl OutputRules {
    /// The logit biases these rules ask for: with `--ignore-eos`, every end-of-generation token
    /// made impossible, as llama.cpp does.
    pub(crate) fn logit_bias(&self, tokenizer: &tokenizer::Tokenizer) -> Vec<(u32, f32)> {
        if !self.ignore_eos {
            return Vec::new();
        }
        (0..tokenizer.n_vocab() as u32)
            .filter(|&id| tokenizer.is_eog(id))
            .map(|id| (id, f32::NEG_INFINITY))
            .collect()
    }
}

/// The schema of `--json-schema`/`--json-schema-file` or the grammar of
/// `--grammar`/`--grammar-file`, compiled; errors name the flag (and the file).
fn constraint(args: &Args) -> Result<Option<Constraint>, String> {
    let given =
        |text: &Option<String>, file: &Option<PathBuf>, flag: &'static str| match (text, file) {
            (Some(text), _) => Ok(Some((flag.to_string(), text.clone()))),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|text| Some((format!("{flag}-file {}", path.display()), text)))
                .map_err(|e| format!("{flag}-file {}: {e}", path.display())),
            (None, None) => Ok(None),
        };
    let schema = given(&args.json_schema, &args.json_schema_file, "--json-schema")?;
    let grammar = given(&args.grammar, &args.grammar_file, "--grammar")?;
    match (schema, grammar) {
        (Some(_), Some(_)) => {
            Err("--json-schema and --grammar cannot both shape the output: give one".into())
        }
        (Some((flag, text)), None) => {
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| format!("{flag}: not JSON: {e}"))?;
            Schema::compile(&value)
                .map(|s| Some(Constraint::Json(s)))
                .map_err(|e| format!("{flag}: {e}"))
        }
        (None, Some((flag, text))) => Grammar::parse(&text)
            .map(|g| Some(Constraint::Grammar(g)))
            .map_err(|e| format!("{flag}: {e}")),
        (None, None) => Ok(None),
    }
}

/// `--bench`'s sizes: -p and -n are token counts there, as in llama-bench.
fn bench_plan(args: &Args) -> Result<BenchPlan, String> {
    let n_prompt = match args.prompt.as_deref() {
        None => 512,
        Some(p) => p
            .parse()
            .map_err(|_| format!("--bench: -p is the prompt length in tokens, not {p:?}"))?,
    };
    let n_gen = match args.n_predict {
        -1 => 128,
        n => usize::try_from(n)
            .map_err(|_| format!("--bench: -n is the tokens to generate, not {n}"))?,
    };
    Ok(BenchPlan {
        n_prompt,
        n_gen,
        n_depth: args.n_depth,
        repetitions: args.repetitions,
    })
}

/// The prompt of -p, or else the text of -f, escapes processed unless --no-escape.
fn prompt_text(args: &Args) -> Result<String, String> {
    let text = match (&args.prompt, &args.file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?
        }
        (None, None) => String::new(),
    };
    Ok(if args.no_escape {
        text
    } else {
        process_escapes(&text)
    })
}

/// llama.cpp's escape processing of prompts: \n \r \t \' \" \\ and \xNN.
pub fn process_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.peek().copied() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('\'') => out.push('\''),
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('x') => {
                chars.next();
                let hex: String = chars.clone().take(2).collect();
                match u8::from_str_radix(&hex, 16) {
                    Ok(b) if hex.len() == 2 && b.is_ascii() => {
                        out.push(b as char);
                        chars.next();
                        chars.next();
                    }
                    _ => out.push_str("\\x"),
                }
                continue;
            }
            _ => {
                out.push('\\');
                continue;
            }
        }
        chars.next();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::{parse, Parsed};

    fn resolve(words: &[&str]) -> Result<Config, String> {
        match parse(words.iter().map(|w| w.to_string()))? {
            Parsed::Run(args) => Config::resolve(*args),
            _ => panic!("not a run"),
        }
    }

    #[test]
    fn escapes_follow_llama_cpp() {
        assert_eq!(process_escapes(r"a\nb\tc\\d\'e\x41"), "a\nb\tc\\d'eA");
        assert_eq!(process_escapes(r"trailing\"), "trailing\\");
        assert_eq!(process_escapes(r"\q"), "\\q");
    }

    #[test]
    fn the_flags_select_one_mode() {
        let mode = |words: &[&str]| resolve(words).map(|c| c.mode);
        assert!(matches!(mode(&[]), Ok(Mode::Bare)));
        assert!(matches!(mode(&["--server", "-p", "x"]), Ok(Mode::Server)));
        assert!(matches!(mode(&["-i"]), Ok(Mode::Chat)));
        assert!(matches!(mode(&["--tokenize"]), Ok(Mode::Tokenize(p)) if p.is_empty()));
        assert!(matches!(mode(&["-p", "a\\nb"]), Ok(Mode::Complete(c)) if c.prompt == "a\nb"));
        assert!(matches!(
            mode(&["--bench", "-p", "64", "-n", "0"]),
            Ok(Mode::Bench(BenchPlan {
                n_prompt: 64,
                n_gen: 0,
                ..
            }))
        ));
        assert_eq!(
            mode(&["--perplexity"]).err().as_deref(),
            Some("--perplexity needs the text: -f FILE")
        );
        assert!(mode(&["--bench", "-p", "hello"]).is_err());
    }

    #[test]
    fn a_negative_or_missing_seed_is_drawn_and_a_given_one_kept() {
        let seed = |words: &[&str]| resolve(words).unwrap().sampling.seed;
        assert_eq!(seed(&["-s", "42"]), 42);
        assert_ne!(seed(&["-s", "-1"]), seed(&["-s", "-1"]));
    }
}
