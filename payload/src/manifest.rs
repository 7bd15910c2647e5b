//! The manifest entry: what `llamafile-pack` put in the file, with digests `verify` checks.

use serde::{Deserialize, Serialize};

/// Version of the manifest layout; readers refuse a newer one rather than misread it.
pub const MANIFEST_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    /// The packer that wrote the file, e.g. `llamafile-pack 0.1.0`.
    pub packer: String,
    /// `universal` (shell launcher, runtimes as entries) or `native` (one runtime as the prefix).
    pub kind: String,
    pub runtimes: Vec<RuntimeInfo>,
    pub model: ModelInfo,
    /// The default arguments, as `.args` parses to.
    pub args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeInfo {
    /// Platforms it runs on, `os-arch` (`linux-x86_64`, `darwin-aarch64`, ...): a fat Mach-O
    /// lists several.
    pub targets: Vec<String>,
    /// The zip entry holding it; `None` for a native file's runtime, which is the prefix.
    pub entry: Option<String>,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    /// The GGUF's entry name (the input's file name).
    pub entry: String,
    pub size: u64,
    pub sha256: String,
}

impl Manifest {
    /// Pretty JSON with a final newline; field order is fixed, so equal manifests give equal bytes.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a manifest always serializes");
        s.push('\n');
        s
    }

    /// Parses a manifest, refusing formats newer than this reader knows.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, String> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| format!("bad JSON: {e}"))?;
        if m.format > MANIFEST_FORMAT {
            return Err(format!(
                "manifest format {} is newer than the {MANIFEST_FORMAT} this program reads",
                m.format
            ));
        }
        Ok(m)
    }
}
