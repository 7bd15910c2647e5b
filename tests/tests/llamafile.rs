//! Single-file llamafiles end to end (issue 3): Qwen2.5 Coder 0.5B packed by the real
//! `llamafile-pack` into a universal file (sh launcher + runtimes) and a native one (runtime ELF +
//! payload), run the way users run them, checked against `llamafile -m qwen.gguf`.
//!
//! The x86_64 runtime is the freshly built `target/<profile>/llamafile`; the aarch64 one is
//! `target/dist/llamafile-aarch64-unknown-linux-gnu` from `cargo xtask dist`, packed when present
//! and run under qemu-aarch64. Generations are short and greedy, on 2 threads.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use e2e::agreement::{self, Agreement};
use e2e::files::{sha256, sparse_gguf};
use e2e::{bin, fixtures, json_stdout, llamafile, models_dir};
use serde_json::Value;

const PROMPT: &str = "The capital of France is";
const THREADS: &str = "2";
/// Greedy tokens compared everywhere (the `.args` tests use prefixes of them).
const N_TOKENS: usize = 8;
/// Under emulation a token takes seconds.
const QEMU_TOKENS: usize = 4;
const AARCH64: &str = "aarch64-unknown-linux-gnu";

/// What every test shares: the packed files and the reference tokens, made once per run.
struct Packed {
    /// This test process's scratch directory.
    work: PathBuf,
    /// The universal and native files, in a directory whose name has a space.
    universal: PathBuf,
    native: PathBuf,
    /// The aarch64 runtime packed into the universal file, when `cargo xtask dist` built one.
    aarch64: Option<PathBuf>,
    /// `llamafile -m qwen.gguf -p PROMPT --temp 0 -n 8`.
    reference: Vec<u64>,
}

fn packed() -> &'static Packed {
    static PACKED: OnceLock<Packed> = OnceLock::new();
    PACKED.get_or_init(|| {
        let work = scratch_dir();
        let spaced = work.join("dir with space");
        fs::create_dir_all(&spaced).unwrap();
        let aarch64 = dist_runtime(AARCH64);
        let mut runtimes = vec![bin("llamafile")];
        runtimes.extend(aarch64.clone());
        let universal = spaced.join("qwen.llamafile");
        pack(&universal, &runtimes, false, &[]);
        let native = spaced.join("qwen-native.llamafile");
        pack(&native, &[bin("llamafile")], true, &[]);
        let reference = tokens(&llamafile(&strs(&greedy(&["-m", s(&qwen())], N_TOKENS))));
        assert_eq!(reference.len(), N_TOKENS, "reference run: {reference:?}");
        Packed {
            work,
            universal,
            native,
            aarch64,
            reference,
        }
    })
}

/// `CARGO_TARGET_TMPDIR/llamafile-e2e/<pid>`, emptied; directories of earlier runs whose process
/// is gone are removed (each holds several copies of the model).
fn scratch_dir() -> PathBuf {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("llamafile-e2e");
    if let Ok(entries) = fs::read_dir(&base) {
        for e in entries.flatten() {
            let pid = e.file_name().to_string_lossy().into_owned();
            if !Path::new("/proc").join(&pid).exists() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = base.join(std::process::id().to_string());
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn qwen() -> PathBuf {
    models_dir().join("qwen.gguf")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// `target/dist/llamafile-<triple>`, if `cargo xtask dist` made it.
fn dist_runtime(triple: &str) -> Option<PathBuf> {
    e2e::dist(&format!("llamafile-{triple}"))
}

/// `llamafile-pack build qwen.gguf -o OUT --runtime R... [--native] [-- ARGS]`.
fn pack(out: &Path, runtimes: &[PathBuf], native: bool, args: &[&str]) {
    pack_model(&qwen(), out, runtimes, native, args);
}

fn pack_model(model: &Path, out: &Path, runtimes: &[PathBuf], native: bool, args: &[&str]) {
    let mut cmd = Command::new(bin("llamafile-pack"));
    cmd.arg("build").arg(model).arg("-o").arg(out);
    for r in runtimes {
        cmd.arg("--runtime").arg(r);
    }
    if native {
        cmd.arg("--native");
    }
    if !args.is_empty() {
        cmd.arg("--").args(args);
    }
    ok(&mut cmd);
}

/// The arguments of a greedy run of `n` tokens after `extra`.
fn greedy(extra: &[&str], n: usize) -> Vec<String> {
    let mut v: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
    v.extend(
        ["-p", PROMPT, "--temp", "0", "--json", "-t", THREADS, "-n"]
            .iter()
            .map(|a| a.to_string()),
    );
    v.push(n.to_string());
    v
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Runs `cmd`, failing the test with its output unless it succeeds.
fn ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn tokens(out: &Output) -> Vec<u64> {
    json_stdout(out)["tokens"]
        .as_array()
        .expect("tokens array")
        .iter()
        .map(|t| t.as_u64().expect("token id"))
        .collect()
}

/// A llamafile started as a program: its launcher caches runtimes under the scratch directory,
/// not the user's ~/.cache.
fn launch(program: impl AsRef<std::ffi::OsStr>, p: &Packed, cwd: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(cwd)
        .env("XDG_CACHE_HOME", p.work.join("cache"));
    cmd
}

/// A test's own directory under the scratch directory, removed when the test ends (its files are
/// copies of the model, hundreds of MB each).
struct Scratch(PathBuf);

impl Scratch {
    fn new(p: &Packed, name: &str) -> Scratch {
        let dir = p.work.join(name);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn elsewhere(p: &Packed) -> PathBuf {
    let d = p.work.join("elsewhere");
    fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn universal_and_native_files_give_the_reference_tokens_from_anywhere() {
    let p = packed();
    let other = elsewhere(p);
    let bin_dir = p.work.join("bin");
    fs::create_dir_all(&bin_dir).unwrap();
    for (file, link) in [(&p.universal, "qwen"), (&p.native, "qwen-native")] {
        let name = file.file_name().unwrap().to_str().unwrap();
        let want = &p.reference;
        // By its absolute path (which has a space), from another directory.
        let out = ok(launch(file, p, &other).args(greedy(&[], N_TOKENS)));
        assert_eq!(&tokens(&out), want, "{name} from another directory");

        // By a relative path from its own directory.
        let dir = file.parent().unwrap();
        let out = ok(launch("sh", p, dir)
            .args(["-c", &format!("exec ./{name} \"$@\""), "sh"])
            .args(greedy(&[], N_TOKENS)));
        assert_eq!(&tokens(&out), want, "./{name} from its directory");

        // Through a relative symlink found on PATH.
        let l = bin_dir.join(link);
        let _ = fs::remove_file(&l);
        std::os::unix::fs::symlink(Path::new("../dir with space").join(name), &l).unwrap();
        let path = format!(
            "{}:{}",
            s(&bin_dir),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = ok(launch(link, p, &other)
            .env("PATH", path)
            .args(greedy(&[], N_TOKENS)));
        assert_eq!(&tokens(&out), want, "{name} through a symlink on PATH");

        // As the model of a runtime: `-m FILE.llamafile` maps the GGUF inside it.
        let out = llamafile(&strs(&greedy(&["-m", s(file)], N_TOKENS)));
        assert_eq!(&tokens(&out), want, "llamafile -m {name}");
    }
}

#[test]
fn default_args_apply_user_args_override_and_dots_splice() {
    let p = packed();
    let scratch = Scratch::new(p, "args");
    let dir = &scratch.0;
    let other = elsewhere(p);
    let run = |file: &Path, args: &[&str]| -> Vec<u64> {
        tokens(&ok(launch(file, p, &other).args(args)))
    };

    // Defaults alone; mode flags (--json) in .args work too. Universal: through the launcher.
    let defaults = dir.join("defaults.llamafile");
    pack(
        &defaults,
        &[bin("llamafile")],
        false,
        &["-n", "3", "--temp", "0", "--json", "-t", THREADS],
    );
    assert_eq!(run(&defaults, &["-p", PROMPT]), p.reference[..3]);
    // The user's arguments come after the defaults, so theirs win.
    assert_eq!(run(&defaults, &["-p", PROMPT, "-n", "5"]), p.reference[..5]);

    // A lone `...` puts the user's arguments in the middle: the `-n 2` after it wins over theirs.
    let spliced = dir.join("spliced.llamafile");
    pack(
        &spliced,
        &[bin("llamafile")],
        true,
        &["--temp", "0", "--json", "-t", THREADS, "...", "-n", "2"],
    );
    assert_eq!(run(&spliced, &["-p", PROMPT, "-n", "5"]), p.reference[..2]);

    let inspect = ok(Command::new(bin("llamafile-pack"))
        .args(["inspect", "--json"])
        .arg(&spliced));
    let report: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(
        report["args"],
        serde_json::json!(["--temp", "0", "--json", "-t", THREADS, "...", "-n", "2"])
    );
}

/// `llamafile-pack inspect … | head`: a reader that goes away ends the output quietly.
#[test]
fn inspect_into_a_closed_pipe_says_nothing() {
    let p = packed();
    let mut child = Command::new(bin("llamafile-pack"))
        .arg("inspect")
        .arg(&p.native)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reading end closes before anything is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "{stderr}");
    assert!(out.status.success(), "{}", out.status);
}

fn inspect(file: &Path) -> Value {
    let out = ok(Command::new(bin("llamafile-pack"))
        .args(["inspect", "--json"])
        .arg(file));
    serde_json::from_slice(&out.stdout).expect("inspect --json prints JSON")
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
    }
}

#[test]
fn zip_layout_reproducibility_verify_and_extract() {
    let p = packed();
    let scratch = Scratch::new(p, "layout");
    let dir = &scratch.0;

    // Info-ZIP lists it.
    let unzip = ok(Command::new("unzip").arg("-l").arg(&p.universal));
    let listing = String::from_utf8_lossy(&unzip.stdout);
    for name in [
        "runtime/linux-x86_64",
        ".args",
        "qwen.gguf",
        "llamafile-manifest.json",
    ] {
        assert!(listing.contains(name), "unzip -l lacks {name}:\n{listing}");
    }

    // The GGUF is stored, and its data starts at a multiple of 65536 with the GGUF magic.
    for file in [&p.universal, &p.native] {
        let report = inspect(file);
        let entry = report["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "qwen.gguf")
            .unwrap_or_else(|| panic!("no qwen.gguf entry: {report}"));
        let offset = entry["data_offset"].as_u64().unwrap();
        assert_eq!(
            offset % 65536,
            0,
            "{}: data offset {offset}",
            file.display()
        );
        assert_eq!(entry["method"], 0);
        let mut magic = [0u8; 4];
        File::open(file)
            .unwrap()
            .read_exact_at(&mut magic, offset)
            .unwrap();
        assert_eq!(&magic, b"GGUF");
    }

    // Same inputs, same bytes.
    let again = dir.join("again.llamafile");
    let mut runtimes = vec![bin("llamafile")];
    runtimes.extend(p.aarch64.clone());
    pack(&again, &runtimes, false, &[]);
    assert!(
        same_bytes(&p.universal, &again),
        "packing twice gave different files"
    );

    // verify passes, then fails once one byte of the weights is flipped.
    let verify = |f: &Path| {
        Command::new(bin("llamafile-pack"))
            .arg("verify")
            .arg(f)
            .output()
            .unwrap()
    };
    let good = verify(&again);
    let text = String::from_utf8_lossy(&good.stdout);
    assert!(good.status.success() && text.contains("verified"), "{text}");
    let report = inspect(&again);
    let entry = report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "qwen.gguf")
        .unwrap()
        .clone();
    // Past the header and vocabulary (a few MB): tensor data.
    let at = entry["data_offset"].as_u64().unwrap() + entry["size"].as_u64().unwrap() / 2;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&again)
        .unwrap();
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, at).unwrap();
    f.write_all_at(&[byte[0] ^ 0x01], at).unwrap();
    drop(f);
    let bad = verify(&again);
    let text = String::from_utf8_lossy(&bad.stdout);
    assert!(
        !bad.status.success(),
        "verify passed a flipped byte:\n{text}"
    );
    assert!(
        text.contains("FAIL") && text.contains("qwen.gguf"),
        "{text}"
    );

    // extract gives back the input exactly.
    let extracted = dir.join("extracted.gguf");
    ok(Command::new(bin("llamafile-pack"))
        .arg("extract")
        .arg(&p.universal)
        .arg("-o")
        .arg(&extracted));
    let want = sha256(&qwen());
    assert_eq!(sha256(&extracted), want);
    assert_eq!(inspect(&p.universal)["model"]["sha256"], want.as_str());
}

#[test]
fn runtime_without_weights_says_how_to_pass_a_model() {
    let p = packed();
    let out = Command::new(bin("llamafile"))
        .args(["-p", "hi", "-n", "1"])
        .current_dir(elsewhere(p))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("-m MODEL.gguf") && err.contains("llamafile-pack build"),
        "{err}"
    );
}

/// `RssAnon` and `RssFile` of a running process, in bytes, and the name of its executable.
fn memory(pid: u32) -> Option<(u64, u64, String)> {
    let status = File::open(format!("/proc/{pid}/status")).ok()?;
    let (mut anon, mut file, mut name) = (None, None, String::new());
    for line in BufReader::new(status).lines() {
        let line = line.ok()?;
        let kb = || {
            line.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .map(|v| v * 1024)
        };
        if let Some(n) = line.strip_prefix("Name:") {
            name = n.trim().to_string();
        } else if line.starts_with("RssAnon:") {
            anon = kb();
        } else if line.starts_with("RssFile:") {
            file = kb();
        }
    }
    Some((anon?, file?, name))
}

#[test]
fn weights_stay_file_backed_while_generating() {
    let p = packed();
    let model_size = fs::metadata(qwen()).unwrap().len();
    // The default context (4096), 64 tokens; the launcher execs, so the pid becomes the runtime's.
    let mut child = launch(&p.universal, p, &elsewhere(p))
        .args(["-p", PROMPT, "--temp", "0", "-n", "64", "-t", THREADS])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (mut max_anon, mut generating_samples) = (0u64, 0usize);
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if let Some((anon, file, name)) = memory(child.id()) {
            // The runtime (not the launcher's sh) with the weights paged in: it is computing.
            if name == "llamafile" && file > model_size / 2 {
                generating_samples += 1;
                max_anon = max_anon.max(anon);
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "generation hangs"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(child.wait().unwrap().success());
    eprintln!(
        "RssAnon at most {} MiB over {generating_samples} samples; model {} MiB",
        max_anon >> 20,
        model_size >> 20
    );
    assert!(
        generating_samples >= 3,
        "only {generating_samples} samples caught the runtime with its weights resident"
    );
    assert!(
        max_anon < model_size / 4,
        "anonymous memory {max_anon} bytes is not under a quarter of the model ({model_size} bytes)"
    );
}

/// The aarch64 runtime runs other kernels (NEON) than the x86_64 one, which add their terms in
/// another order: it is held to llama.cpp's reference, as the x86_64 runtime is in `reference.rs`,
/// not to the x86_64 runtime's tokens (the two may part at a near tie, as any two orders may).
#[test]
fn universal_aarch64_runtime_under_qemu_agrees_with_llama_cpp() {
    let p = packed();
    assert!(
        p.aarch64.is_some(),
        "no target/dist/llamafile-{AARCH64}: `cargo xtask test` builds it (with Debian's cross \
         toolchain), or leaves this test out with `--skip aarch64`"
    );
    let qemu = Command::new("qemu-aarch64").arg("--version").output();
    assert!(
        qemu.is_ok_and(|o| o.status.success()),
        "qemu-aarch64 is needed to run the aarch64 runtime (apt-get install qemu-user)"
    );
    // The runtime exactly as the universal file carries it, run on the universal file as the
    // launcher would run it on an aarch64 machine.
    let runtime = p.work.join("runtime-aarch64");
    ok(Command::new(bin("llamafile-pack"))
        .arg("extract")
        .arg(&p.universal)
        .arg("runtime/linux-aarch64")
        .arg("-o")
        .arg(&runtime));
    // A chat case: its first greedy steps are all decided by llama.cpp with a wide margin, so
    // they are all checked.
    let fixture = fixtures().join("reference/qwen2.5-coder-0.5b-instruct/reference.jsonl");
    let case = agreement::cases(&fixture)
        .into_iter()
        .find(|c| c["id"] == "gen-chat-reverse")
        .expect("gen-chat-reverse in the Qwen fixture");
    let prompt = p.work.join("qemu-prompt.txt");
    fs::write(&prompt, case["text"].as_str().unwrap()).unwrap();
    let start = Instant::now();
    // Whatever cap this suite runs under, the aarch64 runtime is here to check its NEON kernels.
    let out = ok(Command::new("qemu-aarch64")
        .arg(&runtime)
        .arg("--llamafile-self")
        .arg(&p.universal)
        .args(agreement::run_args(s(&prompt), QEMU_TOKENS, 2))
        .env_remove("LLAMAFILE_ISA")
        .current_dir(elsewhere(p)));
    eprintln!("aarch64 under qemu: {:.1} s", start.elapsed().as_secs_f64());
    let ours = json_stdout(&out);
    assert_eq!(ours["isa"], "neon", "the aarch64 runtime's kernels");
    let mut check = Agreement::default();
    check.add(&case, &ours, QEMU_TOKENS);
    check.assert_within("Qwen on the aarch64 runtime [neon]", &agreement::QUANTIZED);
}

/// Writes a sparse GGUF: an architecture but no other metadata, and two F32
/// tensors, the second starting past 4 GiB, so the reader's bounds checks need the whole range
/// mapped. Returns its size.
fn write_big_gguf(path: &Path) -> u64 {
    // 2^30 + 2^20 f32 each: 4 GiB + 4 MiB.
    let total = sparse_gguf(
        path,
        &[
            ("big.0.weight", &[1 << 20, 1 << 10]),
            ("big.1.weight", &[1 << 20, 1]),
        ],
    );
    // A real last page, so the end of the file is data rather than a hole.
    let f = File::options().write(true).open(path).unwrap();
    f.write_all_at(&[0x40; 4096], total - 4096).unwrap();
    total
}

#[test]
fn model_over_4_gib_maps_in_the_runtime() {
    let p = packed();
    let scratch = Scratch::new(p, "big");
    let dir = &scratch.0;
    let model = dir.join("big.gguf");
    let size = write_big_gguf(&model);
    assert!(size > 1 << 32);
    let native = dir.join("big.llamafile");
    pack_model(&model, &native, &[bin("llamafile")], true, &[]);
    // The model has neither hyperparameters nor a tokenizer: the runtime must map the whole
    // entry and parse every tensor (the second one lies past 4 GiB) before it can complain.
    let check = |out: Output, how: &str| {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{how}: {err}");
        // A complaint about missing metadata (model or tokenizer keys), naming the entry; not a
        // mapping failure, nor one of the GGUF reader's ("GGUF: ...", bounds checks included).
        assert!(
            err.contains("big.llamafile!big.gguf") && err.contains("metadata"),
            "{how}: {err}"
        );
        for bad in ["cannot map", "GGUF:", "panicked"] {
            assert!(!err.contains(bad), "{how}: {err}");
        }
    };
    let direct = launch(&native, p, &elsewhere(p))
        .args(["--tokenize", "-p", "hi"])
        .output()
        .unwrap();
    check(direct, "running big.llamafile");
    let with_m = Command::new(bin("llamafile"))
        .args(["--tokenize", "-p", "hi", "-m"])
        .arg(&native)
        .output()
        .unwrap();
    check(with_m, "llamafile -m big.llamafile");
}
