//! llama.cpp's GPT-2-style byte-level BPE (`llm_tokenizer_bpe`): pre-tokenize, map bytes to the
//! printable code points of GPT-2's `bytes_to_unicode`, then apply merges lowest rank first.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::pretokenize::PreTokenizer;
use crate::table::StrTable;
use crate::unicode::{code_points_lenient, decode_lenient, encode_cpt, utf8_len, Flags};
use crate::vocab::Vocab;

/// Whether GPT-2's `bytes_to_unicode` maps byte `b` to the code point of the same number.
const fn is_printable(b: u8) -> bool {
    matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// `bytes_to_unicode`: printable bytes stand for themselves, the other 68 take U+0100.. in order.
const fn byte_code_points() -> [u16; 256] {
    let mut out = [0u16; 256];
    let mut n = 0;
    let mut b = 0;
    while b < 256 {
        out[b] = if is_printable(b as u8) {
            b as u16
        } else {
            n += 1;
            255 + n
        };
        b += 1;
    }
    out
}

static BYTE_CODE_POINTS: [u16; 256] = byte_code_points();

/// The bytes behind U+0100.. (the inverse of `bytes_to_unicode` for non-printable bytes).
const fn shifted_bytes() -> [u8; 68] {
    let mut out = [0u8; 68];
    let mut n = 0;
    let mut b = 0;
    while b < 256 {
        if !is_printable(b as u8) {
            out[n] = b as u8;
            n += 1;
        }
        b += 1;
    }
    out
}

static SHIFTED_BYTES: [u8; 68] = shifted_bytes();

/// The byte a code point of a byte-level token stands for (`unicode_utf8_to_byte`).
fn byte_of(cp: u32) -> Option<u8> {
    if cp < 256 && is_printable(cp as u8) {
        Some(cp as u8)
    } else if (256..256 + 68).contains(&cp) {
        Some(SHIFTED_BYTES[cp as usize - 256])
    } else {
        None
    }
}

/// The bytes a byte-level token stands for: llama.cpp's `llama_decode_text`, including its
/// `[UNK_BYTE_0x..<text>]` for a code point that stands for no byte.
pub(crate) fn decode_byte_level(text: &[u8], out: &mut Vec<u8>) {
    for cp in code_points_lenient(text) {
        match byte_of(cp) {
            Some(b) => out.push(b),
            None => {
                let mut utf8 = Vec::with_capacity(4);
                encode_cpt(cp, &mut utf8);
                out.extend_from_slice(b"[UNK_BYTE_0x");
                for b in utf8 {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text);
                out.push(b']');
            }
        }
    }
}

/// A BPE vocabulary's merge ranks and pre-tokenizer.
pub(crate) struct Bpe {
    pre: PreTokenizer,
    /// A word that is a token as a whole is taken as is (llama3-style vocabularies).
    ignore_merges: bool,
    /// Merge line `"left right"` → rank (its index in `tokenizer.ggml.merges`; the first of equal lines).
    ranks: StrTable,
}

/// Reused buffers of one `tokenize` call.
#[derive(Default)]
struct Scratch {
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Reverse<Bigram>>,
    key: Vec<u8>,
}

struct Symbol {
    start: usize,
    n: usize,
    prev: usize,
    next: usize,
}

const NONE: usize = usize::MAX;

/// Heap entry: lowest rank first, then leftmost (llama.cpp's `llm_bigram_bpe::comparator`).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Bigram {
    rank: u32,
    left: usize,
    right: usize,
    size: usize,
}

impl Bpe {
    /// `merges`: the `tokenizer.ggml.merges` lines, `"left right"`.
    pub(crate) fn new(pre: PreTokenizer, ignore_merges: bool, merges: &[&[u8]]) -> Bpe {
        // llama.cpp splits a line at its first space after the first byte and asserts that the pieces
        // it looks up hold no space, so only a line with exactly that one space can ever match; keyed
        // by the whole line, a lookup of "left right" finds exactly those.
        // A repeated line keeps its first rank.
        let (ranks, _) = StrTable::build(merges);
        Bpe {
            pre,
            ignore_merges,
            ranks,
        }
    }

    /// Appends the ids of `text` (one fragment between special tokens) to `out`.
    pub(crate) fn tokenize(&self, vocab: &Vocab, text: &[u8], out: &mut Vec<u32>) {
        let mut cpts = Vec::with_capacity(text.len());
        decode_lenient(text, &mut cpts);
        let flags: Vec<Flags> = cpts.iter().map(|&c| Flags::of(c)).collect();
        let mut scratch = Scratch::default();
        let mut raw = Vec::new();
        let mut word = Vec::new();
        let mut start = 0;
        for len in self.pre.split(&cpts, &flags) {
            raw.clear();
            for &cp in &cpts[start..start + len] {
                encode_cpt(cp, &mut raw);
            }
            start += len;
            word.clear();
            for &b in &raw {
                let cp = BYTE_CODE_POINTS[b as usize];
                encode_cpt(u32::from(cp), &mut word);
            }
            self.merge_word(vocab, &word, out, &mut scratch);
        }
    }

    fn rank(&self, key: &mut Vec<u8>, left: &[u8], right: &[u8]) -> Option<u32> {
        key.clear();
        key.extend_from_slice(left);
        key.push(b' ');
        key.extend_from_slice(right);
        self.ranks.get(key)
    }

    fn merge_word(&self, vocab: &Vocab, word: &[u8], out: &mut Vec<u32>, s: &mut Scratch) {
        if self.ignore_merges {
            if let Some(id) = vocab.id(word) {
                out.push(id);
                return;
            }
        }
        let symbols = &mut s.symbols;
        symbols.clear();
        let mut offs = 0;
        while offs < word.len() {
            let n = utf8_len(word[offs]).min(word.len() - offs);
            let index = symbols.len();
            symbols.push(Symbol {
                start: offs,
                n,
                prev: if index == 0 { NONE } else { index - 1 },
                next: if offs + n == word.len() {
                    NONE
                } else {
                    index + 1
                },
            });
            offs += n;
        }

        let queue = &mut s.queue;
        queue.clear();
        let key = &mut s.key;
        let mut add = |symbols: &[Symbol],
                       queue: &mut BinaryHeap<Reverse<Bigram>>,
                       left: usize,
                       right: usize| {
            if left == NONE || right == NONE {
                return;
            }
            let (l, r) = (&symbols[left], &symbols[right]);
            let lt = &word[l.start..l.start + l.n];
            let rt = &word[r.start..r.start + r.n];
            if let Some(rank) = self.rank(key, lt, rt) {
                queue.push(Reverse(Bigram {
                    rank,
                    left,
                    right,
                    size: l.n + r.n,
                }));
            }
        };
        for i in 1..symbols.len() {
            add(symbols, queue, i - 1, i);
        }
        while let Some(Reverse(b)) = queue.pop() {
            let (ln, rn) = (symbols[b.left].n, symbols[b.right].n);
            // llama.cpp compares texts; a symbol only grows by taking its right neighbour, so the texts
            // still match exactly when both are alive with the sizes they were queued with.
            if ln == 0 || rn == 0 || ln + rn != b.size {
                continue;
            }
            symbols[b.left].n += rn;
            symbols[b.right].n = 0;
            let next = symbols[b.right].next;
            symbols[b.left].next = next;
            if next != NONE {
                symbols[next].prev = b.left;
            }
            let prev = symbols[b.left].prev;
            add(symbols, queue, prev, b.left);
            add(symbols, queue, b.left, next);
        }

        for sym in symbols.iter().filter(|s| s.n > 0) {
            let piece = &word[sym.start..sym.start + sym.n];
            match vocab.id(piece) {
                Some(id) => out.push(id),
                // llama.cpp then looks each byte up as a one-byte token text
                None => out.extend(piece.iter().filter_map(|&b| vocab.id(&[b]))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_mapping() {
        assert_eq!(BYTE_CODE_POINTS[b' ' as usize], 0x120); // 'Ġ'
        assert_eq!(BYTE_CODE_POINTS[b'\n' as usize], 0x10A); // 'Ċ'
        assert_eq!(BYTE_CODE_POINTS[b'a' as usize], u16::from(b'a'));
        assert_eq!(BYTE_CODE_POINTS[0xAD], 0x143);
        for b in 0..=255u8 {
            assert_eq!(byte_of(u32::from(BYTE_CODE_POINTS[b as usize])), Some(b));
        }
        let decoded = |text: &str| {
            let mut out = b"x".to_vec();
            decode_byte_level(text.as_bytes(), &mut out);
            out
        };
        assert_eq!(decoded("ĠhelloĊ"), b"x hello\n");
        assert_eq!(
            decoded("a€"),
            b"xa[UNK_BYTE_0xe282aca\xE2\x82\xAC]".to_vec()
        );
    }
}
