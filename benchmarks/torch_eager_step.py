#!/usr/bin/python3
"""PyTorch eager reference of the train step that lethe_bench_train times (benchmarks/README.md).

The model is a transcription of Hugging Face transformers' LlamaForCausalLM forward
(models/llama/modeling_llama.py, v4.4x): LlamaRMSNorm (fp32 variance, weight × normalised input cast
back), rotate_half RoPE on q and k with cos/sin of the position ids, repeat_kv for grouped-query
attention, eager attention (q kᵀ / √d + causal mask, softmax in fp32, × v; Debian's torch 1.13 has
no scaled_dot_product_attention), LlamaMLP down(silu(gate(x)) · up(x)), bias-free projections,
untied lm_head, and the causal-LM loss (cross-entropy of the shifted logits in fp32). The step is
loss.backward(), torch.nn.utils.clip_grad_norm_(params, 1.0) and torch.optim.AdamW (the default
for-loop implementation of 1.13, betas 0.9/0.95, eps 1e-8, no weight decay, lr 3e-3), then
zero_grad(set_to_none=True) — the same shapes, batch (8 × 128 random tokens), threads and update as
lethe_bench_train. bf16 runs the forward under torch.autocast(cpu, bfloat16) with fp32 weights,
the standard PyTorch recipe (Lethe's bf16 keeps bf16 weights with fp32 masters in the optimizer).

Run by benchmarks/eager_vs_lethe.sh; alone:
  OMP_NUM_THREADS=2 /usr/bin/python3 benchmarks/torch_eager_step.py SIZE_M DTYPE STEPS
prints one JSON line: {"size_M", "dtype", "params_M", "step_ms" (median), "tokens_per_s"}.
"""
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# The shapes of model_of_size in benchmarks/train_step_bench.cc.
SIZES = {1: dict(V=512, D=128, F=352, L=4, H=4, G=2), 10: dict(V=2048, D=384, F=1024, L=6, H=6, G=2)}
B, T = 8, 128


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def repeat_kv(x, n):
    b, g, t, d = x.shape
    return x if n == 1 else x[:, :, None, :, :].expand(b, g, n, t, d).reshape(b, g * n, t, d)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.h, self.g, self.d = c["H"], c["G"], c["D"] // c["H"]
        self.q_proj = nn.Linear(c["D"], self.h * self.d, bias=False)
        self.k_proj = nn.Linear(c["D"], self.g * self.d, bias=False)
        self.v_proj = nn.Linear(c["D"], self.g * self.d, bias=False)
        self.o_proj = nn.Linear(self.h * self.d, c["D"], bias=False)

    def forward(self, x, cos, sin, mask):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.d).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.g, self.d).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.g, self.d).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = repeat_kv(k, self.h // self.g), repeat_kv(v, self.h // self.g)
        w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.d) + mask
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        o = torch.matmul(w, v).transpose(1, 2).reshape(b, t, self.h * self.d)
        return self.o_proj(o)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(c["D"]), RMSNorm(c["D"])
        self.self_attn = Attention(c)
        self.gate_proj = nn.Linear(c["D"], c["F"], bias=False)
        self.up_proj = nn.Linear(c["D"], c["F"], bias=False)
        self.down_proj = nn.Linear(c["F"], c["D"], bias=False)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Llama(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["V"], c["D"])
        self.layers = nn.ModuleList(Block(c) for _ in range(c["L"]))
        self.norm = RMSNorm(c["D"])
        self.lm_head = nn.Linear(c["D"], c["V"], bias=False)
        d = c["D"] // c["H"]
        self.register_buffer("inv_freq", 1.0 / (10000.0 ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d)), persistent=False)
        for m in self.modules():  # initializer_range 0.02, as Lethe
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, ids):
        b, t = ids.shape
        pos = torch.arange(t).unsqueeze(0).expand(b, t)
        freqs = (self.inv_freq[None, :, None] @ pos[:, None, :].float()).transpose(1, 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().unsqueeze(1), emb.sin().unsqueeze(1)
        x = self.embed_tokens(ids)
        mask = torch.full((t, t), torch.finfo(x.dtype).min).triu(1)[None, None]
        for layer in self.layers:
            x = layer(x, cos.to(x.dtype), sin.to(x.dtype), mask.to(x.dtype))
        return self.lm_head(self.norm(x))


def main():
    size, dtype, steps = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    torch.manual_seed(1)
    c = SIZES[size]
    model = Llama(c)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    data = torch.randint(4, c["V"], (64, T + 1))
    times = []
    for i in range(steps + 1):  # the first step warms up (allocations, oneDNN kernels)
        rows = data[(torch.arange(B) + i * B) % 64]
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            logits = model(rows[:, :T])
        loss = F.cross_entropy(logits.float().reshape(-1, c["V"]), rows[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i > 0:
            times.append(time.perf_counter() - start)
    ms = statistics.median(times) * 1e3
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(json.dumps({"size_M": size, "dtype": dtype, "params_M": round(params, 3), "step_ms": ms,
                      "tokens_per_s": B * T / (ms / 1e3)}))


if __name__ == "__main__":
    main()
