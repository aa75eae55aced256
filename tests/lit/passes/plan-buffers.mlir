// RUN: kvplan-opt %s --plan-buffers -split-input-file | FileCheck %s
// RUN: kvplan-opt %s --plan-buffers -split-input-file | FileCheck %s --check-prefix=VIEW
// RUN: kvplan-opt %s --plan-buffers=alignment=64 -split-input-file | FileCheck %s --check-prefix=ALIGN64

// Arguments and every tensor an op makes get an arena offset (a multiple of
// 256); the cache and its views get none; the arena size is on the function.
// Offsets are reused once a tensor is dead: in decode, the 2x16xf32
// activations (128 bytes, one 256-byte slot each) fit in 1792 bytes.
// CHECK-LABEL: func.func @prefill
// CHECK-SAME: {llm.arg = "tokens", llm.offset = 0 : i64}
// CHECK-SAME: {llm.arg = "positions", llm.offset = 256 : i64}
// CHECK-SAME: {llm.arg = "page_table", llm.offset = 512 : i64}
// CHECK-SAME: {llm.arg = "kv_cache"})
// CHECK-SAME: llm.arena_size = 1792 : i64
// CHECK: llm.embedding {{.*}}{llm.offsets = array<i64: 768>}
// CHECK: llm.linear @layers.0.attention.wqkv(%{{.*}}) {llm.offsets = array<i64: 768, 1280, 1536>}
// CHECK: llm.kv_cache_write
// CHECK-NOT: llm.offsets
// CHECK-SAME: {layer = 0 : i64}
// CHECK: llm.kv_cache_read
// CHECK-NOT: llm.offsets
// CHECK-SAME: {layer = 0 : i64}
// CHECK: llm.logits @output(%{{.*}}) {llm.offsets = array<i64: 0>}
// CHECK-LABEL: func.func @decode
// CHECK-SAME: llm.arena_size = 1792 : i64
// CHECK: %[[EMB:.*]] = llm.embedding @tok_embeddings[%arg0] {llm.offsets = array<i64: 768>}
// CHECK: llm.rms_norm %[[EMB]], {{.*}}llm.offsets = array<i64: 0>
// CHECK: llm.linear @layers.0.attention.wqkv(%{{.*}}) {llm.offsets = array<i64: 1024, 1280, 1536>}
// The embedding rows stay alive (at 768) until the residual add.
// CHECK: llm.add_rms_norm %[[EMB]], {{.*}}llm.offsets = array<i64: 512, 1024>
// CHECK: llm.logits {{.*}}llm.offsets = array<i64: 256>

// With 64-byte alignment the 16-byte argument tensors pack tighter. The
// three results of the fused QKV are three requests, each freed after its
// own last reader: the rotated keys take the queries' place, which the
// queries' RoPE has read (the values stay alive until the cache write).
// ALIGN64-LABEL: func.func @prefill
// ALIGN64: llm.linear @layers.0.attention.wqkv(%{{.*}}) {llm.offsets = array<i64: [[#Q:]], [[#K:]], [[#V:]]>}
// ALIGN64: llm.rope %3#0
// ALIGN64: llm.rope %3#1{{.*}}llm.offsets = array<i64: [[#Q]]>
// ALIGN64-LABEL: func.func @decode(%arg0: tensor<2xi32> {llm.arg = "tokens", llm.offset = {{[0-9]+}} : i64}
// ALIGN64-SAME: llm.arena_size = {{[0-9]+}} : i64
// ALIGN64: llm.linear @layers.0.attention.wqkv(%{{.*}}) {llm.offsets = array<i64: [[#D:]], {{[0-9]+}}, {{[0-9]+}}>}
// ALIGN64: llm.rope %2#0
// ALIGN64: llm.rope %2#1{{.*}}llm.offsets = array<i64: [[#D]]>

module attributes {llm.model = "one", llm.settings = #llm.settings<target = "cpu", weight_dtype = "f32", kv_dtype = "f32", max_batch = 2, max_seq_len = 16, prefill_chunk = 4, page_size = 4, kv_pages = 8>} {
  llm.weight @tok_embeddings : tensor<32x16xf32>
  llm.weight @layers.0.attention_norm : tensor<16xf32>
  llm.weight @layers.0.attention.wqkv concat ["layers.0.attention.wq", "layers.0.attention.wk", "layers.0.attention.wv"] : tensor<32x16xf32>
  llm.weight @layers.0.attention.wo : tensor<16x16xf32>
  llm.weight @layers.0.ffn_norm : tensor<16xf32>
  llm.weight @layers.0.feed_forward.w13 concat ["layers.0.feed_forward.w1", "layers.0.feed_forward.w3"] : tensor<64x16xf32>
  llm.weight @layers.0.feed_forward.w2 : tensor<16x32xf32>
  llm.weight @norm : tensor<16xf32>
  llm.weight @output : tensor<32x16xf32>
  func.func @prefill(%arg0: tensor<4xi32> {llm.arg = "tokens"}, %arg1: tensor<4xi32> {llm.arg = "positions"}, %arg2: tensor<1x4xi32> {llm.arg = "page_table"}, %arg3: !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32> {llm.arg = "kv_cache"}) -> tensor<1x32xf32> attributes {llm.entry = "prefill"} {
    %0 = llm.embedding @tok_embeddings[%arg0] : tensor<4xi32> -> tensor<4x16xf32>
    %1 = llm.take_last %0, %arg1 : tensor<4x16xf32>, tensor<4xi32> -> tensor<1x16xf32>
    %2 = llm.rms_norm %0, @layers.0.attention_norm {eps = 1.000000e-05 : f64} : tensor<4x16xf32>
    %3:3 = llm.linear @layers.0.attention.wqkv(%2) : tensor<4x16xf32> -> tensor<4x16xf32>, tensor<4x8xf32>, tensor<4x8xf32>
    %4 = llm.rope %3#0, %arg1 {head_dim = 8 : i64, theta = 1.000000e+04 : f64} : tensor<4x16xf32>, tensor<4xi32>
    %5 = llm.rope %3#1, %arg1 {head_dim = 8 : i64, theta = 1.000000e+04 : f64} : tensor<4x8xf32>, tensor<4xi32>
    %6 = llm.kv_cache_write %5, %3#2 into %arg3[%arg2] at %arg1 {layer = 0 : i64} : tensor<4x8xf32>, tensor<4x8xf32>, <layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<1x4xi32>, tensor<4xi32>
    %keys, %values = llm.kv_cache_read %6[%arg2] upto %arg1 {layer = 0 : i64} : <layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<1x4xi32>, tensor<4xi32> -> <kv_heads = 1, head_dim = 8, element_type = f32>, <kv_heads = 1, head_dim = 8, element_type = f32>
    %7 = llm.attention cache %4, %keys, %values {head_dim = 8 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, scale = 0.35355339059327373 : f64} : tensor<4x16xf32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32> -> tensor<4x16xf32>
    %8 = llm.take_last %7, %arg1 : tensor<4x16xf32>, tensor<4xi32> -> tensor<1x16xf32>
    %9 = llm.linear @layers.0.attention.wo(%8) : tensor<1x16xf32> -> tensor<1x16xf32>
    %normed, %residual = llm.add_rms_norm %1, %9, @layers.0.ffn_norm {eps = 1.000000e-05 : f64} : tensor<1x16xf32>
    %10 = llm.linear @layers.0.feed_forward.w13(%normed) : tensor<1x16xf32> -> tensor<1x64xf32>
    %11 = llm.fused_ffn %10 : tensor<1x64xf32> -> tensor<1x32xf32>
    %12 = llm.linear @layers.0.feed_forward.w2(%11) : tensor<1x32xf32> -> tensor<1x16xf32>
    %normed_0, %residual_1 = llm.add_rms_norm %residual, %12, @norm {eps = 1.000000e-05 : f64} : tensor<1x16xf32>
    %13 = llm.logits @output(%normed_0) : tensor<1x16xf32> -> tensor<1x32xf32>
    return %13 : tensor<1x32xf32>
  }
  func.func @decode(%arg0: tensor<2xi32> {llm.arg = "tokens"}, %arg1: tensor<2xi32> {llm.arg = "positions"}, %arg2: tensor<2x4xi32> {llm.arg = "page_table"}, %arg3: !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32> {llm.arg = "kv_cache"}) -> tensor<2x32xf32> attributes {llm.entry = "decode"} {
    %0 = llm.embedding @tok_embeddings[%arg0] : tensor<2xi32> -> tensor<2x16xf32>
    %1 = llm.rms_norm %0, @layers.0.attention_norm {eps = 1.000000e-05 : f64} : tensor<2x16xf32>
    %2:3 = llm.linear @layers.0.attention.wqkv(%1) : tensor<2x16xf32> -> tensor<2x16xf32>, tensor<2x8xf32>, tensor<2x8xf32>
    %3 = llm.rope %2#0, %arg1 {head_dim = 8 : i64, theta = 1.000000e+04 : f64} : tensor<2x16xf32>, tensor<2xi32>
    %4 = llm.rope %2#1, %arg1 {head_dim = 8 : i64, theta = 1.000000e+04 : f64} : tensor<2x8xf32>, tensor<2xi32>
    %5 = llm.kv_cache_write %4, %2#2 into %arg3[%arg2] at %arg1 {layer = 0 : i64} : tensor<2x8xf32>, tensor<2x8xf32>, <layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<2x4xi32>, tensor<2xi32>
    %keys, %values = llm.kv_cache_read %5[%arg2] upto %arg1 {layer = 0 : i64} : <layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<2x4xi32>, tensor<2xi32> -> <kv_heads = 1, head_dim = 8, element_type = f32>, <kv_heads = 1, head_dim = 8, element_type = f32>
    %6 = llm.attention cache %3, %keys, %values {head_dim = 8 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, scale = 0.35355339059327373 : f64} : tensor<2x16xf32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32> -> tensor<2x16xf32>
    %7 = llm.linear @layers.0.attention.wo(%6) : tensor<2x16xf32> -> tensor<2x16xf32>
    %normed, %residual = llm.add_rms_norm %0, %7, @layers.0.ffn_norm {eps = 1.000000e-05 : f64} : tensor<2x16xf32>
    %8 = llm.linear @layers.0.feed_forward.w13(%normed) : tensor<2x16xf32> -> tensor<2x64xf32>
    %9 = llm.fused_ffn %8 : tensor<2x64xf32> -> tensor<2x32xf32>
    %10 = llm.linear @layers.0.feed_forward.w2(%9) : tensor<2x32xf32> -> tensor<2x16xf32>
    %normed_0, %residual_1 = llm.add_rms_norm %residual, %10, @norm {eps = 1.000000e-05 : f64} : tensor<2x16xf32>
    %11 = llm.logits @output(%normed_0) : tensor<2x16xf32> -> tensor<2x32xf32>
    return %11 : tensor<2x32xf32>
  }
}

// -----

// A cache view reads the page table and positions when attention runs, so
// they stay alive until then: the attention result may not take their place.
// VIEW-LABEL: func.func @decode(%arg0: tensor<1x64xf32>
// VIEW-SAME: {llm.arg = "query", llm.offset = 0 : i64}
// VIEW-SAME: %arg1: tensor<1xi32> {llm.arg = "positions", llm.offset = 256 : i64}
// VIEW-SAME: %arg2: tensor<1x64xi32> {llm.arg = "page_table", llm.offset = 512 : i64}
// VIEW: llm.attention cache {{.*}}llm.offsets = array<i64: 768>
module {
  func.func @decode(%q: tensor<1x64xf32> {llm.arg = "query"}, %pos: tensor<1xi32> {llm.arg = "positions"}, %table: tensor<1x64xi32> {llm.arg = "page_table"}, %cache: !llm.kv_cache<layers = 1, pages = 64, page_size = 4, kv_heads = 1, head_dim = 16, element_type = f32> {llm.arg = "kv_cache"}) -> tensor<1x64xf32> attributes {llm.entry = "decode"} {
    %k, %v = llm.kv_cache_read %cache[%table] upto %pos {layer = 0 : i64} : !llm.kv_cache<layers = 1, pages = 64, page_size = 4, kv_heads = 1, head_dim = 16, element_type = f32>, tensor<1x64xi32>, tensor<1xi32> -> !llm.kv_view<kv_heads = 1, head_dim = 16, element_type = f32>, !llm.kv_view<kv_heads = 1, head_dim = 16, element_type = f32>
    %a = llm.attention cache %q, %k, %v {head_dim = 16 : i64, num_heads = 4 : i64, num_kv_heads = 1 : i64, scale = 0.25 : f64} : tensor<1x64xf32>, !llm.kv_view<kv_heads = 1, head_dim = 16, element_type = f32>, !llm.kv_view<kv_heads = 1, head_dim = 16, element_type = f32> -> tensor<1x64xf32>
    return %a : tensor<1x64xf32>
  }
}
