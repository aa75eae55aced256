// RUN: kvplan-opt %s --insert-kv-cache | FileCheck %s
// RUN: kvplan-opt %s --insert-kv-cache="page-size=16" | FileCheck %s --check-prefix=CONTIG
// RUN: sed 's/kv_pages = 8>/kv_pages = 4>/' %s | kvplan-opt --insert-kv-cache | FileCheck %s --check-prefix=ONESEQ
// RUN: kvplan-opt %s --insert-kv-cache="kv-pages=12" | FileCheck %s --check-prefix=OPTION
// RUN: sed 's/0.35355339059327373 : f64}/0.35355339059327373 : f64, window = 5 : i64}/' %s | kvplan-opt --insert-kv-cache="kv-pages=3" | FileCheck %s --check-prefix=WINDOW
// RUN: sed 's/0.35355339059327373 : f64}/0.35355339059327373 : f64, window = 5 : i64}/' %s | not kvplan-opt --insert-kv-cache="kv-pages=2" 2>&1 | FileCheck %s --check-prefix=WINDOW-SMALL

// Each entry point gains a page table and the cache: the settings' pool of
// kv_pages = 8 pages (here 2 sequences x 16 tokens / 4 per page). Prefill's
// page table has one row (one sequence), decode's one row per sequence.
// CHECK-LABEL: func.func @prefill
// CHECK-SAME: %[[POS:[^:]*]]: tensor<4xi32> {llm.arg = "positions"}
// CHECK-SAME: %[[TABLE:[^:]*]]: tensor<1x4xi32> {llm.arg = "page_table"}
// CHECK-SAME: %[[CACHE:[^:]*]]: !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32> {llm.arg = "kv_cache"}
// CHECK: llm.rope
// CHECK: %[[K:.*]] = llm.rope
// CHECK: %[[C1:.*]] = llm.kv_cache_write %[[K]], %{{.*}} into %[[CACHE]][%[[TABLE]]] at %[[POS]] {layer = 0 : i64}
// CHECK: %[[KEYS:.*]], %[[VALUES:.*]] = llm.kv_cache_read %[[C1]][%[[TABLE]]] upto %[[POS]] {layer = 0 : i64}
// CHECK-SAME: -> <kv_heads = 1, head_dim = 8, element_type = f32>, <kv_heads = 1, head_dim = 8, element_type = f32>
// CHECK: llm.attention cache %{{.*}}, %[[KEYS]], %[[VALUES]]
// CHECK-LABEL: func.func @decode
// CHECK-SAME: tensor<2x4xi32> {llm.arg = "page_table"}
// CHECK-SAME: !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32> {llm.arg = "kv_cache"}
// CHECK: llm.kv_cache_write
// CHECK: llm.kv_cache_read
// CHECK: llm.attention cache
// CHECK-NOT: llm.attention self

// One page per sequence is a contiguous cache: the settings' 8 x 4 tokens
// in pages of 16.
// CONTIG: tensor<1x1xi32> {llm.arg = "page_table"}, %{{.*}}: !llm.kv_cache<layers = 1, pages = 2, page_size = 16,

// The pool is the settings' kv_pages, not max_batch x max_seq_len /
// page_size: here one sequence's pages shared by two decode rows ...
// ONESEQ-LABEL: func.func @prefill
// ONESEQ-SAME: tensor<1x4xi32> {llm.arg = "page_table"}, %{{.*}}: !llm.kv_cache<layers = 1, pages = 4, page_size = 4,
// ONESEQ-LABEL: func.func @decode
// ONESEQ-SAME: tensor<2x4xi32> {llm.arg = "page_table"}, %{{.*}}: !llm.kv_cache<layers = 1, pages = 4, page_size = 4,

// ... or the kv-pages option's, larger than the batch needs.
// OPTION-LABEL: func.func @prefill
// OPTION-SAME: !llm.kv_cache<layers = 1, pages = 12, page_size = 4,
// OPTION-LABEL: func.func @decode
// OPTION-SAME: tensor<2x4xi32> {llm.arg = "page_table"}, %{{.*}}: !llm.kv_cache<layers = 1, pages = 12, page_size = 4,

// Under a sliding window of 5 keys a sequence gives back the pages behind
// it: a call of up to 4 rows reads from 4 keys before its first, which
// span at most 3 pages of 4 ((4 - 1) + 4 + 4 = 11 positions from a page's
// start). A pool of 3 pages holds one sequence of 16 tokens (4 pages), and
// the page table stays max_seq_len / page_size wide.
// WINDOW-LABEL: func.func @prefill
// WINDOW-SAME: tensor<1x4xi32> {llm.arg = "page_table"}, %{{.*}}: !llm.kv_cache<layers = 1, pages = 3, page_size = 4,
// WINDOW: llm.attention cache {{.*}}window = 5 : i64
// WINDOW-SMALL: error: insert-kv-cache: a pool of 2 pages cannot hold one sequence of 3 pages (at once, under a sliding window of 5 keys); give kv-pages >= 3

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
  func.func @prefill(%arg0: tensor<4xi32> {llm.arg = "tokens"}, %arg1: tensor<4xi32> {llm.arg = "positions"}) -> tensor<4x32xf32> attributes {llm.entry = "prefill"} {
    %0 = llm.embedding @tok_embeddings[%arg0] : tensor<4xi32> -> tensor<4x16xf32>
    %1 = llm.rms_norm %0, @layers.0.attention_norm {eps = 1.000000e-05 : f64} : tensor<4x16xf32>
    %2 = llm.linear @layers.0.attention.wq(%1) : tensor<4x16xf32> -> tensor<4x16xf32>
    %3 = llm.linear @layers.0.attention.wk(%1) : tensor<4x16xf32> -> tensor<4x8xf32>
    %4 = llm.linear @layers.0.attention.wv(%1) : tensor<4x16xf32> -> tensor<4x8xf32>
    %5 = llm.rope %2, %arg1 {head_dim = 8 : i64, theta = 1.000000e+04 : f64} : tensor<4x16xf32>, tensor<4xi32>
    %6 = llm.rope %3, %arg1 {head_dim = 8 : i64, theta = 1.000000e+04 : f64} : tensor<4x8xf32>, tensor<4xi32>
    %7 = llm.attention causal %5, %6, %4 {head_dim = 8 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, scale = 0.35355339059327373 : f64} : tensor<4x16xf32>, tensor<4x8xf32>, tensor<4x8xf32> -> tensor<4x16xf32>
    %8 = llm.linear @layers.0.attention.wo(%7) : tensor<4x16xf32> -> tensor<4x16xf32>
    %9 = llm.add %0, %8 : tensor<4x16xf32>
    %10 = llm.rms_norm %9, @layers.0.ffn_norm {eps = 1.000000e-05 : f64} : tensor<4x16xf32>
    %11 = llm.linear @layers.0.feed_forward.w1(%10) : tensor<4x16xf32> -> tensor<4x32xf32>
    %12 = llm.linear @layers.0.feed_forward.w3(%10) : tensor<4x16xf32> -> tensor<4x32xf32>
    %13 = llm.swiglu %11, %12 : tensor<4x32xf32>
    %14 = llm.linear @layers.0.feed_forward.w2(%13) : tensor<4x32xf32> -> tensor<4x16xf32>
    %15 = llm.add %9, %14 : tensor<4x16xf32>
    %16 = llm.rms_norm %15, @norm {eps = 1.000000e-05 : f64} : tensor<4x16xf32>
    %17 = llm.logits @output(%16) : tensor<4x16xf32> -> tensor<4x32xf32>
    return %17 : tensor<4x32xf32>
  }
  func.func @decode(%arg0: tensor<2xi32> {llm.arg = "tokens"}, %arg1: tensor<2xi32> {llm.arg = "positions"}) -> tensor<2x32xf32> attributes {llm.entry = "decode"} {
    %0 = llm.embedding @tok_embeddings[%arg0] : tensor<2xi32> -> tensor<2x16xf32>
    %1 = llm.rms_norm %0, @layers.0.attention_norm {eps = 1.000000e-05 : f64} : tensor<2x16xf32>
    %2 = llm.linear @layers.0.attention.wq(%1) : tensor<2x16xf32> -> tensor<2x16xf32>
    %3 = llm.linear @layers.0.attention.wk(%1) : tensor<2x16xf32> -> tensor<2x8xf32>
    %4 = llm.linear @layers.0.attention.wv(%1) : tensor<2x16xf32> -> tensor<2x8xf32>
    %5 = llm.rope %2, %arg1 {head_dim = 8 : i64, theta = 1.000000e+04 : f64} : tensor<2x16xf32>, tensor<2xi32>
    %6 = llm.rope %3, %arg1 {head_dim = 8 : i64, theta = 1.000000e+04 : f64} : tensor<2x8xf32>, tensor<2xi32>
    %7 = llm.attention self %5, %6, %4 {head_dim = 8 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, scale = 0.35355339059327373 : f64} : tensor<2x16xf32>, tensor<2x8xf32>, tensor<2x8xf32> -> tensor<2x16xf32>
    %8 = llm.linear @layers.0.attention.wo(%7) : tensor<2x16xf32> -> tensor<2x16xf32>
    %9 = llm.add %0, %8 : tensor<2x16xf32>
    %10 = llm.rms_norm %9, @layers.0.ffn_norm {eps = 1.000000e-05 : f64} : tensor<2x16xf32>
    %11 = llm.linear @layers.0.feed_forward.w1(%10) : tensor<2x16xf32> -> tensor<2x32xf32>
    %12 = llm.linear @layers.0.feed_forward.w3(%10) : tensor<2x16xf32> -> tensor<2x32xf32>
    %13 = llm.swiglu %11, %12 : tensor<2x32xf32>
    %14 = llm.linear @layers.0.feed_forward.w2(%13) : tensor<2x32xf32> -> tensor<2x16xf32>
    %15 = llm.add %9, %14 : tensor<2x16xf32>
    %16 = llm.rms_norm %15, @norm {eps = 1.000000e-05 : f64} : tensor<2x16xf32>
    %17 = llm.logits @output(%16) : tensor<2x16xf32> -> tensor<2x32xf32>
    return %17 : tensor<2x32xf32>
  }
}
