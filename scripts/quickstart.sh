#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main job: `lethe quickstart` on the embedded
# default corpus, as one data-parallel rank per core (the largest power of two up to the cores and
# at most 8, so the default batches split evenly; one intra-op thread each). Extra arguments go to
# lethe quickstart (e.g. --dir, --set). RANKS=1 runs it as one process using every core.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
cores=$(nproc)
ranks=${RANKS:-1}
if [ -z "${RANKS:-}" ]; then
  while ((ranks * 2 <= cores && ranks < 8)); do ranks=$((ranks * 2)); done
fi
if ((ranks == 1)); then
  exec ./build/launch/lethe quickstart "$@"
fi
# Open MPI refuses root unless told (containers, CI); ranks are unbound: run.threads divides the cores.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
exec mpirun --oversubscribe --bind-to none -np "$ranks" ./build/launch/lethe quickstart --set mesh.dp="$ranks" "$@"
