#!/usr/bin/env bash
# A mixture of experts side by side with llama.cpp on the same GGUF: a
# Qwen3-MoE-shaped model (hidden 1024, 8 layers, 16 heads of 64 over 4 KV
# heads, 64 experts of 384, 8 a token; F16 random weights, a byte-level
# vocabulary of 384) written by tests/lit/Inputs/gguf_and_hf.py's benchmark
# mode, then, ROUNDS times in turn, `kvplan bench` (a prompt of 128, 64 ids
# decoded) and llama.cpp through node-llama-cpp's prebuilt CPU binary (the
# same prompt evaluated, then 64 single tokens, one thread a CPU both).
#   scripts/bench-moe.sh NODE_LLAMA_CPP_DIR [ROUNDS]
# NODE_LLAMA_CPP_DIR holds node_modules/node-llama-cpp (`npm install
# --prefix DIR node-llama-cpp@3`). The greedy ids of a short prompt are
# compared first: the two must agree on the file.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:?usage: scripts/bench-moe.sh NODE_LLAMA_CPP_DIR [ROUNDS]}
rounds=${2:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The corpus script's byte-level tokenizer, its two added tokens named as
# Qwen's end ids.
python3 fuzz/make-corpus.py "$work/seeds" >/dev/null 2>&1
python3 - "$work" <<'PY'
import json, sys
t = json.load(open(sys.argv[1] + "/seeds/tokenizer_hf/tiny-tokenizer.json"))
for a, name in zip(t["added_tokens"], ["<|endoftext|>", "<|im_end|>"]):
    a["content"] = name
json.dump(t, open(sys.argv[1] + "/tokenizer.json", "w"))
PY
KVPLAN_GGUF_SHAPE=1024,8,16,4,64,64,8,384 python3 tests/lit/Inputs/gguf_and_hf.py qwen3moe \
  "$work/tokenizer.json" qwen2 "$work/moe.gguf" "$work/unused"
export KVPLAN_NODE_LLAMA_CPP=$dir
ours=$(build/bin/kvplan run "$work/moe.gguf" --prompt-ids 1,2,3 -n 8 --temperature 0 --print-ids)
theirs=$(node scripts/llama-cpp-greedy.mjs "$work/moe.gguf" 1,2,3 8)
[ "$(echo $ours)" = "$(echo $theirs)" ] || { echo "ids differ: $ours / $theirs" >&2; exit 1; }
echo "greedy ids agree: $ours"
for r in $(seq "$rounds"); do
  build/bin/kvplan bench "$work/moe.gguf" --max-seq 256 --prompt-len 128 --gen 64 --json |
    python3 -c "import json, sys; j = json.load(sys.stdin); print('kvplan    prefill %.1f tokens/s, decode %.2f tokens/s' % (j['prefill_tok_s'], j['decode_tok_s']))"
  KVPLAN_LLAMA_CPP_BENCH=1 node scripts/llama-cpp-greedy.mjs "$work/moe.gguf" 1 1
done
