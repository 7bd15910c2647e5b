//! The macOS runtimes, built on this Linux machine by `cargo xtask dist` (issue 18): what a Mac
//! asks of them, read from their bytes by the packer (`inspect --json`, `verify`: the object
//! crate, and the code signature checked page by page); the packer that carries all four
//! platforms' runtimes, used alone from an empty directory; and the universal launcher's macOS
//! branch, run here with `uname` and `sysctl` answering as a Mac's would and Linux's /proc probe
//! hidden. What only a Mac can show (that it runs there) is listed in ARCHITECTURE.md.
//!
//! Every test's name says `macos`: `cargo xtask test --skip macos` leaves them out.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use e2e::{bin, dist, llama_synth};
use serde_json::Value;

const APPLE: [(&str, &str, &str); 2] = [
    ("aarch64-apple-darwin", "darwin-aarch64", "arm64"),
    ("x86_64-apple-darwin", "darwin-x86_64", "x86_64"),
];
const LIBSYSTEM: &str = "/usr/lib/libSystem.B.dylib";

fn dist_file(name: &str) -> PathBuf {
    dist(name).unwrap_or_else(|| {
        panic!(
            "no target/dist/{name}: `cargo xtask test` builds it with `cargo xtask dist` \
             (`--skip macos` leaves these tests out)"
        )
    })
}

/// A directory of this test's own, emptied first.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("macos")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("spawn")
}

/// `inspect --json` prints one pretty-printed document.
fn json(out: &Output) -> Value {
    assert!(out.status.success(), "{}", text(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn macos_runtimes_are_signed_pie_executables_for_macos_11_linking_only_libsystem() {
    for (triple, target, cpu) in APPLE {
        let runtime = dist_file(&format!("llamafile-{triple}"));
        let out = run(Command::new(bin("llamafile-pack"))
            .arg("inspect")
            .arg("--json")
            .arg(&runtime));
        assert!(out.status.success(), "{triple}: {}", text(&out));
        let report = json(&out);
        assert_eq!(report["targets"], serde_json::json!([target]), "{report}");
        let slices = report["macos"].as_array().unwrap();
        assert_eq!(slices.len(), 1, "{report}");
        let exe = &slices[0];
        assert_eq!(exe["cpu"], cpu, "{exe}");
        assert_eq!(exe["pie"], true, "{exe}");
        let (major, minor) = exe["min_macos"].as_str().unwrap().split_once('.').unwrap();
        let min: (u32, u32) = (major.parse().unwrap(), minor.parse().unwrap());
        assert!(min <= (11, 0), "{triple} needs macOS {min:?}");
        assert_eq!(exe["libraries"], serde_json::json!([LIBSYSTEM]), "{exe}");
        assert!(exe["imports"].as_u64().unwrap() > 50, "{exe}");
        assert_eq!(exe["imports_not_from_libsystem"], serde_json::json!([]));
        let signature = &exe["signature"];
        assert!(signature["flags"]
            .as_array()
            .unwrap()
            .contains(&Value::from("adhoc")));
        let size = fs::metadata(&runtime).unwrap().len();
        let code_limit = signature["code_limit"].as_u64().unwrap();
        let page = signature["page_size"].as_u64().unwrap();
        assert!(
            code_limit < size && size - code_limit < 1 << 20,
            "{signature}"
        );
        assert_eq!(
            signature["pages"].as_u64().unwrap(),
            code_limit.div_ceil(page)
        );
        let verify = run(Command::new(bin("llamafile-pack"))
            .arg("verify")
            .arg(&runtime));
        assert!(verify.status.success(), "{}", text(&verify));
    }
}

#[test]
fn a_macos_runtime_changed_after_signing_is_refused_naming_the_page() {
    let dir = scratch("tampered");
    let (triple, _, _) = APPLE[0];
    let original = fs::read(dist_file(&format!("llamafile-{triple}"))).unwrap();

    let mut flipped = original.clone();
    flipped[3 * 4096 + 100] ^= 1;
    let flipped_path = dir.join("flipped");
    fs::write(&flipped_path, &flipped).unwrap();
    let verify = run(Command::new(bin("llamafile-pack"))
        .arg("verify")
        .arg(&flipped_path));
    assert!(!verify.status.success());
    assert!(
        text(&verify).contains("page 3 (bytes 12288..16384) does not match"),
        "{}",
        text(&verify)
    );
    // The packer will not pack it: the file would fail only on a Mac, long after.
    let pack = run(Command::new(bin("llamafile-pack"))
        .arg("build")
        .arg(llama_synth("Q8_0"))
        .arg("-o")
        .arg(dir.join("out.llamafile"))
        .arg("--runtime")
        .arg(bin("llamafile"))
        .arg("--runtime")
        .arg(&flipped_path));
    assert!(!pack.status.success());
    assert!(text(&pack).contains("page 3"), "{}", text(&pack));
    assert!(!dir.join("out.llamafile").exists());

    let mut longer = original;
    longer.extend_from_slice(b"appended");
    let longer_path = dir.join("longer");
    fs::write(&longer_path, &longer).unwrap();
    let verify = run(Command::new(bin("llamafile-pack"))
        .arg("verify")
        .arg(&longer_path));
    assert!(!verify.status.success());
    assert!(
        text(&verify).contains("bytes were added or removed after signing"),
        "{}",
        text(&verify)
    );
}

/// `--native` appends the payload to the runtime, which would put it outside a Mach-O's
/// signature: refused, pointing to the universal file.
#[test]
fn a_native_file_with_a_macos_runtime_is_refused_with_the_reason() {
    let dir = scratch("native");
    let out = run(Command::new(bin("llamafile-pack"))
        .arg("build")
        .arg(llama_synth("Q8_0"))
        .arg("-o")
        .arg(dir.join("out.llamafile"))
        .arg("--native")
        .arg("--runtime")
        .arg(dist_file("llamafile-aarch64-apple-darwin")));
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("code signature") && said.contains("universal"),
        "{said}"
    );
}

/// The packer `cargo xtask dist` made, alone in an empty directory: it lists the four runtimes it
/// carries and packs them all by default; each extracted runtime is the file dist built, byte
/// for byte (a Mac one's signature intact), and the file runs here.
#[test]
fn the_packer_alone_makes_files_for_linux_and_macos() {
    let dir = scratch("packer-alone");
    let packer = dir.join("llamafile-pack");
    fs::copy(dist_file("llamafile-pack"), &packer).unwrap();

    let listed = run(Command::new(&packer).arg("runtimes"));
    assert!(listed.status.success(), "{}", text(&listed));
    let listing = String::from_utf8_lossy(&listed.stdout).to_string();
    for target in [
        "linux-x86_64",
        "linux-aarch64",
        "darwin-x86_64",
        "darwin-aarch64",
    ] {
        assert!(listing.contains(target), "{target}: {listing}");
    }
    assert!(!listing.contains("beside it"), "{listing}");

    let file = dir.join("synth.llamafile");
    let built = run(Command::new(&packer)
        .current_dir(&dir)
        .arg("build")
        .arg(llama_synth("Q8_0"))
        .arg("-o")
        .arg(&file));
    assert!(built.status.success(), "{}", text(&built));
    let report = json(&run(Command::new(&packer)
        .arg("inspect")
        .arg("--json")
        .arg(&file)));
    let mut targets: Vec<String> = report["runtimes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["targets"].as_array().unwrap().clone())
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        [
            "darwin-aarch64",
            "darwin-x86_64",
            "linux-aarch64",
            "linux-x86_64"
        ]
    );
    for (triple, target, _) in APPLE {
        let extracted = dir.join(format!("extracted-{target}"));
        let out = run(Command::new(&packer)
            .arg("extract")
            .arg(&file)
            .arg(format!("runtime/{target}"))
            .arg("-o")
            .arg(&extracted));
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            fs::read(&extracted).unwrap()
                == fs::read(dist_file(&format!("llamafile-{triple}"))).unwrap(),
            "{target}: the extracted runtime differs from the one dist built"
        );
    }
    let verify = run(Command::new(&packer).arg("verify").arg(&file));
    let said = text(&verify);
    assert!(verify.status.success(), "{said}");
    for target in ["darwin-aarch64", "darwin-x86_64"] {
        assert!(
            said.lines().any(|l| l.starts_with("ok")
                && l.contains(&format!("runtime/{target}"))
                && l.contains("pages of")),
            "{target}: {said}"
        );
    }
    let tokens = run(Command::new(&file)
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .args(["--tokenize", "-p", "Hello world"]));
    assert!(tokens.status.success(), "{}", text(&tokens));
}

/// Runs the universal `file` as a Mac would: `uname -sm` answers `uname_sm`, `sysctl -n
/// sysctl.proc_translated` answers `translated` (Rosetta), and /proc/sys/kernel (the launcher's
/// Linux probe) is hidden in a mount namespace of its own. The Mac runtime it picks cannot run
/// here, so the launch fails at `exec`, after extracting: returns the runtime it extracted.
fn launch_as_a_mac(
    file: &Path,
    dir: &Path,
    uname_sm: &str,
    translated: &str,
    xdg_cache: Option<&Path>,
) -> PathBuf {
    let stubs = dir.join("bin");
    fs::create_dir_all(&stubs).unwrap();
    for (name, body) in [
        ("uname", format!("echo '{uname_sm}'")),
        ("sysctl", format!("echo '{translated}'")),
    ] {
        let path = stubs.join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let home = dir.join("home");
    let _ = fs::remove_dir_all(&home);
    fs::create_dir_all(&home).unwrap();
    let path = format!("{}:{}", stubs.display(), std::env::var("PATH").unwrap());
    let mut cmd = Command::new("unshare");
    cmd.args(["-r", "-m", "sh", "-c"])
        .arg("mount -t tmpfs none /proc/sys/kernel && exec bash \"$0\" --help")
        .arg(file)
        .env("PATH", path)
        .env("HOME", &home)
        .env("TMPDIR", dir.join("tmp"))
        .env_remove("XDG_CACHE_HOME");
    if let Some(cache) = xdg_cache {
        cmd.env("XDG_CACHE_HOME", cache);
    }
    let out = run(&mut cmd);
    assert!(
        !out.status.success(),
        "a Mach-O ran on Linux? {}",
        text(&out)
    );
    let cache = xdg_cache.map_or_else(
        || home.join("Library/Caches/llamafile-rs"),
        |c| c.join("llamafile-rs"),
    );
    let entries: Vec<PathBuf> = fs::read_dir(&cache)
        .unwrap_or_else(|e| panic!("{}: {e}; launcher said: {}", cache.display(), text(&out)))
        .map(|e| e.unwrap().path().join("llamafile"))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(
        text(&out).contains(entries[0].to_str().unwrap()),
        "the launcher did not exec {}: {}",
        entries[0].display(),
        text(&out)
    );
    entries[0].clone()
}

#[test]
fn the_launcher_on_macos_picks_the_runtime_and_caches_it_in_library_caches() {
    let dir = scratch("launcher");
    let file = dir.join("synth.llamafile");
    let built = run(Command::new(dist_file("llamafile-pack"))
        .arg("build")
        .arg(llama_synth("Q8_0"))
        .arg("-o")
        .arg(&file));
    assert!(built.status.success(), "{}", text(&built));
    let arm = fs::read(dist_file("llamafile-aarch64-apple-darwin")).unwrap();
    let intel = fs::read(dist_file("llamafile-x86_64-apple-darwin")).unwrap();

    // Apple Silicon.
    let got = launch_as_a_mac(&file, &dir, "Darwin arm64", "0", None);
    assert!(fs::read(&got).unwrap() == arm, "{}", got.display());
    // A shell under Rosetta says x86_64; the arm64 runtime is the native one.
    let got = launch_as_a_mac(&file, &dir, "Darwin x86_64", "1", None);
    assert!(fs::read(&got).unwrap() == arm, "{}", got.display());
    // An Intel Mac.
    let got = launch_as_a_mac(&file, &dir, "Darwin x86_64", "0", None);
    assert!(fs::read(&got).unwrap() == intel, "{}", got.display());
    // XDG_CACHE_HOME, when set, is honoured on a Mac too.
    let xdg = dir.join("xdg");
    let got = launch_as_a_mac(&file, &dir, "Darwin arm64", "0", Some(&xdg));
    assert!(got.starts_with(&xdg) && fs::read(&got).unwrap() == arm);
}
