//! Writing a llamafile: the layout shared by `build` and `upgrade`.
//!
//! Universal: `[sh launcher][runtime entries][.args][model.gguf][manifest][central directory]`.
//! Native:    `[runtime ELF][.args][model.gguf][manifest][central directory]`.
//! The launcher needs the runtimes' offsets and the offsets depend on the launcher's length, so
//! the script is generated until its length is stable and then padded to it. The GGUF's data
//! is aligned to 65536 with padding in its local header (or, for a 1 to 3 byte shortfall, in
//! the `.args` header before it, since an extra field needs 4 bytes).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use payload::{
    alignment_pad, local_header_len, Manifest, ModelInfo, RuntimeInfo, ZipWriter, ARGS_NAME,
    GGUF_ALIGNMENT, MANIFEST_FORMAT, MANIFEST_NAME,
};

use crate::copy::{self, digest_bytes, Digest};
use crate::launcher::{self, Placed};
use crate::macho;
use crate::target::{self, Os, Target};

pub const PACKER: &str = concat!("llamafile-pack ", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Universal,
    Native,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Universal => "universal",
            Kind::Native => "native",
        }
    }
}

/// The runtimes compiled into this packer by `cargo xtask dist` (packer/build.rs).
mod carried {
    include!(concat!(env!("OUT_DIR"), "/carried.rs"));
}

/// A runtime executable to pack: a file (mapped: runtimes are megabytes), or one this packer
/// carries.
pub struct Runtime {
    /// The file it was read from; None for one this packer carries.
    pub path: Option<PathBuf>,
    pub data: RuntimeBytes,
    pub targets: Vec<Target>,
    pub digest: Digest,
}

pub enum RuntimeBytes {
    Mapped(Mmap),
    Carried(&'static [u8]),
}

impl std::ops::Deref for RuntimeBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            RuntimeBytes::Mapped(map) => map,
            RuntimeBytes::Carried(bytes) => bytes,
        }
    }
}

impl Runtime {
    pub fn load(path: &Path) -> Result<Runtime> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: the map is read-only and lives while packing; a runtime changed under us
        // would at worst produce a file whose verify fails.
        let data =
            unsafe { Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))?;
        Runtime::new(Some(path.to_path_buf()), RuntimeBytes::Mapped(data), path)
    }

    /// The runtimes this packer carries, in the order they were compiled in.
    pub fn carried() -> Result<Vec<Runtime>> {
        carried::CARRIED
            .iter()
            .map(|(built_from, bytes)| {
                let name = format!("llamafile-pack's copy of {built_from}");
                Runtime::new(None, RuntimeBytes::Carried(bytes), Path::new(&name))
            })
            .collect()
    }

    /// A darwin runtime must be signed as a Mac requires (see macho.rs): packing one that is not
    /// would make a file that fails only on a Mac, long after.
    fn new(path: Option<PathBuf>, data: RuntimeBytes, named: &Path) -> Result<Runtime> {
        let targets = target::detect(named, &data)?;
        if targets.iter().any(|t| t.os == Os::Darwin) {
            for exe in macho::read_slices(&data).with_context(|| named.display().to_string())? {
                macho::require_valid_signature(&exe)
                    .with_context(|| named.display().to_string())?;
            }
        }
        let digest = digest_bytes(&data);
        Ok(Runtime {
            path,
            data,
            targets,
            digest,
        })
    }

    /// The runtime as messages name it.
    pub fn describe(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => format!("llamafile-pack's own {} runtime", join(&self.targets)),
        }
    }

    fn entry_name(&self) -> String {
        match self.targets.as_slice() {
            [one] => format!("runtime/{one}"),
            // Only a fat Mach-O has several targets, all of one OS.
            [first, ..] => format!("runtime/{}-universal", first.os.name()),
            [] => "runtime/none".into(),
        }
    }
}

/// The model: a byte range of a file (a whole GGUF, or the GGUF entry of an older llamafile).
pub struct Model<'a> {
    pub file: &'a File,
    pub path: &'a Path,
    pub offset: u64,
    pub size: u64,
    pub entry: String,
    /// The digest the bytes must have (upgrade copies weights the old manifest vouches for).
    pub expected_sha256: Option<String>,
}

pub struct Plan<'a> {
    pub kind: Kind,
    pub runtimes: Vec<Runtime>,
    pub model: Model<'a>,
    /// The `.args` entry's bytes, and what they parse to (for the manifest).
    pub args_text: Vec<u8>,
    pub args: Vec<String>,
}

/// Checks the runtimes suit the kind and cover each platform at most once; sorts them in the
/// launcher's order.
pub fn check_runtimes(kind: Kind, runtimes: &mut [Runtime]) -> Result<()> {
    if runtimes.is_empty() {
        bail!("no runtime to pack");
    }
    if kind == Kind::Native {
        if runtimes.len() != 1 {
            bail!(
                "--native packs exactly one runtime, {} given",
                runtimes.len()
            );
        }
        let r = &runtimes[0];
        if r.targets.iter().any(|t| t.os != Os::Linux) {
            bail!(
                "{}: a native file needs a Linux ELF runtime; this one is for {}. A native file is \
                 the runtime with the weights appended, and bytes appended to a Mac executable fall \
                 outside its code signature, so macOS would kill it: make a universal file (leave \
                 out --native), which runs on Macs",
                r.describe(),
                join(&r.targets)
            );
        }
    }
    runtimes.sort_by_key(|r| r.targets[0]);
    for (i, a) in runtimes.iter().enumerate() {
        for b in &runtimes[i + 1..] {
            if let Some(t) = a.targets.iter().find(|t| b.targets.contains(t)) {
                bail!(
                    "{} and {} both run on {t}: give one runtime per platform",
                    a.describe(),
                    b.describe()
                );
            }
        }
    }
    Ok(())
}

pub fn join(targets: &[Target]) -> String {
    targets
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes the llamafile to `out` through a temporary file in the same directory and a rename.
pub fn write(plan: &Plan, out: &Path, inputs: &[&Path]) -> Result<Manifest> {
    refuse_overwriting_inputs(out, inputs)?;
    let tmp = TempFile::create(out)?;
    let manifest = write_to(plan, &tmp.file, &tmp.path)?;
    tmp.commit(out, 0o755)?;
    Ok(manifest)
}

fn write_to(plan: &Plan, file: &File, tmp_path: &Path) -> Result<Manifest> {
    let mut out = file
        .try_clone()
        .with_context(|| format!("writing {}", tmp_path.display()))?;
    let names: Vec<String> = plan.runtimes.iter().map(Runtime::entry_name).collect();
    let start = match plan.kind {
        Kind::Universal => {
            let script = universal_script(&plan.runtimes, &names);
            out.write_all(script.as_bytes())?;
            script.len() as u64
        }
        Kind::Native => {
            out.write_all(&plan.runtimes[0].data)?;
            plan.runtimes[0].data.len() as u64
        }
    };
    let mut zip = ZipWriter::new(out, start);
    let mut runtime_infos = Vec::new();
    for (r, name) in plan.runtimes.iter().zip(&names) {
        let entry = match plan.kind {
            Kind::Universal => {
                zip.add_bytes(name, 0o755, 0, &r.data, r.digest.crc32)?;
                Some(name.clone())
            }
            Kind::Native => None,
        };
        runtime_infos.push(RuntimeInfo {
            targets: r.targets.iter().map(|t| t.to_string()).collect(),
            entry,
            size: r.data.len() as u64,
            sha256: r.digest.sha256_hex(),
        });
    }

    let m = &plan.model;
    let args_len = plan.args_text.len() as u64;
    let after_args = zip.position() + local_header_len(ARGS_NAME, args_len, 0) + args_len;
    let (args_pad, gguf_pad) = match alignment_pad(after_args, &m.entry, m.size, GGUF_ALIGNMENT) {
        Some(pad) => (0, pad),
        None => match alignment_pad(after_args + 4, &m.entry, m.size, GGUF_ALIGNMENT) {
            Some(pad) => (4, pad),
            None => bail!("cannot align the model entry (name too long?)"),
        },
    };
    let args_crc = crc32fast::hash(&plan.args_text);
    zip.add_bytes(ARGS_NAME, 0o644, args_pad, &plan.args_text, args_crc)?;
    let data_offset = zip.begin_entry(&m.entry, 0o644, m.size, gguf_pad)?;
    if data_offset % GGUF_ALIGNMENT != 0 {
        bail!("internal error: model data planned at unaligned offset {data_offset}");
    }
    let digest = copy::stream(
        m.file,
        m.path,
        m.offset,
        m.size,
        Some(zip.data()),
        &format!("packing {}", m.entry),
    )?;
    if let Some(expected) = &m.expected_sha256 {
        if *expected != digest.sha256_hex() {
            bail!(
                "{}: the model's sha256 is {}, its manifest says {expected}: the weights are damaged",
                m.path.display(),
                digest.sha256_hex()
            );
        }
    }
    zip.end_entry(digest.crc32)?;

    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        packer: PACKER.into(),
        kind: plan.kind.name().into(),
        runtimes: runtime_infos,
        model: ModelInfo {
            entry: m.entry.clone(),
            size: m.size,
            sha256: digest.sha256_hex(),
        },
        args: plan.args.clone(),
    };
    let json = manifest.to_json();
    zip.add_bytes(
        MANIFEST_NAME,
        0o644,
        0,
        json.as_bytes(),
        crc32fast::hash(json.as_bytes()),
    )?;
    let out = zip
        .finish()
        .with_context(|| format!("writing {}", tmp_path.display()))?;
    out.sync_all()
        .with_context(|| format!("syncing {}", tmp_path.display()))?;
    Ok(manifest)
}

/// Generates the launcher so the offsets written in it match its own length.
fn universal_script(runtimes: &[Runtime], names: &[String]) -> String {
    let placed_after = |len: u64| -> Vec<Placed> {
        let mut pos = len;
        runtimes
            .iter()
            .zip(names)
            .map(|(r, name)| {
                let size = r.data.len() as u64;
                let data = pos + local_header_len(name, size, 0);
                pos = data + size;
                Placed {
                    targets: r.targets.clone(),
                    start: data + 1,
                    size,
                    sha256: r.digest.sha256_hex(),
                }
            })
            .collect()
    };
    // The length only grows, by a few digits at most, so this settles in a few rounds.
    let mut len = 0u64;
    loop {
        let s = launcher::script(&placed_after(len), 0);
        if s.len() as u64 <= len {
            let padded = launcher::script(&placed_after(len), (len - s.len() as u64) as usize);
            debug_assert_eq!(padded.len() as u64, len);
            return padded;
        }
        len = s.len() as u64;
    }
}

/// Refuses an output that is one of the inputs (same file, even through another path).
pub fn refuse_overwriting_inputs(out: &Path, inputs: &[&Path]) -> Result<()> {
    let Ok(out_meta) = fs::metadata(out) else {
        return Ok(());
    };
    if out_meta.is_dir() {
        bail!("{} is a directory", out.display());
    }
    for input in inputs {
        if let Ok(m) = fs::metadata(input) {
            if m.dev() == out_meta.dev() && m.ino() == out_meta.ino() {
                bail!(
                    "{} is the input {}: refusing to overwrite an input",
                    out.display(),
                    input.display()
                );
            }
        }
    }
    Ok(())
}

/// Temporary files not yet renamed into place, removed by the Ctrl-C handler: an interrupted
/// pack of a model of many GB would otherwise leave a hidden file as large beside the output.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn pending() -> MutexGuard<'static, Vec<PathBuf>> {
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes the temporary files of writes in progress; for the Ctrl-C handler, which exits next.
/// The output itself is never touched: it is either the old file or, renamed already, the new.
pub fn remove_pending() {
    for path in pending().drain(..) {
        let _ = fs::remove_file(path);
    }
}

/// A file being written beside its final path; removed unless committed.
pub struct TempFile {
    pub path: PathBuf,
    pub file: File,
    committed: bool,
}

impl TempFile {
    /// Creates `.NAME.PID.N.tmp` in the output's directory (the rename must not cross file
    /// systems), with the first N no earlier file holds: a process killed before it could clean
    /// up may have left one under this process's id.
    pub fn create(out: &Path) -> Result<TempFile> {
        let name = out
            .file_name()
            .with_context(|| format!("{} names no file", out.display()))?;
        let dir = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        const TRIES: u32 = 100;
        for n in 0..TRIES {
            let path = dir.join(format!(
                ".{}.{}.{n}.tmp",
                name.to_string_lossy(),
                std::process::id()
            ));
            let mut pending = pending();
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    pending.push(path.clone());
                    return Ok(TempFile {
                        path,
                        file,
                        committed: false,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
        bail!(
            "{}: {TRIES} temporary files of earlier runs are in the way; remove the .{}.*.tmp files there",
            dir.display(),
            name.to_string_lossy()
        )
    }

    /// Gives the file its permission bits and renames it into place.
    pub fn commit(mut self, out: &Path, mode: u32) -> Result<()> {
        self.file
            .set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting permissions of {}", self.path.display()))?;
        let mut pending = pending();
        fs::rename(&self.path, out)
            .with_context(|| format!("renaming {} to {}", self.path.display(), out.display()))?;
        pending.retain(|p| *p != self.path);
        self.committed = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed {
            let mut pending = pending();
            let _ = fs::remove_file(&self.path);
            pending.retain(|p| *p != self.path);
        }
    }
}
