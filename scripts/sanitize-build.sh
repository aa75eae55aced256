#!/usr/bin/env bash
# Configures build-asan/ (clang 19, AddressSanitizer + UndefinedBehaviorSanitizer,
# libFuzzer coverage, no MLIR compiler) if needed and builds the given
# targets there. scripts/test-sanitized.sh and scripts/fuzz.sh share it, so
# the code is built once for both.
#   scripts/sanitize-build.sh TARGET...
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in clang-19 clang++-19; do
  if ! command -v "$tool" >/dev/null; then
    echo "sanitize-build: $tool is missing; run scripts/setup.sh (it installs clang-19 and" \
         "libclang-rt-19-dev)" >&2
    exit 1
  fi
done
if [ ! -f build-asan/build.ninja ]; then
  # -O1 with line tables: the usual speed for sanitizers, and stack traces
  # with file:line. The compiler (MLIR) is left out: Debian's MLIR is not
  # instrumented, and its tests are the slowest to build.
  launcher=()
  if command -v ccache >/dev/null; then
    launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
  fi
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug \
    "-DCMAKE_CXX_FLAGS_DEBUG=-O1 -gline-tables-only" "-DCMAKE_C_FLAGS_DEBUG=-O1 -gline-tables-only" \
    -DCMAKE_CXX_COMPILER=clang++-19 -DCMAKE_C_COMPILER=clang-19 \
    -DKVPLAN_COMPILER=OFF -DKVPLAN_CUDA=OFF -DKVPLAN_FUZZ=ON "${launcher[@]}" >/dev/null
fi
cmake --build build-asan --target "$@"
