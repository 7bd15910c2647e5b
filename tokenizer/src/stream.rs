//! Turning a stream of token bytes into text.

/// Streams detokenized bytes as valid UTF-8.
///
/// Tokens often end inside a multi-byte character (byte-fallback tokens, byte-level BPE pieces), so
/// the bytes of a character split across tokens are held back until it is complete. A sequence that
/// can no longer complete becomes U+FFFD, one per invalid piece exactly as `String::from_utf8_lossy`
/// replaces them: the concatenated output always equals `from_utf8_lossy` of all bytes pushed.
#[derive(Debug, Default, Clone)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `bytes`; returns the text that is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut i = 0;
        loop {
            match std::str::from_utf8(&self.pending[i..]) {
                Ok(s) => {
                    out.push_str(s);
                    i = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.pending[i..i + valid]));
                    i += valid;
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{FFFD}');
                            i += n;
                        }
                        // an incomplete character at the end: it may still complete
                        None => break,
                    }
                }
            }
        }
        self.pending.drain(..i);
        out
    }

    /// Ends the stream: bytes still held back (an unfinished character) become U+FFFD.
    pub fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.pending);
        String::from_utf8_lossy(&rest).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_all(chunks: &[&[u8]]) -> String {
        let mut s = Utf8Stream::new();
        let mut out = String::new();
        for c in chunks {
            out += &s.push(c);
        }
        out + &s.finish()
    }

    #[test]
    fn split_characters_are_held_back() {
        let mut s = Utf8Stream::new();
        assert_eq!(s.push(b"caf\xC3"), "caf");
        assert_eq!(s.push(b"\xA9 "), "é ");
        assert_eq!(s.push(b"\xF0\x9F"), "");
        assert_eq!(s.push(b"\xA6"), "");
        assert_eq!(s.push(b"\x99!"), "🦙!");
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut s = Utf8Stream::new();
        // a lead byte followed by ASCII can no longer complete
        assert_eq!(s.push(b"\xE6\x97"), "");
        assert_eq!(s.push(b"x"), "\u{FFFD}x");
        assert_eq!(s.push(b"\xFF"), "\u{FFFD}");
        assert_eq!(s.push(b"\x80a"), "\u{FFFD}a");
        assert_eq!(s.push(b"\xE2\x82"), "");
        assert_eq!(s.finish(), "\u{FFFD}");
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn matches_lossy_conversion_for_every_split() {
        let data: &[u8] = b"a\xC3\xA9\xE6\x97\xA5\xF0\x9F\xA6\x99\xFF\xE6\x97z\xC3\x80\x80\xF0\x9F";
        let expected = String::from_utf8_lossy(data).into_owned();
        for i in 0..=data.len() {
            for j in i..=data.len() {
                let got = stream_all(&[&data[..i], &data[i..j], &data[j..]]);
                assert_eq!(got, expected, "split at {i}, {j}");
            }
        }
        let bytewise: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(stream_all(&bytewise), expected);
    }
}
