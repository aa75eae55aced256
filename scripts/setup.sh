#!/usr/bin/env bash
# Installs what kvplan needs from Debian's packages (only those missing), then
# configures build/ (CMake, Ninja, Release) and builds it. Safe to re-run.
# Extra arguments go to CMake, e.g. scripts/setup.sh -DKVPLAN_CUDA=OFF
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  cmake ninja-build g++ pkg-config python3 git
  libmlir-19-dev mlir-19-tools llvm-19-dev llvm-19-tools
  libtomlplusplus-dev nlohmann-json3-dev libcli11-dev libxxhash-dev
  libsentencepiece-dev libpcre2-dev libutf8proc-dev libcpp-httplib-dev
  libgtest-dev libbenchmark-dev libssl-dev
  clang-19 libclang-rt-19-dev
  libopenmpi-dev openmpi-bin  # tensor-parallel ranks (mpirun -np N kvplan ...)
  chromium  # kvplan report's browser tests (headless; they skip without it)
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DLLVM_EXTERNAL_LIT=/usr/lib/llvm-19/build/utils/lit/lit.py "$@" >/dev/null
cmake --build build
