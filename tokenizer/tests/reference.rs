//! The tokenizers against llama.cpp's own token ids.
//!
//! `tests/fixtures/*-tokens.jsonl` are the `id`, `text` and `prompt_tokens` of
//! the reference fixtures' `reference*.jsonl` (llama.cpp 0c1e570's `llama_tokenize` with add_special
//! and parse_special, as its CLI tokenizes a prompt). The models come from the directory in
//! `LLAMAFILE_TEST_MODELS` (`testmodels`).

use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use tokenizer::{Tokenizer, Utf8Stream};

fn load(path: &Path) -> Tokenizer {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // SAFETY: the test models are not modified while the tests run.
    let map =
        unsafe { memmap2::Mmap::map(&file) }.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let g = gguf::Gguf::parse(&map).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Tokenizer::from_gguf(&g).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn qwen() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| load(&testmodels::model("qwen.gguf")))
}

fn gemma() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| load(&testmodels::model("gemma.gguf")))
}

/// The vocabulary is the same in every llama-synth file; Q2_K is the smallest.
fn synth() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| load(&testmodels::llama_synth("Q2_K")))
}

fn fixture(name: &str) -> Vec<(String, String, Vec<u32>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let ids = v["prompt_tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            (
                v["id"].as_str().unwrap().to_owned(),
                v["text"].as_str().unwrap().to_owned(),
                ids,
            )
        })
        .collect()
}

fn check_fixture(tok: &Tokenizer, name: &str) {
    let cases = fixture(name);
    assert!(cases.len() >= 15, "{name}: only {} cases", cases.len());
    let mut bad = Vec::new();
    for (id, text, want) in &cases {
        let got = tok.encode(text, true, true);
        if &got != want {
            bad.push(format!("{id} {text:?}\n  want {want:?}\n  got  {got:?}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{name}: {} of {} differ:\n{}",
        bad.len(),
        cases.len(),
        bad.join("\n")
    );
}

#[test]
fn qwen_matches_llama_cpp() {
    check_fixture(qwen(), "qwen-tokens.jsonl");
}

#[test]
fn gemma_matches_llama_cpp() {
    check_fixture(gemma(), "gemma-tokens.jsonl");
}

#[test]
fn llama_synth_matches_llama_cpp() {
    check_fixture(synth(), "llama-synth-tokens.jsonl");
}

// Texts chosen for the corners of the splitting and merging rules (whitespace runs around newlines,
// numbers longer than three digits, contraction case, combining marks, ZWJ emoji, non-ASCII spaces,
// special tokens of other models), with the ids llama.cpp 0c1e570 gives (`llama_tokenize`,
// add_special and parse_special).
const QWEN_TRICKY: &[(&str, &[u32])] = &[
    ("  \n\n  x", &[18611, 220, 856]),
    ("\n\n\n", &[1406]),
    ("a\r\n\r\nb", &[64, 871, 65]),
    (
        "1234567 89 0.5",
        &[16, 17, 18, 19, 20, 21, 22, 220, 23, 24, 220, 15, 13, 20],
    ),
    (
        "I'M y'ALL we'Re it's",
        &[40, 27603, 379, 6, 3919, 582, 49427, 432, 594],
    ),
    (
        "naïve café Ångström e\u{301}",
        &[3376, 37572, 586, 51950, 79252, 968, 495, 85584, 384, 53839],
    ),
    ("x  \t  y   ", &[87, 78099, 379, 262]),
    (
        "👨\u{200d}👩\u{200d}👧 🇯🇵",
        &[
            145367, 378, 235, 145233, 378, 235, 145665, 11162, 229, 107, 145516,
        ],
    ),
    (
        "<|im_start|>user\n<|im_end|>x",
        &[151644, 872, 198, 151645, 87],
    ),
    ("\u{a0}\u{3000}z", &[4102, 22441, 89]),
    (
        "don't\n\n\n    return  x;",
        &[15007, 944, 1406, 262, 470, 220, 856, 26],
    ),
    (
        "1,000,000.00€",
        &[16, 11, 15, 15, 15, 11, 15, 15, 15, 13, 15, 15, 15056],
    ),
    (" x", &[856]),
    ("   ", &[262]),
    (
        "<start_of_turn>user\nhi<end_of_turn>\n",
        &[
            27, 2468, 3575, 37274, 29, 872, 198, 6023, 27, 408, 3575, 37274, 397,
        ],
    ),
    (
        "<s>[INST] x [/INST]</s>",
        &[44047, 30768, 64462, 60, 856, 64928, 64462, 60, 128247],
    ),
    ("日本語 中文", &[101059, 102819, 72858, 16744]),
    (
        "ǅungla İ ß ﬁ",
        &[131, 227, 2185, 4260, 38421, 1683, 253, 32495, 70731],
    ),
];
const GEMMA_TRICKY: &[(&str, &[u32])] = &[
    ("  \n\n  x", &[2, 138, 108, 138, 236781]),
    ("\n\n\n", &[2, 109]),
    ("a\r\n\r\nb", &[2, 236746, 251, 107, 251, 107, 236763]),
    (
        "1234567 89 0.5",
        &[
            2, 236770, 236778, 236800, 236812, 236810, 236825, 236832, 236743, 236828, 236819,
            236743, 236771, 236761, 236810,
        ],
    ),
    (
        "I'M y'ALL we'Re it's",
        &[
            2, 236777, 236789, 236792, 570, 236789, 7602, 692, 236789, 1479, 625, 236789, 236751,
        ],
    ),
    (
        "naïve café Ångström e\u{301}",
        &[2, 1789, 238527, 560, 33443, 44667, 829, 80406, 545, 238288],
    ),
    ("x  \t  y   ", &[2, 236781, 138, 255968, 138, 236762, 139]),
    (
        "👨\u{200d}👩\u{200d}👧 🇯🇵",
        &[
            2, 243874, 237243, 243767, 237243, 244814, 236743, 247994, 245707,
        ],
    ),
    (
        "<|im_start|>user\n<|im_end|>x",
        &[
            2, 236820, 236909, 548, 236779, 3041, 111038, 2364, 107, 236820, 236909, 548, 236779,
            643, 111038, 236781,
        ],
    ),
    ("\u{a0}\u{3000}z", &[2, 432, 398, 465, 366, 366, 236802]),
    (
        "don't\n\n\n    return  x;",
        &[
            2, 13246, 236789, 236745, 109, 140, 2060, 138, 236781, 236793,
        ],
    ),
    (
        "1,000,000.00€",
        &[
            2, 236770, 236764, 236771, 236771, 236771, 236764, 236771, 236771, 236771, 236761,
            236771, 236771, 237762,
        ],
    ),
    (" x", &[2, 1123]),
    ("   ", &[2, 139]),
    (
        "<start_of_turn>user\nhi<end_of_turn>\n",
        &[2, 105, 2364, 107, 2202, 106, 107],
    ),
    (
        "<s>[INST] x [/INST]</s>",
        &[
            2, 203, 236840, 34177, 236842, 1123, 181016, 34177, 236842, 212,
        ],
    ),
    ("日本語 中文", &[2, 94951, 17346, 237364]),
    (
        "ǅungla İ ß ﬁ",
        &[2, 437, 371, 1228, 2149, 11732, 114881, 97940],
    ),
];
const SYNTH_TRICKY: &[(&str, &[u32])] = &[
    (
        "  \n\n  x",
        &[
            1, 229, 153, 132, 229, 153, 132, 229, 153, 132, 13, 13, 229, 153, 132, 888,
        ],
    ),
    ("\n\n\n", &[1, 229, 153, 132, 13, 13, 13]),
    ("a\r\n\r\nb", &[1, 261, 16, 13, 16, 13, 101]),
    (
        "1234567 89 0.5",
        &[
            1, 229, 153, 132, 52, 53, 54, 55, 56, 57, 58, 229, 153, 132, 59, 60, 229, 153, 132, 51,
            49, 56,
        ],
    ),
    (
        "I'M y'ALL we'Re it's",
        &[1, 329, 42, 80, 335, 42, 7367, 457, 42, 1244, 390, 42, 118],
    ),
    (
        "naïve café Ångström e\u{301}",
        &[
            1, 1549, 198, 178, 325, 1911, 105, 198, 172, 229, 153, 132, 198, 136, 594, 1479, 198,
            185, 112, 310, 207, 132,
        ],
    ),
    (
        "x  \t  y   ",
        &[
            1, 888, 229, 153, 132, 229, 153, 132, 12, 229, 153, 132, 335, 229, 153, 132, 229, 153,
            132, 229, 153, 132,
        ],
    ),
    (
        "👨\u{200d}👩\u{200d}👧 🇯🇵",
        &[
            1, 229, 153, 132, 243, 162, 148, 171, 229, 131, 144, 243, 162, 148, 172, 229, 131, 144,
            243, 162, 148, 170, 229, 153, 132, 243, 162, 138, 178, 243, 162, 138, 184,
        ],
    ),
    (
        "<|im_start|>user\n<|im_end|>x",
        &[
            1, 420, 127, 313, 98, 2806, 127, 65, 2129, 13, 63, 127, 313, 98, 408, 127, 65, 123,
        ],
    ),
    (
        "\u{a0}\u{3000}z",
        &[1, 229, 153, 132, 197, 163, 230, 131, 131, 125],
    ),
    (
        "don't\n\n\n    return  x;",
        &[
            1, 1302, 42, 119, 13, 13, 13, 229, 153, 132, 229, 153, 132, 229, 153, 132, 759, 229,
            153, 132, 888, 62,
        ],
    ),
    (
        "1,000,000.00€",
        &[
            1, 229, 153, 132, 52, 47, 51, 51, 51, 47, 51, 51, 51, 49, 51, 51, 229, 133, 175,
        ],
    ),
    (" x", &[1, 229, 153, 132, 888]),
    (
        "   ",
        &[
            1, 229, 153, 132, 229, 153, 132, 229, 153, 132, 229, 153, 132,
        ],
    ),
    (
        "<start_of_turn>user\nhi<end_of_turn>\n",
        &[
            1, 420, 2806, 98, 1105, 98, 652, 65, 2129, 13, 1967, 63, 408, 98, 1105, 98, 652, 65, 13,
        ],
    ),
    (
        "<s>[INST] x [/INST]</s>",
        &[1, 1, 635, 969, 1158, 96, 888, 635, 50, 969, 1158, 96, 2],
    ),
    (
        "日本語 中文",
        &[
            1, 229, 153, 132, 233, 154, 168, 233, 159, 175, 235, 173, 161, 229, 153, 132, 231, 187,
            176, 233, 153, 138,
        ],
    ),
    (
        "ǅungla İ ß ﬁ",
        &[
            1, 229, 153, 132, 202, 136, 993, 1914, 229, 153, 132, 199, 179, 229, 153, 132, 198,
            162, 229, 153, 132, 242, 175, 132,
        ],
    ),
];

#[test]
fn tricky_texts_match_llama_cpp() {
    for (name, tok, cases) in [
        ("qwen", qwen(), QWEN_TRICKY),
        ("gemma", gemma(), GEMMA_TRICKY),
        ("llama-synth", synth(), SYNTH_TRICKY),
    ] {
        for (text, want) in cases {
            assert_eq!(&tok.encode(text, true, true), want, "{name}: {text:?}");
        }
    }
}

fn decode(tok: &Tokenizer, ids: &[u32]) -> Vec<u8> {
    ids.iter()
        .flat_map(|&id| tok.token_to_piece(id, false))
        .collect()
}

/// llama-synth has no "▁" token: a space that merges with nothing falls back to the three byte
/// tokens of U+2581 and so decodes to "▁" (as in llama.cpp); the texts here contain no "▁" of their own.
fn unescape(name: &str, bytes: Vec<u8>) -> Vec<u8> {
    if name != "llama-synth" {
        return bytes;
    }
    String::from_utf8(bytes)
        .unwrap()
        .replace('▁', " ")
        .into_bytes()
}

const ROUND_TRIP: &[&str] = &[
    "Hello, world! Ça va? Ünïcödé façade — naïve coöperation",
    "日本語のテキストと中文文本，한국어 텍스트도",
    "emoji 🦙🚀👍🏽 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵 keycap 1️⃣",
    "combining: e\u{301} a\u{308} n\u{303} Z\u{335}\u{31b}\u{33e}",
    "digits 1 12 123 1234 12345 1234567890 ٣٤٥ ½ ² 3.14159 1,000,000",
    "fn main() {\n\tlet x = vec![1, 2, 3];\n\tprintln!(\"{x:?}\");\n}\n\n\n",
    "    indented\n\t\ttabs\r\nwindows\rcarriage   trailing   ",
    "It's, I'm, you're, we've, they'll, he'd, DON'T, Y'ALL, 'tis",
    "  leading spaces and\u{a0}no-break\u{3000}ideographic\u{2003}em",
    "<html><body class=\"x\">&amp;&lt;</body></html> a<b>c",
    "\u{0}\u{1}\u{7f} control \u{200b}zero width\u{feff}",
    "Ελληνικά русский עברית العربية हिन्दी ไทย",
];

#[test]
fn round_trips() {
    for (name, tok, prefix) in [
        ("qwen", qwen(), ""),
        ("gemma", gemma(), ""),
        ("llama-synth", synth(), " "),
    ] {
        for text in ROUND_TRIP {
            let ids = tok.encode(text, false, false);
            assert!(!ids.is_empty());
            let back = unescape(name, decode(tok, &ids));
            let want = format!("{prefix}{text}");
            assert_eq!(
                String::from_utf8_lossy(&back),
                want,
                "{name}: {text:?} -> {ids:?}"
            );
            // streamed in token-sized pieces it is the same text
            let mut s = Utf8Stream::new();
            let mut streamed = String::new();
            for &id in &ids {
                streamed += &s.push(&tok.token_to_piece(id, false));
            }
            streamed += &s.finish();
            assert_eq!(
                streamed.as_bytes(),
                decode(tok, &ids),
                "{name}: streamed {text:?}"
            );
        }
    }
}

#[test]
fn special_tokens() {
    let q = qwen();
    assert_eq!(q.bos(), Some(151643));
    assert_eq!(q.eos(), Some(151645));
    assert!(!q.add_bos());
    assert_eq!(q.n_vocab(), 151936);
    let im_start = q.encode("<|im_start|>", false, true);
    assert_eq!(im_start, [151644]);
    // not parsed: the text is tokenized as text
    assert!(q.encode("<|im_start|>", false, false).len() > 1);
    assert_eq!(q.token_to_piece(151644, false), b"");
    assert_eq!(q.token_to_piece(151644, true), b"<|im_start|>");
    assert_eq!(q.token_text(151644), b"<|im_start|>");
    for t in [
        "<|im_end|>",
        "<|endoftext|>",
        "<|fim_pad|>",
        "<|repo_name|>",
        "<|file_sep|>",
    ] {
        let ids = q.encode(t, false, true);
        assert_eq!(ids.len(), 1, "{t}");
        assert!(q.is_eog(ids[0]), "{t}");
    }
    assert!(!q.is_eog(151644));
    assert!(!q.is_eog(9707));
    assert!(!q.is_eog(u32::MAX));
    assert_eq!(q.token_to_piece(u32::MAX, true), b"");
    assert_eq!(q.token_text(u32::MAX), b"");

    let g = gemma();
    assert_eq!((g.bos(), g.eos(), g.add_bos()), (Some(2), Some(1), true));
    assert_eq!(g.encode("", true, true), [2]);
    assert_eq!(g.encode("", false, true), Vec::<u32>::new());
    let eot = g.encode("<end_of_turn>", false, true);
    assert_eq!(eot, [106]);
    assert!(g.is_eog(106) && g.is_eog(1));
    assert!(!g.is_eog(105));
    // a literal "<bos>" becomes a second BOS, as in llama.cpp (the runtime drops the doubled one)
    assert_eq!(g.encode("<bos>hi", true, true)[..2], [2, 2]);

    let s = synth();
    assert_eq!((s.bos(), s.eos(), s.add_bos()), (Some(1), Some(2), true));
    assert_eq!(s.encode("<s>", true, true), [1, 1]);
    assert!(s.is_eog(2));
    // byte-fallback tokens give their byte
    assert_eq!(s.token_to_piece(3 + 0xE2, false), [0xE2]);
    // a space prefix goes to every text fragment after a special token
    let after = s.encode("</s>x", false, true);
    assert_eq!(after[0], 2);
    assert_eq!(decode(s, &after[1..]), b" x");
}

#[test]
fn encodes_16k_of_text_fast() {
    let text =
        std::fs::read_to_string(testmodels::reference_fixtures().join("perplexity-text.txt"))
            .unwrap();
    for (name, tok) in [
        ("qwen", qwen()),
        ("gemma", gemma()),
        ("llama-synth", synth()),
    ] {
        let ids = tok.encode(&text, true, false);
        let t = Instant::now();
        let again = tok.encode(&text, true, false);
        let dt = t.elapsed();
        assert_eq!(ids, again);
        println!(
            "{name}: {} bytes -> {} tokens in {dt:?}",
            text.len(),
            ids.len()
        );
        // generous: the point is catching quadratic behaviour, not timing a shared machine
        assert!(dt.as_millis() < 1000, "{name}: {dt:?}");
        let back = unescape(name, decode(tok, &ids[usize::from(tok.add_bos())..]));
        let prefix = if name == "llama-synth" { " " } else { "" };
        assert!(
            back == format!("{prefix}{text}").as_bytes(),
            "{name}: no round trip"
        );
    }
}
