#!/usr/bin/env bash
# benchmarks/gpu in one go: Lethe's sizes (lethe_bench_gpu), the same configs with transformers
# (hf_bench.py) on the same GPU right after, and the tables (table.py).
#   benchmarks/gpu/run.sh BUILD_DIR [OUT_DIR] [lethe_bench_gpu options…]
# On the GPU machine: scripts/gpu/build.sh bench [OUT_DIR]. A CPU dry run (no transformers needed):
#   benchmarks/gpu/run.sh build /tmp/gpu-dry --dry-run
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${1:?usage: run.sh BUILD_DIR [OUT_DIR] [options]}
OUT=${2:-benchmarks/gpu/results}
shift $(( $# >= 2 ? 2 : 1 ))
mkdir -p "$OUT"
"$BUILD/benchmarks/lethe_bench_gpu" --json "$OUT/lethe.json" "$@" | tee "$OUT/lethe.log"
if [[ " $* " == *" --dry-run "* ]]; then
  python3 "$HERE/table.py" "$OUT/lethe.json" | tee "$OUT/table.md"
else
  PYTHONUNBUFFERED=1 python3 "$HERE/hf_bench.py" "$OUT/lethe.json" "$OUT/hf.json" | tee "$OUT/hf.log"
  python3 "$HERE/table.py" "$OUT/lethe.json" "$OUT/hf.json" | tee "$OUT/table.md"
fi
