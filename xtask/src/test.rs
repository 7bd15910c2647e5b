//! `cargo xtask test`: the project's one test command (README.md, .ci/run).
//!
//! The end-to-end tests run the real binaries, so they are built first, in the release profile the
//! tests are built in too; the test models are fetched when missing. Then the kernels' tests run
//! once more as aarch64 code under qemu-user, so that the NEON kernels are checked against the
//! scalar reference too (when Debian's cross toolchain is installed; `--require-aarch64` makes
//! its absence an error, as CI wants).

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use crate::{dist, fetch_models};

pub fn run(args: &[String]) -> Result<(), String> {
    let (require_aarch64, rest) = match args.first().map(String::as_str) {
        Some("--require-aarch64") => (true, &args[1..]),
        _ => (false, args),
    };
    let extra: &[String] = match rest.first().map(String::as_str) {
        Some("--") => &rest[1..],
        Some(_) => {
            return Err("usage: cargo xtask test [--require-aarch64] [-- CARGO TEST ARGS]".into())
        }
        None => &[],
    };
    let models = fetch_models::default_dir()?;
    fetch_models::run(&["--dir".to_string(), models.display().to_string()])?;
    let root = dist::workspace_root();
    let host_cargo: OsString = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let env = vec![("LLAMAFILE_TEST_MODELS", models.clone().into_os_string())];
    cargo(
        &root,
        &host_cargo,
        &["build", "--release", "--workspace", "--bins"],
        &env,
    )?;
    let mut test_args = vec!["test", "--release", "--workspace"];
    if !extra.is_empty() {
        test_args.push("--");
        test_args.extend(extra.iter().map(String::as_str));
    }
    cargo(&root, &host_cargo, &test_args, &env)?;
    aarch64_kernels(&root, env, require_aarch64)
}

/// `cargo test -p kernels` built for aarch64 and run under qemu-aarch64.
fn aarch64_kernels(
    root: &Path,
    mut env: Vec<(&'static str, OsString)>,
    required: bool,
) -> Result<(), String> {
    let cross = dist::debian_cross_aarch64().and_then(|b| {
        if dist::on_path("qemu-aarch64") {
            Ok(b)
        } else {
            Err("qemu-aarch64 is not on PATH".into())
        }
    });
    let cross = match cross {
        Ok(b) => b,
        Err(e) if required => {
            return Err(format!(
                "aarch64 kernel tests: {e} (install: {})",
                dist::CROSS_PACKAGES
            ))
        }
        Err(e) => {
            eprintln!(
                "xtask: skipping the aarch64 kernel tests: {e} (install: {})",
                dist::CROSS_PACKAGES
            );
            return Ok(());
        }
    };
    env.extend(cross.env);
    env.push((
        "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER",
        "qemu-aarch64".into(),
    ));
    // Debian's rustdoc runs the doctests: rustup's cannot find the aarch64 standard library.
    // (No QEMU_LD_PREFIX: with the cross package's loader and the multiarch libc, every thread
    // creation under qemu spins forever.)
    env.push(("RUSTDOC", "/usr/bin/rustdoc".into()));
    env.push((
        "CARGO_TARGET_DIR",
        dist::target_dir(root).join("aarch64-test").into_os_string(),
    ));
    cargo(
        root,
        &cross.cargo,
        &[
            "test",
            "--release",
            "-p",
            "kernels",
            // No doctests: kernels has none, and their empty run would be the suite's last word.
            "--lib",
            "--tests",
            "--target",
            dist::AARCH64_LINUX,
        ],
        &env,
    )
}

fn cargo(
    root: &Path,
    cargo: &OsString,
    args: &[&str],
    env: &[(&str, OsString)],
) -> Result<(), String> {
    eprintln!("xtask: {} {}", cargo.to_string_lossy(), args.join(" "));
    let status = Command::new(cargo)
        .args(args)
        .current_dir(root)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .status()
        .map_err(|e| format!("running cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo {} failed ({status})", args.join(" ")))
    }
}
