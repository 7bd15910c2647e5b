//! The universal file's sh launcher, run for real: the "runtime" for this host is a copy of
//! `/bin/echo`, so what the launcher execs prints `--llamafile-self PATH ARGS...`.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

/// Packs a universal file named `name` in `dir` with runtimes for all four platforms.
fn universal(dir: &Path, name: &str) -> PathBuf {
    let rt = dir.join("runtimes");
    fs::create_dir_all(&rt).unwrap();
    let out = dir.join(name);
    build(&synth_model(), &out, &all_runtimes(&rt), &["--", "-n", "1"]);
    out
}

fn echo_sha() -> String {
    sha256_file(Path::new("/bin/echo"))
}

/// A command with a private cache and temporary directory under `dir`.
fn cmd(program: impl AsRef<std::ffi::OsStr>, dir: &Path) -> Command {
    let mut c = Command::new(program);
    c.env("XDG_CACHE_HOME", dir.join("cache"))
        .env("TMPDIR", dir.join("tmp"))
        .stdin(Stdio::null());
    c
}

fn run(c: &mut Command) -> Output {
    c.output().unwrap()
}

/// What the echo runtime prints when the launcher passes `self_path` and `args`.
fn expected(self_path: &Path, args: &[&str]) -> String {
    let mut s = format!("--llamafile-self {}", self_path.display());
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s.push('\n');
    s
}

fn assert_ran(out: &Output, want: &str) {
    assert!(
        out.status.success(),
        "launcher failed: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

fn cached_runtime(dir: &Path) -> PathBuf {
    dir.join("cache/llamafile-rs")
        .join(echo_sha())
        .join("llamafile")
}

/// The shell must be installed: the launcher's promise is to work under each of them.
fn require(shell: &str) -> String {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {shell}"))
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "`{shell}` is not installed; the launcher tests need it (apt-get install {shell})"
    );
    String::from_utf8(found.stdout).unwrap().trim().to_string()
}

#[test]
fn runs_under_dash_bash_zsh_and_busybox() {
    let args = ["a", "b c", "d'e", "--flag=\"q\""];
    for (name, shell) in [
        ("dash", vec![require("dash")]),
        ("bash", vec![require("bash")]),
        ("zsh", vec![require("zsh")]),
        ("busybox", vec![require("busybox"), "sh".into()]),
    ] {
        let dir = test_dir(&format!("shell-{name}"));
        let file = universal(&dir, "m.llamafile");
        for round in 0..2 {
            // The first run extracts, the second uses the cache.
            let out = run(cmd(&shell[0], &dir).args(&shell[1..]).arg(&file).args(args));
            assert_ran(&out, &expected(&file, &args));
            let cached = cached_runtime(&dir);
            assert_eq!(
                fs::read(&cached).unwrap(),
                fs::read("/bin/echo").unwrap(),
                "{name} round {round}"
            );
            assert_eq!(
                fs::metadata(&cached).unwrap().permissions().mode() & 0o111,
                0o111
            );
            let entries: Vec<_> = fs::read_dir(cached.parent().unwrap()).unwrap().collect();
            assert_eq!(entries.len(), 1, "{name}: leftovers beside the runtime");
        }
    }
}

#[test]
fn runs_directly_through_symlinks_path_and_spaces() {
    let dir = test_dir("paths");
    let spaced = dir.join("dir with space");
    fs::create_dir_all(&spaced).unwrap();
    let file = universal(&spaced, "my model.llamafile");

    // Executed directly: the kernel runs /bin/sh on it.
    assert_ran(&run(cmd(&file, &dir).arg("x")), &expected(&file, &["x"]));

    // By a relative path from its own directory.
    let out = run(cmd("./my model.llamafile", &dir)
        .current_dir(&spaced)
        .arg("y"));
    assert_ran(
        &out,
        &expected(&spaced.join("./my model.llamafile"), &["y"]),
    );

    // Through an absolute and a relative symlink in another directory.
    let links = dir.join("links");
    fs::create_dir_all(&links).unwrap();
    symlink(&file, links.join("abs")).unwrap();
    symlink("../dir with space/my model.llamafile", links.join("rel")).unwrap();
    for l in ["abs", "rel"] {
        let link = links.join(l);
        assert_ran(&run(cmd(&link, &dir).arg("z")), &expected(&link, &["z"]));
    }

    // Found through PATH, by the shell (`sh -c NAME`) and by bash given a bare name.
    let path = format!("{}:/usr/bin:/bin", links.display());
    let out = run(cmd("sh", &dir)
        .env("PATH", &path)
        .arg("-c")
        .arg("rel p q")
        .current_dir("/"));
    assert_ran(&out, &expected(&links.join("rel"), &["p", "q"]));
    let out = run(cmd("bash", &dir)
        .env("PATH", &path)
        .args(["abs", "r"])
        .current_dir("/"));
    assert_ran(&out, &expected(&links.join("abs"), &["r"]));

    // Nothing is ever written beside the file (so a read-only directory is fine).
    let mut names: Vec<String> = fs::read_dir(&spaced)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["my model.llamafile", "runtimes"]);
}

#[test]
fn unwritable_cache_falls_back_to_tmpdir() {
    let dir = test_dir("fallback");
    let file = universal(&dir, "m.llamafile");
    // A cache "directory" under a regular file cannot be created, even by root.
    let blocker = dir.join("not-a-dir");
    fs::write(&blocker, b"").unwrap();
    let out = run(cmd(&file, &dir)
        .env("XDG_CACHE_HOME", blocker.join("cache"))
        .arg("t"));
    assert_ran(&out, &expected(&file, &["t"]));
    let uid = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
    let base = dir.join("tmp").join(format!("llamafile-rs-{}", uid.trim()));
    assert_eq!(
        fs::read(base.join(echo_sha()).join("llamafile")).unwrap(),
        fs::read("/bin/echo").unwrap()
    );
    assert_eq!(
        fs::metadata(&base).unwrap().permissions().mode() & 0o777,
        0o700
    );

    // No XDG_CACHE_HOME: $HOME/.cache; no HOME either: the temporary directory.
    let home = dir.join("home");
    let out = run(cmd(&file, &dir)
        .env_remove("XDG_CACHE_HOME")
        .env("HOME", &home)
        .arg("h"));
    assert_ran(&out, &expected(&file, &["h"]));
    let in_home = home
        .join(".cache/llamafile-rs")
        .join(echo_sha())
        .join("llamafile");
    assert_eq!(fs::read(in_home).unwrap(), fs::read("/bin/echo").unwrap());
    fs::remove_dir_all(&base).unwrap();
    let out = run(cmd(&file, &dir)
        .env_remove("XDG_CACHE_HOME")
        .env_remove("HOME")
        .arg("n"));
    assert_ran(&out, &expected(&file, &["n"]));
    assert!(base.join(echo_sha()).join("llamafile").is_file());
}

#[test]
fn tampered_cache_is_never_run() {
    let dir = test_dir("tamper");
    let file = universal(&dir, "m.llamafile");
    assert_ran(&run(cmd(&file, &dir).arg("1")), &expected(&file, &["1"]));
    let cached = cached_runtime(&dir);
    for evil in [
        b"#!/bin/sh\necho TAMPERED\n".to_vec(),
        // Same size as the real runtime, one byte changed: only the bytes tell.
        {
            let mut b = fs::read("/bin/echo").unwrap();
            b[1000] ^= 1;
            b
        },
    ] {
        fs::write(&cached, &evil).unwrap();
        fs::set_permissions(&cached, fs::Permissions::from_mode(0o755)).unwrap();
        assert_ran(&run(cmd(&file, &dir).arg("2")), &expected(&file, &["2"]));
        assert_eq!(fs::read(&cached).unwrap(), fs::read("/bin/echo").unwrap());
    }
}

#[test]
fn unsupported_platform_names_the_ones_it_has() {
    let dir = test_dir("unsupported");
    let other = write_exe(&dir, "other", &elf(other_arch(), 2, 0));
    let mac = write_exe(&dir, "mac", &fat_macho(&["x86_64", "aarch64"]));
    let file = dir.join("m.llamafile");
    build(&synth_model(), &file, &[other, mac], &[]);
    let out = run(&mut cmd(&file, &dir));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "llamafile: this file has runtimes for linux-{}, darwin-x86_64, darwin-aarch64, not for linux-{}\n",
            other_arch(),
            host_arch()
        )
    );
}

#[test]
fn concurrent_first_launches_all_succeed() {
    let dir = test_dir("concurrent");
    let file = universal(&dir, "m.llamafile");
    let children: Vec<_> = (0..6)
        .map(|i| {
            cmd(&file, &dir)
                .arg(i.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        assert_ran(&out, &expected(&file, &[&i.to_string()]));
    }
    let entries: Vec<_> = fs::read_dir(cached_runtime(&dir).parent().unwrap())
        .unwrap()
        .collect();
    assert_eq!(entries.len(), 1, "temporary files left behind");
}

#[test]
fn busybox_tools_alone_without_a_sha256_tool() {
    // A system with only busybox and no sha256 tool: the cache is still checked byte for byte
    // against the runtime in the file.
    let busybox = require("busybox");
    let dir = test_dir("busybox-only");
    let file = universal(&dir, "m.llamafile");
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    for tool in [
        "sh", "uname", "tail", "head", "wc", "cmp", "find", "mkdir", "chmod", "mv", "rm", "id",
        "pwd",
    ] {
        symlink(&busybox, bin.join(tool)).unwrap();
    }
    let path = bin.display().to_string();
    let go = |arg: &str| {
        run(cmd(bin.join("sh"), &dir)
            .env("PATH", &path)
            .arg(&file)
            .arg(arg))
    };
    assert_ran(&go("a"), &expected(&file, &["a"]));
    let cached = cached_runtime(&dir);
    let echo = fs::read("/bin/echo").unwrap();
    assert_eq!(fs::read(&cached).unwrap(), echo);
    // A cached file of the wrong size, or of the right size with one byte changed, is replaced.
    let mut flipped = echo.clone();
    flipped[1000] ^= 1;
    for evil in [b"#!/bin/sh\necho TAMPERED\n".to_vec(), flipped] {
        fs::write(&cached, &evil).unwrap();
        assert_ran(&go("b"), &expected(&file, &["b"]));
        assert_eq!(fs::read(&cached).unwrap(), echo);
    }
}
