//! See `runtime::fuzzing::chat_template`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| runtime::fuzzing::chat_template(data));
