//! The token list with llama.cpp's per-token attributes.

use crate::table::StrTable;

/// llama.cpp's `llama_token_attr` bits (the ones tokenization reads).
pub(crate) mod attr {
    pub(crate) const UNKNOWN: u16 = 1 << 0;
    pub(crate) const UNUSED: u16 = 1 << 1;
    pub(crate) const NORMAL: u16 = 1 << 2;
    pub(crate) const CONTROL: u16 = 1 << 3;
    pub(crate) const USER_DEFINED: u16 = 1 << 4;
    pub(crate) const BYTE: u16 = 1 << 5;
    pub(crate) const LSTRIP: u16 = 1 << 7;
    pub(crate) const RSTRIP: u16 = 1 << 8;

    /// The attribute of a `tokenizer.ggml.token_type` value (llama.cpp's `LLAMA_TOKEN_TYPE_*`);
    /// unknown values are "undefined", an attribute of none of these bits.
    pub(crate) fn from_token_type(t: i32) -> u16 {
        match t {
            1 => NORMAL,
            2 => UNKNOWN,
            3 => CONTROL,
            4 => USER_DEFINED,
            5 => UNUSED,
            6 => BYTE,
            _ => 0,
        }
    }
}

/// Token texts (id = position), scores and attributes.
pub(crate) struct Vocab {
    pub(crate) texts: StrTable,
    pub(crate) scores: Vec<f32>,
    pub(crate) attrs: Vec<u16>,
}

impl Vocab {
    pub(crate) fn len(&self) -> usize {
        self.attrs.len()
    }

    pub(crate) fn id(&self, text: &[u8]) -> Option<u32> {
        self.texts.get(text)
    }

    pub(crate) fn text(&self, id: u32) -> &[u8] {
        self.texts.text(id as usize)
    }

    pub(crate) fn score(&self, id: u32) -> f32 {
        self.scores[id as usize]
    }

    pub(crate) fn attr(&self, id: u32) -> u16 {
        self.attrs[id as usize]
    }
}
