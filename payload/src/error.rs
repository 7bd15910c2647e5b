use std::fmt;
use std::io;

use crate::ArgsError;

/// Why a payload could not be read or does not follow the llamafile rules.
#[derive(Debug)]
pub enum PayloadError {
    /// A read of `len` bytes at `offset` failed.
    Io {
        offset: u64,
        len: u64,
        source: io::Error,
    },
    /// The zip structures are inconsistent; `offset` is the file offset of the bad structure.
    Corrupt { offset: u64, message: String },
    /// The archive is a valid zip but an entry breaks a llamafile rule (two GGUFs, a compressed
    /// or misaligned GGUF, an oversized `.args`).
    Entry { name: String, message: String },
    /// The `.args` entry does not parse.
    Args { name: String, source: ArgsError },
    /// The manifest entry is not the JSON `llamafile-pack` writes.
    Manifest { name: String, message: String },
}

impl PayloadError {
    pub(crate) fn corrupt(offset: u64, message: impl Into<String>) -> Self {
        PayloadError::Corrupt {
            offset,
            message: message.into(),
        }
    }

    pub(crate) fn entry(name: &str, message: impl Into<String>) -> Self {
        PayloadError::Entry {
            name: name.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadError::Io {
                offset,
                len,
                source,
            } => write!(f, "reading {len} bytes at offset {offset}: {source}"),
            PayloadError::Corrupt { offset, message } => {
                write!(f, "zip payload corrupt at offset {offset}: {message}")
            }
            PayloadError::Entry { name, message } => write!(f, "entry `{name}`: {message}"),
            PayloadError::Args { name, source } => write!(f, "entry `{name}`: {source}"),
            PayloadError::Manifest { name, message } => write!(f, "entry `{name}`: {message}"),
        }
    }
}

impl std::error::Error for PayloadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PayloadError::Io { source, .. } => Some(source),
            PayloadError::Args { source, .. } => Some(source),
            _ => None,
        }
    }
}
