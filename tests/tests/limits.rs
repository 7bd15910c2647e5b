//! Memory bounded by what the user asked for, never by what the input contains (issue 20): each
//! test runs the real binary and reads its peak resident memory from the kernel (`wait4`).

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};

use e2e::{bin, fixtures, models_dir};

/// Runs `cmd` to its end; its exit status, stdout and peak resident memory in MiB.
// The child is reaped by wait4, which std's `wait` cannot replace: it also returns the rusage.
#[allow(clippy::zombie_processes)]
fn run_measured(cmd: &mut Command) -> (ExitStatus, String, u64) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).expect("read stdout");
        s
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value, and wait4 writes into the one passed.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet waited for; the pointers are to live locals.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    let out = reader.join().expect("stdout reader");
    // ru_maxrss is in KiB on Linux.
    (
        ExitStatus::from_raw(status),
        out,
        usage.ru_maxrss as u64 / 1024,
    )
}

/// Perplexity scores each batch's logits as they come: a chunk's full logits (-c × n_vocab floats,
/// 0.6 GB here for Qwen's 151936-token vocabulary, 20 GB at its trained 32768) are never held.
#[test]
fn perplexity_memory_does_not_grow_with_the_context() {
    let text = fixtures().join("reference/perplexity-text.txt");
    let (status, out, peak_mib) = run_measured(
        Command::new(bin("llamafile"))
            .arg("-m")
            .arg(models_dir().join("qwen.gguf"))
            .args(["--perplexity", "-c", "1024", "-b", "64", "--json", "-f"])
            .arg(&text),
    );
    assert!(status.success(), "{status}: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(v["perplexity"].as_f64().expect("perplexity") > 1.0, "{v}");
    eprintln!("perplexity -c 1024 -b 64 on Qwen: peak RSS {peak_mib} MiB");
    // The weights (~0.4 GB, mapped and touched), one batch's logits (39 MB) and the caches; the
    // chunk's logits alone would be 0.62 GB more.
    assert!(peak_mib < 800, "peak RSS {peak_mib} MiB");
}

/// Scoring batch by batch changes nothing: the same perplexity whether a chunk is one batch or
/// four. F32 weights, whose logits do not depend on how the tokens are batched.
#[test]
fn perplexity_is_the_same_scored_in_batches() {
    let text = fixtures().join("reference/perplexity-text.txt");
    let model = e2e::llama_synth("F32");
    let ppl = |batch: &str| {
        let out = e2e::llamafile(&[
            "-m",
            model.to_str().unwrap(),
            "--perplexity",
            "-f",
            text.to_str().unwrap(),
            "-c",
            "256",
            "-b",
            batch,
            "--json",
        ]);
        e2e::json_stdout(&out)["perplexity"]
            .as_f64()
            .expect("perplexity")
    };
    let (whole, batched) = (ppl("256"), ppl("64"));
    assert!(
        (whole / batched - 1.0).abs() < 1e-9,
        "one batch {whole}, batches of 64 {batched}"
    );
}
