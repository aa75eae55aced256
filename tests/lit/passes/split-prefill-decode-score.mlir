// RUN: kvplan-opt %s --split-prefill-decode | FileCheck %s
// RUN: kvplan-opt %s --split-prefill-decode="score-rows=3" | FileCheck %s --check-prefix=OPT
// RUN: kvplan-opt %s --split-prefill-decode --insert-kv-cache --prune-last-token | FileCheck %s --check-prefix=CACHE
// RUN: not kvplan-opt %s --split-prefill-decode="score-rows=17" 2>&1 | FileCheck %s --check-prefix=BIG

// With llm.score_rows = 5, an entry point @score runs 5 tokens of one
// sequence, causal like @prefill, with logits for every row (the prompt's
// log-probabilities); without llm.speculate there is no @verify.
// CHECK-LABEL: func.func @prefill
// CHECK-SAME: tensor<4xi32>
// CHECK-LABEL: func.func @decode
// CHECK-SAME: tensor<2xi32>
// CHECK-NOT: func.func @verify
// CHECK-LABEL: func.func @score
// CHECK-SAME: (%{{.*}}: tensor<5xi32> {llm.arg = "tokens"}, %{{.*}}: tensor<5xi32> {llm.arg = "positions"}) -> tensor<5x32xf32>
// CHECK-SAME: attributes {llm.entry = "score"}
// CHECK: llm.attention causal {{.*}} : tensor<5x16xf32>, tensor<5x8xf32>, tensor<5x8xf32> -> tensor<5x16xf32>
// CHECK: llm.logits @output(%{{.*}}) : tensor<5x16xf32> -> tensor<5x32xf32>
// CHECK: return %{{.*}} : tensor<5x32xf32>

// The option overrides the module's llm.score_rows.
// OPT-LABEL: func.func @score
// OPT-SAME: tensor<3xi32>
// OPT-SAME: -> tensor<3x32xf32>

// With the cache: @score reads one sequence's page table and the earlier
// tokens' keys and values, and prune-last-token leaves its rows alone.
// CACHE-LABEL: func.func @prefill
// CACHE-SAME: -> tensor<1x32xf32>
// CACHE-LABEL: func.func @score
// CACHE-SAME: %{{.*}}: tensor<1x4xi32> {llm.arg = "page_table"}
// CACHE-SAME: -> tensor<5x32xf32>
// CACHE-NOT: llm.take_last
// CACHE: llm.kv_cache_write
// CACHE: llm.attention cache {{.*}} -> tensor<5x16xf32>
// CACHE-NOT: llm.take_last
// CACHE: llm.logits @output(%{{.*}}) : tensor<5x16xf32> -> tensor<5x32xf32>

// More rows than the context holds.
// BIG: error: score rows 17 must be 0 (no @score) or 1 to 16 (at most the context of 16)

module attributes {llm.model = "one", llm.score_rows = 5 : i64, llm.settings = #llm.settings<target = "cpu", weight_dtype = "f32", kv_dtype = "f32", max_batch = 2, max_seq_len = 16, prefill_chunk = 4, page_size = 4, kv_pages = 8>} {
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
  func.func @forward(%arg0: tensor<16xi32> {llm.arg = "tokens"}, %arg1: tensor<16xi32> {llm.arg = "positions"}) -> tensor<16x32xf32> {
    %0 = llm.embedding @tok_embeddings[%arg0] : tensor<16xi32> -> tensor<16x16xf32>
    %1 = llm.rms_norm %0, @layers.0.attention_norm {eps = 1.000000e-05 : f64} : tensor<16x16xf32>
    %2 = llm.linear @layers.0.attention.wq(%1) : tensor<16x16xf32> -> tensor<16x16xf32>
    %3 = llm.linear @layers.0.attention.wk(%1) : tensor<16x16xf32> -> tensor<16x8xf32>
    %4 = llm.linear @layers.0.attention.wv(%1) : tensor<16x16xf32> -> tensor<16x8xf32>
    %5 = llm.rope %2, %arg1 {head_dim = 8 : i64, theta = 1.000000e+04 : f64} : tensor<16x16xf32>, tensor<16xi32>
    %6 = llm.rope %3, %arg1 {head_dim = 8 : i64, theta = 1.000000e+04 : f64} : tensor<16x8xf32>, tensor<16xi32>
    %7 = llm.attention causal %5, %6, %4 {head_dim = 8 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, scale = 0.35355339059327373 : f64} : tensor<16x16xf32>, tensor<16x8xf32>, tensor<16x8xf32> -> tensor<16x16xf32>
    %8 = llm.linear @layers.0.attention.wo(%7) : tensor<16x16xf32> -> tensor<16x16xf32>
    %9 = llm.add %0, %8 : tensor<16x16xf32>
    %10 = llm.rms_norm %9, @layers.0.ffn_norm {eps = 1.000000e-05 : f64} : tensor<16x16xf32>
    %11 = llm.linear @layers.0.feed_forward.w1(%10) : tensor<16x16xf32> -> tensor<16x32xf32>
    %12 = llm.linear @layers.0.feed_forward.w3(%10) : tensor<16x16xf32> -> tensor<16x32xf32>
    %13 = llm.swiglu %11, %12 : tensor<16x32xf32>
    %14 = llm.linear @layers.0.feed_forward.w2(%13) : tensor<16x32xf32> -> tensor<16x16xf32>
    %15 = llm.add %9, %14 : tensor<16x16xf32>
    %16 = llm.rms_norm %15, @norm {eps = 1.000000e-05 : f64} : tensor<16x16xf32>
    %17 = llm.logits @output(%16) : tensor<16x16xf32> -> tensor<16x32xf32>
    return %17 : tensor<16x32xf32>
  }
}
