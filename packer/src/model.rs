//! What `inspect` shows about the model, and the check that a GGUF is sound before packing:
//! `gguf::Gguf::parse` validates the header, metadata and every tensor's extent.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Result};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    pub architecture: String,
    /// Total number of weights (elements of all tensors).
    pub parameters: u64,
    pub tensor_count: u64,
    /// How many tensors of each ggml type.
    pub tensor_types: BTreeMap<String, u64>,
    /// `<arch>.context_length`, the context the model was trained for.
    pub context_length: Option<u64>,
    /// Whether `tokenizer.chat_template` is present.
    pub chat_template: bool,
}

/// Parses the GGUF in `bytes` (the model file, or its entry in a llamafile) and summarizes it.
pub fn summarize(path: &Path, bytes: &[u8]) -> Result<ModelSummary> {
    let err = |e: gguf::GgufError| anyhow!("{}: {e}", path.display());
    let g = gguf::Gguf::parse(bytes).map_err(err)?;
    let architecture = g.architecture().map_err(err)?.to_string();
    let mut tensor_types = BTreeMap::new();
    let mut parameters = 0u64;
    for t in &g.tensors {
        parameters = parameters.saturating_add(t.n_elements());
        *tensor_types.entry(t.ty.name().to_string()).or_insert(0) += 1;
    }
    let context_length = g
        .get_u64(&format!("{architecture}.context_length"))
        .map_err(err)?;
    Ok(ModelSummary {
        architecture,
        parameters,
        tensor_count: g.tensors.len() as u64,
        tensor_types,
        context_length,
        chat_template: g.get("tokenizer.chat_template").is_some(),
    })
}
