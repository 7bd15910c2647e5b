//! BPE pre-tokenizers: splitting text into words before merges run, as llama.cpp does.
//!
//! llama.cpp does not run the regexes of `tokenizer.json` for the common vocabularies; it runs
//! hand-written matchers (`unicode_regex_split_custom_gpt2`, `_llama3`, `_qwen2`, `_qwen35` in
//! unicode.cpp) that differ from a real regex engine in corner cases. These functions follow those
//! matchers step by step, so the corner cases come out the same. The `default` pre-tokenizer chains
//! three `std::regex` passes around the GPT-2 matcher; those regexes are plain character-class runs and
//! are written out here as such.
//!
//! Text is split in code points; a split is a list of word lengths in code points, and each pass
//! splits every word of the previous pass further.

use crate::unicode::Flags;

/// The pre-tokenizers, named after the llama.cpp `LLAMA_VOCAB_PRE_TYPE_*` whose regexes they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PreTokenizer {
    /// `[\p{P}\$\+<=>\^~\|]+`, then GPT-2, then `\p{N}+`, then `[0-9][0-9][0-9]`.
    Default,
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`
    Gpt2,
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    Llama3,
    /// As [`PreTokenizer::Llama3`] with `\p{N}` (one digit per word).
    Qwen2,
    /// As [`PreTokenizer::Qwen2`] with letters runs taking marks too: `[\p{L}\p{M}]+`.
    Qwen35,
}

impl PreTokenizer {
    /// Splits code points `cpts` (with their `flags`) into words; returns the word lengths.
    pub(crate) fn split(self, cpts: &[u32], flags: &[Flags]) -> Vec<usize> {
        let whole = [cpts.len()];
        match self {
            PreTokenizer::Default => {
                let words = split_runs(&whole, |i| default_punctuation(cpts[i], flags[i]));
                let words = split_gpt2(cpts, flags, &words);
                let words = split_runs(&words, |i| default_number(cpts[i], flags[i]));
                split_ascii_digit_triples(cpts, &words)
            }
            PreTokenizer::Gpt2 => split_gpt2(cpts, flags, &whole),
            PreTokenizer::Llama3 => split_llama3(cpts, flags, &whole, 3, false),
            PreTokenizer::Qwen2 => split_llama3(cpts, flags, &whole, 1, false),
            PreTokenizer::Qwen35 => split_llama3(cpts, flags, &whole, 1, true),
        }
    }
}

/// One word of the previous pass being split: positions outside it read as absent, which is how the
/// matchers detect the end of text (`OUT_OF_RANGE` in llama.cpp).
struct Word<'a> {
    cpts: &'a [u32],
    flags: &'a [Flags],
    end: usize,
    prev_end: usize,
}

impl Word<'_> {
    fn cpt(&self, pos: usize) -> Option<u32> {
        (pos < self.end).then(|| self.cpts[pos])
    }

    fn flags(&self, pos: usize) -> Flags {
        if pos < self.end {
            self.flags[pos]
        } else {
            Flags::NONE
        }
    }

    /// Closes the current piece at `end`; returns its length (0 pieces are not emitted).
    fn add(&mut self, end: usize, out: &mut Vec<usize>) -> usize {
        let len = end - self.prev_end;
        if len > 0 {
            out.push(len);
        }
        self.prev_end = end;
        len
    }

    /// Length of an English contraction (`'s`, `'t`, `'re`, `'ve`, `'m`, `'ll`, `'d`) at `pos`, 0 if none.
    /// `fold_case`: the llama3 family matches it case-insensitively; only ASCII capitals lower-case to
    /// these letters in Unicode, so ASCII folding is the whole of it.
    fn contraction(&self, pos: usize, fold_case: bool) -> usize {
        if self.cpt(pos) != Some(u32::from(b'\'')) || pos + 1 >= self.end {
            return 0;
        }
        let fold = |p: usize| {
            self.cpt(p).map(|c| match char::from_u32(c) {
                Some(ch) if fold_case => ch.to_ascii_lowercase(),
                Some(ch) => ch,
                None => '\u{FFFD}',
            })
        };
        let next = fold(pos + 1);
        if matches!(next, Some('s' | 't' | 'm' | 'd')) {
            return 2;
        }
        if pos + 2 < self.end {
            let next2 = fold(pos + 2);
            if matches!(
                (next, next2),
                (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l'))
            ) {
                return 3;
            }
        }
        0
    }
}

const SPACE: u32 = 0x20;
const CR: u32 = 0x0D;
const LF: u32 = 0x0A;

/// llama.cpp's `unicode_regex_split_custom_gpt2`.
fn split_gpt2(cpts: &[u32], flags: &[Flags], words: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(words.len());
    let mut start = 0;
    for &len in words {
        let mut w = Word {
            cpts,
            flags,
            end: start + len,
            prev_end: start,
        };
        let mut pos = start;
        start += len;
        while pos < w.end {
            let cpt = cpts[pos];
            let n = w.contraction(pos, false);
            if n > 0 {
                pos += w.add(pos + n, &mut out);
                continue;
            }
            let space = usize::from(cpt == SPACE);
            let mut f2 = if cpt == SPACE {
                w.flags(pos + 1)
            } else {
                flags[pos]
            };
            // ` ?\p{L}+`
            if f2.is_letter() {
                pos += space;
                while f2.is_letter() {
                    pos += 1;
                    f2 = w.flags(pos);
                }
                w.add(pos, &mut out);
                continue;
            }
            // ` ?\p{N}+`
            if f2.is_number() {
                pos += space;
                while f2.is_number() {
                    pos += 1;
                    f2 = w.flags(pos);
                }
                w.add(pos, &mut out);
                continue;
            }
            // ` ?[^\s\p{L}\p{N}]+`
            let other =
                |f: Flags| !(f.is_whitespace() || f.is_letter() || f.is_number()) && f.is_some();
            if other(f2) {
                pos += space;
                while other(f2) {
                    pos += 1;
                    f2 = w.flags(pos);
                }
                w.add(pos, &mut out);
                continue;
            }
            let mut n_ws = 0;
            while w.flags(pos + n_ws).is_whitespace() {
                n_ws += 1;
            }
            // `\s+(?!\S)`: leave the last whitespace to prefix the next word
            if n_ws > 1 && w.cpt(pos + n_ws).is_some() {
                pos += n_ws - 1;
                w.add(pos, &mut out);
                continue;
            }
            // `\s+`
            if n_ws > 0 {
                pos += n_ws;
                w.add(pos, &mut out);
                continue;
            }
            pos += 1;
            w.add(pos, &mut out);
        }
    }
    out
}

/// llama.cpp's `unicode_regex_split_custom_llama3` (`max_digits` 3), `_qwen2` (`max_digits` 1) and
/// `_qwen35` (`max_digits` 1, `marks`: combining marks count as letters).
fn split_llama3(
    cpts: &[u32],
    flags: &[Flags],
    words: &[usize],
    max_digits: usize,
    marks: bool,
) -> Vec<usize> {
    let letter = |f: Flags| f.is_letter() || (marks && f.is_mark());
    let other = |f: Flags| !(f.is_whitespace() || letter(f) || f.is_number());
    let mut out = Vec::with_capacity(words.len());
    let mut start = 0;
    for &len in words {
        let mut w = Word {
            cpts,
            flags,
            end: start + len,
            prev_end: start,
        };
        let mut pos = start;
        start += len;
        while pos < w.end {
            let cpt = cpts[pos];
            let f = flags[pos];
            let n = w.contraction(pos, true);
            if n > 0 {
                pos += w.add(pos + n, &mut out);
                continue;
            }
            // `[^\r\n\p{L}\p{N}]?\p{L}+`
            if !(cpt == CR || cpt == LF || f.is_number()) && (letter(f) || letter(w.flags(pos + 1)))
            {
                pos += 1;
                while letter(w.flags(pos)) {
                    pos += 1;
                }
                w.add(pos, &mut out);
                continue;
            }
            // `\p{N}{1,max_digits}`
            if f.is_number() {
                let mut first = pos;
                while w.flags(pos).is_number() {
                    pos += 1;
                    if pos - first >= max_digits {
                        w.add(pos, &mut out);
                        first = pos;
                    }
                }
                w.add(pos, &mut out);
                continue;
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*` (llama.cpp tests the class of `cpt` itself, not of the
            // code point after the space, for being a code point at all)
            let mut f2 = if cpt == SPACE { w.flags(pos + 1) } else { f };
            if other(f2) && f.is_some() {
                pos += usize::from(cpt == SPACE);
                while other(f2) && f2.is_some() {
                    pos += 1;
                    f2 = w.flags(pos);
                }
                while matches!(w.cpt(pos), Some(CR | LF)) {
                    pos += 1;
                }
                w.add(pos, &mut out);
                continue;
            }
            let mut n_ws = 0;
            let mut after_last_newline = 0;
            while w.flags(pos + n_ws).is_whitespace() {
                if matches!(w.cpt(pos + n_ws), Some(CR | LF)) {
                    after_last_newline = pos + n_ws + 1;
                }
                n_ws += 1;
            }
            // `\s*[\r\n]+`
            if after_last_newline > 0 {
                pos = after_last_newline;
                w.add(pos, &mut out);
                continue;
            }
            // `\s+(?!\S)`
            if n_ws > 1 && w.cpt(pos + n_ws).is_some() {
                pos += n_ws - 1;
                w.add(pos, &mut out);
                continue;
            }
            // `\s+`
            if n_ws > 0 {
                pos += n_ws;
                w.add(pos, &mut out);
                continue;
            }
            pos += 1;
            w.add(pos, &mut out);
        }
    }
    out
}

/// Splits each word into maximal runs of positions where `inside` holds and the gaps between them:
/// what `std::regex` iteration of `[class]+` does in llama.cpp's `unicode_regex_split_stl`.
fn split_runs(words: &[usize], inside: impl Fn(usize) -> bool) -> Vec<usize> {
    let mut out = Vec::with_capacity(words.len());
    let mut start = 0;
    for &len in words {
        let end = start + len;
        let mut gap = start;
        let mut i = start;
        while i < end {
            if inside(i) {
                let mut j = i + 1;
                while j < end && inside(j) {
                    j += 1;
                }
                if i > gap {
                    out.push(i - gap);
                }
                out.push(j - i);
                i = j;
                gap = j;
            } else {
                i += 1;
            }
        }
        if end > gap {
            out.push(end - gap);
        }
        start = end;
    }
    out
}

/// `[0-9][0-9][0-9]` iterated left to right within each word.
fn split_ascii_digit_triples(cpts: &[u32], words: &[usize]) -> Vec<usize> {
    let digit = |c: u32| (0x30..=0x39).contains(&c);
    let mut out = Vec::with_capacity(words.len());
    let mut start = 0;
    for &len in words {
        let end = start + len;
        let mut gap = start;
        let mut i = start;
        while i + 3 <= end {
            if digit(cpts[i]) && digit(cpts[i + 1]) && digit(cpts[i + 2]) {
                if i > gap {
                    out.push(i - gap);
                }
                out.push(3);
                i += 3;
                gap = i;
            } else {
                i += 1;
            }
        }
        if end > gap {
            out.push(end - gap);
        }
        start = end;
    }
    out
}

/// `[\p{P}\$\+<=>\^~\|]` on llama.cpp's "collapsed" text: ASCII keeps its own code, where its
/// `\p{P}` stands for the ASCII punctuation list it carries (every printable non-alphanumeric but
/// `` ` ``); other code points match by class, whitespace never.
fn default_punctuation(cp: u32, f: Flags) -> bool {
    if cp < 0x80 {
        matches!(cp, 0x21..=0x2F | 0x3A..=0x40 | 0x5B..=0x5F | 0x7B..=0x7E)
    } else {
        !f.is_whitespace() && f.is_punctuation()
    }
}

/// `\p{N}` on the collapsed text: ASCII digits, or a non-ASCII, non-whitespace number.
fn default_number(cp: u32, f: Flags) -> bool {
    if cp < 0x80 {
        (0x30..=0x39).contains(&cp)
    } else {
        !f.is_whitespace() && f.is_number()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: PreTokenizer, text: &str) -> Vec<String> {
        let cpts: Vec<u32> = text.chars().map(|c| c as u32).collect();
        let flags: Vec<Flags> = cpts.iter().map(|&c| Flags::of(c)).collect();
        let mut out = Vec::new();
        let mut it = text.chars();
        for len in pre.split(&cpts, &flags) {
            out.push(it.by_ref().take(len).collect());
        }
        assert!(it.next().is_none());
        out
    }

    #[test]
    fn gpt2_splits() {
        let w = words(PreTokenizer::Gpt2, "Hello world's  end 12345 x!!\n\n  y");
        assert_eq!(
            w,
            ["Hello", " world", "'s", " ", " end", " 12345", " x", "!!", "\n\n ", " y"]
        );
        // trailing whitespace stays whole; a capital contraction is not one for GPT-2
        assert_eq!(words(PreTokenizer::Gpt2, "A'S  "), ["A", "'", "S", "  "]);
    }

    #[test]
    fn llama3_splits() {
        let w = words(
            PreTokenizer::Llama3,
            "Hello  world 1234567 I'M\n\n\tx ...\n",
        );
        assert_eq!(
            w,
            ["Hello", " ", " world", " ", "123", "456", "7", " I", "'M", "\n\n", "\tx", " ...\n"]
        );
    }

    #[test]
    fn qwen2_splits() {
        let w = words(PreTokenizer::Qwen2, "a 12 é\u{301}");
        assert_eq!(w, ["a", " ", "1", "2", " é", "\u{301}"]);
        let w = words(PreTokenizer::Qwen35, "a 12 é\u{301}");
        assert_eq!(w, ["a", " ", "1", "2", " é\u{301}"]);
        // a lone trailing space after punctuation-less text
        assert_eq!(words(PreTokenizer::Qwen2, "a "), ["a", " "]);
    }

    #[test]
    fn default_splits() {
        let w = words(PreTokenizer::Default, "x=12345, ok`");
        assert_eq!(w, ["x", "=", "123", "45", ",", " ok", "`"]);
    }
}
