#!/usr/bin/env bash
# jsonl_no_qa.sh LETHE CONFIG: a JSONL corpus without QA files (the generated corpus's passages, no
# QA), GA at a rate that wrecks the model and NPO, through train, retrain, unlearn and compare: the
# table has no KnowMem column, shows retain MA and perplexity as the utility, and never names the
# collapsed model closest.
set -u
lethe=$1 config=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
small=(--set train.steps=60 --set eval.max_samples=8)
"$lethe" train "$config" --set run.dir="$work/gen" "${small[@]}" --set train.steps=1 > "$work/gen.log" 2>&1 || fail "corpus: $(tail -3 "$work/gen.log")"
common=(--set run.dir="$work/run" --set corpus.source=jsonl "${small[@]}"
        --set corpus.retain_file="$work/gen/corpus/retain.jsonl" --set corpus.forget_file="$work/gen/corpus/forget.jsonl"
        --set corpus.holdout_file="$work/gen/corpus/holdout.jsonl" --set 'unlearn.methods=["ga","npo"]'
        --set unlearn.max_cycles=2 --set unlearn.learn_steps=0 --set unlearn.ga.lr=0.05)
for phase in train retrain unlearn; do "$lethe" $phase "$config" "${common[@]}" > "$work/$phase.log" 2>&1 || fail "$phase: $(tail -3 "$work/$phase.log")"; done
"$lethe" compare "$work/run" > "$work/compare.log" 2>&1 || fail "compare: $(tail -3 "$work/compare.log")"
table=$(cat "$work/run/comparison.txt")
grep -q "KnowMem-f\|KnowMem-r" <<< "$table" && fail "a KnowMem column without QA: $table"
grep -q "MA-r" <<< "$table" || fail "no retain MA column: $table"
grep -q "utility is retain MA (MA-r) and holdout perplexity (PPL)" <<< "$table" || fail "no utility line: $table"
grep -q "never named closest): ga" <<< "$table" || fail "GA at lr 0.05 did not collapse: $table"
grep -q '"closest_to_retrain": "ga"' "$work/run/comparison.json" && fail "the collapsed model was named closest: $table"
echo PASS
