//! Files the tests check and make: digests, and GGUF models too big to write out.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

/// The SHA-256 of `path` in hex, from `sha256sum`: the digest the launcher names its cache
/// directories by and `llamafile-pack inspect` reports, computed by a tool independent of ours.
pub fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("spawning sha256sum: {e}"));
    assert!(
        out.status.success(),
        "sha256sum {} failed ({}):\n{}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

/// Writes a GGUF (version 3) whose only metadata is `general.architecture = llama` and whose
/// tensors are F32 with the given names and dimensions (ne0 first), one after another at
/// 32-byte-aligned offsets. The data is never written: the file is sparse, so tests can have
/// models of many GiB on a small disk. Returns the file's size.
pub fn sparse_gguf(path: &Path, tensors: &[(&str, &[u64])]) -> u64 {
    const F32: u32 = 0;
    const STRING: u32 = 8;
    let string = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    let mut h = Vec::new();
    h.extend_from_slice(b"GGUF");
    h.extend_from_slice(&3u32.to_le_bytes());
    h.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    h.extend_from_slice(&1u64.to_le_bytes()); // metadata entries
    string(&mut h, "general.architecture");
    h.extend_from_slice(&STRING.to_le_bytes());
    string(&mut h, "llama");
    let mut offset = 0u64;
    for (name, dims) in tensors {
        string(&mut h, name);
        h.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in *dims {
            h.extend_from_slice(&d.to_le_bytes());
        }
        h.extend_from_slice(&F32.to_le_bytes());
        h.extend_from_slice(&offset.to_le_bytes());
        offset = (offset + 4 * dims.iter().product::<u64>()).next_multiple_of(32);
    }
    h.resize(h.len().next_multiple_of(32), 0);
    let total = h.len() as u64 + offset;
    let f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all_at(&h, 0).expect("write the GGUF header");
    f.set_len(total).expect("extend the GGUF to its data");
    total
}
