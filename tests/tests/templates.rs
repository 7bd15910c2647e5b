//! The chat template a model without `tokenizer.chat_template` is chatted with: its family's, as
//! llama.cpp falls back (a Gemma GGUF gets Gemma's turns, not ChatML's).

use e2e::{GgufFile, Meta};
use runtime::chat_template::ChatTemplate;
use runtime::messages::ChatMessage;

fn rendered_for(architecture: &str) -> String {
    let mut file = GgufFile::tiny_llama();
    *file.meta("general.architecture") = Meta::Str(architecture.into());
    let bytes = file.bytes();
    let g = gguf::Gguf::parse(&bytes).expect("the tiny model parses");
    let tokenizer = tokenizer::Tokenizer::from_gguf(&g).expect("its vocabulary loads");
    let template = ChatTemplate::for_model(&tokenizer, &g, None).expect("a template");
    template
        .render(&[ChatMessage::new("user", "hi")], true)
        .expect("it renders")
}

#[test]
fn models_without_a_template_get_their_familys() {
    for arch in ["gemma", "gemma2", "gemma3"] {
        assert_eq!(
            rendered_for(arch),
            "<s><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n",
            "{arch}"
        );
    }
    for arch in ["llama", "qwen2"] {
        assert_eq!(
            rendered_for(arch),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
            "{arch}"
        );
    }
}
