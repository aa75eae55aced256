// RUN: kvplan-opt %s -split-input-file -verify-diagnostics

// expected-error @below {{weights are vectors, matrices or stacks of matrices (a mixture of experts'), got rank 4}}
llm.weight @w : tensor<2x2x2x2xf32>

// -----

// expected-error @below {{weight element type must be f32, bf16 or f16 (or for matrices i8: int8 groups of 32 with f32 scales, i4: int4 groups of 32 with f32 scales and minimums, or !llm.mxfp4: MXFP4 groups of 32 with E8M0 scales), got 'i8'}}
llm.weight @w : tensor<4xi8>

// -----

// expected-error @below {{weight element type must be f32, bf16 or f16 (or for matrices i8: int8 groups of 32 with f32 scales, i4: int4 groups of 32 with f32 scales and minimums, or !llm.mxfp4: MXFP4 groups of 32 with E8M0 scales), got 'i4'}}
llm.weight @w : tensor<4xi4>

// -----

// expected-error @below {{weight element type must be f32, bf16 or f16 (or for matrices i8: int8 groups of 32 with f32 scales, i4: int4 groups of 32 with f32 scales and minimums, or !llm.mxfp4: MXFP4 groups of 32 with E8M0 scales), got 'i16'}}
llm.weight @w : tensor<4x4xi16>

// -----

// expected-error @below {{weight element type must be f32, bf16 or f16 (or for matrices i8: int8 groups of 32 with f32 scales, i4: int4 groups of 32 with f32 scales and minimums, or !llm.mxfp4: MXFP4 groups of 32 with E8M0 scales), got '!llm.mxfp4'}}
llm.weight @w : tensor<32x!llm.mxfp4>

// -----

func.func @f() {
  // expected-error @below {{symbol's parent must have the SymbolTable trait}}
  "llm.weight"() <{sym_name = "w", type = tensor<4xf32>}> : () -> ()
  return
}

// -----

llm.weight @emb : tensor<8x4xf32>
func.func @f(%t: tensor<3xi32>) -> tensor<2x4xf32> {
  // expected-error @below {{one row per token: 3 tokens but 2 result rows}}
  %0 = llm.embedding @emb[%t] : tensor<3xi32> -> tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}

// -----

llm.weight @emb : tensor<8x5xf32>
func.func @f(%t: tensor<2xi32>) -> tensor<2x4xf32> {
  // expected-error @below {{table @emb has shape [8, 5] but rows of width 4 are needed}}
  %0 = llm.embedding @emb[%t] : tensor<2xi32> -> tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}

// -----

func.func @f(%x: tensor<2x4xf32>) -> tensor<2x4xf32> {
  // expected-error @below {{scale @missing does not name an llm.weight}}
  %0 = llm.rms_norm %x, @missing {eps = 1.0e-5 : f64} : tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}

// -----

llm.weight @g : tensor<4xf32>
func.func @f(%x: tensor<2x4xf32>) -> tensor<2x4xf32> {
  // expected-error @below {{eps must be positive}}
  %0 = llm.rms_norm %x, @g {eps = 0.0 : f64} : tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}

// -----

llm.weight @g : tensor<8xf32>
func.func @f(%x: tensor<2x4xf32>) -> tensor<2x4xf32> {
  // expected-error @below {{scale @g has shape [8] but this op needs [4]}}
  %0 = llm.rms_norm %x, @g {eps = 1.0e-5 : f64} : tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}

// -----

llm.weight @w : tensor<6x4xf32>
func.func @f(%x: tensor<2x4xf32>) -> tensor<2x8xf32> {
  // expected-error @below {{weight @w has shape [6, 4] but this op needs [8, 4]}}
  %0 = llm.linear @w(%x) : tensor<2x4xf32> -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}

// -----

llm.weight @w : tensor<8x4xf32>
llm.weight @b : tensor<6xf32>
func.func @f(%x: tensor<2x4xf32>) -> tensor<2x8xf32> {
  // expected-error @below {{bias @b has shape [6] but this op needs [8]}}
  %0 = llm.linear @w(%x) bias @b : tensor<2x4xf32> -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}

// -----

llm.weight @w : tensor<8x4xf32>
func.func @f(%x: tensor<2x4xf32>) -> tensor<3x8xf32> {
  // expected-error @below {{each result has the input's rows: 2 vs 3 rows}}
  %0 = llm.linear @w(%x) : tensor<2x4xf32> -> tensor<3x8xf32>
  return %0 : tensor<3x8xf32>
}

// -----

func.func @f(%x: tensor<2x12xf32>, %p: tensor<2xi32>) -> tensor<2x12xf32> {
  // expected-error @below {{head_dim must be positive and even, got 3}}
  %0 = llm.rope %x, %p {head_dim = 3 : i64, theta = 1.0e4 : f64} : tensor<2x12xf32>, tensor<2xi32>
  return %0 : tensor<2x12xf32>
}

// -----

func.func @f(%x: tensor<2x12xf32>, %p: tensor<3xi32>) -> tensor<2x12xf32> {
  // expected-error @below {{one position per row: 2 vs 3 rows}}
  %0 = llm.rope %x, %p {head_dim = 4 : i64, theta = 1.0e4 : f64} : tensor<2x12xf32>, tensor<3xi32>
  return %0 : tensor<2x12xf32>
}

// -----

func.func @f(%x: tensor<2x8xf32>, %p: tensor<2xi32>) -> tensor<2x8xf32> {
  // expected-error @below {{freq_factors has 3 entries; expected head_dim / 2 = 2}}
  %0 = llm.rope %x, %p {head_dim = 4 : i64, theta = 1.0e4 : f64, freq_factors = array<f64: 1.0, 2.0, 4.0>} : tensor<2x8xf32>, tensor<2xi32>
  return %0 : tensor<2x8xf32>
}

// -----

func.func @f(%x: tensor<2x16xf32>, %p: tensor<2xi32>) -> tensor<2x16xf32> {
  // expected-error @below {{freq_factors has 4 entries; expected rotary_dim / 2 = 3}}
  %0 = llm.rope %x, %p {head_dim = 8 : i64, theta = 1.0e4 : f64, rotary_dim = 6 : i64, freq_factors = array<f64: 1.0, 2.0, 4.0, 8.0>} : tensor<2x16xf32>, tensor<2xi32>
  return %0 : tensor<2x16xf32>
}

// -----

func.func @f(%x: tensor<2x16xf32>, %p: tensor<2xi32>) -> tensor<2x16xf32> {
  // expected-error @below {{rotary_dim must be even and from 2 to head_dim 8, got 5}}
  %0 = llm.rope %x, %p {head_dim = 8 : i64, theta = 1.0e4 : f64, rotary_dim = 5 : i64} : tensor<2x16xf32>, tensor<2xi32>
  return %0 : tensor<2x16xf32>
}

// -----

func.func @f(%x: tensor<2x16xf32>, %p: tensor<2xi32>) -> tensor<2x16xf32> {
  // expected-error @below {{rotary_dim must be even and from 2 to head_dim 8, got 10}}
  %0 = llm.rope %x, %p {head_dim = 8 : i64, theta = 1.0e4 : f64, rotary_dim = 10 : i64} : tensor<2x16xf32>, tensor<2xi32>
  return %0 : tensor<2x16xf32>
}

// -----

func.func @f(%x: tensor<2x16xf32>, %p: tensor<2xi32>) -> tensor<2x16xf32> {
  // expected-error @below {{attention_factor must be positive and finite, got -1}}
  %0 = llm.rope %x, %p {head_dim = 8 : i64, theta = 1.0e4 : f64, rotary_dim = 6 : i64, attention_factor = -1.0 : f64} : tensor<2x16xf32>, tensor<2xi32>
  return %0 : tensor<2x16xf32>
}

// -----

func.func @f(%x: tensor<2x8xf32>, %p: tensor<2xi32>) -> tensor<2x8xf32> {
  // expected-error @below {{freq_factors must be positive and finite, got 0}}
  %0 = llm.rope %x, %p {head_dim = 4 : i64, theta = 1.0e4 : f64, freq_factors = array<f64: 1.0, 0.0>} : tensor<2x8xf32>, tensor<2xi32>
  return %0 : tensor<2x8xf32>
}

// -----

func.func @f(%x: tensor<2x8xf32>, %p: tensor<2xi32>) -> tensor<2x8xf32> {
  // expected-error @below {{rope_scaling needs low_freq_factor}}
  %0 = llm.rope %x, %p {head_dim = 4 : i64, theta = 1.0e4 : f64, scaling = #llm.rope_scaling<factor = 8.0>} : tensor<2x8xf32>, tensor<2xi32>
  return %0 : tensor<2x8xf32>
}

// -----

func.func @f(%x: tensor<2x8xf32>, %p: tensor<2xi32>) -> tensor<2x8xf32> {
  // expected-error @below {{rope_scaling: high_freq_factor must exceed low_freq_factor}}
  %0 = llm.rope %x, %p {head_dim = 4 : i64, theta = 1.0e4 : f64, scaling = #llm.rope_scaling<factor = 8.0, low_freq_factor = 4.0, high_freq_factor = 1.0, original_max_position_embeddings = 8192>} : tensor<2x8xf32>, tensor<2xi32>
  return %0 : tensor<2x8xf32>
}

// -----

func.func @f(%q: tensor<2x16xf32>, %k: tensor<2x8xf32>) -> tensor<2x16xf32> {
  // expected-error @below {{num_heads 4 is not a multiple of num_kv_heads 3}}
  %0 = llm.attention causal %q, %k, %k {head_dim = 4 : i64, num_heads = 4 : i64, num_kv_heads = 3 : i64, scale = 0.5 : f64} : tensor<2x16xf32>, tensor<2x8xf32>, tensor<2x8xf32> -> tensor<2x16xf32>
  return %0 : tensor<2x16xf32>
}

// -----

func.func @f(%q: tensor<2x16xf32>, %k: tensor<2x8xf32>) -> tensor<2x16xf32> {
  // expected-error @below {{window must be positive (absent: every earlier key)}}
  %0 = llm.attention causal %q, %k, %k {head_dim = 4 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, scale = 0.5 : f64, window = 0 : i64} : tensor<2x16xf32>, tensor<2x8xf32>, tensor<2x8xf32> -> tensor<2x16xf32>
  return %0 : tensor<2x16xf32>
}

// -----

func.func @f(%q: tensor<2x16xf32>, %k: tensor<2x12xf32>) -> tensor<2x16xf32> {
  // expected-error @below {{keys and values must be num_kv_heads x head_dim = 8 wide, got 12}}
  %0 = llm.attention causal %q, %k, %k {head_dim = 4 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, scale = 0.5 : f64} : tensor<2x16xf32>, tensor<2x12xf32>, tensor<2x12xf32> -> tensor<2x16xf32>
  return %0 : tensor<2x16xf32>
}

// -----

func.func @f(%q: tensor<2x16xf32>, %k: tensor<2x8xf32>) -> tensor<2x16xf32> {
  // expected-error @below {{mask 'cache' needs keys and values from llm.kv_cache_read}}
  %0 = llm.attention cache %q, %k, %k {head_dim = 4 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, scale = 0.5 : f64} : tensor<2x16xf32>, tensor<2x8xf32>, tensor<2x8xf32> -> tensor<2x16xf32>
  return %0 : tensor<2x16xf32>
}

// -----

func.func @f(%q: tensor<2x16xf32>, %k: !llm.kv_view<kv_heads = 2, head_dim = 4, element_type = f32>) -> tensor<2x16xf32> {
  // expected-error @below {{KV-cache views need mask 'cache'}}
  %0 = llm.attention causal %q, %k, %k {head_dim = 4 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64, scale = 0.5 : f64} : tensor<2x16xf32>, !llm.kv_view<kv_heads = 2, head_dim = 4, element_type = f32>, !llm.kv_view<kv_heads = 2, head_dim = 4, element_type = f32> -> tensor<2x16xf32>
  return %0 : tensor<2x16xf32>
}

// -----

func.func @f(%x: tensor<2x7xf32>) -> tensor<2x3xf32> {
  // expected-error @below {{input must hold gate and up side by side: 7 columns for a result of 3}}
  %0 = llm.fused_ffn %x : tensor<2x7xf32> -> tensor<2x3xf32>
  return %0 : tensor<2x3xf32>
}

// -----

llm.weight @out : tensor<10x4xf32>
func.func @f(%x: tensor<2x4xf32>) -> tensor<2x12xf32> {
  // expected-error @below {{head @out has shape [10, 4] but this op needs [12, 4]}}
  %0 = llm.logits @out(%x) : tensor<2x4xf32> -> tensor<2x12xf32>
  return %0 : tensor<2x12xf32>
}

// -----

func.func @f(%x: tensor<4x8xf32>, %p: tensor<4xi32>) -> tensor<2x8xf32> {
  // expected-error @below {{result must be one row of the input: expected 'tensor<1x8xf32>'}}
  %0 = llm.take_last %x, %p : tensor<4x8xf32>, tensor<4xi32> -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}

// -----

// expected-error @below {{kv_cache sizes must be positive}}
func.func @f(%c: !llm.kv_cache<layers = 0, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>) {
  return
}

// -----

// expected-error @below {{kv_cache element type must be f32, bf16 or f16, got 'i32'}}
func.func @f(%c: !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = i32>) {
  return
}

// -----

func.func @f(%k: tensor<2x4xf32>, %c: !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>, %t: tensor<1x2xi32>, %p: tensor<2xi32>) {
  // expected-error @below {{layer 1 is outside the cache's 1 layers}}
  %0 = llm.kv_cache_write %k, %k into %c[%t] at %p {layer = 1 : i64} : tensor<2x4xf32>, tensor<2x4xf32>, !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>, tensor<1x2xi32>, tensor<2xi32>
  return
}

// -----

func.func @f(%k: tensor<2x8xf32>, %c: !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>, %t: tensor<1x2xi32>, %p: tensor<2xi32>) {
  // expected-error @below {{rows must be kv_heads x head_dim = 4 wide, got 8}}
  %0 = llm.kv_cache_write %k, %k into %c[%t] at %p {layer = 0 : i64} : tensor<2x8xf32>, tensor<2x8xf32>, !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>, tensor<1x2xi32>, tensor<2xi32>
  return
}

// -----

func.func @f(%k: tensor<3x4xf32>, %c: !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>, %t: tensor<2x2xi32>, %p: tensor<3xi32>) {
  // expected-error @below {{page table needs one row (one sequence) or one row per row (3), got 2}}
  %0 = llm.kv_cache_write %k, %k into %c[%t] at %p {layer = 0 : i64} : tensor<3x4xf32>, tensor<3x4xf32>, !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>, tensor<2x2xi32>, tensor<3xi32>
  return
}

// -----

func.func @f(%c: !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>, %t: tensor<1x2xi32>, %p: tensor<2xi32>) {
  // expected-error @below {{views must match the cache's kv_heads, head_dim and element type}}
  %k, %v = llm.kv_cache_read %c[%t] upto %p {layer = 0 : i64} : !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>, tensor<1x2xi32>, tensor<2xi32> -> !llm.kv_view<kv_heads = 1, head_dim = 4, element_type = bf16>, !llm.kv_view<kv_heads = 1, head_dim = 4, element_type = bf16>
  return
}

// -----

//===----------------------------------------------------------------------===//
// Storage types and the cuda target's ops
//===----------------------------------------------------------------------===//

llm.weight @w : tensor<8x8xf16>
func.func @f(%x: tensor<2x8xbf16>) -> tensor<2x8xf32> {
  // expected-error @below {{reads 'bf16' rows, which must be f32 or the weights' type 'f16'}}
  %0 = llm.linear @w(%x) : tensor<2x8xbf16> -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}

// -----

llm.weight @w : tensor<8x8xbf16>
func.func @f(%x: tensor<2x8xbf16>) -> tensor<2x8xbf16> {
  // expected-error @below {{results are f32, got 'bf16'}}
  %0 = llm.linear @w(%x) : tensor<2x8xbf16> -> tensor<2x8xbf16>
  return %0 : tensor<2x8xbf16>
}

// -----

func.func @f(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  // expected-error @below {{must change the element type}}
  %0 = llm.convert %x : tensor<2x8xf32> -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}

// -----

func.func @f(%x: tensor<2x8xf32>) -> tensor<2x4xbf16> {
  // expected-error @below {{result must have shape [2, 8], got [2, 4]}}
  %0 = llm.convert %x : tensor<2x8xf32> -> tensor<2x4xbf16>
  return %0 : tensor<2x4xbf16>
}

// -----

func.func @f(%q: tensor<2x8xf32>, %k: tensor<2x8xf32>, %t: tensor<1x4xi32>, %p: tensor<2xi32>,
             %c: !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>) {
  // expected-error @below {{key rows must be kv_heads x head_dim = 4 wide, got 8}}
  %qr, %c1 = llm.rope_kv_write %q, %k, %k into %c[%t] at %p {head_dim = 4 : i64, layer = 0 : i64, theta = 1.0e4 : f64} : (tensor<2x8xf32>, tensor<2x8xf32>, tensor<2x8xf32>), !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>, tensor<1x4xi32>, tensor<2xi32> -> tensor<2x8xf32>
  return
}

// -----

// Packed rows must hold the queries, then the keys and the values.
func.func @f(%qkv: tensor<2x14xf32>, %t: tensor<1x4xi32>, %p: tensor<2xi32>,
             %c: !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>) {
  // expected-error @below {{packed rows must be the 8 query columns and 2 x 4 of keys and values wide, got 14}}
  %qr, %c1 = llm.rope_kv_write %qkv into %c[%t] at %p {head_dim = 4 : i64, layer = 0 : i64, theta = 1.0e4 : f64} : (tensor<2x14xf32>), !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>, tensor<1x4xi32>, tensor<2xi32> -> tensor<2x8xf32>
  return
}

// -----

func.func @f(%qkv: tensor<2x16xf32>, %t: tensor<1x4xi32>, %p: tensor<2xi32>,
             %c: !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>) {
  // expected-error @below {{packed and rotated queries: 2 vs 3 rows}}
  %qr, %c1 = llm.rope_kv_write %qkv into %c[%t] at %p {head_dim = 4 : i64, layer = 0 : i64, theta = 1.0e4 : f64} : (tensor<2x16xf32>), !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>, tensor<1x4xi32>, tensor<2xi32> -> tensor<3x8xf32>
  return
}

// -----

func.func @f(%q: tensor<2x8xf32>, %k: tensor<2x4xf32>, %t: tensor<1x4xi32>, %p: tensor<2xi32>,
             %c: !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>) {
  // expected-error @below {{rotated queries must have the queries' type}}
  %qr, %c1 = llm.rope_kv_write %q, %k, %k into %c[%t] at %p {head_dim = 4 : i64, layer = 0 : i64, theta = 1.0e4 : f64} : (tensor<2x8xf32>, tensor<2x4xf32>, tensor<2x4xf32>), !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>, tensor<1x4xi32>, tensor<2xi32> -> tensor<2x8xbf16>
  return
}

// -----

func.func @f(%q: tensor<2x8xf32>, %k: tensor<2x4xf32>, %t: tensor<1x4xi32>, %p: tensor<2xi32>,
             %c: !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>) {
  // expected-error @below {{head_dim 2 differs from the cache's 4}}
  %qr, %c1 = llm.rope_kv_write %q, %k, %k into %c[%t] at %p {head_dim = 2 : i64, layer = 0 : i64, theta = 1.0e4 : f64} : (tensor<2x8xf32>, tensor<2x4xf32>, tensor<2x4xf32>), !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>, tensor<1x4xi32>, tensor<2xi32> -> tensor<2x8xf32>
  return
}

// -----

func.func @f(%q: tensor<2x8xf32>, %k: tensor<2x4xf32>, %t: tensor<1x4xi32>, %p: tensor<2xi32>,
             %c: !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>) {
  // expected-error @below {{layer 1 is outside the cache's 1 layers}}
  %qr, %c1 = llm.rope_kv_write %q, %k, %k into %c[%t] at %p {head_dim = 4 : i64, layer = 1 : i64, theta = 1.0e4 : f64} : (tensor<2x8xf32>, tensor<2x4xf32>, tensor<2x4xf32>), !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>, tensor<1x4xi32>, tensor<2xi32> -> tensor<2x8xf32>
  return
}

// -----

llm.weight @wqkv : tensor<12x8xbf16>
llm.weight @g : tensor<8xf32>
func.func @f(%x: tensor<2x8xf32>, %t: tensor<1x4xi32>, %p: tensor<2xi32>, %c: !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>) {
  // expected-error @below {{weight @wqkv has shape [12, 8] but this op needs [16, 8]}}
  %qr, %c1 = llm.matvec_rope_kv_write @wqkv(%x)  into %c[%t] at %p {head_dim = 4 : i64, layer = 0 : i64, theta = 1.0e4 : f64} : tensor<2x8xf32>, !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>, tensor<1x4xi32>, tensor<2xi32> -> tensor<2x8xf32>
  return
}

// -----

llm.weight @wqkv : tensor<14x8xbf16>
llm.weight @g : tensor<8xf32>
func.func @f(%x: tensor<2x8xf32>, %t: tensor<1x4xi32>, %p: tensor<2xi32>, %c: !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>) {
  // expected-error @below {{query rows of 6 are not a whole number of heads of 4}}
  %qr, %c1 = llm.matvec_rope_kv_write @wqkv(%x)  into %c[%t] at %p {head_dim = 4 : i64, layer = 0 : i64, theta = 1.0e4 : f64} : tensor<2x8xf32>, !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>, tensor<1x4xi32>, tensor<2xi32> -> tensor<2x6xf32>
  return
}

// -----

llm.weight @wqkv : tensor<16x8xbf16>
llm.weight @g : tensor<8xf32>
func.func @f(%x: tensor<2x8xbf16>, %t: tensor<1x4xi32>, %p: tensor<2xi32>, %c: !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>) {
  // expected-error @below {{normalises f32 rows, got 'bf16'}}
  %qr, %c1 = llm.matvec_rope_kv_write @wqkv(%x) norm @g into %c[%t] at %p {eps = 1.0e-5 : f64, head_dim = 4 : i64, layer = 0 : i64, theta = 1.0e4 : f64} : tensor<2x8xbf16>, !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>, tensor<1x4xi32>, tensor<2xi32> -> tensor<2x8xf32>
  return
}

// -----

llm.weight @wqkv : tensor<16x8xbf16>
llm.weight @g : tensor<8xf32>
func.func @f(%x: tensor<3x8xf32>, %t: tensor<1x4xi32>, %p: tensor<2xi32>, %c: !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>) {
  // expected-error @below {{rotated_query has the input's rows}}
  %qr, %c1 = llm.matvec_rope_kv_write @wqkv(%x)  into %c[%t] at %p {head_dim = 4 : i64, layer = 0 : i64, theta = 1.0e4 : f64} : tensor<3x8xf32>, !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>, tensor<1x4xi32>, tensor<2xi32> -> tensor<2x8xf32>
  return
}

// -----

llm.weight @wqkv : tensor<16x8xbf16>
llm.weight @g : tensor<8xf32>
func.func @f(%x: tensor<2x8xf32>, %t: tensor<3x4xi32>, %p: tensor<2xi32>, %c: !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>) {
  // expected-error @below {{page table needs one row (one sequence) or one row per row (2), got 3}}
  %qr, %c1 = llm.matvec_rope_kv_write @wqkv(%x)  into %c[%t] at %p {head_dim = 4 : i64, layer = 0 : i64, theta = 1.0e4 : f64} : tensor<2x8xf32>, !llm.kv_cache<layers = 1, pages = 4, page_size = 4, kv_heads = 1, head_dim = 4, element_type = f32>, tensor<3x4xi32>, tensor<2xi32> -> tensor<2x8xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// The module's settings and the other llm.* attributes
//===----------------------------------------------------------------------===//

// expected-error @below {{settings: kv_dtype 'bf61' is not f32, bf16 or f16}}
module attributes {llm.settings = #llm.settings<target = "cpu", weight_dtype = "f32", kv_dtype = "bf61", max_batch = 1, max_seq_len = 16, prefill_chunk = 4, page_size = 4, kv_pages = 4>} {
}

// -----

// expected-error @below {{settings: weight_dtype 'int2' is not f32, bf16, f16, int8, int4 or mxfp4}}
module attributes {llm.settings = #llm.settings<target = "cpu", weight_dtype = "int2", kv_dtype = "f32", max_batch = 1, max_seq_len = 16, prefill_chunk = 4, page_size = 4, kv_pages = 4>} {
}

// -----

// expected-error @below {{settings: target 'tpu' is not cpu or cuda}}
module attributes {llm.settings = #llm.settings<target = "tpu", weight_dtype = "f32", kv_dtype = "f32", max_batch = 1, max_seq_len = 16, prefill_chunk = 4, page_size = 4, kv_pages = 4>} {
}

// -----

// expected-error @below {{settings needs page_size}}
module attributes {llm.settings = #llm.settings<target = "cpu", weight_dtype = "f32", kv_dtype = "f32", max_batch = 1, max_seq_len = 16, prefill_chunk = 4>} {
}

// -----

// expected-error @below {{settings: unknown key 'kv_type'}}
module attributes {llm.settings = #llm.settings<target = "cpu", weight_dtype = "f32", kv_type = "f32", max_batch = 1, max_seq_len = 16, prefill_chunk = 4, page_size = 4, kv_pages = 4>} {
}

// -----

// expected-error @below {{settings: page_size 5 does not divide max_seq_len 16}}
module attributes {llm.settings = #llm.settings<target = "cpu", weight_dtype = "f32", kv_dtype = "f32", max_batch = 1, max_seq_len = 16, prefill_chunk = 4, page_size = 5, kv_pages = 3>} {
}

// -----

// expected-error @below {{settings: max_batch, max_seq_len, prefill_chunk, page_size and kv_pages must be positive}}
module attributes {llm.settings = #llm.settings<target = "cpu", weight_dtype = "f32", kv_dtype = "f32", max_batch = 0, max_seq_len = 16, prefill_chunk = 4, page_size = 4, kv_pages = 4>} {
}

// -----

// expected-error @below {{settings needs kv_pages}}
module attributes {llm.settings = #llm.settings<target = "cpu", weight_dtype = "f32", kv_dtype = "f32", max_batch = 1, max_seq_len = 16, prefill_chunk = 4, page_size = 4>} {
}

// -----

// A chunk of 8 from a position mid-page spans 3 pages of 4. (A pool for one
// sequence at full context, or its sliding window's pages, insert-kv-cache
// checks: insert-kv-cache-pool.mlir.)
// expected-error @below {{settings: kv_pages 2 cannot hold one prefill chunk of 8 tokens (3 pages of 4 tokens)}}
module attributes {llm.settings = #llm.settings<target = "cpu", weight_dtype = "f32", kv_dtype = "f32", max_batch = 2, max_seq_len = 16, prefill_chunk = 8, page_size = 4, kv_pages = 2>} {
}

// -----

// An old module's dictionary of settings is not read as settings.
// expected-error @below {{attribute 'llm.settings' must be an #llm.settings on the module}}
module attributes {llm.settings = {kv_dtype = "f32", max_batch = 1 : i64}} {
}

// -----

// The rows of the smaller copies: ascending, each once, positive.
// expected-error @below {{attribute 'llm.decode_copies' must be an array<i64> of positive row counts in ascending order, each once, on the module}}
module attributes {llm.decode_copies = array<i64: 8, 1>} {
}

// -----

// expected-error @below {{attribute 'llm.prefill_copies' must be an array<i64> of positive row counts in ascending order, each once, on the module}}
module attributes {llm.prefill_copies = array<i64: 0, 8>} {
}

// -----

// expected-error @below {{attribute 'llm.decode_copies' must be an array<i64> of positive row counts in ascending order, each once, on the module}}
module attributes {llm.decode_copies = array<i64: 8, 8>} {
}

// -----

module {
  // expected-error @below {{attribute 'llm.decode_copies' must be an array<i64> of positive row counts in ascending order, each once, on the module}}
  func.func @f() attributes {llm.decode_copies = array<i64: 1>} {
    return
  }
}

// -----

// expected-error @below {{attribute 'llm.entry' must be "prefill", "decode", "verify" or "score" on a function}}
func.func @f() attributes {llm.entry = "draft"} {
  return
}

// -----

// expected-error @below {{has an unknown llm attribute 'llm.offest'}}
func.func @f() attributes {llm.offest = 3 : i64} {
  return
}

// -----

// expected-error @below {{argument #0: llm.offset must be a non-negative integer}}
func.func @f(%a: tensor<2xi32> {llm.offset = -256 : i64}) {
  return
}


// -----

// expected-error @below {{attribute 'llm.speculate' must be a non-negative integer on the module (draft tokens per @verify)}}
module attributes {llm.speculate = -2 : i64} {
}

// -----

// expected-error @below {{attribute 'llm.score_rows' must be a non-negative integer on the module (rows of @score)}}
module attributes {llm.score_rows = -1 : i64} {
}

// -----

llm.weight @w : tensor<8x8xbf16>
llm.weight @g : tensor<8xf32>
func.func @f(%x: tensor<2x8xbf16>) -> tensor<2x8xf32> {
  // expected-error @below {{normalises f32 rows, got 'bf16'}}
  %0 = llm.matvec @w(%x) norm @g {eps = 1.0e-5 : f64} : tensor<2x8xbf16> -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}

// -----

llm.weight @w : tensor<8x8xbf16>
llm.weight @g : tensor<8xf32>
func.func @f(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  // expected-error @below {{a norm needs its eps, and eps a norm}}
  %0 = llm.matvec @w(%x) norm @g : tensor<2x8xf32> -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}

// -----

llm.weight @w : tensor<8x8xbf16>
func.func @f(%x: tensor<2x8xf32>) -> tensor<2x4xf32> {
  // expected-error @below {{with swiglu or an addend has one result, got 2}}
  %0, %1 = llm.matvec @w(%x) plus %x : tensor<2x8xf32>, tensor<2x8xf32> -> tensor<2x4xf32>, tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}

// -----

llm.weight @w : tensor<8x8xbf16>
func.func @f(%x: tensor<2x8xf32>, %r: tensor<1x8xf32>) -> tensor<2x8xf32> {
  // expected-error @below {{addend must have the result's shape [2, 8], got [1, 8]}}
  %0 = llm.matvec @w(%x) plus %r : tensor<2x8xf32>, tensor<1x8xf32> -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}

// -----

llm.weight @w : tensor<8x8xbf16>
func.func @f(%x: tensor<2x8xf32>) -> tensor<2x4xf32> {
  // expected-error @below {{weight @w has shape [8, 8] but this op needs [4, 8]}}
  %0 = llm.matvec @w(%x) : tensor<2x8xf32> -> tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}

// -----

llm.weight @w : tensor<8x8xbf16>
func.func @f(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  // expected-error @below {{weight @w has shape [8, 8] but this op needs [16, 8]}}
  %0 = llm.matvec @w(%x) swiglu : tensor<2x8xf32> -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}

// -----

// llm.prefetch (--prefetch-weights): rows of an llm.weight, on an llm op.
llm.weight @w : tensor<8x4xf32>
func.func @asks(%x: tensor<1x4xf32>) -> tensor<1x4xf32> {
  // expected-error @below {{attribute 'llm.prefetch' asks for rows 4 to 9 of @w, which has 8}}
  %y = llm.add %x, %x {llm.prefetch = [{weight = @w, rows = array<i64: 4, 9>}]} : tensor<1x4xf32>
  return %y : tensor<1x4xf32>
}

// -----

func.func @asks(%x: tensor<1x4xf32>) -> tensor<1x4xf32> {
  // expected-error @below {{attribute 'llm.prefetch' names @v, which is no llm.weight}}
  %y = llm.add %x, %x {llm.prefetch = [{weight = @v, rows = array<i64: 0, 1>}]} : tensor<1x4xf32>
  return %y : tensor<1x4xf32>
}

// -----

llm.weight @w : tensor<8x4xf32>
func.func @asks(%x: tensor<1x4xf32>) -> tensor<1x4xf32> {
  // expected-error @below {{attribute 'llm.prefetch' holds {rows = array<i64: 3, 3>, weight = @w}, not {weight = @w, rows = array<i64: first, end>} with 0 <= first < end}}
  %y = llm.add %x, %x {llm.prefetch = [{weight = @w, rows = array<i64: 3, 3>}]} : tensor<1x4xf32>
  return %y : tensor<1x4xf32>
}

// -----

// expected-error @below {{attribute 'llm.prefetch' must be a list on an llm op}}
func.func @asks() attributes {llm.prefetch = []} {
  return
}

// -----

// expected-error @below {{attribute 'llm.l2_prefetch_mib' must be a non-negative integer on the module (MiB of L2 to ask for ahead)}}
module attributes {llm.l2_prefetch_mib = -4 : i64} {
}

// -----

// A mixture of experts: the router's and the stacks' shapes agree with the
// rows and with each other.
llm.weight @r : tensor<4x8xf32>
llm.weight @g : tensor<4x6x8xf32>
llm.weight @u : tensor<4x6x8xf32>
llm.weight @d : tensor<4x6x8xf32>
func.func @f(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  // expected-error @below {{down @d has shape [4, 6, 8] but this op needs [4, 8, 6]}}
  %0 = llm.moe_ffn %x router @r experts(@g, @u, @d) {experts_per_token = 2 : i64} : tensor<2x8xf32> -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}

// -----

llm.weight @r : tensor<4x8xf32>
llm.weight @g : tensor<4x6x8xf32>
llm.weight @u : tensor<4x6x8xf32>
llm.weight @d : tensor<4x8x6xf32>
func.func @f(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  // expected-error @below {{experts_per_token 5 is more than the 4 experts}}
  %0 = llm.moe_ffn %x router @r experts(@g, @u, @d) {experts_per_token = 5 : i64} : tensor<2x8xf32> -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}

// -----

llm.weight @r : tensor<4x6xf32>
llm.weight @g : tensor<4x6x8xf32>
llm.weight @u : tensor<4x6x8xf32>
llm.weight @d : tensor<4x8x6xf32>
func.func @f(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  // expected-error @below {{router @r has shape [4, 6] but this op needs [4, 8]}}
  %0 = llm.moe_ffn %x router @r experts(@g, @u, @d) {experts_per_token = 2 : i64} : tensor<2x8xf32> -> tensor<2x8xf32>
  return %0 : tensor<2x8xf32>
}
