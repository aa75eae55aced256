#!/usr/bin/env bash
# A mixture of experts timed two ways. First against its dense twins (kvplan
# bench, random bf16 weights, ROUNDS times in turn): a Qwen3-shaped model
# (hidden 1024, 8 layers, 16 heads of 64 over 4 KV heads, vocabulary 32000)
# with 64 experts of 384, 8 a token, beside the dense model of its active
# parameters (an FFN of 3,072) and of all of them (24,576). Then side by
# side with llama.cpp on the same GGUF: a
# Qwen3-MoE-shaped model (hidden 1024, 8 layers, 16 heads of 64 over 4 KV
# heads, 64 experts of 384, 8 a token; F16 random weights, a byte-level
# vocabulary of 384) written by tests/lit/Inputs/gguf_and_hf.py's benchmark
# mode, then, ROUNDS times in turn, `kvplan bench` (a prompt of 128, 64 ids
# decoded) and llama.cpp through node-llama-cpp's prebuilt CPU binary (the
# same prompt evaluated, then 64 single tokens, one thread a CPU both).
#   scripts/bench-moe.sh NODE_LLAMA_CPP_DIR [ROUNDS] [qwen3moe|qwen2moe|gpt-oss|gpt-oss-mxfp4]
# NODE_LLAMA_CPP_DIR holds node_modules/node-llama-cpp (`npm install
# --prefix DIR node-llama-cpp@3`). The greedy ids of a short prompt are
# compared first: the two must agree on the file. qwen2moe times a
# Qwen2-MoE shape instead, Qwen1.5-MoE-A2.7B's scaled to hidden 1024 (8
# layers, 16 heads of 64, q/k/v biases, 60 experts of 352, 4 a token, their
# weights as routed, beside a gated shared expert of 1,408), its dense
# twins FFNs of 2,816 (the active: 4 x 352 + 1,408) and 22,528. gpt-oss
# times gpt-oss-20b's shape scaled to hidden 1024 (8 layers, 16 heads of 64
# over 4 KV heads, q/k/v and output biases, sinks, the even layers under a
# window of 128; 32 experts of 512, 4 a token, with biases and the clamped
# SwiGLU), its dense twins Llama's layers with FFNs of 2,048 and 16,384.
# gpt-oss-mxfp4 is that shape with its experts in MXFP4 (random blocks), as
# OpenAI publishes them: kvplan keeps them as mxfp4 and, in turn, as int8
# (--expert-dtype int8, which holds them exactly), no dense twins.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: scripts/bench-moe.sh NODE_LLAMA_CPP_DIR [ROUNDS]"
usage+=" [qwen3moe|qwen2moe|gpt-oss|gpt-oss-mxfp4]"
dir=${1:?$usage}
rounds=${2:-2}
arch=${3:-qwen3moe}
names='"<|endoftext|>", "<|im_end|>"' # the helper's BOS and EOS for a Qwen vocabulary
case $arch in
  qwen3moe) shape=1024,8,16,4,64,64,8,384 active=3072 total=24576
    attention='architecture = "qwen3"\nnum_kv_heads = 4\n'
    experts='num_experts = 64\nnum_experts_per_tok = 8\nmoe_intermediate_size = 384\n' ;;
  qwen2moe) shape=1024,8,16,16,64,60,4,352,1408 active=2816 total=22528
    attention='architecture = "qwen2"\nnum_kv_heads = 16\n'
    experts='num_experts = 60\nnum_experts_per_tok = 4\nmoe_intermediate_size = 352\n'
    experts+='norm_topk_prob = false\nshared_expert_intermediate_size = 1408\n'
    experts+='shared_expert_gate = true\n' ;;
  gpt-oss|gpt-oss-mxfp4) shape=1024,8,16,4,64,32,4,512 active=2048 total=16384
    attention='architecture = "gpt-oss"\nnum_kv_heads = 4\nsliding_window = 128\n'
    dense='architecture = "llama"\nnum_kv_heads = 4\n'
    experts='num_experts = 32\nnum_experts_per_tok = 4\nmoe_intermediate_size = 512\n'
    names='"<|begin_of_text|>", "<|eot_id|>"' ;; # and for a Llama 3 one
  *) echo "$usage" >&2
     exit 2 ;;
esac
dense=${dense:-$attention}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The corpus script's byte-level tokenizer, its two added tokens named as
# the helper's BOS and EOS.
python3 fuzz/make-corpus.py "$work/seeds" >/dev/null 2>&1
python3 - "$work" "$names" <<'PY'
import json, sys
t = json.load(open(sys.argv[1] + "/seeds/tokenizer_hf/tiny-tokenizer.json"))
for a, name in zip(t["added_tokens"], json.loads("[" + sys.argv[2] + "]")):
    a["content"] = name
json.dump(t, open(sys.argv[1] + "/tokenizer.json", "w"))
PY
KVPLAN_GGUF_SHAPE=$shape python3 tests/lit/Inputs/gguf_and_hf.py "$arch" \
  "$work/tokenizer.json" qwen2 "$work/moe.gguf" "$work/unused"
python3 - "$work" "$attention" "$dense" "$experts" "$active" "$total" <<'PY'
import sys
work, attention, dense, experts, active, total = sys.argv[1:]
attention, dense, experts = (x.replace("\\n", "\n") for x in (attention, dense, experts))
base = """hidden_size = 1024
num_layers = 8
num_heads = 16
head_dim = 64
vocab_size = 32000
max_position_embeddings = 4096
rms_norm_eps = 1e-6
bos_token_id = 1
eos_token_id = 2
"""
ffns = {"moe": attention + "intermediate_size = %s\n%s" % (active, experts),
        "dense-active": dense + "intermediate_size = %s\n" % active,
        "dense-total": dense + "intermediate_size = %s\n" % total}
for name, ffn in ffns.items():
    open("%s/%s.toml" % (work, name), "w").write('[model]\nname = "%s"\n%s%s' % (name, base, ffn))
PY
rates() { # NAME: a `kvplan bench --json` object on stdin, one line out
  python3 -c "import json, sys; j = json.load(sys.stdin); print('%-13s prefill %.1f tokens/s,' \
    ' decode %.2f tokens/s' % (sys.argv[1], j['prefill_tok_s'], j['decode_tok_s']))" "$1"
}
twins=$([ "$arch" = gpt-oss-mxfp4 ] && echo 0 || echo "$rounds")
for r in $(seq "$twins"); do
  for m in moe dense-active dense-total; do
    build/bin/kvplan bench "$work/$m.toml" --dtype bf16 --max-seq 512 --prompt-len 128 --gen 64 \
      --json | rates "$m"
  done
done
export KVPLAN_NODE_LLAMA_CPP=$dir
# MXFP4's random blocks leave this model's logits so flat that the two
# engines' roundings of the activations to 8 bits (llama.cpp's steps in f16,
# kvplan's in f32) part the greedy ids from the second on: there, the first
# id alone (tests/lit/cli/llama-cpp.test checks the MXFP4 arithmetic).
n=$([ "$arch" = gpt-oss-mxfp4 ] && echo 1 || echo 8)
ours=$(build/bin/kvplan run "$work/moe.gguf" --prompt-ids 1,2,3 -n $n --temperature 0 --print-ids)
theirs=$(node scripts/llama-cpp-greedy.mjs "$work/moe.gguf" 1,2,3 $n)
[ "$(echo $ours)" = "$(echo $theirs)" ] || { echo "ids differ: $ours / $theirs" >&2; exit 1; }
echo "greedy ids agree: $ours"
for r in $(seq "$rounds"); do
  build/bin/kvplan bench "$work/moe.gguf" --max-seq 256 --prompt-len 128 --gen 64 --json |
    rates kvplan
  if [ "$arch" = gpt-oss-mxfp4 ]; then
    build/bin/kvplan bench "$work/moe.gguf" --expert-dtype int8 --max-seq 256 --prompt-len 128 \
      --gen 64 --json | rates "kvplan int8"
  fi
  KVPLAN_LLAMA_CPP_BENCH=1 node scripts/llama-cpp-greedy.mjs "$work/moe.gguf" 1 1
done
