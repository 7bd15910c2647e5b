//! `llamafile`: runs a GGUF model, on its own or packed inside this very executable.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use serde_json::json;

use runtime::bench::BenchPlan;
use runtime::cli::{self, Args};
use runtime::engine::Engine;
use runtime::load::{self, ModelSource, PayloadFile};
use runtime::model::Model;
use runtime::server::{Options, Server};
use tokenizer::Tokenizer;

fn main() -> ExitCode {
    match start() {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("llamafile: error: {msg}");
            ExitCode::from(1)
        }
    }
}

/// Finds the payload this executable may carry, puts its default arguments around the user's,
/// then runs.
fn start() -> Result<(), String> {
    let mut raw: Vec<String> = std::env::args().collect();
    let argv0 = if raw.is_empty() {
        "llamafile".to_string()
    } else {
        raw.remove(0)
    };
    let explicit_self = match raw.first().map(String::as_str) {
        Some(load::SELF_FLAG) if raw.len() >= 2 => {
            let path = PathBuf::from(raw.remove(1));
            raw.remove(0);
            Some(path)
        }
        _ => None,
    };
    let self_file = load::find_self(explicit_self.as_deref(), Some(&argv0))?;
    let user = match self_file
        .as_ref()
        .map(|p| p.default_args())
        .transpose()?
        .flatten()
    {
        Some(defaults) => payload::merge_args(&defaults, &raw),
        None => raw,
    };
    let args = match Args::try_parse_from(std::iter::once(argv0).chain(cli::normalize(user))) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    run(args, self_file.as_ref())
}

fn run(args: Args, self_file: Option<&PayloadFile>) -> Result<(), String> {
    let threads = args.threads.unwrap_or_else(runtime::physical_cores).max(1);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(|e| format!("cannot start {threads} threads: {e}"))?;
    if matches!(args.n_gpu_layers, Some(n) if n != 0) {
        eprintln!("llamafile: no GPU support in this build; -ngl ignored, running on the CPU");
    }

    let source = ModelSource::open(args.model.as_deref(), self_file)?;
    let g = source.gguf()?;
    // The model first: an unsupported architecture is the more useful message.
    let model = Model::load(&g).map_err(|e| format!("{}: {e}", source.name()))?;
    let tokenizer = Tokenizer::from_gguf(&g).map_err(|e| format!("{}: {e}", source.name()))?;
    // Token ids index the embedding matrix: a vocabulary larger than it would read past it.
    // llama.cpp requires the two to agree exactly, and so does this runtime.
    if tokenizer.n_vocab() != model.config.n_vocab {
        return Err(format!(
            "{}: the vocabulary has {} tokens (tokenizer.ggml.tokens) but token_embd.weight has {} rows",
            source.name(),
            tokenizer.n_vocab(),
            model.config.n_vocab
        ));
    }
    let n_ctx_train = model.config.n_ctx_train;
    let bench_plan = args.bench.then(|| bench_plan(&args)).transpose()?;
    let n_ctx = if let Some(plan) = &bench_plan {
        // As llama-bench: the context holds exactly what a test evaluates.
        (plan.n_prompt + plan.n_gen).max(1)
    } else if args.ctx_size == 0 {
        n_ctx_train
    } else {
        args.ctx_size.min(n_ctx_train)
    };
    let engine = Engine {
        model,
        tokenizer,
        n_ctx,
        n_batch: args.batch_size.max(1),
    };
    eprintln!(
        "llamafile: {} ({} layers, {} threads, {}, context {n_ctx})",
        source.name(),
        engine.model.config.n_layer,
        threads,
        kernels::isa_name()
    );

    if let Some(plan) = bench_plan {
        return bench(&engine, &plan, &args, source.name(), threads);
    }
    if args.server {
        return runtime::server::run(&engine, &g, &args, source.name());
    }
    if is_bare(&args) {
        return bare_launch(&engine, &g, &args, source.name());
    }
    if args.perplexity {
        return perplexity(&engine, &args);
    }
    if args.interactive {
        return runtime::chat::run(&engine, &g, &args, None);
    }
    let prompt = prompt_text(&args)?;
    if args.tokenize {
        let ids = engine.tokenize_prompt(&prompt);
        println!("{}", serde_json::to_string(&ids).expect("ids serialize"));
        return Ok(());
    }
    runtime::completion::run(&engine, &args, &prompt)
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
        repetitions: args.repetitions,
    })
}

/// Prints llama-bench's table (or, with --json, its JSON array) for this model.
fn bench(
    engine: &Engine,
    plan: &BenchPlan,
    args: &Args,
    name: &str,
    threads: usize,
) -> Result<(), String> {
    let results = runtime::bench::run(engine, plan);
    if args.json {
        let all: Vec<_> = results.iter().map(|r| r.to_json(name, threads)).collect();
        println!("{}", serde_json::Value::Array(all));
        return Ok(());
    }
    println!("| model | threads | isa | test | t/s |");
    println!("| --- | ---: | --- | ---: | ---: |");
    for r in &results {
        let (avg, sd) = r.tokens_per_second();
        println!(
            "| {name} | {threads} | {} | {} | {avg:.2} ± {sd:.2} |",
            kernels::isa_name(),
            r.test
        );
    }
    Ok(())
}

/// No prompt and no mode: what a double-click or a plain `./model.llamafile` does.
fn is_bare(args: &Args) -> bool {
    args.prompt.is_none()
        && args.file.is_none()
        && !args.tokenize
        && !args.perplexity
        && !args.bench
        && !args.interactive
}

/// In a terminal: the terminal chat, with the server answering the browser and API clients beside
/// it on the same slots. Without one (launched from a desktop): the server, and the browser opened
/// on it.
fn bare_launch(
    engine: &Engine,
    g: &gguf::Gguf,
    args: &Args,
    model_name: &str,
) -> Result<(), String> {
    if !std::io::stdin().is_terminal() {
        return runtime::server::run(engine, g, args, model_name);
    }
    let server = Server::bind(Options::from_args(args, model_name))?;
    eprintln!(
        "llamafile: chat page and OpenAI-compatible API at {}",
        server.url()
    );
    runtime::chat::run(engine, g, args, Some(server))
}

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
        cli::process_escapes(&text)
    })
}

fn perplexity(engine: &Engine, args: &Args) -> Result<(), String> {
    let Some(path) = &args.file else {
        return Err("--perplexity needs the text: -f FILE".into());
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let r = engine.perplexity(&text, engine.n_ctx, |i, n, ppl| {
        eprintln!("[{i}/{n}] perplexity {ppl:.4}")
    })?;
    if args.json {
        println!(
            "{}",
            json!({"perplexity": r.perplexity, "chunks": r.chunks, "tokens": r.tokens, "isa": kernels::isa_name()})
        );
    } else {
        println!(
            "perplexity: {:.4} over {} chunks of {} tokens",
            r.perplexity, r.chunks, engine.n_ctx
        );
    }
    Ok(())
}
