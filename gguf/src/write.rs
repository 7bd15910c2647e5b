//! Writing GGUF (version 3): the bytes before the data section, laid out so that the caller can
//! stream each tensor's data after them, in order, each followed by [`padding`] zeros.
//!
//! This is the layout ggml's `gguf_write_to_file` produces (and `llama-quantize` with it): the
//! data section starts at the next multiple of the alignment after the tensor infos, and every
//! tensor, the last included, is padded to a multiple of it, so that a file written here from the
//! same metadata and tensors is byte-identical to llama.cpp's.

use ggml_types::GgmlType;

use crate::value::{write_string, Value};
use crate::MAGIC;

/// A tensor as the file will describe it; its bytes are `ty.row_size(dims[0]) * rows`.
#[derive(Debug, Clone)]
pub struct TensorSpec<'a> {
    pub name: &'a str,
    /// ne0 (the row length) first.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

impl TensorSpec<'_> {
    /// The tensor's size in bytes, or `None` if its rows are not whole blocks of its type.
    pub fn size(&self) -> Option<u64> {
        let cols = self.dims.first().copied().unwrap_or(1);
        let rows: u64 = self.dims.iter().skip(1).product();
        self.ty.row_size(cols)?.checked_mul(rows)
    }
}

/// Zeros after `len` bytes to reach the next multiple of `alignment`.
pub fn padding(len: u64, alignment: u64) -> usize {
    (len.next_multiple_of(alignment) - len) as usize
}

/// The header, metadata, tensor infos and padding of a GGUF v3 file with these tensors in this
/// order. `alignment` must be the one `metadata` implies (`general.alignment`, else 32).
///
/// # Panics
/// If a tensor's size is not whole blocks (the caller chose its type; see [`TensorSpec::size`]).
pub fn header(
    metadata: &[(&str, Value<'_>)],
    tensors: &[TensorSpec<'_>],
    alignment: u64,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        write_string(&mut out, key.as_bytes());
        out.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
        value.write_payload(&mut out);
    }
    let mut offset = 0u64;
    for t in tensors {
        write_string(&mut out, t.name.as_bytes());
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&(t.ty as u32).to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        let size = t.size().unwrap_or_else(|| {
            panic!(
                "{}: {:?} is not whole {} blocks",
                t.name,
                t.dims,
                t.ty.name()
            )
        });
        offset += size + padding(size, alignment) as u64;
    }
    out.resize(out.len() + padding(out.len() as u64, alignment), 0);
    out
}
