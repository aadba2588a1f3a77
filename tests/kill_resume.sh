#!/usr/bin/env bash
# kill_resume.sh LETHE CONFIG TESTS KILLS SEED NP [MPIRUN...]: SIGKILLs `lethe train` and then
# `lethe unlearn` (NP ranks; NP 1 runs without a launcher) at seeded random times, KILLS times each,
# resuming after every kill, and checks that the final parameters, metrics.jsonl and summary.json
# equal an uninterrupted run's (bit-identical; timings left out) and that every resume found a
# loadable checkpoint. TESTS is the GoogleTest binary that compares the two runs. Checkpoints come
# every 2 steps and every cycle, so many kills land mid-checkpoint.
set -u -m
lethe=$1 config=$2 tests=$3 kills=$4 seed=$5 np=$6
shift 6
launch=()
[ "$np" -gt 1 ] && launch=("$@" -np "$np")
RANDOM=$seed
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
layout=()
[ "$np" -gt 1 ] && layout=(--set mesh.dp="$np")
common=(--set train.steps=24 --set train.checkpoint_every=2 --set run.log_every=2 --set 'unlearn.methods=["npo"]'
        --set unlearn.max_cycles=3 --set unlearn.unlearn_steps=4 --set unlearn.learn_steps=2 --set eval.max_samples=8
        "${layout[@]}")
fail() { echo "FAIL: $*"; exit 1; }
run() {  # run DIR PHASE [--resume]: one attempt, its output in DIR.log
  local dir=$1 phase=$2
  shift 2
  "${launch[@]}" "$lethe" "$phase" "$config" --set run.dir="$dir" "${common[@]}" "$@" >> "$dir.log" 2>&1
}

start=$(date +%s.%N)
mkdir -p "$work/ref"
run "$work/ref" train || fail "uninterrupted train: $(tail -5 "$work/ref.log")"
t_train=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
start=$(date +%s.%N)
run "$work/ref" unlearn || fail "uninterrupted unlearn: $(tail -5 "$work/ref.log")"
t_unlearn=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
echo "uninterrupted: train ${t_train} s, unlearn ${t_unlearn} s"

mkdir -p "$work/run"
total=0
for phase in train unlearn; do
  summary=$work/run/$([ "$phase" = train ] && echo target || echo unlearn-npo)/summary.json
  ckpts=$(dirname "$summary")/checkpoints
  span=$([ "$phase" = train ] && echo "$t_train" || echo "$t_unlearn")
  n=0
  while [ ! -f "$summary" ]; do
    resume=()
    [ -f "$ckpts/latest" ] && resume=(--resume)
    if [ "$n" -lt "$kills" ]; then
      # A kill time in [0.3 s, the uninterrupted time]: random, seeded.
      delay=$(awk -v r="$RANDOM" -v s="$span" 'BEGIN { printf "%.2f", 0.3 + r / 32767 * (s - 0.3) }')
      run "$work/run" "$phase" "${resume[@]}" &
      pid=$!
      sleep "$delay"
      kill -9 -- -"$pid" 2>/dev/null && n=$((n + 1))
      wait "$pid" 2>/dev/null
    else
      run "$work/run" "$phase" "${resume[@]}" || fail "$phase after $n kills: $(tail -5 "$work/run.log")"
    fi
  done
  echo "$phase: $n kills, then finished"
  total=$((total + n))
done
grep -E "unusable|no usable checkpoint|no checkpoint to resume" "$work/run.log" && fail "a resume found no loadable checkpoint"
resumes=$(grep -c "resumed" "$work/run.log")
echo "$total kills, $resumes resumes"
LETHE_RUN_A=$work/ref LETHE_RUN_B=$work/run LETHE_PHASES="target unlearn-npo" \
  "$tests" --gtest_also_run_disabled_tests --gtest_filter=KillResume.DISABLED_RunsAreBitIdentical || fail "the runs differ"
echo PASS
