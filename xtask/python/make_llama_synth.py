#!/usr/bin/env python3
"""Make a small, deterministic llama-architecture GGUF ("llama-synth") shaped like Mistral 7B Instruct v0.2:
GQA (8 query heads : 2 kv heads), SPM tokenizer with Llama/Mistral id layout (<unk>, <s>, </s>, 256 byte tokens,
then pieces), add_space_prefix, BOS added, rope base 1e6, the Mistral v0.2 chat template.
Pieces and scores come from the Gemma 3 SPM vocabulary. Weights are random (numpy seed 7), F32.
usage: make_llama_synth.py GEMMA_GGUF OUT_F32_GGUF

This is the program llama.cpp's reference outputs (tests/fixtures/reference) were computed from, kept
as it was: `cargo xtask fetch-models` runs it with numpy and gguf from PyPI and checks that the file
has the sha256 listed in tests/fixtures/reference/llama-synth/SHA256SUMS. Any change to its output
invalidates every llama-synth fixture."""
import sys
import numpy as np
from gguf import GGUFReader, GGUFWriter, TokenType

MISTRAL_TEMPLATE = ("{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")

def main(src, out):
    r = GGUFReader(src)
    f = r.fields
    toks, types, scores = f['tokenizer.ggml.tokens'], f['tokenizer.ggml.token_type'], f['tokenizer.ggml.scores']
    pieces = []
    seen = set()
    for i in range(len(toks.data)):
        if int(types.parts[types.data[i]][0]) != 1:
            continue
        p = bytes(toks.parts[toks.data[i]]).decode('utf-8')
        if p in seen or p == '':
            continue
        seen.add(p)
        pieces.append((p, float(scores.parts[scores.data[i]][0])))
        if len(pieces) >= 8000 - 259:
            break
    vocab = ['<unk>', '<s>', '</s>'] + ['<0x%02X>' % b for b in range(256)] + [p for p, _ in pieces]
    vscores = [0.0, 0.0, 0.0] + [0.0] * 256 + [s for _, s in pieces]
    vtypes = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * 256 + [TokenType.NORMAL] * len(pieces)
    n_vocab = len(vocab)

    n_embd, n_ff, n_layer, n_head, n_head_kv = 256, 768, 4, 8, 2
    hd = n_embd // n_head
    rng = np.random.default_rng(7)
    def w(rows, cols, std):
        return (rng.standard_normal((rows, cols)) * std).astype(np.float32)
    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    g = GGUFWriter(out, 'llama')
    g.add_name('llama-synth')
    g.add_context_length(2048)
    g.add_embedding_length(n_embd)
    g.add_block_count(n_layer)
    g.add_feed_forward_length(n_ff)
    g.add_rope_dimension_count(hd)
    g.add_head_count(n_head)
    g.add_head_count_kv(n_head_kv)
    g.add_layer_norm_rms_eps(1e-5)
    g.add_rope_freq_base(1e6)
    g.add_vocab_size(n_vocab)
    g.add_file_type(0)
    g.add_tokenizer_model('llama')
    g.add_tokenizer_pre('default')
    g.add_token_list(vocab)
    g.add_token_scores(vscores)
    g.add_token_types(vtypes)
    g.add_bos_token_id(1)
    g.add_eos_token_id(2)
    g.add_unk_token_id(0)
    g.add_add_bos_token(True)
    g.add_add_eos_token(False)
    g.add_add_space_prefix(True)
    g.add_chat_template(MISTRAL_TEMPLATE)

    g.add_tensor('token_embd.weight', w(n_vocab, n_embd, 1.0))
    for l in range(n_layer):
        p = f'blk.{l}.'
        g.add_tensor(p + 'attn_norm.weight', norm(n_embd))
        g.add_tensor(p + 'attn_q.weight', w(n_embd, n_embd, 0.25 / np.sqrt(n_embd) * 4))
        g.add_tensor(p + 'attn_k.weight', w(n_head_kv * hd, n_embd, 0.25 / np.sqrt(n_embd) * 4))
        g.add_tensor(p + 'attn_v.weight', w(n_head_kv * hd, n_embd, 1.0 / np.sqrt(n_embd)))
        g.add_tensor(p + 'attn_output.weight', w(n_embd, n_embd, 1.0 / np.sqrt(n_embd)))
        g.add_tensor(p + 'ffn_norm.weight', norm(n_embd))
        g.add_tensor(p + 'ffn_gate.weight', w(n_ff, n_embd, 1.0 / np.sqrt(n_embd)))
        g.add_tensor(p + 'ffn_up.weight', w(n_ff, n_embd, 1.0 / np.sqrt(n_embd)))
        g.add_tensor(p + 'ffn_down.weight', w(n_embd, n_ff, 1.0 / np.sqrt(n_ff)))
    g.add_tensor('output_norm.weight', norm(n_embd))
    g.add_tensor('output.weight', w(n_vocab, n_embd, 3.0 / np.sqrt(n_embd)))
    g.write_header_to_file()
    g.write_kv_data_to_file()
    g.write_tensors_to_file()
    g.close()
    print(out, n_vocab, 'tokens')

if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2])
