#!/usr/bin/python3
"""Writes tests/data/hf-tiny-llama: a tiny Llama in Hugging Face layout with expected logits.

The weights are random (seeded), rounded to bf16 and stored as BF16 safetensors in two shards with
model.safetensors.index.json, next to a LlamaForCausalLM config.json. expected_logits.json holds
the logits of fixed token rows, computed here by an independent NumPy transcription of
transformers' LlamaForCausalLM forward (modeling_llama.py: RMSNorm, rotate_half RoPE on q/k, GQA by
repeating KV heads, causal softmax attention, SiLU-gated MLP), in float64 from the bf16 weights.

Generator of record: this script with NumPy (Debian python3-numpy), because the CPU machines have
no PyTorch/transformers. Where a GPU machine with transformers is available, regenerate with
LlamaForCausalLM.from_pretrained on these files and compare (docs/interop.md).

  /usr/bin/python3 scripts/make_hf_fixture.py tests/data/hf-tiny-llama
"""
import json
import os
import struct
import sys

import numpy as np

CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
    "vocab_size": 96, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
    "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
    "attention_bias": False, "mlp_bias": False, "torch_dtype": "bfloat16",
}
TOKENS = [[1, 17, 42, 5, 88, 23, 61, 9, 30, 77, 2, 50], [1, 95, 3, 3, 64, 12, 40, 71, 8, 19, 33, 2]]


def to_bf16_bits(x):
    """float32 → bf16 bit patterns, round to nearest even (as torch does)."""
    b = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    b = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    return b.astype(np.uint16)


def from_bf16_bits(h):
    return (h.astype(np.uint32) << 16).view(np.float32)


def weights(rng):
    c = CONFIG
    D, F, V = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    H, G = c["num_attention_heads"], c["num_key_value_heads"]
    d = D // H
    w = {"model.embed_tokens.weight": rng.normal(0, 0.5, (V, D))}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = 1 + rng.normal(0, 0.1, D)
        w[p + "self_attn.q_proj.weight"] = rng.normal(0, 0.2, (H * d, D))
        w[p + "self_attn.k_proj.weight"] = rng.normal(0, 0.2, (G * d, D))
        w[p + "self_attn.v_proj.weight"] = rng.normal(0, 0.2, (G * d, D))
        w[p + "self_attn.o_proj.weight"] = rng.normal(0, 0.2, (D, H * d))
        w[p + "post_attention_layernorm.weight"] = 1 + rng.normal(0, 0.1, D)
        w[p + "mlp.gate_proj.weight"] = rng.normal(0, 0.2, (F, D))
        w[p + "mlp.up_proj.weight"] = rng.normal(0, 0.2, (F, D))
        w[p + "mlp.down_proj.weight"] = rng.normal(0, 0.2, (D, F))
    w["model.norm.weight"] = 1 + rng.normal(0, 0.1, D)
    w["lm_head.weight"] = rng.normal(0, 0.2, (V, D))
    return {k: to_bf16_bits(v) for k, v in w.items()}


def rms_norm(x, g, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], -1)


def forward(w, tokens):
    c = CONFIG
    D, H, G = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    d, eps = D // H, c["rms_norm_eps"]
    W = {k: from_bf16_bits(v).astype(np.float64) for k, v in w.items()}
    T = len(tokens)
    x = W["model.embed_tokens.weight"][tokens]
    inv_freq = 1.0 / (c["rope_theta"] ** (np.arange(0, d, 2, dtype=np.float64) / d))
    ang = np.outer(np.arange(T), inv_freq)
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, W[p + "input_layernorm.weight"], eps)
        q = (h @ W[p + "self_attn.q_proj.weight"].T).reshape(T, H, d).transpose(1, 0, 2)
        k = (h @ W[p + "self_attn.k_proj.weight"].T).reshape(T, G, d).transpose(1, 0, 2)
        v = (h @ W[p + "self_attn.v_proj.weight"].T).reshape(T, G, d).transpose(1, 0, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = np.repeat(k, H // G, 0), np.repeat(v, H // G, 0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(d) + mask
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        o = (a @ v).transpose(1, 0, 2).reshape(T, H * d)
        x = x + o @ W[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, W[p + "post_attention_layernorm.weight"], eps)
        g, u = h @ W[p + "mlp.gate_proj.weight"].T, h @ W[p + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ W[p + "mlp.down_proj.weight"].T
    return rms_norm(x, W["model.norm.weight"], eps) @ W["lm_head.weight"].T


def write_safetensors(path, tensors):
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, t in tensors.items():
        header[name] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for t in tensors.values():
            f.write(np.ascontiguousarray(t).astype("<u2").tobytes())


def main(out):
    os.makedirs(out, exist_ok=True)
    w = weights(np.random.default_rng(20261122))
    names = list(w)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    weight_map = {}
    for file, keys in shards.items():
        write_safetensors(os.path.join(out, file), {k: w[k] for k in keys})
        weight_map.update({k: file for k in keys})
    total = sum(t.nbytes for t in w.values())
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
    expected = {"generator": "scripts/make_hf_fixture.py (NumPy float64 transcription of transformers' LlamaForCausalLM)",
                "tokens": TOKENS, "logits": [forward(w, t).tolist() for t in TOKENS]}
    with open(os.path.join(out, "expected_logits.json"), "w") as f:
        json.dump(expected, f)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/hf-tiny-llama")
