#!/usr/bin/env bash
# kvplan next to llama.cpp on the CPU, on the same weights, in one run:
# stories110M's shape (models/stories110m.toml) with random weights written
# as an F32 GGUF (scripts/make-bench-gguf.py); llama.cpp's llama-quantize
# makes its BF16, Q8_0 and Q4_0 copies (--pure: every matrix in that type),
# and kvplan compiles its artifacts from those same files (bf16 from BF16,
# int8 from Q8_0, int4 from Q4_0). Each round runs every pair back to back,
# kvplan then llama.cpp (A B A B ...), so that the shared machine's drift hits
# both; the figures are the medians over the rounds.
#
#   kvplan:    kvplan bench ART --prompt-len 64 --gen 128 --threads T
#              (prefill: best of 5 prompts of 64 tokens; decode: 128 steps
#              after the prompt; the read bandwidth of its STREAM-like probe)
#   llama.cpp: llama-bench -m GGUF -p 64 -n 128 -t T -r 1
#              (pp64: a 64-token batch; tg128: 128 tokens from an empty
#              context; one warm-up run first)
#
# Decode's share of the bandwidth roofline is bytes read per token x tokens/s
# over the probe's bandwidth in the same round: kvplan's weights_bytes, and
# llama.cpp's model_size (all its tensors; the tied embedding is read whole
# as the output matrix).
#
# Usage: scripts/bench-quant.sh [--llama-cpp BUILD_DIR] [--rounds N] [--threads T] [--work DIR]
#   BUILD_DIR (or $LLAMA_CPP_BUILD): a llama.cpp CMake build holding
#   bin/llama-bench and bin/llama-quantize. Without it only kvplan runs, on
#   artifacts compiled from the F32 file with --dtype bf16, int8 and int4.
#   --work DIR keeps the GGUF files and artifacts there (reused when present).
#   A pair kvplan cannot compile here (Q8_0 and Q4_0 need GGUF quant support
#   and int4 kernels) is reported as skipped with kvplan's message.
set -euo pipefail
cd "$(dirname "$0")/.."
llama="${LLAMA_CPP_BUILD:-}" rounds=3 threads=2 work=""
while [ $# -gt 0 ]; do
  case "$1" in
  --llama-cpp) llama="$2"; shift 2 ;;
  --rounds) rounds="$2"; shift 2 ;;
  --threads) threads="$2"; shift 2 ;;
  --work) work="$2"; shift 2 ;;
  *) echo "bench-quant.sh: unknown argument '$1' (see the usage at the top of the script)" >&2; exit 1 ;;
  esac
done
kvplan=build/bin/kvplan
[ -x "$kvplan" ] || { echo "bench-quant.sh: no $kvplan; build kvplan first (scripts/setup.sh)" >&2; exit 1; }
if [ -n "$llama" ]; then
  for tool in llama-bench llama-quantize; do
    [ -x "$llama/bin/$tool" ] || { echo "bench-quant.sh: no $llama/bin/$tool; build it in that llama.cpp build folder or drop --llama-cpp" >&2; exit 1; }
  done
fi
if [ -z "$work" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work"
results="$work/results.tsv"
: >"$results"

[ -f "$work/f32.gguf" ] || python3 scripts/make-bench-gguf.py --model models/stories110m.toml -o "$work/f32.gguf"

# The pairs: name, llama.cpp's type, kvplan's dtype.
pairs=("bf16 BF16 bf16" "int8 Q8_0 int8" "int4 Q4_0 int4")
declare -A gguf art skipped
for p in "${pairs[@]}"; do
  read -r name qtype dtype <<<"$p"
  if [ -n "$llama" ]; then
    gguf[$name]="$work/$qtype.gguf"
    [ -f "${gguf[$name]}" ] || "$llama/bin/llama-quantize" --pure "$work/f32.gguf" "${gguf[$name]}" "$qtype" \
      >"$work/quantize-$qtype.log" 2>&1 || { echo "llama-quantize $qtype failed: see $work/quantize-$qtype.log" >&2; exit 1; }
  else
    gguf[$name]="$work/f32.gguf"
  fi
  art[$name]="$work/$name.kvp"
  if [ ! -f "${art[$name]}" ] && ! "$kvplan" compile "${gguf[$name]}" --dtype "$dtype" --max-batch 1 \
      --max-seq 1024 --prefill-chunk 64 -o "${art[$name]}" >"$work/compile-$name.log" 2>&1; then
    skipped[$name]="kvplan cannot compile $(basename "${gguf[$name]}") to $dtype: $(grep -m1 -v '^$' "$work/compile-$name.log")"
  fi
done

for round in $(seq "$rounds"); do
  for p in "${pairs[@]}"; do
    read -r name qtype dtype <<<"$p"
    if [ -z "${skipped[$name]:-}" ]; then
      "$kvplan" bench "${art[$name]}" --prompt-len 64 --gen 128 --threads "$threads" --json |
        python3 -c 'import json,sys; j=json.load(sys.stdin); n=sys.argv[1]
for k in ("prefill_tok_s","decode_tok_s","weights_bytes","bandwidth_gb_s"): print("kvplan", n, k, j[k], sep="\t")' "$name" >>"$results"
    fi
    if [ -n "$llama" ]; then
      "$llama/bin/llama-bench" -m "${gguf[$name]}" -p 64 -n 128 -t "$threads" -r 1 -o json 2>/dev/null |
        python3 -c 'import json,sys; n=sys.argv[1]
for t in json.load(sys.stdin):
    k = "prefill_tok_s" if t["n_prompt"] else "decode_tok_s"
    print("llama.cpp", n, k, t["avg_ts"], sep="\t"); print("llama.cpp", n, "weights_bytes", t["model_size"], sep="\t")' "$name" >>"$results"
    fi
  done
done

for name in "${!skipped[@]}"; do echo "skipped $name: ${skipped[$name]}"; done
python3 - "$results" "$rounds" "$threads" <<'PY'
import statistics, sys
from collections import defaultdict
vals = defaultdict(list)
for line in open(sys.argv[1]):
    engine, name, key, v = line.rstrip("\n").split("\t")
    vals[engine, name, key].append(float(v))
med = {k: statistics.median(v) for k, v in vals.items()}
bw = med.get(("kvplan", "bf16", "bandwidth_gb_s")) or next(
    (v for (e, n, k), v in med.items() if k == "bandwidth_gb_s"), None)
def get(e, n, k): return med.get((e, n, k))
print(f"medians of {sys.argv[2]} interleaved rounds, {sys.argv[3]} threads; "
      f"read bandwidth (kvplan's probe, median) {bw:.1f} GB/s" if bw else "no kvplan runs")
print("%-6s %-10s %12s %12s %14s %9s" % ("pair", "engine", "prefill t/s", "decode t/s",
                                          "MB per token", "roofline"))
for n, q in (("bf16", "BF16"), ("int8", "Q8_0"), ("int4", "Q4_0")):
    for e, label in (("kvplan", n), ("llama.cpp", q)):
        d, b = get(e, n, "decode_tok_s"), get(e, n, "weights_bytes")
        if d is None: continue
        roof = "%8.0f%%" % (100 * d * b / 1e9 / bw) if bw else "        -"
        print("%-6s %-10s %12.1f %12.1f %14.1f %s" % (label, e, get(e, n, "prefill_tok_s"), d, b / 1e6, roof))
# Each ratio two ways: of the medians, and the median (with the range) of
# the ratios within each round, whose two runs met the same moment of the
# shared machine.
def ratio(label, ea, na, ka, eb, nb, kb):
    a, b = vals.get((ea, na, ka)), vals.get((eb, nb, kb))
    if not a or not b:
        print("%-38s -" % label)
        return
    per = [x / y for x, y in zip(a, b)]
    print("%-38s %5.2f   per round: median %.2f, %.2f-%.2f" % (
        label, statistics.median(a) / statistics.median(b), statistics.median(per), min(per), max(per)))
print()
print("%-38s %5s" % ("ratio", "of medians"))
ratio("bf16 prefill kvplan/llama.cpp", "kvplan", "bf16", "prefill_tok_s", "llama.cpp", "bf16", "prefill_tok_s")
ratio("bf16 decode kvplan/llama.cpp", "kvplan", "bf16", "decode_tok_s", "llama.cpp", "bf16", "decode_tok_s")
ratio("int8 vs Q8_0 decode kvplan/llama.cpp", "kvplan", "int8", "decode_tok_s", "llama.cpp", "int8", "decode_tok_s")
ratio("int4 vs Q4_0 decode kvplan/llama.cpp", "kvplan", "int4", "decode_tok_s", "llama.cpp", "int4", "decode_tok_s")
ratio("int4/bf16 decode, kvplan", "kvplan", "int4", "decode_tok_s", "kvplan", "bf16", "decode_tok_s")
ratio("Q4_0/BF16 decode, llama.cpp", "llama.cpp", "int4", "decode_tok_s", "llama.cpp", "bf16", "decode_tok_s")
PY
