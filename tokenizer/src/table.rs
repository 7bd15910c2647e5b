//! A byte-string → u32 map for the vocabulary and the merge list.
//!
//! Vocabularies hold up to a few hundred thousand strings; keeping them in one buffer with an
//! open-addressing index avoids one heap allocation per token at load time, and lookups hash the
//! probe string once without building an owned key.

/// Strings in insertion order, each with a value, found by content.
pub(crate) struct StrTable {
    buf: Vec<u8>,
    /// `ends[i]`: end of string `i` in `buf`; it starts at `ends[i - 1]` (0 for the first).
    ends: Vec<usize>,
    values: Vec<u32>,
    /// Entry index + 1; 0 marks an empty slot. Kept at most half full.
    slots: Vec<u32>,
}

impl StrTable {
    pub(crate) fn with_capacity(n: usize) -> StrTable {
        let n_slots = (n.max(8) * 2).next_power_of_two();
        StrTable {
            buf: Vec::new(),
            ends: Vec::with_capacity(n),
            values: Vec::with_capacity(n),
            slots: vec![0; n_slots],
        }
    }

    /// The `i`-th distinct string stored.
    pub(crate) fn text(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.buf[start..self.ends[i]]
    }

    /// Stores `s` with `value` unless it is already there; then returns the value stored first.
    pub(crate) fn insert(&mut self, s: &[u8], value: u32) -> Option<u32> {
        if (self.ends.len() + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut at = (hash(s) as usize) & mask;
        loop {
            match self.slots[at] {
                0 => break,
                e => {
                    let e = e as usize - 1;
                    if self.text(e) == s {
                        return Some(self.values[e]);
                    }
                }
            }
            at = (at + 1) & mask;
        }
        self.buf.extend_from_slice(s);
        self.ends.push(self.buf.len());
        self.values.push(value);
        self.slots[at] = self.ends.len() as u32;
        None
    }

    pub(crate) fn get(&self, s: &[u8]) -> Option<u32> {
        let mask = self.slots.len() - 1;
        let mut at = (hash(s) as usize) & mask;
        loop {
            match self.slots[at] {
                0 => return None,
                e => {
                    let e = e as usize - 1;
                    if self.text(e) == s {
                        return Some(self.values[e]);
                    }
                }
            }
            at = (at + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let n_slots = self.slots.len() * 2;
        let mask = n_slots - 1;
        let mut slots = vec![0u32; n_slots];
        for e in 0..self.ends.len() {
            let mut at = (hash(self.text(e)) as usize) & mask;
            while slots[at] != 0 {
                at = (at + 1) & mask;
            }
            slots[at] = e as u32 + 1;
        }
        self.slots = slots;
    }
}

/// FxHash-style multiply-rotate over 8-byte words, with a final avalanche so the low bits
/// (used for the slot index) depend on every input byte.
fn hash(s: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = s.len() as u64;
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    h ^= h >> 32;
    h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^ (h >> 29)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_and_first_wins() {
        let mut t = StrTable::with_capacity(2);
        for i in 0..1000u32 {
            assert_eq!(t.insert(format!("s{i}").as_bytes(), i), None);
        }
        assert_eq!(t.insert(b"s5", 77), Some(5));
        for i in 0..1000u32 {
            assert_eq!(t.get(format!("s{i}").as_bytes()), Some(i));
            assert_eq!(t.text(i as usize), format!("s{i}").as_bytes());
        }
        assert_eq!(t.get(b"s1000"), None);
        assert_eq!(t.get(b""), None);
        assert_eq!(t.insert(b"", 9), None);
        assert_eq!(t.get(b""), Some(9));
    }
}
