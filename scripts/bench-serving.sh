#!/usr/bin/env bash
# The serving figures, side by side in one run, on models/stories110m.toml
# (random weights) compiled once with bf16 weights, max_batch 8 and a
# 1024-token context:
#   (a) a closed loop of 16 requests at concurrency 1 and 8 (so only the
#       concurrency differs): output throughput;
#   (b) 8 prompts behind a 512-token shared prefix, one at a time, with and
#       without the prefix cache: time to first token;
#   (c) load (a) at concurrency 8 on a 128-token context, with the default
#       pool (64 pages) and with 16 pages, a third of the 48 its eight
#       requests hold at once: preemptions, and the same greedy outputs.
# The four runs go in rounds (a shared machine drifts; interleaving spreads
# the drift over all four) and the table shows each figure's median. Each
# pair's runs draw the same requests (same --seed), so their greedy outputs
# must hash the same; the table says whether they do.
# Usage: scripts/bench-serving.sh [--rounds N] [--threads N]   (after scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
kvplan=build/bin/kvplan
rounds=3
if [ "${1:-}" = --rounds ]; then
  rounds=$2
  shift 2
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$kvplan" compile models/stories110m.toml --dtype bf16 --max-batch 8 --max-seq 1024 \
  -o "$tmp/m.kvp" >"$tmp/compile.log" 2>&1 || { cat "$tmp/compile.log"; exit 1; }
for pages in 64 16; do
  "$kvplan" compile models/stories110m.toml --dtype bf16 --max-batch 8 --max-seq 128 \
    --kv-pages $pages -o "$tmp/pool$pages.kvp" >"$tmp/compile.log" 2>&1 ||
    { cat "$tmp/compile.log"; exit 1; }
done
bench() { "$kvplan" bench "$tmp/m.kvp" --json "$@"; }
a=(--requests 16 --prompt-len 64 --gen 32)
b=(--requests 8 --concurrency 1 --prompt-len 544 --gen 8 --shared-prefix 512)
for ((i = 0; i < rounds; ++i)); do
  bench "${a[@]}" --concurrency 1 "$@" >> "$tmp/c1.json"
  bench "${a[@]}" --concurrency 8 "$@" >> "$tmp/c8.json"
  bench "${b[@]}" --no-prefix-cache "$@" >> "$tmp/nocache.json"
  bench "${b[@]}" "$@" >> "$tmp/hit.json"
  for pages in 64 16; do
    "$kvplan" bench "$tmp/pool$pages.kvp" --json "${a[@]}" --concurrency 8 "$@" \
      >> "$tmp/pool$pages.json"
  done
done
python3 - "$tmp" <<'PY'
import json, os, statistics, sys
runs = {n: [json.loads(l) for l in open(os.path.join(sys.argv[1], n + ".json"))]
        for n in ("c1", "c8", "nocache", "hit", "pool64", "pool16")}
med = lambda key, field: statistics.median(j[field] for j in runs[key])
first = runs["c1"][0]
print("%s, max_batch %d, %d KV pages; median of %d rounds" % (
    first["executor"], first["max_batch"], first["kv_pages"], len(runs["c1"])))
print()
print("| run | output tok/s | TTFT p50 / p99 ms | TPOT p50 / p99 ms | prefix hits | "
      "preemptions | scheduler % of a decode step |")
print("|---|---|---|---|---|---|---|")
rows = [("c1", "(a) 16 requests, concurrency 1"), ("c8", "(a) 16 requests, concurrency 8"),
        ("nocache", "(b) shared prefix 512, no prefix cache"),
        ("hit", "(b) shared prefix 512, prefix cache"),
        ("pool64", "(c) concurrency 8, context 128, 64 KV pages"),
        ("pool16", "(c) concurrency 8, context 128, 16 KV pages")]
for key, name in rows:
    print("| %s | %.1f | %.1f / %.1f | %.2f / %.2f | %.0f%% | %d | %.2f%% |" % (
        name, med(key, "output_tok_s"), med(key, "ttft_ms_p50"), med(key, "ttft_ms_p99"),
        med(key, "tpot_ms_p50"), med(key, "tpot_ms_p99"), 100 * med(key, "prefix_hit_rate"),
        max(j["preemptions"] for j in runs[key]), med(key, "scheduler_overhead_pct")))
print()
print("| ratio | median | each round | goal | outputs |")
print("|---|---|---|---|---|")
def ratio(name, x, y, field, goal):
    each = [p[field] / q[field] for p, q in zip(runs[x], runs[y])]
    hashes = {j["outputs_hash"] for j in runs[x] + runs[y]}
    print("| %s | %.2fx | %s | %s | %s |" % (
        name, statistics.median(each), " ".join("%.2f" % e for e in each), goal,
        "same" if len(hashes) == 1 else "DIFFERENT"))
ratio("throughput, concurrency 8 / concurrency 1", "c8", "c1", "output_tok_s", ">= 4x")
ratio("TTFT p50, no prefix cache / prefix-cache hit", "nocache", "hit", "ttft_ms_p50", ">= 5x")
ratio("throughput, 16 KV pages / 64 (preempting)", "pool16", "pool64", "output_tok_s",
      "all complete, same outputs")
# The engine time of a step that only decoded, recovered from the scheduler's
# cost and its share of that step.
step = lambda key: statistics.median(
    100 * j["scheduler_ms_per_step"] / j["scheduler_overhead_pct"] for j in runs[key])
print()
print("A decode-only step takes %.1f ms at concurrency 1 and %.1f ms at concurrency 8 (%.2fx)." % (
    step("c1"), step("c8"), step("c8") / step("c1")))
PY
