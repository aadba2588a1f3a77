#!/usr/bin/env bash
# Installs the Debian 12 packages Lethe builds and runs with, only those missing.
# Idempotent; uses sudo when not root. See docs/building.md.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config ccache git
  libtorch-dev libopenblas0-openmp
  libopenmpi-dev openmpi-bin libhdf5-openmpi-dev
  libtomlplusplus-dev libgtest-dev libbenchmark-dev
  libsentencepiece-dev sentencepiece
  libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev libxxhash-dev
  gnuplot-nox
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install_deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
echo "install_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
