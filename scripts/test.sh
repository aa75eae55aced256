#!/usr/bin/env bash
# Runs every test: the GoogleTest suites and the lit suite (through ctest),
# then builds the runtime alone and checks it runs a compiled artifact without
# MLIR. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f build/build.ninja ]; then
  echo "test: build/ is not configured; run scripts/setup.sh first" >&2
  exit 1
fi
cmake --build build
ctest --test-dir build --output-on-failure -j "$(nproc)"
scripts/check-runtime-only.sh
