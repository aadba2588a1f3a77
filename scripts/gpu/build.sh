#!/usr/bin/env bash
# On the GPU machine: configures and builds Lethe against the CUDA LibTorch of its PyTorch
# (torch.utils.cmake_prefix_path), NCCL from its nvidia-nccl package and the Debian libraries of
# .gpukit/ (scripts/gpu/make_kit.sh), for Hopper (CMAKE_CUDA_ARCHITECTURES=90); then runs what is
# asked:
#   scripts/gpu/build.sh            build, then the whole test suite (ctest)
#   scripts/gpu/build.sh bench ...  build, then benchmarks/gpu/run.sh with the given arguments
#   scripts/gpu/build.sh env CMD    build, then CMD with the kit's environment (mpirun, libraries)
#   scripts/gpu/build.sh configure  configure only
# The build folder is build-gpu/ (ignored); nothing here touches the system.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
KIT=$ROOT/.gpukit/root
LIB=$KIT/usr/lib/x86_64-linux-gnu
[ -d "$KIT" ] || { echo "build.sh: $KIT is missing: run scripts/gpu/make_kit.sh on a Debian machine and carry .gpukit" >&2; exit 2; }
command -v c++ >/dev/null || { echo "build.sh: no C++ compiler (c++) on this machine" >&2; exit 2; }
PY=${PYTHON:-python3}
# Overridable (a dry run of the kit on a CPU machine: TORCH_PREFIX, NCCL_ROOT and REQUIRE_CUDA=0).
TORCH_PREFIX=${TORCH_PREFIX:-$($PY -c 'import torch; print(torch.utils.cmake_prefix_path)')}
NCCL_ROOT=${NCCL_ROOT:-$($PY -c 'import nvidia.nccl; print(list(nvidia.nccl.__path__)[0])')}
REQUIRE_CUDA=${REQUIRE_CUDA:-1}
echo "build.sh: LibTorch from $TORCH_PREFIX, NCCL from $NCCL_ROOT, $(ldd --version | head -1), $(c++ --version | head -1)"

# The kit's programs and libraries, relocated: Open MPI and PMIx find their components and help
# texts under the kit instead of /usr; pkg-config reads the kit's .pc files with the kit as sysroot.
export OPAL_PREFIX=$KIT/usr PMIX_INSTALL_PREFIX=$KIT/usr
export PMIX_MCA_mca_base_component_path=$LIB/pmix2/lib/pmix
export PATH=$KIT/usr/bin:$PATH
export LD_LIBRARY_PATH=$LIB:$LIB/hdf5/openmpi:$NCCL_ROOT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PKG_CONFIG=$KIT/usr/bin/pkgconf PKG_CONFIG_LIBDIR=$LIB/pkgconfig:$KIT/usr/share/pkgconfig PKG_CONFIG_SYSROOT_DIR=$KIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

if [ ! -f build-gpu/build.ninja ]; then
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$KIT/usr;$LIB/cmake;$TORCH_PREFIX" \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DTORCH_CUDA_ARCH_LIST=9.0 \
    -DNCCL_ROOT="$NCCL_ROOT" -DNCCL_INCLUDE_DIR="$NCCL_ROOT/include" \
    -DNCCL_LIBRARY="$(ls "$NCCL_ROOT"/lib*/libnccl.so* | head -1)" \
    -DMPI_SKIP_COMPILER_WRAPPER=ON -DMPI_C_LIB_NAMES=mpi -DMPI_mpi_LIBRARY="$LIB/openmpi/lib/libmpi.so" \
    -DMPI_C_HEADER_DIR="$LIB/openmpi/include" -DMPIEXEC_EXECUTABLE="$KIT/usr/bin/mpirun" \
    -DHDF5_ROOT="$LIB/hdf5/openmpi" \
    -DHDF5_C_INCLUDE_DIR="$LIB/hdf5/openmpi/include" -DHDF5_hdf5_LIBRARY_RELEASE="$LIB/hdf5/openmpi/libhdf5.so" \
    -DLETHE_WITH_NCCL=ON
fi
[ "${1:-}" = configure ] && exit 0
cmake --build build-gpu -j "$(nproc)" -- -k 0  # every error of the build at once
if [ "$REQUIRE_CUDA" = 1 ] && ! grep -q "LETHE_TORCH_CUDA=1" build-gpu/build.ninja; then
  echo "build.sh: the LibTorch at $TORCH_PREFIX has no CUDA" >&2
  exit 1
fi

case "${1:-test}" in
  test) cd build-gpu && ctest --output-on-failure -j 4 ;;
  bench) shift; exec benchmarks/gpu/run.sh build-gpu "$@" ;;
  env) shift; exec "$@" ;;
  *) echo "build.sh: expected test, bench or env, not $1" >&2; exit 2 ;;
esac
