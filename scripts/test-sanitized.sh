#!/usr/bin/env bash
# The test suites that need no MLIR compiler (spec, formats, tokenizers,
# plan, runtime, server protocol), built with AddressSanitizer and
# UndefinedBehaviorSanitizer in build-asan/ and run with leak detection on.
# Any memory error, leak or undefined behaviour fails the test that hit it.
# The compiler's suites (kvplan-compiler-tests, kvplan-serve-tests, lit) are
# not in this build (docs/fuzzing.md says why). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
suites=(kvplan-unit-tests kvplan-tokenizer-tests kvplan-weights-tests kvplan-server-tests)
# The fuzz targets too: they share every object file with the suites.
scripts/sanitize-build.sh "${suites[@]}" kvplan-fuzzers
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
ctest --test-dir build-asan --output-on-failure -j "$(nproc)" --timeout 600
