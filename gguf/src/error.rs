use std::fmt;

/// Why a GGUF file was rejected, or why a metadata value could not be read as asked.
///
/// It names the place (`offset`, `field`) as well as the problem, because a user holding a broken
/// or unusual model file needs to know which key or tensor to look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufError {
    /// Byte offset within the parsed slice where the offending item starts, when the error comes
    /// from parsing (a typed getter on an already parsed file has none).
    pub offset: Option<u64>,
    /// What was being read: `header`, `key "general.alignment"`, `tensor "blk.0.attn_q.weight"`, ...
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl GgufError {
    pub(crate) fn at(
        offset: u64,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> GgufError {
        GgufError {
            offset: Some(offset),
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn key(key: &str, message: impl Into<String>) -> GgufError {
        GgufError {
            offset: None,
            field: format!("key {key:?}"),
            message: message.into(),
        }
    }
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.offset {
            Some(o) => write!(
                f,
                "GGUF: at byte offset {o}, {}: {}",
                self.field, self.message
            ),
            None => write!(f, "GGUF: {}: {}", self.field, self.message),
        }
    }
}

impl std::error::Error for GgufError {}
