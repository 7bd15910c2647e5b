//! Shared helpers of the end-to-end tests: where the built binaries, the test models and the
//! fixtures are. The tests themselves live in `tests/tests/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A binary of the workspace, built in the same profile as this test (`cargo xtask test` builds them first).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run the tests with `cargo xtask test` (it builds the binaries first)",
        path.display()
    );
    path
}

/// The fixtures copied into this repository.
pub fn fixtures() -> PathBuf {
    workspace().join("tests/fixtures")
}

/// shared/reference beside the repository (the llama-synth model files stay there).
pub fn shared_reference() -> PathBuf {
    let dir = std::env::var_os("LLAMAFILE_SHARED_REFERENCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared/reference"));
    assert!(
        dir.is_dir(),
        "{} not found: set LLAMAFILE_SHARED_REFERENCE",
        dir.display()
    );
    dir
}

/// The directory with qwen.gguf and gemma.gguf, fetched by `cargo xtask fetch-models`.
pub fn models_dir() -> PathBuf {
    let dir = std::env::var_os("LLAMAFILE_TEST_MODELS").map(PathBuf::from).expect(
        "LLAMAFILE_TEST_MODELS is not set: run `cargo xtask fetch-models` and `cargo xtask test`",
    );
    assert!(
        dir.join("qwen.gguf").exists(),
        "{}/qwen.gguf missing: run `cargo xtask fetch-models`",
        dir.display()
    );
    dir
}

/// Runs `llamafile` with `args`, returning its output; panics with its stderr when it fails.
pub fn llamafile(args: &[&str]) -> Output {
    let out = Command::new(bin("llamafile"))
        .args(args)
        .output()
        .expect("spawn llamafile");
    assert!(
        out.status.success(),
        "llamafile {:?} failed ({}):\n{}",
        args,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Parses stdout as one JSON value (the last non-empty line).
pub fn json_stdout(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {text}"))
}
