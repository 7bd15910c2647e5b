//! Memory bounded by what the user asked for, never by what the input contains (issue 20): each
//! test runs the real binary and reads its peak resident memory from the kernel (`wait4`).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use e2e::{bin, fixtures, models_dir};

/// What [`run_measured`] saw of a finished process.
struct Measured {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    /// Peak resident memory, MiB.
    peak_mib: u64,
}

/// Runs `cmd` to its end, reading its stdout and stderr, and asks the kernel for its peak memory.
// The child is reaped by wait4, which std's `wait` cannot replace: it also returns the rusage.
#[allow(clippy::zombie_processes)]
fn run_measured(cmd: &mut Command) -> Measured {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    let read_all = |mut from: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            from.read_to_string(&mut s)
                .expect("read the child's output");
            s
        })
    };
    let stdout = read_all(Box::new(child.stdout.expect("stdout")));
    let stderr = read_all(Box::new(child.stderr.expect("stderr")));
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value, and wait4 writes into the one passed.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet waited for; the pointers are to live locals.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    Measured {
        status: ExitStatus::from_raw(status),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
        // ru_maxrss is in KiB on Linux.
        peak_mib: usage.ru_maxrss as u64 / 1024,
    }
}

/// Perplexity scores each batch's logits as they come: a chunk's full logits (-c × n_vocab floats,
/// 0.6 GB here for Qwen's 151936-token vocabulary, 20 GB at its trained 32768) are never held.
#[test]
fn perplexity_memory_does_not_grow_with_the_context() {
    let text = fixtures().join("reference/perplexity-text.txt");
    let Measured {
        status,
        stdout: out,
        peak_mib,
        ..
    } = run_measured(
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

/// A model file's chat template that doubles a string forty times (a terabyte, from 130 bytes)
/// stops at the rendering's memory budget: the chat says which template and what limit, at once
/// and without the memory, and the process carries on.
#[test]
fn a_chat_template_that_builds_a_huge_string_stops_at_its_memory_budget() {
    let model = bomb_model();
    let input = scratch().join("input.txt");
    std::fs::write(&input, "hello\nhello again\n").unwrap();
    let started = std::time::Instant::now();
    let run = run_measured(
        Command::new(bin("llamafile"))
            .arg("-m")
            .arg(&model)
            .args(["-i", "-n", "4"])
            .stdin(std::fs::File::open(&input).unwrap()),
    );
    let took = started.elapsed();
    eprintln!("bomb template: {took:?}, peak RSS {} MiB", run.peak_mib);
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    // Both turns are refused with the same words, the second without rendering again.
    let refusals = run
        .stderr
        .matches("the model's chat template (tokenizer.chat_template) needs more than 64 MiB")
        .count();
    assert_eq!(refusals, 2, "{}", run.stderr);
    assert!(took < std::time::Duration::from_secs(2), "{took:?}");
    assert!(run.peak_mib < 200, "peak RSS {} MiB", run.peak_mib);
}

/// The tiny llama with [`BOMB_TEMPLATE`] as its chat template.
fn bomb_model() -> PathBuf {
    let model = scratch().join("bomb.gguf");
    let mut file = e2e::GgufFile::tiny_llama();
    file.kv.push((
        "tokenizer.chat_template".into(),
        e2e::Meta::Str(BOMB_TEMPLATE.into()),
    ));
    std::fs::write(&model, file.bytes()).unwrap();
    model
}

/// A directory of this test process's own.
fn scratch() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("limits")
        .join(std::process::id().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `{% set ns.s = ns.s ~ ns.s %}` forty times: 2^40 bytes.
const BOMB_TEMPLATE: &str = "{% set ns = namespace(s='ab') %}{% for i in range(40) %}\
{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}{{ messages[0]['content'] }}";

/// The server with that template refuses chat requests with 400 naming the template and the
/// limit, and goes on serving everything else.
#[test]
fn the_server_refuses_chats_with_a_template_over_its_budget_and_serves_the_rest() {
    let model = bomb_model();
    let server = e2e::server::Server::start(&model, &[]);
    let chat =
        serde_json::json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    for _ in 0..2 {
        let started = std::time::Instant::now();
        let r = e2e::server::request(
            server.addr,
            "POST",
            "/v1/chat/completions",
            &[("Content-Type", "application/json")],
            chat.to_string().as_bytes(),
        );
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(r.body.contains("needs more than 64 MiB"), "{}", r.body);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
    let r = e2e::server::request(
        server.addr,
        "POST",
        "/v1/completions",
        &[("Content-Type", "application/json")],
        br#"{"prompt": "hi", "max_tokens": 2}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let rss = server.rss();
    assert!(rss < 200 << 20, "server RSS {} MiB", rss >> 20);
}
