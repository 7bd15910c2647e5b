//! A small GGUF writer, independent of the reader under test, for building synthetic and
//! deliberately broken files.

/// A metadata value to write. Arrays carry their element type id separately, so that empty arrays
/// and wrong combinations can be written too.
#[derive(Clone, Debug)]
pub enum W {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(u8),
    Str(Vec<u8>),
    Arr(u32, Vec<W>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl W {
    pub fn type_id(&self) -> u32 {
        match self {
            W::U8(_) => 0,
            W::I8(_) => 1,
            W::U16(_) => 2,
            W::I16(_) => 3,
            W::U32(_) => 4,
            W::I32(_) => 5,
            W::F32(_) => 6,
            W::Bool(_) => 7,
            W::Str(_) => 8,
            W::Arr(..) => 9,
            W::U64(_) => 10,
            W::I64(_) => 11,
            W::F64(_) => 12,
        }
    }

    pub fn str(s: &str) -> W {
        W::Str(s.as_bytes().to_vec())
    }

    /// The payload without the type tag (arrays: element type, count, elements).
    pub fn write_payload(&self, out: &mut Vec<u8>) {
        match self {
            W::U8(v) => out.push(*v),
            W::I8(v) => out.extend(v.to_le_bytes()),
            W::U16(v) => out.extend(v.to_le_bytes()),
            W::I16(v) => out.extend(v.to_le_bytes()),
            W::U32(v) => out.extend(v.to_le_bytes()),
            W::I32(v) => out.extend(v.to_le_bytes()),
            W::F32(v) => out.extend(v.to_le_bytes()),
            W::Bool(v) => out.push(*v),
            W::Str(s) => put_str(out, s),
            W::Arr(elem, items) => {
                out.extend(elem.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for it in items {
                    it.write_payload(out);
                }
            }
            W::U64(v) => out.extend(v.to_le_bytes()),
            W::I64(v) => out.extend(v.to_le_bytes()),
            W::F64(v) => out.extend(v.to_le_bytes()),
        }
    }
}

pub fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
}

/// A tensor to write. `offset: None` places it after the previous one, padded to the alignment.
#[derive(Clone, Debug)]
pub struct T {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: u32,
    pub offset: Option<u64>,
    pub data: Vec<u8>,
}

impl T {
    pub fn new(name: &str, dims: &[u64], ty: u32, data: Vec<u8>) -> T {
        T {
            name: name.to_string(),
            dims: dims.to_vec(),
            ty,
            offset: None,
            data,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Builder {
    pub version: u32,
    pub kv: Vec<(Vec<u8>, W)>,
    pub tensors: Vec<T>,
    /// The alignment used to place data; write `general.alignment` yourself to change it in the file.
    pub alignment: u64,
}

/// Where the parts of a built file are, for tests that patch bytes.
#[derive(Debug, Default)]
pub struct Layout {
    /// Offset of each tensor info's name length.
    pub tensor_info_at: Vec<usize>,
    pub data_offset: usize,
}

impl Builder {
    pub fn new(version: u32) -> Builder {
        Builder {
            version,
            kv: Vec::new(),
            tensors: Vec::new(),
            alignment: 32,
        }
    }

    pub fn kv(mut self, key: &str, v: W) -> Builder {
        self.kv.push((key.as_bytes().to_vec(), v));
        self
    }

    pub fn tensor(mut self, t: T) -> Builder {
        self.tensors.push(t);
        self
    }

    pub fn build(&self) -> Vec<u8> {
        self.build_with_layout().0
    }

    pub fn build_with_layout(&self) -> (Vec<u8>, Layout) {
        let mut layout = Layout::default();
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            put_str(&mut out, k);
            out.extend(v.type_id().to_le_bytes());
            v.write_payload(&mut out);
        }
        let mut next = 0u64;
        let mut offsets = Vec::new();
        for t in &self.tensors {
            layout.tensor_info_at.push(out.len());
            put_str(&mut out, t.name.as_bytes());
            out.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.ty.to_le_bytes());
            let off = t.offset.unwrap_or(next);
            out.extend(off.to_le_bytes());
            offsets.push(off);
            next = (off + t.data.len() as u64).next_multiple_of(self.alignment);
        }
        if !self.tensors.is_empty() {
            let pad = out.len().next_multiple_of(self.alignment as usize);
            out.resize(pad, 0);
        }
        layout.data_offset = out.len();
        for (t, off) in self.tensors.iter().zip(offsets) {
            let start = layout.data_offset + off as usize;
            let end = start + t.data.len();
            if out.len() < end {
                out.resize(end, 0);
            }
            out[start..end].copy_from_slice(&t.data);
        }
        (out, layout)
    }
}

/// Deterministic pseudo-random bytes (xorshift), so that tensor data is distinguishable.
pub fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// GGUF value type ids.
pub mod ty {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// ggml tensor type ids used in the tests.
pub mod ggml {
    pub const F32: u32 = 0;
    pub const F16: u32 = 1;
    pub const Q4_0: u32 = 2;
    pub const Q8_0: u32 = 8;
    pub const Q4_K: u32 = 12;
    pub const Q6_K: u32 = 14;
    pub const BF16: u32 = 30;
}

/// A small valid file with metadata and tensors of several types, ending exactly at the last
/// tensor's last byte (so that every truncation cuts something needed).
pub fn small_valid(version: u32) -> Builder {
    Builder::new(version)
        .kv("general.architecture", W::str("llama"))
        .kv("llama.block_count", W::U32(2))
        .kv(
            "tokenizer.ggml.tokens",
            W::Arr(
                ty::STRING,
                vec![W::str("<unk>"), W::str("a"), W::Str(vec![0xE2, 0x96])],
            ),
        )
        .kv(
            "tokenizer.ggml.scores",
            W::Arr(ty::F32, vec![W::F32(0.0), W::F32(-1.5), W::F32(-2.0)]),
        )
        .kv(
            "nested",
            W::Arr(
                ty::ARRAY,
                vec![
                    W::Arr(ty::U8, vec![W::U8(1), W::U8(2)]),
                    W::Arr(ty::STRING, vec![W::str("x")]),
                ],
            ),
        )
        .tensor(T::new("a.weight", &[32, 2], ggml::Q8_0, bytes(2 * 34, 1)))
        .tensor(T::new("b.weight", &[256], ggml::Q4_K, bytes(144, 2)))
        .tensor(T::new("norm", &[3], ggml::F32, bytes(12, 3)))
}
