// RUN: kvplan-opt %s --split-prefill-decode -split-input-file -verify-diagnostics

// expected-error @below {{split-prefill-decode needs a func.func @forward}}
module {
  llm.weight @w : tensor<4x4xf32>
}

// -----

// expected-error @below {{module already has @prefill; run split-prefill-decode once}}
module attributes {llm.settings = #llm.settings<target = "cpu", weight_dtype = "f32", kv_dtype = "f32", max_batch = 1, max_seq_len = 16, prefill_chunk = 2, page_size = 4, kv_pages = 4>} {
  llm.weight @tok_embeddings : tensor<8x4xf32>
  func.func @forward(%arg0: tensor<4xi32> {llm.arg = "tokens"}) -> tensor<4x4xf32> {
    %0 = llm.embedding @tok_embeddings[%arg0] : tensor<4xi32> -> tensor<4x4xf32>
    return %0 : tensor<4x4xf32>
  }
  func.func @prefill() {
    return
  }
}

// -----

// expected-error @below {{prefill chunk and max batch must be positive}}
module {
  llm.weight @tok_embeddings : tensor<8x4xf32>
  func.func @forward(%arg0: tensor<4xi32> {llm.arg = "tokens"}) -> tensor<4x4xf32> {
    %0 = llm.embedding @tok_embeddings[%arg0] : tensor<4xi32> -> tensor<4x4xf32>
    return %0 : tensor<4x4xf32>
  }
}

// -----

// expected-error @below {{speculate 9 must be 0 (off) or 1 to 8, with speculate + 1 rows fitting the context of 16}}
module attributes {llm.speculate = 9 : i64, llm.settings = #llm.settings<target = "cpu", weight_dtype = "f32", kv_dtype = "f32", max_batch = 1, max_seq_len = 16, prefill_chunk = 2, page_size = 4, kv_pages = 4>} {
  llm.weight @tok_embeddings : tensor<8x4xf32>
  func.func @forward(%arg0: tensor<16xi32> {llm.arg = "tokens"}) -> tensor<16x4xf32> {
    %0 = llm.embedding @tok_embeddings[%arg0] : tensor<16xi32> -> tensor<16x4xf32>
    return %0 : tensor<16x4xf32>
  }
}

// -----

// expected-error @below {{speculate 4 must be 0 (off) or 1 to 8, with speculate + 1 rows fitting the context of 4}}
module attributes {llm.speculate = 4 : i64, llm.settings = #llm.settings<target = "cpu", weight_dtype = "f32", kv_dtype = "f32", max_batch = 1, max_seq_len = 4, prefill_chunk = 2, page_size = 4, kv_pages = 4>} {
  llm.weight @tok_embeddings : tensor<8x4xf32>
  func.func @forward(%arg0: tensor<4xi32> {llm.arg = "tokens"}) -> tensor<4x4xf32> {
    %0 = llm.embedding @tok_embeddings[%arg0] : tensor<4xi32> -> tensor<4x4xf32>
    return %0 : tensor<4x4xf32>
  }
}
