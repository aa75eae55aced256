#!/usr/bin/env bash
# What tensor parallelism costs in communication on this machine, side by
# side in one run: stories110M's shape (models/stories110m.toml, random
# weights) compiled twice, run two ways, interleaved round by round so that
# a shared machine's drift hits both:
#   tp1  one process, kvplan bench ART --threads 2
#   tp2  --tensor-parallel 2: mpirun -np 2 kvplan bench ART --threads 1 (one
#        thread a rank: the same two cores)
# On two cores TP=2 is not faster (the ranks share the memory bandwidth one
# process already uses); the figure is the overhead: the time in all_reduce
# steps per decode step and per prefill of the rank that arrives last at
# each (the exchange itself), and of the rank that waits for it.
# Each run: --prompt-len 64 --gen 128. Prints the medians, tp2's ratio to
# tp1 (median and range of the per-round ratios) and the all-reduce shares.
# Usage: scripts/bench-tensor-parallel.sh [--rounds N] [--dtype f32|bf16|...]
#        (after scripts/setup.sh; needs Open MPI's mpirun)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=5 dtype=f32
while [ $# -gt 0 ]; do
  case "$1" in
  --rounds) rounds="$2"; shift 2 ;;
  --dtype) dtype="$2"; shift 2 ;;
  *) echo "bench-tensor-parallel.sh: unknown argument '$1' (see the usage at the top)" >&2; exit 1 ;;
  esac
done
kvplan=build/bin/kvplan
[ -x "$kvplan" ] || { echo "bench-tensor-parallel.sh: no $kvplan; build kvplan first (scripts/setup.sh)" >&2; exit 1; }
command -v mpirun >/dev/null || { echo "bench-tensor-parallel.sh: no mpirun; install openmpi-bin (scripts/setup.sh)" >&2; exit 1; }
mpirun=(mpirun --oversubscribe -np 2)
[ "$(id -u)" -eq 0 ] && mpirun+=(--allow-run-as-root)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for tp in 1 2; do
  "$kvplan" compile models/stories110m.toml --dtype "$dtype" --tensor-parallel "$tp" \
    -o "$tmp/tp$tp.kvp" 2>/dev/null
done
results="$tmp/results.tsv"
row() {
  python3 -c 'import json,sys; j=json.load(sys.stdin)
print(sys.argv[1], sys.argv[2], j["prefill_tok_s"], j["decode_tok_s"],
      j.get("decode_all_reduce_ms", 0), j.get("decode_all_reduce_fraction", 0),
      j.get("prefill_all_reduce_ms", 0), j.get("prefill_all_reduce_fraction", 0),
      j.get("decode_all_reduce_with_waiting_ms", 0), sep="\t")' "$@"
}
for round in $(seq "$rounds"); do
  "$kvplan" bench "$tmp/tp1.kvp" --prompt-len 64 --gen 128 --threads 2 --json |
    row "$round" tp1 >>"$results"
  "${mpirun[@]}" "$kvplan" bench "$tmp/tp2.kvp" --prompt-len 64 --gen 128 --threads 1 --json |
    row "$round" tp2 >>"$results"
done
python3 - "$results" "$rounds" "$dtype" <<'PY'
import statistics, sys
from collections import defaultdict
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
v = defaultdict(dict)
for rnd, mode, *fig in rows:
    for name, x in zip(("prefill", "decode", "dms", "dfrac", "pms", "pfrac", "dwait"), fig):
        v[mode, name][rnd] = float(x)
med = lambda d: statistics.median(d.values())
def ratio(name):
    a, b = v["tp2", name], v["tp1", name]
    per = [a[r] / b[r] for r in a if r in b]
    return "%.2f (rounds %.2f, %.2f-%.2f)" % (med(a) / med(b), statistics.median(per), min(per), max(per))
print(f"stories110M shape, {sys.argv[3]} weights, medians of {sys.argv[2]} interleaved rounds, tokens/s")
print("%-4s %-28s %9s %9s" % ("", "", "prefill", "decode"))
print("%-4s %-28s %9.1f %9.1f" % ("tp1", "1 process x 2 threads", med(v["tp1", "prefill"]), med(v["tp1", "decode"])))
print("%-4s %-28s %9.1f %9.1f" % ("tp2", "2 ranks x 1 thread (MPI)", med(v["tp2", "prefill"]), med(v["tp2", "decode"])))
print("tp2 / tp1: prefill %s, decode %s" % (ratio("prefill"), ratio("decode")))
print("tp2 all-reduce (the rank arriving last, i.e. the exchange): %.3f ms per decode step = "
      "%.1f%% of it (rounds %.1f-%.1f%%); %.3f ms per 64-token prefill = %.1f%%" % (
    med(v["tp2", "dms"]), 100 * med(v["tp2", "dfrac"]), 100 * min(v["tp2", "dfrac"].values()),
    100 * max(v["tp2", "dfrac"].values()), med(v["tp2", "pms"]), 100 * med(v["tp2", "pfrac"])))
print("tp2 all-reduce with waiting for the slower rank: %.3f ms per decode step" % med(v["tp2", "dwait"]))
PY
