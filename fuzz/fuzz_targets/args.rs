//! See `runtime::fuzzing::args`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| runtime::fuzzing::args(data));
