// The module's list of copies is the settings', checked: a copy below its
// entry point's rows (those the option leaves out silently are an error).

// expected-error @below {{llm.prefill_copies lists 2 rows, not below @prefill's 2: a copy has fewer rows than its entry point; leave 2 out}}
module attributes {llm.prefill_copies = array<i64: 1, 2>, llm.settings = #llm.settings<target = "cuda", weight_dtype = "f32", kv_dtype = "f32", max_batch = 4, max_seq_len = 16, prefill_chunk = 2, page_size = 4, kv_pages = 4>} {
  llm.weight @tok_embeddings : tensor<8x4xf32>
  func.func @forward(%arg0: tensor<16xi32> {llm.arg = "tokens"}) -> tensor<16x4xf32> {
    %0 = llm.embedding @tok_embeddings[%arg0] : tensor<16xi32> -> tensor<16x4xf32>
    return %0 : tensor<16x4xf32>
  }
}
