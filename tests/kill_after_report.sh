#!/usr/bin/env bash
# kill_after_report.sh LETHE CONFIG TESTS: `lethe unlearn` killed right after its second cycle's
# record reached metrics.jsonl and before that cycle's checkpoint, then resumed: metrics.jsonl and
# the final state equal an uninterrupted run's (no duplicated record).
set -u
lethe=$1 config=$2 tests=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
common=(--set train.steps=8 --set 'unlearn.methods=["npo"]' --set unlearn.max_cycles=3 --set unlearn.unlearn_steps=2
        --set unlearn.learn_steps=1 --set eval.max_samples=4)
fail() { echo "FAIL: $*"; exit 1; }
for d in ref run; do "$lethe" train "$config" --set run.dir="$work/$d" "${common[@]}" > /dev/null 2>&1 || fail "train"; done
"$lethe" unlearn "$config" --set run.dir="$work/ref" "${common[@]}" > /dev/null 2>&1 || fail "uninterrupted unlearn"
LETHE_TEST_KILL_AFTER_REPORT=2 "$lethe" unlearn "$config" --set run.dir="$work/run" "${common[@]}" > /dev/null 2>&1 &&
  fail "the hook did not kill the run"
[ "$(wc -l < "$work/run/unlearn-npo/metrics.jsonl")" -eq 2 ] || fail "expected 2 records before the kill"
"$lethe" unlearn "$config" --set run.dir="$work/run" "${common[@]}" --resume > /dev/null 2>&1 || fail "resume"
LETHE_RUN_A=$work/ref LETHE_RUN_B=$work/run LETHE_PHASES="target unlearn-npo" \
  "$tests" --gtest_also_run_disabled_tests --gtest_filter=KillResume.DISABLED_RunsAreBitIdentical || fail "the runs differ"
echo PASS
