//! Finding the model: a plain GGUF given with `-m`, another llamafile given with `-m`, or the GGUF
//! stored in the zip payload at the end of this very executable.
//!
//! Only the GGUF entry's byte range is mapped, read-only: the weights are used where they lie in
//! the file, never copied to the heap or extracted.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::{Mmap, MmapOptions};
use payload::Payload;

/// The flag the universal launcher puts first to say which file holds the payload.
pub const SELF_FLAG: &str = "--llamafile-self";

/// Linux's link to the running executable, open even when the file was renamed or replaced.
const PROC_SELF_EXE: &str = "/proc/self/exe";

/// A file that ends in a llamafile zip payload.
pub struct PayloadFile {
    pub path: PathBuf,
    pub file: File,
    pub payload: Payload,
}

impl PayloadFile {
    /// Opens `path` and reads its payload; `Ok(None)` when the file does not end in a zip.
    pub fn open(path: &Path) -> Result<Option<PayloadFile>, String> {
        let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        match payload::read_payload(&file) {
            Ok(Some(payload)) => Ok(Some(PayloadFile {
                path: path.to_path_buf(),
                file,
                payload,
            })),
            Ok(None) => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// The default arguments of its `.args` entry, if it has one.
    pub fn default_args(&self) -> Result<Option<Vec<String>>, String> {
        self.payload
            .args(&self.file)
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

/// Finds the file this process was started from and reads its payload. `explicit` is the path the
/// universal launcher passed; otherwise Linux's /proc/self/exe, then `current_exe`, then argv[0]
/// looked up through PATH. A candidate counts only once its zip end record is found, so a runtime
/// without a payload gives `Ok(None)`.
pub fn find_self(
    explicit: Option<&Path>,
    argv0: Option<&str>,
) -> Result<Option<PayloadFile>, String> {
    if let Some(path) = explicit {
        return match PayloadFile::open(path)? {
            Some(p) => Ok(Some(p)),
            None => Err(format!(
                "{}: {SELF_FLAG} names a file without a llamafile payload",
                path.display()
            )),
        };
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if cfg!(target_os = "linux") {
        candidates.push(PathBuf::from(PROC_SELF_EXE));
    }
    if let Ok(exe) = std::env::current_exe() {
        candidates.push(exe);
    }
    if let Some(a0) = argv0 {
        candidates.extend(search_path(a0));
    }
    for c in candidates {
        // A candidate that cannot be opened (no /proc, a deleted file) is skipped; one that opens but
        // holds a broken zip is an error worth reporting.
        if File::open(&c).is_err() {
            continue;
        }
        if let Some(mut p) = PayloadFile::open(&c)? {
            // Messages name the file the user ran, not /proc/self/exe; the open handle stays.
            if c == Path::new(PROC_SELF_EXE) {
                if let Ok(real) = std::fs::read_link(&c) {
                    p.path = real;
                }
            }
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// argv[0] as a path: itself when it contains a slash, else each PATH directory joined with it.
fn search_path(argv0: &str) -> Vec<PathBuf> {
    if argv0.contains('/') {
        return vec![PathBuf::from(argv0)];
    }
    std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(argv0))
                .collect()
        })
        .unwrap_or_default()
}

/// The mapped bytes of a model's GGUF and where they came from.
pub struct ModelSource {
    name: String,
    map: Arc<Mmap>,
}

impl ModelSource {
    /// Maps `-m PATH` (a GGUF, or the GGUF inside a llamafile); without it, the GGUF in `self_file`.
    pub fn open(
        model: Option<&Path>,
        self_file: Option<&PayloadFile>,
    ) -> Result<ModelSource, String> {
        if let Some(path) = model {
            return match PayloadFile::open(path)? {
                Some(p) => Self::from_payload(&p),
                None => {
                    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
                    // SAFETY: a read-only map; a model file changed underneath a running process is
                    // outside what any mmap-based loader (llama.cpp included) can defend against.
                    let map = unsafe { Mmap::map(&file) }
                        .map_err(|e| format!("{}: cannot map: {e}", path.display()))?;
                    Ok(ModelSource::new(path.display().to_string(), map))
                }
            };
        }
        match self_file {
            Some(p) => Self::from_payload(p),
            None => Err(
                "no model: run with -m MODEL.gguf, or pack one into a llamafile with \
                         `llamafile-pack build MODEL.gguf -o MODEL.llamafile`"
                    .into(),
            ),
        }
    }

    fn from_payload(p: &PayloadFile) -> Result<ModelSource, String> {
        let shown = p.path.display();
        let entry = p
            .payload
            .gguf()
            .map_err(|e| format!("{shown}: {e}"))?
            .ok_or_else(|| format!("{shown}: the llamafile holds no .gguf entry"))?;
        let len = usize::try_from(entry.size)
            .map_err(|_| format!("{shown}: {} is too large to map", entry.name))?;
        // SAFETY: as above; the range was checked against the file by the payload reader.
        let map = unsafe {
            MmapOptions::new()
                .offset(entry.data_offset)
                .len(len)
                .map(&p.file)
        }
        .map_err(|e| format!("{shown}: cannot map {}: {e}", entry.name))?;
        Ok(ModelSource::new(format!("{shown}!{}", entry.name), map))
    }

    /// Starts mapping the pages in on another thread, while this one parses the metadata and
    /// builds the tokenizer: otherwise the first forward pass takes the page faults itself, tens
    /// of milliseconds of time to first token for a 0.5 GB model. (llama.cpp maps with
    /// MAP_POPULATE, which does the same work before anything else.)
    ///
    /// By reading one byte per 64 KiB, each a page fault that maps that much (Linux's default
    /// fault-around): faults take only the mapping's own lock. `MADV_POPULATE_READ` holds the
    /// whole address space's lock while it runs, which stalls every allocation this thread makes
    /// meanwhile (their mmap calls wait for it), and the tokenizer makes many.
    ///
    /// Before that, the map asks for transparent huge pages (`MADV_HUGEPAGE`): where the file is
    /// read from disk by these faults, Linux then reads it into 2 MiB folios and maps each with
    /// one page-table entry, and generating a token of a 7B model, which reads every weight once,
    /// stops paying a TLB miss and a prefetcher restart every 4 KiB (one 14336×4096 Q4_K matrix
    /// at one thread, from the same file: 9 GB/s through 4 KiB pages, 14 through 2 MiB ones). The
    /// kernel lines the map up with the file's 2 MiB boundaries itself. Pages already cached
    /// stay as they are; where huge pages are off, the advice fails and changes nothing.
    fn new(name: String, map: Mmap) -> ModelSource {
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        let map = Arc::new(map);
        let pages = Arc::clone(&map);
        // Detached: nothing waits for it, and a process that exits first simply stops it. Not
        // starting only means the faults happen later, as they would anyway.
        let _ = std::thread::Builder::new()
            .name("prefault".into())
            .spawn(move || {
                let touched = pages.iter().step_by(64 << 10).fold(0u8, |a, &b| a ^ b);
                std::hint::black_box(touched);
            });
        ModelSource { name, map }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn gguf(&self) -> Result<gguf::Gguf<'_>, String> {
        gguf::Gguf::parse(&self.map).map_err(|e| format!("{}: {e}", self.name))
    }
}
