//! The subcommands.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use payload::{
    parse_args, quote_args, read_payload, Entry, Manifest, Payload, RuntimeInfo, ARGS_NAME,
    GGUF_ALIGNMENT, MANIFEST_NAME, METHOD_STORED,
};
use serde::Serialize;

use crate::copy;
use crate::launcher;
use crate::macho::{self, MacExecutable};
use crate::model::{self, ModelSummary};
use crate::pack::{self, Kind, Model, Plan, Runtime, TempFile};
use crate::quantize;
use crate::target::{self, Os, Target};
use packer::quant_mix::Mix;

pub fn build(
    model_path: &Path,
    output: &Path,
    runtime_paths: &[PathBuf],
    native: bool,
    quantize_to: Option<&str>,
    args: &[String],
) -> Result<ExitCode> {
    let kind = if native {
        Kind::Native
    } else {
        Kind::Universal
    };
    let mut runtimes = runtimes_to_pack(kind, runtime_paths)?;
    pack::check_runtimes(kind, &mut runtimes)?;
    let runtime_files: Vec<PathBuf> = runtimes.iter().filter_map(|r| r.path.clone()).collect();

    let input_meta =
        fs::metadata(model_path).with_context(|| format!("opening {}", model_path.display()))?;
    if !input_meta.is_file() {
        bail!("{} is not a regular file", model_path.display());
    }
    // With --quantize the model packed is a quantized copy, written beside the output and
    // removed when this returns (`quantized` owns it).
    let quantized = match quantize_to {
        Some(name) => {
            pack::refuse_overwriting_inputs(output, &[model_path])?;
            let mix = Mix::parse(name)?;
            let temp = TempFile::create(output)?;
            let opts = quantize::Options {
                mix,
                pure: false,
                allow_requantize: false,
            };
            quantize::quantize_into(model_path, &opts, &temp.file, &temp.path)?;
            Some((temp, quantized_entry_name(model_path, mix)?))
        }
        None => None,
    };
    let (file, packed_path, entry) = match &quantized {
        Some((temp, entry)) => (temp.file.try_clone()?, temp.path.as_path(), entry.clone()),
        None => (
            File::open(model_path).with_context(|| format!("opening {}", model_path.display()))?,
            model_path,
            model_entry_name(model_path)?,
        ),
    };
    let meta = file.metadata()?;
    let map = map(&file, packed_path)?;
    let summary = model::summarize(packed_path, &map)?;
    drop(map);

    let args_text = args_file_text(args);
    let plan = Plan {
        kind,
        runtimes,
        model: Model {
            file: &file,
            path: packed_path,
            offset: 0,
            size: meta.len(),
            entry,
            expected_sha256: None,
        },
        args: parse_args(&args_text).context("default arguments")?,
        args_text: args_text.into_bytes(),
    };
    let mut inputs: Vec<&Path> = vec![model_path];
    inputs.extend(runtime_files.iter().map(PathBuf::as_path));
    let manifest = pack::write(&plan, output, &inputs)?;
    report_written(output, &manifest, &summary);
    Ok(ExitCode::SUCCESS)
}

pub fn upgrade(old: &Path, output: &Path, runtime_paths: &[PathBuf]) -> Result<ExitCode> {
    let (file, payload) = open_llamafile(old)?;
    let manifest = payload.manifest(&file).context(old.display().to_string())?;
    let gguf = payload
        .gguf()
        .context(old.display().to_string())?
        .with_context(|| format!("{}: no GGUF entry to carry over", old.display()))?
        .clone();
    let kind = match &manifest {
        Some(m) => parse_kind(old, &m.kind)?,
        None => guess_kind(&file, &payload)?,
    };
    let mut runtimes = runtimes_to_pack(kind, runtime_paths)?;
    pack::check_runtimes(kind, &mut runtimes)?;
    let runtime_files: Vec<PathBuf> = runtimes.iter().filter_map(|r| r.path.clone()).collect();

    // The `.args` text is kept byte for byte, comments included.
    let args_text = match payload.entry(ARGS_NAME) {
        Some(e) => e.read_small(&file).context(old.display().to_string())?,
        None => Vec::new(),
    };
    let args = payload
        .args(&file)
        .context(old.display().to_string())?
        .unwrap_or_default();
    let map = map(&file, old)?;
    let summary = model::summarize(old, entry_bytes(&map, &gguf, old)?)?;
    drop(map);
    let plan = Plan {
        kind,
        runtimes,
        model: Model {
            file: &file,
            path: old,
            offset: gguf.data_offset,
            size: gguf.size,
            entry: gguf.name.clone(),
            expected_sha256: manifest.map(|m| m.model.sha256),
        },
        args_text,
        args,
    };
    let mut inputs: Vec<&Path> = vec![old];
    inputs.extend(runtime_files.iter().map(PathBuf::as_path));
    let manifest = pack::write(&plan, output, &inputs)?;
    report_written(output, &manifest, &summary);
    Ok(ExitCode::SUCCESS)
}

fn report_written(output: &Path, m: &Manifest, summary: &ModelSummary) {
    let targets: Vec<String> = m
        .runtimes
        .iter()
        .flat_map(|r| r.targets.iter().cloned())
        .collect();
    eprintln!(
        "wrote {} ({}; runs on {}; model {} {}, {} bytes, sha256 {})",
        output.display(),
        m.kind,
        targets.join(", "),
        m.model.entry,
        summary.architecture,
        m.model.size,
        m.model.sha256
    );
}

/// The `.args` text for the given default arguments.
fn args_file_text(args: &[String]) -> String {
    let mut text = String::from(
        "# Default arguments, written by llamafile-pack. The user's arguments go where a\n\
         # lone ... is, or after these.\n",
    );
    text.push_str(&quote_args(args));
    text
}

/// The entry name of a model quantized on the way in: the input's name with its float type
/// (`-F16`, `.bf16`, ...) replaced by the mix, `mistral-7b-F16.gguf` → `mistral-7b-Q4_K_M.gguf`.
fn quantized_entry_name(input: &Path, mix: Mix) -> Result<String> {
    let name = model_entry_name(input)?;
    let stem = &name[..name.len() - ".gguf".len()];
    let lower = stem.to_ascii_lowercase();
    let base = ["f32", "f16", "bf16", "fp16", "fp32"]
        .iter()
        .flat_map(|t| [format!("-{t}"), format!(".{t}"), format!("_{t}")])
        .find(|suffix| lower.ends_with(suffix.as_str()))
        .map_or(stem, |suffix| &stem[..stem.len() - suffix.len()]);
    Ok(format!("{base}-{}.gguf", mix.name))
}

/// `llamafile-pack quantize IN OUT TYPE` / `quantize --dry-run IN TYPE`.
pub fn quantize(
    input: &Path,
    rest: &[String],
    pure: bool,
    allow_requantize: bool,
    dry_run: bool,
) -> Result<ExitCode> {
    let (output, mix_name) = match (rest, dry_run) {
        ([mix], true) => (None, mix),
        ([out, mix], false) => (Some(Path::new(out)), mix),
        (_, true) => {
            bail!("usage: llamafile-pack quantize --dry-run IN.gguf TYPE (no output file)")
        }
        (_, false) => bail!("usage: llamafile-pack quantize IN.gguf OUT.gguf TYPE"),
    };
    let opts = quantize::Options {
        mix: Mix::parse(mix_name)?,
        pure,
        allow_requantize,
    };
    let Some(output) = output else {
        let file = File::open(input).with_context(|| format!("opening {}", input.display()))?;
        let map = map(&file, input)?;
        let g = gguf::Gguf::parse(&map).with_context(|| input.display().to_string())?;
        let planned = quantize::plan(&g, input, &opts)?;
        let mut out = std::io::stdout().lock();
        let (mut size_in, mut size_out) = (0u64, 0u64);
        for p in &planned {
            let size = p.spec.size().unwrap_or(0);
            let dims: Vec<String> = p.spec.dims.iter().map(u64::to_string).collect();
            writeln!(
                out,
                "{:<40} {:<18} {:>5} -> {:<5} {:>12} bytes",
                p.spec.name,
                dims.join("x"),
                p.source.ty.name(),
                p.spec.ty.name(),
                size
            )?;
            size_in += p.source.data.len() as u64;
            size_out += size;
        }
        writeln!(
            out,
            "{} tensors: {:.2} MiB -> {:.2} MiB ({})",
            planned.len(),
            size_in as f64 / 1048576.0,
            size_out as f64 / 1048576.0,
            opts.mix.name
        )?;
        return Ok(ExitCode::SUCCESS);
    };
    let s = quantize::quantize_file(input, output, &opts)?;
    eprintln!(
        "wrote {} ({}{}): {} tensors, {} quantized; {:.2} MiB -> {:.2} MiB ({:.2} bits per weight)",
        output.display(),
        opts.mix.name,
        if pure { ", pure" } else { "" },
        s.tensors,
        s.quantized,
        s.bytes_in as f64 / 1048576.0,
        s.bytes_out as f64 / 1048576.0,
        s.bytes_out as f64 * 8.0 / s.n_elements.max(1) as f64
    );
    Ok(ExitCode::SUCCESS)
}

/// The model's entry name: its file name, ending in `.gguf`.
fn model_entry_name(path: &Path) -> Result<String> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{}: the file name must be UTF-8", path.display()))?;
    if name.to_ascii_lowercase().ends_with(".gguf") {
        Ok(name.to_string())
    } else {
        Ok(format!("{name}.gguf"))
    }
}

/// The runtimes named with --runtime, else [`default_runtimes`].
fn runtimes_to_pack(kind: Kind, paths: &[PathBuf]) -> Result<Vec<Runtime>> {
    if paths.is_empty() {
        default_runtimes(kind)
    } else {
        paths.iter().map(|p| Runtime::load(p)).collect()
    }
}

/// The runtimes `build` and `upgrade` pack when none is named. For each platform the file is for
/// (all four for a universal file, this Linux machine's for a native one): the one this packer
/// carries, else `llamafile-<triple>` beside it (what `cargo xtask dist` writes), else for this
/// machine the `llamafile` beside it (a plain `cargo build`). A platform with none stops the
/// build: a universal file that quietly left out the Macs would be found out only on a Mac.
fn default_runtimes(kind: Kind) -> Result<Vec<Runtime>> {
    let wanted: Vec<Target> = match kind {
        Kind::Universal => Target::ALL.to_vec(),
        Kind::Native => Target::host()
            .filter(|t| t.os == Os::Linux)
            .into_iter()
            .collect(),
    };
    if wanted.is_empty() {
        bail!("--native makes a Linux file, and this machine is not Linux: name the Linux runtime with --runtime PATH");
    }
    let dir = own_dir()?;
    let mut carried: Vec<Option<Runtime>> = Runtime::carried()?.into_iter().map(Some).collect();
    let mut chosen: Vec<Runtime> = Vec::new();
    let mut missing = Vec::new();
    for t in wanted {
        if chosen.iter().any(|r| r.targets.contains(&t)) {
            continue; // a fat Mach-O covers both Macs
        }
        if let Some(r) = carried
            .iter_mut()
            .find(|r| r.as_ref().is_some_and(|r| r.targets.contains(&t)))
            .and_then(Option::take)
        {
            chosen.push(r);
            continue;
        }
        let beside = dir.join(format!("llamafile-{}", t.triple()));
        let plain = dir.join("llamafile");
        if beside.is_file() {
            chosen.push(Runtime::load(&beside)?);
        } else if Some(t) == Target::host() && plain.is_file() {
            chosen.push(Runtime::load(&plain)?);
        } else {
            missing.push(t);
        }
    }
    if !missing.is_empty() {
        let have: Vec<Target> = chosen.iter().flat_map(|r| r.targets.clone()).collect();
        bail!(
            "no runtime for {}: this llamafile-pack carries {} and finds {} beside it in {}. \
             A {} file is for {}; name the runtimes to pack with --runtime PATH (the file is then \
             for those platforms only), or use a llamafile-pack that carries all four \
             (`cargo xtask dist` builds one)",
            pack::join(&missing),
            carried_summary()?,
            if have.is_empty() {
                "no other".to_string()
            } else {
                format!("only {}", pack::join(&have))
            },
            dir.display(),
            kind.name(),
            if kind == Kind::Universal {
                "every platform"
            } else {
                "this machine"
            },
        );
    }
    Ok(chosen)
}

/// The directory llamafile-pack is in, where `cargo xtask dist` puts the runtimes.
fn own_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding llamafile-pack's own path")?;
    Ok(exe.parent().unwrap_or(Path::new(".")).to_path_buf())
}

/// "runtimes for linux-x86_64, …" or "no runtimes", for messages.
fn carried_summary() -> Result<String> {
    let carried = Runtime::carried()?;
    Ok(if carried.is_empty() {
        "no runtimes".to_string()
    } else {
        let targets: Vec<Target> = carried.iter().flat_map(|r| r.targets.clone()).collect();
        format!("runtimes for {}", pack::join(&targets))
    })
}

/// `llamafile-pack sign`: a signed copy of a thin Mach-O executable, checked as `verify` checks.
pub fn sign(input: &Path, output: &Path, identifier: &str) -> Result<ExitCode> {
    pack::refuse_overwriting_inputs(output, &[input])?;
    let data = fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let signed =
        macho::sign_adhoc(&data, identifier).with_context(|| input.display().to_string())?;
    let exe = macho::read(&signed).context("the signed file does not verify")?;
    let tmp = TempFile::create(output)?;
    (&tmp.file)
        .write_all(&signed)
        .with_context(|| format!("writing {}", tmp.path.display()))?;
    tmp.commit(output, 0o755)?;
    eprintln!("wrote {}: {}", output.display(), mac_summary(&exe));
    Ok(ExitCode::SUCCESS)
}

/// `llamafile-pack runtimes`: what `build` and `upgrade` pack when no --runtime is named.
pub fn runtimes() -> Result<ExitCode> {
    let carried = Runtime::carried()?;
    let dir = own_dir()?;
    let mut out = std::io::stdout().lock();
    if carried.is_empty() {
        writeln!(
            out,
            "{} carries no runtimes (it was built without `cargo xtask dist`)",
            pack::PACKER
        )?;
    } else {
        writeln!(
            out,
            "{} carries these runtimes, built with it from the same source:",
            pack::PACKER
        )?;
        for r in &carried {
            writeln!(
                out,
                "  {:<15} llamafile {:<8} {:>10} bytes  sha256 {}",
                pack::join(&r.targets),
                env!("CARGO_PKG_VERSION"),
                r.data.len(),
                r.digest.sha256_hex()
            )?;
        }
    }
    let beside: Vec<PathBuf> = Target::ALL
        .iter()
        .map(|t| dir.join(format!("llamafile-{}", t.triple())))
        .chain([dir.join("llamafile")])
        .filter(|p| p.is_file())
        .collect();
    if !beside.is_empty() {
        writeln!(
            out,
            "beside it, used for a platform it does not carry (or with --runtime):"
        )?;
        for p in beside {
            writeln!(out, "  {}", p.display())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn open_llamafile(path: &Path) -> Result<(File, Payload)> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let payload = read_payload(&file)
        .with_context(|| path.display().to_string())?
        .with_context(|| {
            format!(
                "{}: no zip payload at its end, so not a llamafile",
                path.display()
            )
        })?;
    Ok((file, payload))
}

fn map(file: &File, path: &Path) -> Result<Mmap> {
    // SAFETY: read-only map, used while the file is open; a file truncated under us would
    // fault, as any reader racing a writer would misread.
    unsafe { Mmap::map(file) }.with_context(|| format!("mapping {}", path.display()))
}

fn entry_bytes<'a>(map: &'a [u8], e: &Entry, path: &Path) -> Result<&'a [u8]> {
    let range = usize::try_from(e.data_offset)
        .ok()
        .zip(usize::try_from(e.data_offset + e.size).ok());
    range
        .and_then(|(a, b)| map.get(a..b))
        .with_context(|| format!("{}: entry `{}` is outside the file", path.display(), e.name))
}

fn parse_kind(path: &Path, kind: &str) -> Result<Kind> {
    match kind {
        "universal" => Ok(Kind::Universal),
        "native" => Ok(Kind::Native),
        other => bail!("{}: manifest names unknown kind `{other}`", path.display()),
    }
}

/// A llamafile without a manifest (made by other tools): native if it starts with an ELF.
fn guess_kind(file: &File, payload: &Payload) -> Result<Kind> {
    let mut magic = [0u8; 4];
    if payload.start >= 4 {
        std::os::unix::fs::FileExt::read_exact_at(file, &mut magic, 0)?;
    }
    Ok(if &magic == b"\x7fELF" {
        Kind::Native
    } else {
        Kind::Universal
    })
}

#[derive(Serialize)]
struct EntryReport {
    name: String,
    method: u16,
    header_offset: u64,
    data_offset: u64,
    size: u64,
    crc32: String,
    /// The largest power of two (up to 65536) dividing the data offset.
    alignment: u64,
}

#[derive(Serialize)]
struct InspectReport {
    file: String,
    size: u64,
    kind: String,
    /// Bytes before the zip: the launcher script or the native runtime.
    prefix_size: u64,
    packer: Option<String>,
    entries: Vec<EntryReport>,
    runtimes: Vec<RuntimeInfo>,
    args: Option<Vec<String>>,
    model: Option<ModelReport>,
}

#[derive(Serialize)]
struct ModelReport {
    entry: String,
    size: u64,
    sha256: Option<String>,
    #[serde(flatten)]
    summary: ModelSummary,
}

pub fn inspect(path: &Path, json: bool) -> Result<ExitCode> {
    if let Some(report) = runtime_report(path)? {
        let mut out = std::io::stdout().lock();
        if json {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        } else {
            print_runtime_report(&mut out, &report)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (file, payload) = open_llamafile(path)?;
    let manifest = payload
        .manifest(&file)
        .context(path.display().to_string())?;
    let gguf = payload.gguf().context(path.display().to_string())?;
    let map = map(&file, path)?;
    let model = match gguf {
        Some(e) => Some(ModelReport {
            entry: e.name.clone(),
            size: e.size,
            sha256: manifest.as_ref().map(|m| m.model.sha256.clone()),
            summary: model::summarize(path, entry_bytes(&map, e, path)?)?,
        }),
        None => None,
    };
    let kind = match &manifest {
        Some(m) => m.kind.clone(),
        None => format!("{} (no manifest)", guess_kind(&file, &payload)?.name()),
    };
    let report = InspectReport {
        file: path.display().to_string(),
        size: file.metadata()?.len(),
        kind,
        prefix_size: payload.start,
        packer: manifest.as_ref().map(|m| m.packer.clone()),
        entries: payload
            .entries
            .iter()
            .map(|e| EntryReport {
                name: e.name.clone(),
                method: e.method,
                header_offset: e.header_offset,
                data_offset: e.data_offset,
                size: e.size,
                crc32: format!("{:08x}", e.crc32),
                alignment: alignment(e.data_offset),
            })
            .collect(),
        runtimes: manifest
            .as_ref()
            .map(|m| m.runtimes.clone())
            .unwrap_or_default(),
        args: payload.args(&file).context(path.display().to_string())?,
        model,
    };
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print_report(&mut out, &report)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What `inspect` and `verify` say of a runtime executable given on its own.
#[derive(Serialize)]
struct RuntimeReport {
    file: String,
    size: u64,
    sha256: String,
    targets: Vec<String>,
    /// Each Mach-O slice, as macho.rs reads it; empty for a Linux runtime.
    macos: Vec<MacExecutable>,
}

/// `Some` when `path` is a runtime executable with no payload (not a llamafile). Reading a Mac
/// runtime checks its signature: a mismatch is an error naming the page.
fn runtime_report(path: &Path) -> Result<Option<RuntimeReport>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    if read_payload(&file)
        .with_context(|| path.display().to_string())?
        .is_some()
    {
        return Ok(None);
    }
    let data = map(&file, path)?;
    if object::FileKind::parse(&data[..]).is_err() {
        return Ok(None); // neither: open_llamafile says it is not a llamafile
    }
    let targets = target::detect(path, &data)?;
    let macos = if targets.iter().any(|t| t.os == Os::Darwin) {
        let slices = macho::read_slices(&data).with_context(|| path.display().to_string())?;
        for exe in &slices {
            macho::require_valid_signature(exe).with_context(|| path.display().to_string())?;
        }
        slices
    } else {
        Vec::new()
    };
    Ok(Some(RuntimeReport {
        file: path.display().to_string(),
        size: data.len() as u64,
        sha256: copy::digest_bytes(&data).sha256_hex(),
        targets: targets.iter().map(Target::to_string).collect(),
        macos,
    }))
}

fn runtime_summary(r: &RuntimeReport) -> String {
    let mut text = format!("runtime for {}", r.targets.join(", "));
    for exe in &r.macos {
        text += &format!("; {}", mac_summary(exe));
    }
    text
}

/// One line: the CPU, the oldest macOS, and the signature's coverage.
fn mac_summary(exe: &MacExecutable) -> String {
    let signed = match &exe.signature {
        Some(s) => format!(
            "signed ({}), {} pages of {} bytes match, covering all {} bytes before the signature",
            s.flags.join(", "),
            s.pages,
            s.page_size,
            s.code_limit
        ),
        None => "not signed".into(),
    };
    format!(
        "Mach-O {} executable{}, macOS {} or later, {signed}",
        exe.cpu,
        if exe.pie { " (PIE)" } else { "" },
        exe.min_macos
    )
}

fn print_runtime_report(out: &mut impl Write, r: &RuntimeReport) -> Result<()> {
    writeln!(out, "file: {} ({} bytes)", r.file, r.size)?;
    writeln!(out, "{}", runtime_summary(r))?;
    writeln!(out, "sha256: {}", r.sha256)?;
    for exe in &r.macos {
        writeln!(out, "{} slice:", exe.cpu)?;
        writeln!(out, "  libraries: {}", exe.libraries.join(", "))?;
        if exe.imports_not_from_libsystem.is_empty() {
            writeln!(
                out,
                "  imports: {} symbols, all from libSystem",
                exe.imports
            )?;
        } else {
            writeln!(
                out,
                "  imports: {} symbols, {} not from libSystem: {}",
                exe.imports,
                exe.imports_not_from_libsystem.len(),
                exe.imports_not_from_libsystem.join(", ")
            )?;
        }
        if let Some(s) = &exe.signature {
            writeln!(out, "  code signature identifier: {}", s.identifier)?;
        }
    }
    Ok(())
}

fn alignment(offset: u64) -> u64 {
    if offset == 0 {
        GGUF_ALIGNMENT
    } else {
        (1u64 << offset.trailing_zeros()).min(GGUF_ALIGNMENT)
    }
}

fn print_report(out: &mut impl Write, r: &InspectReport) -> Result<()> {
    writeln!(out, "file:     {} ({} bytes)", r.file, r.size)?;
    writeln!(
        out,
        "kind:     {} ({} bytes before the zip)",
        r.kind, r.prefix_size
    )?;
    if let Some(p) = &r.packer {
        writeln!(out, "packer:   {p}")?;
    }
    writeln!(out, "entries:")?;
    writeln!(
        out,
        "  {:>12} {:>12} {:>14} {:>6} {:>6}  name",
        "header", "data", "size", "align", "method"
    )?;
    for e in &r.entries {
        writeln!(
            out,
            "  {:>12} {:>12} {:>14} {:>6} {:>6}  {}",
            e.header_offset, e.data_offset, e.size, e.alignment, e.method, e.name
        )?;
    }
    if !r.runtimes.is_empty() {
        writeln!(out, "runtimes:")?;
        for rt in &r.runtimes {
            writeln!(
                out,
                "  {:<30} {:>10} bytes  sha256 {}  ({})",
                rt.targets.join(", "),
                rt.size,
                rt.sha256,
                rt.entry.as_deref().unwrap_or("the prefix")
            )?;
        }
    }
    match &r.args {
        Some(a) if !a.is_empty() => writeln!(out, "args:     {}", shell_words(a))?,
        _ => writeln!(out, "args:     (none)")?,
    }
    if let Some(m) = &r.model {
        let s = &m.summary;
        writeln!(out, "model:    {} ({} bytes)", m.entry, m.size)?;
        if let Some(sha) = &m.sha256 {
            writeln!(out, "  sha256:         {sha}")?;
        }
        writeln!(out, "  architecture:   {}", s.architecture)?;
        writeln!(
            out,
            "  parameters:     {} ({})",
            s.parameters,
            human_count(s.parameters)
        )?;
        let types: Vec<String> = s
            .tensor_types
            .iter()
            .map(|(t, n)| format!("{t} ×{n}"))
            .collect();
        writeln!(
            out,
            "  tensors:        {} ({})",
            s.tensor_count,
            types.join(", ")
        )?;
        match s.context_length {
            Some(n) => writeln!(out, "  context length: {n}")?,
            None => writeln!(out, "  context length: (not stated)")?,
        }
        writeln!(
            out,
            "  chat template:  {}",
            if s.chat_template { "yes" } else { "no" }
        )?;
    }
    Ok(())
}

fn shell_words(args: &[String]) -> String {
    quote_args(args).trim_end().replace('\n', " ")
}

fn human_count(n: u64) -> String {
    match n {
        0..1_000_000 => format!("{:.1} K", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} M", n as f64 / 1e6),
        _ => format!("{:.2} B", n as f64 / 1e9),
    }
}

pub fn verify(path: &Path) -> Result<ExitCode> {
    // A runtime on its own: reading it checks it (a Mac one's signature, page by page).
    match runtime_report(path) {
        Ok(Some(report)) => {
            println!("ok    {}", runtime_summary(&report));
            println!("{}: verified", path.display());
            return Ok(ExitCode::SUCCESS);
        }
        Ok(None) => {}
        Err(e) => {
            println!("FAIL  {e:#}");
            println!("{}: 1 check(s) failed", path.display());
            return Ok(ExitCode::FAILURE);
        }
    }
    let (file, payload) = open_llamafile(path)?;
    let mut failures = 0usize;
    let mut check = |ok: bool, what: String| {
        if ok {
            println!("ok    {what}");
        } else {
            println!("FAIL  {what}");
            failures += 1;
        }
    };
    let manifest = match payload.manifest(&file) {
        Ok(Some(m)) => m,
        Ok(None) => bail!(
            "{}: no {MANIFEST_NAME}, so nothing to verify against (not made by llamafile-pack)",
            path.display()
        ),
        Err(e) => bail!("{}: {e}", path.display()),
    };

    match payload.gguf() {
        Ok(Some(e)) => check(
            e.name == manifest.model.entry,
            format!(
                "model entry `{}` stored, data at offset {} ({}-aligned)",
                e.name, e.data_offset, GGUF_ALIGNMENT
            ),
        ),
        Ok(None) => check(false, "model: no GGUF entry".into()),
        Err(e) => check(false, format!("model: {e}")),
    }

    // Every entry: its CRC-32, and the sha256 the manifest gives for it.
    for e in &payload.entries {
        if e.method != METHOD_STORED {
            check(
                false,
                format!("`{}` is compressed (method {})", e.name, e.method),
            );
            continue;
        }
        let digest = copy::stream(
            &file,
            path,
            e.data_offset,
            e.size,
            None,
            &format!("verifying {}", e.name),
        )?;
        check(
            digest.crc32 == e.crc32,
            format!("`{}` CRC-32 {:08x}", e.name, e.crc32),
        );
        let expected = if e.name == manifest.model.entry {
            Some((manifest.model.size, &manifest.model.sha256))
        } else {
            manifest
                .runtimes
                .iter()
                .find(|r| r.entry.as_deref() == Some(e.name.as_str()))
                .map(|r| (r.size, &r.sha256))
        };
        if let Some((size, sha)) = expected {
            check(
                size == e.size && digest.sha256_hex() == *sha,
                format!("`{}` sha256 {}", e.name, digest.sha256_hex()),
            );
        }
        // A Mac runs the runtime the launcher extracts only if its signature still holds.
        if e.name.starts_with("runtime/darwin") {
            let map = map(&file, path)?;
            match macho::read_slices(entry_bytes(&map, e, path)?) {
                Ok(slices) => {
                    for exe in &slices {
                        match macho::require_valid_signature(exe) {
                            Ok(()) => check(true, format!("`{}` {}", e.name, mac_summary(exe))),
                            Err(err) => check(false, format!("`{}`: {err:#}", e.name)),
                        }
                    }
                }
                Err(err) => check(false, format!("`{}`: {err:#}", e.name)),
            }
        }
    }
    for r in &manifest.runtimes {
        match &r.entry {
            Some(name) => {
                if payload.entry(name).is_none() {
                    check(false, format!("runtime entry `{name}` is missing"));
                }
            }
            None => {
                let digest =
                    copy::stream(&file, path, 0, payload.start, None, "verifying runtime")?;
                check(
                    r.size == payload.start && digest.sha256_hex() == r.sha256,
                    format!(
                        "native runtime ({} bytes before the zip) sha256 {}",
                        payload.start,
                        digest.sha256_hex()
                    ),
                );
            }
        }
    }
    if payload.entry(&manifest.model.entry).is_none() {
        check(
            false,
            format!("model entry `{}` is missing", manifest.model.entry),
        );
    }

    if manifest.kind == "universal" {
        check_launcher(&file, path, &payload, &manifest, &mut check)?;
    }

    match payload.args(&file) {
        Ok(args) => check(
            args.unwrap_or_default() == manifest.args,
            ".args matches the manifest's default arguments".into(),
        ),
        Err(e) => check(false, format!(".args: {e}")),
    }

    if let Ok(Some(e)) = payload.gguf() {
        let map = map(&file, path)?;
        match entry_bytes(&map, e, path).and_then(|b| model::summarize(path, b)) {
            Ok(s) => check(
                true,
                format!(
                    "GGUF parses: {}, {} tensors",
                    s.architecture, s.tensor_count
                ),
            ),
            Err(err) => check(false, format!("GGUF: {err:#}")),
        }
    }

    if failures == 0 {
        println!("{}: verified", path.display());
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{}: {failures} check(s) failed", path.display());
        Ok(ExitCode::FAILURE)
    }
}

/// The launcher must point each platform at the bytes of the runtime the manifest names.
fn check_launcher(
    file: &File,
    path: &Path,
    payload: &Payload,
    manifest: &Manifest,
    check: &mut impl FnMut(bool, String),
) -> Result<()> {
    // The script is a few KiB; a prefix bigger than this is not one of ours.
    const MAX_SCRIPT: u64 = 1 << 20;
    if payload.start > MAX_SCRIPT {
        check(
            false,
            format!("launcher: {} bytes before the zip", payload.start),
        );
        return Ok(());
    }
    let mut script = vec![0u8; payload.start as usize];
    std::os::unix::fs::FileExt::read_exact_at(file, &mut script, 0)
        .with_context(|| format!("reading {}", path.display()))?;
    let script = String::from_utf8_lossy(&script);
    check(
        script.starts_with("#!/bin/sh\n"),
        "launcher starts with #!/bin/sh".into(),
    );
    for r in &manifest.runtimes {
        let Some(e) = r.entry.as_deref().and_then(|n| payload.entry(n)) else {
            continue;
        };
        for t in &r.targets {
            let Some(target) = Target::ALL.iter().find(|x| x.to_string() == *t) else {
                check(false, format!("manifest names unknown target `{t}`"));
                continue;
            };
            let line = launcher::case_line(
                *target,
                &launcher::Placed {
                    targets: vec![*target],
                    start: e.data_offset + 1,
                    size: e.size,
                    sha256: r.sha256.clone(),
                },
            );
            check(
                script.lines().any(|l| l == line),
                format!("launcher points {t} at `{}`", e.name),
            );
        }
    }
    Ok(())
}

pub fn extract(path: &Path, name: Option<&str>, output: &Path) -> Result<ExitCode> {
    let (file, payload) = open_llamafile(path)?;
    let entry = match name {
        Some(n) => payload.entry(n).with_context(|| {
            let names: Vec<&str> = payload.entries.iter().map(|e| e.name.as_str()).collect();
            format!(
                "{}: no entry `{n}` (it has: {})",
                path.display(),
                names.join(", ")
            )
        })?,
        None => payload
            .gguf()
            .context(path.display().to_string())?
            .with_context(|| format!("{}: no GGUF entry", path.display()))?,
    };
    if entry.method != METHOD_STORED {
        bail!(
            "{}: entry `{}` is compressed (method {}); use unzip for it",
            path.display(),
            entry.name,
            entry.method
        );
    }
    pack::refuse_overwriting_inputs(output, &[path])?;
    let manifest = payload
        .manifest(&file)
        .context(path.display().to_string())?;
    let mut tmp = TempFile::create(output)?;
    let digest = copy::stream(
        &file,
        path,
        entry.data_offset,
        entry.size,
        Some(&mut tmp.file),
        &format!("extracting {}", entry.name),
    )?;
    // Trailing zeros were skipped with a seek: give the file its full length.
    tmp.file.set_len(entry.size)?;
    tmp.file.sync_all()?;
    if digest.crc32 != entry.crc32 {
        bail!(
            "{}: entry `{}` has CRC-32 {:08x}, the directory says {:08x}: it is damaged",
            path.display(),
            entry.name,
            digest.crc32,
            entry.crc32
        );
    }
    let known_sha = manifest.as_ref().and_then(|m| {
        if m.model.entry == entry.name {
            Some(m.model.sha256.clone())
        } else {
            m.runtimes
                .iter()
                .find(|r| r.entry.as_deref() == Some(entry.name.as_str()))
                .map(|r| r.sha256.clone())
        }
    });
    if let Some(sha) = known_sha {
        if sha != digest.sha256_hex() {
            bail!(
                "{}: entry `{}` has sha256 {}, the manifest says {sha}: it is damaged",
                path.display(),
                entry.name,
                digest.sha256_hex()
            );
        }
    }
    let is_runtime = entry.name.starts_with("runtime/");
    tmp.commit(output, if is_runtime { 0o755 } else { 0o644 })?;
    eprintln!(
        "extracted `{}` ({} bytes, sha256 {}) to {}",
        entry.name,
        entry.size,
        digest.sha256_hex(),
        output.display()
    );
    Ok(ExitCode::SUCCESS)
}
