//! The llama-synth test models, made here byte for byte as llama.cpp's reference made them:
//! the F32 file by `xtask/python/make_llama_synth.py` (numpy's `default_rng(7)`, the Gemma
//! vocabulary, gguf-py's writer), run in a virtual environment with numpy and gguf from PyPI;
//! the twelve other types by our own quantizer, `llamafile-pack quantize --pure` (llama.cpp made
//! them with `llama-quantize --pure`). Every file is checked against
//! `tests/fixtures/reference/llama-synth/SHA256SUMS`: the fixtures are llama.cpp's outputs on
//! exactly those bytes, so a file that differs would make every fidelity check meaningless.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::dist;
use crate::sha256::sha256_file;

/// The types beside F32, as the fixtures name them (`reference-TYPE.jsonl`).
const QUANTIZED: &[&str] = &[
    "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
];

/// What the generator needs from PyPI. gguf is pinned to llama.cpp 0c1e570's gguf-py (its
/// writer lays the file out); numpy's `Generator.standard_normal` has given the same stream for a
/// seed since 1.17, and the checksums guard against any change.
const PYTHON_PACKAGES: &[&str] = &["numpy>=1.26", "gguf==0.19.0"];

/// The directory of the llama-synth files under the models directory.
pub fn dir(models: &Path) -> PathBuf {
    models.join("llama-synth")
}

/// Makes whatever llama-synth file in `models/llama-synth` is missing or has the wrong checksum.
pub fn make(models: &Path) -> Result<(), String> {
    let root = dist::workspace_root();
    let sums = expected_sums(&root)?;
    let out = dir(models);
    fs::create_dir_all(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    let file = |ty: &str| out.join(format!("llama-synth-{ty}.gguf"));
    let good = |ty: &str| -> Result<bool, String> {
        let path = file(ty);
        Ok(path.exists() && sha256_file(&path)? == sums.get(ty))
    };

    if !good("F32")? {
        let venv = python_env(models)?;
        let tmp = out.join(format!(".llama-synth-F32.{}.tmp", std::process::id()));
        println!("llama-synth F32: generating with numpy (seed 7) and gguf-py");
        let status = Command::new(venv.join("bin/python"))
            .arg(root.join("xtask/python/make_llama_synth.py"))
            .arg(models.join("gemma.gguf"))
            .arg(&tmp)
            .status()
            .map_err(|e| format!("running make_llama_synth.py: {e}"))?;
        if !status.success() {
            let _ = fs::remove_file(&tmp);
            return Err(format!("make_llama_synth.py failed ({status})"));
        }
        commit(&tmp, &file("F32"), sums.get("F32"))?;
    }

    let missing: Vec<&str> = QUANTIZED
        .iter()
        .copied()
        .filter(|ty| !matches!(good(ty), Ok(true)))
        .collect();
    if missing.is_empty() {
        println!(
            "{}: the 13 llama-synth files are present, sha256 matches",
            out.display()
        );
        return Ok(());
    }
    let packer = build_packer(&root)?;
    for ty in missing {
        let tmp = out.join(format!(".llama-synth-{ty}.{}.gguf", std::process::id()));
        let status = Command::new(&packer)
            .args(["quantize", "--pure"])
            .arg(file("F32"))
            .arg(&tmp)
            .arg(ty)
            .status()
            .map_err(|e| format!("running {}: {e}", packer.display()))?;
        if !status.success() {
            let _ = fs::remove_file(&tmp);
            return Err(format!(
                "llamafile-pack quantize --pure … {ty} failed ({status})"
            ));
        }
        commit(&tmp, &file(ty), sums.get(ty))?;
    }
    println!(
        "{}: the 13 llama-synth files are made, sha256 matches",
        out.display()
    );
    Ok(())
}

/// Renames `tmp` to `dest` if its checksum is `expected`; removes it otherwise.
fn commit(tmp: &Path, dest: &Path, expected: &str) -> Result<(), String> {
    let hash = sha256_file(tmp)?;
    if hash != expected {
        let _ = fs::remove_file(tmp);
        return Err(format!(
            "{}: made with sha256 {hash}, expected {expected} (tests/fixtures/reference/llama-synth/SHA256SUMS)",
            dest.display()
        ));
    }
    fs::rename(tmp, dest)
        .map_err(|e| format!("renaming {} to {}: {e}", tmp.display(), dest.display()))
}

/// The checksums the files must have.
struct Sums(Vec<(String, String)>);

impl Sums {
    fn get(&self, ty: &str) -> &str {
        let name = format!("llama-synth-{ty}.gguf");
        self.0
            .iter()
            .find(|(_, n)| *n == name)
            .map_or("(none listed)", |(h, _)| h.as_str())
    }
}

fn expected_sums(root: &Path) -> Result<Sums, String> {
    let path = root.join("tests/fixtures/reference/llama-synth/SHA256SUMS");
    let text = fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    Ok(Sums(
        text.lines()
            .filter_map(|l| l.split_once("  "))
            .map(|(h, n)| (h.to_string(), n.to_string()))
            .collect(),
    ))
}

/// A virtual environment with the generator's packages, under the models directory (outside the
/// repository), made once.
fn python_env(models: &Path) -> Result<PathBuf, String> {
    let venv = models.join("python-venv");
    crate::prerequisites::python_venv(&venv, PYTHON_PACKAGES)?;
    Ok(venv)
}

/// Builds the packer (release, as the tests use it) and returns its path.
fn build_packer(root: &Path) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-q", "-p", "packer"])
        .current_dir(root)
        .status()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building the packer failed ({status})"));
    }
    Ok(dist::target_dir(root).join("release/llamafile-pack"))
}
