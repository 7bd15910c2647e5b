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
    /// Entry index + 1 in the low bits, hash bits above them (`tag_mask`); 0 marks an empty slot.
    /// Kept at most half full.
    slots: Vec<u32>,
    /// The slot bits that hold hash bits: those not needed for the entry indices.
    tag_mask: u32,
}

impl StrTable {
    fn with_capacity(n: usize) -> StrTable {
        let n_slots = (n.max(8) * 2).next_power_of_two();
        // Written, not `vec![0; ..]`: that memory would come from calloc, not yet backed, and
        // [`StrTable::build`]'s reads would map the shared zero page, which each first write
        // then replaces at the cost of a TLB shootdown across every thread of the process
        // (one interrupt per page, an exit to the hypervisor in a VM).
        #[allow(clippy::slow_vector_initialization)]
        let slots = {
            let mut slots = Vec::with_capacity(n_slots);
            slots.resize(n_slots, 0);
            slots
        };
        StrTable {
            buf: Vec::new(),
            ends: Vec::with_capacity(n),
            values: Vec::with_capacity(n),
            slots,
            // Slots hold indices + 1 up to n.
            tag_mask: u32::MAX
                .checked_shl(usize::BITS - n.leading_zeros())
                .unwrap_or(0),
        }
    }

    /// The `i`-th distinct string stored.
    pub(crate) fn text(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.buf[start..self.ends[i]]
    }

    /// A table of `strings`, each with its index as value. A string equal to an earlier one is not
    /// stored again; the first such repeat is returned as `(its index, the earlier one's)`.
    ///
    /// Built in batches whose slots are all read before any is written: those reads do not depend
    /// on one another, so their cache misses overlap instead of costing one at a time (vocabularies
    /// of 150–260 k strings otherwise take tens of milliseconds of time to first token here).
    pub(crate) fn build(strings: &[&[u8]]) -> (StrTable, Option<(u32, u32)>) {
        const BATCH: usize = 16;
        let mut table = StrTable::with_capacity(strings.len());
        table
            .buf
            .reserve_exact(strings.iter().map(|s| s.len()).sum());
        let mask = table.slots.len() - 1;
        let mut repeat = None;
        for (b, batch) in strings.chunks(BATCH).enumerate() {
            let mut hashes = [0u64; BATCH];
            for (h, s) in hashes.iter_mut().zip(batch) {
                *h = hash(s);
            }
            // Apart from the hashing: its branches, mispredicted on varying lengths, would cancel
            // the loads issued after them.
            let mut touched = 0u32;
            for h in hashes {
                touched |= table.slots[h as usize & mask];
            }
            std::hint::black_box(touched);
            for (i, (s, h)) in batch.iter().zip(hashes).enumerate() {
                let index = (b * BATCH + i) as u32;
                if let Some(first) = table.insert_hashed(s, h, index) {
                    repeat.get_or_insert((index, first));
                }
            }
        }
        (table, repeat)
    }

    /// Stores `s` with `value` unless it is already there; then returns the value stored first.
    fn insert_hashed(&mut self, s: &[u8], hash: u64, value: u32) -> Option<u32> {
        debug_assert!(
            (self.ends.len() + 1) * 2 <= self.slots.len(),
            "sized by build"
        );
        match self.find(s, hash) {
            Ok(e) => Some(self.values[e]),
            Err(at) => {
                self.buf.extend_from_slice(s);
                self.ends.push(self.buf.len());
                self.values.push(value);
                self.slots[at] = self.tag(hash) | self.ends.len() as u32;
                None
            }
        }
    }

    pub(crate) fn get(&self, s: &[u8]) -> Option<u32> {
        self.find(s, hash(s)).ok().map(|e| self.values[e])
    }

    /// A string's hash bits for its slot: taken from the top, which the slot index does not use.
    fn tag(&self, hash: u64) -> u32 {
        (hash >> 32) as u32 & self.tag_mask
    }

    /// The entry holding `s`, or else the empty slot where it would go.
    fn find(&self, s: &[u8], hash: u64) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let mut at = hash as usize & mask;
        loop {
            match self.slots[at] {
                0 => return Err(at),
                slot => {
                    // The tag first: another string's text is then almost never read.
                    let e = (slot & !self.tag_mask) as usize - 1;
                    if slot & self.tag_mask == self.tag(hash) && self.text(e) == s {
                        return Ok(e);
                    }
                }
            }
            at = (at + 1) & mask;
        }
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
    fn build_matches_inserts_and_reports_the_first_repeat() {
        let texts: Vec<String> = (0..1000).map(|i| format!("s{}", i % 700)).collect();
        let strings: Vec<&[u8]> = texts.iter().map(|s| s.as_bytes()).collect();
        let (t, repeat) = StrTable::build(&strings);
        assert_eq!(repeat, Some((700, 0)));
        for i in 0..700u32 {
            assert_eq!(t.get(format!("s{i}").as_bytes()), Some(i));
            assert_eq!(t.text(i as usize), format!("s{i}").as_bytes());
        }
        assert_eq!(t.get(b"s700"), None);
        assert_eq!(StrTable::build(&strings[..700]).1, None);
        let (t, repeat) = StrTable::build(&[b"", b"a", b""]);
        assert_eq!(
            (t.get(b""), t.get(b"a"), repeat),
            (Some(0), Some(1), Some((2, 0)))
        );
    }
}
