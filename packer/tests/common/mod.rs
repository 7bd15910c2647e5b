//! Helpers for the packer's tests: the real `llamafile-pack` binary, a small real GGUF, and
//! runtimes (a copy of the host's `/bin/echo`, and synthetic ELF / Mach-O headers for the other
//! platforms: packing reads their headers and never runs them).

#![allow(dead_code)] // each test file uses a different subset

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn pack_bin() -> &'static str {
    env!("CARGO_BIN_EXE_llamafile-pack")
}

/// A fresh, empty directory for one test.
pub fn test_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("packer-tests")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The tiny llama-architecture test model (Q4_0).
pub fn synth_model() -> PathBuf {
    testmodels::llama_synth("Q4_0")
}

/// Runs `llamafile-pack` with `args`.
pub fn pack(args: &[&str]) -> Output {
    Command::new(pack_bin()).args(args).output().unwrap()
}

/// Runs `llamafile-pack` and fails the test (showing stderr) unless it succeeds.
pub fn pack_ok(args: &[&str]) -> String {
    let out = pack(args);
    assert!(
        out.status.success(),
        "llamafile-pack {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The host's arch as the launcher names it.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86_64",
        "aarch64" => "aarch64",
        other => panic!("tests need an x86_64 or aarch64 host, not {other}"),
    }
}

pub fn other_arch() -> &'static str {
    if host_arch() == "x86_64" {
        "aarch64"
    } else {
        "x86_64"
    }
}

/// A real executable for this host: a copy of `/bin/echo`, which prints its arguments, so
/// running a packed file shows what the launcher passed to the runtime.
pub fn echo_runtime(dir: &Path) -> PathBuf {
    let p = dir.join("echo-runtime");
    fs::copy("/bin/echo", &p).unwrap();
    p
}

const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;

/// A 64-bit little-endian ELF header of type `e_type` for `arch`, with OS ABI `osabi`,
/// followed by some filler standing in for code.
pub fn elf(arch: &str, e_type: u16, osabi: u8) -> Vec<u8> {
    let machine = match arch {
        "x86_64" => EM_X86_64,
        "aarch64" => EM_AARCH64,
        other => panic!("no ELF machine for {other}"),
    };
    let mut h = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, osabi];
    h.resize(16, 0);
    h.extend_from_slice(&e_type.to_le_bytes());
    h.extend_from_slice(&machine.to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes()); // e_version
    h.extend_from_slice(&0x40_1000u64.to_le_bytes()); // e_entry
    h.extend_from_slice(&0u64.to_le_bytes()); // e_phoff
    h.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    h.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for x in [64u16, 56, 0, 64, 0, 0] {
        h.extend_from_slice(&x.to_le_bytes());
    }
    h.extend((0..3000u32).map(|i| (i * 13 % 251) as u8));
    h
}

pub const MH_EXECUTE: u32 = 2;
pub const MH_OBJECT: u32 = 1;

fn macho_cpu(arch: &str) -> (u32, u32) {
    match arch {
        "x86_64" => (0x0100_0007, 3),
        "aarch64" => (0x0100_000c, 0),
        other => panic!("no Mach-O CPU for {other}"),
    }
}

/// A thin 64-bit Mach-O of `filetype` for `arch`, laid out as a linker lays one out: `__TEXT`
/// from the start (the header, room, then filler for code), `__LINKEDIT` last, and the macOS it
/// is for (`LC_BUILD_VERSION`, 11.0). An executable is then signed ad hoc by `llamafile-pack
/// sign`, as every Mac runtime the packer packs must be.
pub fn macho(arch: &str, filetype: u32) -> Vec<u8> {
    const TEXT_SIZE: u64 = 8192;
    const LINKEDIT_SIZE: u64 = 64;
    let (cpu, sub) = macho_cpu(arch);
    let segment = |name: &str, vmaddr: u64, fileoff: u64, filesize: u64| {
        let mut c = Vec::new();
        c.extend_from_slice(&0x19u32.to_le_bytes()); // LC_SEGMENT_64
        c.extend_from_slice(&72u32.to_le_bytes());
        let mut segname = [0u8; 16];
        segname[..name.len()].copy_from_slice(name.as_bytes());
        c.extend_from_slice(&segname);
        for x in [vmaddr, filesize.next_multiple_of(0x4000), fileoff, filesize] {
            c.extend_from_slice(&x.to_le_bytes());
        }
        for x in [5u32, 5, 0, 0] {
            c.extend_from_slice(&x.to_le_bytes()); // maxprot, initprot, nsects, flags
        }
        c
    };
    let mut commands = segment("__TEXT", 0x1_0000_0000, 0, TEXT_SIZE);
    commands.extend(segment(
        "__LINKEDIT",
        0x1_0000_0000 + 0x4000,
        TEXT_SIZE,
        LINKEDIT_SIZE,
    ));
    for x in [0x32u32, 24, 1, 11 << 16, 11 << 16, 0] {
        commands.extend_from_slice(&x.to_le_bytes()); // LC_BUILD_VERSION: macOS 11.0
    }
    let mut h = Vec::new();
    let flags = 0x0020_0085u32; // MH_PIE | MH_TWOLEVEL | MH_DYLDLINK | MH_NOUNDEFS
    for x in [
        0xfeed_facfu32,
        cpu,
        sub,
        filetype,
        3,
        commands.len() as u32,
        flags,
        0,
    ] {
        h.extend_from_slice(&x.to_le_bytes());
    }
    h.extend_from_slice(&commands);
    h.resize(4096, 0);
    h.extend((0..(TEXT_SIZE + LINKEDIT_SIZE - 4096) as u32).map(|i| (i * 7 % 253) as u8));
    if filetype != MH_EXECUTE {
        return h;
    }
    // A directory per call: tests run in parallel threads of one process.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = test_dir(&format!("macho-{}-{call}", std::process::id()));
    let unsigned = dir.join("unsigned");
    fs::write(&unsigned, &h).unwrap();
    let signed = dir.join("signed");
    pack_ok(&["sign", s(&unsigned), "-o", s(&signed)]);
    fs::read(signed).unwrap()
}

/// A fat Mach-O with an executable slice for each of `arches`.
pub fn fat_macho(arches: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xcafe_babeu32.to_be_bytes());
    out.extend_from_slice(&(arches.len() as u32).to_be_bytes());
    let slices: Vec<Vec<u8>> = arches.iter().map(|a| macho(a, MH_EXECUTE)).collect();
    let mut offset = 4096u32;
    for (a, slice) in arches.iter().zip(&slices) {
        let (cpu, sub) = macho_cpu(a);
        for x in [cpu, sub, offset, slice.len() as u32, 12] {
            out.extend_from_slice(&x.to_be_bytes());
        }
        offset += (slice.len() as u32).div_ceil(4096) * 4096;
    }
    for slice in &slices {
        out.resize(out.len().div_ceil(4096) * 4096, 0);
        out.extend_from_slice(slice);
    }
    out
}

/// Writes `bytes` to `dir/name`, executable, and returns the path.
pub fn write_exe(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// Runtimes for all four platforms: the host's echo, a synthetic ELF for the other Linux
/// arch, and a fat Mach-O for both macOS arches.
pub fn all_runtimes(dir: &Path) -> Vec<PathBuf> {
    vec![
        echo_runtime(dir),
        write_exe(dir, "linux-other", &elf(other_arch(), 2, 0)),
        write_exe(dir, "darwin-fat", &fat_macho(&["x86_64", "aarch64"])),
    ]
}

/// `build MODEL -o OUT --runtime R... [extra...]`
pub fn build(model: &Path, out: &Path, runtimes: &[PathBuf], extra: &[&str]) {
    let mut args = vec!["build", s(model), "-o", s(out)];
    for r in runtimes {
        args.push("--runtime");
        args.push(s(r));
    }
    args.extend_from_slice(extra);
    pack_ok(&args);
}

pub fn sha256_file(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut f = fs::File::open(p).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
