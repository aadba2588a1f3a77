#!/usr/bin/env bash
# Prepares .gpukit/: the Debian 12 packages a GPU build of Lethe needs besides LibTorch, CUDA and
# NCCL (which the GPU machine's PyTorch brings), unpacked with dpkg -x under .gpukit/root. Run on a
# Debian 12 machine with apt; carry .gpukit to the GPU machine and run scripts/gpu/build.sh there.
#
# The runtime libraries come with their dependency closure, minus what every Linux has (the C
# library, libstdc++, zlib, …); the -dev packages add headers and link-time symlinks alone. Static
# libraries of packages that also ship shared ones, documentation and man pages are dropped to stay
# well under the 64 MiB that can travel.
set -euo pipefail
cd "$(dirname "$0")/../.."
KIT=.gpukit

# Shared libraries (and programs) that must run there.
RUNTIME=(libopenmpi3 openmpi-bin libhdf5-openmpi-103-1 libsentencepiece0 libxxhash0 libfmt9 libspdlog1.10 libtomlplusplus3
         pkgconf-bin libpkgconf3)
# Headers, CMake configs, pkg-config files and unversioned .so links for building.
DEV=(libopenmpi-dev libhdf5-openmpi-dev libsentencepiece-dev libxxhash-dev libfmt-dev libspdlog-dev
     libtomlplusplus-dev libcli11-dev nlohmann-json3-dev libgtest-dev libgmock-dev googletest libbenchmark-dev
     libbenchmark1debian pkgconf)
# Present on every glibc Linux (and ABI-compatible across distributions): never shipped.
BASE='^(libc6|libgcc-s1|libstdc\+\+6|zlib1g|libzstd1|liblzma5|libbz2-1.0|libcrypt1|libselinux1|libpcre2-8-0|debconf.*|dpkg|perl.*|libperl.*|python3.*|libpython3.*|tar|gzip|coreutils|libssl3|libgnutls30|libkrb5.*|libgssapi.*|libk5crypto3|libcom-err2|libkeyutils1|libtinfo6|libsystemd0|libcap2|libgcrypt20|libgpg-error0|liblz4-1|libtasn1-6|libp11-kit0|libffi8|libidn2-0|libunistring2|libnettle8|libhogweed6|libgmp10|libdb5.3|libsqlite3-0|libnsl2|libtirpc.*|libattr1|libacl1|libmd0|libaudit.*|libcap-ng0|libsemanage.*|libsepol2|lsb-base|sensible-utils|init-system-helpers|mount|libmount1|libblkid1|libuuid1|libsmartcols1|util-linux.*|procps|libprocps8|adduser|passwd|login|libpam.*|ucf|readline-common|libreadline8|libgfortran5|gfortran.*|libquadmath0|gcc.*|cpp.*|g\+\+.*|libgcc-.*-dev|libstdc\+\+-.*-dev|libc6-dev|libc-dev-bin|linux-libc-dev|libcrypt-dev|libnsl-dev|libtirpc-dev|rpcsvc-proto|binutils.*|libbinutils|libctf.*|libgprofng0|libjansson4|libisl23|libmpc3|libmpfr6|libcc1-0|libgomp1|libitm1|libatomic1|libasan8|liblsan0|libtsan2|libubsan1|libhwasan0|make|patch|libdpkg-perl|build-essential|dpkg-dev|bzip2|xz-utils|mpi-default-.*|openmpi-common)$'

# Optional for a build and its tests, and heavy: hwloc's plugins (X11, OpenCL, libxml2 with ICU's
# 30 MB), ssh (the kit's mpirun launches ranks on one node only), debconf's front ends, and the
# serial HDF5 (Lethe links the Open MPI one).
OPTIONAL='^(libhwloc-plugins|libxml2|libicu.*|libx11.*|libxcb.*|libxau6|libxdmcp6|libxext6|libxnvctrl0|ocl-icd-libopencl1|openssh-client|libfido2-1|libcbor.*|libedit2|libbsd0|cdebconf|libnewt.*|libslang2|libtextwrap1|libdebian-installer4|install-info|libhdf5-103-1|libhdf5-cpp-103-1|libhdf5-hl-100|libhdf5-hl-cpp-100|libhdf5-fortran-102|libhdf5-hl-fortran-100|libhdf5-openmpi-fortran-102|libhdf5-openmpi-hl-fortran-100|hdf5-helpers|libjpeg.*|libaec-dev|libcurl.*-dev|zlib1g-dev|libjpeg-dev|libevent-dev|libhwloc-dev|libibverbs-dev|libnl-.*-dev|libpmix-dev|gfortran.*|libgfortran.*)$'

closure() {
  apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
    --no-enhances "$@" 2>/dev/null | grep -v '^ ' | grep -v '^<' | sort -u
}

mapfile -t PKGS < <( { closure "${RUNTIME[@]}"; printf '%s\n' "${DEV[@]}" openmpi-common; } | grep -Ev "$BASE|^openmpi-common$" | grep -Ev "$OPTIONAL" | sort -u)
PKGS+=(openmpi-common)  # Open MPI's help texts and MCA defaults (no libraries)
rm -rf "$KIT"
mkdir -p "$KIT/debs" "$KIT/root"
(cd "$KIT/debs" && apt-get download "${PKGS[@]}" >/dev/null)
for deb in "$KIT"/debs/*.deb; do dpkg -x "$deb" "$KIT/root"; done
rm -rf "$KIT/debs" "$KIT/root/usr/share/doc" "$KIT/root/usr/share/man" "$KIT/root/usr/share/lintian" \
       "$KIT/root/usr/share/locale" "$KIT/root/usr/lib/x86_64-linux-gnu/openmpi/lib/"*.a \
       "$KIT/root/usr/lib/x86_64-linux-gnu/fortran" "$KIT/root/usr/lib/x86_64-linux-gnu/"libhdf5_serial*
# Static archives whose shared library is also there are not needed (gtest/benchmark stay static).
find "$KIT/root" -name '*.a' | while read -r a; do [ -e "${a%.a}.so" ] && rm -f "$a"; done
# The names Debian gives through update-alternatives, which dpkg -x does not run.
ln -sf mpirun.openmpi "$KIT/root/usr/bin/mpirun"
ln -sf mpiexec.openmpi "$KIT/root/usr/bin/mpiexec"
ln -sf pkgconf "$KIT/root/usr/bin/pkg-config"
printf '%s\n' "${PKGS[@]}" > "$KIT/packages.txt"
echo "$KIT: ${#PKGS[@]} packages, $(du -sh "$KIT" | cut -f1) (carry it: run(carry=[\"$KIT\"]) and scripts/gpu/build.sh there)"
