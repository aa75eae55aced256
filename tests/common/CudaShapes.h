// Model shapes the CUDA tests compile (codegen, nvcc, the emulated and fake
// GPU runs): small, but each exercising a different path of the kernels.
#pragma once

#include "frontend/ConfigParser.h"
#include "spec/ModelSpec.h"

#include <string>

namespace kvplan::testing {

inline ModelConfig cudaConfig(const std::string &model, const std::string &compile,
                       const std::string &rope = "") {
  std::string text = "[model]\nname = \"cuda-shape\"\nmax_position_embeddings = 4096\n"
                     "rms_norm_eps = 1e-5\nbos_token_id = 1\neos_token_id = 2\n" +
                     model + "\n[compile]\ntarget = \"cuda\"\n" + compile + "\n" + rope;
  ModelConfig cfg = parseTomlSpec(text, "cuda-shape.toml", [](const std::string &) {});
  validate(cfg);
  return cfg;
}

struct Shape {
  const char *what, *model, *compile, *rope;
};

// GQA with tied embeddings, its second layer without RoPE (SmolLM3's NoPE:
// the cache written without rotation); Qwen2-style bias; MHA with head_dim 128 and
// Llama 3 RoPE, its scores soft-capped at 4 (Gemma 2's capping in the tf32
// tiled kernels of an f16 cache); MQA (16 query heads on one KV head); f32 and f16 weights;
// pages of 4 in a pool larger than its batch of 3 needs (1000 pages, not
// 3 x 1024 / 4); batch 1, where the fused QKV is one product, with a
// vocabulary of 9000, whose head takes two features a warp (matvec's FPW
// where the features are many), as Phi-4-mini: partial RoPE (24 of each
// head's 32 dimensions turn) with LongRoPE (its long factors, one per
// rotated pair, and an attention factor, which the RoPE table's rotated
// pairs carry), its first layer without RoPE (its QKV product and cache
// write unfused from a rotation); Qwen3's heads of 128 on a hidden size of
// 256, each query and key head normalized before RoPE, under YaRN (factor 4
// over 64 tokens: the RoPE table's divisors, the softmax scale its attention
// factor's square); Gemma 3's layers
// (GeGLU, post-norms, scaled embeddings, q/k norms, a softmax over
// sqrt(query_pre_attn_scalar)), the first sliding (a window of 12, RoPE on
// base 10000) and the second global (base 1e6, linear scaling), with Gemma
// 2's soft-capped scores and logits (caps of 2 and 3, to bite on random
// weights). Two mixtures of experts (the moe kernels): Qwen3-MoE's 2 of 8
// experts of 96, renormalized, in bf16 at a batch of 3; Qwen2-MoE-style 3 of
// 6 experts of 52, raw (norm_topk_prob false), in f16 at batch 1, the down
// products' rows of 52 not whole 16-byte runs, beside a shared expert of 64
// gated by sigmoid (its gate one more block of the router's kernel, its rows
// added in the weighted sums' kernel). bf16 prefill chunks
// of 16 rows (Qwen2: the tensor-core kernels in two groups of 8 rows) and of
// 32 (batch 1: cuBLAS).
inline const Shape kShapes[] = {
    {"gqa-bf16",
     "architecture = \"llama\"\nhidden_size = 256\nintermediate_size = 688\nnum_layers = 2\n"
     "num_heads = 8\nnum_kv_heads = 4\nvocab_size = 512\ntie_word_embeddings = true\n"
     "nope_layers = [1]",
     "weight_dtype = \"bf16\"\nmax_batch = 4\nmax_seq_len = 512\nprefill_chunk = 64", ""},
    {"qwen-bias-bf16",
     "architecture = \"qwen2\"\nhidden_size = 448\nintermediate_size = 1024\nnum_layers = 2\n"
     "num_heads = 7\nnum_kv_heads = 1\nhead_dim = 64\nvocab_size = 1000\nattention_bias = true",
     "weight_dtype = \"bf16\"\nmax_batch = 2\nmax_seq_len = 256\nprefill_chunk = 16", ""},
    {"mha-llama3-f16",
     "architecture = \"llama\"\nhidden_size = 512\nintermediate_size = 1024\nnum_layers = 2\n"
     "num_heads = 4\nnum_kv_heads = 4\nvocab_size = 300\nattn_logit_softcapping = 4.0",
     "weight_dtype = \"f16\"\nmax_batch = 3\nmax_seq_len = 1024\nprefill_chunk = 128\npage_size = 4\n"
     "kv_pages = 1000",
     "[model.rope]\ntheta = 500000.0\ntype = \"llama3\"\nfactor = 32.0\nlow_freq_factor = 1.0\n"
     "high_freq_factor = 4.0\noriginal_max_position_embeddings = 8192\n"},
    {"mqa-f32",
     "architecture = \"llama\"\nhidden_size = 512\nintermediate_size = 256\nnum_layers = 1\n"
     "num_heads = 16\nnum_kv_heads = 1\nvocab_size = 100",
     "weight_dtype = \"f32\"\nmax_batch = 1\nmax_seq_len = 128\nprefill_chunk = 16", ""},
    {"gqa-bf16-batch1",
     "architecture = \"phi3\"\nhidden_size = 128\nintermediate_size = 320\nnum_layers = 2\n"
     "num_heads = 4\nnum_kv_heads = 2\nvocab_size = 9000\nnope_layers = [0]",
     "weight_dtype = \"bf16\"\nmax_batch = 1\nmax_seq_len = 256\nprefill_chunk = 32",
     "[model.rope]\ntype = \"longrope\"\nrotary_dim = 24\n"
     "original_max_position_embeddings = 128\nattention_factor = 1.2\n"
     "short_factors = [1.0, 1.0, 1.0, 1.0, 1.1, 1.2, 1.4, 1.6, 2.0, 2.5, 3.0, 3.5]\n"
     "long_factors = [1.0, 1.0, 1.2, 1.5, 2.0, 3.0, 4.0, 8.0, 12.0, 20.0, 28.0, 32.0]\n"},
    {"qwen3-qk-norm-yarn-bf16",
     "architecture = \"qwen3\"\nhidden_size = 256\nintermediate_size = 512\nnum_layers = 2\n"
     "num_heads = 4\nnum_kv_heads = 2\nhead_dim = 128\nvocab_size = 700\n"
     "tie_word_embeddings = true",
     "weight_dtype = \"bf16\"\nmax_batch = 2\nmax_seq_len = 256\nprefill_chunk = 16",
     "[model.rope]\ntheta = 1000000.0\ntype = \"yarn\"\nfactor = 4.0\n"
     "original_max_position_embeddings = 64\n"},
    {"gemma3-bf16",
     "architecture = \"gemma3\"\nhidden_size = 256\nintermediate_size = 512\nnum_layers = 2\n"
     "num_heads = 4\nnum_kv_heads = 1\nhead_dim = 64\nvocab_size = 600\nsliding_window = 12\n"
     "full_attention_layers = [1]\nquery_pre_attn_scalar = 48.0\nattn_logit_softcapping = 2.0\n"
     "final_logit_softcapping = 3.0",
     "weight_dtype = \"bf16\"\nmax_batch = 3\nmax_seq_len = 256\nprefill_chunk = 16",
     "[model.rope]\ntheta = 1000000.0\ntype = \"linear\"\nfactor = 8.0\nlocal_theta = 10000.0\n"},
    {"qwen3moe-bf16",
     "architecture = \"qwen3\"\nhidden_size = 256\nintermediate_size = 512\nnum_layers = 2\n"
     "num_heads = 4\nnum_kv_heads = 2\nhead_dim = 64\nvocab_size = 400\nnum_experts = 8\n"
     "num_experts_per_tok = 2\nmoe_intermediate_size = 96",
     "weight_dtype = \"bf16\"\nmax_batch = 3\nmax_seq_len = 256\nprefill_chunk = 16", ""},
    {"qwen2moe-f16-raw-shared-batch1",
     "architecture = \"qwen2\"\nhidden_size = 128\nintermediate_size = 52\nnum_layers = 2\n"
     "num_heads = 4\nnum_kv_heads = 2\nvocab_size = 300\nnum_experts = 6\n"
     "num_experts_per_tok = 3\nnorm_topk_prob = false\nshared_expert_intermediate_size = 64\n"
     "shared_expert_gate = true",
     "weight_dtype = \"f16\"\nmax_batch = 1\nmax_seq_len = 128\nprefill_chunk = 16", ""},
};

// Quantized weights, each shape in int8 and int4: GQA with tied embeddings
// (the head reads the int8 table) and an intermediate size of 172 (the down
// projection's rows end in a partial group of 12, and its int8 rows start
// only 4-byte aligned); a Qwen2-style bias on MHA, untied, its down rows of
// 200 (8-byte loads, a partial group of 8), prefill chunks of 96 rows (two
// row tiles of the tiled product) and a decode batch of 3. Rows of whole
// runs of 16 codes take --fuse-matvec's kernels (matvec,
// matvec_rope_kv_write: the QKV with its bias in the Qwen2 shape), the
// others the plain matrix-vector one. Batch 1 with an intermediate size of
// 336: every product folded, the down projection's rows ending in half a
// group, and a vocabulary of 9000 (int8: its head two features a warp).
// Mixtures of experts: Qwen3-MoE's 2 of 8 experts of 48 in int8, and 3 of 6
// Mixtral-style experts of 80 in int4, raw, the down stack's rows ending in
// half a group, beside an ungated shared expert of 96 (its rows added as
// they are).
inline const Shape kQuantShapes[] = {
    {"gqa-int8-tied-172",
     "architecture = \"llama\"\nhidden_size = 128\nintermediate_size = 172\nnum_layers = 2\n"
     "num_heads = 4\nnum_kv_heads = 2\nvocab_size = 300\ntie_word_embeddings = true",
     "weight_dtype = \"int8\"\nmax_batch = 4\nmax_seq_len = 256\nprefill_chunk = 32", ""},
    {"mha-bias-int8",
     "architecture = \"qwen2\"\nhidden_size = 256\nintermediate_size = 200\nnum_layers = 2\n"
     "num_heads = 4\nnum_kv_heads = 4\nhead_dim = 64\nvocab_size = 333\nattention_bias = true",
     "weight_dtype = \"int8\"\nmax_batch = 3\nmax_seq_len = 256\nprefill_chunk = 96", ""},
    {"gqa-int8-batch1",
     "architecture = \"llama\"\nhidden_size = 128\nintermediate_size = 336\nnum_layers = 2\n"
     "num_heads = 4\nnum_kv_heads = 2\nvocab_size = 9000",
     "weight_dtype = \"int8\"\nmax_batch = 1\nmax_seq_len = 256\nprefill_chunk = 32", ""},
    {"gqa-int4-tied-172",
     "architecture = \"llama\"\nhidden_size = 128\nintermediate_size = 172\nnum_layers = 2\n"
     "num_heads = 4\nnum_kv_heads = 2\nvocab_size = 300\ntie_word_embeddings = true",
     "weight_dtype = \"int4\"\nmax_batch = 4\nmax_seq_len = 256\nprefill_chunk = 32", ""},
    {"mha-bias-int4",
     "architecture = \"qwen2\"\nhidden_size = 256\nintermediate_size = 200\nnum_layers = 2\n"
     "num_heads = 4\nnum_kv_heads = 4\nhead_dim = 64\nvocab_size = 333\nattention_bias = true",
     "weight_dtype = \"int4\"\nmax_batch = 3\nmax_seq_len = 256\nprefill_chunk = 96", ""},
    {"gqa-int4-batch1",
     "architecture = \"llama\"\nhidden_size = 128\nintermediate_size = 336\nnum_layers = 2\n"
     "num_heads = 4\nnum_kv_heads = 2\nvocab_size = 300",
     "weight_dtype = \"int4\"\nmax_batch = 1\nmax_seq_len = 256\nprefill_chunk = 32", ""},
    {"qwen3moe-int8",
     "architecture = \"qwen3\"\nhidden_size = 128\nintermediate_size = 256\nnum_layers = 2\n"
     "num_heads = 4\nnum_kv_heads = 2\nhead_dim = 32\nvocab_size = 300\nnum_experts = 8\n"
     "num_experts_per_tok = 2\nmoe_intermediate_size = 48",
     "weight_dtype = \"int8\"\nmax_batch = 3\nmax_seq_len = 256\nprefill_chunk = 32", ""},
    {"mixtral-int4-raw-shared",
     "architecture = \"llama\"\nhidden_size = 128\nintermediate_size = 80\nnum_layers = 2\n"
     "num_heads = 4\nnum_kv_heads = 2\nvocab_size = 300\nnum_experts = 6\n"
     "num_experts_per_tok = 3\nnorm_topk_prob = false\nshared_expert_intermediate_size = 96",
     "weight_dtype = \"int4\"\nmax_batch = 3\nmax_seq_len = 256\nprefill_chunk = 32", ""},
};

} // namespace kvplan::testing
