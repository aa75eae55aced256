#!/usr/bin/env bash
# Speculative decoding's figures (docs/speculative.md), each side by side in
# one run of `kvplan bench --speculate`: the cost of a verify step of 5 rows
# against a decode step on stories110M's shape (models/stories110m.toml,
# random bf16 weights), and prompt lookup on stories260K's real weights,
# greedy from BOS (its own stories), with the speed-up it gives. Each bench
# runs `runs` times (default 3) to show the spread on a shared machine.
# Usage: scripts/bench-speculate.sh [runs]   (after scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
kvplan=build/bin/kvplan
runs=${1:-3}
shared=${KVPLAN_SHARED_DIR:-../shared}/models/stories260K
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$kvplan" compile models/stories110m.toml --dtype bf16 --max-batch 1 --max-seq 1024 \
  --speculate 4 -o "$tmp/110m.kvp" 2>/dev/null
benches=("110m|$tmp/110m.kvp|--prompt-len 128 --gen 64")
if [ -f "$shared/stories260K.bin" ]; then
  "$kvplan" compile "$shared/stories260K.bin" --tokenizer "$shared/tok512.model" --speculate 4 \
    -o "$tmp/260k.kvp" 2>/dev/null
  benches+=("260K|$tmp/260k.kvp|--prompt-len 1 --gen 400")
fi
printf '%-5s %6s %10s %10s %7s %10s %10s %8s %9s %5s\n' model load "decode ms" "verify ms" ratio \
  "plain t/s" "spec t/s" speedup "tok/verif" same
for b in "${benches[@]}"; do
  IFS='|' read -r name art flags <<< "$b"
  for _ in $(seq "$runs"); do
    load=$(cut -d' ' -f1 /proc/loadavg)
    # shellcheck disable=SC2086
    json=$("$kvplan" bench "$art" --speculate prompt-lookup $flags --threads 2 --json)
    python3 - "$name" "$load" "$json" <<'PY'
import json, sys
n, load, j = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
print("%-5s %6s %10.3f %10.3f %6.2fx %10.1f %10.1f %7.2fx %9.2f %5s" % (
    n, load, j["decode_step_ms"], j["verify_step_ms"], j["verify_decode_ratio"],
    j["plain_tok_s"], j["speculative_tok_s"], j["speedup"], j["tokens_per_verify"],
    "yes" if j["outputs_identical"] else "NO"))
PY
  done
done
