//! `llamafile-pack quantize`: a GGUF rewritten in a quantization mix, as `llama-quantize` writes
//! it without an importance matrix — the same tensor types ([`packer::quant_mix`]), the same bits
//! (ggml's reference quantizers, `kernels::quantize_row`), the same file layout (tensors in the
//! loader's order, the metadata copied with `general.quantization_version` and
//! `general.file_type` moved to the end): from the same input, byte for byte the same file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use gguf::{Gguf, TensorInfo, TensorSpec, Value};
use indicatif::{ProgressBar, ProgressStyle};
use memmap2::Mmap;
use rayon::prelude::*;

use crate::pack::{self, TempFile};
use packer::quant_mix::{
    is_quantized, loader_order, n_dims, Mix, ModelShape, TensorIn, TypeChooser,
};

/// ggml's `GGML_QNT_VERSION`: the revision of the quantized block formats this writes.
const QUANTIZATION_VERSION: u32 = 2;

/// Keys `llama-quantize` sets anew (at the end) or drops (the split keys: the output is one file).
const REPLACED_KEYS: &[&str] = &["general.quantization_version", "general.file_type"];
const SPLIT_KEYS: &[&str] = &["split.no", "split.count", "split.tensors.count"];

/// Rows dequantized and quantized at a time: bounds the f32 buffer (here 64 MiB) for any model.
const SLAB_FLOATS: usize = 16 << 20;

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub mix: Mix,
    /// Every quantizable tensor in the mix's default type (llama-quantize `--pure`).
    pub pure: bool,
    /// Allow tensors that are already quantized to be quantized again (llama-quantize
    /// `--allow-requantize`): each step loses precision, so it is refused by default.
    pub allow_requantize: bool,
}

/// One tensor of the output: where its data comes from and what it becomes.
pub struct Planned<'a> {
    pub source: &'a TensorInfo<'a>,
    pub spec: TensorSpec<'a>,
}

/// The tensors of `gguf` in the order and with the types `llama-quantize` would write.
pub fn plan<'a>(gguf: &'a Gguf<'a>, path: &Path, opts: &Options) -> Result<Vec<Planned<'a>>> {
    if let Some(n) = gguf.get("split.count").and_then(Value::as_u64) {
        if n > 1 {
            bail!(
                "{}: part of a GGUF split into {n} files; merge it first (llama-gguf-split --merge)",
                path.display()
            );
        }
    }
    let shape = model_shape(gguf, path)?;
    let mut sources: Vec<&TensorInfo> = gguf.tensors.iter().collect();
    sources.sort_by(|a, b| loader_order(a.name, b.name));
    let names: Vec<&str> = sources.iter().map(|t| t.name).collect();
    let mut chooser = TypeChooser::new(opts.mix, opts.pure, &shape, &names);
    let mut planned = Vec::with_capacity(sources.len());
    for source in sources {
        // Trailing dimensions of 1 are not written (a scalar is written as one dimension of 1).
        let mut dims = source.dims.clone();
        dims.resize(n_dims(&source.dims), 1);
        let ty = chooser.choose(&TensorIn {
            name: source.name,
            dims: &dims,
            ty: source.ty,
        });
        if ty != source.ty && is_quantized(source.ty) && !opts.allow_requantize {
            bail!(
                "{}: tensor {} is already {}; quantizing it again to {} loses precision \
                 (start from an F32/F16/BF16 GGUF, or pass --allow-requantize)",
                path.display(),
                source.name,
                source.ty.name(),
                ty.name()
            );
        }
        planned.push(Planned {
            source,
            spec: TensorSpec {
                name: source.name,
                dims,
                ty,
            },
        });
    }
    Ok(planned)
}

/// The hyperparameters the mixes depend on, read as llama.cpp reads them.
fn model_shape(gguf: &Gguf, path: &Path) -> Result<ModelShape> {
    let context = || format!("{}: reading the model's hyperparameters", path.display());
    let arch = gguf.architecture().with_context(context)?.to_string();
    let first = |key: &str| -> Result<Option<u64>> {
        Ok(match gguf.get(&format!("{arch}.{key}")) {
            None => None,
            Some(Value::Array(a)) => a.iter().next().and_then(|v| v.as_u64()),
            Some(v) => Some(v.as_u64().with_context(|| {
                format!(
                    "{}: {arch}.{key} is {}, not a count",
                    path.display(),
                    v.describe()
                )
            })?),
        })
    };
    let n_layer = first("block_count")?.unwrap_or(0) as u32;
    let n_head = first("attention.head_count")?.unwrap_or(0);
    let n_head_kv = first("attention.head_count_kv")?.unwrap_or(n_head);
    let n_gqa = n_head.checked_div(n_head_kv).unwrap_or(0) as u32;
    let n_expert = first("expert_count")?.unwrap_or(0) as u32;
    Ok(ModelShape {
        is_70b: arch == "llama" && n_layer == 80 && n_head != n_head_kv,
        arch,
        n_layer,
        n_gqa,
        n_expert,
    })
}

/// The output's metadata: the input's, minus the split keys, with the quantization version and
/// the mix's file type set last (ggml's `gguf_set_val_*` removes a key and appends it).
pub fn metadata<'a>(gguf: &Gguf<'a>, mix: Mix) -> Vec<(&'a str, Value<'a>)> {
    let mut kv: Vec<(&str, Value)> = gguf
        .metadata
        .iter()
        .filter(|(k, _)| !REPLACED_KEYS.contains(k) && !SPLIT_KEYS.contains(k))
        .cloned()
        .collect();
    kv.push((REPLACED_KEYS[0], Value::U32(QUANTIZATION_VERSION)));
    kv.push((REPLACED_KEYS[1], Value::U32(mix.ftype)));
    kv
}

/// What a quantization did, for the report.
pub struct Summary {
    pub tensors: usize,
    pub quantized: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub n_elements: u64,
}

/// Writes `input` in `opts.mix` to `output` (through a temporary file renamed into place, never
/// over the input).
pub fn quantize_file(input: &Path, output: &Path, opts: &Options) -> Result<Summary> {
    pack::refuse_overwriting_inputs(output, &[input])?;
    let temp = TempFile::create(output)?;
    let summary = quantize_into(input, opts, &temp.file, &temp.path)?;
    temp.commit(output, 0o644)?;
    Ok(summary)
}

/// Writes `input` in `opts.mix` to `out` (an empty file, `out_path` for messages).
pub fn quantize_into(input: &Path, opts: &Options, out: &File, out_path: &Path) -> Result<Summary> {
    let file = File::open(input).with_context(|| format!("opening {}", input.display()))?;
    // SAFETY: the map is read-only and private to this function; like every mmap-based reader we
    // accept that a file truncated underneath us may fault.
    let map =
        unsafe { Mmap::map(&file) }.with_context(|| format!("mapping {}", input.display()))?;
    let gguf = Gguf::parse(&map).with_context(|| input.display().to_string())?;
    let planned = plan(&gguf, input, opts)?;
    let specs: Vec<TensorSpec> = planned.iter().map(|p| p.spec.clone()).collect();
    let header = gguf::header(&metadata(&gguf, opts.mix), &specs, gguf.alignment);

    let mut out = BufWriter::with_capacity(4 << 20, out);
    let write_err = || format!("writing {}", out_path.display());
    out.write_all(&header).with_context(write_err)?;
    let total: u64 = planned.iter().map(|p| p.source.n_elements()).sum();
    let bar = progress_bar(total);
    let mut summary = Summary {
        tensors: planned.len(),
        quantized: 0,
        bytes_in: 0,
        bytes_out: 0,
        n_elements: total,
    };
    let mut floats = Vec::new();
    let mut bytes = Vec::new();
    for p in &planned {
        bar.set_message(format!("{} → {}", p.source.name, p.spec.ty.name()));
        let size = if p.spec.ty == p.source.ty {
            out.write_all(p.source.data).with_context(write_err)?;
            bar.inc(p.source.n_elements());
            p.source.data.len()
        } else {
            summary.quantized += 1;
            convert(p, &mut floats, &mut bytes, &mut out, &bar).with_context(write_err)?
        };
        out.write_all(&vec![0; gguf::padding(size as u64, gguf.alignment)])
            .with_context(write_err)?;
        summary.bytes_in += p.source.data.len() as u64;
        summary.bytes_out += size as u64;
    }
    bar.finish_and_clear();
    out.flush().with_context(write_err)?;
    Ok(summary)
}

/// Converts one tensor slab by slab (dequantized to f32, then quantized row-parallel) and writes
/// it; returns the bytes written.
fn convert(
    p: &Planned,
    floats: &mut Vec<f32>,
    bytes: &mut Vec<u8>,
    out: &mut impl Write,
    bar: &ProgressBar,
) -> std::io::Result<usize> {
    let cols = p.source.cols() as usize;
    let rows = p.source.rows() as usize;
    let (from, to) = (p.source.ty, p.spec.ty);
    // Both sizes exist: the reader checked the source's, the plan chose a type that fits.
    let row_in = from
        .row_size(cols as u64)
        .expect("source rows are whole blocks") as usize;
    let row_out = to
        .row_size(cols as u64)
        .expect("planned rows are whole blocks") as usize;
    let slab_rows = (SLAB_FLOATS / cols.max(1)).max(1);
    let mut written = 0;
    for first in (0..rows).step_by(slab_rows) {
        let n = slab_rows.min(rows - first);
        floats.resize(n * cols, 0.0);
        bytes.resize(n * row_out, 0);
        let src = &p.source.data[first * row_in..(first + n) * row_in];
        floats
            .par_chunks_mut(cols)
            .zip(bytes.par_chunks_mut(row_out))
            .zip(src.par_chunks(row_in))
            .for_each(|((f, b), s)| {
                kernels::dequantize_row(from, s, f);
                kernels::quantize_row(to, f, b);
            });
        out.write_all(bytes)?;
        written += bytes.len();
        bar.inc((n * cols) as u64);
    }
    Ok(written)
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("quantizing [{bar:30}] {percent:>3}% eta {eta} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
