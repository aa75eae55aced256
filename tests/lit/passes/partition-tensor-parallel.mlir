// RUN: kvplan-opt %s --partition-tensor-parallel=ranks=2 | FileCheck %s --check-prefix=TP2
// RUN: kvplan-opt %s --partition-tensor-parallel=ranks=4 | FileCheck %s --check-prefix=TP4
// RUN: kvplan-opt %s --kvplan-pipeline="tensor-parallel=2" | FileCheck %s --check-prefix=PIPE
// The module's llm.tensor_parallel (as the frontend writes it) says the same.
// RUN: sed 's/llm.model = "one"/llm.model = "one", llm.tensor_parallel = 2 : i64/' %s | kvplan-opt --kvplan-pipeline | FileCheck %s --check-prefix=PIPE

// One layer, 4 query heads and 2 KV heads of 4, tied embeddings, as the
// frontend builds it. Two ranks: each runs 2 query heads and 1 KV head; Q,
// K, V, gate and up are cut by output features (dim 0), o and down by
// input features (dim 1) and followed by an all-reduce; the LM head is a
// cut copy of the embeddings, by vocabulary.
// TP2: llm.tensor_parallel = 2 : i64
// TP2: llm.weight @tok_embeddings : tensor<32x16xf32>
// TP2: llm.weight @output concat ["tok_embeddings"] {shard = #llm.shard<dim = 0, pieces = 2>} : tensor<16x16xf32>
// TP2: llm.weight @layers.0.attention_norm : tensor<16xf32>
// TP2: llm.weight @layers.0.attention.wq {shard = #llm.shard<dim = 0, pieces = 2>} : tensor<8x16xf32>
// TP2: llm.weight @layers.0.attention.wk {shard = #llm.shard<dim = 0, pieces = 2>} : tensor<4x16xf32>
// TP2: llm.weight @layers.0.attention.wv {shard = #llm.shard<dim = 0, pieces = 2>} : tensor<4x16xf32>
// TP2: llm.weight @layers.0.attention.wo {shard = #llm.shard<dim = 1, pieces = 2>} : tensor<16x8xf32>
// TP2: llm.weight @layers.0.feed_forward.w1 {shard = #llm.shard<dim = 0, pieces = 2>} : tensor<16x16xf32>
// TP2: llm.weight @layers.0.feed_forward.w2 {shard = #llm.shard<dim = 1, pieces = 2>} : tensor<16x16xf32>
// TP2: llm.weight @norm : tensor<16xf32>
// TP2: func.func @forward({{.*}}) -> tensor<4x16xf32>
// TP2: llm.embedding @tok_embeddings[%arg0] : tensor<4xi32> -> tensor<4x16xf32>
// TP2: llm.linear @layers.0.attention.wq(%1) : tensor<4x16xf32> -> tensor<4x8xf32>
// TP2: llm.linear @layers.0.attention.wk(%1) : tensor<4x16xf32> -> tensor<4x4xf32>
// TP2: llm.rope %2, %arg1 {{.*}} : tensor<4x8xf32>
// TP2: %[[A:.*]] = llm.attention causal {{.*}} {head_dim = 4 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, {{.*}} -> tensor<4x8xf32>
// TP2: %[[O:.*]] = llm.linear @layers.0.attention.wo(%[[A]]) : tensor<4x8xf32> -> tensor<4x16xf32>
// TP2: %[[S:.*]] = llm.all_reduce %[[O]] : tensor<4x16xf32>
// TP2: llm.add %0, %[[S]]
// TP2: llm.swiglu {{.*}} : tensor<4x16xf32>
// TP2: %[[D:.*]] = llm.linear @layers.0.feed_forward.w2({{.*}}) : tensor<4x16xf32> -> tensor<4x16xf32>
// TP2: %[[S2:.*]] = llm.all_reduce %[[D]] : tensor<4x16xf32>
// TP2: llm.add {{.*}}, %[[S2]]
// TP2: llm.logits @output({{.*}}) : tensor<4x16xf32> -> tensor<4x16xf32>

// Four ranks and two KV heads: one query head a rank, and each KV head kept
// by the two ranks whose query heads read it, said in the dump.
// TP4: llm.weight @layers.0.attention.wq {shard = #llm.shard<dim = 0, pieces = 4>} : tensor<4x16xf32>
// TP4: llm.weight @layers.0.attention.wk {shard = #llm.shard<dim = 0, pieces = 2, why = "num_kv_heads = 2 < 4 ranks: each rank keeps the KV head its query heads read, replicated on 2 ranks">} : tensor<4x16xf32>
// TP4: llm.attention causal {{.*}} {head_dim = 4 : i64, num_heads = 1 : i64, num_kv_heads = 1 : i64
// TP4: llm.logits @output({{.*}}) : tensor<4x16xf32> -> tensor<4x8xf32>

// The whole pipeline after the cut: Q, K and V fuse (all cut alike), the
// cache holds one rank's KV head, and the last layer's all-reduce in
// @prefill runs on the one row the LM head reads.
// PIPE: llm.weight @layers.0.attention.wqkv concat ["layers.0.attention.wq", "layers.0.attention.wk", "layers.0.attention.wv"] {shard = #llm.shard<dim = 0, pieces = 2>} : tensor<16x16xf32>
// PIPE-LABEL: func.func @prefill
// PIPE: llm.all_reduce {{.*}} : tensor<1x16xf32>
// PIPE-LABEL: func.func @decode
// PIPE-SAME: kv_heads = 1
// PIPE: llm.all_reduce {{.*}} : tensor<2x16xf32>
// PIPE: llm.all_reduce {{.*}} : tensor<2x16xf32>
// PIPE: llm.logits @output({{.*}}) {{.*}}: tensor<2x16xf32> -> tensor<2x16xf32>

module attributes {llm.model = "one", llm.settings = #llm.settings<target = "cpu", weight_dtype = "f32", kv_dtype = "f32", max_batch = 2, max_seq_len = 4, prefill_chunk = 4, page_size = 4, kv_pages = 2>} {
  llm.weight @tok_embeddings : tensor<32x16xf32>
  llm.weight @layers.0.attention_norm : tensor<16xf32>
  llm.weight @layers.0.attention.wq : tensor<16x16xf32>
  llm.weight @layers.0.attention.wk : tensor<8x16xf32>
  llm.weight @layers.0.attention.wv : tensor<8x16xf32>
  llm.weight @layers.0.attention.wo : tensor<16x16xf32>
  llm.weight @layers.0.ffn_norm : tensor<16xf32>
  llm.weight @layers.0.feed_forward.w1 : tensor<32x16xf32>
  llm.weight @layers.0.feed_forward.w3 : tensor<32x16xf32>
  llm.weight @layers.0.feed_forward.w2 : tensor<16x32xf32>
  llm.weight @norm : tensor<16xf32>
  func.func @forward(%arg0: tensor<4xi32> {llm.arg = "tokens"}, %arg1: tensor<4xi32> {llm.arg = "positions"}) -> tensor<4x32xf32> {
    %0 = llm.embedding @tok_embeddings[%arg0] : tensor<4xi32> -> tensor<4x16xf32>
    %1 = llm.rms_norm %0, @layers.0.attention_norm {eps = 1.000000e-05 : f64} : tensor<4x16xf32>
    %2 = llm.linear @layers.0.attention.wq(%1) : tensor<4x16xf32> -> tensor<4x16xf32>
    %3 = llm.linear @layers.0.attention.wk(%1) : tensor<4x16xf32> -> tensor<4x8xf32>
    %4 = llm.linear @layers.0.attention.wv(%1) : tensor<4x16xf32> -> tensor<4x8xf32>
    %5 = llm.rope %2, %arg1 {head_dim = 4 : i64, theta = 1.000000e+04 : f64} : tensor<4x16xf32>, tensor<4xi32>
    %6 = llm.rope %3, %arg1 {head_dim = 4 : i64, theta = 1.000000e+04 : f64} : tensor<4x8xf32>, tensor<4xi32>
    %7 = llm.attention causal %5, %6, %4 {head_dim = 4 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, scale = 5.000000e-01 : f64} : tensor<4x16xf32>, tensor<4x8xf32>, tensor<4x8xf32> -> tensor<4x16xf32>
    %8 = llm.linear @layers.0.attention.wo(%7) : tensor<4x16xf32> -> tensor<4x16xf32>
    %9 = llm.add %0, %8 : tensor<4x16xf32>
    %10 = llm.rms_norm %9, @layers.0.ffn_norm {eps = 1.000000e-05 : f64} : tensor<4x16xf32>
    %11 = llm.linear @layers.0.feed_forward.w1(%10) : tensor<4x16xf32> -> tensor<4x32xf32>
    %12 = llm.linear @layers.0.feed_forward.w3(%10) : tensor<4x16xf32> -> tensor<4x32xf32>
    %13 = llm.swiglu %11, %12 : tensor<4x32xf32>
    %14 = llm.linear @layers.0.feed_forward.w2(%13) : tensor<4x32xf32> -> tensor<4x16xf32>
    %15 = llm.add %9, %14 : tensor<4x16xf32>
    %16 = llm.rms_norm %15, @norm {eps = 1.000000e-05 : f64} : tensor<4x16xf32>
    %17 = llm.logits @tok_embeddings(%16) : tensor<4x16xf32> -> tensor<4x32xf32>
    return %17 : tensor<4x32xf32>
  }
}
