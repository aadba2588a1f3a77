#!/usr/bin/env bash
# Measured per-rank memory of real unlearning steps against `lethe plan` (benchmarks/README.md):
# tp × dp ∈ {1×1, 2×1, 1×2, 2×2}; fp32 with the replicated optimizer (and ZeRO-1 where dp > 1),
# bf16 with the distributed one; no reference (GradDiff), a cached one (NPO, at 1×1) and a
# resident one (KL); and LoRA (rank 16 on every projection, the base as the reference). bf16 runs
# take minutes on CPUs without AVX-512.
#   bash benchmarks/memory_vs_plan.sh [build] [CONFIG ...]   (CONFIG: "tp dp dtype optimizer method [lora]")
set -euo pipefail
build=${1:-build}
shift || true
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 LETHE_COMM=mpi
# Freed tensors return their pages at once, so RSS follows live tensor memory.
export MALLOC_MMAP_THRESHOLD_=65536
configs=("$@")
if [[ ${#configs[@]} -eq 0 ]]; then
  for m in graddiff npo kl; do configs+=("1 1 fp32 replicated $m" "1 1 bf16 distributed $m"); done
  for m in graddiff npo kl; do configs+=("1 1 fp32 replicated $m lora" "1 1 bf16 distributed $m lora"); done
  configs+=("2 2 fp32 replicated kl lora" "2 2 bf16 distributed npo lora")
  for layout in "2 1" "1 2" "2 2"; do
    for m in graddiff kl; do configs+=("$layout fp32 replicated $m" "$layout bf16 distributed $m"); done
    [[ $layout == "2 1" ]] || configs+=("$layout fp32 zero1 graddiff")
  done
fi
echo "| tp×dp | dtype | optimizer | method | model MB (meas / plan) | optimizer MB | reference MB | step peak MB | total MB | total vs plan |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for c in "${configs[@]}"; do
  read -r tp dp dtype optimizer method adapter <<<"$c"
  mpirun --oversubscribe --bind-to none -x MALLOC_MMAP_THRESHOLD_ -x LETHE_COMM -np $((tp * dp)) \
    "$build/benchmarks/lethe_bench_memory" "$tp" "$dtype" "$optimizer" "$method" ${adapter:+"$adapter"} 2>&1 | grep '^|' ||
    echo "| $c: failed |"
done
