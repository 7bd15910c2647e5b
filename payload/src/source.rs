//! Positioned reads over a file or a byte slice, so the zip reader never moves a shared file
//! cursor (the runtime may hold the same `File` elsewhere) and can be tested on bytes in memory.

use std::fs::File;
use std::io;

use crate::PayloadError;

pub(crate) trait Source {
    fn len(&self) -> Result<u64, PayloadError>;
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Reads `len` bytes at `offset`; callers bound `len` before calling.
    fn read_vec(&self, offset: u64, len: usize) -> Result<Vec<u8>, PayloadError> {
        let mut buf = vec![0u8; len];
        self.read_exact_at(&mut buf, offset)
            .map_err(|source| PayloadError::Io {
                offset,
                len: len as u64,
                source,
            })?;
        Ok(buf)
    }
}

impl Source for File {
    fn len(&self) -> Result<u64, PayloadError> {
        self.metadata()
            .map(|m| m.len())
            .map_err(|source| PayloadError::Io {
                offset: 0,
                len: 0,
                source,
            })
    }

    #[cfg(unix)]
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }

    #[cfg(windows)]
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        use std::os::windows::fs::FileExt;
        while !buf.is_empty() {
            match self.seek_read(buf, offset) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Source for [u8] {
    fn len(&self) -> Result<u64, PayloadError> {
        Ok(<[u8]>::len(self) as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .filter(|&end| end <= <[u8]>::len(self))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(&self[start..end]);
        Ok(())
    }
}
