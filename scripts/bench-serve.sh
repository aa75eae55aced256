#!/usr/bin/env bash
# The HTTP server's cost: one seeded load of streaming completions sent to
# `kvplan serve` over loopback (scripts/serve-load.py, a closed loop of
# concurrent clients) and the same load run in process by `kvplan bench
# --requests`, on one artifact, in interleaved rounds (a shared machine
# drifts). Prints each side's output tok/s, TTFT and TPOT p50/p99 and errors
# (medians over the rounds), the server's throughput as a share of the
# in-process one (goal: within 5%), and whether both sides generated the
# same greedy tokens (outputs hash).
# Default model: models/stories110m.toml with bf16 random weights, max_batch
# 8, a 256-token context; about a minute a round on two cores.
# Usage: scripts/bench-serve.sh [--rounds N] [--requests N] [--concurrency C]
#          [--prompt-len L] [--gen G] [--shared-prefix P] [MODEL [COMPILE FLAGS...]]
set -euo pipefail
cd "$(dirname "$0")/.."
kvplan=build/bin/kvplan
rounds=3
load=(--requests 32 --concurrency 8 --prompt-len 64 --gen 32 --shared-prefix 0 --seed 1)
set_load() { # replaces the value after flag $1 in load
  for i in "${!load[@]}"; do
    if [ "${load[$i]}" = "$1" ]; then load[$((i + 1))]=$2; fi
  done
}
while [ $# -gt 0 ]; do
  case $1 in
  --rounds) rounds=$2; shift 2 ;;
  --requests | --concurrency | --prompt-len | --gen | --shared-prefix | --seed)
    set_load "$1" "$2"; shift 2 ;;
  *) break ;;
  esac
done
model=(models/stories110m.toml --dtype bf16 --max-batch 8 --max-seq 256)
if [ $# -gt 0 ]; then model=("$@"); fi
tmp=$(mktemp -d)
server=
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
"$kvplan" compile "${model[@]}" -o "$tmp/m.kvp" >"$tmp/compile.log" 2>&1 ||
  { cat "$tmp/compile.log"; exit 1; }

# Starts kvplan serve on a free port; sets server (its pid) and url.
start_server() {
  "$kvplan" serve "$tmp/m.kvp" --port 0 --quiet >"$tmp/serve.out" 2>"$tmp/serve.err" &
  server=$!
  for _ in $(seq 600); do
    url=$(grep -o 'http://[^ ]*' "$tmp/serve.out" || true)
    if [ -n "$url" ]; then return; fi
    kill -0 "$server" 2>/dev/null || { cat "$tmp/serve.err" >&2; exit 1; }
    sleep 0.1
  done
  echo "bench-serve: the server did not start" >&2
  exit 1
}

for ((i = 0; i < rounds; ++i)); do
  start_server
  python3 scripts/serve-load.py "$url" --json "${load[@]}" >>"$tmp/served.json" || true
  kill -TERM "$server"
  wait "$server" || { echo "bench-serve: kvplan serve exited with $?" >&2; exit 1; }
  server=
  "$kvplan" bench "$tmp/m.kvp" --json "${load[@]}" >>"$tmp/inproc.json"
done

python3 - "$tmp" "${load[*]}" <<'PY'
import json, os, statistics, sys
runs = {n: [json.loads(l) for l in open(os.path.join(sys.argv[1], n + ".json"))]
        for n in ("served", "inproc")}
med = lambda key, field: statistics.median(j[field] for j in runs[key])
first = runs["inproc"][0]
print("%s; %s, max_batch %d, %d KV pages; load %s; median of %d rounds" % (
    first["model"], first["executor"], first["max_batch"], first["kv_pages"], sys.argv[2],
    len(runs["inproc"])))
print()
print("| run | output tok/s | TTFT p50 / p99 ms | TPOT p50 / p99 ms | errors |")
print("|---|---|---|---|---|")
for key, name in (("inproc", "in process (kvplan bench --requests)"),
                  ("served", "over HTTP (kvplan serve + serve-load.py)")):
    print("| %s | %.1f | %.1f / %.1f | %.2f / %.2f | %s |" % (
        name, med(key, "output_tok_s"), med(key, "ttft_ms_p50"), med(key, "ttft_ms_p99"),
        med(key, "tpot_ms_p50"), med(key, "tpot_ms_p99"),
        sum(j.get("errors", 0) for j in runs[key])))
each = [s["output_tok_s"] / p["output_tok_s"] for s, p in zip(runs["served"], runs["inproc"])]
hashes = {j["outputs_hash"] for j in runs["served"] + runs["inproc"]}
print()
print("Server throughput / in process: %.3f (each round %s; goal >= 0.95); greedy outputs %s." % (
    statistics.median(each), " ".join("%.3f" % e for e in each),
    "the same" if len(hashes) == 1 else "DIFFERENT"))
PY
