// RUN: kvplan-opt %s --insert-kv-cache -split-input-file -verify-diagnostics

// expected-error @below {{no entry points (llm.entry) to give a KV cache}}
module attributes {llm.settings = #llm.settings<target = "cpu", weight_dtype = "f32", kv_dtype = "f32", max_batch = 1, max_seq_len = 16, prefill_chunk = 4, page_size = 4, kv_pages = 4>} {
  func.func @forward() {
    return
  }
}

// -----

module attributes {llm.settings = #llm.settings<target = "cpu", weight_dtype = "f32", kv_dtype = "f32", max_batch = 1, max_seq_len = 16, prefill_chunk = 4, page_size = 4, kv_pages = 4>} {
  llm.weight @tok_embeddings : tensor<8x4xf32>
  // expected-error @below {{has no attention to give a KV cache}}
  func.func @decode(%arg0: tensor<1xi32> {llm.arg = "tokens"}, %arg1: tensor<1xi32> {llm.arg = "positions"}) -> tensor<1x4xf32> attributes {llm.entry = "decode"} {
    %0 = llm.embedding @tok_embeddings[%arg0] : tensor<1xi32> -> tensor<1x4xf32>
    return %0 : tensor<1x4xf32>
  }
}
