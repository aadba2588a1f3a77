#!/usr/bin/env bash
# checkpoint_full_disk.sh LETHE CONFIG MPIRUN...: a 2-rank run whose disk (a small tmpfs) fills
# before a checkpoint. With the reservation (the normal path) the job ends with "cannot reserve …
# disk full"; without it (LETHE_TEST_NO_RESERVE=1) the collective HDF5 write itself fails and ends the
# job. Either way the previous checkpoint and `latest` stay as they were, nothing partial becomes
# visible, and once space is back the run resumes from the previous checkpoint and finishes.
# Exits 77 (skipped) where this machine cannot mount a tmpfs.
set -u
lethe=$1 config=$2
shift 2
mpirun=("$@")
mnt=$(mktemp -d)
mount -t tmpfs -o size=16m tmpfs "$mnt" 2>/dev/null || { echo "SKIP: cannot mount a tmpfs here"; rmdir "$mnt"; exit 77; }
trap 'umount "$mnt"; rmdir "$mnt"' EXIT
dir=$mnt/run
common=(--set "run.dir=$dir" --set train.steps=20 --set train.checkpoint_every=10 --set run.log_every=10 --set mesh.dp=2
        --set run.collective_timeout_s=10)
fail() { echo "FAIL: $*"; exit 1; }
ckpts=$dir/target/checkpoints

"${mpirun[@]}" -np 2 "$lethe" train "$config" "${common[@]}" --stop-after 10 > /dev/null 2>&1 || fail "first run"
[ "$(cat "$ckpts/latest")" = "step-00000010.h5" ] || fail "no checkpoint at step 10"
before=$(md5sum "$ckpts/step-00000010.h5")
free=$(df --output=avail -B1 "$mnt" | tail -1)
fallocate -l $((free - 300000)) "$mnt/filler" || fail "cannot fill the tmpfs"
echo "disk full: $(df --output=avail -B1 "$mnt" | tail -1) bytes free"

# Without the reservation, ranks that meet the full disk inside MPI-IO leave their peers waiting in
# the collective: the deadline ends the job.
for hook in 0 1; do
  out=$(LETHE_TEST_NO_RESERVE=$hook timeout 120 "${mpirun[@]}" -x LETHE_TEST_NO_RESERVE -np 2 "$lethe" train "$config" \
        "${common[@]}" --resume 2>&1)
  rc=$?
  echo "$out" | grep -E "error|fatal" | head -3
  echo "LETHE_TEST_NO_RESERVE='$hook': exit $rc"
  [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "a full disk must end the job non-zero, not hang (exit $rc)"
  if [ "$hook" = 0 ]; then
    echo "$out" | grep -q "cannot reserve .* disk full" || fail "no 'cannot reserve … disk full' message"
  else
    echo "$out" | grep -Eq "step-00000020.h5.tmp: .*(did not complete within|failed)" || fail "no message naming the file"
  fi
  [ "$(cat "$ckpts/latest")" = "step-00000010.h5" ] || fail "latest moved"
  [ ! -e "$ckpts/step-00000020.h5" ] || fail "a partial checkpoint became visible"
  [ "$(md5sum "$ckpts/step-00000010.h5")" = "$before" ] || fail "the previous checkpoint changed"
done

rm -f "$mnt/filler"
out=$("${mpirun[@]}" -np 2 "$lethe" train "$config" "${common[@]}" --resume 2>&1) || fail "resume: $out"
echo "$out" | grep -q "step-00000010.h5 at step 10" || fail "did not resume from step 10"
[ "$(cat "$ckpts/latest")" = "step-00000020.h5" ] || fail "the resumed run did not finish"
echo PASS
