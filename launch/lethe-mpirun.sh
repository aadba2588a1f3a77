#!/usr/bin/env bash
# lethe-mpirun.sh NP LETHE-ARGS…: runs `lethe` on NP ranks of this machine (or of the hosts in
# $HOSTFILE) with the flags that matter (docs/distributed.md):
#   --bind-to none     ranks spread their threads over all cores (Open MPI binds np ≤ 2 to one core)
#   --oversubscribe    more ranks than cores is allowed (tests, laptops)
#   --allow-run-as-root when root (containers)
#   OMP_NUM_THREADS    cores of the node ÷ ranks per node, unless set
# Example: launch/lethe-mpirun.sh 4 build/launch/lethe train run.toml --set mesh.tp=2 --set mesh.dp=2
set -euo pipefail
np=$1
shift
per_node=$np
args=(--bind-to none --oversubscribe)
if [ -n "${HOSTFILE:-}" ]; then
  args+=(--hostfile "$HOSTFILE")
  per_node=$(( np / $(grep -cv '^\s*\(#\|$\)' "$HOSTFILE") ))
fi
[ "$(id -u)" = 0 ] && args+=(--allow-run-as-root)
threads=${OMP_NUM_THREADS:-$(( $(nproc) / per_node > 0 ? $(nproc) / per_node : 1 ))}
exec mpirun "${args[@]}" -x OMP_NUM_THREADS="$threads" -np "$np" "$@"
