//! The transformer: hyperparameters and weights read from GGUF, and the forward pass.
//!
//! One forward pass covers the decoder-only families this runtime supports (`llama`, `qwen2`, `gemma3`);
//! they differ only in the switches of [`Config`]. The pass is written to be read top to bottom, like
//! llama2.c, with every numerically sensitive step done the way ggml's CPU backend does it, because
//! the product is judged against llama.cpp's logits.

use std::fmt;

use gguf::{Gguf, TensorInfo};
use half::f16;
use kernels::{GgmlType, QMatrix};
use rayon::prelude::*;

/// An error while building a model from a GGUF file: names the key or tensor at fault.
#[derive(Debug)]
pub struct ModelError(String);

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ModelError {}

impl From<gguf::GgufError> for ModelError {
    fn from(e: gguf::GgufError) -> Self {
        ModelError(e.to_string())
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, ModelError> {
    Err(ModelError(msg.into()))
}

/// The supported model families, by their `general.architecture` name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Gemma3,
}

impl Arch {
    pub const NAMES: &'static [&'static str] = &["llama", "qwen2", "gemma3"];

    fn from_name(name: &str) -> Option<Arch> {
        match name {
            "llama" => Some(Arch::Llama),
            "qwen2" => Some(Arch::Qwen2),
            "gemma3" => Some(Arch::Gemma3),
            _ => None,
        }
    }
}

/// How rotary position embedding pairs up the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (x[2i], x[2i+1]): llama, mistral.
    Normal,
    /// Halves (x[i], x[i + n/2]): GPT-NeoX, qwen2, gemma.
    Neox,
}

/// Hyperparameters, read from `<arch>.*` metadata keys.
#[derive(Clone, Debug)]
pub struct Config {
    pub arch: Arch,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim_k: usize,
    pub head_dim_v: usize,
    pub n_rot: usize,
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    pub rms_eps: f32,
    pub rope_style: RopeStyle,
    pub rope_base: f32,
    /// Rope base of sliding-window layers (gemma3 uses its own, 10000 unless the metadata says otherwise).
    pub rope_base_swa: f32,
    pub rope_freq_scale: f32,
    /// Keys further back than this many positions are masked on sliding-window layers.
    pub sliding_window: Option<usize>,
    /// Which layers use the sliding window.
    pub layer_is_swa: Vec<bool>,
    /// Multiplier applied to the query before attention (1/sqrt(head_dim) unless the family says otherwise).
    pub attn_scale: f32,
    /// Gemma multiplies the token embeddings by sqrt(n_embd).
    pub embd_scale: Option<f32>,
    pub final_logit_softcap: Option<f32>,
}

fn required_u32(g: &Gguf, key: &str) -> Result<usize, ModelError> {
    match g.get_u32(key)? {
        Some(v) => Ok(v as usize),
        None => err(format!("missing required metadata key {key}")),
    }
}

impl Config {
    pub fn from_gguf(g: &Gguf) -> Result<Config, ModelError> {
        let arch_name = g.architecture()?;
        let Some(arch) = Arch::from_name(arch_name) else {
            return err(format!(
                "unsupported architecture \"{arch_name}\" (general.architecture); supported: {}",
                Arch::NAMES.join(", ")
            ));
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let n_layer = required_u32(g, &key("block_count"))?;
        let n_embd = required_u32(g, &key("embedding_length"))?;
        let n_ff = required_u32(g, &key("feed_forward_length"))?;
        let n_head = required_u32(g, &key("attention.head_count"))?;
        let n_head_kv = match g.get_u32(&key("attention.head_count_kv"))? {
            Some(v) => v as usize,
            None => n_head,
        };
        if n_layer == 0
            || n_embd == 0
            || n_ff == 0
            || n_head == 0
            || n_head_kv == 0
            || n_head % n_head_kv != 0
        {
            return err(format!(
                "inconsistent hyperparameters: {} = {n_layer}, {} = {n_embd}, {} = {n_ff}, {} = {n_head}, {} = {n_head_kv}",
                key("block_count"),
                key("embedding_length"),
                key("feed_forward_length"),
                key("attention.head_count"),
                key("attention.head_count_kv")
            ));
        }
        // Every layer has its own tensors: a count the file cannot back would only size
        // allocations (the per-layer tables below) before the first missing tensor is noticed.
        if n_layer > g.tensors.len() {
            return err(format!(
                "{} = {n_layer}, but the file holds only {} tensors",
                key("block_count"),
                g.tensors.len()
            ));
        }
        // Head sizes default to the embedding split evenly across the heads.
        let head_dim = |k: &str| -> Result<usize, ModelError> {
            match g.get_u32(&key(k))? {
                Some(0) => err(format!("{} = 0", key(k))),
                Some(v) => Ok(v as usize),
                None if n_embd % n_head == 0 => Ok(n_embd / n_head),
                None => err(format!(
                    "{} is missing and {} = {n_embd} is not a multiple of {} = {n_head}",
                    key(k),
                    key("embedding_length"),
                    key("attention.head_count")
                )),
            }
        };
        let head_dim_k = head_dim("attention.key_length")?;
        let head_dim_v = head_dim("attention.value_length")?;
        let n_rot = match g.get_u32(&key("rope.dimension_count"))? {
            Some(v) => v as usize,
            None => head_dim_k,
        };
        if n_rot > head_dim_k || n_rot % 2 != 0 {
            return err(format!(
                "{} = {n_rot} must be even and at most the key length {head_dim_k} ({})",
                key("rope.dimension_count"),
                key("attention.key_length")
            ));
        }
        let rms_eps = match g.get_f32(&key("attention.layer_norm_rms_epsilon"))? {
            Some(v) => v,
            None => {
                return err(format!(
                    "missing required metadata key {}",
                    key("attention.layer_norm_rms_epsilon")
                ))
            }
        };
        let rope_base = g.get_f32(&key("rope.freq_base"))?.unwrap_or(10000.0);
        let rope_freq_scale = match g.get_f32(&key("rope.scaling.factor"))? {
            Some(f) if f > 0.0 => 1.0 / f,
            _ => 1.0,
        };
        let n_ctx_train = g
            .get_u32(&key("context_length"))?
            .map_or(4096, |v| v as usize);
        if n_ctx_train == 0 {
            return err(format!("{} = 0", key("context_length")));
        }
        let sliding_window = g
            .get_u32(&key("attention.sliding_window"))?
            .map(|v| v as usize)
            .filter(|&w| w > 0);

        let (rope_style, layer_is_swa, attn_scale, embd_scale, rope_base_swa) = match arch {
            Arch::Llama => (
                RopeStyle::Normal,
                vec![sliding_window.is_some(); n_layer],
                None,
                None,
                rope_base,
            ),
            Arch::Qwen2 => (
                RopeStyle::Neox,
                vec![sliding_window.is_some(); n_layer],
                None,
                None,
                rope_base,
            ),
            Arch::Gemma3 => {
                // Gemma 3 alternates five sliding-window layers with one global layer.
                let pattern = g
                    .get_u32(&key("attention.sliding_window_pattern"))?
                    .map_or(6, |v| v as usize);
                let is_swa = (0..n_layer)
                    .map(|il| {
                        sliding_window.is_some() && (pattern == 0 || il % pattern < pattern - 1)
                    })
                    .collect();
                let base_swa = g.get_f32(&key("rope.freq_base_swa"))?.unwrap_or(10000.0);
                (
                    RopeStyle::Neox,
                    is_swa,
                    None,
                    Some((n_embd as f32).sqrt()),
                    base_swa,
                )
            }
        };
        let attn_scale = attn_scale.unwrap_or(1.0 / (head_dim_k as f32).sqrt());
        let final_logit_softcap = g
            .get_f32(&key("final_logit_softcapping"))?
            .filter(|&c| c != 0.0);
        let n_vocab = match g.tensor("token_embd.weight") {
            Some(t) if t.dims.len() == 2 => t.dims[1] as usize,
            _ => return err("missing or malformed tensor token_embd.weight"),
        };
        Ok(Config {
            arch,
            n_layer,
            n_embd,
            n_ff,
            n_head,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            n_rot,
            n_vocab,
            n_ctx_train,
            rms_eps,
            rope_style,
            rope_base,
            rope_base_swa,
            rope_freq_scale,
            sliding_window,
            layer_is_swa,
            attn_scale,
            embd_scale,
            final_logit_softcap,
        })
    }
}

/// A 2-D weight, borrowed from the mapped file.
#[derive(Clone, Copy)]
pub struct Weight<'a> {
    pub ty: GgmlType,
    pub data: &'a [u8],
    pub rows: usize,
    pub cols: usize,
}

impl<'a> Weight<'a> {
    fn matrix(&self) -> QMatrix<'a> {
        QMatrix {
            ty: self.ty,
            data: self.data,
            rows: self.rows,
            cols: self.cols,
        }
    }

    /// y (n × rows) = x (n × cols) · Wᵀ
    fn apply(&self, x: &[f32], n: usize, y: &mut [f32]) {
        kernels::matmul(&self.matrix(), x, n, y);
    }
}

struct Layer<'a> {
    attn_norm: Vec<f32>,
    wq: Weight<'a>,
    wk: Weight<'a>,
    wv: Weight<'a>,
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    wo: Weight<'a>,
    post_attn_norm: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    w_gate: Weight<'a>,
    w_up: Weight<'a>,
    w_down: Weight<'a>,
    post_ffn_norm: Option<Vec<f32>>,
}

/// A loaded model: its configuration and weights borrowed from the GGUF bytes.
pub struct Model<'a> {
    pub config: Config,
    token_embd: Weight<'a>,
    output_norm: Vec<f32>,
    output: Weight<'a>,
    layers: Vec<Layer<'a>>,
}

struct Loader<'g, 'a> {
    g: &'g Gguf<'a>,
}

impl<'a> Loader<'_, 'a> {
    fn find(&self, name: &str) -> Option<&TensorInfo<'a>> {
        self.g.tensor(name)
    }

    fn weight(&self, name: &str, cols: usize, rows: usize) -> Result<Weight<'a>, ModelError> {
        let Some(t) = self.find(name) else {
            return err(format!("missing tensor {name}"));
        };
        self.check(t, &[cols, rows])?;
        Ok(Weight {
            ty: t.ty,
            data: t.data,
            rows,
            cols,
        })
    }

    fn check(&self, t: &TensorInfo<'a>, dims: &[usize]) -> Result<(), ModelError> {
        let found: Vec<u64> = t.dims.clone();
        let want: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
        // Trailing dimensions of 1 are insignificant.
        let trim = |v: &[u64]| {
            let mut v = v.to_vec();
            while v.len() > 1 && v.last() == Some(&1) {
                v.pop();
            }
            v
        };
        if trim(&found) != trim(&want) {
            return err(format!(
                "tensor {} has shape {:?}, expected {:?}",
                t.name, found, want
            ));
        }
        Ok(())
    }

    /// Small vectors (norms, biases) are converted to f32 on the heap: they are read on every token.
    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        match self.optional_vector(name, len)? {
            Some(v) => Ok(v),
            None => err(format!("missing tensor {name}")),
        }
    }

    fn optional_vector(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>, ModelError> {
        let Some(t) = self.find(name) else {
            return Ok(None);
        };
        self.check(t, &[len])?;
        let mut out = vec![0.0f32; len];
        kernels::dequantize_row(t.ty, t.data, &mut out);
        Ok(Some(out))
    }
}

impl<'a> Model<'a> {
    pub fn load(g: &Gguf<'a>) -> Result<Model<'a>, ModelError> {
        let config = Config::from_gguf(g)?;
        let c = &config;
        let l = Loader { g };
        let token_embd = l.weight("token_embd.weight", c.n_embd, c.n_vocab)?;
        let output = if l.find("output.weight").is_some() {
            l.weight("output.weight", c.n_embd, c.n_vocab)?
        } else {
            // Tied embeddings: the output projection reuses the token embedding matrix.
            token_embd
        };
        let output_norm = l.vector("output_norm.weight", c.n_embd)?;
        let q_dim = c.n_head * c.head_dim_k;
        let k_dim = c.n_head_kv * c.head_dim_k;
        let v_dim = c.n_head_kv * c.head_dim_v;
        let o_dim = c.n_head * c.head_dim_v;
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}");
            let gemma = c.arch == Arch::Gemma3;
            let required_if =
                |cond: bool, name: &str, len: usize| -> Result<Option<Vec<f32>>, ModelError> {
                    if cond {
                        l.vector(&n(name), len).map(Some)
                    } else {
                        l.optional_vector(&n(name), len)
                    }
                };
            layers.push(Layer {
                attn_norm: l.vector(&n("attn_norm.weight"), c.n_embd)?,
                wq: l.weight(&n("attn_q.weight"), c.n_embd, q_dim)?,
                wk: l.weight(&n("attn_k.weight"), c.n_embd, k_dim)?,
                wv: l.weight(&n("attn_v.weight"), c.n_embd, v_dim)?,
                bq: required_if(c.arch == Arch::Qwen2, "attn_q.bias", q_dim)?,
                bk: required_if(c.arch == Arch::Qwen2, "attn_k.bias", k_dim)?,
                bv: required_if(c.arch == Arch::Qwen2, "attn_v.bias", v_dim)?,
                q_norm: required_if(gemma, "attn_q_norm.weight", c.head_dim_k)?,
                k_norm: required_if(gemma, "attn_k_norm.weight", c.head_dim_k)?,
                wo: l.weight(&n("attn_output.weight"), o_dim, c.n_embd)?,
                post_attn_norm: required_if(gemma, "post_attention_norm.weight", c.n_embd)?,
                ffn_norm: l.vector(&n("ffn_norm.weight"), c.n_embd)?,
                w_gate: l.weight(&n("ffn_gate.weight"), c.n_embd, c.n_ff)?,
                w_up: l.weight(&n("ffn_up.weight"), c.n_embd, c.n_ff)?,
                w_down: l.weight(&n("ffn_down.weight"), c.n_ff, c.n_embd)?,
                post_ffn_norm: required_if(gemma, "post_ffw_norm.weight", c.n_embd)?,
            });
        }
        Ok(Model {
            config,
            token_embd,
            output_norm,
            output,
            layers,
        })
    }

    /// A KV cache for up to `n_ctx` positions.
    pub fn new_cache(&self, n_ctx: usize) -> KvCache {
        let c = &self.config;
        let k_row = c.n_head_kv * c.head_dim_k;
        let v_row = c.n_head_kv * c.head_dim_v;
        KvCache {
            n_ctx,
            k_row,
            v_row,
            k: (0..c.n_layer).map(|_| zeroed_f16(n_ctx * k_row)).collect(),
            v: (0..c.n_layer).map(|_| zeroed_f16(n_ctx * v_row)).collect(),
        }
    }

    /// Runs one sequence's `tokens` at positions `pos0..` through the model; see [`Model::forward_batch`].
    pub fn forward(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        pos0: usize,
        rows: Rows,
        output: Output,
    ) -> Vec<f32> {
        self.forward_batch(
            &mut [SeqInput {
                cache,
                tokens,
                pos0,
                rows,
            }],
            output,
        )
    }

    /// Runs the tokens of several independent sequences through the model in one pass: the weight
    /// matrices are read once for all of them (continuous batching), each sequence attends only to
    /// its own cache. Each sequence's keys and values are written into its cache at `pos0..`.
    /// Returns the rows each sequence asks for (every token's, or its last token's), sequence after
    /// sequence: logits (n_vocab wide) or final hidden states (n_embd wide).
    pub fn forward_batch(&self, seqs: &mut [SeqInput<'_>], output: Output) -> Vec<f32> {
        // The whole pass runs on one of rayon's worker threads (`scope` moves it there from a
        // caller outside the pool): each of its ~200 parallel loops per token then starts from a
        // worker, whose idle peers are still spinning, instead of waking the pool from outside.
        rayon::scope(|_| self.forward_on_pool(seqs, output))
    }

    fn forward_on_pool(&self, seqs: &mut [SeqInput<'_>], output: Output) -> Vec<f32> {
        let c = &self.config;
        let tokens: Vec<u32> = seqs.iter().flat_map(|s| s.tokens.iter().copied()).collect();
        let positions: Vec<usize> = seqs
            .iter()
            .flat_map(|s| s.pos0..s.pos0 + s.tokens.len())
            .collect();
        for s in seqs.iter() {
            assert!(
                !s.tokens.is_empty() && s.pos0 + s.tokens.len() <= s.cache.n_ctx,
                "forward: batch exceeds the KV cache"
            );
        }
        let n = tokens.len();
        let d = c.n_embd;
        let q_dim = c.n_head * c.head_dim_k;
        let k_dim = c.n_head_kv * c.head_dim_k;
        let v_dim = c.n_head_kv * c.head_dim_v;
        let o_dim = c.n_head * c.head_dim_v;

        // Token embeddings: get_rows dequantizes each token's row.
        let mut x = vec![0.0f32; n * d];
        let row_bytes = self.token_embd.data.len() / self.token_embd.rows;
        for (t, &tok) in tokens.iter().enumerate() {
            let tok = tok as usize;
            let row = &self.token_embd.data[tok * row_bytes..(tok + 1) * row_bytes];
            kernels::dequantize_row(self.token_embd.ty, row, &mut x[t * d..(t + 1) * d]);
        }
        if let Some(s) = c.embd_scale {
            x.iter_mut().for_each(|v| *v *= s);
        }

        let mut xn = vec![0.0f32; n * d];
        let mut q = vec![0.0f32; n * q_dim];
        let mut k = vec![0.0f32; n * k_dim];
        let mut v = vec![0.0f32; n * v_dim];
        let mut attn = vec![0.0f32; n * o_dim];
        let mut proj = vec![0.0f32; n * d];
        let mut gate = vec![0.0f32; n * c.n_ff];
        let mut up = vec![0.0f32; n * c.n_ff];

        for (il, layer) in self.layers.iter().enumerate() {
            rms_norm_rows(&x, &mut xn, d, &layer.attn_norm, c.rms_eps);
            layer.wq.apply(&xn, n, &mut q);
            layer.wk.apply(&xn, n, &mut k);
            layer.wv.apply(&xn, n, &mut v);
            add_bias_rows(&mut q, layer.bq.as_deref());
            add_bias_rows(&mut k, layer.bk.as_deref());
            add_bias_rows(&mut v, layer.bv.as_deref());
            if let Some(w) = &layer.q_norm {
                rms_norm_in_place(&mut q, c.head_dim_k, w, c.rms_eps);
            }
            if let Some(w) = &layer.k_norm {
                rms_norm_in_place(&mut k, c.head_dim_k, w, c.rms_eps);
            }
            let swa = c.layer_is_swa[il];
            let base = if swa { c.rope_base_swa } else { c.rope_base };
            rope(
                &mut q,
                c.n_head,
                c.head_dim_k,
                c.n_rot,
                &positions,
                base,
                c.rope_freq_scale,
                c.rope_style,
            );
            rope(
                &mut k,
                c.n_head_kv,
                c.head_dim_k,
                c.n_rot,
                &positions,
                base,
                c.rope_freq_scale,
                c.rope_style,
            );

            let window = if swa { c.sliding_window } else { None };
            let mut row = 0;
            for s in seqs.iter_mut() {
                let len = s.tokens.len();
                s.cache.store(
                    il,
                    s.pos0,
                    &k[row * k_dim..(row + len) * k_dim],
                    &v[row * v_dim..(row + len) * v_dim],
                );
                self.attention(
                    s.cache,
                    il,
                    &q[row * q_dim..(row + len) * q_dim],
                    s.pos0,
                    window,
                    &mut attn[row * o_dim..(row + len) * o_dim],
                );
                row += len;
            }

            layer.wo.apply(&attn, n, &mut proj);
            if let Some(w) = &layer.post_attn_norm {
                rms_norm_in_place(&mut proj, d, w, c.rms_eps);
            }
            add_rows(&mut x, &proj, d);

            rms_norm_rows(&x, &mut xn, d, &layer.ffn_norm, c.rms_eps);
            layer.w_gate.apply(&xn, n, &mut gate);
            layer.w_up.apply(&xn, n, &mut up);
            match c.arch {
                Arch::Gemma3 => each_row(&mut gate, c.n_ff, |i, g| {
                    kernels::elementwise::gelu_mul(g, &up[i * c.n_ff..(i + 1) * c.n_ff])
                }),
                Arch::Llama | Arch::Qwen2 => each_row(&mut gate, c.n_ff, |i, g| {
                    kernels::elementwise::silu_mul(g, &up[i * c.n_ff..(i + 1) * c.n_ff])
                }),
            }
            layer.w_down.apply(&gate, n, &mut proj);
            if let Some(w) = &layer.post_ffn_norm {
                rms_norm_in_place(&mut proj, d, w, c.rms_eps);
            }
            add_rows(&mut x, &proj, d);
        }

        // The final norm and the (large) output projection only for the rows asked for.
        let mut x_out: Vec<f32> = Vec::with_capacity(x.len());
        let mut end = 0;
        for s in seqs.iter() {
            let start = end;
            end += s.tokens.len();
            let first = match s.rows {
                Rows::All => start,
                Rows::Last => end - 1,
            };
            x_out.extend_from_slice(&x[first * d..end * d]);
        }
        drop(x);
        let rows = x_out.len() / d;
        let mut xn = vec![0.0f32; rows * d];
        rms_norm_rows(&x_out, &mut xn, d, &self.output_norm, c.rms_eps);
        if output == Output::Hidden {
            return xn;
        }
        let mut out = vec![0.0f32; rows * c.n_vocab];
        self.output.apply(&xn, rows, &mut out);
        if let Some(cap) = c.final_logit_softcap {
            out.iter_mut().for_each(|v| *v = (*v / cap).tanh() * cap);
        }
        out
    }

    /// Causal self-attention of the queries in `q` (one row per token, positions pos0..) over the
    /// cache, heads in parallel.
    fn attention(
        &self,
        cache: &KvCache,
        il: usize,
        q: &[f32],
        pos0: usize,
        window: Option<usize>,
        out: &mut [f32],
    ) {
        let c = &self.config;
        let (dk, dv) = (c.head_dim_k, c.head_dim_v);
        let group = c.n_head / c.n_head_kv;
        let q_dim = c.n_head * dk;
        let o_dim = c.n_head * dv;
        let n = q.len() / q_dim;
        let scale = c.attn_scale;
        let k_cache = &cache.k[il];
        let v_cache = &cache.v[il];
        // ggml's CPU flash attention takes one of two paths by batch size, and they round
        // differently: fewer than 64 queries go through its vector path (query rounded to f16, the
        // weighted sum of values accumulated in f16 with an online softmax); larger batches go through
        // its tiled path (f32 query, f32 accumulation). Both are followed here.
        if n >= 64 {
            return self.attention_tiled(cache, il, q, pos0, window, out);
        }
        // One task per (token, head): each writes its own dv-long slice of `out`.
        out[..n * o_dim]
            .par_chunks_mut(dv)
            .enumerate()
            .for_each_init(
                || AttentionScratch::new(dk, dv),
                |sc, (i, out_h)| {
                    let t = i / c.n_head;
                    let h = i % c.n_head;
                    let hk = h / group;
                    let pos = pos0 + t;
                    let first = match window {
                        Some(w) => (pos + 1).saturating_sub(w),
                        None => 0,
                    };
                    let qrow = &q[t * q_dim + h * dk..t * q_dim + (h + 1) * dk];
                    kernels::f32_to_f16_row(qrow, &mut sc.q16);
                    // Key and value rows of this KV head, from the window's first position on.
                    let sum = kernels::attend_f16(
                        &sc.q16,
                        &k_cache[first * cache.k_row + hk * dk..],
                        cache.k_row,
                        &v_cache[first * cache.v_row + hk * dv..],
                        cache.v_row,
                        pos + 1 - first,
                        scale,
                        &mut sc.acc16,
                    );
                    kernels::f16_to_f32_row(&sc.acc16, &mut sc.acc);
                    let inv = 1.0 / sum;
                    out_h
                        .iter_mut()
                        .zip(&sc.acc)
                        .for_each(|(o, &a)| *o = a * inv);
                },
            );
    }

    /// [`Model::attention`] for 64 queries or more, as ggml's tiled path (f32 queries and sums):
    /// the cache converted to f32 once per layer, keys transposed, and each task taking a block
    /// of tokens with all the query heads of one KV head, so that every key and value it loads
    /// serves many query rows.
    fn attention_tiled(
        &self,
        cache: &KvCache,
        il: usize,
        q: &[f32],
        pos0: usize,
        window: Option<usize>,
        out: &mut [f32],
    ) {
        const TOKENS: usize = 4;
        let c = &self.config;
        let (dk, dv) = (c.head_dim_k, c.head_dim_v);
        let group = c.n_head / c.n_head_kv;
        let (q_dim, o_dim) = (c.n_head * dk, c.n_head * dv);
        let n = q.len() / q_dim;
        let first_of = |pos: usize| match window {
            Some(w) => (pos + 1).saturating_sub(w),
            None => 0,
        };
        let first_seen = first_of(pos0);
        let positions = pos0 + n - first_seen;
        // Keys as columns: per KV head, `dk` rows of `stride` positions.
        let stride = column_stride(positions);
        let mut kt = vec![0.0f32; cache.k_row * stride];
        let mut krow = vec![0.0f32; cache.k_row];
        let k_rows = &cache.k[il][first_seen * cache.k_row..(pos0 + n) * cache.k_row];
        for (i, row) in k_rows.chunks_exact(cache.k_row).enumerate() {
            kernels::f16_to_f32_row(row, &mut krow);
            for (e, &v) in krow.iter().enumerate() {
                kt[e * stride + i] = v;
            }
        }
        let mut vf = vec![0.0f32; positions * cache.v_row];
        kernels::f16_to_f32_row(
            &cache.v[il][first_seen * cache.v_row..(pos0 + n) * cache.v_row],
            &mut vf,
        );
        out[..n * o_dim]
            .par_chunks_mut(TOKENS * o_dim)
            .enumerate()
            .for_each_init(Vec::new, |buf: &mut Vec<f32>, (blk, out)| {
                let t0 = blk * TOKENS;
                let tokens = out.len() / o_dim;
                let rows = tokens * group;
                // Keys any row of the block sees: from the first token's window start to the
                // last token's position, relative to `first_seen`.
                let lo = first_of(pos0 + t0) - first_seen;
                let keys = pos0 + t0 + tokens - first_seen - lo;
                buf.resize(rows * (dk + keys + dv + 1), 0.0);
                let (qs, rest) = buf.split_at_mut(rows * dk);
                let (scores, rest) = rest.split_at_mut(rows * keys);
                let (acc, inv) = rest.split_at_mut(rows * dv);
                for hk in 0..c.n_head_kv {
                    // Row r: token t0 + r / group, head hk * group + r % group.
                    for (r, dst) in qs.chunks_exact_mut(dk).enumerate() {
                        let (t, h) = (t0 + r / group, hk * group + r % group);
                        dst.copy_from_slice(&q[t * q_dim + h * dk..t * q_dim + (h + 1) * dk]);
                    }
                    kernels::dot_columns(qs, dk, &kt[hk * dk * stride + lo..], stride, scores);
                    for (r, row) in scores.chunks_exact_mut(keys).enumerate() {
                        let pos = pos0 + t0 + r / group;
                        // This row's keys: its own window start through its own position.
                        let (a, b) = (first_of(pos) - first_seen - lo, pos + 1 - first_seen - lo);
                        // The scale is positive: the largest score scales to the largest product.
                        let max = kernels::elementwise::max(&row[a..b]) * c.attn_scale;
                        row[..a].fill(0.0);
                        row[b..].fill(0.0);
                        let sum = kernels::elementwise::softmax_numerators(
                            &mut row[a..b],
                            c.attn_scale,
                            max,
                        );
                        inv[r] = 1.0 / sum;
                    }
                    kernels::weighted_sum_rows(
                        scores,
                        keys,
                        &vf[lo * cache.v_row + hk * dv..],
                        cache.v_row,
                        acc,
                    );
                    for (r, a) in acc.chunks_exact(dv).enumerate() {
                        let (t, h) = (r / group, hk * group + r % group);
                        let dst = &mut out[t * o_dim + h * dv..t * o_dim + (h + 1) * dv];
                        dst.iter_mut().zip(a).for_each(|(o, &a)| *o = a * inv[r]);
                    }
                }
            });
    }
}

/// Per-thread buffers of [`Model::attention`].
struct AttentionScratch {
    q16: Vec<f16>,
    acc: Vec<f32>,
    acc16: Vec<f16>,
}

impl AttentionScratch {
    fn new(dk: usize, dv: usize) -> Self {
        AttentionScratch {
            q16: vec![f16::ZERO; dk],
            acc: vec![0.0; dv],
            acc16: vec![f16::ZERO; dv],
        }
    }
}

/// One sequence's part of a batched forward pass.
pub struct SeqInput<'c> {
    pub cache: &'c mut KvCache,
    pub tokens: &'c [u32],
    /// Position of the first token; the cache holds this sequence's positions before it.
    pub pos0: usize,
    /// Which of its tokens the pass returns a row for.
    pub rows: Rows,
}

/// Which of a sequence's tokens a forward pass returns a row for: the last one's is what
/// generation samples from; every one's is what prompt scoring and embeddings need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    All,
    Last,
}

/// What a forward pass returns for each row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// n_vocab logits.
    Logits,
    /// No logits: the final hidden state after the output norm (n_embd), the vector llama.cpp
    /// pools into embeddings.
    Hidden,
}

/// Keys and values of past positions, per layer, in f16 as llama.cpp keeps them.
pub struct KvCache {
    pub n_ctx: usize,
    k_row: usize,
    v_row: usize,
    k: Vec<Vec<f16>>,
    v: Vec<Vec<f16>>,
}

impl KvCache {
    fn store(&mut self, il: usize, pos0: usize, k: &[f32], v: &[f32]) {
        let kd = &mut self.k[il][pos0 * self.k_row..pos0 * self.k_row + k.len()];
        kernels::f32_to_f16_row(k, kd);
        let vd = &mut self.v[il][pos0 * self.v_row..pos0 * self.v_row + v.len()];
        kernels::f32_to_f16_row(v, vd);
    }
}

/// The row length of the transposed keys for `positions` positions: whole cache lines, and not a
/// multiple of 4 KiB apart, where successive rows would all compete for the same few L1 sets.
fn column_stride(positions: usize) -> usize {
    positions.next_multiple_of(16) + 16
}

/// `n` zero f16s from the allocator's zeroed memory: for a large cache that is fresh pages from
/// the kernel, which cost nothing (no memset, no resident memory) until a position is written,
/// where `vec![f16::ZERO; n]` would write every byte up front.
fn zeroed_f16(n: usize) -> Vec<f16> {
    let zeros = std::mem::ManuallyDrop::new(vec![0u16; n]);
    let (ptr, len, cap) = (zeros.as_ptr().cast_mut(), zeros.len(), zeros.capacity());
    // SAFETY: f16 has the size and alignment of u16, and the all-zero bit pattern is +0.0; the
    // allocation is handed over whole (ManuallyDrop keeps the u16 vector from freeing it).
    unsafe { Vec::from_raw_parts(ptr.cast::<f16>(), len, cap) }
}

/// Calls `f(i, row)` for each `width`-long row `i` of `x`: spread over rayon's pool when there
/// are enough rows to be worth it (a prompt), in order on this thread otherwise (a generated
/// token, where waking the pool would cost more than the work).
fn each_row(x: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    const PARALLEL_ROWS: usize = 8;
    if x.len() / width >= PARALLEL_ROWS && rayon::current_num_threads() > 1 {
        x.par_chunks_exact_mut(width)
            .enumerate()
            .with_min_len(PARALLEL_ROWS / 2)
            .for_each(|(i, row)| f(i, row));
    } else {
        x.chunks_exact_mut(width)
            .enumerate()
            .for_each(|(i, row)| f(i, row));
    }
}

/// ggml's rms_norm scale of a row: `1 / sqrt(mean(x²) + eps)`, the squares summed in f64.
fn rms_scale(x: &[f32], eps: f32) -> f32 {
    let sum: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let mean = (sum / x.len() as f64) as f32;
    1.0 / (mean + eps).sqrt()
}

/// ggml's rms_norm followed by the elementwise weight, row by row: `out = x · rms_scale(x) · w`.
fn rms_norm_rows(x: &[f32], out: &mut [f32], d: usize, w: &[f32], eps: f32) {
    each_row(out, d, |i, row| {
        let x = &x[i * d..(i + 1) * d];
        let scale = rms_scale(x, eps);
        for ((o, &v), &wv) in row.iter_mut().zip(x).zip(w) {
            *o = (v * scale) * wv;
        }
    });
}

/// [`rms_norm_rows`] with the output in place of the input.
fn rms_norm_in_place(x: &mut [f32], d: usize, w: &[f32], eps: f32) {
    each_row(x, d, |_, row| {
        let scale = rms_scale(row, eps);
        for (v, &wv) in row.iter_mut().zip(w) {
            *v = (*v * scale) * wv;
        }
    });
}

fn add_bias_rows(x: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        each_row(x, b.len(), |_, row| add_in_place(row, b));
    }
}

fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// `x += y`, row-parallel for a batch of `d`-wide rows.
fn add_rows(x: &mut [f32], y: &[f32], d: usize) {
    each_row(x, d, |i, row| add_in_place(row, &y[i * d..(i + 1) * d]));
}

/// Rotary position embedding of every head in `x`: `n_heads` heads of `head_dim` per token row, row t at
/// `positions[t]`; the first `n_rot` dimensions of each head rotate. The angles follow ggml's
/// recurrence (theta multiplied by theta_scale in f32 once per pair) so that they round alike.
#[allow(clippy::too_many_arguments)]
fn rope(
    x: &mut [f32],
    n_heads: usize,
    head_dim: usize,
    n_rot: usize,
    positions: &[usize],
    base: f32,
    freq_scale: f32,
    style: RopeStyle,
) {
    let theta_scale = base.powf(-2.0 / n_rot as f32);
    each_row(x, n_heads * head_dim, |t, row| {
        let mut theta = positions[t] as f32;
        let cos_sin: Vec<(f32, f32)> = (0..n_rot / 2)
            .map(|_| {
                let th = theta * freq_scale;
                theta *= theta_scale;
                (th.cos(), th.sin())
            })
            .collect();
        for head in row.chunks_exact_mut(head_dim) {
            for (i, &(cos, sin)) in cos_sin.iter().enumerate() {
                let (a, b) = match style {
                    RopeStyle::Normal => (2 * i, 2 * i + 1),
                    RopeStyle::Neox => (i, i + n_rot / 2),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * cos - x1 * sin;
                head[b] = x0 * sin + x1 * cos;
            }
        }
    });
}
