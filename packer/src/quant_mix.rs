//! Which type each tensor gets in a quantization mix: llama.cpp's rules (`llama_tensor_get_type`
//! and its helpers in src/llama-quant.cpp, commit 0c1e570), for the mixes `llama-quantize` offers
//! without an importance matrix. The same input and mix give the same type for every tensor, so a
//! Q4_K_M made here is laid out as llama.cpp's Q4_K_M.

use anyhow::{bail, Result};
use kernels::GgmlType;

/// A quantization mix, as `llama-quantize` names it: its `general.file_type` id and the type most
/// tensors get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    pub name: &'static str,
    /// llama.cpp's `llama_ftype`, written as `general.file_type`.
    pub ftype: u32,
    pub default_type: GgmlType,
}

/// Every mix, in `llama-quantize --help`'s order; the aliases Q3_K, Q4_K and Q5_K name the _M mixes.
pub const MIXES: &[Mix] = &[
    mix("Q4_0", 2, GgmlType::Q4_0),
    mix("Q4_1", 3, GgmlType::Q4_1),
    mix("Q5_0", 8, GgmlType::Q5_0),
    mix("Q5_1", 9, GgmlType::Q5_1),
    mix("Q2_K", 10, GgmlType::Q2_K),
    mix("Q3_K_S", 11, GgmlType::Q3_K),
    mix("Q3_K_M", 12, GgmlType::Q3_K),
    mix("Q3_K_L", 13, GgmlType::Q3_K),
    mix("Q4_K_S", 14, GgmlType::Q4_K),
    mix("Q4_K_M", 15, GgmlType::Q4_K),
    mix("Q5_K_S", 16, GgmlType::Q5_K),
    mix("Q5_K_M", 17, GgmlType::Q5_K),
    mix("Q6_K", 18, GgmlType::Q6_K),
    mix("Q8_0", 7, GgmlType::Q8_0),
    mix("F16", 1, GgmlType::F16),
    mix("BF16", 32, GgmlType::BF16),
    mix("F32", 0, GgmlType::F32),
];

const ALIASES: &[(&str, &str)] = &[("Q3_K", "Q3_K_M"), ("Q4_K", "Q4_K_M"), ("Q5_K", "Q5_K_M")];

const fn mix(name: &'static str, ftype: u32, default_type: GgmlType) -> Mix {
    Mix {
        name,
        ftype,
        default_type,
    }
}

impl Mix {
    /// The mix called `name` (case-insensitive, aliases included).
    pub fn parse(name: &str) -> Result<Mix> {
        let upper = name.to_ascii_uppercase();
        let canonical = ALIASES
            .iter()
            .find(|(alias, _)| *alias == upper)
            .map_or(upper.as_str(), |(_, to)| to);
        match MIXES.iter().find(|m| m.name == canonical) {
            Some(m) => Ok(*m),
            None => bail!(
                "unknown quantization type {name:?}; choose one of {} (Q3_K, Q4_K, Q5_K name the _M mixes)",
                MIXES.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    fn is(&self, name: &str) -> bool {
        self.name == name
    }
}

/// What the rules need to know about the model (llama.cpp reads it from the hyperparameters).
#[derive(Debug, Clone)]
pub struct ModelShape {
    pub arch: String,
    pub n_layer: u32,
    /// Query heads per KV head in layer 0 (`n_gqa()`).
    pub n_gqa: u32,
    pub n_expert: u32,
    /// llama.cpp's `LLM_TYPE_70B`: a llama-architecture model with 80 layers and grouped KV heads,
    /// whose attn_v gets more bits.
    pub is_70b: bool,
}

/// A tensor as the rules see it.
pub struct TensorIn<'a> {
    pub name: &'a str,
    /// ne0 (row length) first.
    pub dims: &'a [u64],
    pub ty: GgmlType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Output,
    TokenEmbd,
    AttentionQkv,
    AttentionKvB,
    AttentionV,
    AttentionK,
    AttentionQ,
    AttentionOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

fn category(name: &str) -> Category {
    use Category::*;
    if name == "output.weight" {
        return Output;
    }
    if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        return TokenEmbd;
    }
    for (part, cat) in [
        ("attn_qkv.weight", AttentionQkv),
        ("attn_kv_b.weight", AttentionKvB),
        ("attn_v.weight", AttentionV),
        ("attn_k.weight", AttentionK),
        ("attn_q.weight", AttentionQ),
        ("attn_output.weight", AttentionOutput),
        ("ffn_up", FfnUp),
        ("ffn_gate", FfnGate),
        ("ffn_down", FfnDown),
    ] {
        if name.contains(part) {
            return cat;
        }
    }
    Other
}

/// Names llama.cpp never quantizes, though they are 2-D weights (`tensor_allows_quantization`).
const KEEP_NAMES_CONTAINING: &[&str] = &[
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    "time_mix_first.weight",
    "time_mix_w0.weight",
    "time_mix_w1.weight",
    "time_mix_w2.weight",
    "time_mix_v0.weight",
    "time_mix_v1.weight",
    "time_mix_v2.weight",
    "time_mix_a0.weight",
    "time_mix_a1.weight",
    "time_mix_a2.weight",
    "time_mix_g1.weight",
    "time_mix_g2.weight",
    "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",
    "mm.a.code_embd",
];

/// Whether llama.cpp would quantize this tensor at all: 2-D or more, a `weight`, and none of the
/// small or sensitive ones it keeps as they are.
pub fn allows_quantization(t: &TensorIn) -> bool {
    n_dims(t.dims) >= 2
        && t.name.ends_with("weight")
        && !KEEP_NAMES_CONTAINING.iter().any(|k| t.name.contains(k))
        && t.name != "position_embd.weight"
        && t.name != "token_types.weight"
}

/// The order llama.cpp's model loader keeps tensors in, which `llama-quantize` writes them in and
/// counts layers by: by block number (tensors outside `blk.N.` first), then by name.
pub fn loader_order(a: &str, b: &str) -> std::cmp::Ordering {
    let layer = |name: &str| -> i64 {
        name.strip_prefix("blk.")
            .and_then(|rest| rest.split('.').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(-1)
    };
    layer(a).cmp(&layer(b)).then_with(|| a.cmp(b))
}

/// The type chooser for one pass over a model's tensors in [`loader_order`]: it counts attn_v
/// and ffn_down tensors as llama.cpp does, so call [`TypeChooser::choose`] once per tensor, in order.
pub struct TypeChooser<'a> {
    mix: Mix,
    pure: bool,
    shape: &'a ModelShape,
    n_attention_wv: u32,
    has_tied_embeddings: bool,
    i_attention_wv: u32,
    i_ffn_down: u32,
}

impl<'a> TypeChooser<'a> {
    /// `names` are all the model's tensors. With `pure`, every quantizable tensor gets the mix's
    /// default type (llama-quantize's `--pure`), except where its rows do not fit the blocks.
    pub fn new(mix: Mix, pure: bool, shape: &'a ModelShape, names: &[&str]) -> TypeChooser<'a> {
        let cats: Vec<Category> = names.iter().map(|n| category(n)).collect();
        TypeChooser {
            mix,
            pure,
            shape,
            n_attention_wv: cats
                .iter()
                .filter(|c| {
                    matches!(
                        c,
                        Category::AttentionV | Category::AttentionQkv | Category::AttentionKvB
                    )
                })
                .count() as u32,
            has_tied_embeddings: !cats.contains(&Category::Output),
            i_attention_wv: 0,
            i_ffn_down: 0,
        }
    }

    /// The type tensor `t` gets (its own type if it is not to be quantized).
    pub fn choose(&mut self, t: &TensorIn) -> GgmlType {
        if !allows_quantization(t) {
            return t.ty;
        }
        let default = self.mix.default_type;
        if !is_quantized(default) {
            return default;
        }
        let chosen = if self.pure {
            default
        } else {
            self.rules(t, default)
        };
        fallback(t.dims[0], chosen)
    }

    /// llama_tensor_get_type_impl, for the mixes in [`MIXES`].
    fn rules(&mut self, t: &TensorIn, default: GgmlType) -> GgmlType {
        use GgmlType::*;
        let m = self.mix;
        let s = self.shape;
        let falcon = s.arch == "falcon";
        let use_more_bits =
            |i: u32, n: u32| i < n / 8 || i >= 7 * n / 8 || (i as i64 - (n / 8) as i64) % 3 == 2;
        let cat = category(t.name);
        let mut ty = default;
        match cat {
            Category::Output | Category::TokenEmbd
                if cat == Category::Output || self.has_tied_embeddings =>
            {
                // The output matrix (and the embeddings that double as it) get Q6_K, or Q8_0
                // where the rows do not fit 256-blocks.
                if falcon || !t.dims[0].is_multiple_of(default.block_size() as u64) {
                    ty = Q8_0;
                } else if ty != Q8_0 {
                    ty = Q6_K;
                }
            }
            Category::TokenEmbd => {}
            // llama.cpp tests "attn_v-like" (which takes in fused QKV and MLA's KV_B) before its
            // own QKV branch, so that branch never runs; neither does it here.
            Category::AttentionV | Category::AttentionQkv | Category::AttentionKvB => {
                let i = self.i_attention_wv;
                let n = self.n_attention_wv;
                if m.is("Q2_K") {
                    ty = if s.n_gqa >= 4 { Q4_K } else { Q3_K };
                } else if m.is("Q3_K_M") {
                    ty = if i < 2 { Q5_K } else { Q4_K };
                } else if m.is("Q3_K_L") {
                    ty = Q5_K;
                } else if (m.is("Q4_K_M") || m.is("Q5_K_M")) && use_more_bits(i, n) {
                    ty = Q6_K;
                } else if m.is("Q4_K_S") && i < 4 {
                    ty = Q5_K;
                }
                if s.is_70b && (ty == Q3_K || ty == Q4_K) {
                    ty = Q5_K;
                }
                if s.n_expert == 8 {
                    ty = Q8_0;
                }
                self.i_attention_wv += 1;
            }
            Category::AttentionK if s.n_expert == 8 => ty = Q8_0,
            Category::FfnDown => {
                let (i, n) = self.layer_of(t.name, self.i_ffn_down);
                if m.is("Q2_K") {
                    ty = Q3_K;
                } else if m.is("Q3_K_M") {
                    ty = if i < n / 16 {
                        Q5_K
                    } else if !falcon || use_more_bits(i, n) {
                        Q4_K
                    } else {
                        Q3_K
                    };
                } else if m.is("Q3_K_L") {
                    ty = if falcon { Q4_K } else { Q5_K };
                } else if m.is("Q4_K_M") {
                    if falcon {
                        ty = if i < n / 16 {
                            Q6_K
                        } else if use_more_bits(i, n) {
                            Q5_K
                        } else {
                            Q4_K
                        };
                    } else if use_more_bits(i, n) {
                        ty = Q6_K;
                    }
                } else if m.is("Q5_K_M") && use_more_bits(i, n) {
                    ty = Q6_K;
                } else if m.is("Q4_K_S") && !falcon && i < n / 8 {
                    ty = Q5_K;
                }
                self.i_ffn_down += 1;
            }
            Category::AttentionOutput => {
                if !falcon {
                    if s.n_expert == 8 {
                        if ["Q2_K", "Q3_K_S", "Q3_K_M", "Q4_K_S", "Q4_K_M"].contains(&m.name) {
                            ty = Q5_K;
                        }
                    } else if m.is("Q2_K") {
                        ty = Q3_K;
                    } else if m.is("Q3_K_M") {
                        ty = Q4_K;
                    } else if m.is("Q3_K_L") {
                        ty = Q5_K;
                    }
                } else if m.is("Q3_K_L") {
                    ty = Q4_K;
                }
            }
            _ => {}
        }
        ty
    }

    /// The layer of an FFN tensor and the layer count: the running count of such tensors, except
    /// in mixture-of-experts models, whose expert tensors are not in layer order (llama.cpp then
    /// reads the layer from the name).
    fn layer_of(&self, name: &str, counter: u32) -> (u32, u32) {
        let n = self.shape.n_layer;
        if self.shape.n_expert > 1 {
            let layer = name
                .strip_prefix("blk.")
                .and_then(|r| r.split('.').next())
                .and_then(|l| l.parse().ok());
            if let Some(l) = layer {
                return (l, n);
            }
        }
        (counter, n)
    }
}

/// ggml_n_dims: the dimensions up to the last one that is not 1 (at least one), which is what
/// ggml writes and counts.
pub fn n_dims(dims: &[u64]) -> usize {
    dims.iter().rposition(|&d| d != 1).map_or(1, |i| i + 1)
}

/// ggml_is_quantized: the block formats (not F32, F16, BF16).
pub fn is_quantized(ty: GgmlType) -> bool {
    !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

/// llama.cpp's `tensor_type_fallback`: a type whose blocks do not divide the row length is
/// replaced by a 32-block one of similar size, and by F16 if even those do not fit.
fn fallback(cols: u64, ty: GgmlType) -> GgmlType {
    use GgmlType::*;
    if cols.is_multiple_of(ty.block_size() as u64) {
        return ty;
    }
    let smaller = match ty {
        Q2_K | Q3_K => Q4_0,
        Q4_K => Q5_0,
        Q5_K => Q5_1,
        Q6_K => Q8_0,
        other => other,
    };
    if cols.is_multiple_of(smaller.block_size() as u64) {
        smaller
    } else {
        F16
    }
}
