#!/usr/bin/env bash
# Lethe's train step against a PyTorch eager transcription of the same Llama step
# (benchmarks/torch_eager_step.py), side by side: for ROUNDS rounds, each of the four rows
# (~1M and ~10M parameters, fp32 and bf16) runs once in Lethe (lethe_bench_train) and once in
# PyTorch, alternating, 2 threads each; then the medians per row and their ratio.
# Installs Debian's python3-torch (benchmarks only; the runtime never uses Python).
#   bash benchmarks/eager_vs_lethe.sh [ROUNDS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
/usr/bin/python3 -c 'import torch' 2>/dev/null ||
  { $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends python3-torch; }
[ -x build/benchmarks/lethe_bench_train ] || bash scripts/build.sh
export OMP_NUM_THREADS=2
out=$(mktemp -d)
for r in $(seq "$ROUNDS"); do
  for size in 1 10; do
    for dtype in fp32 bf16; do
      mode=$([ $dtype = fp32 ] && echo 0 || echo 1)
      build/benchmarks/lethe_bench_train --benchmark_filter="size_M:$size/mode:$mode/" --benchmark_min_time=3 \
        --benchmark_format=json 2>/dev/null |
        /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["benchmarks"][0]["real_time"])' >> "$out/lethe-$size-$dtype"
      /usr/bin/python3 benchmarks/torch_eager_step.py "$size" "$dtype" 20 |
        /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["step_ms"])' >> "$out/torch-$size-$dtype"
    done
  done
done
/usr/bin/python3 - "$out" "$ROUNDS" <<'PY'
import statistics, sys
out, rounds = sys.argv[1], sys.argv[2]
print(f"median step time over {rounds} alternating rounds, batch 8 x 128, 2 threads")
print(f"{'model':>6} {'dtype':>5} {'Lethe ms':>9} {'PyTorch ms':>11} {'Lethe speedup':>14}")
for size in (1, 10):
    for dtype in ("fp32", "bf16"):
        l = [float(x) for x in open(f"{out}/lethe-{size}-{dtype}")]
        t = [float(x) for x in open(f"{out}/torch-{size}-{dtype}")]
        ml, mt = statistics.median(l), statistics.median(t)
        print(f"{str(size) + 'M':>6} {dtype:>5} {ml:9.1f} {mt:11.1f} {mt / ml:13.2f}x   (Lethe {min(l):.1f}-{max(l):.1f}, PyTorch {min(t):.1f}-{max(t):.1f})")
PY
rm -rf "$out"
