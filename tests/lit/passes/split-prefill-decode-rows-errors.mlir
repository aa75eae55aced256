// RUN: kvplan-opt %s --split-prefill-decode="decode-rows=8,0" -verify-diagnostics
// RUN: kvplan-opt %inputs/copies-not-below.mlir --split-prefill-decode -verify-diagnostics

// expected-error @below {{decode-rows 0 must be positive: the rows of a smaller copy of @decode}}
module attributes {llm.settings = #llm.settings<target = "cpu", weight_dtype = "f32", kv_dtype = "f32", max_batch = 4, max_seq_len = 16, prefill_chunk = 2, page_size = 4, kv_pages = 4>} {
  llm.weight @tok_embeddings : tensor<8x4xf32>
  func.func @forward(%arg0: tensor<16xi32> {llm.arg = "tokens"}) -> tensor<16x4xf32> {
    %0 = llm.embedding @tok_embeddings[%arg0] : tensor<16xi32> -> tensor<16x4xf32>
    return %0 : tensor<16x4xf32>
  }
}
