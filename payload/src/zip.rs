//! A zip reader for what a llamafile needs: the end record (with ZIP64), the central directory,
//! and each entry's absolute data offset taken from its local header.

use std::fs::File;

use crate::source::Source;
use crate::{
    parse_args, Manifest, PayloadError, ARGS_NAME, GGUF_ALIGNMENT, MANIFEST_NAME, MAX_SMALL_ENTRY,
    METHOD_STORED,
};

const EOCD_SIG: u32 = 0x0605_4b50;
const EOCD_LEN: u64 = 22;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_LOCATOR_LEN: u64 = 20;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const ZIP64_EOCD_LEN: u64 = 56;
const CDH_SIG: u32 = 0x0201_4b50;
const CDH_LEN: usize = 46;
const LFH_SIG: u32 = 0x0403_4b50;
const LFH_LEN: usize = 30;
const ZIP64_EXTRA_ID: u16 = 0x0001;
/// The zip comment is at most 65535 bytes, so the end record lies in the last 64 KiB + 22 bytes.
const MAX_COMMENT: u64 = 0xFFFF;
/// Bound on the central directory read into memory. A llamafile's has a handful of entries; a
/// larger one is treated as corrupt rather than trusted with an allocation.
const MAX_CENTRAL_DIRECTORY: u64 = 16 << 20;

/// The entries of a zip payload, in central-directory order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub entries: Vec<Entry>,
    /// File offset where the zip begins (the lowest local header, or the central directory of
    /// an empty archive). Everything before it is the prefix: the launcher script of a universal
    /// file, or the runtime of a native one.
    pub start: u64,
    /// File offset of the central directory.
    pub central_directory: u64,
}

/// One entry, with its data located absolutely in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// Compression method (0 = stored).
    pub method: u16,
    /// General-purpose flags (bit 0 = encrypted).
    pub flags: u16,
    /// File offset of the entry's local header.
    pub header_offset: u64,
    /// File offset of the entry's first data byte.
    pub data_offset: u64,
    /// Number of data bytes in the file (the compressed size).
    pub size: u64,
    /// Size once decompressed; equal to `size` for a stored entry.
    pub uncompressed_size: u64,
    pub crc32: u32,
}

/// Finds the zip end record at the end of `file`, reads the central directory and returns the
/// entries with absolute data offsets. `Ok(None)` means the file does not end in a zip (a
/// runtime with no payload, or a plain GGUF).
pub fn read_payload(file: &File) -> Result<Option<Payload>, PayloadError> {
    read_from(file)
}

impl Payload {
    /// The entry called `name`, if any.
    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// The model: exactly one `*.gguf` entry, stored, unencrypted, its data 65536-aligned so it
    /// can be mapped. `Ok(None)` when there is no GGUF entry; an error when the one present
    /// cannot be mapped or there are several (which would be ambiguous).
    pub fn gguf(&self) -> Result<Option<&Entry>, PayloadError> {
        let mut found: Option<&Entry> = None;
        for e in self.entries.iter().filter(|e| is_gguf_name(&e.name)) {
            if let Some(first) = found {
                return Err(PayloadError::entry(
                    &e.name,
                    format!(
                        "a second GGUF entry (the first is `{}`): a llamafile holds one model",
                        first.name
                    ),
                ));
            }
            found = Some(e);
        }
        let Some(e) = found else { return Ok(None) };
        if e.flags & 1 != 0 {
            return Err(PayloadError::entry(&e.name, "is encrypted"));
        }
        if e.method != METHOD_STORED {
            return Err(PayloadError::entry(
                &e.name,
                format!(
                    "is compressed (method {}); the GGUF must be stored to be mapped",
                    e.method
                ),
            ));
        }
        if e.size != e.uncompressed_size {
            return Err(PayloadError::entry(
                &e.name,
                format!(
                    "stored but its sizes differ ({} in file, {} uncompressed)",
                    e.size, e.uncompressed_size
                ),
            ));
        }
        if e.data_offset % GGUF_ALIGNMENT != 0 {
            return Err(PayloadError::entry(
                &e.name,
                format!(
                    "data at offset {} is not a multiple of {GGUF_ALIGNMENT}, so it cannot be mapped",
                    e.data_offset
                ),
            ));
        }
        Ok(Some(e))
    }

    /// The default arguments from the `.args` entry, parsed with [`parse_args`]; `Ok(None)` when
    /// there is no `.args`.
    pub fn args(&self, file: &File) -> Result<Option<Vec<String>>, PayloadError> {
        self.args_from(file)
    }

    pub(crate) fn args_from<S: Source + ?Sized>(
        &self,
        src: &S,
    ) -> Result<Option<Vec<String>>, PayloadError> {
        let Some(e) = self.entry(ARGS_NAME) else {
            return Ok(None);
        };
        let bytes = e.read_small_from(src)?;
        let text = String::from_utf8(bytes)
            .map_err(|err| PayloadError::entry(&e.name, format!("is not UTF-8: {err}")))?;
        parse_args(&text)
            .map(Some)
            .map_err(|source| PayloadError::Args {
                name: e.name.clone(),
                source,
            })
    }

    /// The manifest `llamafile-pack` wrote; `Ok(None)` when the archive has none (for example
    /// a llamafile made by other tools).
    pub fn manifest(&self, file: &File) -> Result<Option<Manifest>, PayloadError> {
        self.manifest_from(file)
    }

    pub(crate) fn manifest_from<S: Source + ?Sized>(
        &self,
        src: &S,
    ) -> Result<Option<Manifest>, PayloadError> {
        let Some(e) = self.entry(MANIFEST_NAME) else {
            return Ok(None);
        };
        let bytes = e.read_small_from(src)?;
        Manifest::from_json(&bytes)
            .map(Some)
            .map_err(|message| PayloadError::Manifest {
                name: e.name.clone(),
                message,
            })
    }
}

impl Entry {
    /// Reads a small stored entry (at most [`MAX_SMALL_ENTRY`] bytes) into memory.
    pub fn read_small(&self, file: &File) -> Result<Vec<u8>, PayloadError> {
        self.read_small_from(file)
    }

    pub(crate) fn read_small_from<S: Source + ?Sized>(
        &self,
        src: &S,
    ) -> Result<Vec<u8>, PayloadError> {
        if self.method != METHOD_STORED || self.flags & 1 != 0 {
            return Err(PayloadError::entry(
                &self.name,
                format!(
                    "is compressed or encrypted (method {}, flags {:#x}); only stored entries are read",
                    self.method, self.flags
                ),
            ));
        }
        if self.size > MAX_SMALL_ENTRY {
            return Err(PayloadError::entry(
                &self.name,
                format!(
                    "is {} bytes, more than the {MAX_SMALL_ENTRY} accepted for it",
                    self.size
                ),
            ));
        }
        src.read_vec(self.data_offset, self.size as usize)
    }
}

/// Whether an entry name is a model (`*.gguf`, any case, not a directory).
fn is_gguf_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.len() > 5 && bytes[bytes.len() - 5..].eq_ignore_ascii_case(b".gguf")
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Where the central directory is, according to the end records.
struct Directory {
    entries: u64,
    size: u64,
    offset: u64,
    /// The central directory must end at or before this offset (the ZIP64 record or the end record).
    limit: u64,
}

pub(crate) fn read_from<S: Source + ?Sized>(src: &S) -> Result<Option<Payload>, PayloadError> {
    let len = src.len()?;
    let Some(eocd_pos) = find_eocd(src, len)? else {
        return Ok(None);
    };
    let dir = read_directory_location(src, eocd_pos)?;
    let entries = read_central_directory(src, &dir, len)?;
    let start = entries
        .iter()
        .map(|e| e.header_offset)
        .min()
        .unwrap_or(dir.offset);
    Ok(Some(Payload {
        entries,
        start,
        central_directory: dir.offset,
    }))
}

/// Searches backwards for an end record whose comment length reaches exactly the end of the
/// file. The exact match keeps a stray signature inside a runtime's code from being taken for
/// an archive.
fn find_eocd<S: Source + ?Sized>(src: &S, len: u64) -> Result<Option<u64>, PayloadError> {
    if len < EOCD_LEN {
        return Ok(None);
    }
    let tail_len = len.min(EOCD_LEN + MAX_COMMENT);
    let tail_start = len - tail_len;
    let tail = src.read_vec(tail_start, tail_len as usize)?;
    let sig = EOCD_SIG.to_le_bytes();
    for i in (0..=tail.len() - EOCD_LEN as usize).rev() {
        if tail[i..i + 4] == sig {
            let comment = u16_at(&tail, i + 20) as usize;
            if i + EOCD_LEN as usize + comment == tail.len() {
                return Ok(Some(tail_start + i as u64));
            }
        }
    }
    Ok(None)
}

fn read_directory_location<S: Source + ?Sized>(
    src: &S,
    eocd_pos: u64,
) -> Result<Directory, PayloadError> {
    let eocd = src.read_vec(eocd_pos, EOCD_LEN as usize)?;
    let disk = u16_at(&eocd, 4);
    let cd_disk = u16_at(&eocd, 6);
    let entries_here = u16_at(&eocd, 8);
    let entries = u16_at(&eocd, 10);
    let size = u32_at(&eocd, 12);
    let offset = u32_at(&eocd, 16);

    let locator = eocd_pos
        .checked_sub(ZIP64_LOCATOR_LEN)
        .map(|pos| {
            src.read_vec(pos, ZIP64_LOCATOR_LEN as usize)
                .map(|b| (pos, b))
        })
        .transpose()?
        .filter(|(_, b)| u32_at(b, 0) == ZIP64_LOCATOR_SIG);

    let Some((locator_pos, loc)) = locator else {
        let saturated =
            entries == 0xFFFF || size == 0xFFFF_FFFF || offset == 0xFFFF_FFFF || disk == 0xFFFF;
        if saturated {
            return Err(PayloadError::corrupt(
                eocd_pos,
                "end record has ZIP64 markers but no ZIP64 locator precedes it",
            ));
        }
        if disk != 0 || cd_disk != 0 || entries_here != entries {
            return Err(PayloadError::corrupt(
                eocd_pos,
                format!(
                    "multi-disk archive (disk {disk}, directory disk {cd_disk}) is not supported"
                ),
            ));
        }
        return Ok(Directory {
            entries: entries.into(),
            size: size.into(),
            offset: offset.into(),
            limit: eocd_pos,
        });
    };

    let record_pos = u64_at(&loc, 8);
    if u32_at(&loc, 4) != 0 || u32_at(&loc, 16) > 1 {
        return Err(PayloadError::corrupt(
            locator_pos,
            "ZIP64 locator names another disk: multi-disk archives are not supported",
        ));
    }
    let record_end = record_pos.checked_add(ZIP64_EOCD_LEN);
    if record_end.is_none_or(|end| end > locator_pos) {
        return Err(PayloadError::corrupt(
            locator_pos,
            format!("ZIP64 locator points at offset {record_pos}, not before the locator"),
        ));
    }
    let rec = src.read_vec(record_pos, ZIP64_EOCD_LEN as usize)?;
    if u32_at(&rec, 0) != ZIP64_EOCD_SIG {
        return Err(PayloadError::corrupt(
            record_pos,
            "no ZIP64 end record where the locator points",
        ));
    }
    let (disk64, cd_disk64) = (u32_at(&rec, 16), u32_at(&rec, 20));
    let (entries_here64, entries64) = (u64_at(&rec, 24), u64_at(&rec, 32));
    if disk64 != 0 || cd_disk64 != 0 || entries_here64 != entries64 {
        return Err(PayloadError::corrupt(
            record_pos,
            "ZIP64 end record describes a multi-disk archive, which is not supported",
        ));
    }
    Ok(Directory {
        entries: entries64,
        size: u64_at(&rec, 40),
        offset: u64_at(&rec, 48),
        limit: record_pos,
    })
}

fn read_central_directory<S: Source + ?Sized>(
    src: &S,
    dir: &Directory,
    file_len: u64,
) -> Result<Vec<Entry>, PayloadError> {
    let end = dir.offset.checked_add(dir.size);
    if end.is_none_or(|end| end > dir.limit) {
        return Err(PayloadError::corrupt(
            dir.limit,
            format!(
                "central directory ({} bytes at offset {}) does not fit before the end record at {}",
                dir.size, dir.offset, dir.limit
            ),
        ));
    }
    if dir.size > MAX_CENTRAL_DIRECTORY {
        return Err(PayloadError::corrupt(
            dir.offset,
            format!(
                "central directory of {} bytes is larger than the {MAX_CENTRAL_DIRECTORY} accepted",
                dir.size
            ),
        ));
    }
    let cd = src.read_vec(dir.offset, dir.size as usize)?;
    let mut entries = Vec::new();
    let mut at = 0usize;
    while at < cd.len() {
        let pos = dir.offset + at as u64;
        let (entry, name_len, next) = parse_central_header(&cd, at, pos)?;
        let entry = locate_data(src, entry, name_len, dir.offset, file_len)?;
        entries.push(entry);
        at = next;
    }
    if entries.len() as u64 != dir.entries {
        return Err(PayloadError::corrupt(
            dir.offset,
            format!(
                "end record counts {} entries, the central directory holds {}",
                dir.entries,
                entries.len()
            ),
        ));
    }
    Ok(entries)
}

/// Parses one central directory header at `at` (file offset `pos`); returns the entry with its
/// local header offset (data offset not yet known) and the index of the next header.
fn parse_central_header(
    cd: &[u8],
    at: usize,
    pos: u64,
) -> Result<(Entry, u64, usize), PayloadError> {
    if cd.len() - at < CDH_LEN {
        return Err(PayloadError::corrupt(
            pos,
            format!(
                "central directory ends inside a {CDH_LEN}-byte header ({} bytes left)",
                cd.len() - at
            ),
        ));
    }
    let h = &cd[at..at + CDH_LEN];
    if u32_at(h, 0) != CDH_SIG {
        return Err(PayloadError::corrupt(
            pos,
            "no central directory header signature (are the offsets relative to a prefix? \
             repack with llamafile-pack)",
        ));
    }
    let flags = u16_at(h, 8);
    let method = u16_at(h, 10);
    let crc32 = u32_at(h, 16);
    let csize = u32_at(h, 20);
    let usize_ = u32_at(h, 24);
    let name_len = u16_at(h, 28) as usize;
    let extra_len = u16_at(h, 30) as usize;
    let comment_len = u16_at(h, 32) as usize;
    let disk = u16_at(h, 34);
    let lh = u32_at(h, 42);
    let var_len = name_len + extra_len + comment_len;
    let next = at + CDH_LEN + var_len;
    if next > cd.len() {
        return Err(PayloadError::corrupt(
            pos,
            format!(
                "header's name, extra and comment ({var_len} bytes) run past the central directory"
            ),
        ));
    }
    let name_bytes = &cd[at + CDH_LEN..at + CDH_LEN + name_len];
    let name = String::from_utf8_lossy(name_bytes).into_owned();
    let extra = &cd[at + CDH_LEN + name_len..at + CDH_LEN + name_len + extra_len];

    let mut uncompressed_size = u64::from(usize_);
    let mut size = u64::from(csize);
    let mut header_offset = u64::from(lh);
    let mut disk = u32::from(disk);
    let need64 =
        usize_ == 0xFFFF_FFFF || csize == 0xFFFF_FFFF || lh == 0xFFFF_FFFF || disk == 0xFFFF;
    if need64 {
        let extra_pos = pos + (CDH_LEN + name_len) as u64;
        let Some(z) = find_extra(extra, ZIP64_EXTRA_ID, extra_pos)? else {
            return Err(PayloadError::corrupt(
                pos,
                format!("entry `{name}` has ZIP64 markers but no ZIP64 extra field"),
            ));
        };
        let mut fields = Zip64Fields {
            data: z,
            at: 0,
            pos: extra_pos,
            name: &name,
        };
        if usize_ == 0xFFFF_FFFF {
            uncompressed_size = fields.next_u64("uncompressed size")?;
        }
        if csize == 0xFFFF_FFFF {
            size = fields.next_u64("compressed size")?;
        }
        if lh == 0xFFFF_FFFF {
            header_offset = fields.next_u64("local header offset")?;
        }
        if disk == 0xFFFF {
            disk = fields.next_u32("disk number")?;
        }
    }
    if disk != 0 {
        return Err(PayloadError::corrupt(
            pos,
            format!("entry `{name}` starts on disk {disk}: multi-disk archives are not supported"),
        ));
    }
    Ok((
        Entry {
            name,
            method,
            flags,
            header_offset,
            data_offset: 0,
            size,
            uncompressed_size,
            crc32,
        },
        name_len as u64,
        next,
    ))
}

/// Reads the ZIP64 extra field's values in their fixed order, bounds-checked.
struct Zip64Fields<'a> {
    data: &'a [u8],
    at: usize,
    pos: u64,
    name: &'a str,
}

impl Zip64Fields<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], PayloadError> {
        if self.data.len() - self.at < n {
            return Err(PayloadError::corrupt(
                self.pos,
                format!(
                    "entry `{}`: ZIP64 extra field too short for the {what}",
                    self.name
                ),
            ));
        }
        let s = &self.data[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn next_u64(&mut self, what: &str) -> Result<u64, PayloadError> {
        self.take(8, what).map(|b| u64_at(b, 0))
    }

    fn next_u32(&mut self, what: &str) -> Result<u32, PayloadError> {
        self.take(4, what).map(|b| u32_at(b, 0))
    }
}

/// Finds the extra field with header `id`; `pos` is the file offset of `extra`, for errors.
fn find_extra(extra: &[u8], id: u16, pos: u64) -> Result<Option<&[u8]>, PayloadError> {
    let mut at = 0usize;
    while extra.len() - at >= 4 {
        let field_id = u16_at(extra, at);
        let len = u16_at(extra, at + 2) as usize;
        let data_start = at + 4;
        if extra.len() - data_start < len {
            return Err(PayloadError::corrupt(
                pos + at as u64,
                format!(
                    "extra field {field_id:#06x} claims {len} bytes, {} remain",
                    extra.len() - data_start
                ),
            ));
        }
        if field_id == id {
            return Ok(Some(&extra[data_start..data_start + len]));
        }
        at = data_start + len;
    }
    Ok(None)
}

/// Reads the entry's local header to find where its data starts, and checks that the data lies
/// before the central directory.
fn locate_data<S: Source + ?Sized>(
    src: &S,
    mut entry: Entry,
    central_name_len: u64,
    cd_offset: u64,
    file_len: u64,
) -> Result<Entry, PayloadError> {
    let pos = entry.header_offset;
    if pos
        .checked_add(LFH_LEN as u64)
        .is_none_or(|end| end > cd_offset)
    {
        return Err(PayloadError::corrupt(
            pos,
            format!(
                "entry `{}`: local header offset {pos} is not before the central directory at {cd_offset}",
                entry.name
            ),
        ));
    }
    let h = src.read_vec(pos, LFH_LEN)?;
    if u32_at(&h, 0) != LFH_SIG {
        return Err(PayloadError::corrupt(
            pos,
            format!(
                "entry `{}`: no local header signature where the central directory points",
                entry.name
            ),
        ));
    }
    let method = u16_at(&h, 8);
    if method != entry.method {
        return Err(PayloadError::corrupt(
            pos,
            format!(
                "entry `{}`: local header says method {method}, central directory {}",
                entry.name, entry.method
            ),
        ));
    }
    let name_len = u16_at(&h, 26) as u64;
    let extra_len = u16_at(&h, 28) as u64;
    if name_len != central_name_len {
        return Err(PayloadError::corrupt(
            pos,
            format!(
                "entry `{}`: local header name is {name_len} bytes, central directory's {central_name_len}",
                entry.name
            ),
        ));
    }
    let data_offset = pos + LFH_LEN as u64 + name_len + extra_len;
    let data_end = data_offset.checked_add(entry.size);
    if data_end.is_none_or(|end| end > cd_offset || end > file_len) {
        return Err(PayloadError::corrupt(
            pos,
            format!(
                "entry `{}`: {} data bytes at offset {data_offset} run past the central directory at {cd_offset}",
                entry.name, entry.size
            ),
        ));
    }
    entry.data_offset = data_offset;
    Ok(entry)
}

#[cfg(test)]
mod tests;
