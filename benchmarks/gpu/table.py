#!/usr/bin/env python3
"""Markdown tables of a benchmarks/gpu run: lethe_bench_gpu's JSON and, when given, hf_bench.py's.

Usage: table.py LETHE_JSON [HF_JSON]
"""
import json
import sys


def fmt(x, spec):
    return "—" if x is None else format(x, spec)


def ratio(a, b):
    return None if a is None or not b else a / b


def tokens(phase):
    return None if not phase else phase["tokens_per_s"]


def main():
    lethe = json.load(open(sys.argv[1]))
    hf = {s["name"]: s for s in json.load(open(sys.argv[2]))["sizes"]} if len(sys.argv) > 2 else {}
    print(f"Device {lethe['device']}, LibTorch {lethe['torch']}; bf16 matmul measured in the same run: "
          f"{lethe['matmul_bf16_flops'] / 1e12:.3g} TFLOP/s (MFU against {lethe['peak_bf16_flops'] / 1e12:.0f} "
          f"TFLOP/s peak and against it).\n")
    print("GB: peak device memory (on a CPU dry run: peak host memory).\n")
    print("| size | params | rows × seq | Lethe tok/s | MFU peak | MFU matmul | Lethe GB | HF eager tok/s | "
          "HF SDPA tok/s | HF SDPA GB | Lethe / eager | Lethe / SDPA |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    on_gpu = lethe["device"].startswith("cuda")
    for s in lethe["sizes"]:
        t, h = s["train"], hf.get(s["name"], {})
        gb = t["peak_device_gb"] if on_gpu else t["peak_host_gb"]
        eager, sdpa = tokens(h.get("train_eager")), tokens(h.get("train_sdpa"))
        ckpt = " (ckpt)" if s["activation_checkpointing"] else ""
        print(f"| {s['name']}{ckpt} | {s['params'] / 1e9:.2f}B | {s['batch']} × {s['seq']} | {t['tokens_per_s']:.0f} | "
              f"{100 * t['mfu_peak']:.1f} % | {100 * t['mfu_matmul']:.1f} % | {gb:.1f} | "
              f"{fmt(eager, '.0f')} | {fmt(sdpa, '.0f')} | "
              f"{fmt(h.get('train_sdpa') and h['train_sdpa']['peak_device_gb'], '.1f')} | "
              f"{fmt(ratio(t['tokens_per_s'], eager), '.2f')} | {fmt(ratio(t['tokens_per_s'], sdpa), '.2f')} |")
    print("\nNPO step (reference model, NLL retain term; forget + retain tokens per second):\n")
    print("| size | Lethe tok/s | Lethe GB | HF eager tok/s | HF SDPA tok/s | Lethe / eager | Lethe / SDPA |")
    print("|---|---|---|---|---|---|---|")
    for s in lethe["sizes"]:
        n, h = s.get("npo"), hf.get(s["name"], {})
        eager, sdpa = tokens(h.get("npo_eager")), tokens(h.get("npo_sdpa"))
        mine = tokens(n)
        print(f"| {s['name']} | {fmt(mine, '.0f')} | {fmt(n and n['peak_device_gb'], '.1f')} | {fmt(eager, '.0f')} | "
              f"{fmt(sdpa, '.0f')} | {fmt(ratio(mine, eager), '.2f')} | {fmt(ratio(mine, sdpa), '.2f')} |")
    print("\nWhere a Lethe train step's time goes (each component timed alone with the step's shapes):\n")
    print("| size | step ms | GEMMs | attention | optimizer | communication | rest (norms, RoPE, casts, loss) |")
    print("|---|---|---|---|---|---|---|")
    for s in lethe["sizes"]:
        p, step = s["profile"], s["train"]["step_s"]
        parts = [p["gemm_s"], p["attention_s"], p["optimizer_s"], p["communication_s"]]
        rest = step - sum(parts)
        cells = " | ".join(f"{1e3 * x:.1f} ms ({100 * x / step:.0f} %)" for x in parts + [rest])
        print(f"| {s['name']} | {1e3 * step:.1f} | {cells} |")


if __name__ == "__main__":
    main()
