#!/usr/bin/env bash
# What the reduced-activation linears (runtime/cpu/LinearDot.h) buy, side by
# side in one run: stories110M's shape (models/stories110m.toml, random
# weights) in bf16, int8 and int4, each run three ways, interleaved round by
# round so that a shared machine's drift hits all three:
#   default  the reduced mode at the CPU's best level: bf16 weights meet bf16
#            activations in vdpbf16ps (AVX512_BF16), int8/int4 weights int8
#            activations in vpdpbusd (AVX512_VNNI)
#   f32      KVPLAN_ACTIVATIONS=f32: the plan's arithmetic, f32 activations
#   avx2     KVPLAN_ISA=avx2: int8 activations in vpmaddubsw + vpmaddwd, bf16
#            weights converted to f32 (every kernel at AVX2, not only the linear)
# Each run: kvplan bench ART --prompt-len 64 --gen 128 --threads T. Prints the
# medians and each mode's ratio to the default's, also as the median and
# range of the per-round ratios.
# Usage: scripts/bench-activations.sh [--rounds N] [--threads T]   (after scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=5 threads=2
while [ $# -gt 0 ]; do
  case "$1" in
  --rounds) rounds="$2"; shift 2 ;;
  --threads) threads="$2"; shift 2 ;;
  *) echo "bench-activations.sh: unknown argument '$1' (see the usage at the top of the script)" >&2; exit 1 ;;
  esac
done
kvplan=build/bin/kvplan
[ -x "$kvplan" ] || { echo "bench-activations.sh: no $kvplan; build kvplan first (scripts/setup.sh)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for dtype in bf16 int8 int4; do
  "$kvplan" compile models/stories110m.toml --dtype "$dtype" --max-batch 1 --max-seq 1024 \
    --prefill-chunk 64 -o "$tmp/$dtype.kvp" >/dev/null
done
results="$tmp/results.tsv"
for round in $(seq "$rounds"); do
  for dtype in bf16 int8 int4; do
    for mode in default f32 avx2; do
      case "$mode" in
      default) env=() ;;
      f32) env=(KVPLAN_ACTIVATIONS=f32) ;;
      avx2) env=(KVPLAN_ISA=avx2) ;;
      esac
      env "${env[@]}" "$kvplan" bench "$tmp/$dtype.kvp" --prompt-len 64 --gen 128 \
          --threads "$threads" --json |
        python3 -c 'import json,sys; j=json.load(sys.stdin)
print(sys.argv[1], sys.argv[2], sys.argv[3], j["prefill_tok_s"], j["decode_tok_s"], j["isa"], j["activations"], sep="\t")' \
          "$round" "$dtype" "$mode" >>"$results"
    done
  done
done
python3 - "$results" "$rounds" "$threads" <<'PY'
import statistics, sys
from collections import defaultdict
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
val, what = defaultdict(dict), {}
for rnd, dtype, mode, pre, dec, isa, act in rows:
    val[dtype, mode, "prefill"][rnd] = float(pre)
    val[dtype, mode, "decode"][rnd] = float(dec)
    what[dtype, mode] = f"{isa} kernels, {act} activations"
print(f"medians of {sys.argv[2]} interleaved rounds, {sys.argv[3]} threads, tokens/s")
print("%-5s %-8s %-36s %9s %9s   %-28s %s" % ("dtype", "mode", "kernels", "prefill", "decode",
                                                "prefill vs default", "decode vs default"))
def ratio(a, b):
    per = [a[r] / b[r] for r in a if r in b]
    return "%.2f (rounds %.2f, %.2f-%.2f)" % (statistics.median(a.values()) / statistics.median(b.values()),
                                             statistics.median(per), min(per), max(per))
for dtype in ("bf16", "int8", "int4"):
    for mode in ("default", "f32", "avx2"):
        p, d = val[dtype, mode, "prefill"], val[dtype, mode, "decode"]
        if not p: continue
        rp = ratio(p, val[dtype, "default", "prefill"]) if mode != "default" else ""
        rd = ratio(d, val[dtype, "default", "decode"]) if mode != "default" else ""
        print("%-5s %-8s %-36s %9.1f %9.1f   %-28s %s" % (dtype, mode, what[dtype, mode],
              statistics.median(p.values()), statistics.median(d.values()), rp, rd))
PY
