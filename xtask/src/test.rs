//! `cargo xtask test [--skip GROUP]... [-- CARGO TEST ARGS]`: the project's one test command
//! (README.md, .ci/run).
//!
//! First the prerequisites (`prerequisites`: installed with apt when root, else the command to
//! run is printed; `--skip browser` / `--skip proxy` / `--skip aarch64` leave out the tests that
//! need them). Then
//! the test models are fetched or made when missing, and the real binaries the end-to-end tests
//! run are built (the aarch64 runtime by `cargo xtask dist`), in the release profile the tests are
//! built in too. The whole suite runs on the best kernels this CPU has; then the tests that go
//! through the run-time dispatch (the kernels' own and the fidelity checks against llama.cpp) run
//! again under each lower `LLAMAFILE_ISA`, so that an AVX-512 machine checks the AVX2 paths too.
//! Last, the kernels' tests run as aarch64 code under qemu-user, so that the NEON kernels are
//! checked against the scalar reference too. The closing summary names every group that ran, and
//! every one that did not.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use crate::prerequisites::{self, GROUPS};
use crate::{dist, fetch_models};

const USAGE: &str =
    "usage: cargo xtask test [--skip browser] [--skip proxy] [--skip aarch64] [--skip macos] [-- CARGO TEST ARGS]";

pub fn run(args: &[String]) -> Result<(), String> {
    let mut skip = Vec::new();
    let mut rest = args;
    let extra: &[String] = loop {
        match rest {
            [flag, group, tail @ ..] if flag == "--skip" => {
                skip.push(group.clone());
                rest = tail;
            }
            [dashes, tail @ ..] if dashes == "--" => break tail,
            [] => break &[],
            _ => return Err(USAGE.into()),
        }
    };
    prerequisites::ensure(&skip)?;
    let skipped: Vec<_> = GROUPS
        .iter()
        .filter(|g| skip.iter().any(|s| s == g.name))
        .collect();
    let aarch64 = !skip.iter().any(|s| s == "aarch64");

    let models = fetch_models::default_dir()?;
    fetch_models::run(&["--dir".to_string(), models.display().to_string()])?;
    let root = dist::workspace_root();
    let host_cargo: OsString = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let env = vec![("LLAMAFILE_TEST_MODELS", models.clone().into_os_string())];
    // The runtimes and packers in target/dist: the tests pack the aarch64 runtime and run it under
    // qemu, check the macOS ones and pack with the packer that carries them all.
    let platforms: Vec<String> = skip
        .iter()
        .filter(|s| *s == "aarch64" || *s == "macos")
        .cloned()
        .collect();
    dist::make(&platforms, dist::Packers::Host)?;
    cargo(
        &root,
        &host_cargo,
        &["build", "--release", "--workspace", "--bins"],
        &env,
    )?;
    let mut test_args = vec!["test", "--release", "--workspace"];
    let filters: Vec<&str> = skipped
        .iter()
        .flat_map(|g| g.tests.iter().copied())
        .collect();
    if !extra.is_empty() || !filters.is_empty() {
        test_args.push("--");
        test_args.extend(extra.iter().map(String::as_str));
        for f in &filters {
            test_args.extend(["--skip", f]);
        }
    }
    let mut ran = Vec::new();
    let (best, lower) = kernels::isa_caps()
        .split_last()
        .map(|(best, lower)| (*best, lower.to_vec()))
        .expect("at least the scalar kernels");
    cargo(&root, &host_cargo, &test_args, &env)?;
    let suite = if extra.is_empty() {
        "the whole suite".to_string()
    } else {
        format!("the suite with `{}`", extra.join(" "))
    };
    match std::env::var("LLAMAFILE_ISA") {
        // The caller chose the kernels: nothing else runs on the host's.
        Ok(cap) => ran.push(format!(
            "{suite}, with LLAMAFILE_ISA={cap} as set by the caller"
        )),
        Err(_) => {
            ran.push(format!("{suite}, on this CPU's best kernels ({best})"));
            if extra.is_empty() {
                for isa in lower.iter().rev() {
                    ran.push(lower_isa(&root, &host_cargo, &env, isa)?);
                }
            }
        }
    }
    if aarch64 {
        ran.push(aarch64_kernels(&root, env)?);
    }
    for g in &skipped {
        ran.push(format!("NOT RUN (--skip {}): {}", g.name, g.needed_by));
    }
    eprintln!("xtask test: passed; what ran:");
    for group in &ran {
        eprintln!("  - {group}");
    }
    Ok(())
}

/// The kernels' tests and the fidelity tests again with `LLAMAFILE_ISA=isa`. The scalar kernels
/// are slow on the real models (minutes each) and are the reference every SIMD kernel is checked
/// against already, so under them the fidelity tests run on the small llama-synth models only (all
/// thirteen types).
fn lower_isa(
    root: &Path,
    host_cargo: &OsString,
    env: &[(&'static str, OsString)],
    isa: &str,
) -> Result<String, String> {
    let mut env = env.to_vec();
    env.push(("LLAMAFILE_ISA", isa.into()));
    eprintln!("xtask: LLAMAFILE_ISA={isa}");
    let kernel_tests = ["test", "--release", "-p", "kernels", "--lib", "--tests"];
    cargo(root, host_cargo, &kernel_tests, &env)?;
    let mut fidelity = vec!["test", "--release", "-p", "e2e", "--test", "reference"];
    let scope = if isa == "scalar" {
        fidelity.push("synth_");
        "the llama-synth fidelity tests"
    } else {
        "the fidelity tests"
    };
    cargo(root, host_cargo, &fidelity, &env)?;
    Ok(format!(
        "the kernels' tests and {scope}, with LLAMAFILE_ISA={isa}"
    ))
}

/// `cargo test -p kernels` built for aarch64 and run under qemu-aarch64 (whose presence the
/// prerequisites checked); says what it ran.
fn aarch64_kernels(root: &Path, mut env: Vec<(&'static str, OsString)>) -> Result<String, String> {
    let cross = dist::debian_cross_aarch64()?;
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
            prerequisites::AARCH64_LINUX,
        ],
        &env,
    )?;
    Ok("the kernels' tests as aarch64 code under qemu-aarch64 (neon)".into())
}

pub(crate) fn cargo(
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
