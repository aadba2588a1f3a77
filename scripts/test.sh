#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite under ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
# Sequential: each test already uses both cores (parallel ctest oversubscribes OpenMP 10×).
ctest --test-dir build --output-on-failure --timeout 900
# Then the io, config, corpus, checkpoint, safetensors and eval tests and the short fuzz runs
# under AddressSanitizer and UndefinedBehaviorSanitizer, in build-asan/.
bash scripts/sanitize.sh
