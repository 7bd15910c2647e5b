//! Cutting special tokens out of the text before the tokenizer proper runs: llama.cpp's
//! `tokenizer_st_partition`.
//!
//! llama.cpp takes the special tokens (control, user-defined and unknown ones) longest text first, and
//! for each one splits every remaining text fragment at each of its leftmost non-overlapping
//! occurrences. Doing that literally scans the text once per special token (Gemma has over 6000), so
//! here one pass over the text with a trie of the special texts first finds which of them occur at all,
//! and where; the splitting then runs over just those, in llama.cpp's order, and gives its fragments.

use std::ops::Range;

use crate::vocab::{attr, Vocab};

/// A piece of the text to tokenize, or a special token cut out of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fragment {
    Text(Range<usize>),
    Token(u32),
}

/// The special tokens in llama.cpp's `cache_special_tokens` order, and a trie over their texts.
pub(crate) struct Specials {
    /// Token ids, longest text first.
    order: Vec<u32>,
    /// Trie nodes; node 0 is the root.
    nodes: Vec<Node>,
}

struct Node {
    /// (byte, child node), sorted by byte.
    children: Vec<(u8, u32)>,
    /// Position in `order` of the special token whose text ends here.
    special: Option<u32>,
}

/// C `isspace` in the C locale, which llama.cpp uses to strip around LSTRIP/RSTRIP tokens.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

impl Specials {
    pub(crate) fn new(vocab: &Vocab) -> Specials {
        let mask = attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN;
        let mut order: Vec<u32> = (0..vocab.len() as u32)
            .filter(|&id| vocab.attr(id) & mask != 0)
            .collect();
        // llama.cpp uses an unstable std::sort by length; among equal lengths it keeps no
        // particular order, here it is by id (it only matters for two equal-length texts that overlap).
        order.sort_by_key(|&id| std::cmp::Reverse(vocab.text(id).len()));

        let mut nodes = vec![Node {
            children: Vec::new(),
            special: None,
        }];
        for (rank, &id) in order.iter().enumerate() {
            let mut at = 0usize;
            for &b in vocab.text(id) {
                at = match nodes[at].children.binary_search_by_key(&b, |c| c.0) {
                    Ok(i) => nodes[at].children[i].1 as usize,
                    Err(i) => {
                        let child = nodes.len();
                        nodes[at].children.insert(i, (b, child as u32));
                        nodes.push(Node {
                            children: Vec::new(),
                            special: None,
                        });
                        child
                    }
                };
            }
            // texts are unique in a vocabulary, so each end node holds one token
            nodes[at].special = Some(rank as u32);
        }
        Specials { order, nodes }
    }

    /// The special token ids, longest text first.
    pub(crate) fn ids(&self) -> &[u32] {
        &self.order
    }

    /// The fragments of `text`. `parse_special`: whether control and unknown tokens written in the text
    /// are recognised (user-defined ones always are, as in llama.cpp).
    pub(crate) fn partition(
        &self,
        vocab: &Vocab,
        text: &[u8],
        parse_special: bool,
    ) -> Vec<Fragment> {
        // (rank in `order`, position) of every occurrence, overlapping ones included
        let mut hits: Vec<(u32, usize)> = Vec::new();
        for start in 0..text.len() {
            let mut at = 0usize;
            for &b in &text[start..] {
                match self.nodes[at].children.binary_search_by_key(&b, |c| c.0) {
                    Ok(i) => at = self.nodes[at].children[i].1 as usize,
                    Err(_) => break,
                }
                if let Some(rank) = self.nodes[at].special {
                    let id = self.order[rank as usize];
                    if parse_special || vocab.attr(id) & (attr::CONTROL | attr::UNKNOWN) == 0 {
                        hits.push((rank, start));
                    }
                }
            }
        }
        let mut frags = vec![Fragment::Text(0..text.len())];
        if hits.is_empty() {
            return frags;
        }
        hits.sort_unstable();

        for group in hits.chunk_by(|a, b| a.0 == b.0) {
            let id = self.order[group[0].0 as usize];
            let len = vocab.text(id).len();
            let a = vocab.attr(id);
            let mut next = Vec::with_capacity(frags.len() + 2 * group.len());
            // occurrences are sorted by position, as are the fragments: one pass over both
            let mut h = 0;
            for frag in frags {
                let Fragment::Text(r) = frag else {
                    next.push(frag);
                    continue;
                };
                let (mut cur, end) = (r.start, r.end);
                loop {
                    while h < group.len() && group[h].1 < cur {
                        h += 1;
                    }
                    // leftmost occurrence lying wholly inside [cur, end)
                    if h == group.len() || group[h].1 + len > end {
                        break;
                    }
                    let m = group[h].1;
                    if m > cur {
                        let mut left_end = m;
                        if a & attr::LSTRIP != 0 {
                            while left_end > cur && is_c_space(text[left_end - 1]) {
                                left_end -= 1;
                            }
                        }
                        if left_end > cur {
                            next.push(Fragment::Text(cur..left_end));
                        }
                    }
                    next.push(Fragment::Token(id));
                    cur = m + len;
                    if a & attr::RSTRIP != 0 {
                        while cur < end && is_c_space(text[cur]) {
                            cur += 1;
                        }
                    }
                }
                if cur < end {
                    next.push(Fragment::Text(cur..end));
                }
            }
            frags = next;
        }
        frags
    }
}
