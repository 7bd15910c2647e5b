//! `cargo xtask test`: the project's one test command (README.md, .ci/run).
//!
//! The end-to-end tests run the real binaries, so they are built first, in the release profile the
//! tests are built in too; the test models are fetched when missing.

use std::path::Path;
use std::process::Command;

use crate::fetch_models;

pub fn run(args: &[String]) -> Result<(), String> {
    let extra: &[String] = match args.first().map(String::as_str) {
        Some("--") => &args[1..],
        Some(_) => return Err("usage: cargo xtask test [-- CARGO TEST ARGS]".into()),
        None => &[],
    };
    let models = fetch_models::default_dir()?;
    fetch_models::run(&["--dir".to_string(), models.display().to_string()])?;
    let root = workspace_root();
    cargo(
        &root,
        &["build", "--release", "--workspace", "--bins"],
        &models,
    )?;
    let mut test_args = vec!["test", "--release", "--workspace"];
    if !extra.is_empty() {
        test_args.push("--");
        test_args.extend(extra.iter().map(String::as_str));
    }
    cargo(&root, &test_args, &models)
}

fn workspace_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo(root: &Path, args: &[&str], models: &Path) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(args)
        .current_dir(root)
        .env("LLAMAFILE_TEST_MODELS", models)
        .status()
        .map_err(|e| format!("running cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo {} failed ({status})", args.join(" ")))
    }
}
