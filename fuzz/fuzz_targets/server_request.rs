//! See `runtime::fuzzing::server_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| runtime::fuzzing::server_request(data));
