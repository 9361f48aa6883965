#!/usr/bin/env python3
"""Independent reference for the SmolLM2 GGUF: tokenizer, chat template and greedy decoding.

Nothing here uses llama.cpp. The tokenizer is a from-scratch GPT-2 byte-level BPE built from
the GGUF's own vocabulary and merges, with the pre-tokenisation of the Hugging Face
tokenizer this GGUF was converted from (Digits(individual_digits) then the GPT-2 regex).
The model is a plain numpy llama forward pass over weights dequantised by the `gguf`
package (f32 throughout, so it differs from llama.cpp's quantised dot products only by
rounding). The chat template is rendered with jinja2 the way transformers'
`apply_chat_template` does.

Regenerate the fixture (takes a few minutes on one core):

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install numpy gguf regex jinja2
    /tmp/ref/bin/python ai-partition/reference/smollm2_reference.py \
        ~/.local/share/nexusos/models/smollm2/135m/SmolLM2-135M-Instruct.Q4_1.gguf \
        > ai-partition/tests/fixtures/smollm2_reference.json
"""

import hashlib
import json
import sys

import jinja2
import numpy as np
import regex
from gguf import GGUFReader
from gguf.quants import dequantize

# Texts whose token ids the Rust tokenizer must reproduce exactly.
TOKENIZER_CASES = [
    ("Hello, world!", False),
    ("The quick brown fox jumps over the lazy dog.", False),
    ("  leading spaces, trailing spaces   ", False),
    ("Numbers: 1234567890, 3.14159, -42 and 1e10.", False),
    ("Ünïcödé: café, naïve, Zürich; 日本語のテキスト; emoji 🦀🚀 and Ελληνικά.", False),
    ("def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n", False),
    ("fn main() {\n\tlet v: Vec<u32> = (0..10).collect();\n\tprintln!(\"{v:?}\");\n}", False),
    ("It's, we're, they've, I'm, you'll, he'd — quotes “like this”.", False),
    ("tabs\tand\nnewlines\r\n\nmixed   \n  ", False),
    ("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n", True),
    ("<|im_start|>user\nHi there<|im_end|>", False),
]

CHAT_CASES = [
    ([{"role": "user", "content": "What is the capital of France?"}], True),
    (
        [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Name a colour."},
        ],
        True,
    ),
    ([{"role": "user", "content": "Multi\nline\n\ncontent"}], False),
]

# Prompts for greedy continuation: (text, parse_special, tokens to generate).
GREEDY_CASES = [
    ("The capital of France is", False, 16),
    ("def fibonacci(n):\n", False, 16),
    (None, True, 16),  # the first chat case, rendered by the template
]


def bytes_to_unicode():
    """GPT-2's reversible byte <-> printable unicode mapping."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


GPT2_PATTERN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
DIGIT = regex.compile(r"\p{N}")


class BpeTokenizer:
    def __init__(self, tokens, token_types, merges):
        self.vocab = {t: i for i, t in enumerate(tokens)}
        self.tokens = tokens
        self.ranks = {tuple(m.split(" ", 1)): r for r, m in enumerate(merges)}
        self.byte_enc = bytes_to_unicode()
        self.byte_dec = {v: k for k, v in self.byte_enc.items()}
        # Control (3) and user-defined (4) tokens are "special": matched only when parsing specials.
        self.special = sorted((t for t, ty in zip(tokens, token_types) if ty in (3, 4)), key=len, reverse=True)
        self.cache = {}

    def bpe(self, word):
        if word in self.cache:
            return self.cache[word]
        parts = list(word)
        while len(parts) > 1:
            best = None
            for i in range(len(parts) - 1):
                r = self.ranks.get((parts[i], parts[i + 1]))
                if r is not None and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                break
            i = best[1]
            parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2 :]
        self.cache[word] = parts
        return parts

    def pretokenize(self, text):
        # Digits(individual_digits=True): every digit is its own piece, then the GPT-2 regex.
        pieces = []
        last = 0
        for m in DIGIT.finditer(text):
            if m.start() > last:
                pieces.append(text[last : m.start()])
            pieces.append(m.group())
            last = m.end()
        if last < len(text):
            pieces.append(text[last:])
        out = []
        for p in pieces:
            out.extend(GPT2_PATTERN.findall(p))
        return out

    def encode_plain(self, text):
        ids = []
        for piece in self.pretokenize(text):
            mapped = "".join(self.byte_enc[b] for b in piece.encode("utf-8"))
            for sub in self.bpe(mapped):
                ids.append(self.vocab[sub])
        return ids

    def encode(self, text, parse_special):
        if not parse_special or not self.special:
            return self.encode_plain(text)
        pat = regex.compile("|".join(regex.escape(s) for s in self.special))
        ids, last = [], 0
        for m in pat.finditer(text):
            ids += self.encode_plain(text[last : m.start()])
            ids.append(self.vocab[m.group()])
            last = m.end()
        return ids + self.encode_plain(text[last:])

    def decode(self, ids):
        out = bytearray()
        for i in ids:
            t = self.tokens[i]
            if t in self.special:
                out += t.encode("utf-8")
            else:
                out += bytes(self.byte_dec[c] for c in t)
        return out.decode("utf-8", errors="replace")


class Llama:
    """llama forward pass in numpy (f32), with a KV cache."""

    def __init__(self, reader, field):
        self.n_layer = field("llama.block_count")
        self.n_embd = field("llama.embedding_length")
        self.n_head = field("llama.attention.head_count")
        self.n_head_kv = field("llama.attention.head_count_kv")
        self.eps = field("llama.attention.layer_norm_rms_epsilon")
        self.rope_base = field("llama.rope.freq_base")
        self.head_dim = self.n_embd // self.n_head
        self.w = {}
        for t in reader.tensors:
            # numpy shape is ggml's ne reversed: (out, in) for matrices.
            self.w[t.name] = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(tuple(reversed(t.shape.tolist())))
        self.out_w = self.w.get("output.weight", self.w["token_embd.weight"])
        self.k_cache = [[] for _ in range(self.n_layer)]
        self.v_cache = [[] for _ in range(self.n_layer)]
        inv = self.rope_base ** (-np.arange(0, self.head_dim, 2, dtype=np.float64) / self.head_dim)
        self.inv_freq = inv

    def rms(self, x, w):
        return (x / np.sqrt(np.mean(x.astype(np.float64) ** 2) + self.eps)).astype(np.float32) * w

    def rope(self, x, pos):
        # llama.cpp "normal" rope: rotate adjacent pairs (the GGUF's Q/K rows are permuted for it).
        ang = pos * self.inv_freq
        c, s = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
        x = x.reshape(-1, self.head_dim // 2, 2)
        a, b = x[..., 0], x[..., 1]
        return np.stack([a * c - b * s, a * s + b * c], axis=-1).reshape(-1, self.head_dim)

    def step(self, token, pos):
        x = self.w["token_embd.weight"][token].copy()
        group = self.n_head // self.n_head_kv
        for l in range(self.n_layer):
            p = f"blk.{l}."
            h = self.rms(x, self.w[p + "attn_norm.weight"])
            q = self.rope((self.w[p + "attn_q.weight"] @ h).reshape(self.n_head, self.head_dim), pos)
            k = self.rope((self.w[p + "attn_k.weight"] @ h).reshape(self.n_head_kv, self.head_dim), pos)
            v = (self.w[p + "attn_v.weight"] @ h).reshape(self.n_head_kv, self.head_dim)
            self.k_cache[l].append(k)
            self.v_cache[l].append(v)
            K = np.stack(self.k_cache[l])  # (t, n_head_kv, d)
            V = np.stack(self.v_cache[l])
            out = np.empty((self.n_head, self.head_dim), dtype=np.float32)
            for hd in range(self.n_head):
                kv = hd // group
                sc = K[:, kv, :] @ q[hd] / np.sqrt(self.head_dim)
                sc = np.exp(sc - sc.max())
                sc /= sc.sum()
                out[hd] = sc @ V[:, kv, :]
            x = x + self.w[p + "attn_output.weight"] @ out.reshape(-1)
            h = self.rms(x, self.w[p + "ffn_norm.weight"])
            g = self.w[p + "ffn_gate.weight"] @ h
            u = self.w[p + "ffn_up.weight"] @ h
            x = x + self.w[p + "ffn_down.weight"] @ ((g / (1 + np.exp(-g))) * u)
        x = self.rms(x, self.w["output_norm.weight"])
        return self.out_w @ x

    def reset(self):
        self.k_cache = [[] for _ in range(self.n_layer)]
        self.v_cache = [[] for _ in range(self.n_layer)]


def render_chat(template, messages, add_generation_prompt):
    # transformers' settings: trim_blocks, lstrip_blocks, loopcontrols.
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt)


def main():
    path = sys.argv[1]
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    reader = GGUFReader(path)

    def field(name):
        v = reader.fields[name].contents()
        return v

    tok = BpeTokenizer(field("tokenizer.ggml.tokens"), field("tokenizer.ggml.token_type"), field("tokenizer.ggml.merges"))
    template = field("tokenizer.chat_template")

    tokenizer_out = []
    for text, special in TOKENIZER_CASES:
        ids = tok.encode(text, special)
        assert tok.decode(ids) == text, f"reference round trip failed for {text!r}"
        tokenizer_out.append({"text": text, "parse_special": special, "ids": ids})

    chat_out = [
        {"messages": m, "add_generation_prompt": g, "rendered": render_chat(template, m, g)} for m, g in CHAT_CASES
    ]

    model = Llama(reader, field)
    greedy_out = []
    for text, special, n in GREEDY_CASES:
        if text is None:
            text = chat_out[0]["rendered"]
        ids = tok.encode(text, special)
        model.reset()
        logits = None
        for pos, t in enumerate(ids):
            logits = model.step(t, pos)
        generated, margins = [], []
        for i in range(n):
            order = np.argsort(logits)[::-1]
            best = int(order[0])
            margins.append(round(float(logits[order[0]] - logits[order[1]]), 4))
            generated.append(best)
            if best == 2:  # <|im_end|>
                break
            logits = model.step(best, len(ids) + i)
        greedy_out.append(
            {
                "prompt": text,
                "parse_special": special,
                "prompt_ids": ids,
                "generated": generated,
                "text": tok.decode([g for g in generated if g != 2]),
                "top2_margins": margins,
            }
        )
        print(f"greedy {text[:30]!r} -> {greedy_out[-1]['text']!r}", file=sys.stderr)

    json.dump(
        {
            "model_sha256": digest,
            "generator": "ai-partition/reference/smollm2_reference.py",
            "tokenizer": tokenizer_out,
            "chat_template": chat_out,
            "greedy": greedy_out,
        },
        sys.stdout,
        indent=1,
        ensure_ascii=False,
    )
    print()


if __name__ == "__main__":
    main()
