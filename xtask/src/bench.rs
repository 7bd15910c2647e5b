//! `cargo xtask bench`: our runtime and llama.cpp measured side by side, on the same models, in
//! one run.
//!
//! llama.cpp's `llama-bench` (and `llama-completion`, for time to first token) are built once from
//! the llama-cpp-python sdist on PyPI into the user's cache, outside the repository. Then, for
//! every model, thread count, test (pp, tg) and repetition, `llamafile --bench` and `llama-bench`
//! run one after the other with the same sizes and threads, alternating which goes first, so that
//! both see the same machine; a row is the mean of its repetitions. Peak resident memory of each
//! run comes from `wait4`. Time to first token is the wall time from
//! launching a packed llamafile (native and universal, with the runtime as `cargo xtask dist`
//! builds it) to its first generated token on stdout, against `llama-completion` doing the same.
//!
//! `--isa avx2` caps ours at AVX2 (`LLAMAFILE_ISA`) and measures it against a llama.cpp built for
//! AVX2 without AVX-512, so that an AVX-512 machine can measure the AVX2 contest fairly. The
//! seed-shaped models (`mistral7b-Q4_K_M`, ...; see [`seed_shape`]) give generation at the seed's
//! scale, where a token reads every weight once: their rows add the weight bytes read per second
//! beside this machine's streaming bandwidth, measured here.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{json, Value};

use crate::{dist, fetch_models, llama_synth, prerequisites, seed_shape};

/// The llama.cpp inside llama-cpp-python 0.3.36 (commit 0c1e570), as in the issue's figures.
const LLAMA_CPP_PYTHON: &str = "0.3.36";

const USAGE: &str = "usage: cargo xtask bench [--json] [--quick] [-r N] [--threads 1,2] [--isa avx2] [-d N] \
     [--models qwen,gemma,Q4_0,Q8_0,Q4_K,Q6_K,mistral7b-Q4_K_M,...] [-p N] [-n N]\n\
     models: qwen, gemma, a llama-synth type, or mistral7b-MIX (MIX: one of the seed's twelve, Q4_K_M ...)";

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
    /// `--isa avx2`: both sides held to AVX2.
    avx2: bool,
    /// `-d`: tokens in the context before each test (llama-bench's depth).
    n_depth: usize,
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
        avx2: false,
        n_depth: 0,
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
            "-p" => o.n_prompt = number(value()?)?,
            "-n" => o.n_gen = number(value()?)?,
            "-d" => o.n_depth = number(value()?)?,
            "--isa" => match value()?.as_str() {
                "avx2" => o.avx2 = true,
                other => {
                    return Err(format!(
                        "--isa {other}: only avx2 can be asked for\n{USAGE}"
                    ))
                }
            },
            _ => return Err(USAGE.into()),
        }
    }
    Ok(o)
}

fn number(s: &str) -> Result<usize, String> {
    s.parse()
        .map_err(|_| format!("not a count: {s:?}\n{USAGE}"))
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
    let llama = llama_cpp(o.avx2)?;
    let models = models(&o.models)?;
    let mut rows = Vec::new();
    for (i, (label, path)) in models.iter().enumerate() {
        // A generated token reads every weight but the embeddings once.
        let gb_per_token = match label.starts_with("mistral7b-") {
            true => Some(weight_bytes_per_token(path)? / 1e9),
            false => None,
        };
        read_cold(&ours, path)?;
        for &t in &o.threads {
            eprintln!("bench: {label}, {t} thread(s)");
            for (n_prompt, n_gen) in [(o.n_prompt, 0), (0, o.n_gen)] {
                if n_prompt + n_gen == 0 {
                    continue;
                }
                let ours_cmd = || {
                    let mut c = Command::new(&ours);
                    if o.avx2 {
                        c.env("LLAMAFILE_ISA", "avx2");
                    }
                    c.arg("-m").arg(path).arg("--bench").arg("--json");
                    c.args(["-p", &n_prompt.to_string(), "-n", &n_gen.to_string()]);
                    // -r is llama.cpp's reverse prompt; llama-bench's -r is --repetitions here.
                    c.args(["--repetitions", "1"]);
                    c.args(["-t", &t.to_string(), "-d", &o.n_depth.to_string()]);
                    c
                };
                let theirs_cmd = || {
                    let mut c = Command::new(llama.join("llama-bench"));
                    c.arg("-m").arg(path).args(["-o", "json"]);
                    c.args(["-p", &n_prompt.to_string(), "-n", &n_gen.to_string()]);
                    c.args(["-r", "1", "-t", &t.to_string()]);
                    c.args(["-d", &o.n_depth.to_string()]);
                    c
                };
                let (mut a, mut b) = (Runs::default(), Runs::default());
                // One repetition of one test at a time, each side in turn and alternating who
                // goes first: a slow minute of a shared machine then falls on both sides alike,
                // where whole runs one after the other left it to one (the 7B rows' ratios moved
                // by a fifth between runs that way).
                for rep in 0..o.repetitions {
                    let ours = || measure(&mut ours_cmd(), "llamafile --bench", n_prompt, n_gen);
                    let theirs = || measure(&mut theirs_cmd(), "llama-bench", n_prompt, n_gen);
                    if (i + t + rep) % 2 == 0 {
                        a.add(ours()?);
                        b.add(theirs()?);
                    } else {
                        b.add(theirs()?);
                        a.add(ours()?);
                    }
                }
                let ((x, x_sd), (y, y_sd)) = (a.summary(), b.summary());
                let mut row = json!({
                    // Our row's name ("pp512 @ d4096"), which llama-bench's JSON does not carry.
                    "model": label, "threads": t, "test": a.test,
                    "ours_isa": a.isa, "llama_cpp_build": if o.avx2 { "avx2" } else { "native" },
                    "ours_ts": x, "ours_stddev": x_sd,
                    "llama_cpp_ts": y, "llama_cpp_stddev": y_sd,
                    "ratio": x / y,
                    "ours_peak_rss_mib": a.peak_rss_mib, "llama_cpp_peak_rss_mib": b.peak_rss_mib,
                });
                if let (Some(gb), true) = (gb_per_token, n_gen > 0) {
                    row["ours_gb_per_s"] = json!(gb * x);
                    row["llama_cpp_gb_per_s"] = json!(gb * y);
                }
                rows.push(row);
            }
        }
    }
    // The streaming bandwidth, for the seed-shaped rows' GB/s to be read against: measured after
    // every timed run, since a child started from here (posix_spawn shares this process's memory
    // until exec) inherits this process's peak RSS as its own, 1 GiB buffer included.
    for t in o.threads.iter().copied() {
        let mut rows = rows
            .iter_mut()
            .filter(|r| r["threads"] == t && r.get("ours_gb_per_s").is_some())
            .peekable();
        if rows.peek().is_some() {
            let stream = streaming_gb_per_s(t);
            rows.for_each(|r| r["streaming_gb_per_s"] = json!(stream));
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

/// One run of one test by one program.
struct Measured {
    /// The test's name where the program gives one (ours: "pp512 @ d4096").
    test: Value,
    /// The kernels ours ran (`isa` in `llamafile --bench --json`'s rows; llama-bench has none).
    isa: Value,
    tokens_per_second: f64,
    peak_rss_mib: f64,
}

/// Runs a benchmark command for the test of `n_prompt` prompt and `n_gen` generated tokens: its
/// row in the llama-bench-style JSON on its stdout (both programs write that form), and its peak
/// RSS in MiB.
fn measure(
    cmd: &mut Command,
    what: &str,
    n_prompt: usize,
    n_gen: usize,
) -> Result<Measured, String> {
    let (stdout, peak_rss_mib) = run_capturing(cmd, what)?;
    let v: Value = serde_json::from_slice(&stdout)
        .map_err(|e| format!("{what}: its output is not JSON ({e})"))?;
    let hit = v
        .as_array()
        .ok_or_else(|| format!("{what}: its output is not a JSON array"))?
        .iter()
        .find(|r| {
            r["n_prompt"].as_u64() == Some(n_prompt as u64)
                && r["n_gen"].as_u64() == Some(n_gen as u64)
        })
        .ok_or_else(|| format!("{what}: no result for n_prompt={n_prompt} n_gen={n_gen} in {v}"))?;
    Ok(Measured {
        test: hit["test"].clone(),
        isa: hit["isa"].clone(),
        tokens_per_second: hit["avg_ts"]
            .as_f64()
            .ok_or_else(|| format!("{what}: avg_ts missing in {hit}"))?,
        peak_rss_mib,
    })
}

/// The repetitions of one test by one program.
#[derive(Default)]
struct Runs {
    test: Value,
    isa: Value,
    tokens_per_second: Vec<f64>,
    peak_rss_mib: f64,
}

impl Runs {
    fn add(&mut self, m: Measured) {
        (self.test, self.isa) = (m.test, m.isa);
        self.tokens_per_second.push(m.tokens_per_second);
        self.peak_rss_mib = self.peak_rss_mib.max(m.peak_rss_mib);
    }

    /// Mean tokens/s and their sample standard deviation, as llama-bench reports repetitions.
    fn summary(&self) -> (f64, f64) {
        let v = &self.tokens_per_second;
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        (mean, var.sqrt())
    }
}

/// Bytes of the weights a generated token reads: every tensor but the token embeddings, of
/// which it reads one row.
fn weight_bytes_per_token(path: &Path) -> Result<f64, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: read-only map of a file this tool wrote or fetched; nothing truncates it meanwhile.
    let map =
        unsafe { memmap2::Mmap::map(&file) }.map_err(|e| format!("{}: {e}", path.display()))?;
    let g = gguf::Gguf::parse(&map).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(g.tensors
        .iter()
        .filter(|t| t.name != "token_embd.weight")
        .map(|t| t.data.len() as f64)
        .sum())
}

/// What `threads` threads read from memory per second, summing a buffer far larger than the
/// caches (best of five passes), in GB/s.
fn streaming_gb_per_s(threads: usize) -> f64 {
    const BYTES: usize = 1 << 30;
    let buffer: Vec<u64> = (0..BYTES / 8).map(|i| i as u64).collect();
    let share = buffer.len().div_ceil(threads);
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let parts: Vec<_> = buffer
                .chunks(share)
                .map(|part| {
                    s.spawn(move || {
                        // Eight independent sums, so the adds do not wait on each other.
                        let mut acc = [0u64; 8];
                        for c in part.chunks_exact(8) {
                            for k in 0..8 {
                                acc[k] = acc[k].wrapping_add(c[k]);
                            }
                        }
                        acc.iter().fold(0u64, |a, b| a.wrapping_add(*b))
                    })
                })
                .collect();
            parts
                .into_iter()
                .map(|p| p.join().unwrap())
                .fold(0, u64::wrapping_add)
        });
        std::hint::black_box(total);
        best = best.min(start.elapsed().as_secs_f64());
    }
    BYTES as f64 / best / 1e9
}

/// Drops `model`'s pages from the page cache and has our runtime read it once (untimed), as on
/// the first run after a reboot: both sides then map the same cached pages, in the 2 MiB folios our
/// loader's `MADV_HUGEPAGE` asks for (a cold read is the only time the kernel chooses them). Left
/// to chance, the cache holds whatever read or wrote the file last, and a 7B model's generation
/// moved by a fifth with it.
fn read_cold(ours: &Path, model: &Path) -> Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(model).map_err(|e| format!("{}: {e}", model.display()))?;
        // SAFETY: a valid descriptor; the advice only drops clean cached pages of this file.
        let r = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if r != 0 {
            return Err(format!(
                "{}: dropping its cached pages: {}",
                model.display(),
                std::io::Error::from_raw_os_error(r)
            ));
        }
    }
    let mut c = Command::new(ours);
    c.arg("-m")
        .arg(model)
        .args(["--bench", "--json", "-p", "0", "-n", "1"]);
    run_capturing(
        c.args(["--repetitions", "1"]),
        "llamafile --bench (reading the model cold)",
    )?;
    Ok(())
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

/// The models by label (`qwen`, `gemma`, a llama-synth type, or `mistral7b-MIX`), fetched or
/// made if missing.
fn models(labels: &[String]) -> Result<Vec<(String, PathBuf)>, String> {
    let real = fetch_models::default_dir()?;
    fetch_models::run(&["--dir".to_string(), real.display().to_string()])?;
    labels
        .iter()
        .map(|l| {
            let path = match l.as_str() {
                "qwen" | "gemma" => real.join(format!("{l}.gguf")),
                seed if seed.starts_with("mistral7b-") => {
                    seed_shape::model(&real, &seed["mistral7b-".len()..])?
                }
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

/// The directory holding llama.cpp's `llama-bench` and `llama-completion`, built on first use:
/// tuned for this CPU, or with `avx2` for AVX2 without AVX-512.
fn llama_cpp(avx2: bool) -> Result<PathBuf, String> {
    let cache = fetch_models::default_dir()?
        .parent()
        .ok_or("the models directory has no parent")?
        .join(format!("llama.cpp-{LLAMA_CPP_PYTHON}"));
    let build = cache.join(if avx2 { "build-avx2" } else { "build" });
    let bin = build.join("bin");
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
    let mut configure = Command::new("cmake");
    configure.arg("-S").arg(&src).arg("-B").arg(&build);
    if avx2 {
        configure.args([
            "-DGGML_NATIVE=OFF",
            "-DGGML_AVX=ON",
            "-DGGML_AVX2=ON",
            "-DGGML_FMA=ON",
            "-DGGML_F16C=ON",
            "-DGGML_BMI2=ON",
            "-DGGML_AVX512=OFF",
            "-DGGML_AVX512_VNNI=OFF",
            "-DGGML_AVX512_BF16=OFF",
            "-DGGML_AVX_VNNI=OFF",
        ]);
    } else {
        // As the issues' figures were measured: tuned for this CPU (AMX left out: some hosts
        // advertise it and trap on it).
        configure.args([
            "-DGGML_NATIVE=ON",
            "-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
            "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
        ]);
    }
    configure.args([
        "-DCMAKE_BUILD_TYPE=Release",
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
    println!("| model | threads | test | ISA (ours / llama.cpp build) | llamafile-rs t/s | llama.cpp t/s | ratio | peak RSS MiB (ours / llama.cpp) | weights GB/s (ours / llama.cpp / streaming) |");
    println!("| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |");
    for r in report["throughput"].as_array().into_iter().flatten() {
        let bandwidth = match r["streaming_gb_per_s"].as_f64() {
            Some(stream) => format!(
                "{:.1} / {:.1} / {stream:.1}",
                r["ours_gb_per_s"].as_f64().unwrap_or(0.0),
                r["llama_cpp_gb_per_s"].as_f64().unwrap_or(0.0)
            ),
            None => String::new(),
        };
        println!(
            "| {} | {} | {} | {} / {} | {:.2} ± {:.2} | {:.2} ± {:.2} | {:.2} | {:.0} / {:.0} | {bandwidth} |",
            r["model"].as_str().unwrap_or("?"),
            r["threads"],
            r["test"].as_str().unwrap_or("?"),
            r["ours_isa"].as_str().unwrap_or("?"),
            r["llama_cpp_build"].as_str().unwrap_or("?"),
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
