// RUN: kvplan-opt %s --fuse-ffn -split-input-file | FileCheck %s

// Gate and up projections become one linear over w13 = concat(w1, w3) and a
// fused SiLU-mul; Q, K and V become one linear with three results. The
// fused weights name their parts; the weights no longer read are gone.
// CHECK-NOT: llm.weight @layers.0.attention.wq :
// CHECK-NOT: llm.weight @layers.0.feed_forward.w1 :
// CHECK: llm.weight @layers.0.attention.wqkv concat ["layers.0.attention.wq", "layers.0.attention.wk", "layers.0.attention.wv"] : tensor<32x16xf32>
// CHECK: llm.weight @layers.0.feed_forward.w13 concat ["layers.0.feed_forward.w1", "layers.0.feed_forward.w3"] : tensor<64x16xf32>
// CHECK-LABEL: func.func @prefill
// CHECK: %[[QKV:.*]]:3 = llm.linear @layers.0.attention.wqkv(%{{.*}}) : tensor<4x16xf32> -> tensor<4x16xf32>, tensor<4x8xf32>, tensor<4x8xf32>
// CHECK: llm.rope %[[QKV]]#0
// CHECK: llm.rope %[[QKV]]#1
// CHECK: llm.kv_cache_write %{{.*}}, %[[QKV]]#2 into
// CHECK: %[[GU:.*]] = llm.linear @layers.0.feed_forward.w13(%{{.*}}) : tensor<1x16xf32> -> tensor<1x64xf32>
// CHECK: %[[H:.*]] = llm.fused_ffn %[[GU]] : tensor<1x64xf32> -> tensor<1x32xf32>
// CHECK: llm.linear @layers.0.feed_forward.w2(%[[H]])
// CHECK-NOT: llm.swiglu
// CHECK-LABEL: func.func @decode
// CHECK: llm.linear @layers.0.attention.wqkv(%{{.*}}) : tensor<2x16xf32> -> tensor<2x16xf32>, tensor<2x8xf32>, tensor<2x8xf32>
// CHECK: llm.linear @layers.0.feed_forward.w13(%{{.*}}) : tensor<2x16xf32> -> tensor<2x64xf32>
// CHECK: llm.fused_ffn
// CHECK-NOT: llm.swiglu

module attributes {llm.model = "one", llm.settings = #llm.settings<target = "cpu", weight_dtype = "f32", kv_dtype = "f32", max_batch = 2, max_seq_len = 16, prefill_chunk = 4, page_size = 4, kv_pages = 8>} {
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
  llm.weight @output : tensor<32x16xf32>
  func.func @prefill(%arg0: tensor<4xi32> {llm.arg = "tokens"}, %arg1: tensor<4xi32> {llm.arg = "positions"}, %arg2: tensor<1x4xi32> {llm.arg = "page_table"}, %arg3: !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32> {llm.arg = "kv_cache"}) -> tensor<1x32xf32> attributes {llm.entry = "prefill"} {
    %0 = llm.embedding @tok_embeddings[%arg0] : tensor<4xi32> -> tensor<4x16xf32>
    %1 = llm.take_last %0, %arg1 : tensor<4x16xf32>, tensor<4xi32> -> tensor<1x16xf32>
    %2 = llm.rms_norm %0, @layers.0.attention_norm {eps = 1.000000e-05 : f64} : tensor<4x16xf32>
    %3 = llm.linear @layers.0.attention.wq(%2) : tensor<4x16xf32> -> tensor<4x16xf32>
    %4 = llm.linear @layers.0.attention.wk(%2) : tensor<4x16xf32> -> tensor<4x8xf32>
    %5 = llm.linear @layers.0.attention.wv(%2) : tensor<4x16xf32> -> tensor<4x8xf32>
    %6 = llm.rope %3, %arg1 {head_dim = 8 : i64, theta = 1.000000e+04 : f64} : tensor<4x16xf32>, tensor<4xi32>
    %7 = llm.rope %4, %arg1 {head_dim = 8 : i64, theta = 1.000000e+04 : f64} : tensor<4x8xf32>, tensor<4xi32>
    %8 = llm.kv_cache_write %7, %5 into %arg3[%arg2] at %arg1 {layer = 0 : i64} : tensor<4x8xf32>, tensor<4x8xf32>, <layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<1x4xi32>, tensor<4xi32>
    %keys, %values = llm.kv_cache_read %8[%arg2] upto %arg1 {layer = 0 : i64} : <layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<1x4xi32>, tensor<4xi32> -> <kv_heads = 1, head_dim = 8, element_type = f32>, <kv_heads = 1, head_dim = 8, element_type = f32>
    %9 = llm.attention cache %6, %keys, %values {head_dim = 8 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, scale = 0.35355339059327373 : f64} : tensor<4x16xf32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32> -> tensor<4x16xf32>
    %10 = llm.take_last %9, %arg1 : tensor<4x16xf32>, tensor<4xi32> -> tensor<1x16xf32>
    %11 = llm.linear @layers.0.attention.wo(%10) : tensor<1x16xf32> -> tensor<1x16xf32>
    %normed, %residual = llm.add_rms_norm %1, %11, @layers.0.ffn_norm {eps = 1.000000e-05 : f64} : tensor<1x16xf32>
    %12 = llm.linear @layers.0.feed_forward.w1(%normed) : tensor<1x16xf32> -> tensor<1x32xf32>
    %13 = llm.linear @layers.0.feed_forward.w3(%normed) : tensor<1x16xf32> -> tensor<1x32xf32>
    %14 = llm.swiglu %12, %13 : tensor<1x32xf32>
    %15 = llm.linear @layers.0.feed_forward.w2(%14) : tensor<1x32xf32> -> tensor<1x16xf32>
    %normed_0, %residual_1 = llm.add_rms_norm %residual, %15, @norm {eps = 1.000000e-05 : f64} : tensor<1x16xf32>
    %16 = llm.logits @output(%normed_0) : tensor<1x16xf32> -> tensor<1x32xf32>
    return %16 : tensor<1x32xf32>
  }
  func.func @decode(%arg0: tensor<2xi32> {llm.arg = "tokens"}, %arg1: tensor<2xi32> {llm.arg = "positions"}, %arg2: tensor<2x4xi32> {llm.arg = "page_table"}, %arg3: !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32> {llm.arg = "kv_cache"}) -> tensor<2x32xf32> attributes {llm.entry = "decode"} {
    %0 = llm.embedding @tok_embeddings[%arg0] : tensor<2xi32> -> tensor<2x16xf32>
    %1 = llm.rms_norm %0, @layers.0.attention_norm {eps = 1.000000e-05 : f64} : tensor<2x16xf32>
    %2 = llm.linear @layers.0.attention.wq(%1) : tensor<2x16xf32> -> tensor<2x16xf32>
    %3 = llm.linear @layers.0.attention.wk(%1) : tensor<2x16xf32> -> tensor<2x8xf32>
    %4 = llm.linear @layers.0.attention.wv(%1) : tensor<2x16xf32> -> tensor<2x8xf32>
    %5 = llm.rope %2, %arg1 {head_dim = 8 : i64, theta = 1.000000e+04 : f64} : tensor<2x16xf32>, tensor<2xi32>
    %6 = llm.rope %3, %arg1 {head_dim = 8 : i64, theta = 1.000000e+04 : f64} : tensor<2x8xf32>, tensor<2xi32>
    %7 = llm.kv_cache_write %6, %4 into %arg3[%arg2] at %arg1 {layer = 0 : i64} : tensor<2x8xf32>, tensor<2x8xf32>, <layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<2x4xi32>, tensor<2xi32>
    %keys, %values = llm.kv_cache_read %7[%arg2] upto %arg1 {layer = 0 : i64} : <layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<2x4xi32>, tensor<2xi32> -> <kv_heads = 1, head_dim = 8, element_type = f32>, <kv_heads = 1, head_dim = 8, element_type = f32>
    %8 = llm.attention cache %5, %keys, %values {head_dim = 8 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, scale = 0.35355339059327373 : f64} : tensor<2x16xf32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32> -> tensor<2x16xf32>
    %9 = llm.linear @layers.0.attention.wo(%8) : tensor<2x16xf32> -> tensor<2x16xf32>
    %normed, %residual = llm.add_rms_norm %0, %9, @layers.0.ffn_norm {eps = 1.000000e-05 : f64} : tensor<2x16xf32>
    %10 = llm.linear @layers.0.feed_forward.w1(%normed) : tensor<2x16xf32> -> tensor<2x32xf32>
    %11 = llm.linear @layers.0.feed_forward.w3(%normed) : tensor<2x16xf32> -> tensor<2x32xf32>
    %12 = llm.swiglu %10, %11 : tensor<2x32xf32>
    %13 = llm.linear @layers.0.feed_forward.w2(%12) : tensor<2x32xf32> -> tensor<2x16xf32>
    %normed_0, %residual_1 = llm.add_rms_norm %residual, %13, @norm {eps = 1.000000e-05 : f64} : tensor<2x16xf32>
    %14 = llm.logits @output(%normed_0) : tensor<2x16xf32> -> tensor<2x32xf32>
    return %14 : tensor<2x32xf32>
  }
}

// -----

// Q/K/V biases (Qwen2) are concatenated like the weights.
// CHECK-LABEL: module
// CHECK: llm.weight @wqkv concat ["wq", "wk", "wv"] : tensor<16x8xf32>
// CHECK: llm.weight @bqkv concat ["bq", "bk", "bv"] : tensor<16xf32>
// CHECK: llm.linear @wqkv(%{{.*}}) bias @bqkv : tensor<2x8xf32> -> tensor<2x8xf32>, tensor<2x4xf32>, tensor<2x4xf32>
llm.weight @wq : tensor<8x8xf32>
llm.weight @wk : tensor<4x8xf32>
llm.weight @wv : tensor<4x8xf32>
llm.weight @bq : tensor<8xf32>
llm.weight @bk : tensor<4xf32>
llm.weight @bv : tensor<4xf32>
func.func @decode(%x: tensor<2x8xf32>) -> (tensor<2x8xf32>, tensor<2x4xf32>, tensor<2x4xf32>) attributes {llm.entry = "decode"} {
  %q = llm.linear @wq(%x) bias @bq : tensor<2x8xf32> -> tensor<2x8xf32>
  %k = llm.linear @wk(%x) bias @bk : tensor<2x8xf32> -> tensor<2x4xf32>
  %v = llm.linear @wv(%x) bias @bv : tensor<2x8xf32> -> tensor<2x4xf32>
  return %q, %k, %v : tensor<2x8xf32>, tensor<2x4xf32>, tensor<2x4xf32>
}

// -----

// A gate projection read elsewhere too is left alone, and so is a linear
// with no sibling.
// CHECK-LABEL: module
// CHECK: llm.weight @w1 : tensor<4x8xf32>
// CHECK: llm.weight @w3 : tensor<4x8xf32>
// CHECK-NOT: concat
// CHECK: llm.swiglu
llm.weight @w1 : tensor<4x8xf32>
llm.weight @w3 : tensor<4x8xf32>
func.func @decode(%x: tensor<2x8xf32>, %y: tensor<2x8xf32>) -> (tensor<2x4xf32>, tensor<2x4xf32>) attributes {llm.entry = "decode"} {
  %g = llm.linear @w1(%x) : tensor<2x8xf32> -> tensor<2x4xf32>
  %u = llm.linear @w3(%y) : tensor<2x8xf32> -> tensor<2x4xf32>
  %h = llm.swiglu %g, %u : tensor<2x4xf32>
  return %h, %g : tensor<2x4xf32>, tensor<2x4xf32>
}
