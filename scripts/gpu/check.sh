#!/usr/bin/env bash
# One device call's worth of GPU checks, each stage under its own time limit:
#   scripts/gpu/check.sh OUT
# 1. build (scripts/gpu/build.sh, every error of the build at once: ninja -k 0);
# 2. the GPU tests (nccl1.Collectives, Device.*);
# 3. benchmarks/gpu at the 125m and 1b sizes against transformers;
# 4. the rest of the suite, as far as the time left allows (LibTorch 2.x numerics on the CPU).
# Logs and results go to a work folder that is packed into OUT/gpu.tar.gz after every stage, so a
# call cut short still brings back what ran; OUT/stages.txt and OUT/table.md come back as they are.
# Limits (seconds) can be set: BUILD_S, GPUTEST_S, BENCH_S, SUITE_S; TOTAL_S bounds the whole.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:?usage: check.sh OUT}
WORK=$(mktemp -d)/gpu
mkdir -p "$OUT" "$WORK"
TOTAL_S=${TOTAL_S:-560}

pack() { tar czf "$OUT/gpu.tar.gz" -C "$(dirname "$WORK")" gpu; cp "$WORK/stages.txt" "$OUT/" 2>/dev/null; }
# stage NAME LIMIT CMD...: runs CMD under min(LIMIT, time left), logs to WORK/NAME.log.
stage() {
  local name=$1 limit=$2 t0=$SECONDS left=$((TOTAL_S - SECONDS)) rc
  shift 2
  ((left < limit)) && limit=$left
  if ((limit < 10)); then echo "$name: skipped, no time left" >>"$WORK/stages.txt"; pack; return 1; fi
  timeout "$limit" "$@" >"$WORK/$name.log" 2>&1
  rc=$?
  echo "$name: rc $rc after $((SECONDS - t0)) s (limit $limit s)" >>"$WORK/stages.txt"
  echo "== $name (rc $rc)"; tail -n 30 "$WORK/$name.log"
  pack
  return $rc
}

{ nvidia-smi; c++ --version | head -1; nvcc --version | tail -2; nproc
  python3 -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)'
  ls "$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))')/include"
} >"$WORK/machine.log" 2>&1
head -n 15 "$WORK/machine.log"

stage build "${BUILD_S:-330}" scripts/gpu/build.sh env true || exit 1
stage gputests "${GPUTEST_S:-90}" scripts/gpu/build.sh env \
  bash -c 'cd build-gpu && ctest --output-on-failure -R "^nccl1\.|^Device\."'
stage bench "${BENCH_S:-200}" scripts/gpu/build.sh bench "$WORK/bench" --sizes 125m,1b
cp "$WORK/bench/table.md" "$OUT/" 2>/dev/null
stage suite "${SUITE_S:-300}" scripts/gpu/build.sh env \
  bash -c 'cd build-gpu && OMP_NUM_THREADS=2 ctest -j 8 --timeout 240 -E "^mpi8\.|^fuzz\.|^nccl1\.|^Device\."'
pack
cat "$WORK/stages.txt"
