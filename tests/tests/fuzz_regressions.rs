//! Replays, without cargo-fuzz, every input the fuzz targets (`fuzz/`, `cargo xtask fuzz`) ever
//! crashed on — kept in `tests/fixtures/fuzz-regressions/TARGET/` — and their seed corpora
//! (`fuzz/seeds/TARGET/`), through the same functions the targets call (`runtime::fuzzing`).
//! A panic is a failure; so is an input that takes more than a few seconds.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::{llama_synth, models_dir, workspace};
use tokenizer::Tokenizer;

/// An input the fuzzer ran for this long would have been reported as a hang.
const SLOW: Duration = Duration::from_secs(5);

/// The inputs of `target`: its regressions, then its seeds.
fn inputs(target: &str) -> Vec<PathBuf> {
    let root = workspace();
    let mut files = Vec::new();
    for dir in [
        root.join("tests/fixtures/fuzz-regressions").join(target),
        root.join("fuzz/seeds").join(target),
    ] {
        if let Ok(entries) = fs::read_dir(&dir) {
            files.extend(entries.flatten().map(|e| e.path()));
        }
    }
    files.sort();
    files
}

fn replay(target: &str, run: impl Fn(&[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "no inputs for {target}");
    for f in files {
        let data = fs::read(&f).unwrap();
        let start = Instant::now();
        run(&data);
        assert!(
            start.elapsed() < SLOW,
            "{}: took {:?}",
            f.display(),
            start.elapsed()
        );
    }
}

fn tokenizer_of(path: PathBuf) -> Tokenizer {
    let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let g = gguf::Gguf::parse(&bytes).unwrap();
    Tokenizer::from_gguf(&g).unwrap()
}

#[test]
fn gguf() {
    replay("gguf", runtime::fuzzing::gguf);
}

#[test]
fn zip() {
    replay("zip", runtime::fuzzing::payload);
}

#[test]
fn args() {
    replay("args", runtime::fuzzing::args);
}

#[test]
fn chat_template() {
    replay("chat_template", runtime::fuzzing::chat_template);
}

#[test]
fn server_request() {
    replay("server_request", runtime::fuzzing::server_request);
}

#[test]
fn tokenizer_spm() {
    // The fuzz target's vocabulary is this model's metadata.
    let tok = tokenizer_of(llama_synth("Q2_K"));
    replay("tokenizer_spm", |d| {
        runtime::fuzzing::tokenizer(&tok, d, runtime::fuzzing::spm_round_trip)
    });
}

#[test]
fn tokenizer_bpe() {
    let tok = tokenizer_of(models_dir().join("qwen.gguf"));
    replay("tokenizer_bpe", |d| {
        runtime::fuzzing::tokenizer(&tok, d, runtime::fuzzing::bpe_round_trip)
    });
}
