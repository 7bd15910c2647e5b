//! `cargo xtask demo [--no-build] [--no-run] [-- LLAMAFILE ARGS]`: the README's quickstart in
//! one command.
//!
//! Builds the runtimes and the packer (`cargo xtask dist`), fetches Qwen2.5 Coder 0.5B Instruct
//! (`cargo xtask fetch-models`), packs it into `target/dist/qwen2.5-coder-0.5b-instruct.llamafile`
//! and runs that file the way a user would, through its launcher: a chat when stdin is a
//! terminal, otherwise one answer to a fixed question. Arguments after `--` are passed to the
//! llamafile instead.

use std::io::IsTerminal;
use std::path::Path;
use std::process::Command;

use crate::{dist, fetch_models};

/// The packed file's name, in `target/dist/`.
const LLAMAFILE: &str = "qwen2.5-coder-0.5b-instruct.llamafile";
/// The name the GGUF entry gets inside it (the test models are saved as `qwen.gguf`).
const GGUF_NAME: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";

/// Default arguments packed into `.args`: a 4096-token context, and the sampling settings of the
/// model's own `generation_config.json` (temperature 0.7, top-p 0.8, top-k 20, repetition
/// penalty 1.05).
const DEFAULT_ARGS: &[&str] = &[
    "-c",
    "4096",
    "--temp",
    "0.7",
    "--top-p",
    "0.8",
    "--top-k",
    "20",
    "--repeat-penalty",
    "1.05",
];

const QUESTION: &str = "Write a Python function that tells whether a number is prime.";

const USAGE: &str = "usage: cargo xtask demo [--no-build] [--no-run] [-- LLAMAFILE ARGS]";

pub fn run(args: &[String]) -> Result<(), String> {
    let (mut build, mut start) = (true, true);
    let mut passed: &[String] = &[];
    for (i, a) in args.iter().enumerate() {
        match a.as_str() {
            // Pack with the packer already in target/dist, which carries the four runtimes (the
            // release workflow's dist step made it).
            "--no-build" => build = false,
            // Only pack.
            "--no-run" => start = false,
            "--" => {
                passed = &args[i + 1..];
                break;
            }
            _ => return Err(USAGE.into()),
        }
    }
    if build {
        dist::run(&[])?;
    }
    let models = fetch_models::default_dir()?;
    fetch_models::run(&["--dir".to_string(), models.display().to_string()])?;

    let dist_dir = dist::target_dir(&dist::workspace_root()).join("dist");
    let named = dist_dir.join(GGUF_NAME);
    let qwen = models.join("qwen.gguf");
    // Absolute, so that the link resolves from target/dist whatever the models path was.
    let qwen = std::fs::canonicalize(&qwen).map_err(|e| format!("{}: {e}", qwen.display()))?;
    link(&qwen, &named)?;
    let llamafile = dist_dir.join(LLAMAFILE);
    let mut pack = Command::new(dist_dir.join("llamafile-pack"));
    pack.arg("build")
        .arg(&named)
        .arg("-o")
        .arg(&llamafile)
        .arg("--")
        .args(DEFAULT_ARGS);
    status(&mut pack, "llamafile-pack build")?;
    println!("demo: packed {}", llamafile.display());
    if !start {
        return Ok(());
    }

    let mut run = Command::new(&llamafile);
    if !passed.is_empty() {
        run.args(passed);
    } else if std::io::stdin().is_terminal() {
        println!("demo: chat with the model; Ctrl-C stops a reply, Ctrl-D exits");
        run.arg("-i");
    } else {
        println!("demo: stdin is not a terminal, so one answer instead of a chat");
        println!("demo: question: {QUESTION}");
        run.args(["--temp", "0", "-n", "128", "--no-display-prompt", "-p"])
            .arg(chatml(QUESTION));
    }
    status(&mut run, &llamafile.display().to_string())?;
    println!(
        "demo: run it again with {} (-i to chat, -p PROMPT for one completion, --help for the flags)",
        llamafile.display()
    );
    Ok(())
}

/// A user question in Qwen's ChatML, with the system line its chat template adds by default.
fn chatml(question: &str) -> String {
    format!(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n\
         <|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    )
}

/// Points `link` at `target` (the packer names the model entry after the path it is given).
fn link(target: &Path, link: &Path) -> Result<(), String> {
    match std::fs::remove_file(link) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("removing {}: {e}", link.display())),
    }
    std::os::unix::fs::symlink(target, link)
        .map_err(|e| format!("linking {} to {}: {e}", link.display(), target.display()))
}

fn status(cmd: &mut Command, what: &str) -> Result<(), String> {
    let st = cmd.status().map_err(|e| format!("running {what}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({st})"))
    }
}
