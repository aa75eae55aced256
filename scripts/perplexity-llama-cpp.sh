#!/usr/bin/env bash
# kvplan perplexity next to llama.cpp's llama-perplexity on the same GGUF
# files: stories260K (a trained model) as it is shared (F32), and the
# quantizations llama.cpp's llama-quantize makes of it (Q4_K_M, Q5_K_M and
# Q6_K; stories260K's rows of 64 and 172 are no whole K-quant block, so
# llama-quantize falls back to Q5_0, Q5_1, Q8_0 and F16 tensors, as it
# prints). Both score the same text with the same definition (chunks of
# --ctx tokens begun with BOS, the second half of each scored); kvplan runs
# once with its default activations (int8 where the weights are int8, as
# llama.cpp's Q8 activations) and once with f32 ones. A second table puts
# each quantization beside the F32 file: kvplan perplexity --base against
# llama-perplexity --kl-divergence (mean KL divergence from F32's
# distributions, and how often the likeliest token is F32's).
#
# Usage: scripts/perplexity-llama-cpp.sh --llama-cpp BUILD_DIR [--text FILE] [--ctx N] [--threads T]
#   BUILD_DIR (or $LLAMA_CPP_BUILD): a llama.cpp CMake build holding
#   bin/llama-perplexity and bin/llama-quantize (e.g. `cmake --build build
#   --target llama-perplexity llama-quantize`). FILE: default
#   tests/lit/Inputs/story.txt (1,340 tokens); N: default 128.
# Prints two Markdown tables on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
llama="${LLAMA_CPP_BUILD:-}" text=tests/lit/Inputs/story.txt ctx=128 threads=2
while [ $# -gt 0 ]; do
  case "$1" in
  --llama-cpp) llama="$2"; shift 2 ;;
  --text) text="$2"; shift 2 ;;
  --ctx) ctx="$2"; shift 2 ;;
  --threads) threads="$2"; shift 2 ;;
  *) echo "perplexity-llama-cpp.sh: unknown argument '$1' (see the usage at the top)" >&2; exit 1 ;;
  esac
done
kvplan=build/bin/kvplan
models="${KVPLAN_SHARED_DIR:-../shared}/models/stories260K"
[ -x "$kvplan" ] || { echo "perplexity-llama-cpp.sh: no $kvplan; build it first (scripts/setup.sh)" >&2; exit 1; }
[ -f "$models/stories260K.gguf" ] || { echo "perplexity-llama-cpp.sh: no $models/stories260K.gguf (set KVPLAN_SHARED_DIR to the folder holding models/)" >&2; exit 1; }
[ -n "$llama" ] || { echo "perplexity-llama-cpp.sh: give --llama-cpp BUILD_DIR (a llama.cpp build)" >&2; exit 1; }
for tool in llama-perplexity llama-quantize; do
  [ -x "$llama/bin/$tool" ] || { echo "perplexity-llama-cpp.sh: no $llama/bin/$tool; build that target in $llama" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

files=("$models/stories260K.gguf")
for q in Q4_K_M Q5_K_M Q6_K; do
  "$llama/bin/llama-quantize" "$models/stories260K.gguf" "$work/stories260K-$q.gguf" "$q" \
    >"$work/quantize-$q.log" 2>&1 || { cat "$work/quantize-$q.log" >&2; exit 1; }
  files+=("$work/stories260K-$q.gguf")
done

ppl() { sed -n 's/.*PPL = \([0-9.]*\) +\/- \([0-9.]*\).*/\1 ± \2/p' | tail -n 1; }
echo "| file | kvplan | kvplan, f32 activations | llama.cpp |"
echo "|---|---|---|---|"
for f in "${files[@]}"; do
  a=$("$kvplan" perplexity "$f" -f "$text" --ctx "$ctx" --threads "$threads" 2>/dev/null | ppl)
  b=$(KVPLAN_ACTIVATIONS=f32 "$kvplan" perplexity "$f" -f "$text" --ctx "$ctx" \
        --threads "$threads" 2>/dev/null | ppl)
  c=$("$llama/bin/llama-perplexity" -m "$f" -f "$text" -c "$ctx" -b "$ctx" -t "$threads" 2>&1 | ppl)
  echo "| $(basename "$f") | $a | $b | $c |"
done

kld() { sed -n 's/.*mean \([0-9.]*\) +\/- \([0-9.]*\),.*/\1 ± \2/p'; }
same() { sed -n 's/^same top token as the base: \(.*\) +\/- \(.*\) %/\1 ± \2 %/p'; }
"$llama/bin/llama-perplexity" -m "${files[0]}" -f "$text" -c "$ctx" -b "$ctx" -t "$threads" \
  --kl-divergence-base "$work/base.kld" >"$work/base.log" 2>&1
echo
echo "| file | kvplan KL divergence from F32 | llama.cpp | same top token, kvplan | llama.cpp |"
echo "|---|---|---|---|---|"
for f in "${files[@]:1}"; do
  "$kvplan" perplexity "$f" -f "$text" --ctx "$ctx" --threads "$threads" --base "${files[0]}" \
    >"$work/kv.out" 2>/dev/null
  "$llama/bin/llama-perplexity" -m "$f" -f "$text" -c "$ctx" -b "$ctx" -t "$threads" \
    --kl-divergence-base "$work/base.kld" --kl-divergence >"$work/lc.out" 2>&1
  echo "| $(basename "$f") | $(kld <"$work/kv.out") |" \
    "$(sed -n 's/^Mean *KLD: *\([0-9.]*\) ± *\([0-9.]*\).*/\1 ± \2/p' "$work/lc.out") |" \
    "$(same <"$work/kv.out") |" \
    "$(sed -n 's/^Same top p: *\([0-9.]*\) ± *\([0-9.]*\) %.*/\1 ± \2 %/p' "$work/lc.out") |"
done
