// RUN: kvplan-opt %s --plan-buffers=alignment=100 -verify-diagnostics

llm.weight @tok_embeddings : tensor<8x4xf32>
// expected-error @below {{plan-buffers alignment must be a power of two, got 100}}
func.func @decode(%arg0: tensor<1xi32> {llm.arg = "tokens"}) -> tensor<1x4xf32> attributes {llm.entry = "decode"} {
  %0 = llm.embedding @tok_embeddings[%arg0] : tensor<1xi32> -> tensor<1x4xf32>
  return %0 : tensor<1x4xf32>
}
