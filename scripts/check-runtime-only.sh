#!/usr/bin/env bash
# Checks the runtime-only kvplan (build/bin/kvplan-runtime: the tool as
# -DKVPLAN_COMPILER=OFF builds it, made beside the full one from the same
# libraries): it links no MLIR or LLVM library and runs an artifact the full
# build wrote, producing the same token ids as the full build.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f build/build.ninja ]; then
  echo "runtime-only: build/ is not configured; run scripts/setup.sh first" >&2
  exit 1
fi
cmake --build build --target kvplan kvplan-runtime
bin=build/bin/kvplan-runtime
if [ ! -x "$bin" ]; then
  echo "runtime-only: $bin was not built; build/ needs the compiler (-DKVPLAN_COMPILER=ON)" >&2
  exit 1
fi
if ldd "$bin" | grep -Ei 'libMLIR|libLLVM'; then
  echo "runtime-only: $bin links MLIR or LLVM" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
build/bin/kvplan compile models/tiny.toml -o "$tmp/tiny.kvp" 2>/dev/null
build/bin/kvplan inspect --json "$tmp/tiny.kvp" > "$tmp/full.json"
"$bin" inspect --json "$tmp/tiny.kvp" > "$tmp/runtime.json"
cmp "$tmp/full.json" "$tmp/runtime.json"
run=(run "$tmp/tiny.kvp" -p "hello" -n 24 --temperature 0.8 --seed 3 --print-ids --threads 2)
build/bin/kvplan "${run[@]}" > "$tmp/full.ids"
"$bin" "${run[@]}" > "$tmp/runtime.ids"
cmp "$tmp/full.ids" "$tmp/runtime.ids"
if "$bin" compile models/tiny.toml -o "$tmp/x.kvp" 2>/dev/null; then
  echo "runtime-only: the runtime build should not offer compile" >&2
  exit 1
fi
# kvplan report reads an artifact without the compiler: every part of the
# page but the per-pass IR, which needs it.
"$bin" report "$tmp/tiny.kvp" -o "$tmp/report.html" 2>/dev/null
grep -q "Compile from the model to see every pass" "$tmp/report.html"
grep -q "<svg class=arena data-entry='decode'" "$tmp/report.html"
if "$bin" report models/tiny.toml -o "$tmp/model.html" 2>/dev/null; then
  echo "runtime-only: the runtime build should not compile a model to report it" >&2
  exit 1
fi
# With the CUDA runtime (KVPLAN_CUDA, on wherever nvcc is): no CUDA library
# is a load-time dependency, and a cuda artifact reads the same and, without
# a device, says so.
if grep -q '^KVPLAN_CUDA:BOOL=ON' build/CMakeCache.txt; then
  if ldd "$bin" | grep -Ei 'libcudart|libcublas|libcuda\.so'; then
    echo "runtime-only: $bin needs a CUDA library to start" >&2
    exit 1
  fi
  build/bin/kvplan compile models/tiny.toml --target cuda --arch sm_90a -o "$tmp/cuda.kvp" 2>/dev/null
  build/bin/kvplan inspect --json "$tmp/cuda.kvp" > "$tmp/cuda-full.json"
  "$bin" inspect --json "$tmp/cuda.kvp" > "$tmp/cuda-runtime.json"
  cmp "$tmp/cuda-full.json" "$tmp/cuda-runtime.json"
  if ! nvidia-smi -L >/dev/null 2>&1; then
    if "$bin" run "$tmp/cuda.kvp" -p "hello" -n 4 2> "$tmp/cuda.err"; then
      echo "runtime-only: a cuda artifact ran without a GPU" >&2
      exit 1
    fi
    grep -q "no CUDA device" "$tmp/cuda.err" || { cat "$tmp/cuda.err" >&2; exit 1; }
  fi
  echo "runtime-only: the CUDA runtime loads no CUDA library at start; $(cat "$tmp/cuda.err" 2>/dev/null || echo 'a GPU is present')"
fi
echo "runtime-only: $bin links no MLIR and gives the full build's ids: $(cat "$tmp/runtime.ids")"
