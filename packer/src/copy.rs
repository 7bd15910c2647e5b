//! Streaming copies and digests of byte ranges: the model is never read into memory, and its
//! SHA-256 and CRC-32 are computed in the same pass that copies it.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc;
use std::thread;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest as _, Sha256};

/// Chunk size for reading: large enough for sequential disk throughput, small enough that a few
/// chunks in flight cost little memory.
const CHUNK: usize = 4 << 20;
/// Ranges at least this big get a progress bar (shown only when stderr is a terminal).
const PROGRESS_MIN: u64 = 64 << 20;

/// The digests of a byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    pub sha256: [u8; 32],
    pub crc32: u32,
}

impl Digest {
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn digest_bytes(data: &[u8]) -> Digest {
    Digest {
        sha256: Sha256::digest(data).into(),
        crc32: crc32fast::hash(data),
    }
}

/// Reads `len` bytes of `src` at `offset`, digests them and, when `dst` is given, writes them
/// at `dst`'s current position. Chunks of zeros are skipped with a seek instead of written, so
/// holes in a sparse input stay holes (the bytes read back are the same). Reading runs on its
/// own thread so disk reads overlap hashing and writing.
pub fn stream(
    src: &File,
    src_path: &Path,
    offset: u64,
    len: u64,
    mut dst: Option<&mut File>,
    label: &str,
) -> Result<Digest> {
    let bar = progress(len, label);
    let mut sha = Sha256::new();
    let mut crc = crc32fast::Hasher::new();
    // Two buffers circulate between the reader and this thread.
    let (full_tx, full_rx) = mpsc::sync_channel::<std::io::Result<Vec<u8>>>(2);
    let (empty_tx, empty_rx) = mpsc::sync_channel::<Vec<u8>>(3);
    for _ in 0..3 {
        empty_tx.send(Vec::with_capacity(CHUNK)).ok();
    }
    let result = thread::scope(|s| -> Result<()> {
        s.spawn(move || {
            let mut at = offset;
            let end = offset + len;
            while at < end {
                let Ok(mut buf) = empty_rx.recv() else { return };
                let n = (end - at).min(CHUNK as u64) as usize;
                buf.resize(n, 0);
                let r = src.read_exact_at(&mut buf, at).map(|()| buf);
                let failed = r.is_err();
                if full_tx.send(r).is_err() || failed {
                    return;
                }
                at += n as u64;
            }
        });
        let mut done = 0u64;
        while done < len {
            let buf = match full_rx.recv() {
                Ok(Ok(buf)) => buf,
                Ok(Err(e)) => {
                    return Err(e).with_context(|| {
                        format!("reading {} at offset {}", src_path.display(), offset + done)
                    })
                }
                Err(_) => bail!("reader of {} stopped early", src_path.display()),
            };
            sha.update(&buf);
            crc.update(&buf);
            if let Some(dst) = dst.as_deref_mut() {
                if is_zero(&buf) {
                    dst.seek(SeekFrom::Current(buf.len() as i64))?;
                } else {
                    dst.write_all(&buf)?;
                }
            }
            done += buf.len() as u64;
            bar.set_position(done);
            // The reader may have finished; a failed send only means it needs no more buffers.
            empty_tx.send(buf).ok();
        }
        Ok(())
    });
    bar.finish_and_clear();
    result?;
    Ok(Digest {
        sha256: sha.finalize().into(),
        crc32: crc.finalize(),
    })
}

fn is_zero(buf: &[u8]) -> bool {
    // OR-folding whole blocks vectorizes; an early-exit `all` does not.
    buf.chunks(4096)
        .all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

fn progress(len: u64, label: &str) -> ProgressBar {
    if len < PROGRESS_MIN {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(label.to_string());
    bar
}
