//! Finding the model: a plain GGUF given with `-m`, or the GGUF stored in a llamafile's zip payload.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

/// The mapped bytes of a model's GGUF and where they came from.
pub struct ModelSource {
    path: PathBuf,
    map: Mmap,
}

impl ModelSource {
    /// Opens `-m PATH`; without it, the GGUF inside `self_path` (or this executable).
    pub fn open(model: Option<&Path>, self_path: Option<&Path>) -> Result<ModelSource, String> {
        let Some(path) = model.or(self_path) else {
            return Err("no model: run with -m MODEL.gguf, or pack one into a llamafile with \
                        `llamafile-pack build MODEL.gguf -o MODEL.llamafile`"
                .into());
        };
        let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: the map is read-only; a model file changed underneath a running process is
        // outside what any mmap-based loader (llama.cpp included) can defend against.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| format!("{}: cannot map: {e}", path.display()))?;
        Ok(ModelSource { path: path.to_path_buf(), map })
    }

    pub fn name(&self) -> String {
        self.path.display().to_string()
    }

    pub fn gguf(&self) -> Result<gguf::Gguf<'_>, String> {
        gguf::Gguf::parse(&self.map).map_err(|e| format!("{}: {e}", self.name()))
    }
}
