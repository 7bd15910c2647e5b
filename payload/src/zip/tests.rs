use std::io::Cursor;

use super::*;
use crate::{alignment_pad, ZipWriter};

const PREFIX: &[u8] = b"#!/bin/sh\necho launcher\nexit 1\n";

/// Builds prefix + zip with `.args`, an aligned GGUF and a manifest-like entry.
fn build(force_zip64: bool, gguf: &[u8]) -> Vec<u8> {
    let mut out = Cursor::new(PREFIX.to_vec());
    out.set_position(PREFIX.len() as u64);
    let mut w = ZipWriter::new(out, PREFIX.len() as u64);
    if force_zip64 {
        w = w.force_zip64();
    }
    let args = b"-c 2048\n--temp '0.5'\n...\n";
    let name = "model.gguf";
    let after_args =
        w.position() + crate::local_header_len(".args", args.len() as u64, 0) + args.len() as u64;
    let (args_pad, gguf_pad) = match alignment_pad(after_args, name, gguf.len() as u64, 65536) {
        Some(p) => (0, p),
        None => (
            4,
            alignment_pad(after_args + 4, name, gguf.len() as u64, 65536).unwrap(),
        ),
    };
    w.add_bytes(".args", 0o644, args_pad, args, crc32fast::hash(args))
        .unwrap();
    w.add_bytes(name, 0o644, gguf_pad, gguf, crc32fast::hash(gguf))
        .unwrap();
    let runtime = b"\x7fELF not really";
    w.add_bytes(
        "runtime/linux-x86_64",
        0o755,
        0,
        runtime,
        crc32fast::hash(runtime),
    )
    .unwrap();
    w.finish().unwrap().into_inner()
}

fn gguf_bytes() -> Vec<u8> {
    let mut g = b"GGUF".to_vec();
    g.extend((0..1000u32).map(|i| (i * 7 % 251) as u8));
    g
}

#[test]
fn round_trips_with_absolute_offsets() {
    for zip64 in [false, true] {
        let bytes = build(zip64, &gguf_bytes());
        let p = read_from(&bytes[..]).unwrap().unwrap();
        let names: Vec<&str> = p.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, [".args", "model.gguf", "runtime/linux-x86_64"]);
        assert_eq!(p.start, PREFIX.len() as u64);
        let g = p.gguf().unwrap().unwrap();
        assert_eq!(g.data_offset % 65536, 0);
        let at = g.data_offset as usize;
        assert_eq!(&bytes[at..at + g.size as usize], &gguf_bytes()[..]);
        assert_eq!(g.crc32, crc32fast::hash(&gguf_bytes()));
        assert_eq!(
            p.args_from(&bytes[..]).unwrap().unwrap(),
            ["-c", "2048", "--temp", "0.5", "..."]
        );
        assert_eq!(p.manifest_from(&bytes[..]).unwrap(), None);
        let rt = p.entry("runtime/linux-x86_64").unwrap();
        assert_eq!(
            &bytes[rt.data_offset as usize..][..rt.size as usize],
            b"\x7fELF not really"
        );
    }
}

#[test]
fn every_small_alignment_shortfall_is_padded() {
    // Vary the GGUF-preceding bytes through all residues near the 1..3 shortfall that an extra
    // field cannot fill, by varying the prefix length.
    let mut shortfalls = 0;
    for extra in 0..200usize {
        let prefix = vec![b'#'; 65536 - 200 + extra];
        let mut out = Cursor::new(prefix.clone());
        out.set_position(prefix.len() as u64);
        let mut w = ZipWriter::new(out, prefix.len() as u64);
        let args = b"x\n";
        let after = w.position() + crate::local_header_len(".args", 2, 0) + 2;
        let (ap, gp) = match alignment_pad(after, "m.gguf", 10, 65536) {
            Some(p) => (0, p),
            None => {
                shortfalls += 1;
                (4, alignment_pad(after + 4, "m.gguf", 10, 65536).unwrap())
            }
        };
        w.add_bytes(".args", 0o644, ap, args, crc32fast::hash(args))
            .unwrap();
        w.add_bytes(
            "m.gguf",
            0o644,
            gp,
            b"GGUFxxxxxx",
            crc32fast::hash(b"GGUFxxxxxx"),
        )
        .unwrap();
        let bytes = w.finish().unwrap().into_inner();
        let p = read_from(&bytes[..]).unwrap().unwrap();
        assert_eq!(p.gguf().unwrap().unwrap().data_offset % 65536, 0);
    }
    assert_eq!(shortfalls, 3, "the 1..3-byte shortfalls were not exercised");
}

#[test]
fn no_zip_is_none() {
    assert_eq!(read_from(&b""[..]).unwrap(), None);
    assert_eq!(read_from(&b"PK\x05\x06"[..]).unwrap(), None);
    let elf: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 256) as u8).collect();
    assert_eq!(read_from(&elf[..]).unwrap(), None);
    // A stray end-record signature whose comment length does not reach the end is not a zip.
    let mut stray = elf.clone();
    stray[199_000..199_004].copy_from_slice(b"PK\x05\x06");
    assert_eq!(read_from(&stray[..]).unwrap(), None);
}

#[test]
fn gguf_rules_are_enforced() {
    // Two GGUF entries.
    let mut w = ZipWriter::new(Cursor::new(Vec::new()), 0);
    w.add_bytes("a.gguf", 0o644, 0, b"GGUF", crc32fast::hash(b"GGUF"))
        .unwrap();
    w.add_bytes("b.GGUF", 0o644, 0, b"GGUF", crc32fast::hash(b"GGUF"))
        .unwrap();
    let bytes = w.finish().unwrap().into_inner();
    let err = read_from(&bytes[..]).unwrap().unwrap().gguf().unwrap_err();
    assert!(err.to_string().contains("second GGUF"), "{err}");
    assert!(err.to_string().contains("a.gguf"), "{err}");

    // Misaligned.
    let mut w = ZipWriter::new(Cursor::new(Vec::new()), 0);
    w.add_bytes("a.gguf", 0o644, 0, b"GGUF", crc32fast::hash(b"GGUF"))
        .unwrap();
    let bytes = w.finish().unwrap().into_inner();
    let err = read_from(&bytes[..]).unwrap().unwrap().gguf().unwrap_err();
    assert!(err.to_string().contains("not a multiple of 65536"), "{err}");

    // Compressed: set method 8 in both the local and the central header.
    let mut bytes = build(false, &gguf_bytes());
    let p = read_from(&bytes[..]).unwrap().unwrap();
    let g = p.gguf().unwrap().unwrap().clone();
    bytes[g.header_offset as usize + 8] = 8;
    let cd = p.central_directory as usize;
    let cdh = cd
        + bytes[cd..]
            .windows(10)
            .position(|w| w == b"model.gguf")
            .unwrap()
        - 46;
    bytes[cdh + 10] = 8;
    let err = read_from(&bytes[..]).unwrap().unwrap().gguf().unwrap_err();
    assert!(err.to_string().contains("compressed (method 8)"), "{err}");
}

#[test]
fn directory_outside_the_file_is_an_error() {
    let mut bytes = build(false, &gguf_bytes());
    let eocd = bytes.len() - 22;
    bytes[eocd + 16..eocd + 20].copy_from_slice(&0xFFFF_FF00u32.to_le_bytes());
    let err = read_from(&bytes[..]).unwrap_err();
    assert!(err.to_string().contains("does not fit"), "{err}");
    assert!(err.to_string().contains(&format!("{eocd}")), "{err}");
}

#[test]
fn relative_offsets_are_reported() {
    // A zip written as if at offset 0, then given a prefix: offsets are now wrong.
    let mut w = ZipWriter::new(Cursor::new(Vec::new()), 0);
    w.add_bytes("a.txt", 0o644, 0, b"hello", crc32fast::hash(b"hello"))
        .unwrap();
    let zip = w.finish().unwrap().into_inner();
    let mut bytes = vec![b'x'; 1000];
    bytes.extend_from_slice(&zip);
    let err = read_from(&bytes[..]).unwrap_err();
    assert!(err.to_string().contains("relative"), "{err}");
}

#[test]
fn corrupt_bytes_never_panic() {
    // Every single-byte change in the headers and end records, and every truncation, must give
    // Ok or Err, never a panic or a huge allocation.
    for zip64 in [false, true] {
        let bytes = build(zip64, &gguf_bytes());
        let p = read_from(&bytes[..]).unwrap().unwrap();
        let mut spots: Vec<usize> = (p.central_directory as usize..bytes.len()).collect();
        for e in &p.entries {
            spots.extend(e.header_offset as usize..e.header_offset as usize + 40);
        }
        for &i in &spots {
            for x in [0x01u8, 0x80, 0xFF] {
                let mut b = bytes.clone();
                b[i] ^= x;
                if let Ok(Some(p)) = read_from(&b[..]) {
                    let _ = p.gguf();
                    let _ = p.args_from(&b[..]);
                    let _ = p.manifest_from(&b[..]);
                }
            }
        }
        for len in 0..bytes.len() {
            if len % 97 == 0 || len + 200 > bytes.len() {
                let _ = read_from(&bytes[..len]);
            }
        }
    }
}

#[test]
fn public_api_reads_a_real_file() {
    let path = std::env::temp_dir().join(format!("payload-test-{}.zip", std::process::id()));
    std::fs::write(&path, build(true, &gguf_bytes())).unwrap();
    let file = File::open(&path).unwrap();
    let p = read_payload(&file).unwrap().unwrap();
    assert_eq!(p.gguf().unwrap().unwrap().size, gguf_bytes().len() as u64);
    assert_eq!(p.args(&file).unwrap().unwrap().len(), 5);
    std::fs::remove_file(&path).unwrap();
}
