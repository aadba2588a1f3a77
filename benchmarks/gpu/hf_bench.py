#!/usr/bin/env python3
"""The Hugging Face side of benchmarks/gpu: the configs lethe_bench_gpu measured (read from its JSON),
trained with transformers' LlamaForCausalLM on the same GPU in the same run.

Each size as Lethe ran it: fp32 weights under bf16 autocast (the fp32-master / bf16-compute recipe
of HF's Trainer with bf16=True), torch.optim.AdamW (betas 0.9/0.95, eps 1e-8, no weight decay),
gradient clipping at 1.0, the same rows × seq of random tokens, gradient checkpointing where Lethe
used activation checkpointing; once with eager attention and once with SDPA. Then an NPO step as
OpenUnlearning runs it: the reference model's forward on the forget batch every step, the
sequence-level NPO loss (beta 0.1) plus NLL on a retain batch.

Usage: hf_bench.py LETHE_JSON OUT_JSON [--warmup 3 --steps 10]
"""
import argparse
import gc
import json
import statistics
import time

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM


def timed(step, warmup, steps):
    """Median seconds of step() over `steps` runs after `warmup`, each ended by a device sync."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build(config, attn, checkpointing):
    cfg = LlamaConfig(**{k: v for k, v in config.items() if k not in ("architectures", "model_type", "torch_dtype")})
    model = LlamaForCausalLM._from_config(cfg, attn_implementation=attn, torch_dtype=torch.float32).cuda()
    if checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    return model


def optimizer(model):
    return torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)


def sequence_logprob(logits, ids):
    """Sum over positions of log p(ids[t+1] | ids[..t]), per row."""
    lp = torch.log_softmax(logits[:, :-1].float(), -1)
    return lp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1).sum(-1)


def train_step_time(size, attn, warmup, steps):
    config, batch, seq = size["config"], size["batch"], size["seq"]
    model = build(config, attn, size["activation_checkpointing"])
    opt = optimizer(model)
    ids = torch.randint(4, config["vocab_size"], (batch, seq + 1), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=ids[:, :-1]).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    torch.cuda.reset_peak_memory_stats()
    seconds = timed(step, warmup, steps)
    return {"step_s": seconds, "tokens_per_s": batch * seq / seconds,
            "peak_device_gb": torch.cuda.max_memory_allocated() / 1e9}


def npo_step_time(size, attn, warmup, steps, beta=0.1):
    config, seq = size["config"], size["seq"]
    half = max(1, size["batch"] // 2)
    model = build(config, attn, size["activation_checkpointing"])
    reference = build(config, attn, False).eval().requires_grad_(False)
    opt = optimizer(model)
    forget = torch.randint(4, config["vocab_size"], (half, seq + 1), device="cuda")
    retain = torch.randint(4, config["vocab_size"], (half, seq + 1), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            with torch.no_grad():
                ref = sequence_logprob(reference(input_ids=forget).logits, forget)
            cur = sequence_logprob(model(input_ids=forget).logits, forget)
            npo = -(2.0 / beta) * F.logsigmoid(-beta * (cur - ref)).mean()
            logits = model(input_ids=retain[:, :-1]).logits
        nll = F.cross_entropy(logits.float().flatten(0, 1), retain[:, 1:].flatten())
        (npo + nll).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    torch.cuda.reset_peak_memory_stats()
    seconds = timed(step, warmup, steps)
    return {"step_s": seconds, "tokens_per_s": 2 * half * seq / seconds,
            "peak_device_gb": torch.cuda.max_memory_allocated() / 1e9}


def guarded(fn, *args):
    """fn(*args), or None when it runs out of memory."""
    try:
        return fn(*args)
    except torch.OutOfMemoryError as e:
        print(f"  out of memory: {str(e)[:160]}", flush=True)
        return None
    finally:
        gc.collect()
        torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("lethe_json")
    ap.add_argument("out_json")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    lethe = json.load(open(args.lethe_json))
    torch.backends.cuda.matmul.allow_tf32 = True
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "transformers": __import__("transformers").__version__, "sizes": []}
    for size in lethe["sizes"]:
        entry = {"name": size["name"]}
        for attn in ("eager", "sdpa"):
            print(f"{size['name']} transformers {attn}: train step", flush=True)
            entry[f"train_{attn}"] = guarded(train_step_time, size, attn, args.warmup, args.steps)
            print(f"{size['name']} transformers {attn}: NPO step", flush=True)
            entry[f"npo_{attn}"] = guarded(npo_step_time, size, attn, args.warmup, args.steps)
            print(f"  {entry[f'train_{attn}']} / {entry[f'npo_{attn}']}", flush=True)
        out["sizes"].append(entry)
    json.dump(out, open(args.out_json, "w"), indent=2)
    print(f"wrote {args.out_json}")


if __name__ == "__main__":
    main()
