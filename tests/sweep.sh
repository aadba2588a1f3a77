#!/usr/bin/env bash
# sweep.sh LETHE CONFIG: `lethe sweep` of 2 grid points × 2 methods (Note [Sweeps]).
# - Killed (SIGKILL) once its first sub-run has finished, then rerun: the finished sub-runs are
#   skipped (their summaries untouched), the interrupted one resumes, and every sub-run's metrics
#   equal an uninterrupted sweep's.
# - Sharded through launch/lethe-sweep.sbatch: a shard refuses to start before the shared models
#   exist; after --prepare, array tasks 0 and 1 of 2 together run every sub-run once, and the last
#   writes the report.
set -u -m
lethe=$1 config=$2
work=$(mktemp -d)
[ -n "${KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
common=(--set train.steps=8 --set 'unlearn.methods=["ga","npo"]' --set unlearn.max_cycles=3 --set unlearn.unlearn_steps=4
        --set unlearn.learn_steps=1 --set eval.max_samples=8 --grid 'unlearn.lr=[1e-4,3e-4]')
points=(ga/lr=1e-4 ga/lr=3e-4 npo/lr=1e-4 npo/lr=3e-4)
fail() { echo "FAIL: $*"; exit 1; }
sweep() { local dir=$1; shift; "$lethe" sweep "$config" --set run.dir="$dir" "${common[@]}" "$@"; }
summary() { echo "$1/sweep/$2/unlearn-${2%%/*}/summary.json"; }
metrics() { sed -n '/"metrics": {/,/}/p' "$1"; }

sweep "$work/ref" > "$work/ref.log" 2>&1 || fail "uninterrupted sweep: $(tail -5 "$work/ref.log")"
for p in "${points[@]}"; do [ -f "$(summary "$work/ref" "$p")" ] || fail "ref: $p has no summary"; done
for f in sweep.txt sweep.json sweep.dat sweep.gnuplot; do [ -f "$work/ref/sweep/$f" ] || fail "ref: sweep/$f missing"; done
grep -q '"front": true' "$work/ref/sweep/sweep.json" || fail "sweep.json has no point on a front"
[ -L "$work/ref/sweep/ga/lr=1e-4/target" ] || fail "a point's target/ is not a link to the shared one"
[ "$(ls -d "$work/ref"/sweep/*/*/unlearn-*/checkpoints | wc -l)" -eq 4 ] || fail "not one sub-run per point"

# Killed once the first sub-run has finished, then rerun.
sweep "$work/run" > "$work/run.log" 2>&1 &
pid=$!
first=$(summary "$work/run" "${points[0]}")
while [ ! -f "$first" ] && kill -0 $pid 2>/dev/null; do sleep 0.05; done
kill -9 -- -$pid 2>/dev/null  # the job's process group: the subshell and lethe
wait $pid 2>/dev/null
[ -f "$first" ] || fail "the sweep ended before its first sub-run finished: $(tail -5 "$work/run.log")"
[ -f "$(summary "$work/run" "${points[3]}")" ] && fail "the kill came after the last sub-run (the test proves nothing)"
cp "$first" "$work/first.json"
sweep "$work/run" > "$work/rerun.log" 2>&1 || fail "rerun: $(tail -5 "$work/rerun.log")"
grep -q "sweep/ga/lr=1e-4 has finished: skipped" "$work/rerun.log" || fail "the finished point was not skipped: $(grep sweep: "$work/rerun.log")"
cmp -s "$first" "$work/first.json" || fail "the finished point's summary changed on rerun"
for p in "${points[@]}"; do
  [ -f "$(summary "$work/run" "$p")" ] || fail "rerun: $p has no summary"
  [ "$(metrics "$(summary "$work/run" "$p")")" = "$(metrics "$(summary "$work/ref" "$p")")" ] ||
    fail "$p: the resumed sweep's metrics differ from the uninterrupted one's"
done
[ -f "$work/run/sweep/sweep.json" ] || fail "the resumed sweep wrote no report"
# A third run skips every point and writes the same report.
sweep "$work/run" > "$work/again.log" 2>&1 || fail "third run: $(tail -5 "$work/again.log")"
[ "$(grep -c 'has finished: skipped' "$work/again.log")" -eq 4 ] || fail "third run: not every point skipped"

# Shards, through launch/lethe-sweep.sbatch as Slurm runs it (srun stood in for by a shim that
# runs its command): refused before the shared models exist; then --prepare, and array tasks 0
# and 1 of 2.
mkdir -p "$work/bin"
printf '#!/usr/bin/env bash\nwhile [[ $1 == --* ]]; do shift; done\nexec "$@"\n' > "$work/bin/srun"
chmod +x "$work/bin/srun"
slurm() { PATH="$work/bin:$PATH" LETHE=$lethe bash "$(dirname "$0")/../launch/lethe-sweep.sbatch" "$config" \
            --set run.dir="$work/shard" "${common[@]}" "$@"; }
SLURM_ARRAY_TASK_ID=0 SLURM_ARRAY_TASK_COUNT=2 slurm > "$work/shard0.log" 2>&1 && fail "a shard ran without the shared models"
grep -q "and --prepare first" "$work/shard0.log" || fail "shard without models: $(tail -2 "$work/shard0.log")"
slurm --prepare > "$work/prepare.log" 2>&1 || fail "--prepare: $(tail -3 "$work/prepare.log")"
grep -q "as a Slurm array: --array=0-3" "$work/prepare.log" || fail "--prepare: no array size: $(tail -3 "$work/prepare.log")"
[ -f "$work/shard/retrain/summary.json" ] && [ ! -d "$work/shard/sweep/ga" ] || fail "--prepare did more or less than the models"
SLURM_ARRAY_TASK_ID=0 SLURM_ARRAY_TASK_COUNT=2 slurm > "$work/shard0.log" 2>&1 || fail "shard 0/2: $(tail -3 "$work/shard0.log")"
[ -f "$work/shard/sweep/sweep.json" ] && fail "shard 0/2 wrote the report before shard 1/2 ran"
grep -q "2 of 4 sub-runs have finished" "$work/shard0.log" || fail "shard 0/2: $(tail -2 "$work/shard0.log")"
SLURM_ARRAY_TASK_ID=1 SLURM_ARRAY_TASK_COUNT=2 slurm > "$work/shard1.log" 2>&1 || fail "shard 1/2: $(tail -3 "$work/shard1.log")"
ran=$(cat "$work/shard0.log" "$work/shard1.log" | grep ': running ' | grep -o 'sweep/[a-z]*/lr=[0-9e-]*' | sort)
[ "$ran" = "$(printf 'sweep/%s\n' "${points[@]}" | sort)" ] || fail "the shards did not run every point once: $ran"
[ -f "$work/shard/sweep/sweep.json" ] || fail "the last shard wrote no report"
echo PASS
