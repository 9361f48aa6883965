#!/usr/bin/env python3
"""Reference sentence embeddings for all-MiniLM-L6-v2, independent of the Rust engine.

Tokenisation uses Hugging Face's own `tokenizers` package on the model's tokenizer.json
(truncated at sentence-transformers' max_seq_length of 256); the BERT encoder is a numpy
re-implementation over the safetensors weights, followed by sentence-transformers' pipeline
for this model (modules.json: Transformer -> Pooling(mean) -> Normalize).

Regenerate the fixture:

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install numpy safetensors tokenizers
    /tmp/ref/bin/python ai-partition/reference/minilm_reference.py \
        ~/.local/share/nexusos/models/all-minilm/l6-v2 \
        > ai-partition/tests/fixtures/minilm_reference.json
"""

import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "Rust is a systems programming language focused on safety.",
    "Ünïcödé tëxt, with accents and emoji 🦀.",
]


def erf(x):
    return np.vectorize(math.erf)(x)


def layer_norm(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def encode(w, cfg, ids):
    h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    d = h // heads
    eps = cfg.get("layer_norm_eps", 1e-12)
    n = len(ids)
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n] + w["embeddings.token_type_embeddings.weight"][0]
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        lin = lambda t, name: t @ w[p + name + ".weight"].T + w[p + name + ".bias"]  # noqa: E731
        q = lin(x, "attention.self.query").reshape(n, heads, d).transpose(1, 0, 2)
        k = lin(x, "attention.self.key").reshape(n, heads, d).transpose(1, 0, 2)
        v = lin(x, "attention.self.value").reshape(n, heads, d).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(1, 0, 2).reshape(n, h)
        x = layer_norm(lin(ctx, "attention.output.dense") + x, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps)
        inter = lin(x, "intermediate.dense")
        inter = 0.5 * inter * (1 + erf(inter / math.sqrt(2)))
        x = layer_norm(lin(inter, "output.dense") + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
    pooled = x.mean(0)
    return pooled / max(np.linalg.norm(pooled), 1e-12)


def main():
    d = sys.argv[1]
    w = {k: v.astype(np.float64) for k, v in load_file(os.path.join(d, "model.safetensors")).items()}
    cfg = json.load(open(os.path.join(d, "config.json")))
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(256)
    out = []
    for s in SENTENCES:
        ids = tok.encode(s).ids
        e = encode(w, cfg, np.array(ids))
        out.append({"text": s, "ids": ids, "embedding": [round(float(v), 7) for v in e]})
    json.dump({"generator": "ai-partition/reference/minilm_reference.py", "sentences": out}, sys.stdout, ensure_ascii=False)
    print()


if __name__ == "__main__":
    main()
