// RUN: kvplan-opt %s --split-prefill-decode | FileCheck %s
// RUN: kvplan-opt %s --split-prefill-decode="chunk=3 max-batch=5" | FileCheck %s --check-prefix=OPTS
// RUN: kvplan-opt %s --split-prefill-decode="max-batch=12 decode-rows=32,8,4,8,12 prefill-rows=4,2" | FileCheck %s --check-prefix=ROWS
// RUN: sed 's/llm.model = "one"/llm.decode_copies = array<i64: 1>, llm.prefill_copies = array<i64: 2>, llm.model = "one"/' %s > %t.listed.mlir
// RUN: kvplan-opt %t.listed.mlir --split-prefill-decode | FileCheck %s --check-prefix=LISTED
// RUN: kvplan-opt %t.listed.mlir --split-prefill-decode="max-batch=12 decode-rows=4" | FileCheck %s --check-prefix=OVERRIDE

// @forward (16 rows: the whole context) becomes @prefill (a chunk of 4 rows
// of one sequence) and @decode (one row for each of 2 sequences).
// CHECK-NOT: func.func @forward
// CHECK-LABEL: func.func @prefill
// CHECK-SAME: (%[[TOK:.*]]: tensor<4xi32> {llm.arg = "tokens"}, %[[POS:.*]]: tensor<4xi32> {llm.arg = "positions"}) -> tensor<4x32xf32>
// CHECK-SAME: attributes {llm.entry = "prefill"}
// CHECK: llm.embedding @tok_embeddings[%[[TOK]]] : tensor<4xi32> -> tensor<4x16xf32>
// CHECK: llm.rope %{{.*}}, %[[POS]] {{.*}} : tensor<4x16xf32>, tensor<4xi32>
// Within a chunk, rows are one sequence: causal.
// CHECK: llm.attention causal
// CHECK: llm.logits @output(%{{.*}}) : tensor<4x16xf32> -> tensor<4x32xf32>
// CHECK-LABEL: func.func @decode
// CHECK-SAME: (%{{.*}}: tensor<2xi32> {llm.arg = "tokens"}, %{{.*}}: tensor<2xi32> {llm.arg = "positions"}) -> tensor<2x32xf32>
// CHECK-SAME: attributes {llm.entry = "decode"}
// In decode each row is its own sequence: until the KV cache is inserted it
// sees only itself.
// CHECK: llm.attention self {{.*}} : tensor<2x16xf32>, tensor<2x8xf32>, tensor<2x8xf32> -> tensor<2x16xf32>
// CHECK-NOT: llm.attention causal
// CHECK: return %{{.*}} : tensor<2x32xf32>

// Pass options override llm.settings.
// OPTS: func.func @prefill(%{{.*}}: tensor<3xi32>
// OPTS: func.func @decode(%{{.*}}: tensor<5xi32>

// decode-rows: smaller copies of @decode, each once, in ascending rows, only
// those below the max batch (32 and 12 are not); each is for decode (its
// llm.entry) and sees only its own rows. prefill-rows: the same for
// @prefill, below its chunk of 4 rows, causal as it is.
// ROWS-LABEL: func.func @decode(%{{.*}}: tensor<12xi32>
// ROWS-SAME: attributes {llm.entry = "decode"}
// ROWS-LABEL: func.func @prefill.2(%{{.*}}: tensor<2xi32> {llm.arg = "tokens"}, %{{.*}}: tensor<2xi32> {llm.arg = "positions"}) -> tensor<2x32xf32>
// ROWS-SAME: attributes {llm.entry = "prefill"}
// ROWS: llm.attention causal {{.*}} : tensor<2x16xf32>, tensor<2x8xf32>, tensor<2x8xf32> -> tensor<2x16xf32>
// ROWS-NOT: func.func @prefill.
// ROWS-LABEL: func.func @decode.4(%{{.*}}: tensor<4xi32> {llm.arg = "tokens"}, %{{.*}}: tensor<4xi32> {llm.arg = "positions"}) -> tensor<4x32xf32>
// ROWS-SAME: attributes {llm.entry = "decode"}
// ROWS: llm.attention self {{.*}} : tensor<4x16xf32>, tensor<4x8xf32>, tensor<4x8xf32> -> tensor<4x16xf32>
// ROWS-LABEL: func.func @decode.8(%{{.*}}: tensor<8xi32>
// ROWS-SAME: attributes {llm.entry = "decode"}
// ROWS-NOT: func.func @decode.

// Without the options, the module's lists (the settings' decode_copies and
// prefill_copies, as the frontend writes them) say which copies to make; an
// option replaces its list.
// LISTED-LABEL: func.func @prefill(%{{.*}}: tensor<4xi32>
// LISTED-LABEL: func.func @decode(%{{.*}}: tensor<2xi32>
// LISTED-LABEL: func.func @prefill.2(%{{.*}}: tensor<2xi32>
// LISTED-SAME: attributes {llm.entry = "prefill"}
// LISTED-LABEL: func.func @decode.1(%{{.*}}: tensor<1xi32>
// LISTED-SAME: attributes {llm.entry = "decode"}
// LISTED-NOT: func.func @decode.
// OVERRIDE: func.func @prefill.2(
// OVERRIDE-NOT: func.func @decode.1(
// OVERRIDE: func.func @decode.4(
// OVERRIDE-NOT: func.func @decode.1(

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
