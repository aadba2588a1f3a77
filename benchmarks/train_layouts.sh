#!/usr/bin/env bash
# Train-step throughput of `lethe train` at tp × dp ∈ {1×1, 2×1, 1×2} on this machine (dp 2 with
# the gradient all-reduce overlapped with backward and after it): a ~3M model, 30 steps of 16 rows
# × 128 tokens, median tokens/s of the logged windows after the first.
# Then `lethe eval` of the last checkpoint at each layout (evaluation is split over dp): wall seconds.
#   bash benchmarks/train_layouts.sh build/launch/lethe
set -euo pipefail
lethe=${1:-build/launch/lethe}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cores=$(nproc)
common=(--set "run.dir=$dir/run" --set model.hidden_size=256 --set model.intermediate_size=704
        --set model.num_hidden_layers=4 --set model.num_attention_heads=8 --set model.num_key_value_heads=4
        --set data.seq_len=128 --set model.max_position_embeddings=128 --set train.batch_size=16
        --set train.steps=30 --set train.checkpoint_every=0 --set run.log_every=5 --set corpus.people=60)
echo "| layout | gradient all-reduce | ranks × threads | tokens/s (median of windows 2–6) |"
echo "|---|---|---|---|"
for layout in "1 1 true" "2 1 true" "1 2 true" "1 2 false"; do
  set -- $layout
  np=$(( $1 * $2 )); threads=$(( cores / np > 0 ? cores / np : 1 ))
  out=$(mpirun --oversubscribe --bind-to none -np $np "$lethe" train /dev/null "${common[@]}" \
        --set mesh.tp=$1 --set mesh.dp=$2 --set mesh.overlap_grad_reduce=$3 --set run.threads=$threads 2>&1)
  tps=$(echo "$out" | grep -o '[0-9]* tok/s' | awk 'NR>1 {print $1}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  mode=$([ "$2" = 1 ] && echo "—" || ([ "$3" = true ] && echo "overlapped" || echo "after backward"))
  echo "| tp $1 × dp $2 | $mode | $np × $threads | $tps |"
done
ckpt=$(ls "$dir"/run/target/checkpoints/*.h5 | tail -1)
echo
echo "| layout | ranks × threads | lethe eval seconds (wall, process start included) |"
echo "|---|---|---|"
for layout in "1 1" "2 1" "1 2"; do
  set -- $layout
  np=$(( $1 * $2 )); threads=$(( cores / np > 0 ? cores / np : 1 ))
  start=$(date +%s.%N)
  mpirun --oversubscribe --bind-to none -np $np "$lethe" eval /dev/null "${common[@]}" --checkpoint "$ckpt" \
    --out "$dir/eval.json" --set mesh.tp=$1 --set mesh.dp=$2 --set run.threads=$threads >/dev/null 2>&1
  echo "| tp $1 × dp $2 | $np × $threads | $(echo "$(date +%s.%N) - $start" | bc -l | xargs printf '%.1f') |"
done
