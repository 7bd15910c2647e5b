//! `cargo xtask dist [--skip aarch64] [--skip macos]`: the four runtimes, and for each platform a
//! `llamafile-pack` that carries all of them, in `target/dist/`.
//!
//! Each runtime is named `llamafile-<target triple>`. Linux runtimes are linked statically
//! (`-C target-feature=+crt-static`) so that one file runs on any distribution, whatever its
//! glibc. The flags go to that cargo invocation only, through `RUSTFLAGS` with an explicit
//! `--target` (so build scripts and proc macros stay dynamic), and each target builds in its own
//! directory under `target/dist-build/`, so the normal build's artifacts are never invalidated.
//!
//! On x86_64 Linux, which is where releases are made:
//! - linux-aarch64 is cross-built with Debian's packaged Rust (`rustc-web`, whose `rustc` ships
//!   the aarch64 standard library as a package) and `aarch64-linux-gnu-gcc` as the linker;
//! - the two macOS runtimes are built with the same Rust compiling its own standard library from
//!   source (`rust-web-src`, `-Zbuild-std`; `RUSTC_BOOTSTRAP` lets a stable compiler take the
//!   flag) and zig as the linker through cargo-zigbuild. zig carries the macOS SDK's library stubs
//!   (so no Xcode is needed) and signs arm64 output ad hoc, which Apple Silicon requires. Both
//!   tools come from PyPI, into a virtual environment under the user's cache.
//!
//! Debian's packages are installed with apt when this runs as root, else dist stops with the
//! command to run; `--skip aarch64` / `--skip macos` leave those platforms out (for machines that
//! cannot have them), and the packers then carry fewer runtimes (and say so).
//!
//! On macOS it builds the two Apple targets with the Mac's own toolchain, and the two Linux ones
//! with zig as the linker against musl (`x86_64-unknown-linux-musl`, `aarch64-unknown-linux-musl`:
//! static by nature; `rustup target add` them first). Written from the same facts as the Linux
//! side, but never run: there is no Mac here (the release workflow builds on Linux).
//!
//! zig signs the arm64 Mac runtime as it links it; the x86_64 one is signed ad hoc by the packer
//! (`llamafile-pack sign`), built first for this machine. The packers are built last, with the runtimes compiled in (`LLAMAFILE_PACK_RUNTIMES`, read by
//! packer/build.rs): `llamafile-pack` for this machine, `llamafile-pack-<triple>` for the others.
//!
//! Every binary is checked: a Linux one must have no `PT_INTERP` program header (no dynamic loader
//! needed) and `--help` must run (the aarch64 one under `qemu-aarch64`); a Mac one must pass the
//! packer's own `verify` (its code signature matches every page).

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::prerequisites::{self, on_path, AARCH64_GCC, AARCH64_LINUX, DEBIAN_CARGO, DEBIAN_RUSTC};

/// cargo-zigbuild and the zig it drives, from PyPI, pinned: a new zig can change the binaries.
const ZIG_TOOLS: [&str; 2] = ["cargo-zigbuild==0.24.1", "ziglang==0.17.1"];

/// The triples, as `llamafile-pack` names its default runtimes (packer/src/target.rs).
const X86_64_LINUX: &str = "x86_64-unknown-linux-gnu";
const APPLE: [&str; 2] = ["aarch64-apple-darwin", "x86_64-apple-darwin"];

/// How one target is built.
#[derive(Clone)]
pub(crate) struct Build {
    triple: &'static str,
    /// The cargo to run, its subcommand (`build`, or `zigbuild`), the arguments it needs on top
    /// of ours, and the environment.
    pub(crate) cargo: OsString,
    subcommand: &'static str,
    extra_args: Vec<&'static str>,
    pub(crate) env: Vec<(&'static str, OsString)>,
    /// Signed ad hoc after linking, by the packer (`llamafile-pack sign`): zig signs arm64 Mac
    /// binaries, which Apple Silicon requires, but not x86_64 ones.
    sign: bool,
}

impl Build {
    fn linux(&self) -> bool {
        self.triple.contains("-linux-")
    }
}

/// What `dist` made.
pub struct Dist {
    /// `target/dist/llamafile-<triple>`, this machine's first.
    pub runtimes: Vec<PathBuf>,
    /// This machine's packer, carrying every runtime above.
    pub packer: PathBuf,
}

pub fn run(args: &[String]) -> Result<(), String> {
    let mut skip = Vec::new();
    let mut rest = args;
    loop {
        match rest {
            [flag, group, tail @ ..]
                if flag == "--skip" && ["aarch64", "macos"].contains(&group.as_str()) =>
            {
                skip.push(group.clone());
                rest = tail;
            }
            [] => break,
            _ => return Err("usage: cargo xtask dist [--skip aarch64] [--skip macos]".into()),
        }
    }
    let made = make(&skip, Packers::Every)?;
    println!(
        "dist: built in {}:",
        made.packer.parent().unwrap_or(Path::new(".")).display()
    );
    for r in &made.runtimes {
        println!("  {}", r.display());
    }
    println!("  {} (carries them all)", made.packer.display());
    println!(
        "pack a model with: {} build MODEL.gguf -o MODEL.llamafile",
        made.packer.display()
    );
    Ok(())
}

/// Which packers [`make`] builds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Packers {
    /// One for each platform built (a release).
    Every,
    /// This machine's only: what the tests run (the others differ only in the target they are
    /// compiled for, and compiling them costs CI a minute and a half).
    Host,
}

/// Builds and checks every runtime but those of the platform groups in `skip` ("aarch64",
/// "macos"), then the packers that carry them.
pub fn make(skip: &[String], packers: Packers) -> Result<Dist, String> {
    let root = workspace_root();
    let target = target_dir(&root);
    let dist = target.join("dist");
    fs::create_dir_all(&dist).map_err(|e| format!("creating {}: {e}", dist.display()))?;

    let builds = plan(skip)?;
    let mut runtimes = Vec::new();
    // This machine's packer, carrying nothing yet, signs what needs signing.
    let mut signer = None;
    for b in &builds {
        let packages: &[&str] = if signer.is_none() {
            &["-p", "runtime", "-p", "packer"]
        } else {
            &["-p", "runtime"]
        };
        let out = build(&root, b, packages)?;
        let signer = signer.get_or_insert_with(|| out.join("llamafile-pack"));
        let runtime = dist.join(format!("llamafile-{}", b.triple));
        if b.sign {
            sign(signer, &out.join("llamafile"), &runtime)?;
        } else {
            install(&out.join("llamafile"), &runtime)?;
        }
        check_elf(b, &runtime)?;
        runtimes.push(runtime);
    }
    // The packers, each carrying every runtime; this machine's first, since it checks the others.
    let carried = std::env::join_paths(&runtimes).map_err(|e| format!("runtime paths: {e}"))?;
    let mut packer = None;
    let packer_builds = match packers {
        Packers::Every => builds.len(),
        Packers::Host => 1,
    };
    for (i, b) in builds.iter().take(packer_builds).enumerate() {
        let mut with_runtimes = b.clone();
        with_runtimes
            .env
            .push(("LLAMAFILE_PACK_RUNTIMES", carried.clone()));
        let out = build(&root, &with_runtimes, &["-p", "packer"])?;
        let name = if i == 0 {
            "llamafile-pack".to_string()
        } else {
            format!("llamafile-pack-{}", b.triple)
        };
        let installed = dist.join(name);
        if b.sign {
            sign(
                signer.as_deref().expect("built first"),
                &out.join("llamafile-pack"),
                &installed,
            )?;
        } else {
            install(&out.join("llamafile-pack"), &installed)?;
        }
        if i == 0 {
            check_packer(&installed, &runtimes)?;
            packer = Some(installed);
        } else {
            check_elf(b, &installed)?;
            check_mac(
                packer.as_deref().expect("the host's packer is built first"),
                &installed,
            )?;
        }
    }
    Ok(Dist {
        runtimes,
        packer: packer.expect("at least the host's build"),
    })
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

/// The targets to build, the host's first.
fn plan(skip: &[String]) -> Result<Vec<Build>, String> {
    let host = native(host_triple()?);
    let wants = |group: &str| !skip.iter().any(|s| s == group);
    match host.triple {
        X86_64_LINUX => {
            let groups: Vec<&prerequisites::Group> =
                [&prerequisites::AARCH64, &prerequisites::MACOS]
                    .into_iter()
                    .filter(|g| wants(g.name))
                    .collect();
            prerequisites::install_missing(&groups, "dist")?;
            let mut builds = vec![host];
            if wants("aarch64") {
                builds.push(debian_cross_aarch64()?);
            }
            if wants("macos") {
                let zig = zig_tools()?;
                builds.extend(APPLE.map(|t| zig_cross_apple(t, &zig)));
            }
            Ok(builds)
        }
        AARCH64_LINUX => {
            println!("dist: on aarch64 Linux only {AARCH64_LINUX} is built; the others come from an x86_64 Linux machine");
            Ok(vec![host])
        }
        _ => {
            // The host's own target first: its packer is the one that runs here.
            let other = APPLE.into_iter().find(|&t| t != host.triple);
            let mut builds: Vec<Build> = [host].into_iter().chain(other.map(native)).collect();
            if wants("aarch64") {
                let zig = zig_tools()?;
                for triple in ["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"] {
                    builds.push(zig_cross(triple, &zig, Vec::new()));
                }
            }
            Ok(builds)
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
        subcommand: "build",
        extra_args: Vec::new(),
        env: Vec::new(),
        sign: false,
    }
}

/// This machine's runtime built as `dist` builds it (static on Linux, without debug info), in
/// dist's build directory: what a packed llamafile carries, for measuring how fast it starts.
pub fn host_runtime(root: &Path) -> Result<PathBuf, String> {
    let out = build(root, &native(host_triple()?), &["-p", "runtime"])?;
    Ok(out.join("llamafile"))
}

/// Debian's packaged Rust (`rustc-web`, which installs as /usr/bin/rustc) with the arm64 standard
/// library, linking with the GNU cross compiler.
pub(crate) fn debian_cross_aarch64() -> Result<Build, String> {
    if let Some(why) = prerequisites::aarch64_toolchain_missing() {
        return Err(why);
    }
    Ok(Build {
        triple: AARCH64_LINUX,
        cargo: DEBIAN_CARGO.into(),
        subcommand: "build",
        extra_args: Vec::new(),
        env: vec![
            ("RUSTC", DEBIAN_RUSTC.into()),
            (
                "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
                AARCH64_GCC.into(),
            ),
        ],
        sign: false,
    })
}

/// cargo-zigbuild and zig, installed from PyPI into a virtual environment under the user's cache
/// (once; pinned versions). Returns the environment's `bin` directory.
fn zig_tools() -> Result<PathBuf, String> {
    let venv = prerequisites::cache_root()?.join("zig-tools");
    prerequisites::python_venv(&venv, &ZIG_TOOLS)?;
    Ok(venv.join("bin"))
}

/// A macOS target from Linux: Debian's Rust building the standard library from source, zig (from
/// the environment `zig_bin`) linking against the macOS stubs it carries, and signing.
fn zig_cross_apple(triple: &'static str, zig_bin: &Path) -> Build {
    let mut b = zig_cross(
        triple,
        zig_bin,
        vec![
            ("RUSTC", DEBIAN_RUSTC.into()),
            // -Zbuild-std is unstable; this lets the stable compiler take it.
            ("RUSTC_BOOTSTRAP", "1".into()),
        ],
    );
    b.cargo = DEBIAN_CARGO.into();
    b.extra_args = vec!["-Zbuild-std=std,panic_abort"];
    b.sign = !triple.starts_with("aarch64-");
    b
}

/// A target linked by zig through cargo-zigbuild (from the environment `zig_bin`), with this
/// machine's cargo and `env` on top.
fn zig_cross(
    triple: &'static str,
    zig_bin: &Path,
    mut env: Vec<(&'static str, OsString)>,
) -> Build {
    let mut path = OsString::from(zig_bin);
    if let Some(rest) = std::env::var_os("PATH") {
        path.push(":");
        path.push(rest);
    }
    // cargo-zigbuild finds zig as `python3 -m ziglang`, in the environment first on PATH.
    env.push(("PATH", path));
    Build {
        triple,
        cargo: std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
        subcommand: "zigbuild",
        extra_args: Vec::new(),
        env,
        sign: false,
    }
}

/// Builds `packages` for `b` in dist's directory for that target; returns where the binaries are.
fn build(root: &Path, b: &Build, packages: &[&str]) -> Result<PathBuf, String> {
    let build_dir = target_dir(root).join("dist-build").join(b.triple);
    let mut args = vec![b.subcommand, "--release", "--target", b.triple];
    args.extend(&b.extra_args);
    args.extend_from_slice(packages);
    let mut cmd = Command::new(&b.cargo);
    cmd.args(&args)
        .arg("--target-dir")
        .arg(&build_dir)
        .current_dir(root);
    for (k, v) in &b.env {
        cmd.env(k, v);
    }
    // Symbol names stay for backtraces; the debug info (most of the binary's size) goes, since
    // every llamafile carries its runtimes and the launcher compares them on each start.
    cmd.env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
    let mut flags = std::env::var("RUSTFLAGS").unwrap_or_default();
    if b.linux() {
        flags.push_str(" -C target-feature=+crt-static");
    } else {
        // The libc crate asks for libiconv, which nothing here calls: without this the binary
        // would load it on every Mac. A runtime links libSystem only.
        flags.push_str(" -C link-arg=-Wl,-dead_strip_dylibs");
        if std::env::var_os("MACOSX_DEPLOYMENT_TARGET").is_none() {
            // The oldest macOS with Apple Silicon: the runtimes then run on every Mac that has it.
            cmd.env("MACOSX_DEPLOYMENT_TARGET", "11.0");
        }
    }
    cmd.env("RUSTFLAGS", flags.trim());
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
        return Err(format!(
            "building {} for {} failed ({status})",
            packages.join(" "),
            b.triple
        ));
    }
    Ok(build_dir.join(b.triple).join("release"))
}

/// `packer sign from -o to`: a signed copy, written through a temporary file and a rename.
fn sign(packer: &Path, from: &Path, to: &Path) -> Result<(), String> {
    let status = Command::new(packer)
        .arg("sign")
        .arg(from)
        .arg("-o")
        .arg(to)
        .status()
        .map_err(|e| format!("running {} sign: {e}", packer.display()))?;
    if !status.success() {
        return Err(format!("signing {} failed ({status})", from.display()));
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

/// A Linux binary must need no dynamic loader, and answer `--help` (under qemu for aarch64 on an
/// x86_64 machine). A Mac binary built on a Mac runs there too; one built here is checked by
/// [`check_mac`] once the packer exists.
fn check_elf(b: &Build, exe: &Path) -> Result<(), String> {
    if b.linux() {
        let data = fs::read(exe).map_err(|e| format!("reading {}: {e}", exe.display()))?;
        if has_interp(&data).map_err(|e| format!("{}: {e}", exe.display()))? {
            return Err(format!(
                "{} is dynamically linked (it has a PT_INTERP header): +crt-static did not apply",
                exe.display()
            ));
        }
    }
    let host = format!("{}-", std::env::consts::ARCH);
    let same_os = b.linux() == cfg!(target_os = "linux");
    let mut cmd = if b.triple.starts_with(&host) && same_os {
        Command::new(exe)
    } else if b.triple == AARCH64_LINUX && cfg!(target_os = "linux") && on_path("qemu-aarch64") {
        let mut c = Command::new("qemu-aarch64");
        c.arg(exe);
        c
    } else {
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

/// A Mac binary (by its name) must pass the packer's `verify`: a Mach-O whose code signature
/// covers the file and matches every page.
fn check_mac(packer: &Path, exe: &Path) -> Result<(), String> {
    let name = exe.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if !name.ends_with("-apple-darwin") {
        return Ok(());
    }
    let out = Command::new(packer)
        .arg("verify")
        .arg(exe)
        .output()
        .map_err(|e| format!("running {} verify: {e}", packer.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{} verify {}:\n{text}",
            packer.display(),
            exe.display()
        ));
    }
    print!("dist: {text}");
    Ok(())
}

/// This machine's packer runs, lists every runtime it carries, and vouches for the Mac ones.
fn check_packer(packer: &Path, runtimes: &[PathBuf]) -> Result<(), String> {
    let out = Command::new(packer)
        .arg("runtimes")
        .output()
        .map_err(|e| format!("running {} runtimes: {e}", packer.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("{} runtimes failed:\n{text}", packer.display()));
    }
    print!("dist: {text}");
    for r in runtimes {
        check_mac(packer, r)?;
    }
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
