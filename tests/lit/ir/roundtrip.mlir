// Every llm op and type prints in its custom form and parses back, also
// through the generic form.
// RUN: kvplan-opt %s -split-input-file | kvplan-opt -split-input-file | FileCheck %s
// RUN: kvplan-opt %s -split-input-file --mlir-print-op-generic | kvplan-opt -split-input-file | FileCheck %s

// CHECK: llm.weight @emb : tensor<32x8xbf16>
// CHECK: llm.weight @wqkv concat ["wq", "wk", "wv"] : tensor<16x8xbf16>
llm.weight @emb : tensor<32x8xbf16>
llm.weight @g : tensor<8xbf16>
llm.weight @wqkv concat ["wq", "wk", "wv"] : tensor<16x8xbf16>
llm.weight @bqkv concat ["bq", "bk", "bv"] : tensor<16xbf16>
llm.weight @w13 concat ["w1", "w3"] : tensor<24x8xbf16>
llm.weight @w2 : tensor<8x12xbf16>

// CHECK-LABEL: func.func @all_ops
func.func @all_ops(%tokens: tensor<4xi32>, %pos: tensor<4xi32>, %table: tensor<1x4xi32>,
                   %cache: !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 4, element_type = bf16>) -> tensor<1x32xf32> {
  // CHECK: %[[X:.*]] = llm.embedding @emb[%{{.*}}] : tensor<4xi32> -> tensor<4x8xf32>
  %x = llm.embedding @emb[%tokens] : tensor<4xi32> -> tensor<4x8xf32>
  // CHECK: llm.rms_norm %[[X]], @g {eps = 1.000000e-05 : f64} : tensor<4x8xf32>
  %n = llm.rms_norm %x, @g {eps = 1.0e-5 : f64} : tensor<4x8xf32>
  // CHECK: %[[QKV:.*]]:3 = llm.linear @wqkv(%{{.*}}) bias @bqkv : tensor<4x8xf32> -> tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>
  %q, %k, %v = llm.linear @wqkv(%n) bias @bqkv : tensor<4x8xf32> -> tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>
  // CHECK: llm.rope %[[QKV]]#0, %{{.*}} {head_dim = 4 : i64, scaling = #llm.rope_scaling<factor = 8.000000e+00, low_freq_factor = 1.000000e+00, high_freq_factor = 4.000000e+00, original_max_position_embeddings = 8192>, theta = 5.000000e+05 : f64}
  %qr = llm.rope %q, %pos {head_dim = 4 : i64, theta = 5.0e5 : f64, scaling = #llm.rope_scaling<factor = 8.0, low_freq_factor = 1.0, high_freq_factor = 4.0, original_max_position_embeddings = 8192>} : tensor<4x8xf32>, tensor<4xi32>
  %kr = llm.rope %k, %pos {head_dim = 4 : i64, theta = 5.0e5 : f64} : tensor<4x4xf32>, tensor<4xi32>
  // CHECK: llm.attention causal
  %fresh = llm.attention causal %qr, %kr, %v {head_dim = 4 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, scale = 0.5 : f64} : tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32> -> tensor<4x8xf32>
  // CHECK: llm.attention self %{{.*}} {head_dim = 4 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, scale = 5.000000e-01 : f64, window = 3 : i64}
  %own = llm.attention self %qr, %kr, %v {head_dim = 4 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, scale = 0.5 : f64, window = 3 : i64} : tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32> -> tensor<4x8xf32>
  // CHECK: %[[C1:.*]] = llm.kv_cache_write %{{.*}}, %{{.*}} into %{{.*}}[%{{.*}}] at %{{.*}} {layer = 0 : i64}
  %c1 = llm.kv_cache_write %kr, %v into %cache[%table] at %pos {layer = 0 : i64} : tensor<4x4xf32>, tensor<4x4xf32>, !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 4, element_type = bf16>, tensor<1x4xi32>, tensor<4xi32>
  // CHECK: %[[KEYS:.*]], %[[VALUES:.*]] = llm.kv_cache_read %[[C1]]
  %keys, %values = llm.kv_cache_read %c1[%table] upto %pos {layer = 0 : i64} : !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 4, element_type = bf16>, tensor<1x4xi32>, tensor<4xi32> -> !llm.kv_view<kv_heads = 1, head_dim = 4, element_type = bf16>, !llm.kv_view<kv_heads = 1, head_dim = 4, element_type = bf16>
  // CHECK: llm.attention cache %{{.*}}, %[[KEYS]], %[[VALUES]] {{.*}} : tensor<4x8xf32>, !llm.kv_view<kv_heads = 1, head_dim = 4, element_type = bf16>, !llm.kv_view<kv_heads = 1, head_dim = 4, element_type = bf16> -> tensor<4x8xf32>
  %a = llm.attention cache %qr, %keys, %values {head_dim = 4 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, scale = 0.5 : f64} : tensor<4x8xf32>, !llm.kv_view<kv_heads = 1, head_dim = 4, element_type = bf16>, !llm.kv_view<kv_heads = 1, head_dim = 4, element_type = bf16> -> tensor<4x8xf32>
  // CHECK: llm.add
  %s0 = llm.add %fresh, %own : tensor<4x8xf32>
  %s1 = llm.add %s0, %a : tensor<4x8xf32>
  // CHECK: llm.take_last %{{.*}}, %{{.*}} : tensor<4x8xf32>, tensor<4xi32> -> tensor<1x8xf32>
  %last = llm.take_last %s1, %pos : tensor<4x8xf32>, tensor<4xi32> -> tensor<1x8xf32>
  %xl = llm.take_last %x, %pos : tensor<4x8xf32>, tensor<4xi32> -> tensor<1x8xf32>
  // CHECK: %{{.*}}, %{{.*}} = llm.add_rms_norm %{{.*}}, %{{.*}}, @g {eps = 1.000000e-05 : f64} : tensor<1x8xf32>
  %n2, %r = llm.add_rms_norm %xl, %last, @g {eps = 1.0e-5 : f64} : tensor<1x8xf32>
  // CHECK: llm.fused_ffn %{{.*}} : tensor<1x24xf32> -> tensor<1x12xf32>
  %gu = llm.linear @w13(%n2) : tensor<1x8xf32> -> tensor<1x24xf32>
  %h = llm.fused_ffn %gu : tensor<1x24xf32> -> tensor<1x12xf32>
  // CHECK: llm.swiglu %{{.*}}, %{{.*}} : tensor<1x12xf32>
  %h2 = llm.swiglu %h, %h : tensor<1x12xf32>
  %d = llm.linear @w2(%h2) : tensor<1x12xf32> -> tensor<1x8xf32>
  %out = llm.add %r, %d : tensor<1x8xf32>
  // CHECK: llm.logits @emb(%{{.*}}) : tensor<1x8xf32> -> tensor<1x32xf32>
  %logits = llm.logits @emb(%out) : tensor<1x8xf32> -> tensor<1x32xf32>
  return %logits : tensor<1x32xf32>
}

// The cuda target's ops and storage types: narrow results print after an
// arrow, rows already narrow need no conversion.
// CHECK-LABEL: func.func @cuda_ops
func.func @cuda_ops(%x: tensor<4x8xf32>, %pos: tensor<4xi32>, %table: tensor<1x4xi32>,
                    %cache: !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 4, element_type = bf16>) -> tensor<4x8xf32> {
  // CHECK: %[[N:.*]] = llm.rms_norm %{{.*}}, @g {eps = 1.000000e-05 : f64} : tensor<4x8xf32> -> tensor<4x8xbf16>
  %n = llm.rms_norm %x, @g {eps = 1.0e-5 : f64} : tensor<4x8xf32> -> tensor<4x8xbf16>
  // CHECK: llm.linear @wqkv(%[[N]]) : tensor<4x8xbf16> -> tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>
  %q, %k, %v = llm.linear @wqkv(%n) : tensor<4x8xbf16> -> tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>
  // CHECK: %[[QR:.*]], %[[C:.*]] = llm.rope_kv_write %{{.*}}, %{{.*}}, %{{.*}} into %{{.*}}[%{{.*}}] at %{{.*}} {head_dim = 4 : i64, layer = 0 : i64, theta = 1.000000e+04 : f64}
  %qr, %c = llm.rope_kv_write %q, %k, %v into %cache[%table] at %pos {head_dim = 4 : i64, layer = 0 : i64, theta = 1.0e4 : f64} : (tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>), !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 4, element_type = bf16>, tensor<1x4xi32>, tensor<4xi32> -> tensor<4x8xf32>
  // A fused QKV product's one result, read packed.
  // CHECK: %[[QKV:.*]] = llm.linear @wqkv(%[[N]]) : tensor<4x8xbf16> -> tensor<4x16xf32>
  %qkv = llm.linear @wqkv(%n) : tensor<4x8xbf16> -> tensor<4x16xf32>
  // CHECK: llm.rope_kv_write %[[QKV]] into %[[C]][%{{.*}}] at %{{.*}} {head_dim = 4 : i64, layer = 0 : i64, theta = 1.000000e+04 : f64} : (tensor<4x16xf32>), <{{.*}}>, tensor<1x4xi32>, tensor<4xi32> -> tensor<4x8xf32>
  %pqr, %pc = llm.rope_kv_write %qkv into %c[%table] at %pos {head_dim = 4 : i64, layer = 0 : i64, theta = 1.0e4 : f64} : (tensor<4x16xf32>), !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 4, element_type = bf16>, tensor<1x4xi32>, tensor<4xi32> -> tensor<4x8xf32>
  %keys, %values = llm.kv_cache_read %c[%table] upto %pos {layer = 0 : i64} : !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 4, element_type = bf16>, tensor<1x4xi32>, tensor<4xi32> -> !llm.kv_view<kv_heads = 1, head_dim = 4, element_type = bf16>, !llm.kv_view<kv_heads = 1, head_dim = 4, element_type = bf16>
  // CHECK: llm.attention cache %[[QR]], {{.*}} -> tensor<4x8xbf16>
  %a = llm.attention cache %qr, %keys, %values {head_dim = 4 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, scale = 0.5 : f64} : tensor<4x8xf32>, !llm.kv_view<kv_heads = 1, head_dim = 4, element_type = bf16>, !llm.kv_view<kv_heads = 1, head_dim = 4, element_type = bf16> -> tensor<4x8xbf16>
  // CHECK: llm.convert %{{.*}} : tensor<4x8xf32> -> tensor<4x8xbf16>
  %xc = llm.convert %x : tensor<4x8xf32> -> tensor<4x8xbf16>
  // CHECK: llm.swiglu %{{.*}}, %{{.*}} : tensor<4x8xf32> -> tensor<4x8xbf16>
  %sw = llm.swiglu %x, %x : tensor<4x8xf32> -> tensor<4x8xbf16>
  // CHECK: llm.add_rms_norm %{{.*}}, %{{.*}}, @g {eps = 1.000000e-05 : f64} : tensor<4x8xf32> -> tensor<4x8xbf16>
  %n2, %r = llm.add_rms_norm %x, %x, @g {eps = 1.0e-5 : f64} : tensor<4x8xf32> -> tensor<4x8xbf16>
  %o = llm.linear @w8(%a) : tensor<4x8xbf16> -> tensor<4x8xf32>
  // CHECK: llm.matvec @wqkv(%{{.*}}) norm @g {eps = 1.000000e-05 : f64} : tensor<4x8xf32> -> tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>
  %mq, %mk, %mv = llm.matvec @wqkv(%x) norm @g {eps = 1.0e-5 : f64} : tensor<4x8xf32> -> tensor<4x8xf32>, tensor<4x4xf32>, tensor<4x4xf32>
  // CHECK: llm.matvec @w8(%{{.*}}) plus %{{.*}} bias @b8 : tensor<4x8xbf16>, tensor<4x8xf32> -> tensor<4x8xf32>
  %mo = llm.matvec @w8(%a) plus %o bias @b8 : tensor<4x8xbf16>, tensor<4x8xf32> -> tensor<4x8xf32>
  // CHECK: llm.matvec @w13(%{{.*}}) norm @g swiglu {eps = 1.000000e-05 : f64} : tensor<4x8xf32> -> tensor<4x12xbf16>
  %mg = llm.matvec @w13(%mo) norm @g swiglu {eps = 1.0e-5 : f64} : tensor<4x8xf32> -> tensor<4x12xbf16>
  // CHECK: %{{.*}}, %{{.*}} = llm.matvec_rope_kv_write @wqkv(%{{.*}}) norm @g bias @bqkv into %[[C]][%{{.*}}] at %{{.*}} {eps = 1.000000e-05 : f64, head_dim = 4 : i64, layer = 0 : i64, theta = 1.000000e+04 : f64} : tensor<4x8xf32>, <layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 4, element_type = bf16>, tensor<1x4xi32>, tensor<4xi32> -> tensor<4x8xf32>
  %mr, %mc = llm.matvec_rope_kv_write @wqkv(%x) norm @g bias @bqkv into %c[%table] at %pos {eps = 1.0e-5 : f64, head_dim = 4 : i64, layer = 0 : i64, theta = 1.0e4 : f64} : tensor<4x8xf32>, !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 4, element_type = bf16>, tensor<1x4xi32>, tensor<4xi32> -> tensor<4x8xf32>
  return %o : tensor<4x8xf32>
}
llm.weight @w8 : tensor<8x8xbf16>
llm.weight @b8 : tensor<8xbf16>

// -----

// The compile settings are one typed attribute on the module. Keys parse in
// any order and print in one; the pool (kv_pages) need not be max_batch x
// max_seq_len / page_size (here 8).
// CHECK: module attributes {llm.settings = #llm.settings<target = "cuda", weight_dtype = "bf16", kv_dtype = "f16", max_batch = 2, max_seq_len = 16, prefill_chunk = 4, page_size = 4, kv_pages = 20>}
module attributes {llm.settings = #llm.settings<kv_pages = 20, target = "cuda", weight_dtype = "bf16", kv_dtype = "f16", max_batch = 2, max_seq_len = 16, prefill_chunk = 4, page_size = 4>} {
}
