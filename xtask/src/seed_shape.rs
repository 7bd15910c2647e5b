//! Models shaped as the seed, for `cargo xtask bench`: Mistral 7B Instruct v0.2's hyperparameters,
//! tensor names and shapes, its 32000-token vocabulary's size, and for each quantization mix the
//! types `llama-quantize` gives its tensors (the packer's rules, `packer::quant_mix`), with random
//! weights. Speed at the seed's scale, without downloading the 4 GB of the real weights.
//!
//! The weights are real quantized blocks: a few random rows per tensor quantized by the kernels'
//! quantizer (so every scale is one a real model could have), repeated down the tensor. What a
//! forward pass costs depends on the types and sizes only, which are the seed's; the text it
//! generates is noise. Files are cached in the models directory, outside the repository.

use std::io::Write;
use std::path::{Path, PathBuf};

use gguf::{Array, TensorSpec, Value, ValueType};
use kernels::GgmlType;
use packer::quant_mix::{loader_order, Mix, ModelShape, TensorIn, TypeChooser};

/// Bumped whenever the files this writes change, so that a cached file of an older layout is not
/// measured as if it were the current one.
const VERSION: u32 = 1;

const N_VOCAB: usize = 32000;
const N_EMBD: u64 = 4096;
const N_FF: u64 = 14336;
const N_LAYER: u32 = 32;
const N_HEAD: u32 = 32;
const N_HEAD_KV: u32 = 8;
const HEAD_DIM: u64 = N_EMBD / N_HEAD as u64;
/// Distinct random rows per tensor; the rest of its rows repeat them.
const DISTINCT_ROWS: usize = 16;

/// The seed's twelve quantizations: the mixes a seed-shaped model can have.
const MIXES: &[&str] = &[
    "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_K_S", "Q4_K_M", "Q5_0", "Q5_K_S", "Q5_K_M",
    "Q6_K", "Q8_0",
];

/// The seed-shaped model of `mix` in `models`, written first if it is not there.
pub fn model(models: &Path, mix: &str) -> Result<PathBuf, String> {
    if !MIXES.contains(&mix) {
        return Err(format!(
            "mistral7b-{mix}: the seed comes in {}",
            MIXES.join(", ")
        ));
    }
    let mix = Mix::parse(mix).map_err(|e| e.to_string())?;
    let dir = models.join("seed-shaped");
    let path = dir.join(format!("mistral-7b-shaped-v{VERSION}-{}.gguf", mix.name));
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    eprintln!(
        "bench: writing a Mistral-7B-shaped {} model (random weights) to {}",
        mix.name,
        path.display()
    );
    let partial = path.with_extension("gguf.partial");
    write(&partial, mix).map_err(|e| format!("{}: {e}", partial.display()))?;
    std::fs::rename(&partial, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// The seed's tensors, in the order llama.cpp's loader (and so `llama-quantize`) keeps them, as
/// an F16 model has them: names, shapes (row length first) and source types.
fn tensors() -> Vec<(String, Vec<u64>, GgmlType)> {
    let kv = HEAD_DIM * N_HEAD_KV as u64;
    let vocab = N_VOCAB as u64;
    let mut t = vec![
        (
            "token_embd.weight".to_string(),
            vec![N_EMBD, vocab],
            GgmlType::F16,
        ),
        ("output_norm.weight".into(), vec![N_EMBD], GgmlType::F32),
        ("output.weight".into(), vec![N_EMBD, vocab], GgmlType::F16),
    ];
    for i in 0..N_LAYER {
        for (name, dims, ty) in [
            ("attn_norm", vec![N_EMBD], GgmlType::F32),
            ("attn_q", vec![N_EMBD, N_EMBD], GgmlType::F16),
            ("attn_k", vec![N_EMBD, kv], GgmlType::F16),
            ("attn_v", vec![N_EMBD, kv], GgmlType::F16),
            ("attn_output", vec![N_EMBD, N_EMBD], GgmlType::F16),
            ("ffn_norm", vec![N_EMBD], GgmlType::F32),
            ("ffn_gate", vec![N_EMBD, N_FF], GgmlType::F16),
            ("ffn_up", vec![N_EMBD, N_FF], GgmlType::F16),
            ("ffn_down", vec![N_FF, N_EMBD], GgmlType::F16),
        ] {
            t.push((format!("blk.{i}.{name}.weight"), dims, ty));
        }
    }
    t.sort_by(|a, b| loader_order(&a.0, &b.0));
    t
}

/// A GGUF array of strings or of plain numbers, laid out.
struct ArrayBytes {
    elem_type: ValueType,
    len: usize,
    bytes: Vec<u8>,
}

impl ArrayBytes {
    fn strings(items: &[String]) -> ArrayBytes {
        let mut bytes = Vec::new();
        for s in items {
            bytes.extend_from_slice(&(s.len() as u64).to_le_bytes());
            bytes.extend_from_slice(s.as_bytes());
        }
        ArrayBytes {
            elem_type: ValueType::String,
            len: items.len(),
            bytes,
        }
    }

    fn numbers<const N: usize>(elem_type: ValueType, items: &[[u8; N]]) -> ArrayBytes {
        ArrayBytes {
            elem_type,
            len: items.len(),
            bytes: items.concat(),
        }
    }

    fn value(&self) -> Value<'_> {
        Value::Array(Array::laid_out(self.elem_type, self.len, &self.bytes))
    }
}

/// A SentencePiece vocabulary with Mistral's layout: `<unk>`, `<s>`, `</s>`, the 256 byte tokens,
/// then pieces (▁ and letters, most likely first), so that any text tokenizes.
fn vocabulary() -> (ArrayBytes, ArrayBytes, ArrayBytes) {
    let mut pieces: Vec<String> = ["<unk>", "<s>", "</s>"].map(String::from).to_vec();
    pieces.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    let letters: Vec<char> = ('a'..='z').collect();
    let mut n = 0usize;
    while pieces.len() < N_VOCAB {
        // Base-26 words: a, b, ..., z, aa, ab, ...; each with and without the word-start mark.
        let (mut word, mut k) = (String::new(), n);
        loop {
            word.insert(0, letters[k % 26]);
            if k < 26 {
                break;
            }
            k = k / 26 - 1;
        }
        pieces.push(format!("\u{2581}{word}"));
        if pieces.len() < N_VOCAB {
            pieces.push(word);
        }
        n += 1;
    }
    let scores: Vec<[u8; 4]> = (0..N_VOCAB).map(|i| (-(i as f32)).to_le_bytes()).collect();
    // llama.cpp's token types: 2 unknown, 3 control, 6 byte, 1 normal.
    let types: Vec<[u8; 4]> = (0..N_VOCAB)
        .map(|i| match i {
            0 => 2i32,
            1 | 2 => 3,
            3..=258 => 6,
            _ => 1,
        })
        .map(i32::to_le_bytes)
        .collect();
    (
        ArrayBytes::strings(&pieces),
        ArrayBytes::numbers(ValueType::F32, &scores),
        ArrayBytes::numbers(ValueType::I32, &types),
    )
}

/// A small deterministic generator (xorshift64*): the weights need to be irregular, not good.
struct Random(u64);

impl Random {
    /// Uniform in [-1, 1).
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
        bits as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// The seed's tensors with the types `mix` gives them.
fn typed(mix: Mix) -> Vec<(String, Vec<u64>, GgmlType)> {
    let tensors = tensors();
    let names: Vec<&str> = tensors.iter().map(|t| t.0.as_str()).collect();
    let shape = ModelShape {
        arch: "llama".into(),
        n_layer: N_LAYER,
        n_gqa: N_HEAD / N_HEAD_KV,
        n_expert: 0,
        is_70b: false,
    };
    let mut chooser = TypeChooser::new(mix, false, &shape, &names);
    let typed: Vec<GgmlType> = tensors
        .iter()
        .map(|(name, dims, ty)| {
            chooser.choose(&TensorIn {
                name,
                dims,
                ty: *ty,
            })
        })
        .collect();
    tensors
        .into_iter()
        .zip(typed)
        .map(|((name, dims, _), ty)| (name, dims, ty))
        .collect()
}

fn write(path: &Path, mix: Mix) -> std::io::Result<()> {
    let tensors = typed(mix);
    let specs: Vec<TensorSpec> = tensors
        .iter()
        .map(|(name, dims, ty)| TensorSpec {
            name,
            dims: dims.clone(),
            ty: *ty,
        })
        .collect();
    let (tokens, scores, types) = vocabulary();
    let metadata = [
        ("general.architecture", Value::String(b"llama")),
        (
            "general.name",
            Value::String(b"Mistral-7B-shaped (random weights)"),
        ),
        ("llama.context_length", Value::U32(32768)),
        ("llama.embedding_length", Value::U32(N_EMBD as u32)),
        ("llama.block_count", Value::U32(N_LAYER)),
        ("llama.feed_forward_length", Value::U32(N_FF as u32)),
        ("llama.rope.dimension_count", Value::U32(HEAD_DIM as u32)),
        ("llama.attention.head_count", Value::U32(N_HEAD)),
        ("llama.attention.head_count_kv", Value::U32(N_HEAD_KV)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.rope.freq_base", Value::F32(1_000_000.0)),
        ("llama.vocab_size", Value::U32(N_VOCAB as u32)),
        ("tokenizer.ggml.model", Value::String(b"llama")),
        ("tokenizer.ggml.tokens", tokens.value()),
        ("tokenizer.ggml.scores", scores.value()),
        ("tokenizer.ggml.token_type", types.value()),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
        ("tokenizer.ggml.add_eos_token", Value::Bool(false)),
        ("general.quantization_version", Value::U32(2)),
        ("general.file_type", Value::U32(mix.ftype)),
    ];
    const ALIGNMENT: u64 = 32;
    let mut out = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(path)?);
    out.write_all(&gguf::header(&metadata, &specs, ALIGNMENT))?;
    let mut random = Random(0x5eed_5eed_5eed_5eed);
    for spec in &specs {
        let cols = spec.dims[0] as usize;
        let rows: usize = spec.dims[1..].iter().product::<u64>() as usize;
        let row_bytes = spec.ty.row_size(cols as u64).expect("whole blocks") as usize;
        // Norm weights near 1, matrices' entries of a trained model's size.
        let (center, spread) = if spec.dims.len() == 1 {
            (1.0, 0.1)
        } else {
            (0.0, 0.05)
        };
        let distinct: Vec<Vec<u8>> = (0..DISTINCT_ROWS.min(rows))
            .map(|_| {
                let values: Vec<f32> = (0..cols).map(|_| center + spread * random.next()).collect();
                let mut row = vec![0u8; row_bytes];
                kernels::quantize_row(spec.ty, &values, &mut row);
                row
            })
            .collect();
        for r in 0..rows {
            out.write_all(&distinct[r % distinct.len()])?;
        }
        let size = (rows * row_bytes) as u64;
        out.write_all(&vec![0u8; gguf::padding(size, ALIGNMENT)])?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama.cpp loading the seed's Q4_K_M (mistral-7b-instruct-v0.2.Q4_K_M.gguf) reports 65 f32,
    /// 193 q4_K and 33 q6_K tensors; the seed-shaped Q4_K_M has the same.
    #[test]
    fn the_q4_k_m_shape_has_the_seeds_tensor_types() {
        let tensors = typed(Mix::parse("Q4_K_M").unwrap());
        let count = |ty| tensors.iter().filter(|t| t.2 == ty).count();
        assert_eq!(tensors.len(), 291);
        assert_eq!(count(GgmlType::F32), 65);
        assert_eq!(count(GgmlType::Q4_K), 193);
        assert_eq!(count(GgmlType::Q6_K), 33);
    }

    #[test]
    fn the_vocabulary_has_the_seeds_size_and_layout() {
        let (tokens, scores, types) = vocabulary();
        assert_eq!(
            (tokens.len, scores.len, types.len),
            (N_VOCAB, N_VOCAB, N_VOCAB)
        );
        let a = Array::laid_out(tokens.elem_type, tokens.len, &tokens.bytes);
        let pieces = a.as_strings().unwrap();
        assert_eq!(pieces[..3], [&b"<unk>"[..], b"<s>", b"</s>"]);
        assert_eq!(pieces[3 + 0x41], b"<0x41>");
        let unique: std::collections::HashSet<_> = pieces.iter().collect();
        assert_eq!(unique.len(), N_VOCAB);
    }
}
