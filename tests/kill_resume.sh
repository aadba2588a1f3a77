#!/usr/bin/env bash
# kill_resume.sh LETHE CONFIG TESTS KILLS SEED NP [MPIRUN...]: SIGKILLs `lethe train` and
# `lethe unlearn` (NP ranks; NP 1 runs without a launcher) at seeded random times, resuming after
# every kill, until KILLS kills have hit a running job, and checks that the final parameters,
# metrics.jsonl and summary.json of every killed run equal an uninterrupted run's (bit-identical;
# timings left out) and that every resume found a loadable checkpoint. TESTS is the GoogleTest
# binary that compares two runs. Checkpoints come every 2 steps and every cycle, so many kills land
# mid-checkpoint.
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

# Episodes until KILLS kills in all: each runs train then unlearn from scratch in its own folder,
# killed at a random time within what the attempt still has to do (until the phase finishes; a
# kill that comes after the end is not counted), and is then compared with the uninterrupted run.
# Optimizer steps per phase (train.steps; unlearn: max_cycles × (unlearn_steps + learn_steps)).
declare -A steps=([train]=24 [unlearn]=18)
# Each phase's expected time, from the uninterrupted run, shortened whenever an attempt finished
# before its kill (kept across episodes).
declare -A span=([train]=$t_train [unlearn]=$t_unlearn)
# Half the kills go to train, half to unlearn.
declare -A target=([train]=$((kills / 2)) [unlearn]=$((kills - kills / 2))) done_=([train]=0 [unlearn]=0)
total=0 resumes=0 episode=0 mid=0
while [ "$total" -lt "$kills" ]; do
  episode=$((episode + 1))
  run_dir=$work/run$episode
  mkdir -p "$run_dir"
  for phase in train unlearn; do
    summary=$run_dir/$([ "$phase" = train ] && echo target || echo unlearn-npo)/summary.json
    ckpts=$(dirname "$summary")/checkpoints
    n=0
    while [ ! -f "$summary" ]; do
      resume=()
      [ -f "$ckpts/latest" ] && resume=(--resume)
      if [ "${done_[$phase]}" -lt "${target[$phase]}" ]; then
        # Within the time the attempt still needs: the phase's time less the part its latest
        # checkpoint saves (steps done of `steps`), less a margin.
        done_steps=$(sed -n 's/^step-0*\([0-9][0-9]*\)\.h5$/\1/p' "$ckpts/latest" 2>/dev/null)
        delay=$(awk -v r="$RANDOM" -v s="${span[$phase]}" -v d="${done_steps:-0}" -v n="${steps[$phase]}" \
                'BEGIN { left = s * (1 - d / n) * 0.8; if (left < 1) left = 1; printf "%.2f", 0.3 + r / 32767 * (left - 0.3) }')
        run "$run_dir" "$phase" "${resume[@]}" &
        pid=$!
        sleep "$delay"
        if kill -9 -- -"$pid" 2>/dev/null; then
          n=$((n + 1)) total=$((total + 1))
          done_[$phase]=$((done_[$phase] + 1))
          compgen -G "$ckpts/*.tmp" > /dev/null && mid=$((mid + 1))  # killed inside a checkpoint write
        else  # the attempt finished first: this machine runs the phase faster than measured
          span[$phase]=$(awk -v s="${span[$phase]}" 'BEGIN { printf "%.2f", s * 0.7 }')
        fi
        wait "$pid" 2>/dev/null
      else
        run "$run_dir" "$phase" "${resume[@]}" || fail "$phase after $n kills: $(tail -5 "$run_dir.log")"
      fi
    done
    echo "episode $episode, $phase: $n kills, then finished"
  done
  grep -E "unusable|no usable checkpoint|no checkpoint to resume" "$run_dir.log" && fail "a resume found no loadable checkpoint"
  resumes=$((resumes + $(grep -c "resumed" "$run_dir.log")))
  LETHE_RUN_A=$work/ref LETHE_RUN_B=$run_dir LETHE_PHASES="target unlearn-npo" \
    "$tests" --gtest_also_run_disabled_tests --gtest_filter=KillResume.DISABLED_RunsAreBitIdentical > "$run_dir.compare" 2>&1 ||
    { cat "$run_dir.compare"; fail "episode $episode differs from the uninterrupted run"; }
done
echo "$total kills ($mid inside a checkpoint write) over $episode episodes, $resumes resumes, 0 mismatches"
echo PASS
