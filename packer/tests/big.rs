//! A GGUF over 4 GiB (sparse, so it costs little disk) packs with ZIP64, lists in unzip, Python
//! and the zip crate, verifies, and its entry maps and parses.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// F32 tensor of 65536 × 16896 elements: 4.125 GiB.
const DIMS: [u64; 2] = [65536, 16896];
const F32: u32 = 0;

/// Removes the test's directory in /tmp however the test ends.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn gguf_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Writes a valid GGUF v3 with one big F32 tensor; the tensor data is a hole except for a
/// marked first and last MiB, so the copy has real bytes to carry at both ends.
fn write_big_gguf(path: &Path) -> u64 {
    let mut h = Vec::new();
    h.extend_from_slice(b"GGUF");
    h.extend_from_slice(&3u32.to_le_bytes());
    h.extend_from_slice(&1u64.to_le_bytes()); // tensors
    h.extend_from_slice(&2u64.to_le_bytes()); // metadata
    gguf_string(&mut h, "general.architecture");
    h.extend_from_slice(&8u32.to_le_bytes()); // string
    gguf_string(&mut h, "llama");
    gguf_string(&mut h, "llama.context_length");
    h.extend_from_slice(&4u32.to_le_bytes()); // u32
    h.extend_from_slice(&4096u32.to_le_bytes());
    gguf_string(&mut h, "big.weight");
    h.extend_from_slice(&2u32.to_le_bytes());
    for d in DIMS {
        h.extend_from_slice(&d.to_le_bytes());
    }
    h.extend_from_slice(&F32.to_le_bytes());
    h.extend_from_slice(&0u64.to_le_bytes());
    h.resize(h.len().div_ceil(32) * 32, 0);
    let data_start = h.len() as u64;
    let bytes = DIMS[0] * DIMS[1] * 4;
    let total = data_start + bytes;

    let mut f = fs::File::create(path).unwrap();
    f.write_all(&h).unwrap();
    f.write_all(&[0x3f; 1 << 20]).unwrap();
    f.set_len(total).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[0x40; 1 << 20], total - (1 << 20)).unwrap();
    total
}

/// Free space under `dir` in bytes, from `df`.
fn free_bytes(dir: &Path) -> u64 {
    let out = Command::new("df").arg("-Pk").arg(dir).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text.lines().nth(1).expect("df output");
    line.split_whitespace()
        .nth(3)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[test]
fn sparse_model_over_4_gib_packs_lists_verifies_and_maps() {
    let base = std::env::temp_dir().join(format!("llamafile-pack-big-{}", std::process::id()));
    fs::create_dir_all(&base).unwrap();
    let _cleanup = Cleanup(base.clone());
    let free = free_bytes(&base);
    // Sparse files need little, but a filesystem without holes would need 2 × 4.1 GiB.
    assert!(
        free > 10 << 30,
        "{} has {free} bytes free; this test needs 10 GiB to be safe",
        base.display()
    );

    let model = base.join("big.gguf");
    let size = write_big_gguf(&model);
    assert!(size > 1 << 32);
    let out = base.join("big.llamafile");
    let echo = echo_runtime(&base);
    build(&model, &out, &[echo], &["--", "-c", "64"]);

    let meta = fs::metadata(&out).unwrap();
    assert!(meta.len() > size);
    // Holes stayed holes: far less allocated than the file's length.
    assert!(
        meta.blocks() * 512 < 256 << 20,
        "output allocates {} bytes",
        meta.blocks() * 512
    );

    let unzip = Command::new("unzip").arg("-l").arg(&out).output().unwrap();
    assert!(unzip.status.success(), "{unzip:?}");
    let listing = String::from_utf8_lossy(&unzip.stdout);
    assert!(
        listing.contains(&format!("{size}  1980-01-01 00:00   big.gguf")),
        "{listing}"
    );

    let py = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); print(z.getinfo('big.gguf').file_size, len(z.namelist()))",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(py.status.success(), "{py:?}");
    assert_eq!(String::from_utf8_lossy(&py.stdout), format!("{size} 4\n"));

    let zip = zip::ZipArchive::new(fs::File::open(&out).unwrap()).unwrap();
    assert_eq!(zip.len(), 4);

    let report = pack_ok(&["verify", s(&out)]);
    assert!(
        report.contains("verified") && !report.contains("FAIL"),
        "{report}"
    );

    // Our reader finds the aligned entry, and the mapped range parses as the GGUF it was.
    let file = fs::File::open(&out).unwrap();
    let p = payload::read_payload(&file).unwrap().unwrap();
    let g = p.gguf().unwrap().unwrap();
    assert_eq!(g.size, size);
    assert_eq!(g.data_offset % 65536, 0);
    assert!(p.central_directory > 1 << 32);
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(g.data_offset)
            .len(g.size as usize)
            .map(&file)
            .unwrap()
    };
    let parsed = gguf::Gguf::parse(&map).unwrap();
    let t = parsed.tensor("big.weight").unwrap();
    assert_eq!(t.dims, DIMS);
    assert_eq!(t.data[0], 0x3f);
    assert_eq!(t.data[t.data.len() - 1], 0x40);
    assert_eq!(t.data[t.data.len() / 2], 0);
}
