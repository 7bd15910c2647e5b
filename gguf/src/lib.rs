//! A zero-copy reader of GGUF files (versions 2 and 3), the model format of llama.cpp, and the
//! writer of their header ([`header`]) for tools that make new files from parsed ones.
//!
//! [`Gguf::parse`] reads the header, the metadata and the tensor infos from a byte slice (usually
//! a memory map, possibly of a region inside a bigger file such as a llamafile) and borrows
//! everything else from it: strings, arrays and tensor data are never copied.
//!
//! The file is untrusted. Every count, length and offset is checked against the slice before it
//! is used, nothing is allocated in proportion to a count the bytes left could not hold, and all
//! size arithmetic is checked. What parses is safe to use without further checks: every
//! [`TensorInfo::data`] is exactly `GgmlType::row_size(cols) * rows` bytes, inside the slice,
//! aligned to [`Gguf::alignment`] relative to the slice's start, and no two tensors overlap.
//!
//! Layout (all little-endian): magic `GGUF`, u32 version, u64 tensor count, u64 metadata count,
//! the metadata (string key, u32 type, value), the tensor infos (string name, u32 n_dims, u64 dims
//! ne0 first, u32 ggml type, u64 offset into the data section), padding to the alignment, the
//! data section.

mod error;
mod value;
mod write;

use std::collections::HashSet;

pub use error::GgufError;
use ggml_types::GgmlType;
pub use value::{Array, ArrayIter, Value, ValueType};
use value::{Fail, Reader};
pub use write::{header, padding, TensorSpec};

/// Alignment of the data section and of every tensor in it when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// The most dimensions a tensor can have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;

const MAGIC: &[u8; 4] = b"GGUF";

/// The key that sets the alignment of the data section and of each tensor in it.
const ALIGNMENT_KEY: &str = "general.alignment";

/// The smallest a metadata entry can be (u64 key length, u32 type, one-byte value): bounds the
/// metadata count before anything is allocated by it.
const MIN_KV_BYTES: usize = 8 + 4 + 1;

/// The smallest a tensor info can be: u64 name length, u32 n_dims, u32 type, u64 offset.
const MIN_TENSOR_INFO_BYTES: usize = 8 + 4 + 4 + 8;

/// A parsed GGUF file, borrowing from the bytes it was parsed from.
#[derive(Debug)]
pub struct Gguf<'a> {
    pub version: u32,
    /// `general.alignment`, or 32; a power of two.
    pub alignment: u64,
    /// Offset of the tensor data section within the parsed slice. With no tensors it is where the
    /// tensor infos end (as llama.cpp has it: no padding is required after them).
    pub data_offset: u64,
    /// The metadata, in file order. Keys are unique.
    pub metadata: Vec<(&'a str, Value<'a>)>,
    /// The tensors, in file order. Names are unique.
    pub tensors: Vec<TensorInfo<'a>>,
}

/// One tensor: its name, shape, type and bytes.
#[derive(Clone, PartialEq)]
pub struct TensorInfo<'a> {
    pub name: &'a str,
    /// Dimensions, ne0 (the contiguous one, the row length) first, as ggml orders them. At most
    /// [`MAX_DIMS`]; may be empty for a scalar.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset of the data relative to the data section.
    pub offset: u64,
    /// Exactly the tensor's bytes.
    pub data: &'a [u8],
}

impl TensorInfo<'_> {
    /// Number of elements: the product of the dimensions (checked not to overflow at parse time).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Number of rows: the product of the dimensions after the first.
    pub fn rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }

    /// Row length in elements: the first dimension (1 for a scalar).
    pub fn cols(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }
}

impl std::fmt::Debug for TensorInfo<'_> {
    /// Leaves out the data bytes, which would be megabytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorInfo")
            .field("name", &self.name)
            .field("dims", &self.dims)
            .field("ty", &self.ty)
            .field("offset", &self.offset)
            .field("bytes", &self.data.len())
            .finish()
    }
}

/// A tensor info as read, before its data is located.
struct PendingTensor<'a> {
    name: &'a str,
    dims: Vec<u64>,
    ty: GgmlType,
    offset: u64,
    size: u64,
    /// Where the info's offset field is in the file, for errors about the data.
    offset_at: u64,
}

/// Turns a reader failure into an error naming `field`.
fn fail(field: &str) -> impl Fn(Fail) -> GgufError + '_ {
    move |f| GgufError::at(f.at as u64, field, f.msg)
}

fn utf8<'a>(bytes: &'a [u8], at: usize, field: &str, what: &str) -> Result<&'a str, GgufError> {
    std::str::from_utf8(bytes)
        .map_err(|e| GgufError::at(at as u64, field, format!("{what} is not valid UTF-8 ({e})")))
}

impl<'a> Gguf<'a> {
    /// Parses the header, metadata and tensor infos of the GGUF file in `bytes`, and locates
    /// every tensor's data. Anything malformed is an error naming where and what.
    pub fn parse(bytes: &'a [u8]) -> Result<Gguf<'a>, GgufError> {
        let mut r = Reader::new(bytes);
        let header = fail("header");

        let magic = r.bytes(4, "magic").map_err(&header)?;
        if magic != MAGIC {
            return Err(GgufError::at(
                0,
                "header",
                format!(
                    "bad magic {:?}, expected \"GGUF\"",
                    String::from_utf8_lossy(magic)
                ),
            ));
        }
        let version = r.u32("version").map_err(&header)?;
        match version {
            2 | 3 => {}
            1 => {
                return Err(GgufError::at(
                    4,
                    "header",
                    "GGUF version 1 is not supported (only 2 and 3)",
                ))
            }
            v if v & 0xFFFF == 0 => {
                return Err(GgufError::at(
                    4,
                    "header",
                    format!(
                        "unsupported version {v:#x} (a big-endian file? only little-endian \
                         versions 2 and 3 are supported)"
                    ),
                ))
            }
            v => {
                return Err(GgufError::at(
                    4,
                    "header",
                    format!("unsupported version {v} (only 2 and 3)"),
                ))
            }
        }
        let n_tensors = r.u64("tensor count").map_err(&header)?;
        let n_kv = r.u64("metadata count").map_err(&header)?;
        // Both counts come before what they count; bound them by the bytes left so that the
        // vectors below are never sized by a hostile count.
        if n_kv > (r.remaining() / MIN_KV_BYTES) as u64 {
            return Err(GgufError::at(
                16,
                "header",
                format!(
                    "{n_kv} metadata entries cannot fit in the {} bytes left",
                    r.remaining()
                ),
            ));
        }
        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut keys = HashSet::with_capacity(n_kv as usize);
        let mut alignment = DEFAULT_ALIGNMENT;
        for i in 0..n_kv {
            let key_at = r.pos();
            let key = r.string("key").map_err(fail(&format!("key #{i}")))?;
            let key = utf8(key, key_at, &format!("key #{i}"), "the key")?;
            let field = format!("key {key:?}");
            if key.is_empty() {
                return Err(GgufError::at(
                    key_at as u64,
                    format!("key #{i}"),
                    "empty key",
                ));
            }
            if !keys.insert(key) {
                return Err(GgufError::at(key_at as u64, field, "duplicate key"));
            }
            let type_at = r.pos();
            let type_id = r.u32("value type").map_err(fail(&field))?;
            let Some(ty) = ValueType::from_id(type_id) else {
                return Err(GgufError::at(
                    type_at as u64,
                    field,
                    format!("unknown value type {type_id}"),
                ));
            };
            let value = r.value(ty, 0).map_err(fail(&field))?;
            if key == ALIGNMENT_KEY {
                alignment = match value.as_u64() {
                    Some(a) if a.is_power_of_two() => a,
                    _ => {
                        return Err(GgufError::at(
                            type_at as u64,
                            field,
                            format!("must be a power of two, found {}", describe_value(&value)),
                        ))
                    }
                };
            }
            metadata.push((key, value));
        }

        if n_tensors > (r.remaining() / MIN_TENSOR_INFO_BYTES) as u64 {
            return Err(GgufError::at(
                8,
                "header",
                format!(
                    "{n_tensors} tensor infos cannot fit in the {} bytes left",
                    r.remaining()
                ),
            ));
        }
        let mut pending = Vec::with_capacity(n_tensors as usize);
        let mut names = HashSet::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            pending.push(read_tensor_info(&mut r, i, &mut names)?);
        }

        let infos_end = r.pos() as u64;
        let data_offset = if pending.is_empty() {
            infos_end
        } else {
            match infos_end.checked_next_multiple_of(alignment) {
                Some(o) if o <= bytes.len() as u64 => o,
                _ => {
                    return Err(GgufError::at(
                        infos_end,
                        "data section",
                        format!(
                            "the data section would start at the next multiple of {alignment}, \
                             past the end of the file ({} bytes)",
                            bytes.len()
                        ),
                    ))
                }
            }
        };

        let tensors = locate_tensors(bytes, data_offset, alignment, pending)?;
        Ok(Gguf {
            version,
            alignment,
            data_offset,
            metadata,
            tensors,
        })
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        self.metadata
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// Looks `key` up and converts it with `f`; an error names the key and `expected` when the
    /// key is present but `f` refuses its value.
    fn typed<T>(
        &self,
        key: &str,
        expected: &str,
        f: impl Fn(&Value<'a>) -> Option<T>,
    ) -> Result<Option<T>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match f(v) {
                Some(t) => Ok(Some(t)),
                None => Err(GgufError::key(
                    key,
                    format!("expected {expected}, found {}", describe_value(v)),
                )),
            },
        }
    }

    /// An integer key that fits a `u32`, whatever integer type the writer used.
    pub fn get_u32(&self, key: &str) -> Result<Option<u32>, GgufError> {
        self.typed(key, "an integer that fits u32", |v| {
            v.as_u64().and_then(|x| u32::try_from(x).ok())
        })
    }

    /// An integer key that fits a `u64`, whatever integer type the writer used.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.typed(key, "an integer that fits u64", Value::as_u64)
    }

    /// An integer key that fits an `i32`, whatever integer type the writer used.
    pub fn get_i32(&self, key: &str) -> Result<Option<i32>, GgufError> {
        self.typed(key, "an integer that fits i32", |v| {
            v.as_i64().and_then(|x| i32::try_from(x).ok())
        })
    }

    /// An integer key that fits an `i64`, whatever integer type the writer used.
    pub fn get_i64(&self, key: &str) -> Result<Option<i64>, GgufError> {
        self.typed(key, "an integer that fits i64", Value::as_i64)
    }

    /// A floating-point key. An f64 value is rounded to f32 (some writers store floats as f64).
    pub fn get_f32(&self, key: &str) -> Result<Option<f32>, GgufError> {
        self.typed(key, "a float", |v| match *v {
            Value::F32(x) => Some(x),
            Value::F64(x) => Some(x as f32),
            _ => None,
        })
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.typed(key, "a bool", |v| match *v {
            Value::Bool(b) => Some(b),
            _ => None,
        })
    }

    /// A string key that must be valid UTF-8.
    pub fn get_str(&self, key: &str) -> Result<Option<&'a str>, GgufError> {
        match self.get(key) {
            Some(Value::String(s)) => match std::str::from_utf8(s) {
                Ok(s) => Ok(Some(s)),
                Err(e) => Err(GgufError::key(
                    key,
                    format!("the string is not valid UTF-8 ({e})"),
                )),
            },
            _ => self.typed(key, "a string", |_| None),
        }
    }

    /// A string key as raw bytes (no UTF-8 requirement).
    pub fn get_bytes(&self, key: &str) -> Result<Option<&'a [u8]>, GgufError> {
        self.typed(key, "a string", |v| match *v {
            Value::String(s) => Some(s),
            _ => None,
        })
    }

    pub fn get_array(&self, key: &str) -> Result<Option<Array<'a>>, GgufError> {
        self.typed(key, "an array", |v| match *v {
            Value::Array(a) => Some(a),
            _ => None,
        })
    }

    /// The tensor named `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo<'a>> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// `general.architecture`, which every model file must have.
    pub fn architecture(&self) -> Result<&'a str, GgufError> {
        self.get_str("general.architecture")?.ok_or_else(|| {
            GgufError::key(
                "general.architecture",
                "missing (every GGUF model must name its architecture)",
            )
        })
    }
}

/// What a value is, for error messages; integers also show their value, since "u32" alone does
/// not say why it did not fit.
fn describe_value(v: &Value) -> String {
    match v.as_i64().map(i128::from).or(v.as_u64().map(i128::from)) {
        Some(x) => format!("{} {x}", v.describe()),
        None => v.describe(),
    }
}

/// Reads tensor info number `i`, checking its name, shape, type and size.
fn read_tensor_info<'a>(
    r: &mut Reader<'a>,
    i: u64,
    names: &mut HashSet<&'a str>,
) -> Result<PendingTensor<'a>, GgufError> {
    let name_at = r.pos();
    let unnamed = format!("tensor #{i}");
    let name = r.string("tensor name").map_err(fail(&unnamed))?;
    let name = utf8(name, name_at, &unnamed, "the tensor name")?;
    let field = format!("tensor {name:?}");
    if !names.insert(name) {
        return Err(GgufError::at(
            name_at as u64,
            field,
            "duplicate tensor name",
        ));
    }
    let at = |pos: usize, msg: String| GgufError::at(pos as u64, &field, msg);

    let n_dims_at = r.pos();
    let n_dims = r.u32("n_dims").map_err(fail(&field))?;
    if n_dims as usize > MAX_DIMS {
        return Err(at(
            n_dims_at,
            format!("{n_dims} dimensions, at most {MAX_DIMS} are allowed"),
        ));
    }
    let dims_at = r.pos();
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(r.u64("dimension").map_err(fail(&field))?);
    }
    // ggml holds element counts in an i64: refuse what would not fit there. Zero dimensions are
    // left out of the product so that the product of any subset of the dimensions (rows, the
    // element count) is known not to overflow, whatever the order of the factors.
    let nonzero_product = dims
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1u64, |acc, &d| acc.checked_mul(d));
    if nonzero_product.is_none_or(|n| n > i64::MAX as u64) {
        return Err(at(dims_at, format!("shape {dims:?} has too many elements")));
    }

    let type_at = r.pos();
    let type_id = r.u32("tensor type").map_err(fail(&field))?;
    let Some(ty) = GgmlType::from_id(type_id) else {
        let msg = match ggml_type_name(type_id) {
            Some(name) => format!("tensor type {type_id} ({name}) is not supported"),
            None => format!("unknown tensor type {type_id}"),
        };
        return Err(at(type_at, msg));
    };
    let cols = dims.first().copied().unwrap_or(1);
    let rows: u64 = dims.iter().skip(1).product(); // cannot overflow, checked above
    if cols % ty.block_size() as u64 != 0 {
        return Err(at(
            dims_at,
            format!(
                "rows of {cols} elements are not a whole number of {} blocks of {}",
                ty.name(),
                ty.block_size()
            ),
        ));
    }
    let Some(size) = ty.row_size(cols).and_then(|row| row.checked_mul(rows)) else {
        return Err(at(
            dims_at,
            format!("shape {dims:?} of type {} has too many bytes", ty.name()),
        ));
    };

    let offset_at = r.pos();
    let offset = r.u64("tensor data offset").map_err(fail(&field))?;
    Ok(PendingTensor {
        name,
        dims,
        ty,
        offset,
        size,
        offset_at: offset_at as u64,
    })
}

/// The name ggml gives a tensor type id that this reader does not support, so that a model in an
/// unsupported quantization is told apart from a corrupt file (ids from ggml.h).
fn ggml_type_name(id: u32) -> Option<&'static str> {
    Some(match id {
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        40 => "NVFP4",
        41 => "Q1_0",
        42 => "Q2_0",
        _ => return None,
    })
}

/// Finds every tensor's bytes: inside the slice, aligned, and not overlapping another tensor.
fn locate_tensors<'a>(
    bytes: &'a [u8],
    data_offset: u64,
    alignment: u64,
    pending: Vec<PendingTensor<'a>>,
) -> Result<Vec<TensorInfo<'a>>, GgufError> {
    let len = bytes.len() as u64;
    let mut tensors = Vec::with_capacity(pending.len());
    // (start, end, index) of each non-empty tensor, to look for overlaps once all are placed.
    let mut extents = Vec::with_capacity(pending.len());
    let mut info_at = Vec::with_capacity(pending.len());
    for p in pending {
        let field = format!("tensor {:?}", p.name);
        if p.offset % alignment != 0 {
            return Err(GgufError::at(
                p.offset_at,
                field,
                format!(
                    "data offset {} is not a multiple of the alignment {alignment}",
                    p.offset
                ),
            ));
        }
        let range = data_offset
            .checked_add(p.offset)
            .and_then(|start| Some((start, start.checked_add(p.size)?)))
            .filter(|&(_, end)| end <= len);
        let Some((start, end)) = range else {
            return Err(GgufError::at(
                p.offset_at,
                field,
                format!(
                    "{} bytes of data at offset {} in the data section (which starts at \
                     {data_offset}) run past the end of the file ({len} bytes)",
                    p.size, p.offset
                ),
            ));
        };
        if start < end {
            extents.push((start, end, tensors.len()));
        }
        info_at.push(p.offset_at);
        tensors.push(TensorInfo {
            name: p.name,
            dims: p.dims,
            ty: p.ty,
            offset: p.offset,
            data: &bytes[start as usize..end as usize],
        });
    }
    extents.sort_unstable();
    for w in extents.windows(2) {
        let ((_, end_a, a), (start_b, _, b)) = (w[0], w[1]);
        if start_b < end_a {
            return Err(GgufError::at(
                info_at[b],
                format!("tensor {:?}", tensors[b].name),
                format!("data overlaps that of tensor {:?}", tensors[a].name),
            ));
        }
    }
    Ok(tensors)
}
