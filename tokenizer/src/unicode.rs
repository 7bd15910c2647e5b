//! Code point classes as llama.cpp's pre-tokenizers see them (its `unicode_cpt_flags`).
//!
//! llama.cpp does not ask the C++ runtime for Unicode properties: it carries its own table, generated from
//! Unicode 15.1. A category that changed between Unicode versions would split text differently, so the table
//! here is generated from that same version (`tools/gen_unicode_table.py`) instead of coming from a crate that
//! follows the newest Unicode.

use crate::unicode_table::{Class, RANGES};

/// What the splitters ask of one position: its class and whether it is `\s`.
///
/// A position outside the piece being split has no class at all ([`Flags::NONE`]), which llama.cpp's
/// splitters test for ("`flags.as_uint() != 0`"); every real code point has a class.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Flags {
    class: Option<Class>,
    whitespace: bool,
}

impl Flags {
    pub(crate) const NONE: Flags = Flags {
        class: None,
        whitespace: false,
    };

    /// Flags of a code point as llama.cpp decodes it: possibly a surrogate or above U+10FFFF
    /// (both come out of its lenient UTF-8 decoder), which are `Control` and `Undefined`.
    pub(crate) fn of(cp: u32) -> Flags {
        Flags {
            class: Some(class_of(cp)),
            whitespace: is_whitespace(cp),
        }
    }

    pub(crate) fn is_letter(self) -> bool {
        self.class == Some(Class::Letter)
    }

    pub(crate) fn is_number(self) -> bool {
        self.class == Some(Class::Number)
    }

    pub(crate) fn is_punctuation(self) -> bool {
        self.class == Some(Class::Punctuation)
    }

    pub(crate) fn is_mark(self) -> bool {
        self.class == Some(Class::Mark)
    }

    pub(crate) fn is_whitespace(self) -> bool {
        self.whitespace
    }

    /// False only for [`Flags::NONE`].
    pub(crate) fn is_some(self) -> bool {
        self.class.is_some()
    }
}

/// The class of `c`, by binary search in the generated range table (Latin-1 through a direct table).
pub(crate) fn class_of(cp: u32) -> Class {
    if cp < 256 {
        return LATIN1[cp as usize];
    }
    if cp >= 0x11_0000 {
        return Class::Undefined;
    }
    let i = RANGES.partition_point(|&(start, _)| start <= cp);
    // RANGES starts at code point 0, so i >= 1.
    RANGES[i - 1].1
}

const fn latin1() -> [Class; 256] {
    let mut out = [Class::Undefined; 256];
    let mut r = 0;
    while r < RANGES.len() && RANGES[r].0 < 256 {
        let end = if r + 1 < RANGES.len() && RANGES[r + 1].0 < 256 {
            RANGES[r + 1].0
        } else {
            256
        };
        let mut cp = RANGES[r].0;
        while cp < end {
            out[cp as usize] = RANGES[r].1;
            cp += 1;
        }
        r += 1;
    }
    out
}

static LATIN1: [Class; 256] = latin1();

/// Unicode `White_Space` (PropList.txt), the set llama.cpp uses for `\s`.
pub(crate) fn is_whitespace(cp: u32) -> bool {
    matches!(
        cp,
        0x9..=0xD
            | 0x20
            | 0x85
            | 0xA0
            | 0x1680
            | 0x2000..=0x200A
            | 0x2028
            | 0x2029
            | 0x202F
            | 0x205F
            | 0x3000
    )
}

/// Length of the UTF-8 sequence a lead byte announces, as llama.cpp's `unicode_len_utf8` reads it
/// (a stray continuation byte counts as one).
pub(crate) fn utf8_len(lead: u8) -> usize {
    match lead >> 4 {
        0xC | 0xD => 2,
        0xE => 3,
        0xF => 4,
        _ => 1,
    }
}

/// Code points of `bytes` the way llama.cpp's `unicode_cpts_from_utf8` decodes them: lead and
/// continuation bits are checked but overlong forms and surrogates pass; a byte that starts no
/// valid sequence becomes U+FFFD and decoding resumes at the next byte.
pub(crate) fn decode_lenient(bytes: &[u8], out: &mut Vec<u32>) {
    out.extend(code_points_lenient(bytes));
}

/// [`decode_lenient`] one code point at a time.
pub(crate) fn code_points_lenient(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    let cont = |i: usize| bytes.get(i).is_some_and(|&b| b & 0xC0 == 0x80);
    let mut i = 0;
    std::iter::from_fn(move || {
        if i >= bytes.len() {
            return None;
        }
        let b0 = bytes[i] as u32;
        let (cp, n) = if b0 & 0x80 == 0 {
            (b0, 1)
        } else if b0 & 0x40 == 0 {
            (0xFFFD, 0)
        } else if b0 & 0x20 == 0 {
            if cont(i + 1) {
                (((b0 & 0x1F) << 6) | (bytes[i + 1] as u32 & 0x3F), 2)
            } else {
                (0xFFFD, 0)
            }
        } else if b0 & 0x10 == 0 {
            if cont(i + 1) && cont(i + 2) {
                let cp = ((b0 & 0x0F) << 12)
                    | ((bytes[i + 1] as u32 & 0x3F) << 6)
                    | (bytes[i + 2] as u32 & 0x3F);
                (cp, 3)
            } else {
                (0xFFFD, 0)
            }
        } else if b0 & 0x08 == 0 {
            if cont(i + 1) && cont(i + 2) && cont(i + 3) {
                let cp = ((b0 & 0x07) << 18)
                    | ((bytes[i + 1] as u32 & 0x3F) << 12)
                    | ((bytes[i + 2] as u32 & 0x3F) << 6)
                    | (bytes[i + 3] as u32 & 0x3F);
                (cp, 4)
            } else {
                (0xFFFD, 0)
            }
        } else {
            (0xFFFD, 0)
        };
        i += n.max(1);
        Some(cp)
    })
}

/// UTF-8 of a code point as llama.cpp's `unicode_cpt_to_utf8` writes it (surrogates included).
/// Above U+10FFFF, where llama.cpp throws, this writes U+FFFD.
pub(crate) fn encode_cpt(cp: u32, out: &mut Vec<u8>) {
    match cp {
        0..=0x7F => out.push(cp as u8),
        0x80..=0x7FF => out.extend_from_slice(&[0xC0 | (cp >> 6) as u8, 0x80 | (cp & 0x3F) as u8]),
        0x800..=0xFFFF => out.extend_from_slice(&[
            0xE0 | (cp >> 12) as u8,
            0x80 | ((cp >> 6) & 0x3F) as u8,
            0x80 | (cp & 0x3F) as u8,
        ]),
        0x1_0000..=0x10_FFFF => out.extend_from_slice(&[
            0xF0 | (cp >> 18) as u8,
            0x80 | ((cp >> 12) & 0x3F) as u8,
            0x80 | ((cp >> 6) & 0x3F) as u8,
            0x80 | (cp & 0x3F) as u8,
        ]),
        _ => out.extend_from_slice("\u{FFFD}".as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_of_known_code_points() {
        let class_of = |c: char| class_of(c as u32);
        assert_eq!(class_of('a'), Class::Letter);
        assert_eq!(class_of('Z'), Class::Letter);
        assert_eq!(class_of('7'), Class::Number);
        assert_eq!(class_of('²'), Class::Number);
        assert_eq!(class_of('½'), Class::Number);
        assert_eq!(class_of('_'), Class::Punctuation);
        assert_eq!(class_of('$'), Class::Symbol);
        assert_eq!(class_of('`'), Class::Symbol);
        assert_eq!(class_of('\u{301}'), Class::Mark);
        assert_eq!(class_of(' '), Class::Separator);
        assert_eq!(class_of('\n'), Class::Control);
        assert_eq!(class_of('日'), Class::Letter);
        assert_eq!(class_of('٣'), Class::Number);
        assert_eq!(class_of('🦙'), Class::Symbol);
        assert_eq!(class_of('\u{E000}'), Class::Control);
        // Unicode 15.1 additions are letters; Unicode 16 ones are still unassigned, as in llama.cpp.
        assert_eq!(class_of('\u{2EBF0}'), Class::Letter);
        assert_eq!(class_of('\u{1C89}'), Class::Undefined);
        assert_eq!(class_of('\u{10FFFF}'), Class::Undefined);
        assert_eq!(super::class_of(0xD800), Class::Control);
        assert_eq!(super::class_of(0x11_0000), Class::Undefined);
    }

    #[test]
    fn table_is_sorted_and_starts_at_zero() {
        assert_eq!(RANGES[0].0, 0);
        assert!(RANGES
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 != w[1].1));
    }

    #[test]
    fn lenient_decoding_matches_llama() {
        let dec = |b: &[u8]| {
            let mut v = Vec::new();
            decode_lenient(b, &mut v);
            v
        };
        assert_eq!(dec("aé日🦙".as_bytes()), vec![0x61, 0xE9, 0x65E5, 0x1F999]);
        // stray continuation, truncated sequence, invalid lead
        assert_eq!(dec(b"\x80a"), vec![0xFFFD, 0x61]);
        assert_eq!(dec(b"\xE6\x97"), vec![0xFFFD, 0xFFFD]);
        assert_eq!(dec(b"\xFFz"), vec![0xFFFD, 0x7A]);
        // overlong and surrogate forms pass, as in llama.cpp
        assert_eq!(dec(b"\xC0\x80"), vec![0]);
        assert_eq!(dec(b"\xED\xA0\x80"), vec![0xD800]);
        let mut out = Vec::new();
        for cp in [0x61, 0xE9, 0x65E5, 0x1F999, 0xD800] {
            encode_cpt(cp, &mut out);
        }
        assert_eq!(out, b"a\xC3\xA9\xE6\x97\xA5\xF0\x9F\xA6\x99\xED\xA0\x80");
        assert_eq!(utf8_len(b'a'), 1);
        assert_eq!(utf8_len(0x80), 1);
        assert_eq!(utf8_len(0xC3), 2);
        assert_eq!(utf8_len(0xE6), 3);
        assert_eq!(utf8_len(0xF0), 4);
    }

    #[test]
    fn whitespace_set() {
        for c in [
            '\t', '\n', '\u{B}', '\u{C}', '\r', ' ', '\u{85}', '\u{A0}', '\u{3000}',
        ] {
            assert!(is_whitespace(c as u32), "{c:?}");
        }
        for c in ['a', '\u{200B}', '\u{180E}', '_'] {
            assert!(!is_whitespace(c as u32), "{c:?}");
        }
    }
}
