//! A zip writer for llamafiles: stored entries only, absolute offsets (the archive follows a
//! prefix), fixed timestamps, ZIP64 wherever a value passes 4 GiB, and alignment padding carried
//! in a local-header extra field so the GGUF's data can start on a 65536 boundary (the `zip`
//! crate's alignment is a `u16`, 32768 at most).
//!
//! The caller computes CRC-32s: this crate stays free of dependencies the runtime would not use.

use std::io::{self, Seek, SeekFrom, Write};

const LFH_LEN: u64 = 30;
/// "version needed to extract": 2.0 for plain stored entries, 4.5 when ZIP64 fields are used.
const VERSION_PLAIN: u16 = 20;
const VERSION_ZIP64: u16 = 45;
/// Host system "Unix" in "version made by", so `unzip` applies the entries' permission bits.
const MADE_BY_UNIX: u16 = 3 << 8;
/// MS-DOS date of 1980-01-01 (the zip epoch) and time 00:00: fixed so equal inputs give equal bytes.
const DOS_DATE: u16 = (1 << 5) | 1;
const DOS_TIME: u16 = 0;
/// General-purpose flag bit 11: the name is UTF-8.
const FLAG_UTF8: u16 = 1 << 11;
const ZIP64_EXTRA_ID: u16 = 0x0001;
/// Extra field id for alignment padding (the one Android's zipalign uses); readers skip unknown ids.
const PADDING_EXTRA_ID: u16 = 0xD935;
const U32_MAX: u64 = 0xFFFF_FFFF;
const S_IFREG: u32 = 0o100000;

/// Length of the local header (with name and extra fields) of an entry of `size` bytes with
/// `pad` bytes of alignment padding.
pub fn local_header_len(name: &str, size: u64, pad: u16) -> u64 {
    let zip64 = if size >= U32_MAX { 20 } else { 0 };
    LFH_LEN + name.len() as u64 + zip64 + u64::from(pad)
}

/// The padding that makes the data of an entry whose local header starts at `header_offset`
/// begin at a multiple of `align` (a power of two). `None` when the shortfall is 1 to 3 bytes,
/// too little for an extra field (4 bytes at least): the caller then pads an earlier entry by 4.
pub fn alignment_pad(header_offset: u64, name: &str, size: u64, align: u64) -> Option<u16> {
    let unpadded = header_offset + local_header_len(name, size, 0);
    let pad = (align - unpadded % align) % align;
    match pad {
        0 => Some(0),
        1..=3 => None,
        _ => u16::try_from(pad).ok(),
    }
}

/// What the central directory needs to know about a written entry.
struct Written {
    name: String,
    mode: u32,
    size: u64,
    crc32: u32,
    header_offset: u64,
}

/// The entry whose data the caller is writing.
struct Open {
    index: usize,
    data_offset: u64,
}

/// Writes a zip archive into `out`, which already holds the prefix (`start` bytes).
pub struct ZipWriter<W: Write + Seek> {
    out: W,
    pos: u64,
    written: Vec<Written>,
    open: Option<Open>,
    force_zip64: bool,
}

impl<W: Write + Seek> ZipWriter<W> {
    /// `out` is positioned at file offset `start`, just after the prefix.
    pub fn new(out: W, start: u64) -> Self {
        ZipWriter {
            out,
            pos: start,
            written: Vec::new(),
            open: None,
            force_zip64: false,
        }
    }

    /// Writes the ZIP64 end records even for a small archive (readers must accept both forms;
    /// this lets tests cover the ZIP64 path without writing 4 GiB).
    pub fn force_zip64(mut self) -> Self {
        self.force_zip64 = true;
        self
    }

    /// File offset of the next byte written.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Writes the local header of a stored entry of `size` bytes and returns the file offset
    /// where its data starts. The caller then writes exactly `size` bytes to [`Self::data`]
    /// (seeking forward over zeros is fine) and calls [`Self::end_entry`] with their CRC-32.
    pub fn begin_entry(&mut self, name: &str, mode: u32, size: u64, pad: u16) -> io::Result<u64> {
        if self.open.is_some() {
            return Err(invalid("begin_entry while an entry is open"));
        }
        if (1..4).contains(&pad) {
            return Err(invalid("alignment padding must be 0 or at least 4 bytes"));
        }
        let zip64 = size >= U32_MAX;
        let extra_len = u64::from(pad) + if zip64 { 20 } else { 0 };
        let name_len = u16::try_from(name.len())
            .map_err(|_| invalid(format!("entry name of {} bytes is too long", name.len())))?;
        let extra_len = u16::try_from(extra_len)
            .map_err(|_| invalid(format!("extra fields of {extra_len} bytes are too long")))?;
        let header_offset = self.pos;
        let mut h = Vec::with_capacity(LFH_LEN as usize + name.len() + extra_len as usize);
        put16(&mut h, 0x4b50);
        put16(&mut h, 0x0403);
        put16(&mut h, if zip64 { VERSION_ZIP64 } else { VERSION_PLAIN });
        put16(&mut h, flags(name));
        put16(&mut h, 0); // stored
        put16(&mut h, DOS_TIME);
        put16(&mut h, DOS_DATE);
        put32(&mut h, 0); // CRC-32, patched by end_entry
        let size32 = if zip64 { U32_MAX as u32 } else { size as u32 };
        put32(&mut h, size32);
        put32(&mut h, size32);
        put16(&mut h, name_len);
        put16(&mut h, extra_len);
        h.extend_from_slice(name.as_bytes());
        if zip64 {
            put16(&mut h, ZIP64_EXTRA_ID);
            put16(&mut h, 16);
            put64(&mut h, size);
            put64(&mut h, size);
        }
        if pad > 0 {
            put16(&mut h, PADDING_EXTRA_ID);
            put16(&mut h, pad - 4);
            h.resize(h.len() + usize::from(pad) - 4, 0);
        }
        self.out.write_all(&h)?;
        self.pos += h.len() as u64;
        self.written.push(Written {
            name: name.to_string(),
            mode,
            size,
            crc32: 0,
            header_offset,
        });
        self.open = Some(Open {
            index: self.written.len() - 1,
            data_offset: self.pos,
        });
        Ok(self.pos)
    }

    /// Where the open entry's data goes.
    pub fn data(&mut self) -> &mut W {
        &mut self.out
    }

    /// Closes the open entry: checks that exactly its size was written and records its CRC-32
    /// in the local header.
    pub fn end_entry(&mut self, crc32: u32) -> io::Result<()> {
        let open = self
            .open
            .take()
            .ok_or_else(|| invalid("end_entry with no open entry"))?;
        let entry = &mut self.written[open.index];
        let end = self.out.stream_position()?;
        if end != open.data_offset + entry.size {
            return Err(invalid(format!(
                "entry `{}`: {} data bytes written, {} declared",
                entry.name,
                end.saturating_sub(open.data_offset),
                entry.size
            )));
        }
        entry.crc32 = crc32;
        self.out.seek(SeekFrom::Start(entry.header_offset + 14))?;
        self.out.write_all(&crc32.to_le_bytes())?;
        self.out.seek(SeekFrom::Start(end))?;
        self.pos = end;
        Ok(())
    }

    /// Adds a small entry whose bytes are in memory.
    pub fn add_bytes(
        &mut self,
        name: &str,
        mode: u32,
        pad: u16,
        data: &[u8],
        crc32: u32,
    ) -> io::Result<u64> {
        let offset = self.begin_entry(name, mode, data.len() as u64, pad)?;
        self.out.write_all(data)?;
        self.end_entry(crc32)?;
        Ok(offset)
    }

    /// Writes the central directory and end records; returns the output, positioned at its end.
    pub fn finish(mut self) -> io::Result<W> {
        if self.open.is_some() {
            return Err(invalid("finish while an entry is open"));
        }
        let cd_offset = self.pos;
        let mut cd = Vec::new();
        for e in &self.written {
            let big_size = e.size >= U32_MAX;
            let big_offset = e.header_offset >= U32_MAX;
            let mut extra = Vec::new();
            if big_size || big_offset {
                put16(&mut extra, ZIP64_EXTRA_ID);
                let n = if big_size { 16 } else { 0 } + if big_offset { 8 } else { 0 };
                put16(&mut extra, n);
                if big_size {
                    put64(&mut extra, e.size);
                    put64(&mut extra, e.size);
                }
                if big_offset {
                    put64(&mut extra, e.header_offset);
                }
            }
            let version = if big_size || big_offset {
                VERSION_ZIP64
            } else {
                VERSION_PLAIN
            };
            let size32 = if big_size {
                U32_MAX as u32
            } else {
                e.size as u32
            };
            put16(&mut cd, 0x4b50);
            put16(&mut cd, 0x0201);
            put16(&mut cd, MADE_BY_UNIX | version);
            put16(&mut cd, version);
            put16(&mut cd, flags(&e.name));
            put16(&mut cd, 0); // stored
            put16(&mut cd, DOS_TIME);
            put16(&mut cd, DOS_DATE);
            put32(&mut cd, e.crc32);
            put32(&mut cd, size32);
            put32(&mut cd, size32);
            put16(&mut cd, e.name.len() as u16);
            put16(&mut cd, extra.len() as u16);
            put16(&mut cd, 0); // comment
            put16(&mut cd, 0); // disk
            put16(&mut cd, 0); // internal attributes
            put32(&mut cd, (S_IFREG | e.mode) << 16);
            put32(
                &mut cd,
                if big_offset {
                    U32_MAX as u32
                } else {
                    e.header_offset as u32
                },
            );
            cd.extend_from_slice(e.name.as_bytes());
            cd.extend_from_slice(&extra);
        }
        let count = self.written.len() as u64;
        let cd_size = cd.len() as u64;
        let big_count = count >= 0xFFFF;
        let big_cd_size = cd_size >= U32_MAX;
        let big_cd_offset = cd_offset >= U32_MAX;
        let zip64 = self.force_zip64 || big_count || big_cd_size || big_cd_offset;
        let mut end = cd;
        if zip64 {
            let record_offset = cd_offset + cd_size;
            put32(&mut end, 0x0606_4b50);
            put64(&mut end, 44);
            put16(&mut end, MADE_BY_UNIX | VERSION_ZIP64);
            put16(&mut end, VERSION_ZIP64);
            put32(&mut end, 0);
            put32(&mut end, 0);
            put64(&mut end, count);
            put64(&mut end, count);
            put64(&mut end, cd_size);
            put64(&mut end, cd_offset);
            put32(&mut end, 0x0706_4b50);
            put32(&mut end, 0);
            put64(&mut end, record_offset);
            put32(&mut end, 1);
        }
        let all = self.force_zip64;
        let count16 = if big_count || all {
            0xFFFF
        } else {
            count as u16
        };
        put32(&mut end, 0x0605_4b50);
        put16(&mut end, 0);
        put16(&mut end, 0);
        put16(&mut end, count16);
        put16(&mut end, count16);
        put32(
            &mut end,
            if big_cd_size || all {
                U32_MAX as u32
            } else {
                cd_size as u32
            },
        );
        put32(
            &mut end,
            if big_cd_offset || all {
                U32_MAX as u32
            } else {
                cd_offset as u32
            },
        );
        put16(&mut end, 0); // comment
        self.out.write_all(&end)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn flags(name: &str) -> u16 {
    if name.is_ascii() {
        0
    } else {
        FLAG_UTF8
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message.into())
}

fn put16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_le_bytes());
}

fn put32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}

fn put64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}
