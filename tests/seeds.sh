#!/usr/bin/env bash
# seeds.sh LETHE CONFIG: `lethe train`, `retrain`, `unlearn` and `compare` with experiment.seeds = 2
# (Note [Seeds]): each seed has its own experiment folder on the same corpus, its own target (the
# initialisation moves with the seed), and the top-level comparison aggregates both seeds.
set -u
lethe=$1 config=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
common=(--set run.dir="$work" --set experiment.seeds=2 --set train.steps=8 --set 'unlearn.methods=["ga"]'
        --set unlearn.max_cycles=2 --set unlearn.unlearn_steps=2 --set unlearn.learn_steps=1 --set eval.max_samples=4)
fail() { echo "FAIL: $*"; exit 1; }
for phase in train retrain unlearn; do "$lethe" $phase "$config" "${common[@]}" > "$work/$phase.log" 2>&1 || fail "$phase: $(tail -3 "$work/$phase.log")"; done
"$lethe" compare "$work" > "$work/compare.log" 2>&1 || fail "compare: $(tail -3 "$work/compare.log")"
for s in 1234 1235; do
  for f in target/summary.json retrain/summary.json unlearn-ga/summary.json comparison.json; do
    [ -f "$work/seed-$s/$f" ] || fail "seed-$s/$f missing"
  done
  grep -qx "seed = $s" "$work/seed-$s/target/config.toml" || fail "seed-$s trained with another run.seed"
done
cmp -s "$work/seed-1234/corpus/forget.jsonl" "$work/seed-1235/corpus/forget.jsonl" || fail "the seeds' corpora differ"
cmp -s "$work/seed-1234/target/summary.json" "$work/seed-1235/target/summary.json" && fail "both seeds gave the same target"
grep -q '"seed-1235"' "$work/comparison.json" || fail "comparison.json: $(head -c 300 "$work/comparison.json")"
grep -q "2 seeds" "$work/comparison.txt" || fail "comparison.txt: $(cat "$work/comparison.txt")"
# One checkpoint for every seed is a contradiction, named before anything runs.
"$lethe" unlearn "$config" "${common[@]}" --set unlearn.from=x.h5 > "$work/from.log" 2>&1 && fail "unlearn.from with seeds ran"
grep -q "unlearn.from: names one checkpoint, but experiment.seeds = 2" "$work/from.log" || fail "from: $(cat "$work/from.log")"
echo PASS
