// RUN: kvplan-opt %s --prune-last-token -split-input-file -verify-diagnostics | FileCheck %s

llm.weight @tok_embeddings : tensor<8x4xf32>
// expected-error @below {{has no llm.logits to prune}}
func.func @prefill(%arg0: tensor<4xi32> {llm.arg = "tokens"}, %arg1: tensor<4xi32> {llm.arg = "positions"}) -> tensor<4x4xf32> attributes {llm.entry = "prefill"} {
  %0 = llm.embedding @tok_embeddings[%arg0] : tensor<4xi32> -> tensor<4x4xf32>
  return %0 : tensor<4x4xf32>
}

// -----

// A chunk of one row has nothing to prune.
// CHECK-LABEL: func.func @prefill
// CHECK-NOT: llm.take_last
// CHECK: -> tensor<1x8xf32>
llm.weight @tok_embeddings : tensor<8x4xf32>
func.func @prefill(%arg0: tensor<1xi32> {llm.arg = "tokens"}, %arg1: tensor<1xi32> {llm.arg = "positions"}) -> tensor<1x8xf32> attributes {llm.entry = "prefill"} {
  %0 = llm.embedding @tok_embeddings[%arg0] : tensor<1xi32> -> tensor<1x4xf32>
  %1 = llm.logits @tok_embeddings(%0) : tensor<1x4xf32> -> tensor<1x8xf32>
  return %1 : tensor<1x8xf32>
}
