#!/usr/bin/env bash
# expect_abort.sh LIMIT_S PATTERN COMMAND...: passes when COMMAND (an mpirun job) ends non-zero
# within LIMIT_S seconds and its output matches PATTERN (grep -E): a failure on one rank must end
# every rank with a message, never hang. With EXPECT_ABSENT set, no line may match it either.
set -u
limit=$1 pattern=$2
shift 2
start=$(date +%s)
out=$(timeout "$limit" "$@" 2>&1)
rc=$?
elapsed=$(( $(date +%s) - start ))
echo "$out" | tail -20
echo "exit $rc after ${elapsed} s"
if [ "$rc" -eq 124 ]; then echo "FAIL: still running after ${limit} s (a hang)"; exit 1; fi
if [ "$rc" -eq 0 ]; then echo "FAIL: the job exited 0"; exit 1; fi
if ! echo "$out" | grep -Eq "$pattern"; then echo "FAIL: no line matches: $pattern"; exit 1; fi
if [ -n "${EXPECT_ABSENT:-}" ] && echo "$out" | grep -Eq "$EXPECT_ABSENT"; then
  echo "FAIL: a line matches $EXPECT_ABSENT"; exit 1
fi
echo "PASS"
