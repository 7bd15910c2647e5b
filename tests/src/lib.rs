//! Shared helpers of the end-to-end tests: where the built binaries, the test models and the
//! fixtures are. The tests themselves live in `tests/tests/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use testmodels::{llama_synth, models_dir, workspace};

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

/// `target/dist/<name>` (beside `target/<profile>/`), if `cargo xtask dist` made it: the static
/// runtimes `llamafile-<triple>` and the packer that carries them all.
pub fn dist(name: &str) -> Option<PathBuf> {
    let profile_dir = bin("llamafile").parent().unwrap().to_path_buf();
    let p = profile_dir.parent().unwrap().join("dist").join(name);
    p.is_file().then_some(p)
}

/// The fixtures copied into this repository.
pub fn fixtures() -> PathBuf {
    workspace().join("tests/fixtures")
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

/// A Python with the official client packages `tests/python/requirements.txt` lists (`openai`,
/// `anthropic`), in a venv under `target/` made on first use: the clients as users run them.
pub fn python_with_clients() -> PathBuf {
    let venv = workspace().join("target/py-venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        let out = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .output()
            .expect("run python3 (install python3)");
        assert!(
            out.status.success(),
            "python3 -m venv failed (on Debian: apt-get install python3-venv):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(workspace().join("tests/python/requirements.txt"))
        .output()
        .expect("run pip");
    assert!(
        out.status.success(),
        "pip install -r tests/python/requirements.txt failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    python
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

/// A metadata value for [`GgufFile`].
#[derive(Clone, Debug, PartialEq)]
pub enum Meta {
    U32(u32),
    F32(f32),
    Str(String),
    Strs(Vec<Vec<u8>>),
    F32s(Vec<f32>),
    I32s(Vec<i32>),
}

impl Meta {
    /// GGUF's type id of the value.
    fn type_id(&self) -> u32 {
        match self {
            Meta::U32(_) => 4,
            Meta::F32(_) => 6,
            Meta::Str(_) => 8,
            Meta::Strs(_) | Meta::F32s(_) | Meta::I32s(_) => 9,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        let put_str = |out: &mut Vec<u8>, s: &[u8]| {
            out.extend((s.len() as u64).to_le_bytes());
            out.extend_from_slice(s);
        };
        let array_header = |out: &mut Vec<u8>, elem: u32, n: usize| {
            out.extend(elem.to_le_bytes());
            out.extend((n as u64).to_le_bytes());
        };
        match self {
            Meta::U32(v) => out.extend(v.to_le_bytes()),
            Meta::F32(v) => out.extend(v.to_le_bytes()),
            Meta::Str(s) => put_str(out, s.as_bytes()),
            Meta::Strs(items) => {
                array_header(out, 8, items.len());
                for s in items {
                    put_str(out, s);
                }
            }
            Meta::F32s(items) => {
                array_header(out, 6, items.len());
                items.iter().for_each(|v| out.extend(v.to_le_bytes()));
            }
            Meta::I32s(items) => {
                array_header(out, 5, items.len());
                items.iter().for_each(|v| out.extend(v.to_le_bytes()));
            }
        }
    }
}

/// An F32 tensor for [`GgufFile`]; its data is made up from its shape.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    /// ne0 (the row length) first.
    pub dims: Vec<u64>,
}

/// A GGUF file written from scratch (version 3, alignment 32, F32 tensors), so that tests can
/// build a small valid model and break it in chosen places.
#[derive(Clone, Debug)]
pub struct GgufFile {
    pub kv: Vec<(String, Meta)>,
    pub tensors: Vec<Tensor>,
}

/// Where the parts of a written [`GgufFile`] are.
#[derive(Clone, Debug, Default)]
pub struct GgufLayout {
    /// Offset of each metadata entry (its key's length).
    pub kv_at: Vec<usize>,
    /// Offset of each tensor info (its name's length).
    pub tensor_info_at: Vec<usize>,
    /// Where the data section starts.
    pub data_offset: usize,
}

impl GgufFile {
    /// A one-layer llama model small enough to run in a millisecond: 8-wide embeddings, 2 query
    /// heads sharing 1 key/value head, and an SPM vocabulary of 15 tokens (`<unk>`, `<s>`,
    /// `</s>`, 8 byte tokens, `▁hi`, `h`, `i`, `▁`). `llamafile -m` runs it.
    pub fn tiny_llama() -> GgufFile {
        const EMBD: u64 = 8;
        const FF: u64 = 16;
        let mut tokens: Vec<Vec<u8>> = vec![b"<unk>".to_vec(), b"<s>".to_vec(), b"</s>".to_vec()];
        tokens.extend((0..8).map(|b| format!("<0x{b:02X}>").into_bytes()));
        for t in ["\u{2581}hi", "h", "i", "\u{2581}"] {
            tokens.push(t.as_bytes().to_vec());
        }
        let n_vocab = tokens.len();
        // unknown, control, control, 8 bytes, then normal
        let types = (0..n_vocab)
            .map(|i| match i {
                0 => 2,
                1 | 2 => 3,
                3..=10 => 6,
                _ => 1,
            })
            .collect();
        let u = |v: u64| Meta::U32(v as u32);
        let kv = vec![
            ("general.architecture", Meta::Str("llama".into())),
            ("llama.block_count", u(1)),
            ("llama.context_length", u(64)),
            ("llama.embedding_length", u(EMBD)),
            ("llama.feed_forward_length", u(FF)),
            ("llama.attention.head_count", u(2)),
            ("llama.attention.head_count_kv", u(1)),
            ("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-5)),
            ("tokenizer.ggml.model", Meta::Str("llama".into())),
            ("tokenizer.ggml.tokens", Meta::Strs(tokens)),
            (
                "tokenizer.ggml.scores",
                Meta::F32s((0..n_vocab).map(|i| -(i as f32)).collect()),
            ),
            ("tokenizer.ggml.token_type", Meta::I32s(types)),
        ];
        let t = |name: &str, dims: &[u64]| Tensor {
            name: name.to_string(),
            dims: dims.to_vec(),
        };
        let tensors = vec![
            t("token_embd.weight", &[EMBD, n_vocab as u64]),
            t("output_norm.weight", &[EMBD]),
            t("blk.0.attn_norm.weight", &[EMBD]),
            t("blk.0.attn_q.weight", &[EMBD, EMBD]),
            t("blk.0.attn_k.weight", &[EMBD, EMBD / 2]),
            t("blk.0.attn_v.weight", &[EMBD, EMBD / 2]),
            t("blk.0.attn_output.weight", &[EMBD, EMBD]),
            t("blk.0.ffn_norm.weight", &[EMBD]),
            t("blk.0.ffn_gate.weight", &[EMBD, FF]),
            t("blk.0.ffn_up.weight", &[EMBD, FF]),
            t("blk.0.ffn_down.weight", &[FF, EMBD]),
        ];
        GgufFile {
            kv: kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            tensors,
        }
    }

    /// The value of `key`, to change it.
    pub fn meta(&mut self, key: &str) -> &mut Meta {
        &mut self
            .kv
            .iter_mut()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no key {key}"))
            .1
    }

    /// Drops the metadata entry `key`.
    pub fn without(mut self, key: &str) -> GgufFile {
        let before = self.kv.len();
        self.kv.retain(|(k, _)| k != key);
        assert_eq!(self.kv.len() + 1, before, "no key {key}");
        self
    }

    /// Index of the tensor called `name`.
    pub fn tensor_index(&self, name: &str) -> usize {
        self.tensors
            .iter()
            .position(|t| t.name == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.build().0
    }

    /// The file and where its parts are. Tensors follow each other in the data section, each
    /// at a multiple of 32; the data is small distinct values.
    pub fn build(&self) -> (Vec<u8>, GgufLayout) {
        let mut layout = GgufLayout::default();
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kv.len() as u64).to_le_bytes());
        for (key, value) in &self.kv {
            layout.kv_at.push(out.len());
            out.extend((key.len() as u64).to_le_bytes());
            out.extend_from_slice(key.as_bytes());
            out.extend(value.type_id().to_le_bytes());
            value.write(&mut out);
        }
        let mut offset = 0u64;
        let mut placed = Vec::new();
        for t in &self.tensors {
            layout.tensor_info_at.push(out.len());
            out.extend((t.name.len() as u64).to_le_bytes());
            out.extend_from_slice(t.name.as_bytes());
            out.extend((t.dims.len() as u32).to_le_bytes());
            t.dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
            out.extend(0u32.to_le_bytes()); // F32
            out.extend(offset.to_le_bytes());
            let n: u64 = t.dims.iter().product();
            placed.push((offset as usize, n as usize));
            offset = (offset + 4 * n).next_multiple_of(32);
        }
        out.resize(out.len().next_multiple_of(32), 0);
        layout.data_offset = out.len();
        for (i, (at, n)) in placed.into_iter().enumerate() {
            let start = layout.data_offset + at;
            out.resize(start, 0);
            out.extend(
                (0..n).flat_map(|j| (((i * 7 + j * 37) % 17) as f32 / 16.0 - 0.5).to_le_bytes()),
            );
        }
        (out, layout)
    }
}

pub mod agreement;
pub mod files;
pub mod server;
pub mod terminal;
