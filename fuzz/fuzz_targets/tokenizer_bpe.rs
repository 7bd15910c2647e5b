//! See `runtime::fuzzing::tokenizer`, over the vocabulary `cargo xtask fuzz` derives into
//! `target/fuzz-vocab/bpe.gguf` (metadata only).
#![no_main]

use std::sync::OnceLock;

use tokenizer::Tokenizer;

fn vocab() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/fuzz-vocab/bpe.gguf");
        let bytes = std::fs::read(path)
            .unwrap_or_else(|e| panic!("{path}: {e} (run `cargo xtask fuzz`, which derives it)"));
        let g = gguf::Gguf::parse(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"));
        Tokenizer::from_gguf(&g).unwrap_or_else(|e| panic!("{path}: {e}"))
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    runtime::fuzzing::tokenizer(vocab(), data, runtime::fuzzing::bpe_round_trip)
});
