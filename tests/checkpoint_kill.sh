#!/usr/bin/env bash
# checkpoint_kill.sh LETHE CONFIG MPIRUN...: a rank killed while a checkpoint is being written
# leaves the previous checkpoint intact; the job ends (non-zero, no hang) and resumes from it at
# another layout.
set -u
lethe=$1 config=$2
shift 2
mpirun=("$@")
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
common=(--set "run.dir=$dir" --set train.steps=20 --set train.checkpoint_every=10 --set run.log_every=10)
fail() { echo "FAIL: $*"; exit 1; }

"${mpirun[@]}" -np 2 "$lethe" train "$config" "${common[@]}" --set mesh.tp=2 --stop-after 10 || fail "first run"
[ "$(cat "$dir/target/checkpoints/latest")" = "step-00000010.h5" ] || fail "no checkpoint at step 10"

start=$(date +%s)
out=$(LETHE_TEST_KILL_RANK_IN_CHECKPOINT=1 timeout 120 "${mpirun[@]}" -x LETHE_TEST_KILL_RANK_IN_CHECKPOINT -np 2 \
      "$lethe" train "$config" "${common[@]}" --set mesh.tp=2 --resume 2>&1)
rc=$?
echo "$out" | tail -8
echo "killed run: exit $rc after $(( $(date +%s) - start )) s"
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "the job with a killed rank must end non-zero, not hang (exit $rc)"
[ "$(cat "$dir/target/checkpoints/latest")" = "step-00000010.h5" ] || fail "latest moved"
[ ! -e "$dir/target/checkpoints/step-00000020.h5" ] || fail "a partial checkpoint became visible"

out=$("${mpirun[@]}" -np 2 "$lethe" train "$config" "${common[@]}" --set mesh.dp=2 --resume 2>&1) || fail "resume: $out"
echo "$out" | grep "resumed" || fail "did not say where it resumed from"
echo "$out" | grep -q "step-00000010.h5 at step 10" || fail "did not resume from step 10"
[ "$(cat "$dir/target/checkpoints/latest")" = "step-00000020.h5" ] || fail "the resumed run did not finish"
echo PASS
