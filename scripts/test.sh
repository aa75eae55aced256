#!/usr/bin/env bash
# Runs every test: the GoogleTest suites and the lit suite (through ctest),
# then builds the runtime alone and checks it runs a compiled artifact without
# MLIR, then the MLIR-free suites again under ASan+UBSan (build-asan/) and
# each fuzz target for $KVPLAN_FUZZ_SECONDS (default 10) seconds
# (docs/fuzzing.md). Exits non-zero on any failure or fuzz finding.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f build/build.ninja ]; then
  echo "test: build/ is not configured; run scripts/setup.sh first" >&2
  exit 1
fi
cmake --build build
ctest --test-dir build --output-on-failure -j "$(nproc)"
scripts/check-runtime-only.sh
scripts/test-sanitized.sh
scripts/fuzz.sh "${KVPLAN_FUZZ_SECONDS:-10}"
