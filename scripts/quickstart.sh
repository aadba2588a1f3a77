#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main job: `lethe quickstart` on the embedded
# default corpus (one CPU process). Extra arguments go to lethe quickstart (e.g. --dir, --set).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
./build/launch/lethe quickstart "$@"
