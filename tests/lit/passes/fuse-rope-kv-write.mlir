// RUN: kvplan-opt %s -split-input-file --fuse-rope-kv-write | FileCheck %s
// RUN: kvplan-opt %s -split-input-file --fuse-rope-kv-write --mlir-print-debuginfo \
// RUN:   --mlir-print-local-scope | FileCheck %s --check-prefix=LOC

// The RoPE of q, the RoPE of k and the cache write of the rotated keys
// become one op at the write; the attention reads its rotated queries and
// the cache it returns. The fused QKV product that only it reads gets one
// result, which it reads packed.
// CHECK-LABEL: func.func @decode
// CHECK: %[[QKV:.*]] = llm.linear @wqkv(%arg0) : tensor<2x16xf32> -> tensor<2x32xf32>
// CHECK-NOT: llm.rope
// CHECK: %[[QR:.*]], %[[C:.*]] = llm.rope_kv_write %[[QKV]] into %arg3[%arg2] at %arg1 {head_dim = 8 : i64, layer = 0 : i64, theta = 1.000000e+04 : f64} : (tensor<2x32xf32>), <{{.*}}>, tensor<2x4xi32>, tensor<2xi32> -> tensor<2x16xf32>
// CHECK-NOT: llm.kv_cache_write
// CHECK: %[[K:.*]], %[[V:.*]] = llm.kv_cache_read %[[C]][%arg2] upto %arg1
// CHECK: llm.attention cache %[[QR]], %[[K]], %[[V]]
func.func @decode(%arg0: tensor<2x16xf32>, %arg1: tensor<2xi32>, %arg2: tensor<2x4xi32>, %arg3: !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = bf16>) -> tensor<2x16xf32> {
  %2:3 = llm.linear @wqkv(%arg0) : tensor<2x16xf32> -> tensor<2x16xf32>, tensor<2x8xf32>, tensor<2x8xf32>
  %3 = llm.rope %2#0, %arg1 {head_dim = 8 : i64, theta = 1.000000e+04 : f64} : tensor<2x16xf32>, tensor<2xi32>
  %4 = llm.rope %2#1, %arg1 {head_dim = 8 : i64, theta = 1.000000e+04 : f64} : tensor<2x8xf32>, tensor<2xi32>
  %5 = llm.kv_cache_write %4, %2#2 into %arg3[%arg2] at %arg1 {layer = 0 : i64} : tensor<2x8xf32>, tensor<2x8xf32>, !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = bf16>, tensor<2x4xi32>, tensor<2xi32>
  %keys, %values = llm.kv_cache_read %5[%arg2] upto %arg1 {layer = 0 : i64} : !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = bf16>, tensor<2x4xi32>, tensor<2xi32> -> !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = bf16>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = bf16>
  %6 = llm.attention cache %3, %keys, %values {head_dim = 8 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, scale = 0.35355339059327373 : f64} : tensor<2x16xf32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = bf16>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = bf16> -> tensor<2x16xf32>
  return %6 : tensor<2x16xf32>
}
llm.weight @wqkv : tensor<32x16xf32>

// -----

// Llama 3 scaling rides along; the fused op keeps the locations of its parts.
// CHECK-LABEL: func.func @scaled
// LOC: llm.rope_kv_write {{.*}} loc(fused["layers.0.attention.rope_q", "layers.0.attention.rope_k", "layers.0.attention"])
// CHECK: llm.rope_kv_write {{.*}} {head_dim = 8 : i64, layer = 0 : i64, scaling = #llm.rope_scaling<factor = 8.000000e+00, low_freq_factor = 1.000000e+00, high_freq_factor = 4.000000e+00, original_max_position_embeddings = 64>, theta = 5.000000e+05 : f64}
func.func @scaled(%q: tensor<1x16xf32>, %k: tensor<1x8xf32>, %v: tensor<1x8xf32>, %p: tensor<1xi32>, %t: tensor<1x4xi32>, %c: !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>) -> tensor<1x16xf32> {
  %qr = llm.rope %q, %p {head_dim = 8 : i64, theta = 5.0e5 : f64, scaling = #llm.rope_scaling<factor = 8.0, low_freq_factor = 1.0, high_freq_factor = 4.0, original_max_position_embeddings = 64>} : tensor<1x16xf32>, tensor<1xi32> loc("layers.0.attention.rope_q")
  %kr = llm.rope %k, %p {head_dim = 8 : i64, theta = 5.0e5 : f64, scaling = #llm.rope_scaling<factor = 8.0, low_freq_factor = 1.0, high_freq_factor = 4.0, original_max_position_embeddings = 64>} : tensor<1x8xf32>, tensor<1xi32> loc("layers.0.attention.rope_k")
  %c1 = llm.kv_cache_write %kr, %v into %c[%t] at %p {layer = 0 : i64} : tensor<1x8xf32>, tensor<1x8xf32>, !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<1x4xi32>, tensor<1xi32> loc("layers.0.attention")
  %ks, %vs = llm.kv_cache_read %c1[%t] upto %p {layer = 0 : i64} : !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<1x4xi32>, tensor<1xi32> -> !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>
  %a = llm.attention cache %qr, %ks, %vs {head_dim = 8 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, scale = 0.5 : f64} : tensor<1x16xf32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32> -> tensor<1x16xf32>
  return %a : tensor<1x16xf32>
}

// -----

// Not fused: the rotated keys have another reader (they would never be
// stored apart).
// CHECK-LABEL: func.func @keys_read_twice
// CHECK-COUNT-2: llm.rope
// CHECK: llm.kv_cache_write
// CHECK-NOT: llm.rope_kv_write
func.func @keys_read_twice(%q: tensor<1x16xf32>, %k: tensor<1x8xf32>, %v: tensor<1x8xf32>, %p: tensor<1xi32>, %t: tensor<1x4xi32>, %c: !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>) -> (tensor<1x16xf32>, tensor<1x8xf32>) {
  %qr = llm.rope %q, %p {head_dim = 8 : i64, theta = 1.0e4 : f64} : tensor<1x16xf32>, tensor<1xi32>
  %kr = llm.rope %k, %p {head_dim = 8 : i64, theta = 1.0e4 : f64} : tensor<1x8xf32>, tensor<1xi32>
  %c1 = llm.kv_cache_write %kr, %v into %c[%t] at %p {layer = 0 : i64} : tensor<1x8xf32>, tensor<1x8xf32>, !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<1x4xi32>, tensor<1xi32>
  %ks, %vs = llm.kv_cache_read %c1[%t] upto %p {layer = 0 : i64} : !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<1x4xi32>, tensor<1xi32> -> !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>
  %a = llm.attention cache %qr, %ks, %vs {head_dim = 8 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, scale = 0.5 : f64} : tensor<1x16xf32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32> -> tensor<1x16xf32>
  return %a, %kr : tensor<1x16xf32>, tensor<1x8xf32>
}

// -----

// Not fused: queries and keys are rotated with different bases.
// CHECK-LABEL: func.func @other_theta
// CHECK: llm.kv_cache_write
// CHECK-NOT: llm.rope_kv_write
func.func @other_theta(%q: tensor<1x16xf32>, %k: tensor<1x8xf32>, %v: tensor<1x8xf32>, %p: tensor<1xi32>, %t: tensor<1x4xi32>, %c: !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>) -> tensor<1x16xf32> {
  %qr = llm.rope %q, %p {head_dim = 8 : i64, theta = 1.0e4 : f64} : tensor<1x16xf32>, tensor<1xi32>
  %kr = llm.rope %k, %p {head_dim = 8 : i64, theta = 5.0e5 : f64} : tensor<1x8xf32>, tensor<1xi32>
  %c1 = llm.kv_cache_write %kr, %v into %c[%t] at %p {layer = 0 : i64} : tensor<1x8xf32>, tensor<1x8xf32>, !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<1x4xi32>, tensor<1xi32>
  %ks, %vs = llm.kv_cache_read %c1[%t] upto %p {layer = 0 : i64} : !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<1x4xi32>, tensor<1xi32> -> !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>
  %a = llm.attention cache %qr, %ks, %vs {head_dim = 8 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, scale = 0.5 : f64} : tensor<1x16xf32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32> -> tensor<1x16xf32>
  return %a : tensor<1x16xf32>
}

// -----

// A GGUF's per-pair frequency factors ride along too.
// CHECK-LABEL: func.func @freq_factors
// CHECK: llm.rope_kv_write {{.*}} {freq_factors = array<f64: 1.000000e+00, 1.500000e+00, 4.000000e+00, 8.000000e+00>, head_dim = 8 : i64, layer = 0 : i64, theta = 5.000000e+05 : f64}
func.func @freq_factors(%q: tensor<1x16xf32>, %k: tensor<1x8xf32>, %v: tensor<1x8xf32>, %p: tensor<1xi32>, %t: tensor<1x4xi32>, %c: !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>) -> tensor<1x16xf32> {
  %qr = llm.rope %q, %p {freq_factors = array<f64: 1.0, 1.5, 4.0, 8.0>, head_dim = 8 : i64, theta = 5.0e5 : f64} : tensor<1x16xf32>, tensor<1xi32>
  %kr = llm.rope %k, %p {freq_factors = array<f64: 1.0, 1.5, 4.0, 8.0>, head_dim = 8 : i64, theta = 5.0e5 : f64} : tensor<1x8xf32>, tensor<1xi32>
  %c1 = llm.kv_cache_write %kr, %v into %c[%t] at %p {layer = 0 : i64} : tensor<1x8xf32>, tensor<1x8xf32>, !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<1x4xi32>, tensor<1xi32>
  %ks, %vs = llm.kv_cache_read %c1[%t] upto %p {layer = 0 : i64} : !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<1x4xi32>, tensor<1xi32> -> !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>
  %a = llm.attention cache %qr, %ks, %vs {head_dim = 8 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, scale = 0.5 : f64} : tensor<1x16xf32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32> -> tensor<1x16xf32>
  return %a : tensor<1x16xf32>
}

// -----

// Not fused: queries and keys are rotated with different factors.
// CHECK-LABEL: func.func @other_freq_factors
// CHECK: llm.kv_cache_write
// CHECK-NOT: llm.rope_kv_write
func.func @other_freq_factors(%q: tensor<1x16xf32>, %k: tensor<1x8xf32>, %v: tensor<1x8xf32>, %p: tensor<1xi32>, %t: tensor<1x4xi32>, %c: !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>) -> tensor<1x16xf32> {
  %qr = llm.rope %q, %p {freq_factors = array<f64: 1.0, 1.5, 4.0, 8.0>, head_dim = 8 : i64, theta = 5.0e5 : f64} : tensor<1x16xf32>, tensor<1xi32>
  %kr = llm.rope %k, %p {freq_factors = array<f64: 1.0, 1.5, 4.0, 4.0>, head_dim = 8 : i64, theta = 5.0e5 : f64} : tensor<1x8xf32>, tensor<1xi32>
  %c1 = llm.kv_cache_write %kr, %v into %c[%t] at %p {layer = 0 : i64} : tensor<1x8xf32>, tensor<1x8xf32>, !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<1x4xi32>, tensor<1xi32>
  %ks, %vs = llm.kv_cache_read %c1[%t] upto %p {layer = 0 : i64} : !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<1x4xi32>, tensor<1xi32> -> !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>
  %a = llm.attention cache %qr, %ks, %vs {head_dim = 8 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, scale = 0.5 : f64} : tensor<1x16xf32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32> -> tensor<1x16xf32>
  return %a : tensor<1x16xf32>
}

// -----

// Not fused: the rotated queries are read before the write, where the fused
// op would not yet have made them.
// CHECK-LABEL: func.func @queries_read_early
// CHECK: llm.kv_cache_write
// CHECK-NOT: llm.rope_kv_write
func.func @queries_read_early(%q: tensor<1x16xf32>, %k: tensor<1x8xf32>, %v: tensor<1x8xf32>, %p: tensor<1xi32>, %t: tensor<1x4xi32>, %c: !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>) -> (tensor<1x16xf32>, tensor<1x16xf32>) {
  %qr = llm.rope %q, %p {head_dim = 8 : i64, theta = 1.0e4 : f64} : tensor<1x16xf32>, tensor<1xi32>
  %early = llm.add %qr, %qr : tensor<1x16xf32>
  %kr = llm.rope %k, %p {head_dim = 8 : i64, theta = 1.0e4 : f64} : tensor<1x8xf32>, tensor<1xi32>
  %c1 = llm.kv_cache_write %kr, %v into %c[%t] at %p {layer = 0 : i64} : tensor<1x8xf32>, tensor<1x8xf32>, !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<1x4xi32>, tensor<1xi32>
  %ks, %vs = llm.kv_cache_read %c1[%t] upto %p {layer = 0 : i64} : !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<1x4xi32>, tensor<1xi32> -> !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>
  %a = llm.attention cache %qr, %ks, %vs {head_dim = 8 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, scale = 0.5 : f64} : tensor<1x16xf32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32> -> tensor<1x16xf32>
  return %a, %early : tensor<1x16xf32>, tensor<1x16xf32>
}

// -----

// Not fused: the keys written are not rotated (no RoPE to fuse).
// CHECK-LABEL: func.func @raw_keys
// CHECK: llm.kv_cache_write
// CHECK-NOT: llm.rope_kv_write
func.func @raw_keys(%k: tensor<1x8xf32>, %v: tensor<1x8xf32>, %p: tensor<1xi32>, %t: tensor<1x4xi32>, %c: !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>) -> !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32> {
  %c1 = llm.kv_cache_write %k, %v into %c[%t] at %p {layer = 0 : i64} : tensor<1x8xf32>, tensor<1x8xf32>, !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<1x4xi32>, tensor<1xi32>
  return %c1 : !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>
}

// -----

// The bias stays with the packed product.
// CHECK-LABEL: func.func @packed_with_bias
// CHECK: %[[QKV:.*]] = llm.linear @wqkv(%arg0) bias @bqkv : tensor<1x16xf32> -> tensor<1x32xf32>
// CHECK: llm.rope_kv_write %[[QKV]] into
func.func @packed_with_bias(%x: tensor<1x16xf32>, %p: tensor<1xi32>, %t: tensor<1x4xi32>, %c: !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>) -> (tensor<1x16xf32>) {
  %q, %k, %v = llm.linear @wqkv(%x) bias @bqkv : tensor<1x16xf32> -> tensor<1x16xf32>, tensor<1x8xf32>, tensor<1x8xf32>
  %qr = llm.rope %q, %p {head_dim = 8 : i64, theta = 1.0e4 : f64} : tensor<1x16xf32>, tensor<1xi32>
  %kr = llm.rope %k, %p {head_dim = 8 : i64, theta = 1.0e4 : f64} : tensor<1x8xf32>, tensor<1xi32>
  %c1 = llm.kv_cache_write %kr, %v into %c[%t] at %p {layer = 0 : i64} : tensor<1x8xf32>, tensor<1x8xf32>, !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<1x4xi32>, tensor<1xi32>
  %ks, %vs = llm.kv_cache_read %c1[%t] upto %p {layer = 0 : i64} : !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<1x4xi32>, tensor<1xi32> -> !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>
  %a = llm.attention cache %qr, %ks, %vs {head_dim = 8 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, scale = 0.5 : f64} : tensor<1x16xf32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32> -> tensor<1x16xf32>
  return %a : tensor<1x16xf32>
}
llm.weight @wqkv : tensor<32x16xf32>
llm.weight @bqkv : tensor<32xf32>

// -----

// Not packed: the values have another reader, which reads them apart; the
// write still fuses.
// CHECK-LABEL: func.func @value_read_twice
// CHECK: %[[QKV:.*]]:3 = llm.linear @wqkv
// CHECK: llm.rope_kv_write %[[QKV]]#0, %[[QKV]]#1, %[[QKV]]#2 into
func.func @value_read_twice(%x: tensor<1x16xf32>, %p: tensor<1xi32>, %t: tensor<1x4xi32>, %c: !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>) -> (tensor<1x16xf32>, tensor<1x8xf32>) {
  %q, %k, %v = llm.linear @wqkv(%x) : tensor<1x16xf32> -> tensor<1x16xf32>, tensor<1x8xf32>, tensor<1x8xf32>
  %qr = llm.rope %q, %p {head_dim = 8 : i64, theta = 1.0e4 : f64} : tensor<1x16xf32>, tensor<1xi32>
  %kr = llm.rope %k, %p {head_dim = 8 : i64, theta = 1.0e4 : f64} : tensor<1x8xf32>, tensor<1xi32>
  %c1 = llm.kv_cache_write %kr, %v into %c[%t] at %p {layer = 0 : i64} : tensor<1x8xf32>, tensor<1x8xf32>, !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<1x4xi32>, tensor<1xi32>
  %ks, %vs = llm.kv_cache_read %c1[%t] upto %p {layer = 0 : i64} : !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<1x4xi32>, tensor<1xi32> -> !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>
  %a = llm.attention cache %qr, %ks, %vs {head_dim = 8 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, scale = 0.5 : f64} : tensor<1x16xf32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32> -> tensor<1x16xf32>
  return %a, %v : tensor<1x16xf32>, tensor<1x8xf32>
}
llm.weight @wqkv : tensor<32x16xf32>

// -----

// Not packed: the queries come from a product of their own.
// CHECK-LABEL: func.func @two_products
// CHECK: %[[Q:.*]] = llm.linear @wq
// CHECK: %[[KV:.*]]:2 = llm.linear @wkv
// CHECK: llm.rope_kv_write %[[Q]], %[[KV]]#0, %[[KV]]#1 into
func.func @two_products(%x: tensor<1x16xf32>, %p: tensor<1xi32>, %t: tensor<1x4xi32>, %c: !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>) -> (tensor<1x16xf32>) {
  %q = llm.linear @wq(%x) : tensor<1x16xf32> -> tensor<1x16xf32>
  %k, %v = llm.linear @wkv(%x) : tensor<1x16xf32> -> tensor<1x8xf32>, tensor<1x8xf32>
  %qr = llm.rope %q, %p {head_dim = 8 : i64, theta = 1.0e4 : f64} : tensor<1x16xf32>, tensor<1xi32>
  %kr = llm.rope %k, %p {head_dim = 8 : i64, theta = 1.0e4 : f64} : tensor<1x8xf32>, tensor<1xi32>
  %c1 = llm.kv_cache_write %kr, %v into %c[%t] at %p {layer = 0 : i64} : tensor<1x8xf32>, tensor<1x8xf32>, !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<1x4xi32>, tensor<1xi32>
  %ks, %vs = llm.kv_cache_read %c1[%t] upto %p {layer = 0 : i64} : !llm.kv_cache<layers = 1, pages = 8, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<1x4xi32>, tensor<1xi32> -> !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>
  %a = llm.attention cache %qr, %ks, %vs {head_dim = 8 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, scale = 0.5 : f64} : tensor<1x16xf32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32>, !llm.kv_view<kv_heads = 1, head_dim = 8, element_type = f32> -> tensor<1x16xf32>
  return %a : tensor<1x16xf32>
}
llm.weight @wq : tensor<16x16xf32>
llm.weight @wkv : tensor<16x16xf32>
