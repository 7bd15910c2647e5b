//! llama.cpp's SentencePiece-style tokenizer (`llm_tokenizer_spm`): start from single characters and
//! keep merging the adjacent pair whose concatenation is the highest-scoring token.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::unicode::utf8_len;
use crate::vocab::Vocab;

const NONE: usize = usize::MAX;

struct Symbol {
    start: usize,
    n: usize,
    prev: usize,
    next: usize,
}

/// A candidate merge of symbols `left` and `right` whose texts were `size` bytes together.
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

/// Heap order of llama.cpp's `llm_bigram_spm::comparator`: highest score first, then leftmost.
/// Scores compare as C++ `<` does (-0.0 equals 0.0).
impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .partial_cmp(&other.score)
            .unwrap_or(Ordering::Equal)
            .then(other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}

/// Appends the ids of `text` (spaces already written as U+2581) to `out`.
///
/// A character that is no token comes out as its bytes' `<0xNN>` tokens (`byte_tokens`); where the
/// vocabulary lacks one, llama.cpp throws, and this writes `unk` instead (or nothing without one).
pub(crate) fn tokenize(
    vocab: &Vocab,
    byte_tokens: &[Option<u32>; 256],
    unk: Option<u32>,
    text: &[u8],
    out: &mut Vec<u32>,
) {
    let mut symbols = Vec::with_capacity(text.len());
    let mut offs = 0;
    while offs < text.len() {
        let n = utf8_len(text[offs]).min(text.len() - offs);
        let index = symbols.len();
        symbols.push(Symbol {
            start: offs,
            n,
            prev: if index == 0 { NONE } else { index - 1 },
            next: if offs + n == text.len() {
                NONE
            } else {
                index + 1
            },
        });
        offs += n;
    }
    if symbols.is_empty() {
        return;
    }

    let mut queue = BinaryHeap::with_capacity(symbols.len());
    let try_add =
        |symbols: &[Symbol], queue: &mut BinaryHeap<Bigram>, left: usize, right: usize| {
            if left == NONE || right == NONE {
                return;
            }
            let start = symbols[left].start;
            let size = symbols[left].n + symbols[right].n;
            if let Some(id) = vocab.id(&text[start..start + size]) {
                queue.push(Bigram {
                    score: vocab.score(id),
                    left,
                    right,
                    size,
                });
            }
        };
    for i in 1..symbols.len() {
        try_add(&symbols, &mut queue, i - 1, i);
    }

    while let Some(b) = queue.pop() {
        let (ln, rn) = (symbols[b.left].n, symbols[b.right].n);
        // one side was merged elsewhere since this pair was queued
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
        try_add(&symbols, &mut queue, symbols[b.left].prev, b.left);
        try_add(&symbols, &mut queue, b.left, next);
    }

    // Every merged symbol is a token (a pair is queued only when it is one), so a symbol that is no
    // token is a single character: llama.cpp's `resegment` falls through to bytes for it.
    let mut i = 0;
    while i != NONE {
        let s = &symbols[i];
        let piece = &text[s.start..s.start + s.n];
        match vocab.id(piece) {
            Some(id) => out.push(id),
            None => out.extend(
                piece
                    .iter()
                    .filter_map(|&b| byte_tokens[b as usize].or(unk)),
            ),
        }
        i = s.next;
    }
}
