//! The pre-tokenizers that no test model uses, run over Qwen2.5's real vocabulary and merges by
//! overriding `tokenizer.ggml.pre`, against the ids llama.cpp 0c1e570 gives for the same vocabulary
//! with that `tokenizer.ggml.pre` (a copy of qwen.gguf's metadata with the key changed, tokenized by
//! `llama_tokenize` with add_special and parse_special).

use super::Tokenizer;

const VARIANT_TEXTS: &[&str] = &[
    "1234567 89 0.5",
    "I'M y'ALL we'Re it's",
    "x  \t  y   ",
    "  \n\n  x",
    "a\r\n\r\nb",
    "e\u{301} naïve \u{301}x",
    "1,000,000.00€ $x+=1; a<=b`c`",
    "don't\n\n\n    return  x;",
    "<|im_start|>hi ٣٤٥ ½²",
    " ..\n\n!? ",
    "\u{a0}\u{3000}z 日本語",
];

/// (`tokenizer.ggml.pre`, llama.cpp's ids for each of [`VARIANT_TEXTS`]).
const VARIANT_IDS: &[(&str, &[&[u32]])] = &[
    (
        "llama-bpe",
        &[
            &[16, 17, 18, 19, 20, 21, 22, 220, 23, 24, 220, 15, 13, 20],
            &[40, 27603, 379, 6, 3919, 582, 49427, 432, 594],
            &[87, 78099, 379, 262],
            &[18611, 220, 856],
            &[64, 871, 65],
            &[68, 53839, 94880, 586, 220, 53839, 87],
            &[
                16, 11, 15, 15, 15, 11, 15, 15, 15, 13, 15, 15, 15056, 400, 87, 8496, 16, 26, 264,
                8203, 65, 63, 66, 63,
            ],
            &[15007, 944, 1406, 262, 470, 220, 856, 26],
            &[
                151644, 6023, 220, 149, 96, 149, 97, 149, 98, 220, 26062, 29456,
            ],
            &[59482, 57390, 220],
            &[4102, 22441, 89, 75402, 21894, 102819],
        ],
    ),
    (
        "gpt-2",
        &[
            &[16, 17, 18, 19, 20, 21, 22, 220, 23, 24, 220, 15, 13, 20],
            &[40, 6, 44, 379, 6, 3919, 582, 6, 693, 432, 594],
            &[87, 78099, 379, 262],
            &[18611, 220, 856],
            &[64, 319, 201, 198, 65],
            &[68, 53839, 94880, 586, 220, 53839, 87],
            &[
                16, 11, 15, 15, 15, 11, 15, 15, 15, 13, 15, 15, 15056, 400, 87, 8496, 16, 26, 264,
                8203, 65, 63, 66, 63,
            ],
            &[15007, 944, 1406, 262, 470, 220, 856, 26],
            &[
                151644, 6023, 220, 149, 96, 149, 97, 149, 98, 2139, 121, 29456,
            ],
            &[5241, 198, 198, 57390, 220],
            &[4102, 22441, 89, 75402, 21894, 102819],
        ],
    ),
    (
        "default",
        &[
            &[16, 17, 18, 19, 20, 21, 22, 220, 23, 24, 220, 15, 13, 20],
            &[40, 6, 44, 379, 6, 3919, 582, 6, 693, 432, 6, 82],
            &[87, 78099, 379, 262],
            &[18611, 220, 856],
            &[64, 319, 201, 198, 65],
            &[68, 53839, 94880, 586, 220, 53839, 87],
            &[
                16, 11, 15, 15, 15, 11, 15, 15, 15, 13, 15, 15, 15056, 220, 3, 87, 8496, 16, 26,
                264, 8203, 65, 63, 66, 63,
            ],
            &[15007, 6, 83, 1406, 262, 470, 220, 856, 26],
            &[
                151644, 6023, 220, 149, 96, 149, 97, 149, 98, 220, 26062, 29456,
            ],
            &[220, 496, 271, 57390, 220],
            &[4102, 22441, 89, 75402, 21894, 102819],
        ],
    ),
    (
        "qwen35",
        &[
            &[16, 17, 18, 19, 20, 21, 22, 220, 23, 24, 220, 15, 13, 20],
            &[40, 27603, 379, 6, 3919, 582, 49427, 432, 594],
            &[87, 78099, 379, 262],
            &[18611, 220, 856],
            &[64, 871, 65],
            &[68, 53839, 94880, 586, 220, 53839, 87],
            &[
                16, 11, 15, 15, 15, 11, 15, 15, 15, 13, 15, 15, 15056, 400, 87, 8496, 16, 26, 264,
                8203, 65, 63, 66, 63,
            ],
            &[15007, 944, 1406, 262, 470, 220, 856, 26],
            &[
                151644, 6023, 220, 149, 96, 149, 97, 149, 98, 220, 26062, 29456,
            ],
            &[59482, 57390, 220],
            &[4102, 22441, 89, 75402, 21894, 102819],
        ],
    ),
];

#[test]
fn pre_tokenizers_match_llama_cpp_on_qwen_vocabulary() {
    let dir = std::env::var_os("LLAMAFILE_TEST_MODELS").unwrap_or_else(|| {
        panic!(
            "LLAMAFILE_TEST_MODELS is not set: run `cargo xtask fetch-models` and point it at the \
             directory holding qwen.gguf and gemma.gguf"
        )
    });
    let path = std::path::Path::new(&dir).join("qwen.gguf");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // SAFETY: the test model is not modified while the tests run.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    let g = gguf::Gguf::parse(&map).unwrap();
    for (pre, want) in VARIANT_IDS {
        let tok = Tokenizer::build(&g, Some(pre.as_bytes())).unwrap();
        for (text, want) in VARIANT_TEXTS.iter().zip(want.iter()) {
            assert_eq!(&tok.encode(text, true, true), want, "pre {pre}: {text:?}");
        }
    }
    assert!(matches!(
        Tokenizer::build(&g, Some(b"gpt2")),
        Err(super::TokenizerError::UnsupportedPreTokenizer(p)) if p == "gpt2"
    ));
}
