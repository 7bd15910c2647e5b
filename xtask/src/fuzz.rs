//! `cargo xtask fuzz [--seconds N] [--target NAME]...`: runs the libFuzzer targets in `fuzz/`
//! (GGUF reader, zip payload, `.args`, the two tokenizers, chat templates, server requests) one
//! after the other, N seconds each (default 600), at the lowest CPU priority, and reports for
//! each target the executions, the time and the crashes found.
//!
//! It installs cargo-fuzz when missing and uses the `nightly` toolchain when rustup has one, else
//! the stable one with `RUSTC_BOOTSTRAP=1` (cargo-fuzz needs nightly flags for the sanitizer).
//! The tokenizer targets need vocabularies; they are derived here, metadata only (no tensors),
//! into `target/fuzz-vocab/`: `spm.gguf` from the llama-synth model, `bpe.gguf` from Qwen (fetched
//! and made like the tests' models). Each target's corpus starts from
//! `fuzz/seeds/TARGET` and `tests/fixtures/fuzz-regressions/TARGET` (the inputs of crashes found
//! before, which `cargo test` replays) and grows in `fuzz/corpus/TARGET` (not committed). New
//! crashes land in `fuzz/artifacts/TARGET`; the fuzzer's output in `fuzz/logs/TARGET.log`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use gguf::{Gguf, Value};

use crate::{dist, fetch_models, llama_synth};

/// The targets, as named in `fuzz/Cargo.toml`.
const TARGETS: &[&str] = &[
    "gguf",
    "zip",
    "args",
    "tokenizer_spm",
    "tokenizer_bpe",
    "chat_template",
    "server_request",
];

const USAGE: &str = "usage: cargo xtask fuzz [--seconds N] [--target NAME]...";

/// What one target's run came to.
struct Report {
    target: &'static str,
    seconds: u64,
    runs: Option<u64>,
    crashes: Vec<PathBuf>,
}

pub fn run(args: &[String]) -> Result<(), String> {
    let mut seconds = 600u64;
    let mut targets: Vec<&'static str> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .filter(|&s| s > 0)
                    .ok_or("--seconds needs a positive number")?;
            }
            "--target" => {
                let name = it.next().ok_or("--target needs a name")?;
                let t = TARGETS.iter().find(|t| *t == name).ok_or_else(|| {
                    format!("unknown target {name:?}; targets: {}", TARGETS.join(", "))
                })?;
                targets.push(t);
            }
            _ => return Err(USAGE.into()),
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }

    let root = dist::workspace_root();
    let fuzz = root.join("fuzz");
    ensure_cargo_fuzz()?;
    let toolchain = toolchain();
    if targets.iter().any(|t| t.starts_with("tokenizer")) {
        derive_vocabularies(&root, &targets)?;
    }

    let mut reports = Vec::new();
    for &target in &targets {
        let mut build = cargo_fuzz(&fuzz, &toolchain);
        build.args(["build", "--debug-assertions", target]);
        run_checked(&mut build)?;
        reports.push(fuzz_target(&root, &toolchain, target, seconds)?);
    }

    println!(
        "\n{:<16} {:>8} {:>14} {:>8}",
        "target", "seconds", "executions", "crashes"
    );
    for r in &reports {
        let runs = r.runs.map_or("?".to_string(), |n| n.to_string());
        println!(
            "{:<16} {:>8} {:>14} {:>8}",
            r.target,
            r.seconds,
            runs,
            r.crashes.len()
        );
        for c in &r.crashes {
            println!("    {}", c.display());
        }
    }
    let crashed: Vec<&str> = reports
        .iter()
        .filter(|r| !r.crashes.is_empty())
        .map(|r| r.target)
        .collect();
    if crashed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "crashes in {}: reproduce with `cargo +nightly fuzz run TARGET FILE` in fuzz/, fix, and \
             keep the input under tests/fixtures/fuzz-regressions/TARGET/",
            crashed.join(", ")
        ))
    }
}

/// `cargo install cargo-fuzz --locked` unless `cargo fuzz` already runs.
fn ensure_cargo_fuzz() -> Result<(), String> {
    let present = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz");
    run_checked(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}

/// `Some("+nightly")` when rustup has a nightly toolchain; `None` means stable with
/// `RUSTC_BOOTSTRAP=1`.
fn toolchain() -> Option<&'static str> {
    let out = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("nightly"))
        .then_some("+nightly")
}

/// `nice -n 19 cargo [+nightly] fuzz` in `fuzz/`: the fuzzer must not slow down the rest of the
/// machine.
fn cargo_fuzz(fuzz: &Path, toolchain: &Option<&str>) -> Command {
    let mut cmd = Command::new("nice");
    cmd.args(["-n", "19", "cargo"]);
    match toolchain {
        Some(t) => {
            cmd.arg(t);
        }
        None => {
            cmd.env("RUSTC_BOOTSTRAP", "1");
        }
    }
    cmd.arg("fuzz").current_dir(fuzz);
    cmd
}

fn run_checked(cmd: &mut Command) -> Result<(), String> {
    let status = cmd.status().map_err(|e| format!("running {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed ({status})"))
    }
}

/// Runs one target for `seconds` in libFuzzer's fork mode, which carries on past a crash, a
/// timeout or running out of memory, keeping each input.
fn fuzz_target(
    root: &Path,
    toolchain: &Option<&str>,
    target: &'static str,
    seconds: u64,
) -> Result<Report, String> {
    let fuzz = root.join("fuzz");
    let corpus = fuzz.join("corpus").join(target);
    let artifacts = fuzz.join("artifacts").join(target);
    let logs = fuzz.join("logs");
    for d in [&corpus, &artifacts, &logs] {
        fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    let before = list(&artifacts);
    let log_path = logs.join(format!("{target}.log"));
    let log =
        fs::File::create(&log_path).map_err(|e| format!("creating {}: {e}", log_path.display()))?;
    let mut cmd = cargo_fuzz(&fuzz, toolchain);
    cmd.args(["run", "--debug-assertions", target]).arg(&corpus);
    for seeds in [
        fuzz.join("seeds").join(target),
        root.join("tests/fixtures/fuzz-regressions").join(target),
    ] {
        if seeds.is_dir() {
            cmd.arg(seeds);
        }
    }
    cmd.arg("--").args([
        format!("-max_total_time={seconds}"),
        "-fork=1".into(),
        "-ignore_crashes=1".into(),
        "-ignore_timeouts=1".into(),
        "-ignore_ooms=1".into(),
        // An input that takes this long is a hang; one that needs this much memory is a bug.
        "-timeout=10".into(),
        "-rss_limit_mb=2048".into(),
        format!("-artifact_prefix={}/", artifacts.display()),
    ]);
    let err_log = log
        .try_clone()
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    cmd.stdout(log).stderr(err_log);
    eprintln!(
        "xtask: fuzzing {target} for {seconds} s (log: {})",
        log_path.display()
    );
    let started = Instant::now();
    let status = cmd.status().map_err(|e| format!("running {cmd:?}: {e}"))?;
    let elapsed = started.elapsed().as_secs();
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    let crashes: Vec<PathBuf> = list(&artifacts)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    let runs = executions(&text);
    // libFuzzer's own count leaves out the build `cargo fuzz run` may have done first.
    let seconds = fuzzed_seconds(&text).unwrap_or(elapsed);
    if !status.success() && crashes.is_empty() {
        return Err(format!(
            "fuzzing {target} failed ({status}) without a crash input; see {}",
            log_path.display()
        ));
    }
    Ok(Report {
        target,
        seconds,
        runs,
        crashes,
    })
}

fn list(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// The executions libFuzzer last reported: fork mode's status lines start `#N:`, the plain
/// mode's `#N`, and a plain run ends `Done N runs in S second(s)`.
fn executions(log: &str) -> Option<u64> {
    log.lines().rev().find_map(|line| {
        if let Some(rest) = line.strip_prefix("Done ") {
            return rest.split_whitespace().next()?.parse().ok();
        }
        let rest = line.strip_prefix('#')?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

/// The seconds libFuzzer says it fuzzed (`INFO: fuzzed for N seconds` in fork mode, the time of
/// `Done N runs in S second(s)` otherwise).
fn fuzzed_seconds(log: &str) -> Option<u64> {
    log.lines().rev().find_map(|line| {
        if let Some(rest) = line.strip_prefix("INFO: fuzzed for ") {
            return rest.split_whitespace().next()?.parse().ok();
        }
        let rest = line.strip_prefix("Done ")?;
        rest.split(" in ")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// Writes the metadata-only vocabularies the tokenizer targets load, when missing.
fn derive_vocabularies(root: &Path, targets: &[&str]) -> Result<(), String> {
    let dir = root.join("target/fuzz-vocab");
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let wanted = |target: &str, file: &str| targets.contains(&target) && !dir.join(file).exists();
    if wanted("tokenizer_spm", "spm.gguf") || wanted("tokenizer_bpe", "bpe.gguf") {
        let models = fetch_models::default_dir()?;
        fetch_models::run(&["--dir".to_string(), models.display().to_string()])?;
        let synth = llama_synth::dir(&models).join("llama-synth-Q2_K.gguf");
        metadata_only(&synth, &dir.join("spm.gguf"))?;
        metadata_only(&models.join("qwen.gguf"), &dir.join("bpe.gguf"))?;
    }
    Ok(())
}

/// Copies the metadata of the GGUF at `from` into a GGUF without tensors at `to`.
fn metadata_only(from: &Path, to: &Path) -> Result<(), String> {
    let bytes = fs::read(from).map_err(|e| format!("{}: {e}", from.display()))?;
    let g = Gguf::parse(&bytes).map_err(|e| format!("{}: {e}", from.display()))?;
    let mut out = b"GGUF".to_vec();
    out.extend(g.version.to_le_bytes());
    out.extend(0u64.to_le_bytes());
    out.extend((g.metadata.len() as u64).to_le_bytes());
    for (key, value) in &g.metadata {
        put_bytes(&mut out, key.as_bytes());
        out.extend((value.value_type() as u32).to_le_bytes());
        put_value(&mut out, value);
    }
    let tmp = to.with_extension("tmp");
    fs::write(&tmp, &out).map_err(|e| format!("{}: {e}", tmp.display()))?;
    fs::rename(&tmp, to).map_err(|e| format!("{}: {e}", to.display()))?;
    eprintln!(
        "xtask: wrote {} ({} bytes of metadata from {})",
        to.display(),
        out.len(),
        from.display()
    );
    Ok(())
}

fn put_bytes(out: &mut Vec<u8>, s: &[u8]) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
}

/// A value without its type tag, as GGUF stores it.
fn put_value(out: &mut Vec<u8>, v: &Value) {
    match *v {
        Value::U8(x) => out.push(x),
        Value::I8(x) => out.extend(x.to_le_bytes()),
        Value::U16(x) => out.extend(x.to_le_bytes()),
        Value::I16(x) => out.extend(x.to_le_bytes()),
        Value::U32(x) => out.extend(x.to_le_bytes()),
        Value::I32(x) => out.extend(x.to_le_bytes()),
        Value::U64(x) => out.extend(x.to_le_bytes()),
        Value::I64(x) => out.extend(x.to_le_bytes()),
        Value::F32(x) => out.extend(x.to_le_bytes()),
        Value::F64(x) => out.extend(x.to_le_bytes()),
        Value::Bool(b) => out.push(u8::from(b)),
        Value::String(s) => put_bytes(out, s),
        Value::Array(a) => {
            out.extend((a.elem_type() as u32).to_le_bytes());
            out.extend((a.len() as u64).to_le_bytes());
            for item in a.iter() {
                put_value(out, &item);
            }
        }
    }
}
