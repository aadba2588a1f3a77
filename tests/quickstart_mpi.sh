#!/usr/bin/env bash
# quickstart_mpi.sh LETHE MPIRUN…: `lethe quickstart` as 2 ranks (mesh.dp = 2), shrunk by --set, runs
# every phase and writes the comparison. Every rank must go on to the next phase only once rank 0 has
# written the last one's summary (a rank that looked too early once stopped after training, and the
# other waited for it forever).
set -u
lethe=$1
shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
timeout 240 "$@" -np 2 "$lethe" quickstart --dir "$work/run" --set mesh.dp=2 --set train.steps=6 \
  --set 'unlearn.methods=["ga","npo"]' --set unlearn.max_cycles=2 --set unlearn.unlearn_steps=2 --set unlearn.learn_steps=1 \
  --set eval.max_samples=4 > "$work/log" 2>&1 || fail "exit $?: $(tail -5 "$work/log")"
for f in target/summary.json retrain/summary.json unlearn-ga/summary.json unlearn-npo/summary.json comparison.txt; do
  [ -f "$work/run/$f" ] || fail "$f missing: $(tail -5 "$work/log")"
done
grep -q "backend over 2 ranks" "$work/log" || fail "not 2 ranks: $(head -5 "$work/log")"
echo PASS
