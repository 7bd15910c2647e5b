//! Helpers shared by the kernel tests: where the model files are, a minimal GGUF tensor lookup,
//! and a small deterministic random generator.

#![allow(dead_code)] // each test binary uses a different subset

use kernels::GgmlType;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The llama-synth model whose every matrix has type `ty`.
pub fn synth_model(ty: GgmlType) -> PathBuf {
    testmodels::llama_synth(ty.name())
}

/// A tensor found in a GGUF file: its type, shape (ne[0] first) and where its data starts.
#[derive(Debug)]
pub struct TensorInfo {
    pub ty: GgmlType,
    pub dims: Vec<u64>,
    pub offset: u64,
}

/// Reads the first `rows` rows of tensor `name` from the GGUF file at `path`, without reading
/// the rest of the file. Only what the tests need of the format: header, metadata (skipped except
/// `general.alignment`), tensor infos.
pub fn read_rows(path: &Path, name: &str, rows: usize) -> (TensorInfo, Vec<u8>) {
    let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut r = BufReader::new(file);
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic).expect("magic");
    assert_eq!(&magic, b"GGUF", "{} is not a GGUF file", path.display());
    let version = read_u32(&mut r);
    assert!(version == 2 || version == 3, "GGUF version {version}");
    let n_tensors = read_u64(&mut r);
    let n_kv = read_u64(&mut r);
    let mut alignment = 32u64;
    for _ in 0..n_kv {
        let key = read_string(&mut r);
        let vt = read_u32(&mut r);
        if key == "general.alignment" {
            assert_eq!(vt, 4, "general.alignment must be a u32");
            alignment = read_u32(&mut r) as u64;
        } else {
            skip_value(&mut r, vt);
        }
    }
    let mut found = None;
    for _ in 0..n_tensors {
        let tname = read_string(&mut r);
        let n_dims = read_u32(&mut r);
        let dims: Vec<u64> = (0..n_dims).map(|_| read_u64(&mut r)).collect();
        let id = read_u32(&mut r);
        let offset = read_u64(&mut r);
        if tname == name {
            let ty =
                GgmlType::from_id(id).unwrap_or_else(|| panic!("{name}: unknown type id {id}"));
            found = Some(TensorInfo { ty, dims, offset });
        }
    }
    let mut info = found.unwrap_or_else(|| panic!("{}: no tensor {name}", path.display()));
    let here = r.stream_position().expect("position");
    let data_start = here.div_ceil(alignment) * alignment;
    info.offset += data_start;
    let row = info.ty.row_size(info.dims[0]).expect("whole blocks") as usize;
    let mut bytes = vec![0u8; row * rows];
    r.seek(SeekFrom::Start(info.offset)).expect("seek");
    r.read_exact(&mut bytes).expect("tensor rows");
    (info, bytes)
}

fn read_u32(r: &mut impl Read) -> u32 {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).expect("u32");
    u32::from_le_bytes(b)
}

fn read_u64(r: &mut impl Read) -> u64 {
    let mut b = [0u8; 8];
    r.read_exact(&mut b).expect("u64");
    u64::from_le_bytes(b)
}

fn read_string(r: &mut impl Read) -> String {
    let len = read_u64(r) as usize;
    let mut b = vec![0u8; len];
    r.read_exact(&mut b).expect("string");
    String::from_utf8(b).expect("UTF-8 string")
}

/// `seek_relative` keeps BufReader's buffer, which matters for the ~10^5 vocabulary strings.
fn skip(r: &mut BufReader<File>, n: u64) {
    r.seek_relative(n as i64).expect("skip");
}

fn skip_value(r: &mut BufReader<File>, vt: u32) {
    match vt {
        0 | 1 | 7 => skip(r, 1),
        2 | 3 => skip(r, 2),
        4..=6 => skip(r, 4),
        10..=12 => skip(r, 8),
        8 => {
            let len = read_u64(r);
            skip(r, len);
        }
        9 => {
            let et = read_u32(r);
            let n = read_u64(r);
            for _ in 0..n {
                skip_value(r, et);
            }
        }
        _ => panic!("unknown GGUF value type {vt}"),
    }
}

/// Byte offsets of the f16 scale fields inside one block (ggml-common.h), for the formats whose
/// random bytes are otherwise all valid: their scales must be finite and of a sane size.
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        _ => &[],
    }
}

/// A random row of `n` weights of type `ty`: random bits with sane scales for the weight formats,
/// quantized random values for the others (whose fields depend on each other, like Q8_K's bsums).
pub fn random_row(rng: &mut Rng, ty: GgmlType, n: usize) -> Vec<u8> {
    let bytes = ty.row_size(n as u64).unwrap() as usize;
    if f16_fields(ty).is_empty() {
        let mut row = vec![0u8; bytes];
        kernels::quantize_row(ty, &rng.activations(n), &mut row);
        return row;
    }
    let mut row = rng.bytes(bytes);
    for block in row.chunks_exact_mut(ty.type_size()) {
        for &off in f16_fields(ty) {
            // Magnitudes 2^-12 .. 2^-4, either sign (ggml allows negative scales).
            let mag = (rng.f32().abs() + 0.01) * 2f32.powi(-((rng.next_u64() % 9) as i32) - 4);
            let v = if rng.next_u64().is_multiple_of(4) {
                -mag
            } else {
                mag
            };
            block[off..off + 2].copy_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes());
        }
    }
    row
}

/// xorshift64*: deterministic, good enough to scatter test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// Activation-like values: mostly small, some outliers, an occasional exact zero.
    pub fn activations(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| match self.next_u64() % 64 {
                0 => 0.0,
                1 => self.f32() * 40.0,
                _ => self.f32() * 2.0,
            })
            .collect()
    }
}
