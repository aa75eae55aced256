// RUN: kvplan-opt %s --partition-tensor-parallel=ranks=2 -split-input-file -verify-diagnostics
// RUN: not kvplan-opt %s --partition-tensor-parallel=ranks=3 -split-input-file 2>&1 | FileCheck %s --check-prefix=THREE
// THREE: error: tensor parallel needs a power of two of ranks, got 3

// A projection whose input features are cut would add its bias once per
// rank.
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
  llm.weight @bo : tensor<16xf32>
  func.func @forward(%arg0: tensor<4xi32> {llm.arg = "tokens"}, %arg1: tensor<4xi32> {llm.arg = "positions"}) -> tensor<4x32xf32> {
    %0 = llm.embedding @tok_embeddings[%arg0] : tensor<4xi32> -> tensor<4x16xf32>
    %1 = llm.rms_norm %0, @layers.0.attention_norm {eps = 1.000000e-05 : f64} : tensor<4x16xf32>
    %2 = llm.linear @layers.0.attention.wq(%1) : tensor<4x16xf32> -> tensor<4x16xf32>
    %3 = llm.linear @layers.0.attention.wk(%1) : tensor<4x16xf32> -> tensor<4x8xf32>
    %4 = llm.linear @layers.0.attention.wv(%1) : tensor<4x16xf32> -> tensor<4x8xf32>
    %5 = llm.rope %2, %arg1 {head_dim = 4 : i64, theta = 1.000000e+04 : f64} : tensor<4x16xf32>, tensor<4xi32>
    %6 = llm.rope %3, %arg1 {head_dim = 4 : i64, theta = 1.000000e+04 : f64} : tensor<4x8xf32>, tensor<4xi32>
    %7 = llm.attention causal %5, %6, %4 {head_dim = 4 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, scale = 5.000000e-01 : f64} : tensor<4x16xf32>, tensor<4x8xf32>, tensor<4x8xf32> -> tensor<4x16xf32>
    // expected-error @below {{has a bias and reads features cut between ranks}}
    %8 = llm.linear @layers.0.attention.wo(%7) bias @bo : tensor<4x16xf32> -> tensor<4x16xf32>
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

// -----

// Only the frontend's attention block can be cut: here the attention's
// result is read twice.
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
    // expected-error @below {{is not the frontend's attention block}}
    %7 = llm.attention causal %5, %6, %4 {head_dim = 4 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, scale = 5.000000e-01 : f64} : tensor<4x16xf32>, tensor<4x8xf32>, tensor<4x8xf32> -> tensor<4x16xf32>
    %8 = llm.linear @layers.0.attention.wo(%7) : tensor<4x16xf32> -> tensor<4x16xf32>
    %9 = llm.add %0, %8 : tensor<4x16xf32>
    %99 = llm.add %7, %7 : tensor<4x16xf32>
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

// -----

// The pass runs once.
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
  // expected-error @below {{is cut already; run partition-tensor-parallel once}}
  llm.weight @norm {shard = #llm.shard<dim = 0, pieces = 2>} : tensor<16xf32>
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

// -----

// expected-error @below {{partition-tensor-parallel runs on func.func @forward, before split-prefill-decode}}
module {
  llm.weight @w : tensor<4x4xf32>
}
