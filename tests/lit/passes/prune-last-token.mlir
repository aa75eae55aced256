// RUN: kvplan-opt %s --prune-last-token | FileCheck %s

// Only the last token's logits are sampled: the LM head, the final norm and
// the last layer's output projection, residual adds and FFN run on one row.
// Attention still runs on every row (each row's keys and values go to the
// cache), so the selection stops there.
// CHECK-LABEL: func.func @prefill
// CHECK-SAME: %[[POS:[^:]*]]: tensor<4xi32> {llm.arg = "positions"}
// CHECK-SAME: -> tensor<1x32xf32>
// CHECK: %[[EMB:.*]] = llm.embedding
// CHECK: %[[EMB_LAST:.*]] = llm.take_last %[[EMB]], %[[POS]] : tensor<4x16xf32>, tensor<4xi32> -> tensor<1x16xf32>
// CHECK: llm.linear @layers.0.attention.wq(%{{.*}}) : tensor<4x16xf32> -> tensor<4x16xf32>
// CHECK: %[[ATT:.*]] = llm.attention cache {{.*}} -> tensor<4x16xf32>
// CHECK: %[[ATT_LAST:.*]] = llm.take_last %[[ATT]], %[[POS]] : tensor<4x16xf32>, tensor<4xi32> -> tensor<1x16xf32>
// CHECK: %[[O:.*]] = llm.linear @layers.0.attention.wo(%[[ATT_LAST]]) : tensor<1x16xf32> -> tensor<1x16xf32>
// CHECK: %[[H:.*]] = llm.add %[[EMB_LAST]], %[[O]] : tensor<1x16xf32>
// CHECK: llm.linear @layers.0.feed_forward.w1(%{{.*}}) : tensor<1x16xf32> -> tensor<1x32xf32>
// CHECK: llm.rms_norm %{{.*}}, @norm {{.*}} : tensor<1x16xf32>
// CHECK: %[[L:.*]] = llm.logits @output(%{{.*}}) : tensor<1x16xf32> -> tensor<1x32xf32>
// CHECK: return %[[L]] : tensor<1x32xf32>
// CHECK-NOT: llm.take_last
// Decode samples every row: unchanged.
// CHECK-LABEL: func.func @decode
// CHECK-NOT: llm.take_last
// CHECK: llm.logits @output(%{{.*}}) : tensor<2x16xf32> -> tensor<2x32xf32>

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
  func.func @prefill(%arg0: tensor<4xi32> {llm.arg = "tokens"}, %arg1: tensor<4xi32> {llm.arg = "positions"}, %arg2: tensor<1x4xi32> {llm.arg = "page_table"}, %arg3: !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32> {llm.arg = "kv_cache"}) -> tensor<4x32xf32> attributes {llm.entry = "prefill"} {
    %0 = llm.embedding @tok_embeddings[%arg0] : tensor<4xi32> -> tensor<4x16xf32>
    %1 = llm.rms_norm %0, @layers.0.attention_norm {eps = 1.000000e-05 : f64} : tensor<4x16xf32>
    %2 = llm.linear @layers.0.attention.wq(%1) : tensor<4x16xf32> -> tensor<4x16xf32>
    %3 = llm.linear @layers.0.attention.wk(%1) : tensor<4x16xf32> -> tensor<4x8xf32>
    %4 = llm.linear @layers.0.attention.wv(%1) : tensor<4x16xf32> -> tensor<4x8xf32>
    %5 = llm.rope %2, %arg1 {head_dim = 8 : i64, theta = 1.000000e+04 : f64} : tensor<4x16xf32>, tensor<4xi32>
    %6 = llm.rope %3, %arg1 {head_dim = 8 : i64, theta = 1.000000e+04 : f64} : tensor<4x8xf32>, tensor<4xi32>
    %7 = llm.kv_cache_write %6, %4 into %arg3[%arg2] at %arg1 {layer = 0 : i64} : tensor<4x8xf32>, tensor<4x8xf32>, <layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<1x4xi32>, tensor<4xi32>
    %keys, %values = llm.kv_cache_read %7[%arg2] upto %arg1 {layer = 0 : i64} : <layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<1x4xi32>, tensor<4xi32> -> <kv_heads = 1, head_dim = 8, element_type = f32>, <kv_heads = 1, head_dim = 8, element_type = f32>
    %8 = llm.attention cache %5, %keys, %values {head_dim = 8 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, scale = 0.35355339059327373 : f64} : tensor<4x16xf32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32> -> tensor<4x16xf32>
    %9 = llm.linear @layers.0.attention.wo(%8) : tensor<4x16xf32> -> tensor<4x16xf32>
    %10 = llm.add %0, %9 : tensor<4x16xf32>
    %11 = llm.rms_norm %10, @layers.0.ffn_norm {eps = 1.000000e-05 : f64} : tensor<4x16xf32>
    %12 = llm.linear @layers.0.feed_forward.w1(%11) : tensor<4x16xf32> -> tensor<4x32xf32>
    %13 = llm.linear @layers.0.feed_forward.w3(%11) : tensor<4x16xf32> -> tensor<4x32xf32>
    %14 = llm.swiglu %12, %13 : tensor<4x32xf32>
    %15 = llm.linear @layers.0.feed_forward.w2(%14) : tensor<4x32xf32> -> tensor<4x16xf32>
    %16 = llm.add %10, %15 : tensor<4x16xf32>
    %17 = llm.rms_norm %16, @norm {eps = 1.000000e-05 : f64} : tensor<4x16xf32>
    %18 = llm.logits @output(%17) : tensor<4x16xf32> -> tensor<4x32xf32>
    return %18 : tensor<4x32xf32>
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
    %10 = llm.add %0, %9 : tensor<2x16xf32>
    %11 = llm.rms_norm %10, @layers.0.ffn_norm {eps = 1.000000e-05 : f64} : tensor<2x16xf32>
    %12 = llm.linear @layers.0.feed_forward.w1(%11) : tensor<2x16xf32> -> tensor<2x32xf32>
    %13 = llm.linear @layers.0.feed_forward.w3(%11) : tensor<2x16xf32> -> tensor<2x32xf32>
    %14 = llm.swiglu %12, %13 : tensor<2x32xf32>
    %15 = llm.linear @layers.0.feed_forward.w2(%14) : tensor<2x32xf32> -> tensor<2x16xf32>
    %16 = llm.add %10, %15 : tensor<2x16xf32>
    %17 = llm.rms_norm %16, @norm {eps = 1.000000e-05 : f64} : tensor<2x16xf32>
    %18 = llm.logits @output(%17) : tensor<2x16xf32> -> tensor<2x32xf32>
    return %18 : tensor<2x32xf32>
  }
}
