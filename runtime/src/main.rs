//! `llamafile`: runs a GGUF model, on its own or packed inside this very executable.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::json;

use runtime::bench::BenchPlan;
use runtime::config::{Config, Mode, DEFAULT_CTX};
use runtime::engine::Engine;
use runtime::flags::{self, Parsed};
use runtime::load::{self, ModelSource, PayloadFile};
use runtime::model::Model;
use runtime::server::{self, Server};
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
    let args = match flags::parse(user) {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help) => {
            print!("{}", flags::help());
            std::process::exit(0);
        }
        Ok(Parsed::Version) => {
            println!("{}", flags::version());
            std::process::exit(0);
        }
        // A mistake in the words, as clap and llama.cpp report it: exit status 2.
        Err(e) => {
            eprintln!("llamafile: error: {e}");
            std::process::exit(2);
        }
    };
    run(&Config::resolve(*args)?, self_file.as_ref())
}

fn run(cfg: &Config, self_file: Option<&PayloadFile>) -> Result<(), String> {
    let threads = cfg.threads;
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(|e| format!("cannot start {threads} threads: {e}"))?;
    if cfg.gpu_layers {
        eprintln!("llamafile: no GPU support in this build; -ngl ignored, running on the CPU");
    }
    for note in &cfg.notes {
        eprintln!("llamafile: note: {note}");
    }

    let source = ModelSource::open(cfg.model.as_deref(), self_file)?;
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
    let n_ctx = match &cfg.mode {
        // As llama-bench: the context holds exactly what a test evaluates.
        Mode::Bench(plan) => (plan.n_depth + plan.n_prompt + plan.n_gen).max(1),
        _ => match cfg.ctx_size {
            None => DEFAULT_CTX.min(n_ctx_train),
            Some(0) => n_ctx_train,
            Some(asked) if asked > n_ctx_train => {
                eprintln!(
                    "llamafile: warning: -c {asked} is more than the {n_ctx_train} tokens the model was trained on; using {n_ctx_train}"
                );
                n_ctx_train
            }
            Some(asked) => asked,
        },
    };
    let engine = Engine {
        model,
        tokenizer,
        n_ctx,
        n_batch: cfg.batch_size,
    };
    eprintln!(
        "llamafile: {} ({} layers, {} threads, {}, context {n_ctx})",
        source.name(),
        engine.model.config.n_layer,
        threads,
        kernels::isa_name()
    );

    match &cfg.mode {
        Mode::Bench(plan) => bench(&engine, plan, cfg.json, source.name(), threads),
        Mode::Server => runtime::server::run(
            &engine,
            &g,
            &cfg.server,
            cfg.chat.template.as_deref(),
            source.name(),
        ),
        Mode::Bare => bare_launch(&engine, &g, cfg, source.name()),
        Mode::Perplexity(file) => perplexity(&engine, file, cfg.json),
        Mode::Chat => runtime::chat::run(&engine, &g, cfg, None),
        Mode::Tokenize(prompt) => {
            let ids = engine.tokenize_prompt(prompt);
            println!("{}", serde_json::to_string(&ids).expect("ids serialize"));
            Ok(())
        }
        Mode::Complete(completion) => runtime::completion::run(&engine, completion, cfg),
    }
}

/// Prints llama-bench's table (or, with --json, its JSON array) for this model.
fn bench(
    engine: &Engine,
    plan: &BenchPlan,
    json: bool,
    name: &str,
    threads: usize,
) -> Result<(), String> {
    let results = runtime::bench::run(engine, plan);
    if json {
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

/// In a terminal: the terminal chat, with the server answering the browser and API clients beside
/// it on the same slots. Without one (launched from a desktop): the server, and the browser opened
/// on it.
fn bare_launch(
    engine: &Engine,
    g: &gguf::Gguf,
    cfg: &Config,
    model_path: &str,
) -> Result<(), String> {
    if !std::io::stdin().is_terminal() {
        return runtime::server::run(
            engine,
            g,
            &cfg.server,
            cfg.chat.template.as_deref(),
            model_path,
        );
    }
    let server = Server::bind(cfg.server.clone(), &server::model_name(model_path))?;
    eprintln!(
        "llamafile: chat page and OpenAI-compatible API at {}",
        server.url()
    );
    runtime::chat::run(engine, g, cfg, Some(server))
}

fn perplexity(engine: &Engine, path: &Path, json: bool) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let r = engine.perplexity(&text, engine.n_ctx, |i, n, ppl| {
        eprintln!("[{i}/{n}] perplexity {ppl:.4}")
    })?;
    if json {
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
