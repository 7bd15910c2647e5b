//! `cargo xtask dist [--require-aarch64]`: the runtimes `llamafile-pack` packs by default, and the
//! packer, in `target/dist/`.
//!
//! Each runtime is named `llamafile-<target triple>`, the name the packer looks for beside itself.
//! Linux runtimes are linked statically (`-C target-feature=+crt-static`) so that one file runs
//! on any distribution, whatever its glibc. The flag goes to that cargo invocation only, through
//! `RUSTFLAGS` with an explicit `--target` (so build scripts and proc macros stay dynamic), and
//! each target builds in its own directory under `target/dist-build/`, so the normal build's
//! artifacts are never invalidated by the changed flags.
//!
//! On x86_64 Linux the aarch64 runtime is cross-built with Debian's packaged Rust toolchain (its
//! `rustc` ships the aarch64 standard library as a package) and `aarch64-linux-gnu-gcc` as the
//! linker; when that toolchain is missing, dist says so and builds x86_64 only, unless
//! `--require-aarch64`. On macOS it builds the two Apple targets (macOS cannot link libSystem
//! statically, so they are dynamic as every macOS program is).
//!
//! Every Linux binary is checked: it must have no `PT_INTERP` program header (no dynamic loader
//! needed), and `--help` must run, the aarch64 one under `qemu-aarch64` on an x86_64 machine.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Debian packages that provide the aarch64 cross toolchain (see README.md).
pub const CROSS_PACKAGES: &str =
    "rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu qemu-user";

/// The Linux triples, as `llamafile-pack` names its default runtimes (packer/src/target.rs).
const X86_64_LINUX: &str = "x86_64-unknown-linux-gnu";
pub const AARCH64_LINUX: &str = "aarch64-unknown-linux-gnu";
const APPLE: [&str; 2] = ["aarch64-apple-darwin", "x86_64-apple-darwin"];

/// The Debian cross toolchain's pieces.
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const AARCH64_GCC: &str = "aarch64-linux-gnu-gcc";

/// How one target is built.
pub(crate) struct Build {
    triple: &'static str,
    /// The cargo to run, and the environment it needs on top of ours.
    pub(crate) cargo: OsString,
    pub(crate) env: Vec<(&'static str, OsString)>,
    /// Linux: linked with `+crt-static` and checked for having no dynamic loader.
    linux: bool,
}

pub fn run(args: &[String]) -> Result<(), String> {
    let require_aarch64 = match args {
        [] => false,
        [flag] if flag == "--require-aarch64" => true,
        _ => return Err("usage: cargo xtask dist [--require-aarch64]".into()),
    };
    let root = workspace_root();
    let target = target_dir(&root);
    let dist = target.join("dist");
    fs::create_dir_all(&dist).map_err(|e| format!("creating {}: {e}", dist.display()))?;

    let builds = plan(require_aarch64)?;
    // The packer is built (statically too, on Linux) with the first target: the host's.
    for (i, b) in builds.iter().enumerate() {
        let build_dir = target.join("dist-build").join(b.triple);
        let mut packages = vec!["-p", "runtime"];
        if i == 0 {
            packages.extend(["-p", "packer"]);
        }
        build(&root, b, &build_dir, &packages)?;
        let out = build_dir.join(b.triple).join("release");
        let runtime = dist.join(format!("llamafile-{}", b.triple));
        install(&out.join("llamafile"), &runtime)?;
        check(b, &runtime)?;
        if i == 0 {
            let packer = dist.join("llamafile-pack");
            install(&out.join("llamafile-pack"), &packer)?;
            check(b, &packer)?;
        }
    }
    println!("dist: built in {}:", dist.display());
    for b in &builds {
        println!("  llamafile-{}", b.triple);
    }
    println!("  llamafile-pack");
    println!(
        "pack a model with: {}/llamafile-pack build MODEL.gguf -o MODEL.llamafile",
        dist.display()
    );
    Ok(())
}

/// The workspace root: xtask's parent directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// `$CARGO_TARGET_DIR` when set (relative to the workspace, as cargo reads it), else `target/`.
pub fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// The targets this machine can build, the host's first.
fn plan(require_aarch64: bool) -> Result<Vec<Build>, String> {
    let host = native(host_triple()?);
    match host.triple {
        X86_64_LINUX => {
            let mut builds = vec![host];
            match debian_cross_aarch64() {
                Ok(b) => builds.push(b),
                Err(why) if require_aarch64 => {
                    return Err(format!("--require-aarch64: {why}"));
                }
                Err(why) => println!(
                    "dist: NOT building {AARCH64_LINUX}: {why}\n      \
                     install the cross toolchain with: dpkg --add-architecture arm64 && \
                     apt-get update && apt-get install -y {CROSS_PACKAGES}"
                ),
            }
            Ok(builds)
        }
        AARCH64_LINUX => {
            if !require_aarch64 {
                println!("dist: on aarch64 Linux only {AARCH64_LINUX} is built; the x86_64 runtime comes from an x86_64 machine");
            }
            Ok(vec![host])
        }
        _ => {
            if require_aarch64 {
                return Err(format!(
                    "--require-aarch64 asks for {AARCH64_LINUX}, which is built on Linux"
                ));
            }
            // The host's own target first: its packer is the one that runs here.
            let other = APPLE.into_iter().find(|&t| t != host.triple);
            Ok([host].into_iter().chain(other.map(native)).collect())
        }
    }
}

/// The target triple of this machine's runtime.
fn host_triple() -> Result<&'static str, String> {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => Ok(X86_64_LINUX),
        ("linux", "aarch64") => Ok(AARCH64_LINUX),
        ("macos", "aarch64") => Ok(APPLE[0]),
        ("macos", "x86_64") => Ok(APPLE[1]),
        (os, arch) => Err(format!(
            "runtimes are built on Linux or macOS, x86_64 or aarch64, not {os}/{arch}"
        )),
    }
}

/// A target this machine builds with its own cargo.
fn native(triple: &'static str) -> Build {
    Build {
        triple,
        cargo: std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
        env: Vec::new(),
        linux: triple.contains("-linux-"),
    }
}

/// This machine's runtime built as `dist` builds it (static on Linux, without debug info), in
/// dist's build directory: what a packed llamafile carries, for measuring how fast it starts.
pub fn host_runtime(root: &Path) -> Result<PathBuf, String> {
    let b = native(host_triple()?);
    let build_dir = target_dir(root).join("dist-build").join(b.triple);
    build(root, &b, &build_dir, &["-p", "runtime"])?;
    Ok(build_dir.join(b.triple).join("release").join("llamafile"))
}

/// Debian's packaged Rust (`rustc-web`, which installs as /usr/bin/rustc) with the arm64 standard
/// library, linking with the GNU cross compiler.
pub(crate) fn debian_cross_aarch64() -> Result<Build, String> {
    for tool in [DEBIAN_CARGO, DEBIAN_RUSTC] {
        if !Path::new(tool).is_file() {
            return Err(format!("{tool} is missing"));
        }
    }
    let sysroot = Command::new(DEBIAN_RUSTC)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("running {DEBIAN_RUSTC}: {e}"))?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    let std_dir = Path::new(&sysroot).join("lib/rustlib").join(AARCH64_LINUX);
    if !std_dir.is_dir() {
        return Err(format!(
            "{} is missing (the arm64 standard library, libstd-rust-web-dev:arm64)",
            std_dir.display()
        ));
    }
    if !on_path(AARCH64_GCC) {
        return Err(format!("{AARCH64_GCC} is not on PATH"));
    }
    Ok(Build {
        triple: AARCH64_LINUX,
        cargo: DEBIAN_CARGO.into(),
        env: vec![
            ("RUSTC", DEBIAN_RUSTC.into()),
            (
                "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
                AARCH64_GCC.into(),
            ),
        ],
        linux: true,
    })
}

pub(crate) fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()))
}

fn build(root: &Path, b: &Build, build_dir: &Path, packages: &[&str]) -> Result<(), String> {
    let mut args = vec!["build", "--release", "--target", b.triple];
    args.extend_from_slice(packages);
    let mut cmd = Command::new(&b.cargo);
    cmd.args(&args)
        .arg("--target-dir")
        .arg(build_dir)
        .current_dir(root);
    for (k, v) in &b.env {
        cmd.env(k, v);
    }
    // Symbol names stay for backtraces; the debug info (most of the binary's size) goes, since
    // every llamafile carries its runtimes and the launcher hashes them on each start.
    cmd.env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
    if b.linux {
        let mut flags = std::env::var("RUSTFLAGS").unwrap_or_default();
        if !flags.is_empty() {
            flags.push(' ');
        }
        flags.push_str("-C target-feature=+crt-static");
        cmd.env("RUSTFLAGS", flags);
    } else if std::env::var_os("MACOSX_DEPLOYMENT_TARGET").is_none() {
        // The oldest macOS with Apple Silicon: the runtimes then run on every Mac that has it.
        cmd.env("MACOSX_DEPLOYMENT_TARGET", "11.0");
    }
    println!(
        "dist: {} {} --target-dir {}",
        Path::new(&b.cargo).display(),
        args.join(" "),
        build_dir.display()
    );
    let status = cmd
        .status()
        .map_err(|e| format!("running {}: {e}", Path::new(&b.cargo).display()))?;
    if !status.success() {
        let hint = if b.linux {
            ""
        } else {
            " (missing standard library? `rustup target add aarch64-apple-darwin x86_64-apple-darwin`)"
        };
        return Err(format!("building {} failed ({status}){hint}", b.triple));
    }
    Ok(())
}

/// Copies `from` to `to` through a temporary file and a rename, so that a copy of the old binary
/// still running (a packed file's runtime, a test) is never rewritten under it.
fn install(from: &Path, to: &Path) -> Result<(), String> {
    let name = to.file_name().and_then(|n| n.to_str()).unwrap_or("binary");
    let tmp = to.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    fs::copy(from, &tmp)
        .map_err(|e| format!("copying {} to {}: {e}", from.display(), tmp.display()))?;
    fs::rename(&tmp, to).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("renaming {} to {}: {e}", tmp.display(), to.display())
    })
}

/// A Linux binary must need no dynamic loader; every binary must answer `--help`.
fn check(b: &Build, exe: &Path) -> Result<(), String> {
    if b.linux {
        let data = fs::read(exe).map_err(|e| format!("reading {}: {e}", exe.display()))?;
        if has_interp(&data).map_err(|e| format!("{}: {e}", exe.display()))? {
            return Err(format!(
                "{} is dynamically linked (it has a PT_INTERP header): +crt-static did not apply",
                exe.display()
            ));
        }
    }
    if let Ok(out) = Command::new("file").arg("-b").arg(exe).output() {
        let desc = String::from_utf8_lossy(&out.stdout);
        println!("dist: {}: {}", exe.display(), desc.trim());
    }
    let host = format!("{}-", std::env::consts::ARCH);
    let same_os = b.linux == cfg!(target_os = "linux");
    let mut cmd = if b.triple.starts_with(&host) && same_os {
        Command::new(exe)
    } else if b.triple == AARCH64_LINUX && cfg!(target_os = "linux") && on_path("qemu-aarch64") {
        let mut c = Command::new("qemu-aarch64");
        c.arg(exe);
        c
    } else if b.linux {
        println!(
            "dist: not running {} (it is for another machine, and qemu-aarch64 is not installed)",
            exe.display()
        );
        return Ok(());
    } else {
        // An x86_64 Mac binary on Apple Silicon runs under Rosetta when it is installed; without
        // it the launch fails, which says nothing about the binary.
        println!(
            "dist: not running {} here (built for the other Mac architecture)",
            exe.display()
        );
        return Ok(());
    };
    let shown = format!("{} --help", exe.display());
    let out = cmd
        .arg("--help")
        .output()
        .map_err(|e| format!("running {shown}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.contains("Usage:") {
        return Err(format!(
            "{shown} failed ({}):\n{text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    println!("dist: {shown}: ok");
    Ok(())
}

/// Whether a 64-bit little-endian ELF has a `PT_INTERP` program header (asks for a dynamic
/// loader). Static and static-PIE executables have none.
fn has_interp(elf: &[u8]) -> Result<bool, String> {
    const PT_INTERP: u32 = 3;
    if elf.get(..6) != Some(b"\x7fELF\x02\x01") {
        return Err("not a 64-bit little-endian ELF".into());
    }
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    let bad = || "truncated ELF header".to_string();
    let phoff = usize::try_from(u64_at(0x20).ok_or_else(bad)?).map_err(|_| bad())?;
    let phentsize = usize::from(u16_at(0x36).ok_or_else(bad)?);
    let phnum = usize::from(u16_at(0x38).ok_or_else(bad)?);
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let kind = elf
            .get(at..at + 4)
            .ok_or_else(|| format!("program header {i} lies outside the file"))?;
        if u32::from_le_bytes(kind.try_into().expect("4 bytes")) == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}
