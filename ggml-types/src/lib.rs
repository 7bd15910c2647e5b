//! ggml's tensor element types, with their GGUF ids, names and block geometry, stated once in
//! one table: everything else (the GGUF reader's checks, the kernels' block structs and their
//! dispatch tables, the quantizer's choices) is derived from it. No arithmetic lives here, so that
//! a file-format reader can know the types without the kernels.

/// Elements per super-block of the k-quants.
pub const QK_K: usize = 256;

macro_rules! ggml_types {
    ($($(#[$doc:meta])* $name:ident = $id:literal, $block:expr, $bytes:expr;)*) => {
        /// A ggml tensor type. The discriminant is the id stored in GGUF tensor infos.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u32)]
        #[allow(non_camel_case_types)]
        pub enum GgmlType {
            $($(#[$doc])* $name = $id,)*
        }

        impl GgmlType {
            /// Every type, in table order ([`GgmlType::index`] is the position here).
            pub const ALL: [GgmlType; [$($id),*].len()] = [$(GgmlType::$name),*];

            /// The type with GGUF id `id`, or `None` for ids not implemented here.
            pub fn from_id(id: u32) -> Option<Self> {
                match id {
                    $($id => Some(GgmlType::$name),)*
                    _ => None,
                }
            }

            /// The name ggml and llama.cpp print for this type.
            pub fn name(self) -> &'static str {
                match self {
                    $(GgmlType::$name => stringify!($name),)*
                }
            }

            /// Elements per block: a row's length must be a multiple of it.
            pub const fn block_size(self) -> usize {
                match self {
                    $(GgmlType::$name => $block,)*
                }
            }

            /// Bytes per block. `const` so that block structs can be checked against it at
            /// compile time.
            pub const fn type_size(self) -> usize {
                match self {
                    $(GgmlType::$name => $bytes,)*
                }
            }
        }
    };
}

ggml_types! {
    F32 = 0, 1, 4;
    F16 = 1, 1, 2;
    /// 32 weights: f16 scale, 16 bytes of nibbles.
    Q4_0 = 2, 32, 2 + 16;
    /// 32 weights: f16 scale and minimum, 16 bytes of nibbles.
    Q4_1 = 3, 32, 2 + 2 + 16;
    /// 32 weights: f16 scale, 4 bytes of fifth bits, 16 bytes of nibbles.
    Q5_0 = 6, 32, 2 + 4 + 16;
    /// 32 weights: f16 scale and minimum, fifth bits, nibbles.
    Q5_1 = 7, 32, 2 + 2 + 4 + 16;
    /// 32 values: f16 scale, 32 signed bytes.
    Q8_0 = 8, 32, 2 + 32;
    /// 32 values: f16 scale and scaled sum, 32 signed bytes (activations only).
    Q8_1 = 9, 32, 2 + 2 + 32;
    Q2_K = 10, QK_K, QK_K / 16 + QK_K / 4 + 2 + 2;
    Q3_K = 11, QK_K, QK_K / 8 + QK_K / 4 + 12 + 2;
    Q4_K = 12, QK_K, 2 + 2 + 12 + QK_K / 2;
    Q5_K = 13, QK_K, 2 + 2 + 12 + QK_K / 8 + QK_K / 2;
    Q6_K = 14, QK_K, QK_K / 2 + QK_K / 4 + QK_K / 16 + 2;
    /// 256 values: f32 scale, signed bytes, sums of 16 (activations only).
    Q8_K = 15, QK_K, 4 + QK_K + QK_K / 16 * 2;
    BF16 = 30, 1, 2;
}

/// The largest id in the table, for tables indexed by id.
const MAX_ID: usize = 30;

/// [`GgmlType::index`] by id, built at compile time from [`GgmlType::ALL`].
const INDEX_BY_ID: [u8; MAX_ID + 1] = {
    let mut table = [u8::MAX; MAX_ID + 1];
    let mut i = 0;
    while i < GgmlType::ALL.len() {
        table[GgmlType::ALL[i] as usize] = i as u8;
        i += 1;
    }
    table
};

impl GgmlType {
    /// The type's position in [`GgmlType::ALL`]: an index for per-type tables (one load, for the
    /// dispatch of every dot product).
    #[inline]
    pub const fn index(self) -> usize {
        INDEX_BY_ID[self as usize] as usize
    }

    /// Bytes of a row of `n` elements, or `None` when `n` is not a whole number of blocks or the
    /// size overflows.
    pub fn row_size(self, n: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if !n.is_multiple_of(bs) {
            return None;
        }
        (n / bs).checked_mul(self.type_size() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_names_and_indexes_agree() {
        for (i, ty) in GgmlType::ALL.into_iter().enumerate() {
            assert_eq!(ty.index(), i);
            assert_eq!(GgmlType::from_id(ty as u32), Some(ty));
            assert!(ty as usize <= MAX_ID);
        }
        assert_eq!(GgmlType::Q4_K.name(), "Q4_K");
        assert_eq!(GgmlType::from_id(4), None);
        assert_eq!(GgmlType::Q6_K.type_size(), 210);
        assert_eq!(GgmlType::Q4_K.row_size(512), Some(288));
        assert_eq!(GgmlType::Q4_K.row_size(100), None);
    }
}
