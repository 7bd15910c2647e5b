//! `cargo xtask bench`: our runtime and llama.cpp measured side by side, on the same models, in
//! one run.
//!
//! llama.cpp's `llama-bench` (and `llama-completion`, for time to first token) are built once from
//! the llama-cpp-python sdist on PyPI into the user's cache, outside the repository. Then, for
//! every model and thread count, `llamafile --bench` and `llama-bench` run one after the other with
//! the same `-p -n -r -t`, alternating which goes first, so that both see the same machine. Peak
//! resident memory of each run comes from `wait4`. Time to first token is the wall time from
//! launching a packed llamafile (native and universal, with the runtime as `cargo xtask dist`
//! builds it) to its first generated token on stdout, against `llama-completion` doing the same.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{json, Value};

use crate::{dist, fetch_models, llama_synth, prerequisites};

/// The llama.cpp inside llama-cpp-python 0.3.36 (commit 0c1e570), as in the issue's figures.
const LLAMA_CPP_PYTHON: &str = "0.3.36";

const USAGE: &str = "usage: cargo xtask bench [--json] [--quick] [-r N] [--threads 1,2] [--models qwen,gemma,Q4_0,Q8_0,Q4_K,Q6_K]";

/// A prompt of 16 Qwen tokens (17 for Gemma, with its BOS), for time to first token.
const TTFT_PROMPT: &str =
    "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun";

struct Options {
    json: bool,
    n_prompt: usize,
    n_gen: usize,
    repetitions: usize,
    threads: Vec<usize>,
    models: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        json: false,
        n_prompt: 512,
        n_gen: 128,
        repetitions: 3,
        threads: vec![1, 2],
        models: ["qwen", "gemma", "Q4_0", "Q8_0", "Q4_K", "Q6_K"]
            .map(String::from)
            .to_vec(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--json" => o.json = true,
            // A smoke run: every step, tiny sizes.
            "--quick" => {
                (o.n_prompt, o.n_gen, o.repetitions) = (64, 16, 1);
            }
            "-r" => o.repetitions = number(value()?)?,
            "--threads" => {
                o.threads = value()?.split(',').map(number).collect::<Result<_, _>>()?;
            }
            "--models" => o.models = value()?.split(',').map(String::from).collect(),
            _ => return Err(USAGE.into()),
        }
    }
    Ok(o)
}

fn number(s: &str) -> Result<usize, String> {
    s.parse()
        .map_err(|_| format!("not a count: {s:?}\n{USAGE}"))
}

/// One timed test of one program: tokens/s and its spread, peak RSS of the process.
#[derive(Clone, Copy)]
struct Measured {
    tokens_per_second: f64,
    stddev: f64,
}

pub fn run(args: &[String]) -> Result<(), String> {
    let o = parse(args)?;
    let root = dist::workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run_status(
        Command::new(&cargo).current_dir(&root).args([
            "build",
            "--release",
            "-p",
            "runtime",
            "-p",
            "packer",
        ]),
        "cargo build --release",
    )?;
    let release = dist::target_dir(&root).join("release");
    let ours = release.join("llamafile");
    let llama = llama_cpp()?;
    let models = models(&o.models)?;

    let mut rows = Vec::new();
    for (i, (label, path)) in models.iter().enumerate() {
        for &t in &o.threads {
            let ours_cmd = || {
                let mut c = Command::new(&ours);
                c.arg("-m").arg(path).arg("--bench").arg("--json");
                c.args(["-p", &o.n_prompt.to_string(), "-n", &o.n_gen.to_string()]);
                // -r is llama.cpp's reverse prompt; llama-bench's -r is --repetitions here.
                c.args(["--repetitions", &o.repetitions.to_string()]);
                c.args(["-t", &t.to_string()]);
                c
            };
            let theirs_cmd = || {
                let mut c = Command::new(llama.join("llama-bench"));
                c.arg("-m").arg(path).args(["-o", "json"]);
                c.args(["-p", &o.n_prompt.to_string(), "-n", &o.n_gen.to_string()]);
                c.args(["-r", &o.repetitions.to_string(), "-t", &t.to_string()]);
                c
            };
            eprintln!("bench: {label}, {t} thread(s)");
            // Alternate who goes first, so that neither always runs on a warmer machine.
            let (a, b) = if (i + t) % 2 == 0 {
                let a = measure(&mut ours_cmd(), "llamafile --bench")?;
                (a, measure(&mut theirs_cmd(), "llama-bench")?)
            } else {
                let b = measure(&mut theirs_cmd(), "llama-bench")?;
                (measure(&mut ours_cmd(), "llamafile --bench")?, b)
            };
            for (test, n_prompt, n_gen) in [
                (format!("pp{}", o.n_prompt), o.n_prompt, 0),
                (format!("tg{}", o.n_gen), 0, o.n_gen),
            ] {
                let (x, y) = (
                    result(&a.0, n_prompt, n_gen)?,
                    result(&b.0, n_prompt, n_gen)?,
                );
                rows.push(json!({
                    "model": label, "threads": t, "test": test,
                    "ours_ts": x.tokens_per_second, "ours_stddev": x.stddev,
                    "llama_cpp_ts": y.tokens_per_second, "llama_cpp_stddev": y.stddev,
                    "ratio": x.tokens_per_second / y.tokens_per_second,
                    "ours_peak_rss_mib": a.1, "llama_cpp_peak_rss_mib": b.1,
                }));
            }
        }
    }
    let ttft = time_to_first_token(&root, &release, &llama, &models)?;
    let report = json!({"throughput": rows, "time_to_first_token": ttft});
    if o.json {
        println!("{report:#}");
    } else {
        print_table(&report);
    }
    Ok(())
}

/// Runs a benchmark command; its stdout parsed as JSON and its peak RSS in MiB.
fn measure(cmd: &mut Command, what: &str) -> Result<(Value, f64), String> {
    let (stdout, rss) = run_capturing(cmd, what)?;
    let v: Value = serde_json::from_slice(&stdout)
        .map_err(|e| format!("{what}: its output is not JSON ({e})"))?;
    Ok((v, rss))
}

/// Finds the test with these sizes in llama-bench-style JSON (both programs write that form).
fn result(v: &Value, n_prompt: usize, n_gen: usize) -> Result<Measured, String> {
    let arr = v.as_array().ok_or("bench output is not a JSON array")?;
    let hit = arr
        .iter()
        .find(|r| {
            r["n_prompt"].as_u64() == Some(n_prompt as u64)
                && r["n_gen"].as_u64() == Some(n_gen as u64)
        })
        .ok_or_else(|| format!("no result for n_prompt={n_prompt} n_gen={n_gen} in {v}"))?;
    Ok(Measured {
        tokens_per_second: hit["avg_ts"].as_f64().ok_or("avg_ts missing")?,
        stddev: hit["stddev_ts"].as_f64().unwrap_or(0.0),
    })
}

/// Spawns `cmd`, collects its stdout, and reads its peak resident memory from `wait4`'s rusage
/// (the only place the kernel reports a single child's high-water mark after it exits).
fn run_capturing(cmd: &mut Command, what: &str) -> Result<(Vec<u8>, f64), String> {
    use std::io::Read;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {what}: {e}"))?;
    let mut out = Vec::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_end(&mut out)
        .map_err(|e| format!("reading {what}: {e}"))?;
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in; the pid is our own unreaped child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: as above.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if r != pid {
        return Err(format!(
            "waiting for {what}: {}",
            std::io::Error::last_os_error()
        ));
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("{what} failed (wait status {status})"));
    }
    // Linux reports ru_maxrss in KiB.
    Ok((out, usage.ru_maxrss as f64 / 1024.0))
}

fn run_status(cmd: &mut Command, what: &str) -> Result<(), String> {
    let st = cmd.status().map_err(|e| format!("running {what}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({st})"))
    }
}

/// The models by label (`qwen`, `gemma`, or a llama-synth type), fetched or made if missing.
fn models(labels: &[String]) -> Result<Vec<(String, PathBuf)>, String> {
    let real = fetch_models::default_dir()?;
    fetch_models::run(&["--dir".to_string(), real.display().to_string()])?;
    labels
        .iter()
        .map(|l| {
            let path = match l.as_str() {
                "qwen" | "gemma" => real.join(format!("{l}.gguf")),
                ty => llama_synth::dir(&real).join(format!("llama-synth-{ty}.gguf")),
            };
            if path.is_file() {
                Ok((l.clone(), path))
            } else {
                Err(format!("model {l:?}: {} does not exist", path.display()))
            }
        })
        .collect()
}

/// The directory holding llama.cpp's `llama-bench` and `llama-completion`, built on first use.
fn llama_cpp() -> Result<PathBuf, String> {
    let cache = fetch_models::default_dir()?
        .parent()
        .ok_or("the models directory has no parent")?
        .join(format!("llama.cpp-{LLAMA_CPP_PYTHON}"));
    let bin = cache.join("build/bin");
    if bin.join("llama-bench").is_file() && bin.join("llama-completion").is_file() {
        return Ok(bin);
    }
    prerequisites::install_missing(&[&prerequisites::LLAMA_CPP_BUILD], "bench")?;
    let src = cache.join(format!(
        "llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp"
    ));
    if !src.join("CMakeLists.txt").is_file() {
        eprintln!("bench: downloading the llama-cpp-python {LLAMA_CPP_PYTHON} sdist from PyPI");
        std::fs::create_dir_all(&cache).map_err(|e| format!("{}: {e}", cache.display()))?;
        run_status(
            Command::new("python3")
                .args(["-m", "pip", "download", "--no-deps", "--no-binary", ":all:"])
                .arg(format!("llama-cpp-python=={LLAMA_CPP_PYTHON}"))
                .arg("-d")
                .arg(&cache),
            "pip download llama-cpp-python",
        )?;
        run_status(
            Command::new("tar")
                .arg("xzf")
                .arg(cache.join(format!("llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz")))
                .arg("-C")
                .arg(&cache),
            "tar xzf (the sdist)",
        )?;
    }
    eprintln!("bench: building llama.cpp's llama-bench (once; minutes)");
    let build = cache.join("build");
    let mut configure = Command::new("cmake");
    configure.arg("-S").arg(&src).arg("-B").arg(&build);
    configure.args([
        "-DCMAKE_BUILD_TYPE=Release",
        // As the issue's figures were measured: tuned for this CPU.
        "-DGGML_NATIVE=ON",
        "-DLLAMA_CURL=OFF",
        "-DBUILD_SHARED_LIBS=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_SERVER=OFF",
    ]);
    run_status(&mut configure, "cmake (configure llama.cpp)")?;
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    run_status(
        Command::new("cmake").arg("--build").arg(&build).args([
            "--target",
            "llama-bench",
            "llama-completion",
            "-j",
            &jobs.to_string(),
        ]),
        "cmake --build (llama.cpp)",
    )?;
    Ok(bin)
}

/// Launch to the first generated token on stdout, median of 5 runs, for a native and a
/// universal llamafile of the first real model (packed with the runtime as `dist` builds it),
/// and for llama-completion on its GGUF.
fn time_to_first_token(
    root: &Path,
    release: &Path,
    llama: &Path,
    models: &[(String, PathBuf)],
) -> Result<Value, String> {
    let Some((label, gguf)) = models.iter().find(|(l, _)| l == "qwen" || l == "gemma") else {
        return Ok(Value::Null);
    };
    let runtime = dist::host_runtime(root)?;
    let dir = release.join("bench");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for kind in ["native", "universal"] {
        let out = dir.join(format!("{label}-{kind}.llamafile"));
        let mut pack = Command::new(release.join("llamafile-pack"));
        pack.arg("build")
            .arg(gguf)
            .arg("-o")
            .arg(&out)
            .arg("--runtime")
            .arg(&runtime);
        if kind == "native" {
            pack.arg("--native");
        }
        run_status(pack.stdout(Stdio::null()), "llamafile-pack build")?;
        files.push((kind, out));
    }
    let args = ["-n", "1", "--temp", "0", "-t", "2", "-p", TTFT_PROMPT];
    let median = |mut cmd: Command, what: &str| -> Result<f64, String> {
        let mut times = Vec::new();
        // One untimed run first: the page cache then holds the weights for both programs alike.
        for i in 0..6 {
            let ms = first_token_ms(&mut cmd, what)?;
            if i > 0 {
                times.push(ms);
            }
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    };
    let mut out = serde_json::Map::new();
    out.insert("model".into(), json!(label));
    for (kind, file) in &files {
        let mut c = Command::new(file);
        c.args(args);
        out.insert(
            format!("ours_{kind}_ms"),
            json!(median(c, "the packed llamafile")?),
        );
    }
    let mut c = Command::new(llama.join("llama-completion"));
    c.arg("-m")
        .arg(gguf)
        .args(["-no-cnv", "--no-warmup"])
        .args(args);
    out.insert("llama_cpp_ms".into(), json!(median(c, "llama-completion")?));
    Ok(Value::Object(out))
}

/// Milliseconds from starting `cmd` (which echoes [`TTFT_PROMPT`], as both programs do) to the
/// first byte after the echoed prompt on its stdout; the program must then exit successfully.
fn first_token_ms(cmd: &mut Command, what: &str) -> Result<f64, String> {
    use std::io::Read;
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {what}: {e}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let (mut out, mut buf) = (Vec::new(), [0u8; 4096]);
    let mut first = None;
    loop {
        let n = stdout
            .read(&mut buf)
            .map_err(|e| format!("reading {what}: {e}"))?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        let after_prompt = |p: usize| out.len() > p + TTFT_PROMPT.len();
        if first.is_none() && find(&out, TTFT_PROMPT.as_bytes()).is_some_and(after_prompt) {
            first = Some(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {what}: {e}"))?;
    if !status.success() {
        return Err(format!("{what} failed ({status})"));
    }
    first.ok_or_else(|| {
        format!(
            "{what} printed no token after the prompt: {:?}",
            String::from_utf8_lossy(&out)
        )
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn print_table(report: &Value) {
    println!("| model | threads | test | llamafile-rs t/s | llama.cpp t/s | ratio | peak RSS MiB (ours / llama.cpp) |");
    println!("| --- | ---: | --- | ---: | ---: | ---: | ---: |");
    for r in report["throughput"].as_array().into_iter().flatten() {
        println!(
            "| {} | {} | {} | {:.2} ± {:.2} | {:.2} ± {:.2} | {:.2} | {:.0} / {:.0} |",
            r["model"].as_str().unwrap_or("?"),
            r["threads"],
            r["test"].as_str().unwrap_or("?"),
            r["ours_ts"].as_f64().unwrap_or(0.0),
            r["ours_stddev"].as_f64().unwrap_or(0.0),
            r["llama_cpp_ts"].as_f64().unwrap_or(0.0),
            r["llama_cpp_stddev"].as_f64().unwrap_or(0.0),
            r["ratio"].as_f64().unwrap_or(0.0),
            r["ours_peak_rss_mib"].as_f64().unwrap_or(0.0),
            r["llama_cpp_peak_rss_mib"].as_f64().unwrap_or(0.0),
        );
    }
    let t = &report["time_to_first_token"];
    if !t.is_null() {
        println!(
            "\ntime to first token ({}, 16-token prompt, launch to the first generated token on stdout, median of 5): \
             native llamafile {:.0} ms, universal llamafile {:.0} ms, llama.cpp (llama-completion) {:.0} ms",
            t["model"].as_str().unwrap_or("?"),
            t["ours_native_ms"].as_f64().unwrap_or(0.0),
            t["ours_universal_ms"].as_f64().unwrap_or(0.0),
            t["llama_cpp_ms"].as_f64().unwrap_or(0.0),
        );
    }
}
