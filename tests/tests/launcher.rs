//! Hostile conditions for the universal launcher and the packer (issue 6), through the real
//! `llamafile-pack` and `llamafile`: a tampered, truncated or half-extracted runtime in the cache
//! is never run, an unusable cache falls back to `$TMPDIR`, a damaged file says so, and a build
//! that fails or is interrupted leaves the output and the inputs as they were. The model is the
//! tiny llama-synth one: what runs is the runtime's tokenizer, which needs no forward pass.

use std::fs::{self, File};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use e2e::files::{sha256, sparse_gguf};
use e2e::{bin, llama_synth};

/// A test's own directory, `CARGO_TARGET_TMPDIR/launcher-e2e/<pid>/<name>`, removed when the
/// test ends (it holds copies of the runtime, tens of MB each). Directories of earlier runs whose
/// process is gone are removed first.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("launcher-e2e");
        for e in fs::read_dir(&base).into_iter().flatten().flatten() {
            if !Path::new("/proc").join(e.file_name()).exists() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        let dir = base.join(std::process::id().to_string()).join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn synth() -> PathBuf {
    llama_synth("Q8_0")
}

fn pack(args: &[&Path]) -> Output {
    let mut cmd = Command::new(bin("llamafile-pack"));
    cmd.arg("build");
    for a in args {
        cmd.arg(a);
    }
    cmd.output().expect("run llamafile-pack")
}

/// Packs llama-synth with the freshly built runtime into a universal file.
fn universal(dir: &Path) -> PathBuf {
    let out = dir.join("synth.llamafile");
    let o = pack(&[
        &synth(),
        Path::new("-o"),
        &out,
        Path::new("--runtime"),
        &bin("llamafile"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// Runs the universal file (through the kernel, so /bin/sh) with its cache and temporary
/// directory under `dir`.
fn launch(file: &Path, dir: &Path) -> Command {
    let mut c = Command::new(file);
    c.env("XDG_CACHE_HOME", dir.join("cache"))
        .env("TMPDIR", dir.join("tmp"))
        .args(["--tokenize", "-p", "Hello world"])
        .stdin(Stdio::null());
    c
}

/// The token ids the runtime prints for the launch's prompt, run directly on the GGUF.
fn reference_tokens() -> String {
    let out = Command::new(bin("llamafile"))
        .arg("-m")
        .arg(synth())
        .args(["--tokenize", "-p", "Hello world"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn assert_runs(c: &mut Command, want: &str) {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
}

/// A script that leaves `marker` behind if it is ever run (as the runtime would be).
fn evil(marker: &Path) -> Vec<u8> {
    format!("#!/bin/sh\ntouch '{}'\necho 'tampered'\n", marker.display()).into_bytes()
}

fn write_exe(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn tampered_truncated_and_half_extracted_runtimes_are_never_run() {
    let scratch = Scratch::new("tamper");
    let dir = scratch.0.as_path();
    let file = universal(dir);
    let want = reference_tokens();
    let runtime = fs::read(bin("llamafile")).unwrap();
    let entry = dir
        .join("cache/llamafile-rs")
        .join(sha256(&bin("llamafile")));
    let cached = entry.join("llamafile");
    let marker = dir.join("MARKER");

    assert_runs(&mut launch(&file, dir), &want);
    assert_eq!(fs::read(&cached).unwrap(), runtime, "first extraction");

    let mut flipped = runtime.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    let cases: [(&str, Vec<u8>); 4] = [
        ("a script in its place", evil(&marker)),
        ("truncated", runtime[..runtime.len() / 3].to_vec()),
        ("one byte changed", flipped),
        ("a script appended", [&runtime[..], &evil(&marker)].concat()),
    ];
    for (what, bytes) in cases {
        write_exe(&cached, &bytes);
        assert_runs(&mut launch(&file, dir), &want);
        assert!(!marker.exists(), "{what}: the tampered runtime ran");
        assert!(
            fs::read(&cached).unwrap() == runtime,
            "{what}: the cache was not restored"
        );
    }
    // Not executable (say, copied without its mode): replaced too.
    fs::set_permissions(&cached, fs::Permissions::from_mode(0o644)).unwrap();
    assert_runs(&mut launch(&file, dir), &want);
    assert_eq!(
        fs::metadata(&cached).unwrap().permissions().mode() & 0o111,
        0o111
    );

    // An extraction killed half way left its temporary file, and no runtime: the next launch
    // extracts afresh, never runs the half file, and removes it once it is old.
    fs::remove_file(&cached).unwrap();
    let stale = entry.join("llamafile.4242.tmp");
    write_exe(&stale, &evil(&marker));
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();
    // One a launch may still be writing right now: left alone.
    let fresh = entry.join("llamafile.4243.tmp");
    write_exe(&fresh, &runtime[..1000]);
    assert_runs(&mut launch(&file, dir), &want);
    assert!(!marker.exists(), "the half-extracted file ran");
    assert_eq!(fs::read(&cached).unwrap(), runtime);
    assert!(!stale.exists(), "the old temporary file is still there");
    assert!(fresh.exists(), "a recent temporary file was removed");
}

#[test]
fn an_unusable_cache_falls_back_to_tmpdir() {
    let scratch = Scratch::new("fallback");
    let dir = scratch.0.as_path();
    let file = universal(dir);
    let want = reference_tokens();
    // A cache "directory" under a regular file can be neither made nor written, even by root.
    let blocker = dir.join("not-a-dir");
    fs::write(&blocker, b"").unwrap();
    assert_runs(
        launch(&file, dir).env("XDG_CACHE_HOME", blocker.join("cache")),
        &want,
    );
    let uid = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
    let base = dir.join("tmp").join(format!("llamafile-rs-{}", uid.trim()));
    let extracted = base.join(sha256(&bin("llamafile"))).join("llamafile");
    assert_eq!(
        fs::read(&extracted).unwrap(),
        fs::read(bin("llamafile")).unwrap()
    );
    assert_eq!(
        fs::metadata(&base).unwrap().permissions().mode() & 0o777,
        0o700,
        "the fallback directory is not private"
    );
    // The fallback is checked as the cache is.
    let marker = dir.join("MARKER");
    write_exe(&extracted, &evil(&marker));
    assert_runs(
        launch(&file, dir).env("XDG_CACHE_HOME", blocker.join("cache")),
        &want,
    );
    assert!(!marker.exists());
}

#[test]
fn a_damaged_file_refuses_to_run_and_says_so() {
    let scratch = Scratch::new("damaged");
    let dir = scratch.0.as_path();
    let file = universal(dir);
    // One byte in the middle of the runtime entry (the launcher says where it starts).
    let script = fs::read(&file).unwrap();
    let head = String::from_utf8_lossy(&script[..4096]);
    let line = head
        .lines()
        .find(|l| l.contains(") start="))
        .expect("the launcher's case line");
    let field = |k: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{k} in {line}"))
    };
    let at = field("start=") - 1 + field("size=") / 2;
    let f = File::options().read(true).write(true).open(&file).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 1], at).unwrap();
    drop(f);
    let out = launch(&file, dir).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty());
    assert!(
        err.contains("this file is damaged") && err.contains("download it again"),
        "{err}"
    );
    // Nothing was left to run later.
    let entry = dir
        .join("cache/llamafile-rs")
        .join(sha256(&bin("llamafile")));
    let left: Vec<_> = fs::read_dir(&entry).map_or(Vec::new(), |d| d.flatten().collect());
    assert!(left.is_empty(), "{left:?}");
}

/// Size and modification time of each file.
fn stamps(paths: &[&Path]) -> Vec<(u64, SystemTime)> {
    paths
        .iter()
        .map(|p| {
            let m = fs::metadata(p).unwrap();
            (m.len(), m.modified().unwrap())
        })
        .collect()
}

fn temporaries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

#[test]
fn failed_builds_leave_the_output_and_the_inputs_as_they_were() {
    let scratch = Scratch::new("pack");
    let dir = scratch.0.as_path();
    // Inputs of its own, so that their times can be compared.
    let model = dir.join("model.gguf");
    fs::copy(synth(), &model).unwrap();
    let runtime = dir.join("llamafile");
    fs::copy(bin("llamafile"), &runtime).unwrap();
    let inputs = [model.as_path(), runtime.as_path()];
    let (model_sha, runtime_sha) = (sha256(&model), sha256(&runtime));
    let before = stamps(&inputs);

    let out = dir.join("out.llamafile");
    let ok = pack(&[
        &model,
        Path::new("-o"),
        &out,
        Path::new("--runtime"),
        &runtime,
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let good = fs::read(&out).unwrap();
    assert_eq!(stamps(&inputs), before, "an input was touched");
    assert_eq!(
        (sha256(&model), sha256(&runtime)),
        (model_sha.clone(), runtime_sha.clone())
    );

    let truncated = dir.join("truncated.gguf");
    fs::write(&truncated, &fs::read(&model).unwrap()[..100_000]).unwrap();
    let link = dir.join("link.gguf");
    std::os::unix::fs::symlink(&model, &link).unwrap();
    let missing = dir.join("no-such-runtime");
    let rt = Path::new("--runtime");
    let o = Path::new("-o");
    for (what, args, needle) in [
        (
            "a missing runtime",
            vec![&*model, o, &out, rt, &missing],
            "no-such-runtime",
        ),
        (
            "a truncated GGUF",
            vec![&*truncated, o, &out, rt, &runtime],
            "truncated.gguf",
        ),
        (
            "a runtime that is no executable",
            vec![&*model, o, &out, rt, &model],
            "not an executable",
        ),
        (
            "the output onto the model",
            vec![&*model, o, &model, rt, &runtime],
            "refusing to overwrite an input",
        ),
        (
            "the output onto the runtime",
            vec![&*model, o, &runtime, rt, &runtime],
            "refusing to overwrite an input",
        ),
        (
            "the output onto a link to the model",
            vec![&*model, o, &link, rt, &runtime],
            "refusing to overwrite an input",
        ),
        (
            "the output onto a directory",
            vec![&*model, o, &dir, rt, &runtime],
            "is a directory",
        ),
    ] {
        let r = pack(&args);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{what}: accepted");
        assert!(err.contains(needle), "{what}: {err}");
        assert!(
            fs::read(&out).unwrap() == good,
            "{what}: the old output changed"
        );
        assert_eq!(stamps(&inputs), before, "{what}: an input was touched");
        assert_eq!(temporaries(dir), Vec::<String>::new(), "{what}");
    }
    assert_eq!((sha256(&model), sha256(&runtime)), (model_sha, runtime_sha));
}

#[test]
fn an_interrupted_build_leaves_no_temporary_file_and_the_old_output() {
    let scratch = Scratch::new("interrupt");
    let dir = scratch.0.as_path();
    let model = dir.join("big.gguf");
    // 8 GiB, almost all hole: one F32 tensor whose data is never written.
    sparse_gguf(&model, &[("big.weight", &[8 << 28])]);
    let out = dir.join("out.llamafile");
    fs::write(&out, b"the previous build").unwrap();
    let mut child = Command::new(bin("llamafile-pack"))
        .arg("build")
        .arg(&model)
        .arg("-o")
        .arg(&out)
        .arg("--runtime")
        .arg(bin("llamafile"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Ctrl-C once it is writing: its temporary file is there.
    let start = Instant::now();
    while temporaries(dir).is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build ended before it could be interrupted"
        );
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no temporary file"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status}");
    assert_eq!(fs::read(&out).unwrap(), b"the previous build");
    assert_eq!(temporaries(dir), Vec::<String>::new());
}

/// A universal build stops, naming the platforms it has no runtime for, rather than quietly
/// making a file that fails there; runtimes named with --runtime are what the user asked for.
#[test]
fn a_universal_build_stops_when_a_platform_has_no_runtime() {
    let scratch = Scratch::new("missing-platforms");
    let dir = &scratch.0;
    let packer = dir.join("llamafile-pack");
    // The packer of a plain `cargo build` carries no runtimes; the host's is beside it.
    fs::copy(bin("llamafile-pack"), &packer).unwrap();
    fs::copy(bin("llamafile"), dir.join("llamafile")).unwrap();
    let out = Command::new(&packer)
        .arg("build")
        .arg(synth())
        .arg("-o")
        .arg(dir.join("a.llamafile"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(!dir.join("a.llamafile").exists());
    let (missing, rest) = stderr
        .split_once("no runtime for ")
        .and_then(|(_, said)| said.split_once(':'))
        .unwrap_or_else(|| panic!("{stderr}"));
    for platform in ["linux-aarch64", "darwin-aarch64", "darwin-x86_64"] {
        assert!(missing.contains(platform), "{platform}: {stderr}");
    }
    assert!(!missing.contains("linux-x86_64"), "{stderr}");
    assert!(rest.contains("--runtime"), "{stderr}");
    let named = pack(&[
        &synth(),
        Path::new("-o"),
        &dir.join("b.llamafile"),
        Path::new("--runtime"),
        &bin("llamafile"),
    ]);
    assert!(named.status.success());
    assert!(!String::from_utf8_lossy(&named.stderr).contains("warning"));
}
