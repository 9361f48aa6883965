#!/usr/bin/env python3
"""Independent reference for the SmolLM2 GGUF: tokenizer, chat template and greedy decoding.

Nothing here uses llama.cpp. The tokenizer is a from-scratch GPT-2 byte-level BPE built from
the GGUF's own vocabulary and merges, with the pre-tokenisation of the Hugging Face
tokenizer this GGUF was converted from (Digits(individual_digits) then the GPT-2 regex).
The model is a plain numpy llama forward pass over weights dequantised by the `gguf`
package. By default it also reproduces the number formats llama.cpp computes in on a CPU,
so that near-ties resolve the same way: activations entering a quantised matmul are
quantised to 8 bits per 32-value block (Q8_1 for Q4_1 weights, Q8_0 for Q8_0 weights,
scales in f16), and attention runs over an f16 KV cache with f16 queries and
probabilities (flash attention off). `--f32` skips that emulation. The chat template is
rendered with jinja2 the way transformers' `apply_chat_template` does.

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


def f16(x):
    return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)


def quantize_act(x):
    """8-bit block quantisation of an activation vector, as ggml's AVX path does it:
    per 32 values d = amax/127, q = round-half-even(x * 127/amax); the scale is stored in
    f16 and (for Q8_1) the block sum s = f16(d * sum(q))."""
    b = x.astype(np.float32).reshape(-1, 32)
    amax = np.abs(b).max(1)
    d = (amax / np.float32(127)).astype(np.float32)
    inv = np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    q = np.rint(b * inv[:, None])
    d16 = f16(d)
    s16 = f16(d * q.sum(1))
    return (q * d16[:, None]).reshape(-1), q.sum(1), d16, s16


class Matrix:
    """A weight matrix and how llama.cpp multiplies a vector by it."""

    def __init__(self, t, emulate):
        self.kind = t.tensor_type.name
        shape = tuple(reversed(t.shape.tolist()))
        self.w = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape)
        self.emulate = emulate and self.kind in ("Q4_1", "Q8_0")
        if self.emulate and self.kind == "Q4_1":
            # Q4_1 block: f16 d, f16 m, 16 bytes of nibbles. Keep m per block for the
            # m * s term of the Q4_1 x Q8_1 dot product.
            raw = np.ascontiguousarray(t.data).reshape(shape[0], -1, 20)
            self.m = raw[:, :, 2:4].copy().view(np.float16).astype(np.float32)[:, :, 0]

    def __matmul__(self, x):
        if not self.emulate:
            return self.w @ x
        xe, qsum, d16, s16 = quantize_act(x)
        y = self.w @ xe
        if self.kind == "Q4_1":
            # w·x_eff counts m * d16 * sum(q) per block; llama.cpp uses m * s16 instead.
            y = y + self.m @ (s16 - d16 * qsum)
        return y


class Llama:
    """llama forward pass in numpy, with a KV cache."""

    def __init__(self, reader, field, emulate=True):
        self.emulate = emulate
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
            self.w[t.name] = Matrix(t, emulate) if len(t.shape) == 2 else dequantize(t.data, t.tensor_type).astype(np.float32)
        self.out_w = self.w.get("output.weight", self.w["token_embd.weight"])
        self.kv = f16 if emulate else (lambda a: a)
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
        x = self.w["token_embd.weight"].w[token].copy()
        group = self.n_head // self.n_head_kv
        for l in range(self.n_layer):
            p = f"blk.{l}."
            h = self.rms(x, self.w[p + "attn_norm.weight"])
            q = self.rope((self.w[p + "attn_q.weight"] @ h).reshape(self.n_head, self.head_dim), pos)
            k = self.rope((self.w[p + "attn_k.weight"] @ h).reshape(self.n_head_kv, self.head_dim), pos)
            v = (self.w[p + "attn_v.weight"] @ h).reshape(self.n_head_kv, self.head_dim)
            self.k_cache[l].append(self.kv(k))
            self.v_cache[l].append(self.kv(v))
            q = self.kv(q)
            K = np.stack(self.k_cache[l])  # (t, n_head_kv, d)
            V = np.stack(self.v_cache[l])
            out = np.empty((self.n_head, self.head_dim), dtype=np.float32)
            for hd in range(self.n_head):
                kv = hd // group
                sc = K[:, kv, :] @ q[hd] / np.sqrt(self.head_dim)
                sc = np.exp(sc - sc.max())
                sc /= sc.sum()
                out[hd] = self.kv(sc) @ V[:, kv, :]
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
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    emulate = "--f32" not in sys.argv
    path = args[0]
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

    model = Llama(reader, field, emulate)
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
            "llamacpp_number_formats": emulate,
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
