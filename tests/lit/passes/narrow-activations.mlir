// RUN: kvplan-opt %s -split-input-file --narrow-activations | FileCheck %s

// Rows only bf16 linears read are stored in bf16 by the op that makes them;
// the residual stream, RoPE's output and the logits stay f32.
// CHECK-LABEL: func.func @layer
// CHECK: %[[X:.*]] = llm.embedding @emb[%{{.*}}] : tensor<2xi32> -> tensor<2x16xf32>
// CHECK: %[[N:.*]] = llm.rms_norm %[[X]], @g {{.*}} : tensor<2x16xf32> -> tensor<2x16xbf16>
// CHECK: llm.linear @wqkv(%[[N]]) : tensor<2x16xbf16> -> tensor<2x16xf32>, tensor<2x8xf32>, tensor<2x8xf32>
// CHECK: llm.rope {{.*}} : tensor<2x16xf32>, tensor<2xi32>
// CHECK: %[[A:.*]] = llm.attention cache {{.*}} -> tensor<2x16xbf16>
// CHECK: %[[O:.*]] = llm.linear @wo(%[[A]]) : tensor<2x16xbf16> -> tensor<2x16xf32>
// CHECK: %[[N2:.*]], %[[R:.*]] = llm.add_rms_norm %[[X]], %[[O]], @g {{.*}} : tensor<2x16xf32> -> tensor<2x16xbf16>
// CHECK: %[[GU:.*]] = llm.linear @w13(%[[N2]]) : tensor<2x16xbf16> -> tensor<2x64xf32>
// CHECK: %[[H:.*]] = llm.fused_ffn %[[GU]] : tensor<2x64xf32> -> tensor<2x32xbf16>
// CHECK: llm.linear @w2(%[[H]]) : tensor<2x32xbf16> -> tensor<2x16xf32>
// CHECK: llm.logits @emb(%{{.*}}) : tensor<2x16xbf16> -> tensor<2x32xf32>
// CHECK-NOT: llm.convert
llm.weight @emb : tensor<32x16xbf16>
llm.weight @g : tensor<16xbf16>
llm.weight @wqkv : tensor<32x16xbf16>
llm.weight @wo : tensor<16x16xbf16>
llm.weight @w13 : tensor<64x16xbf16>
llm.weight @w2 : tensor<16x32xbf16>
func.func @layer(%tokens: tensor<2xi32>, %pos: tensor<2xi32>, %table: tensor<2x4xi32>, %cache: !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = bf16>) -> tensor<2x32xf32> {
  %x = llm.embedding @emb[%tokens] : tensor<2xi32> -> tensor<2x16xf32>
  %n = llm.rms_norm %x, @g {eps = 1.0e-5 : f64} : tensor<2x16xf32>
  %q, %k, %v = llm.linear @wqkv(%n) : tensor<2x16xf32> -> tensor<2x16xf32>, tensor<2x8xf32>, tensor<2x8xf32>
  %qr = llm.rope %q, %pos {head_dim = 8 : i64, theta = 1.0e4 : f64} : tensor<2x16xf32>, tensor<2xi32>
  %kr = llm.rope %k, %pos {head_dim = 8 : i64, theta = 1.0e4 : f64} : tensor<2x8xf32>, tensor<2xi32>
  %c1 = llm.kv_cache_write %kr, %v into %cache[%table] at %pos {layer = 0 : i64} : tensor<2x8xf32>, tensor<2x8xf32>, !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = bf16>, tensor<2x4xi32>, tensor<2xi32>
  %ks, %vs = llm.kv_cache_read %c1[%table] upto %pos {layer = 0 : i64} : !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = bf16>, tensor<2x4xi32>, tensor<2xi32> -> !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = bf16>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = bf16>
  %a = llm.attention cache %qr, %ks, %vs {head_dim = 8 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, scale = 0.35 : f64} : tensor<2x16xf32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = bf16>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = bf16> -> tensor<2x16xf32>
  %o = llm.linear @wo(%a) : tensor<2x16xf32> -> tensor<2x16xf32>
  %n2, %r = llm.add_rms_norm %x, %o, @g {eps = 1.0e-5 : f64} : tensor<2x16xf32>
  %gu = llm.linear @w13(%n2) : tensor<2x16xf32> -> tensor<2x64xf32>
  %h = llm.fused_ffn %gu : tensor<2x64xf32> -> tensor<2x32xf32>
  %d = llm.linear @w2(%h) : tensor<2x32xf32> -> tensor<2x16xf32>
  %n3, %r2 = llm.add_rms_norm %r, %d, @g {eps = 1.0e-5 : f64} : tensor<2x16xf32>
  %logits = llm.logits @emb(%n3) : tensor<2x16xf32> -> tensor<2x32xf32>
  return %logits : tensor<2x32xf32>
}

// -----

// take_last passes the narrow type on: attention stores bf16 rows, the last
// row is copied as it is, and the output projection reads it.
// CHECK-LABEL: func.func @pruned
// CHECK: %[[A:.*]] = llm.attention {{.*}} -> tensor<4x16xf16>
// CHECK: %[[L:.*]] = llm.take_last %[[A]], %{{.*}} : tensor<4x16xf16>, tensor<4xi32> -> tensor<1x16xf16>
// CHECK: llm.linear @wo(%[[L]]) : tensor<1x16xf16> -> tensor<1x16xf32>
llm.weight @wo : tensor<16x16xf16>
func.func @pruned(%q: tensor<4x16xf32>, %k: tensor<4x8xf32>, %pos: tensor<4xi32>) -> tensor<1x16xf32> {
  %a = llm.attention causal %q, %k, %k {head_dim = 8 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, scale = 0.35 : f64} : tensor<4x16xf32>, tensor<4x8xf32>, tensor<4x8xf32> -> tensor<4x16xf32>
  %l = llm.take_last %a, %pos : tensor<4x16xf32>, tensor<4xi32> -> tensor<1x16xf32>
  %o = llm.linear @wo(%l) : tensor<1x16xf32> -> tensor<1x16xf32>
  return %o : tensor<1x16xf32>
}

// -----

// Rows a linear and another op both read stay f32, and the linear converts
// its copy; so do rows whose producer cannot store 16 bits (the residual
// add's), and the take_last of them.
// CHECK-LABEL: func.func @shared
// CHECK: %[[N:.*]] = llm.rms_norm {{.*}} : tensor<2x16xf32>
// CHECK-NEXT: %[[C:.*]] = llm.convert %[[N]] : tensor<2x16xf32> -> tensor<2x16xbf16>
// CHECK-NEXT: llm.linear @w(%[[C]]) : tensor<2x16xbf16> -> tensor<2x16xf32>
// CHECK: %[[S:.*]] = llm.add
// CHECK: %[[L:.*]] = llm.take_last %[[S]], %{{.*}} : tensor<2x16xf32>, tensor<2xi32> -> tensor<1x16xf32>
// CHECK-NEXT: %[[C2:.*]] = llm.convert %[[L]] : tensor<1x16xf32> -> tensor<1x16xbf16>
// CHECK-NEXT: llm.linear @w(%[[C2]])
llm.weight @w : tensor<16x16xbf16>
llm.weight @g : tensor<16xf32>
func.func @shared(%x: tensor<2x16xf32>, %pos: tensor<2xi32>) -> (tensor<2x16xf32>, tensor<1x16xf32>) {
  %n = llm.rms_norm %x, @g {eps = 1.0e-5 : f64} : tensor<2x16xf32>
  %y = llm.linear @w(%n) : tensor<2x16xf32> -> tensor<2x16xf32>
  %s = llm.add %n, %y : tensor<2x16xf32>
  %l = llm.take_last %s, %pos : tensor<2x16xf32>, tensor<2xi32> -> tensor<1x16xf32>
  %z = llm.linear @w(%l) : tensor<1x16xf32> -> tensor<1x16xf32>
  return %s, %z : tensor<2x16xf32>, tensor<1x16xf32>
}

// -----

// Readers that disagree on the type, and f32 weights: nothing changes.
// CHECK-LABEL: func.func @unchanged
// CHECK: llm.rms_norm {{.*}} : tensor<2x16xf32>{{$}}
// CHECK: llm.convert {{.*}} -> tensor<2x16xbf16>
// CHECK: llm.convert {{.*}} -> tensor<2x16xf16>
// CHECK: llm.rms_norm {{.*}} : tensor<2x16xf32>{{$}}
// CHECK-NOT: llm.convert
llm.weight @wb : tensor<16x16xbf16>
llm.weight @wh : tensor<16x16xf16>
llm.weight @wf : tensor<16x16xf32>
llm.weight @g : tensor<16xf32>
func.func @unchanged(%x: tensor<2x16xf32>) -> (tensor<2x16xf32>, tensor<2x16xf32>, tensor<2x16xf32>) {
  %n = llm.rms_norm %x, @g {eps = 1.0e-5 : f64} : tensor<2x16xf32>
  %a = llm.linear @wb(%n) : tensor<2x16xf32> -> tensor<2x16xf32>
  %b = llm.linear @wh(%n) : tensor<2x16xf32> -> tensor<2x16xf32>
  %m = llm.rms_norm %x, @g {eps = 1.0e-5 : f64} : tensor<2x16xf32>
  %c = llm.linear @wf(%m) : tensor<2x16xf32> -> tensor<2x16xf32>
  return %a, %b, %c : tensor<2x16xf32>, tensor<2x16xf32>, tensor<2x16xf32>
}
