//! What the fuzz targets (`fuzz/`, `cargo xtask fuzz`) run, one function per target, so that the
//! regression tests replaying the inputs they found (`tests/tests/fuzz_regressions.rs`) call the
//! very same code without cargo-fuzz. Not an API: hidden from the documentation.
//!
//! Every function takes arbitrary bytes. An error returned for bad input is the expected outcome;
//! a panic, a hang, an abort or a broken invariant (checked with `assert!`) is a bug.

use gguf::{Gguf, Value};
use tokenizer::{Tokenizer, Utf8Stream};

use crate::chat_template::ChatTemplate;
use crate::constraint::ConstraintState;
use crate::messages::ChatMessage;
use crate::model::Model;
use crate::server::{llama_cpp, openai};

/// The GGUF reader and everything the runtime reads from a parsed file: every metadata value and
/// tensor info, the typed getters, the model's hyperparameters and tensors, the tokenizer.
pub fn gguf(data: &[u8]) {
    let Ok(g) = Gguf::parse(data) else { return };
    for (key, value) in &g.metadata {
        walk_value(value);
        let _ = (
            g.get_u32(key),
            g.get_i64(key),
            g.get_f32(key),
            g.get_str(key),
        );
        let _ = (g.get_bool(key), g.get_bytes(key), g.get_array(key));
    }
    for t in &g.tensors {
        let size =
            t.ty.row_size(t.cols())
                .and_then(|r| r.checked_mul(t.rows()));
        assert_eq!(size, Some(t.data.len() as u64), "tensor {:?}", t.name);
        assert!(t.n_elements() <= i64::MAX as u64);
    }
    let _ = g.architecture();
    let _ = Model::load(&g).map_err(|e| e.to_string());
    let _ = Tokenizer::from_gguf(&g).map_err(|e| e.to_string());
}

/// Reads every element of arrays (nested ones too), the way the tokenizer and the model do.
fn walk_value(v: &Value) {
    let _ = v.describe();
    if let Value::Array(a) = v {
        assert_eq!(a.iter().count(), a.len());
        let _ = (a.as_strings(), a.as_f32s(), a.as_i32s());
        for item in a.iter() {
            walk_value(&item);
        }
    }
}

/// The zip payload reader over a whole file's bytes: entries, the GGUF entry's rules, `.args`,
/// the manifest.
pub fn payload(data: &[u8]) {
    let _ = payload::fuzzing::read_all(data).map_err(|e| e.to_string());
}

/// The `.args` parser, then the flag parser on its words; what parses must survive quoting and
/// parsing again unchanged.
pub fn args(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(words) = payload::parse_args(text) else {
        return;
    };
    let quoted = payload::quote_args(&words);
    assert_eq!(
        payload::parse_args(&quoted).as_ref(),
        Ok(&words),
        "{quoted:?}"
    );
    // Whatever the words, the flag parser answers (a run, help, version or an error).
    let _ = crate::flags::parse(words);
}

/// A tokenizer over arbitrary text: ids inside the vocabulary, streaming detokenization equal to
/// decoding all at once, and the text back from the pieces of `encode(text)` (without special-token
/// parsing), as `round_trips(text, decoded)` judges it for the vocabulary's kind.
pub fn tokenizer(tok: &Tokenizer, data: &[u8], round_trips: impl Fn(&str, &str) -> bool) {
    let text = String::from_utf8_lossy(data);
    for (add_special, parse_special) in [(false, false), (true, true), (true, false)] {
        let ids = tok.encode(&text, add_special, parse_special);
        assert!(
            ids.iter().all(|&id| (id as usize) < tok.n_vocab()),
            "an id outside the vocabulary"
        );
        let mut stream = Utf8Stream::new();
        let mut streamed = String::new();
        let mut bytes = Vec::new();
        for &id in &ids {
            let piece = tok.token_to_piece(id, false);
            bytes.extend_from_slice(&piece);
            streamed.push_str(&stream.push(&piece));
        }
        streamed.push_str(&stream.finish());
        assert_eq!(streamed, String::from_utf8_lossy(&bytes));
        if !add_special && !parse_special {
            assert!(
                round_trips(&text, &String::from_utf8_lossy(&bytes)),
                "{text:?} came back as {:?}: ids {ids:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    // Ids straight from the input, inside the vocabulary or not.
    for chunk in data.chunks_exact(4) {
        let id = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let _ = (
            tok.token_to_piece(id, true),
            tok.token_text(id),
            tok.is_eog(id),
        );
    }
}

/// A byte-level BPE vocabulary gives back the text itself.
pub fn bpe_round_trip(text: &str, decoded: &str) -> bool {
    decoded == text
}

/// A SentencePiece vocabulary with byte fallback and a space prefix gives back the text with a
/// leading space. Spaces are encoded as U+2581, which comes back as a space when a piece holds
/// it, but as itself when it was spelled in byte tokens (as in llama.cpp), so the comparison
/// treats both as spaces.
pub fn spm_round_trip(text: &str, decoded: &str) -> bool {
    let spaces = |s: &str| s.replace('\u{2581}', " ");
    let want = if text.is_empty() {
        String::new()
    } else {
        format!(" {text}")
    };
    spaces(decoded) == spaces(&want)
}

/// A chat template from arbitrary source rendered over arbitrary messages. The input is split at
/// NUL bytes: the template, then role and content pairs; the first byte's low bit is
/// `add_generation_prompt`.
pub fn chat_template(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.split('\0');
    let source = parts.next().unwrap_or_default();
    let Ok(template) = ChatTemplate::from_source(source, "<s>", "</s>") else {
        return;
    };
    let parts: Vec<&str> = parts.collect();
    let messages: Vec<ChatMessage> = parts
        .chunks(2)
        .map(|p| ChatMessage::new(p[0], p.get(1).copied().unwrap_or_default()))
        .collect();
    let _ = template
        .render(&messages, flags & 1 != 0)
        .map_err(|e| e.to_string());
}

/// Every request body parser of the server, and the JSON-schema validator a request may carry,
/// fed with the body itself.
pub fn server_request(data: &[u8]) {
    let completions = |body: &[u8]| openai::completions::parse(body).map(|(req, _echo)| req);
    for parse in [openai::chat::parse, completions] {
        if let Ok(req) = parse(data) {
            if let Some(constraint) = req.params.constraint {
                let mut state = ConstraintState::new(constraint);
                for &b in data {
                    if !state.allows(&[b]) || !state.feed(&[b]) {
                        break;
                    }
                }
                let _ = (state.is_complete(), state.can_end());
            }
        }
    }
    let _ = openai::embeddings::parse(data).map(|r| r.inputs.len());
    let _ = llama_cpp::parse_tokenize(data).map(|r| r.text.len());
    let _ = llama_cpp::parse_detokenize(data);
    let _ = llama_cpp::parse_apply_template(data);
}
