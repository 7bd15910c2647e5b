//! The payload of a llamafile: a zip archive appended to a launcher script or a native runtime.
//!
//! The runtime reads it at start-up to find the GGUF it maps, and `llamafile-pack` reads it to
//! inspect, verify, extract and upgrade. Reading is a handful of positioned reads (`pread`): the
//! end record, the central directory and one local header per entry. Nothing is allocated by a
//! count taken from the file, and every inconsistency is an error naming the file offset.
//!
//! Offsets in a llamafile's zip are absolute (counted from the start of the file, prefix
//! included), which is what `unzip`, Python's `zipfile` and the `zip` crate expect of an archive
//! with data in front of it.

mod args;
mod error;
mod manifest;
mod source;
mod write;
mod zip;

pub use args::{merge_args, parse_args, quote_args, ArgsError, SPLICE};
pub use error::PayloadError;
pub use manifest::{Manifest, ModelInfo, RuntimeInfo, MANIFEST_FORMAT};
pub use write::{alignment_pad, local_header_len, ZipWriter};
pub use zip::{read_payload, Entry, Payload};

/// The GGUF entry's data must start at a multiple of this, so that mapping it works with 4 KiB,
/// 16 KiB (Apple Silicon) and 64 KiB (some aarch64 Linux kernels) pages.
pub const GGUF_ALIGNMENT: u64 = 65536;

/// Name of the entry holding the default arguments (llamafile's convention).
pub const ARGS_NAME: &str = ".args";

/// Name of the JSON manifest entry written by `llamafile-pack`.
pub const MANIFEST_NAME: &str = "llamafile-manifest.json";

/// The zip compression method "stored": the entry's bytes are in the file as they are.
pub const METHOD_STORED: u16 = 0;

/// Small entries (`.args`, the manifest) are read into memory; this bounds that allocation so
/// a corrupt size field cannot make the runtime allocate gigabytes.
pub const MAX_SMALL_ENTRY: u64 = 1 << 20;

/// What the fuzz targets run (see `fuzz/` and `runtime::fuzzing`). Not an API.
#[doc(hidden)]
pub mod fuzzing {
    use crate::PayloadError;

    /// Reads a payload from bytes in memory the way the runtime reads one from its file: the
    /// entries, the GGUF entry's rules, `.args`, the manifest. Every entry it returns must lie
    /// inside the bytes.
    pub fn read_all(bytes: &[u8]) -> Result<(), PayloadError> {
        let Some(p) = crate::zip::read_from(bytes)? else {
            return Ok(());
        };
        for e in &p.entries {
            let end = e.data_offset.checked_add(e.size);
            assert!(
                end.is_some_and(|end| end <= p.central_directory && e.header_offset >= p.start),
                "entry {e:?} outside the archive"
            );
        }
        if let Some(e) = p.gguf()? {
            assert_eq!(e.data_offset % crate::GGUF_ALIGNMENT, 0);
        }
        p.args_from(bytes)?;
        p.manifest_from(bytes)?;
        Ok(())
    }
}
