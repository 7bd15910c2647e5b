//! Command-line flags, each defined once. [`FLAGS`] lists every flag: its spellings (as llama.cpp
//! and llamafile spell them, one-dash multi-letter ones such as `-ngl` included), the value it
//! takes, its default, its help, and what it sets in [`Args`]. The parser, `--help` and the
//! compatibility table all read the table; [`crate::config`] then resolves the parsed [`Args`]
//! into the configuration the modes read.
//!
//! llama.cpp's and llamafile's flags that cannot apply here are not unknown: [`COMPATIBLE`] lists
//! those accepted with a note (a GPU's, memory locking, ...), [`REFUSED`] those that would change
//! the result and are not served, each with its reason. `docs/flags.md` is written from the three
//! tables (a test keeps it so).
//!
//! The parser matches whole words, so `-ngl` is one flag, not `-n gl`. A flag's value is the next
//! word whatever it looks like (`-n -1`, `-p "-x"`), or follows `=` in `--name=value`. A flag given
//! twice takes its last value, so the user's words override a llamafile's `.args` defaults.

use std::path::PathBuf;

/// What the command line said, flag by flag (defaults applied). Read by [`crate::config`] only.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Args {
    pub model: Option<PathBuf>,
    pub prompt: Option<String>,
    pub file: Option<PathBuf>,
    pub n_predict: i64,
    /// `None`: not given (the default, capped at the trained length without a word).
    pub ctx_size: Option<usize>,
    pub batch_size: usize,
    pub threads: Option<usize>,
    pub seed: Option<i64>,
    pub temp: f32,
    pub top_k: i32,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    pub repeat_last_n: i32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub n_gpu_layers: Option<i64>,
    pub color: bool,
    pub no_display_prompt: bool,
    pub no_escape: bool,
    pub json: bool,
    pub top_logprobs: Option<usize>,
    pub prompt_logprobs: bool,
    pub tokenize: bool,
    pub perplexity: bool,
    pub bench: bool,
    pub repetitions: usize,
    /// `-d`: with --bench, tokens already in the context before each test.
    pub n_depth: usize,
    pub interactive: bool,
    pub chat_template: Option<String>,
    pub system_prompt: Option<String>,
    pub server: bool,
    pub host: String,
    pub port: u16,
    pub nobrowser: bool,
    pub metrics: bool,
    pub cors_origins: Vec<String>,
    pub api_key: Option<String>,
    pub parallel: usize,
    pub max_queue: usize,
    pub timeout: u64,
    /// `-r`: texts that end generation, each time given.
    pub reverse_prompts: Vec<String>,
    /// The raw interactive mode's text around each input, and the switch to it without them.
    pub in_prefix: Option<String>,
    pub in_suffix: Option<String>,
    pub no_conversation: bool,
    pub ignore_eos: bool,
    pub json_schema: Option<String>,
    pub json_schema_file: Option<PathBuf>,
    pub grammar: Option<String>,
    pub grammar_file: Option<PathBuf>,
    /// One line per [`COMPATIBLE`] flag given: what it does not do here.
    pub notes: Vec<String>,
}

/// How a flag sets its field.
#[derive(Clone, Copy)]
pub enum Setter {
    /// A switch: present or not.
    Switch(fn(&mut Args)),
    /// Takes a value, named in help by the string.
    Value(&'static str, fn(&mut Args, &str) -> Result<(), String>),
    /// A switch that may be followed by one of these words (or given one after `=`), as
    /// llama.cpp's `--color [on|off|auto]`; alone it means the first. A next word not in the
    /// list is left alone, so `--color -c 4096` still reads as it did for llama.cpp before.
    Choice(&'static [&'static str], fn(&mut Args, &str)),
}

impl Setter {
    /// The value as help shows it, if the flag takes one.
    pub fn meta(&self) -> Option<String> {
        match self {
            Setter::Switch(_) => None,
            Setter::Value(meta, _) => Some(meta.to_string()),
            Setter::Choice(words, _) => Some(format!("[{}]", words.join("|"))),
        }
    }
}

/// One flag.
pub struct Flag {
    /// Every spelling, the short ones first.
    pub names: &'static [&'static str],
    pub set: Setter,
    /// The value applied before the user's words, shown in help.
    pub default: Option<&'static str>,
    pub help: &'static str,
}

fn number<T: std::str::FromStr>(v: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    v.trim().parse::<T>().map_err(|e| e.to_string())
}

macro_rules! value {
    ($meta:literal, $field:ident, text) => {
        Setter::Value($meta, |a, v| {
            a.$field = Some(v.into());
            Ok(())
        })
    };
    ($meta:literal, $field:ident, some) => {
        Setter::Value($meta, |a, v| {
            a.$field = Some(number(v)?);
            Ok(())
        })
    };
    ($meta:literal, $field:ident) => {
        Setter::Value($meta, |a, v| {
            a.$field = number(v)?;
            Ok(())
        })
    };
}

macro_rules! switch {
    ($field:ident) => {
        Setter::Switch(|a| a.$field = true)
    };
}

/// Every flag, in the order `--help` lists them.
pub static FLAGS: &[Flag] = &[
    Flag {
        names: &["-m", "--model"],
        set: value!("FNAME", model, text),
        default: None,
        help: "Model file: a .gguf, or a .llamafile whose GGUF is used.",
    },
    Flag {
        names: &["-p", "--prompt"],
        set: value!("PROMPT", prompt, text),
        default: None,
        help: "Prompt text.",
    },
    Flag {
        names: &["-f", "--file"],
        set: value!("FNAME", file, text),
        default: None,
        help: "Read the prompt (or, with --perplexity, the text) from a file.",
    },
    Flag {
        names: &["-n", "--predict", "--n-predict", "--n_predict"],
        set: value!("N", n_predict),
        default: Some("-1"),
        help: "Tokens to generate: -1 until end of generation or a full context, -2 until a full context.",
    },
    Flag {
        names: &["-c", "--ctx-size", "--ctx_size"],
        set: value!("N", ctx_size, some),
        default: None,
        help: "Context size in tokens (default 4096, or the model's trained length if shorter); 0 means the model's trained context length.",
    },
    Flag {
        names: &["-b", "--batch-size", "--batch_size"],
        set: value!("N", batch_size),
        default: Some("512"),
        help: "Tokens per forward pass while processing a prompt.",
    },
    Flag {
        names: &["-t", "-tb", "--threads", "--threads-batch"],
        set: value!("N", threads, some),
        default: None,
        help: "Threads; defaults to the number of physical cores.",
    },
    Flag {
        names: &["-s", "--seed"],
        set: value!("SEED", seed, some),
        default: None,
        help: "Random seed; unset or negative, a new one each run.",
    },
    Flag {
        names: &["--temp", "--temperature"],
        set: value!("T", temp),
        default: Some("0.8"),
        help: "Sampling temperature; 0 picks the most likely token (greedy).",
    },
    Flag {
        names: &["--top-k", "--top_k"],
        set: value!("N", top_k),
        default: Some("40"),
        help: "Sample among the N most likely tokens; 0: all.",
    },
    Flag {
        names: &["--top-p", "--top_p"],
        set: value!("P", top_p),
        default: Some("0.95"),
        help: "Sample among the most likely tokens whose probabilities add up to P.",
    },
    Flag {
        names: &["--min-p", "--min_p"],
        set: value!("P", min_p),
        default: Some("0.05"),
        help: "Drop tokens less likely than P times the most likely one.",
    },
    Flag {
        names: &["--repeat-penalty", "--repeat_penalty"],
        set: value!("X", repeat_penalty),
        default: Some("1.0"),
        help: "Penalize tokens among the last --repeat-last-n; 1.0: off.",
    },
    Flag {
        names: &["--repeat-last-n", "--repeat_last_n"],
        set: value!("N", repeat_last_n),
        default: Some("64"),
        help: "Tokens the repetition penalties look back on; -1: the whole context.",
    },
    Flag {
        names: &["--presence-penalty", "--presence_penalty"],
        set: value!("X", presence_penalty),
        default: Some("0.0"),
        help: "Penalty on tokens already present; 0: off.",
    },
    Flag {
        names: &["--frequency-penalty", "--frequency_penalty"],
        set: value!("X", frequency_penalty),
        default: Some("0.0"),
        help: "Penalty growing with how often a token appeared; 0: off.",
    },
    Flag {
        names: &["-ngl", "--n-gpu-layers", "--gpu-layers", "--n_gpu_layers"],
        set: value!("N", n_gpu_layers, some),
        default: None,
        help: "Layers to offload to a GPU. Accepted for compatibility; this runtime runs on the CPU.",
    },
    Flag {
        names: &["-co", "--color"],
        set: Setter::Choice(&["on", "off", "auto"], |a, v| a.color = v != "off"),
        default: None,
        help: "Colour the terminal chat: what you type shows in green (not with NO_COLOR set, nor off a terminal).",
    },
    Flag {
        names: &["--no-display-prompt", "--silent-prompt"],
        set: switch!(no_display_prompt),
        default: None,
        help: "Print only the generated text, not the prompt.",
    },
    Flag {
        names: &["--no-escape"],
        set: switch!(no_escape),
        default: None,
        help: "Take the prompt literally instead of turning \\n, \\t, \\\\ ... into characters (llama.cpp's default).",
    },
    Flag {
        names: &["-e", "--escape"],
        set: Setter::Switch(|a| a.no_escape = false),
        default: None,
        help: "Turn \\n, \\t, \\\\ ... in the prompt into characters (the default).",
    },
    Flag {
        names: &["-r", "--reverse-prompt"],
        set: Setter::Value("TEXT", |a, v| {
            a.reverse_prompts.push(v.into());
            Ok(())
        }),
        default: None,
        help: "Stop generating when the output reaches TEXT (may be given several times).",
    },
    Flag {
        names: &["--in-prefix"],
        set: value!("STRING", in_prefix, text),
        default: None,
        help: "With -i: raw interactive mode (the model continues one text, no chat template); STRING goes before each input.",
    },
    Flag {
        names: &["--in-suffix"],
        set: value!("STRING", in_suffix, text),
        default: None,
        help: "With -i: raw interactive mode; STRING goes after each input (an assistant's cue, say).",
    },
    Flag {
        names: &["-no-cnv", "--no-conversation"],
        set: switch!(no_conversation),
        default: None,
        help: "With -i: raw interactive mode without a prefix or suffix; -r gives control back to you.",
    },
    Flag {
        names: &["--ignore-eos"],
        set: switch!(ignore_eos),
        default: None,
        help: "Never end at an end-of-generation token: go on to -n or a full context.",
    },
    Flag {
        names: &["-j", "--json-schema"],
        set: value!("SCHEMA", json_schema, text),
        default: None,
        help: "Constrain the output to JSON matching this JSON schema ({} for any JSON object).",
    },
    Flag {
        names: &["-jf", "--json-schema-file"],
        set: value!("FNAME", json_schema_file, text),
        default: None,
        help: "Like --json-schema, with the schema read from a file.",
    },
    Flag {
        names: &["--grammar"],
        set: value!("GRAMMAR", grammar, text),
        default: None,
        help: "Constrain the output to a GBNF grammar (llama.cpp's syntax; its `root` rule is the whole output).",
    },
    Flag {
        names: &["--grammar-file"],
        set: value!("FNAME", grammar_file, text),
        default: None,
        help: "Like --grammar, with the grammar read from a file.",
    },
    Flag {
        names: &["--json"],
        set: switch!(json),
        default: None,
        help: "Print one JSON object with token ids, text, timings and log-probabilities.",
    },
    Flag {
        names: &["--top-logprobs"],
        set: value!("K", top_logprobs, some),
        default: None,
        help: "With --json: the K most likely tokens at each generated step.",
    },
    Flag {
        names: &["--prompt-logprobs"],
        set: switch!(prompt_logprobs),
        default: None,
        help: "With --json: the most likely next tokens at every prompt position (K from --top-logprobs, default 10).",
    },
    Flag {
        names: &["--tokenize"],
        set: switch!(tokenize),
        default: None,
        help: "Print the prompt's token ids as a JSON array and exit.",
    },
    Flag {
        names: &["--perplexity"],
        set: switch!(perplexity),
        default: None,
        help: "Compute perplexity over the text of -f, in chunks of -c tokens.",
    },
    Flag {
        names: &["--bench"],
        set: switch!(bench),
        default: None,
        help: "Measure prompt processing and generation speed as llama-bench does: -p is the prompt length (default 512) and -n the tokens generated (default 128), 0 skips a test.",
    },
    Flag {
        names: &["--repetitions"],
        set: value!("N", repetitions),
        default: Some("5"),
        help: "With --bench: timed runs of each test.",
    },
    Flag {
        names: &["-d", "--n-depth"],
        set: value!("N", n_depth),
        default: Some("0"),
        help: "With --bench: tokens already in the context before each test, as llama-bench's -d (the test then reads pp512 @ d4096).",
    },
    Flag {
        names: &[
            "-i",
            "-cnv",
            "-ins",
            "-if",
            "--interactive",
            "--chat",
            "--conversation",
            "--instruct",
            "--interactive-first",
        ],
        set: switch!(interactive),
        default: None,
        help: "Chat in the terminal with the model's chat template; -p, if given, is the first message.",
    },
    Flag {
        names: &["--chat-template"],
        set: value!("NAME", chat_template, text),
        default: None,
        help: "Chat template by name (mistral, llama2, chatml, gemma, llama3) instead of the model's own.",
    },
    Flag {
        names: &["-sys", "--system-prompt"],
        set: value!("TEXT", system_prompt, text),
        default: None,
        help: "System prompt for chat.",
    },
    Flag {
        names: &["-sysf", "--system-prompt-file"],
        set: Setter::Value("FNAME", |a, v| {
            let text = std::fs::read_to_string(v).map_err(|e| e.to_string())?;
            a.system_prompt = Some(text.trim_end_matches(['\r', '\n']).to_string());
            Ok(())
        }),
        default: None,
        help: "System prompt for chat, read from a file.",
    },
    Flag {
        names: &["--server"],
        set: switch!(server),
        default: None,
        help: "Serve the OpenAI-compatible API and the chat page over HTTP.",
    },
    Flag {
        names: &["--host"],
        set: Setter::Value("ADDR", |a, v| {
            a.host = v.into();
            Ok(())
        }),
        default: Some("127.0.0.1"),
        help: "Address the server listens on; anything but loopback exposes it to the network (use --api-key).",
    },
    Flag {
        names: &["--port"],
        set: value!("PORT", port),
        default: Some("8080"),
        help: "Port the server listens on; when it is taken, the next free one. 0: any free port.",
    },
    Flag {
        names: &["--metrics"],
        set: switch!(metrics),
        default: None,
        help: "Serve /metrics (Prometheus text format), as llama-server does with --metrics.",
    },
    Flag {
        names: &["--cors-origin", "--cors-origins"],
        set: Setter::Value("ORIGIN", |a, v| {
            a.cors_origins
                .extend(v.split(',').map(str::trim).filter(|o| !o.is_empty()).map(String::from));
            Ok(())
        }),
        default: None,
        help: "Let web pages of ORIGIN (https://host:port, or * for any; several separated by commas) call the server without an API key (may be given several times); with --api-key any page that presents the key may.",
    },
    Flag {
        names: &["--nobrowser"],
        set: switch!(nobrowser),
        default: None,
        help: "Do not open the chat page in a browser.",
    },
    Flag {
        names: &["--api-key"],
        set: value!("KEY", api_key, text),
        default: None,
        help: "Require `Authorization: Bearer KEY` on the server's API.",
    },
    Flag {
        names: &["-np", "--parallel"],
        set: value!("N", parallel),
        default: Some("1"),
        help: "Requests the server generates for at once (slots, batched together); they share -c.",
    },
    Flag {
        names: &["--max-queue"],
        set: value!("N", max_queue),
        default: Some("64"),
        help: "Requests that may wait for a free slot; beyond that the server answers 503.",
    },
    Flag {
        names: &["-to", "--timeout"],
        set: value!("SECONDS", timeout),
        default: Some("60"),
        help: "Seconds a server connection may stay idle, take to send its request, or leave its answer unread.",
    },
];

/// A flag of llama.cpp or llamafile accepted so that command lines written for them run, though it
/// changes nothing here; giving it prints its note.
pub struct Compatible {
    pub names: &'static [&'static str],
    /// The value it takes, if any, named as in their help, and which values are accepted.
    pub value: Option<(&'static str, CheckValue)>,
    pub note: &'static str,
}

/// Whether a value is one the flag's owners accept.
pub type CheckValue = fn(&str) -> Result<(), String>;

/// Any value.
fn any(_: &str) -> Result<(), String> {
    Ok(())
}

fn on_off_auto(v: &str) -> Result<(), String> {
    match v {
        "on" | "off" | "auto" | "1" | "0" => Ok(()),
        _ => Err("expected on, off or auto".into()),
    }
}

/// The KV cache is f16; another type would change the numbers.
fn f16_only(v: &str) -> Result<(), String> {
    match v {
        "f16" => Ok(()),
        _ => Err(format!(
            "this runtime keeps the KV cache in f16 only; {v} is not supported"
        )),
    }
}

/// llama.cpp's and llamafile's flags that are accepted with a note.
pub static COMPATIBLE: &[Compatible] = &[
    Compatible {
        names: &["-mg", "--main-gpu"],
        value: Some(("INDEX", any)),
        note: "no GPU in this runtime: the model runs on the CPU",
    },
    Compatible {
        names: &["-fa", "--flash-attn"],
        value: Some(("on|off|auto", on_off_auto)),
        note: "this runtime picks its CPU attention kernels itself (tiled for long prompts)",
    },
    Compatible {
        names: &["-ctk", "--cache-type-k"],
        value: Some(("TYPE", f16_only)),
        note: "the KV cache is f16",
    },
    Compatible {
        names: &["-ctv", "--cache-type-v"],
        value: Some(("TYPE", f16_only)),
        note: "the KV cache is f16",
    },
    Compatible {
        names: &["-ub", "--ubatch-size"],
        value: Some(("N", |v| number::<usize>(v).map(drop))),
        note: "prompts are evaluated in batches of -b tokens; there is no separate physical batch",
    },
    Compatible {
        names: &["-cb", "--cont-batching"],
        value: None,
        note: "the server always batches requests continuously",
    },
    Compatible {
        names: &["--mlock"],
        value: None,
        note: "the weights stay mapped from the file and are not locked in memory",
    },
    Compatible {
        names: &["--no-mmap"],
        value: None,
        note: "the weights are always mapped from the file (never copied), which is what makes a llamafile start fast",
    },
    Compatible {
        names: &["--mmap"],
        value: None,
        note: "the weights are always mapped from the file",
    },
    Compatible {
        names: &["--no-warmup", "--warmup"],
        value: None,
        note: "there is no warm-up run; the map is paged in while the tokenizer loads",
    },
    Compatible {
        names: &["--jinja"],
        value: None,
        note: "chat templates are always rendered as Jinja",
    },
    Compatible {
        names: &["--embedding", "--embeddings"],
        value: None,
        note: "the server always serves /v1/embeddings",
    },
    Compatible {
        names: &["-mli", "--multiline-input"],
        value: None,
        note: "the terminal chat reads one line per message",
    },
    Compatible {
        names: &["--keep"],
        value: Some(("N", |v| number::<i64>(v).map(drop))),
        note: "the context is never shifted: generation ends when it is full",
    },
    Compatible {
        names: &["-v", "--verbose", "--log-verbose", "--log-disable"],
        value: None,
        note: "the log has one level",
    },
    Compatible {
        names: &[
            "-dev", "--device", "-sm", "--split-mode", "-ts", "--tensor-split", "-ot",
            "--override-tensor", "-ncmoe", "--n-cpu-moe", "-ncffn", "--n-cpu-ffn", "-fit", "--fit",
            "-fitp", "--fit-print", "-fitt", "--fit-target", "-fitc", "--fit-ctx", "--rpc",
        ],
        value: Some(("VALUE", any)),
        note: "no GPU in this runtime: the model runs on the CPU",
    },
    Compatible {
        names: &[
            "--list-devices", "-kvo", "--kv-offload", "-nkvo", "--no-kv-offload", "--no-host",
            "--op-offload", "--no-op-offload", "-cmoe", "--cpu-moe",
        ],
        value: None,
        note: "no GPU in this runtime: the model and its KV cache stay on the CPU",
    },
    Compatible {
        names: &["--repack", "-nr", "--no-repack"],
        value: None,
        note: "the weights are used as the file lays them out, mapped, not repacked",
    },
    Compatible {
        names: &[
            "-C", "--cpu-mask", "-Cr", "--cpu-range", "--cpu-strict", "--prio", "--poll", "-Cb",
            "--cpu-mask-batch", "-Crb", "--cpu-range-batch", "--cpu-strict-batch", "--prio-batch",
            "--poll-batch", "--numa", "--threads-http",
        ],
        value: Some(("VALUE", any)),
        note: "the operating system places the threads; -t sets how many",
    },
    Compatible {
        names: &[
            "-lv", "--verbosity", "--log-verbosity", "--log-colors",
        ],
        value: Some(("VALUE", any)),
        note: "the log has one level and no colours",
    },
    Compatible {
        names: &[
            "--log-prefix", "--no-log-prefix", "--log-timestamps", "--no-log-timestamps",
            "--log-jsonl", "--no-log-jsonl", "--perf", "--no-perf", "--show-timings",
            "--no-show-timings", "--verbose-prompt", "--simple-io",
        ],
        value: None,
        note: "the log has one form: plain lines on stderr, timings at the end of a completion",
    },
    Compatible {
        names: &[
            "-dt", "--defrag-thold", "-ctxcp", "--ctx-checkpoints", "--swa-checkpoints", "-cms",
            "--checkpoint-min-step", "-cram", "--cache-ram", "--kv-unified-per-slot",
            "--cache-reuse", "-lm", "--load-mode", "-lzm", "--lazy-mode",
        ],
        value: Some(("N", any)),
        note: "the KV cache is one f16 buffer per slot, sized by -c and --parallel, its cached prefix reused, and the weights are mapped from the file",
    },
    Compatible {
        names: &[
            "--swa-full", "-kvu", "--kv-unified", "-no-kvu", "--no-kv-unified",
            "--cache-idle-slots", "--no-cache-idle-slots", "--cache-prompt", "--no-cache-prompt",
            "--no-context-shift",
        ],
        value: None,
        note: "each slot keeps its own full KV cache and reuses its cached prefix; the context is never shifted",
    },
    Compatible {
        names: &[
            "--spec-draft-model", "-md", "--model-draft", "--spec-draft-threads", "-td",
            "--threads-draft", "--spec-draft-threads-batch", "-tbd", "--threads-batch-draft",
            "--spec-draft-cpu-mask", "-Cd", "--cpu-mask-draft", "--spec-draft-cpu-range", "-Crd",
            "--cpu-range-draft", "--spec-draft-cpu-strict", "--cpu-strict-draft",
            "--spec-draft-prio", "--prio-draft", "--spec-draft-poll", "--poll-draft",
            "--spec-draft-cpu-mask-batch", "-Cbd", "--cpu-mask-batch-draft",
            "--spec-draft-cpu-range-batch", "-Crbd", "--cpu-range-batch-draft",
            "--spec-draft-cpu-strict-batch", "--cpu-strict-batch-draft", "--spec-draft-prio-batch",
            "--prio-batch-draft", "--spec-draft-poll-batch", "--poll-batch-draft",
            "--spec-draft-type-k", "-ctkd", "--cache-type-k-draft", "--spec-draft-type-v", "-ctvd",
            "--cache-type-v-draft", "--spec-draft-override-tensor", "-otd",
            "--override-tensor-draft", "--spec-draft-n-cpu-moe", "--spec-draft-ncmoe", "-ncmoed",
            "--n-cpu-moe-draft", "--spec-draft-n-max", "--spec-draft-n-min", "--spec-synth-len",
            "--spec-synth-rates", "--spec-draft-p-split", "--draft-p-split", "--spec-draft-p-min",
            "--draft-p-min", "--spec-draft-device", "-devd", "--device-draft", "--spec-draft-ngl",
            "-ngld", "--gpu-layers-draft", "--n-gpu-layers-draft", "--spec-type", "--draft",
            "--draft-n", "--draft-max", "--draft-min", "--draft-n-min", "--spec-ngram-mod-n-min",
            "--spec-ngram-mod-n-max", "--spec-ngram-mod-n-match", "--spec-ngram-simple-size-n",
            "--spec-ngram-simple-size-m", "--spec-ngram-simple-min-hits",
            "--spec-ngram-map-k-size-n", "--spec-ngram-map-k-size-m", "--spec-ngram-map-k-min-hits",
            "--spec-ngram-map-k4v-size-n", "--spec-ngram-map-k4v-size-m",
            "--spec-ngram-map-k4v-min-hits", "--spec-ngram-size-n", "--spec-ngram-size-m",
            "--spec-ngram-min-hits",
        ],
        value: Some(("VALUE", any)),
        note: "no speculative decoding: each token takes a pass of the model, and the output is what speculative decoding would give",
    },
    Compatible {
        names: &[
            "--spec-draft-cpu-moe", "-cmoed", "--cpu-moe-draft", "--spec-draft-backend-sampling",
            "--no-spec-draft-backend-sampling", "-bs", "--backend-sampling", "--spec-default",
        ],
        value: None,
        note: "no speculative decoding and no GPU: sampling runs on the CPU, a token per pass",
    },
    Compatible {
        names: &[
            "--slots", "--props", "--ui", "--webui", "--reuse-port", "--display-prompt",
            "--check-tensors", "--offline", "--no-mmproj", "--no-mmproj-auto", "--mmproj-offload",
            "--no-mmproj-offload", "-nocb", "--no-cont-batching", "--no-prefill-assistant",
            "--no-reasoning-preserve", "--no-skip-chat-parsing", "--no-models-autoload",
        ],
        value: None,
        note: "what this runtime always does: /slots, /props and the chat page are served, the prompt is shown, tensors are checked against the file, nothing is downloaded, no projector is loaded",
    },
    Compatible {
        names: &["--sleep-idle-seconds", "--sse-ping-interval", "-sps", "--slot-prompt-similarity"],
        value: Some(("N", any)),
        note: "the model stays loaded, streams are not pinged, and a request takes the free slot whose cache shares the longest prefix",
    },
    Compatible {
        names: &[
            "--fast", "--precise", "--trap", "--nologo", "--ascii", "--nocompile", "--recompile",
            "--tinyblas", "--unsecure", "--cli",
        ],
        value: None,
        note: "llamafile 0.9's switch for its own build (precision modes, GPU module compilation, sandboxing, logo); this runtime has one numeric path and nothing to compile",
    },
    Compatible {
        names: &["--gpu"],
        value: Some(("auto|amd|apple|nvidia|disable", any)),
        note: "no GPU in this runtime: the model runs on the CPU",
    },
];

/// A flag of llama.cpp or llamafile that would change the result but is not served: an error
/// with the reason, never silently ignored.
pub struct Refused {
    pub names: &'static [&'static str],
    /// Whether it takes a value (named as in their help).
    pub value: Option<&'static str>,
    pub reason: &'static str,
}

pub static REFUSED: &[Refused] = &[
    Refused {
        names: &["--in-prefix-bos"],
        value: None,
        reason: "a BOS token before each input is not supported: put the text it stands for in --in-prefix",
    },
    Refused {
        names: &["-sp", "--special"],
        value: None,
        reason: "printing special tokens' text is not supported yet",
    },
    Refused {
        names: &["--lora", "--lora-scaled", "--control-vector"],
        value: Some("FNAME"),
        reason: "adapters are not supported: pack a merged model instead",
    },
    Refused {
        names: &[
            "-mu", "--model-url", "-dr", "--docker-repo", "-hf", "-hfr", "--hf-repo", "-hff",
            "--hf-file", "-hft", "--hf-token", "--spec-draft-hf", "-hfd", "-hfrd",
            "--hf-repo-draft", "-cl", "--cache-list", "--mtp", "--dflash", "--eagle3",
            "--embd-gemma-default", "--fim-qwen-1.5b-default", "--fim-qwen-3b-default",
            "--fim-qwen-7b-default", "--fim-qwen-7b-spec", "--fim-qwen-14b-spec",
            "--fim-qwen-30b-default", "--gpt-oss-20b-default", "--gpt-oss-120b-default",
            "--vision-gemma-4b-default", "--vision-gemma-12b-default",
        ],
        value: None,
        reason: "models are not downloaded: a llamafile carries its weights; give a local GGUF with -m",
    },
    Refused {
        names: &[
            "-mm", "--mmproj", "-mmu", "--mmproj-url", "--mmproj-auto", "-mmdev",
            "--mmproj-device", "--image", "--audio", "--video", "--image-min-tokens",
            "--image-max-tokens", "--mtmd-batch-max-tokens", "--video-fps",
            "--video-timestamp-interval", "--video-ffmpeg-dir", "--media-path",
        ],
        value: None,
        reason: "multimodal models (images, audio, video) are not supported",
    },
    Refused {
        names: &[
            "--samplers", "--sampler-seq", "--sampling-seq", "--top-nsigma", "--top-n-sigma",
            "--xtc-probability", "--xtc-threshold", "--typical", "--typical-p", "--dry-multiplier",
            "--dry-base", "--dry-allowed-length", "--dry-penalty-last-n", "--dry-sequence-breaker",
            "--adaptive-target", "--adaptive-decay", "--dynatemp-range", "--dynatemp-exp",
            "--mirostat", "--mirostat-lr", "--mirostat-ent", "-l", "--logit-bias",
        ],
        value: None,
        reason: "this sampler is not implemented; --temp, --top-k, --top-p, --min-p and the repetition, presence and frequency penalties are (the server takes logit_bias)",
    },
    Refused {
        names: &[
            "--rope-scaling", "--rope-scale", "--rope-freq-base", "--rope-freq-scale",
            "--yarn-orig-ctx", "--yarn-ext-factor", "--yarn-attn-factor", "--yarn-beta-slow",
            "--yarn-beta-fast", "-gan", "--grp-attn-n", "-gaw", "--grp-attn-w",
        ],
        value: None,
        reason: "overriding the model's RoPE or extending its context is not supported: the GGUF's own settings are used",
    },
    Refused {
        names: &[
            "--override-kv", "--control-vector-scaled", "--control-vector-layer-range",
            "--lora-init-without-apply",
        ],
        value: None,
        reason: "changing the model at load (metadata overrides, adapters, control vectors) is not supported: pack the model you want",
    },
    Refused {
        names: &[
            "--chunks", "--hellaswag", "--hellaswag-tasks", "--winogrande", "--winogrande-tasks",
            "--multiple-choice", "--multiple-choice-tasks", "--kl-divergence", "--save-all-logits",
            "--kl-divergence-base", "--ppl-stride", "--ppl-output-type", "-ns", "--sequences",
            "--context-file", "--chunk-size", "--chunk-separator", "--junk", "--pos", "-o",
            "--output", "--output-file", "-ofreq", "--output-frequency", "--output-format",
            "--save-frequency", "--process-output", "--ppl", "--no-ppl", "--chunk", "--from-chunk",
            "--show-statistics", "--parse-special", "--in-file", "--ids", "--stdin", "--no-bos",
            "--no-parse-special", "--show-count", "-pps", "-tgs", "-npp", "-ntg", "-npl",
            "--embd-output-format", "--embd-separator", "--cls-separator", "--positive-file",
            "--negative-file", "--pca-batch", "--pca-iter", "--method", "-lcs",
            "--lookup-cache-static", "-lcd", "--lookup-cache-dynamic", "--attention", "--tts-lang",
            "--tts-speaker-file", "--diffusion-steps", "--diffusion-visual", "--diffusion-eps",
            "--diffusion-algorithm", "--diffusion-alg-temp", "--diffusion-block-length",
            "--diffusion-cfg-scale", "--diffusion-add-gumbel-noise", "-lr", "--learning-rate",
            "-lr-min", "--learning-rate-min", "-decay-epochs", "--learning-rate-decay-epochs",
            "-wd", "--weight-decay", "-val-split", "--val-split", "-epochs", "--epochs", "-opt",
            "--optimizer", "--check", "--save-logits", "--logits-output-dir", "--tensor-filter",
        ],
        value: None,
        reason: "an option of another llama.cpp program (llama-perplexity, llama-imatrix, llama-bench, llama-tokenize, llama-embedding, llama-retrieval, llama-passkey, llama-parallel, llama-lookup, llama-cvector-generator, llama-tts, llama-diffusion, llama-finetune, llama-debug), not of llamafile; --perplexity, --bench and --tokenize are llamafile's",
    },
    Refused {
        names: &["--ssl-key-file", "--ssl-cert-file"],
        value: None,
        reason: "the server speaks plain HTTP: put a TLS proxy in front of it (README: more than one machine)",
    },
    Refused {
        names: &[
            "--reasoning-format", "-rea", "--reasoning", "--reasoning-effort", "--reasoning-budget",
            "--reasoning-budget-message", "--reasoning-preserve", "--skip-chat-parsing",
            "--chat-template-kwargs", "--prefill-assistant",
        ],
        value: None,
        reason: "reasoning models' thinking is not parsed or budgeted, and templates take no extra arguments: the reply is the model's text as it is",
    },
    Refused {
        names: &[
            "-ag", "--agent", "-no-ag", "--no-agent", "--tools", "--tools-runtime",
            "--mcp-servers-config", "--mcp-servers-json", "--ui-mcp-proxy", "--webui-mcp-proxy",
            "--no-ui-mcp-proxy", "--no-webui-mcp-proxy", "--ui-config", "--webui-config",
            "--ui-config-file", "--webui-config-file", "--no-ui", "--no-webui", "--path",
            "--api-prefix",
        ],
        value: None,
        reason: "the server's built-in tools, MCP, and web page configuration are not served; the chat page is always at /",
    },
    Refused {
        names: &[
            "--models-dir", "--models-preset", "--models-max", "--models-autoload", "-a", "--alias",
            "--tags", "--server-base",
        ],
        value: None,
        reason: "one model per process: the server serves the model it was started with, under its file's name",
    },
    Refused {
        names: &[
            "--prompt-cache", "--prompt-cache-all", "--prompt-cache-ro", "--slot-save-path",
            "-bf", "--binary-file",
        ],
        value: None,
        reason: "saving KV caches to files, or reading prompts as binary, is not supported",
    },
    Refused {
        names: &["--log-file", "--log-prompts-dir"],
        value: None,
        reason: "the log goes to stderr: redirect it (2> FILE)",
    },
    Refused {
        names: &[
            "--context-shift", "--no-jinja", "--spm-infill", "-st",
            "--single-turn", "-ptc", "--print-token-count", "--rerank", "--reranking",
            "--pooling", "--embd-normalize", "--cors-methods", "--cors-headers",
            "--cors-credentials", "--no-cors-credentials", "--api-key-file", "--completion-bash",
            "--chat-template-file", "--www-root", "--url-prefix", "--strace", "--ftrace", "--v2",
            "--no-slots",
        ],
        value: None,
        reason: "not supported by this runtime (docs/flags.md lists what is)",
    },
];

const HELP_NAMES: &[&str] = &["-h", "--help", "--usage"];
const VERSION_NAMES: &[&str] = &["-V", "--version"];

/// What the words asked for.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    Run(Box<Args>),
    Help,
    Version,
}

/// Parses the words after the program name.
pub fn parse(words: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let mut args = Args::default();
    for flag in FLAGS {
        if let (Some(default), Setter::Value(_, set)) = (flag.default, flag.set) {
            set(&mut args, default).expect("the defaults of FLAGS parse");
        }
    }
    let mut words = words.into_iter().peekable();
    let mut positional_model = false;
    while let Some(word) = words.next() {
        if HELP_NAMES.contains(&word.as_str()) {
            return Ok(Parsed::Help);
        }
        if VERSION_NAMES.contains(&word.as_str()) {
            return Ok(Parsed::Version);
        }
        if !word.starts_with('-') || word == "-" {
            // `llamafile model.gguf`, as llamafile takes it: one word that is not a flag's value
            // is the model, unless -m said it already.
            if args.model.is_none() && !positional_model {
                args.model = Some(word.into());
                positional_model = true;
                continue;
            }
            return Err(format!(
                "unexpected argument {word:?}: give the model with -m and the prompt with -p"
            ));
        }
        let (name, inline) = match word.split_once('=') {
            Some((name, value)) if word.starts_with("--") => (name, Some(value.to_string())),
            _ => (word.as_str(), None),
        };
        let value_of = |words: &mut dyn Iterator<Item = String>, meta: &str| {
            inline
                .clone()
                .or_else(|| words.next())
                .ok_or_else(|| format!("{name} needs a value: {name} {meta}"))
        };
        if let Some(flag) = find(name) {
            match flag.set {
                Setter::Switch(set) if inline.is_none() => set(&mut args),
                Setter::Switch(_) => return Err(format!("{name} takes no value")),
                Setter::Value(meta, set) => {
                    let value = value_of(&mut words, meta)?;
                    set(&mut args, &value).map_err(|e| format!("{name} {value:?}: {e}"))?;
                }
                Setter::Choice(choices, set) => {
                    let value = match inline {
                        Some(value) => value,
                        None => words
                            .next_if(|w| choices.contains(&w.as_str()))
                            .unwrap_or_else(|| choices[0].to_string()),
                    };
                    if !choices.contains(&value.as_str()) {
                        return Err(format!(
                            "{name} takes {}, not {value:?}",
                            choices.join(", ")
                        ));
                    }
                    set(&mut args, &value);
                }
            }
        } else if let Some(flag) = COMPATIBLE.iter().find(|f| f.names.contains(&name)) {
            match flag.value {
                None if inline.is_some() => return Err(format!("{name} takes no value")),
                None => {}
                Some((meta, check)) => {
                    let value = value_of(&mut words, meta)?;
                    check(&value).map_err(|e| format!("{name} {value:?}: {e}"))?;
                }
            }
            args.notes.push(format!("{name}: {}", flag.note));
        } else if let Some(flag) = REFUSED.iter().find(|f| f.names.contains(&name)) {
            return Err(format!("{name} is not supported: {}", flag.reason));
        } else {
            return Err(match suggestion(name) {
                Some(near) => format!("unknown flag {name}; did you mean {near}?"),
                None => format!("unknown flag {name}; see --help"),
            });
        }
    }
    Ok(Parsed::Run(Box::new(args)))
}

fn find(name: &str) -> Option<&'static Flag> {
    FLAGS.iter().find(|f| f.names.contains(&name))
}

/// The spelling nearest to an unknown one, when it is near enough to be a typo.
fn suggestion(name: &str) -> Option<&'static str> {
    let all = FLAGS
        .iter()
        .flat_map(|f| f.names.iter())
        .chain(COMPATIBLE.iter().flat_map(|f| f.names.iter()))
        .chain(REFUSED.iter().flat_map(|f| f.names.iter()))
        .chain(HELP_NAMES)
        .chain(VERSION_NAMES);
    let (distance, best) = all.map(|n| (edit_distance(name, n), *n)).min()?;
    (distance <= (name.len() / 3).max(2)).then_some(best)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// `--help`: every flag of the table with its value, default and help.
pub fn help() -> String {
    let mut out = String::from(
        "Runs a GGUF language model on the CPU.\n\nUsage: llamafile [OPTIONS]\n\nOptions:\n",
    );
    let spelled = |f: &Flag| {
        let names = f.names.join(", ");
        match f.set.meta() {
            None => names,
            Some(meta) => format!("{names} {meta}"),
        }
    };
    // Spellings longer than the column put the help on the next line.
    const COLUMN: usize = 28;
    for f in FLAGS {
        let default = f
            .default
            .map_or(String::new(), |d| format!(" [default: {d}]"));
        let names = spelled(f);
        if names.len() > COLUMN {
            out.push_str(&format!(
                "  {names}\n  {:COLUMN$}  {}{default}\n",
                "", f.help
            ));
        } else {
            out.push_str(&format!("  {names:COLUMN$}  {}{default}\n", f.help));
        }
    }
    for (names, help) in [(HELP_NAMES, "Print help"), (VERSION_NAMES, "Print version")] {
        out.push_str(&format!("  {:COLUMN$}  {help}\n", names.join(", ")));
    }
    out.push_str(
        "\nAccepted from llama.cpp's and llamafile's command lines, without effect here:\n",
    );
    for f in COMPATIBLE {
        let names = f.names.join(", ");
        let names = match f.value {
            Some((meta, _)) => format!("{names} {meta}"),
            None => names,
        };
        out.push_str(&format!("  {names}: {}\n", f.note));
    }
    out.push_str("\nRefused, with the reason (see docs/flags.md):\n");
    for f in REFUSED {
        out.push_str(&format!("  {}: {}\n", f.names.join(", "), f.reason));
    }
    out
}

/// `docs/flags.md`: every flag this runtime knows, from the three tables, and what it does here.
pub fn compatibility_table() -> String {
    let mut out = String::from(
        "# Command-line flags\n\n\
         Every flag `llamafile` knows, spelled as llama.cpp and llamafile spell them: all of \
         llama.cpp's `common/arg.cpp` (0c1e570; `tests/fixtures/llama-cpp-flags.txt` lists its \
         spellings, and a test checks each is here) and llamafile 0.9's own. Each does what it does \
         there, or is accepted with a note where it cannot apply, or is refused with the reason \
         (exit status 2). Written from the tables in `runtime/src/flags.rs` (`FLAGS`, \
         `COMPATIBLE`, `REFUSED`); a test keeps this file equal to them (`LLAMAFILE_BLESS=1 cargo \
         test -p runtime flags` rewrites it), and `tests/tests/flag_table.rs` runs every spelling \
         through the binary.\n\n\
         | flag | here |\n|---|---|\n",
    );
    let cell = |s: &str| s.replace('|', "\\|");
    let spelled = |names: &[&str], meta: Option<&str>| {
        let names = names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ");
        match meta {
            Some(m) => cell(&format!("{names} {m}")),
            None => names,
        }
    };
    for f in FLAGS {
        out.push_str(&format!(
            "| {} | {} |\n",
            spelled(f.names, f.set.meta().as_deref()),
            cell(f.help)
        ));
    }
    for f in COMPATIBLE {
        out.push_str(&format!(
            "| {} | accepted, no effect: {} |\n",
            spelled(f.names, f.value.map(|(meta, _)| meta)),
            cell(f.note)
        ));
    }
    for f in REFUSED {
        out.push_str(&format!(
            "| {} | refused: {} |\n",
            spelled(f.names, f.value),
            cell(f.reason)
        ));
    }
    out
}

/// `--version`.
pub fn version() -> String {
    format!("llamafile {}", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(words: &[&str]) -> Result<Args, String> {
        match parse(words.iter().map(|w| w.to_string()))? {
            Parsed::Run(args) => Ok(*args),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_come_from_the_table() {
        let a = run(&[]).unwrap();
        assert_eq!(
            (a.n_predict, a.ctx_size, a.batch_size, a.temp, a.top_k),
            (-1, None, 512, 0.8, 40)
        );
        assert_eq!(
            (a.host.as_str(), a.port, a.parallel),
            ("127.0.0.1", 8080, 1)
        );
        assert_eq!((a.seed, a.threads, a.model), (None, None, None));
    }

    #[test]
    fn every_spelling_is_one_flag_and_the_last_value_wins() {
        let a = run(&[
            "-ngl", "35", "-cnv", "-sys", "be brief", "-tb", "3", "-np", "2",
        ])
        .unwrap();
        assert_eq!(a.n_gpu_layers, Some(35));
        assert!(a.interactive);
        assert_eq!(a.system_prompt.as_deref(), Some("be brief"));
        assert_eq!((a.threads, a.parallel), (Some(3), 2));
        let a = run(&[
            "-c",
            "64",
            "--ctx-size=128",
            "-n",
            "-2",
            "-p",
            "-x",
            "--top_k",
            "5",
        ])
        .unwrap();
        assert_eq!((a.ctx_size, a.n_predict, a.top_k), (Some(128), -2, 5));
        assert_eq!(a.prompt.as_deref(), Some("-x"));
    }

    #[test]
    fn mistakes_are_named() {
        let err = |words: &[&str]| run(words).unwrap_err();
        assert_eq!(
            err(&["--ctx-sise", "8"]),
            "unknown flag --ctx-sise; did you mean --ctx-size?"
        );
        assert_eq!(
            err(&["--frobnicate"]),
            "unknown flag --frobnicate; see --help"
        );
        assert_eq!(err(&["-c"]), "-c needs a value: -c N");
        assert!(err(&["-c", "lots"]).starts_with("-c \"lots\": invalid digit"));
        assert_eq!(err(&["--json=yes"]), "--json takes no value");
        assert!(err(&["-m", "a.gguf", "b.gguf"]).contains("unexpected argument \"b.gguf\""));
    }

    #[test]
    fn the_compatibility_table_in_docs_is_the_flags_tables() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/flags.md");
        let want = compatibility_table();
        if std::env::var_os("LLAMAFILE_BLESS").is_some() {
            std::fs::write(path, &want).unwrap();
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "docs/flags.md differs from the flag tables: run LLAMAFILE_BLESS=1 cargo test -p runtime flags"
        );
    }

    #[test]
    fn compatible_flags_leave_a_note_and_refused_ones_say_why() {
        let a = run(&["--mlock", "-fa", "on", "-ctk", "f16", "-ub", "256"]).unwrap();
        assert_eq!(a.notes.len(), 4, "{:?}", a.notes);
        assert!(a.notes[0].starts_with("--mlock: "), "{:?}", a.notes);
        let err = |words: &[&str]| run(words).unwrap_err();
        assert!(err(&["-ctk", "q8_0"]).contains("f16 only"));
        assert!(err(&["-fa", "fast"]).contains("on, off or auto"));
        assert!(err(&["--lora", "a.gguf"]).starts_with("--lora is not supported: adapters"));
        assert_eq!(
            err(&["--mlok"]),
            "unknown flag --mlok; did you mean --mlock?"
        );
        // -r is llama.cpp's reverse prompt, given as often as needed.
        let a = run(&["-r", "User:", "-r", "\n\n", "--repetitions", "3"]).unwrap();
        assert_eq!(a.reverse_prompts, ["User:", "\n\n"]);
        assert_eq!(a.repetitions, 3);
        // One bare word is the model.
        let a = run(&["model.gguf", "-p", "hi"]).unwrap();
        assert_eq!(a.model.as_deref(), Some(std::path::Path::new("model.gguf")));
        assert!(run(&["a.gguf", "b.gguf"]).is_err());
    }

    /// Every option spelling of llama.cpp's `common/arg.cpp` (the fixture lists them) is a flag
    /// here, accepted with a note, or refused with the reason: none is unknown. The ones that run
    /// take a value exactly where llama.cpp's take one, so that the words after them mean the
    /// same (`--color`, which there must be followed by on|off|auto, here may be).
    #[test]
    fn every_llama_cpp_option_is_known_and_takes_a_value_where_it_does_there() {
        let fixture = include_str!("../../tests/fixtures/llama-cpp-flags.txt");
        let mut checked = 0;
        for line in fixture.lines().filter(|l| !l.starts_with('#')) {
            let (name, takes) = line.split_once(' ').expect("NAME switch|value");
            let value_there = takes == "value";
            let value_here = if let Some(flag) = find(name) {
                match flag.set {
                    Setter::Choice(..) => value_there,
                    set => set.meta().is_some(),
                }
            } else if let Some(c) = COMPATIBLE.iter().find(|c| c.names.contains(&name)) {
                c.value.is_some()
            } else if REFUSED.iter().any(|r| r.names.contains(&name))
                || HELP_NAMES.contains(&name)
                || VERSION_NAMES.contains(&name)
            {
                value_there
            } else {
                panic!("llama.cpp's {name} is unknown here");
            };
            assert_eq!(
                value_here, value_there,
                "{name}: takes a value there: {value_there}"
            );
            checked += 1;
        }
        assert!(checked > 500, "{checked}");
    }

    #[test]
    fn color_takes_on_off_auto_or_nothing() {
        let color = |words: &[&str]| run(words).map(|a| (a.color, a.ctx_size));
        assert_eq!(color(&["--color", "-c", "64"]), Ok((true, Some(64))));
        assert_eq!(
            color(&["--color", "off", "-c", "64"]),
            Ok((false, Some(64)))
        );
        assert_eq!(color(&["-co", "auto"]), Ok((true, None)));
        assert_eq!(color(&["--color=off"]), Ok((false, None)));
        assert!(color(&["--color=blue"])
            .unwrap_err()
            .contains("takes on, off, auto"));
    }

    #[test]
    fn help_lists_every_spelling_once() {
        let text = help();
        let mut seen = std::collections::HashSet::new();
        let compatible = COMPATIBLE.iter().map(|f| f.names);
        let refused = REFUSED.iter().map(|f| f.names);
        for names in FLAGS
            .iter()
            .map(|f| f.names)
            .chain(compatible)
            .chain(refused)
        {
            for name in names {
                assert!(seen.insert(*name), "{name} is defined twice");
                assert!(text.contains(name), "{name} missing from help");
            }
        }
        for f in FLAGS {
            if let Some(d) = f.default {
                assert!(text.contains(&format!("[default: {d}]")));
            }
        }
        assert_eq!(parse(["--help".to_string()]), Ok(Parsed::Help));
        assert_eq!(parse(["-V".to_string()]), Ok(Parsed::Version));
    }
}
