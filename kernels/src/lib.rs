//! ggml's tensor element types and the arithmetic on them.
//!
//! Block layouts are stated once, in [`GgmlType`] and the `formats` module, and used everywhere else.

mod ggml_type;

pub use ggml_type::GgmlType;
