//! Command-line flags, named as llama.cpp and llamafile name them.

use std::path::PathBuf;

use clap::Parser;

use crate::sampling::SamplerConfig;

/// Runs a GGUF language model on the CPU.
#[derive(Parser, Debug, Clone)]
// args_override_self: a flag given twice takes its last value, so that the user's arguments
// override the defaults of a llamafile's `.args`.
#[command(
    name = "llamafile",
    version,
    about,
    disable_help_subcommand = true,
    args_override_self = true
)]
pub struct Args {
    /// Model file: a .gguf, or a .llamafile whose GGUF is used.
    #[arg(short = 'm', long = "model")]
    pub model: Option<PathBuf>,

    /// Prompt text.
    #[arg(short = 'p', long = "prompt", allow_hyphen_values = true)]
    pub prompt: Option<String>,

    /// Read the prompt (or, with --perplexity, the text) from a file.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,

    /// Tokens to generate: -1 until end of generation or a full context, -2 until a full context.
    #[arg(short = 'n', long = "n-predict", alias = "n_predict", default_value_t = -1, allow_negative_numbers = true)]
    pub n_predict: i64,

    /// Context size in tokens; 0 means the model's trained context length.
    #[arg(
        short = 'c',
        long = "ctx-size",
        alias = "ctx_size",
        default_value_t = 4096
    )]
    pub ctx_size: usize,

    /// Tokens per forward pass while processing a prompt.
    #[arg(
        short = 'b',
        long = "batch-size",
        alias = "batch_size",
        default_value_t = 512
    )]
    pub batch_size: usize,

    /// Threads; defaults to the number of physical cores.
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,

    /// Random seed; by default a new one each run.
    #[arg(short = 's', long = "seed", allow_negative_numbers = true)]
    pub seed: Option<i64>,

    /// Sampling temperature; 0 picks the most likely token (greedy).
    #[arg(long = "temp", alias = "temperature", default_value_t = 0.8)]
    pub temp: f32,

    #[arg(long = "top-k", alias = "top_k", default_value_t = 40)]
    pub top_k: i32,

    #[arg(long = "top-p", alias = "top_p", default_value_t = 0.95)]
    pub top_p: f32,

    #[arg(long = "min-p", alias = "min_p", default_value_t = 0.05)]
    pub min_p: f32,

    #[arg(
        long = "repeat-penalty",
        alias = "repeat_penalty",
        default_value_t = 1.0
    )]
    pub repeat_penalty: f32,

    #[arg(
        long = "repeat-last-n",
        alias = "repeat_last_n",
        default_value_t = 64,
        allow_negative_numbers = true
    )]
    pub repeat_last_n: i32,

    #[arg(
        long = "presence-penalty",
        alias = "presence_penalty",
        default_value_t = 0.0
    )]
    pub presence_penalty: f32,

    #[arg(
        long = "frequency-penalty",
        alias = "frequency_penalty",
        default_value_t = 0.0
    )]
    pub frequency_penalty: f32,

    /// Layers to offload to a GPU. Accepted for compatibility; this runtime runs on the CPU.
    #[arg(
        long = "n-gpu-layers",
        alias = "gpu-layers",
        alias = "n_gpu_layers",
        allow_negative_numbers = true
    )]
    pub n_gpu_layers: Option<i64>,

    /// Accepted for compatibility with llama.cpp's command line.
    #[arg(long = "color")]
    pub color: bool,

    /// Print only the generated text, not the prompt.
    #[arg(long = "no-display-prompt", alias = "silent-prompt")]
    pub no_display_prompt: bool,

    /// Take the prompt literally instead of turning \n, \t, \\ ... into characters (llama.cpp's default).
    #[arg(long = "no-escape")]
    pub no_escape: bool,

    /// Print one JSON object with token ids, text, timings and log-probabilities.
    #[arg(long = "json")]
    pub json: bool,

    /// With --json: the K most likely tokens at each generated step.
    #[arg(long = "top-logprobs")]
    pub top_logprobs: Option<usize>,

    /// With --json: the most likely next tokens at every prompt position (K from --top-logprobs, default 10).
    #[arg(long = "prompt-logprobs")]
    pub prompt_logprobs: bool,

    /// Print the prompt's token ids as a JSON array and exit.
    #[arg(long = "tokenize")]
    pub tokenize: bool,

    /// Compute perplexity over the text of -f, in chunks of -c tokens.
    #[arg(long = "perplexity")]
    pub perplexity: bool,

    /// Measure prompt processing and generation speed as llama-bench does: with --bench, -p is the
    /// prompt length (default 512) and -n the tokens generated (default 128), 0 skips a test.
    #[arg(long = "bench")]
    pub bench: bool,

    /// With --bench: timed runs of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub repetitions: usize,

    /// Interactive chat in the terminal.
    #[arg(
        short = 'i',
        long = "interactive",
        alias = "chat",
        alias = "conversation"
    )]
    pub interactive: bool,

    /// Chat template by name (mistral, llama2, chatml, gemma, llama3) instead of the model's own.
    #[arg(long = "chat-template")]
    pub chat_template: Option<String>,

    /// System prompt for chat.
    #[arg(long = "system-prompt")]
    pub system_prompt: Option<String>,

    /// Serve the OpenAI-compatible API and the chat page over HTTP.
    #[arg(long = "server")]
    pub server: bool,

    /// Address the server listens on; anything but loopback exposes it to the network (use --api-key).
    #[arg(long = "host", default_value = "127.0.0.1")]
    pub host: String,

    /// Port the server listens on; when it is taken, the next free one. 0: any free port.
    #[arg(long = "port", default_value_t = 8080)]
    pub port: u16,

    /// Do not open the chat page in a browser.
    #[arg(long = "nobrowser")]
    pub nobrowser: bool,

    /// Require `Authorization: Bearer KEY` on the server's API.
    #[arg(long = "api-key")]
    pub api_key: Option<String>,

    /// Requests the server generates for at once (slots, batched together); they share -c.
    #[arg(long = "parallel", default_value_t = 1)]
    pub parallel: usize,

    /// Requests that may wait for a free slot; beyond that the server answers 503.
    #[arg(long = "max-queue", default_value_t = 64)]
    pub max_queue: usize,

    /// Seconds a server connection may stay idle, take to send its request, or leave its answer unread.
    #[arg(long = "timeout", default_value_t = 60)]
    pub timeout: u64,
}

/// llama.cpp spells some flags with one dash and several letters (`-ngl`, `-cnv`), which clap reads as
/// bundled short flags; they are rewritten to their long forms first.
pub fn normalize(args: impl IntoIterator<Item = String>) -> Vec<String> {
    args.into_iter()
        .map(|a| {
            let long = match a.as_str() {
                "-ngl" => "--n-gpu-layers",
                "-cnv" => "--conversation",
                "-sys" => "--system-prompt",
                "-tb" => "--threads",
                "-np" => "--parallel",
                _ => return a,
            };
            long.to_string()
        })
        .collect()
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

/// The sampling options of the command line; `--seed` unset or negative takes one from the clock.
pub fn sampler_config(args: &Args) -> SamplerConfig {
    let seed = match args.seed {
        Some(s) if s >= 0 => s as u64,
        _ => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    };
    SamplerConfig {
        temp: args.temp,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        repeat_last_n: args.repeat_last_n,
        presence_penalty: args.presence_penalty,
        frequency_penalty: args.frequency_penalty,
        seed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_follow_llama_cpp() {
        assert_eq!(process_escapes(r"a\nb\tc\\d\'e\x41"), "a\nb\tc\\d'eA");
        assert_eq!(process_escapes(r"trailing\"), "trailing\\");
        assert_eq!(process_escapes(r"\q"), "\\q");
    }

    #[test]
    fn single_dash_long_flags_are_rewritten() {
        let v = normalize(["llamafile", "-ngl", "35", "-n", "-1"].map(String::from));
        assert_eq!(v, ["llamafile", "--n-gpu-layers", "35", "-n", "-1"]);
    }
}
