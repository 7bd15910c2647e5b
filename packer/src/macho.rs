//! What a Mac asks of a runtime before it runs it, read from the Mach-O's bytes: an executable for
//! its CPU, position-independent, for a macOS old enough, linking libraries every Mac has, and —
//! on Apple Silicon, where the kernel kills a program whose pages do not match its signature — a
//! code signature that covers the whole file and whose page hashes match.
//!
//! The packer checks the signature of every darwin runtime it packs and of every one in a file it
//! verifies: the universal file stores each runtime byte for byte, so a runtime that passes here
//! still passes when the launcher extracts it on a Mac. The rest (`inspect` prints it) is what
//! `cargo xtask dist`'s runtimes promise and the test suite holds them to.

use anyhow::{bail, Context, Result};
use object::macho::{self, MachHeader64};
use object::read::macho::{LoadCommandVariant, MachHeader, Nlist};
use object::{BigEndian, Endianness};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The one library a runtime may link: it holds the C library, the kernel's calls and libdispatch,
/// and is on every Mac.
pub const LIBSYSTEM: &str = "/usr/lib/libSystem.B.dylib";

/// What one thin Mach-O executable is, as far as a Mac cares.
#[derive(Debug, Serialize)]
pub struct MacExecutable {
    pub cpu: &'static str,
    /// MH_PIE: the kernel refuses to load a non-PIE arm64 executable.
    pub pie: bool,
    /// The oldest macOS it runs on (LC_BUILD_VERSION's minos), as "11.0".
    pub min_macos: String,
    /// LC_LOAD_DYLIB and the other library-loading commands, in order (ordinal = index + 1).
    pub libraries: Vec<String>,
    /// Undefined external symbols in the symbol table, and how many of them a library other than
    /// libSystem (or none: flat or dynamic lookup) is to provide.
    pub imports: usize,
    pub imports_not_from_libsystem: Vec<String>,
    pub signature: Option<Signature>,
}

/// An embedded code signature whose CodeDirectory matches the file.
#[derive(Debug, Serialize)]
pub struct Signature {
    pub identifier: String,
    /// "adhoc", "linker-signed", ... (the CodeDirectory's flags).
    pub flags: Vec<&'static str>,
    pub page_size: u64,
    pub pages: u32,
    /// Bytes covered: everything before the signature.
    pub code_limit: u64,
}

/// Reads a thin 64-bit Mach-O executable. A signature that is present is checked page by page
/// (an error says which page or field is wrong); a missing one is `signature: None`, which
/// [`require_valid_signature`] refuses on arm64.
pub fn read(data: &[u8]) -> Result<MacExecutable> {
    let header = MachHeader64::<Endianness>::parse(data, 0)
        .map_err(|e| anyhow::anyhow!("bad Mach-O header: {e}"))?;
    let endian = header.endian().map_err(|e| anyhow::anyhow!("{e}"))?;
    if header.filetype(endian) != macho::MH_EXECUTE {
        bail!(
            "Mach-O file type {}, not an executable (MH_EXECUTE)",
            header.filetype(endian).0
        );
    }
    let cpu = match header.cputype(endian) {
        macho::CPU_TYPE_ARM64 => "arm64",
        macho::CPU_TYPE_X86_64 => "x86_64",
        other => bail!("Mach-O for CPU type {}, not arm64 or x86_64", other.0),
    };
    let pie = header.flags(endian).0 & macho::MH_PIE.0 != 0;

    let mut min_macos = None;
    let mut libraries = Vec::new();
    let mut symtab = None;
    let mut code_signature = None;
    let mut commands = header
        .load_commands(endian, data, 0)
        .map_err(|e| anyhow::anyhow!("Mach-O load commands: {e}"))?;
    while let Some(command) = commands
        .next()
        .map_err(|e| anyhow::anyhow!("Mach-O load commands: {e}"))?
    {
        let variant = command
            .variant()
            .map_err(|e| anyhow::anyhow!("Mach-O load command {:?}: {e}", command.cmd()))?;
        match variant {
            LoadCommandVariant::BuildVersion(v, _tools) => {
                if v.platform.get(endian) != macho::PLATFORM_MACOS {
                    bail!(
                        "LC_BUILD_VERSION names platform {}, not macOS",
                        v.platform.get(endian).0
                    );
                }
                let minos = v.minos.get(endian).0;
                min_macos = Some((minos >> 16, (minos >> 8) & 0xff));
            }
            LoadCommandVariant::Dylib(d) => {
                let name = command
                    .string(endian, d.dylib.name)
                    .map_err(|e| anyhow::anyhow!("a library name in the load commands: {e}"))?;
                libraries.push(String::from_utf8_lossy(name).into_owned());
            }
            LoadCommandVariant::Symtab(s) => symtab = Some(s),
            LoadCommandVariant::LinkeditData(l) if command.cmd() == macho::LC_CODE_SIGNATURE => {
                code_signature = Some(l)
            }
            _ => {}
        }
    }
    let (major, minor) =
        min_macos.context("no LC_BUILD_VERSION load command: the oldest macOS is not stated")?;

    let mut imports = 0;
    let mut imports_not_from_libsystem = Vec::new();
    if let Some(symtab) = symtab {
        let symbols = symtab
            .symbols::<MachHeader64<Endianness>, _>(endian, data)
            .map_err(|e| anyhow::anyhow!("Mach-O symbol table: {e}"))?;
        for symbol in symbols.iter() {
            if !symbol.is_undefined() || !symbol.n_type().is_ext() {
                continue;
            }
            imports += 1;
            // Two-level namespace: the library ordinal is the 1-based index of the load command.
            let ordinal = usize::from(symbol.library_ordinal(endian).0);
            if libraries.get(ordinal.wrapping_sub(1)).map(String::as_str) != Some(LIBSYSTEM) {
                let name = symbol.name(endian, symbols.strings()).unwrap_or(b"?");
                imports_not_from_libsystem.push(format!(
                    "{} (library ordinal {ordinal})",
                    String::from_utf8_lossy(name)
                ));
            }
        }
    }

    let signature = match code_signature {
        None => None,
        Some(l) => {
            let offset = u64::from(l.dataoff.get(endian));
            let size = u64::from(l.datasize.get(endian));
            Some(check_signature(data, offset, size).with_context(|| {
                format!("code signature (LC_CODE_SIGNATURE at offset {offset}, {size} bytes)")
            })?)
        }
    };
    Ok(MacExecutable {
        cpu,
        pie,
        min_macos: format!("{major}.{minor}"),
        libraries,
        imports,
        imports_not_from_libsystem,
        signature,
    })
}

/// A Mac runs an arm64 executable only with a valid signature (an ad hoc one will do); an Intel
/// Mac runs an unsigned one, but one whose signature does not match is killed there too, and that
/// case is an error in [`read`] already.
pub fn require_valid_signature(exe: &MacExecutable) -> Result<()> {
    if exe.signature.is_none() && exe.cpu == "arm64" {
        bail!(
            "an arm64 Mach-O without a code signature: Apple Silicon Macs kill it on launch \
             (link with a linker that signs, as Apple's and zig's do, or run `codesign -s -`)"
        );
    }
    Ok(())
}

/// The embedded signature at `offset..offset + size`: a SuperBlob whose CodeDirectory hashes
/// every page before the signature with SHA-256, and nothing after it in the file.
fn check_signature(data: &[u8], offset: u64, size: u64) -> Result<Signature> {
    let end = offset
        .checked_add(size)
        .context("offset + size overflows")?;
    if end != data.len() as u64 {
        bail!(
            "the signature ends at byte {end} but the file has {} bytes: bytes were added or \
             removed after signing",
            data.len()
        );
    }
    let blob = &data[offset as usize..end as usize];
    let superblob =
        object::read::macho::CodeSignature::parse(blob).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut directory = None;
    let mut others = Vec::new();
    let mut blobs = superblob.blobs();
    while let Some(b) = blobs.next().map_err(|e| anyhow::anyhow!("{e}"))? {
        if b.slot() == macho::CSSLOT_CODEDIRECTORY {
            directory = b.code_directory().map_err(|e| anyhow::anyhow!("{e}"))?;
        } else {
            others.push(b);
        }
    }
    let cd = directory.context("no CodeDirectory blob")?;
    let h = cd.header();
    if h.hash_type != macho::CS_HASHTYPE_SHA256 || h.hash_size != 32 {
        bail!(
            "CodeDirectory hash type {} of {} bytes; expected SHA-256 (2) of 32",
            h.hash_type.0,
            h.hash_size
        );
    }
    if !(12..=16).contains(&h.page_size) {
        bail!(
            "CodeDirectory page size 2^{}: expected 4 to 64 KiB",
            h.page_size
        );
    }
    let page_size = 1u64 << h.page_size;
    let code_limit = cd.code_limit();
    if code_limit != offset {
        bail!(
            "the CodeDirectory covers {code_limit} bytes but the signature starts at byte \
             {offset}: not everything before it is signed"
        );
    }
    let pages = h.n_code_slots.get(BigEndian);
    if u64::from(pages) != code_limit.div_ceil(page_size) {
        bail!(
            "the CodeDirectory has {pages} page hashes for {code_limit} bytes in pages of \
             {page_size}"
        );
    }
    for page in 0..pages {
        let start = u64::from(page) * page_size;
        let stop = (start + page_size).min(code_limit);
        let expected = cd.code_hash(page).map_err(|e| anyhow::anyhow!("{e}"))?;
        if Sha256::digest(&data[start as usize..stop as usize]).as_slice() != expected {
            bail!(
                "page {page} (bytes {start}..{stop}) does not match its hash in the \
                 CodeDirectory: the file changed after it was signed"
            );
        }
    }
    // The other blobs (requirements, entitlements) are vouched for by the special slots.
    for b in others {
        let slot = b.slot();
        if slot.0 >= 1 && slot.0 <= h.n_special_slots.get(BigEndian) {
            let expected = cd.special_hash(slot).map_err(|e| anyhow::anyhow!("{e}"))?;
            if Sha256::digest(b.data()).as_slice() != expected {
                bail!(
                    "blob in slot {} does not match its hash in the CodeDirectory",
                    slot.0
                );
            }
        }
    }
    let flags = h.flags.get(BigEndian).0;
    let named = [
        (macho::CS_ADHOC.0, "adhoc"),
        (macho::CS_LINKER_SIGNED.0, "linker-signed"),
        (macho::CS_RUNTIME.0, "hardened-runtime"),
    ];
    Ok(Signature {
        identifier: String::from_utf8_lossy(cd.ident().map_err(|e| anyhow::anyhow!("{e}"))?)
            .into_owned(),
        flags: named
            .iter()
            .filter(|(bit, _)| flags & bit != 0)
            .map(|(_, name)| *name)
            .collect(),
        page_size,
        pages,
        code_limit,
    })
}

/// Each slice of a thin or fat Mach-O, read as [`read`] does.
pub fn read_slices(data: &[u8]) -> Result<Vec<MacExecutable>> {
    use object::read::macho::{MachOFatFile32, MachOFatFile64};
    let slices = match object::FileKind::parse(data) {
        Ok(object::FileKind::MachOFat32) => fat_slices(data, MachOFatFile32::parse(data))?,
        Ok(object::FileKind::MachOFat64) => fat_slices(data, MachOFatFile64::parse(data))?,
        _ => vec![data],
    };
    let fat = slices.len() > 1;
    slices
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            read(s).with_context(|| {
                if fat {
                    format!("fat Mach-O slice {i}")
                } else {
                    "Mach-O".into()
                }
            })
        })
        .collect()
}

/// The bytes of each slice a fat header (32- or 64-bit) describes.
fn fat_slices<'d, F: object::read::macho::FatArch>(
    data: &'d [u8],
    fat: object::Result<object::read::macho::MachOFatFile<'d, F>>,
) -> Result<Vec<&'d [u8]>> {
    fat.map_err(|e| anyhow::anyhow!("bad fat Mach-O header: {e}"))?
        .arches()
        .iter()
        .map(|a| a.data(data))
        .collect::<object::Result<_>>()
        .map_err(|e| anyhow::anyhow!("fat Mach-O slice: {e}"))
}

/// Signs a thin 64-bit Mach-O executable ad hoc, as Apple's and zig's linkers do for arm64 (zig
/// does not for x86_64): a SuperBlob holding one CodeDirectory (SHA-256, 4 KiB pages, every byte
/// before the signature) appended at the end of `__LINKEDIT`, and the `LC_CODE_SIGNATURE` load
/// command that points at it. An ad hoc signature names no one; it says the bytes are the ones
/// linked, which is what a Mac checks page by page. Returns the signed file.
pub fn sign_adhoc(data: &[u8], identifier: &str) -> Result<Vec<u8>> {
    let exe = read(data)?;
    if exe.signature.is_some() {
        bail!("already signed");
    }
    let u32_at =
        |d: &[u8], at: usize| u32::from_le_bytes(d[at..at + 4].try_into().expect("4 bytes"));
    let u64_at =
        |d: &[u8], at: usize| u64::from_le_bytes(d[at..at + 8].try_into().expect("8 bytes"));
    // read() has checked the header and that every load command lies inside the file.
    const HEADER: usize = 32;
    let ncmds = u32_at(data, 16) as usize;
    let sizeofcmds = u32_at(data, 20) as usize;
    let (mut linkedit, mut text, mut first_section) = (None, None, data.len());
    let mut at = HEADER;
    for _ in 0..ncmds {
        let (cmd, size) = (u32_at(data, at), u32_at(data, at + 4) as usize);
        if cmd == macho::LC_SEGMENT_64.0 {
            let name = &data[at + 8..at + 24];
            let (fileoff, filesize) = (u64_at(data, at + 40), u64_at(data, at + 48));
            if name.starts_with(b"__LINKEDIT\0") {
                linkedit = Some((at, fileoff));
            }
            if name.starts_with(b"__TEXT\0") {
                text = Some((fileoff, filesize));
            }
            let nsects = u32_at(data, at + 64) as usize;
            for s in 0..nsects {
                let offset = u32_at(data, at + 72 + s * 80 + 48) as usize;
                if offset != 0 {
                    first_section = first_section.min(offset);
                }
            }
        }
        at += size;
    }
    let (linkedit_at, linkedit_off) = linkedit.context("no __LINKEDIT segment")?;
    let (text_off, text_size) = text.context("no __TEXT segment")?;
    let end_of_commands = HEADER + sizeofcmds;
    if end_of_commands + 16 > first_section
        || data[end_of_commands..end_of_commands + 16]
            .iter()
            .any(|&b| b != 0)
    {
        bail!("no room after the load commands for LC_CODE_SIGNATURE (link with -headerpad)");
    }

    const PAGE: usize = 4096;
    let signature_at = data.len().next_multiple_of(16);
    let pages = signature_at.div_ceil(PAGE);
    // CodeDirectory version 0x20400: the fields through the executable segment's. The blob and
    // its hashes start on 8-byte boundaries, as zig's linker (whose arm64 signatures Macs run)
    // lays them out.
    const DIRECTORY_HEADER: usize = 88;
    let ident_at = DIRECTORY_HEADER;
    let hashes_at = (ident_at + identifier.len() + 1).next_multiple_of(8);
    let directory_len = hashes_at + 32 * pages;
    const SUPERBLOB_HEADER: usize = (12 + 8usize).next_multiple_of(8);
    let signature_len = (SUPERBLOB_HEADER + directory_len).next_multiple_of(16);

    let mut out = data.to_vec();
    out.resize(signature_at, 0);
    // The header and __LINKEDIT now account for the signature; these bytes are hashed below.
    out[16..20].copy_from_slice(&(ncmds as u32 + 1).to_le_bytes());
    out[20..24].copy_from_slice(&(sizeofcmds as u32 + 16).to_le_bytes());
    let command = [
        macho::LC_CODE_SIGNATURE.0,
        16,
        signature_at as u32,
        signature_len as u32,
    ];
    for (i, word) in command.iter().enumerate() {
        out[end_of_commands + 4 * i..end_of_commands + 4 * i + 4]
            .copy_from_slice(&word.to_le_bytes());
    }
    let linkedit_size = (signature_at + signature_len) as u64 - linkedit_off;
    out[linkedit_at + 32..linkedit_at + 40]
        .copy_from_slice(&linkedit_size.next_multiple_of(0x4000).to_le_bytes());
    out[linkedit_at + 48..linkedit_at + 56].copy_from_slice(&linkedit_size.to_le_bytes());

    let mut blob = Vec::with_capacity(signature_len);
    let be32 = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_be_bytes());
    let be64 = |v: &mut Vec<u8>, x: u64| v.extend_from_slice(&x.to_be_bytes());
    be32(&mut blob, macho::CSMAGIC_EMBEDDED_SIGNATURE);
    be32(&mut blob, signature_len as u32);
    be32(&mut blob, 1); // one blob
    be32(&mut blob, macho::CSSLOT_CODEDIRECTORY.0);
    be32(&mut blob, SUPERBLOB_HEADER as u32);
    blob.resize(SUPERBLOB_HEADER, 0);
    be32(&mut blob, macho::CSMAGIC_CODEDIRECTORY);
    be32(&mut blob, directory_len as u32);
    be32(&mut blob, macho::CS_SUPPORTSEXECSEG.0);
    be32(&mut blob, macho::CS_ADHOC.0);
    be32(&mut blob, hashes_at as u32);
    be32(&mut blob, ident_at as u32);
    be32(&mut blob, 0); // special slots: none (no requirements, no entitlements)
    be32(&mut blob, pages as u32);
    be32(&mut blob, signature_at as u32); // code limit
    blob.extend_from_slice(&[32, macho::CS_HASHTYPE_SHA256.0, 0, 12]); // hash size, type, platform, log2 page
    be32(&mut blob, 0); // spare2
    be32(&mut blob, 0); // scatter offset
    be32(&mut blob, 0); // team offset
    be32(&mut blob, 0); // spare3
    be64(&mut blob, 0); // 64-bit code limit: unused below 4 GiB
    be64(&mut blob, text_off);
    be64(&mut blob, text_size);
    be64(&mut blob, macho::CS_EXECSEG_MAIN_BINARY.0);
    blob.extend_from_slice(identifier.as_bytes());
    blob.resize(SUPERBLOB_HEADER + hashes_at, 0);
    for page in out.chunks(PAGE) {
        blob.extend_from_slice(&Sha256::digest(page));
    }
    blob.resize(signature_len, 0);
    out.extend_from_slice(&blob);
    Ok(out)
}
