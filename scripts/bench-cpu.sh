#!/usr/bin/env bash
# The CPU performance figures, side by side in one run: models/stories110m.toml
# (random weights) compiled with f32, bf16, f16, int8 and int4 weights, each
# benchmarked with a 64-token prompt (one prefill chunk) and 128 decode steps
# next to the machine's measured bandwidth and peak FMA rate.
# Usage: scripts/bench-cpu.sh [--threads N]   (after scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
kvplan=build/bin/kvplan
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '%-6s %9s %11s %12s %12s %9s %11s %12s\n' dtype "GB/s" "peak GF/s" "decode t/s" "roofline" \
  "vs f32" "prefill t/s" "% of peak"
f32=""
for dtype in f32 bf16 f16 int8 int4; do
  "$kvplan" compile models/stories110m.toml --dtype "$dtype" -o "$tmp/$dtype.kvp" 2>/dev/null
  json=$("$kvplan" bench "$tmp/$dtype.kvp" --prompt-len 64 --gen 128 --json "$@")
  python3 - "$dtype" "$json" "${f32:-0}" <<'PY'
import json, sys
d, j, f32 = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
ratio = j["decode_tok_s"] / f32 if f32 else 1.0
print("%-6s %9.1f %11.1f %12.1f %11.0f%% %8.2fx %11.1f %11.0f%%" % (
    d, j["bandwidth_gb_s"], j["peak_gflops"], j["decode_tok_s"],
    100 * j["decode_roofline_fraction"], ratio, j["prefill_tok_s"],
    100 * j["prefill_peak_fraction"]))
PY
  if [ -z "$f32" ]; then
    f32=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["decode_tok_s"])' "$json")
  fi
done
