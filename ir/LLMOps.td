// The llm dialect's operations.
#ifndef KVPLAN_LLM_OPS
#define KVPLAN_LLM_OPS

include "ir/LLMDialect.td"
include "mlir/IR/OpBase.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

class LLM_Op<string mnemonic, list<Trait> traits = []>
    : Op<LLM_Dialect, mnemonic, traits>;

/// Each output row depends only on the same row of each operand, so the op
/// can run on any subset of rows (prune-last-token relies on it).
def RowWise : NativeOpTrait<"RowWise"> {
  let cppNamespace = "::kvplan::llm";
}

def LLM_Float : AnyTypeOf<[F32, BF16, F16]>;
def LLM_Activations : 2DTensorOf<[F32, BF16, F16]>;
def LLM_Ids : 1DTensorOf<[I32]>;
def LLM_Logits : 2DTensorOf<[F32]>;
def LLM_PageTable : 2DTensorOf<[I32]>;
def LLM_KVCache : Type<CPred<"::llvm::isa<::kvplan::llm::KVCacheType>($_self)">,
                       "paged KV cache", "::kvplan::llm::KVCacheType">;
def LLM_KVView : Type<CPred<"::llvm::isa<::kvplan::llm::KVViewType>($_self)">,
                      "KV-cache view", "::kvplan::llm::KVViewType">;
def LLM_Rows : AnyTypeOf<[LLM_Activations, LLM_Ids]>;
def LLM_KeysOrValues : AnyTypeOf<[LLM_Activations, LLM_KVView]>;

def LLM_KVCacheResource : Resource<"::kvplan::llm::KVCacheResource">;

//===----------------------------------------------------------------------===//
// Weights
//===----------------------------------------------------------------------===//

def LLM_WeightOp : LLM_Op<"weight", [Symbol]> {
  let summary = "A named weight tensor of the model";
  let description = [{
    Declares one tensor the model reads, at module level, under kvplan's
    canonical name (Meta's Llama naming). Matrices are `[out, in]`; an `i8`
    matrix is kvplan's int8 format (groups of 32 weights along `in`, each
    with an f32 scale, stored beside the data), an `i4` matrix its int4
    format (4-bit codes in groups of 32 along `in`, each group with an f32
    scale and minimum). A weight
    made by fusion lists the weights it concatenates (along dimension 0) in
    `concat`; the weight loader builds it from those. A weight split between
    tensor-parallel ranks says how in `shard` (#llm.shard); its type is one
    rank's piece.

    Example:
    ```mlir
    llm.weight @layers.0.attention.wq : tensor<256x256xf32>
    llm.weight @layers.0.feed_forward.w13 concat ["layers.0.feed_forward.w1", "layers.0.feed_forward.w3"] : tensor<1376x256xf32>
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name,
                       TypeAttrOf<AnyRankedTensor>:$type,
                       OptionalAttr<StrArrayAttr>:$parts,
                       OptionalAttr<LLM_ShardAttr>:$shard);
  let assemblyFormat = "$sym_name (`concat` $parts^)? attr-dict `:` $type";
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    ::mlir::RankedTensorType getTensorType() {
      return ::llvm::cast<::mlir::RankedTensorType>(getType());
    }
  }];
}

/// Ops that read weights verify the referenced symbols and their shapes.
class LLM_WeightUser<string mnemonic, list<Trait> traits = []>
    : LLM_Op<mnemonic, !listconcat(traits,
          [DeclareOpInterfaceMethods<SymbolUserOpInterface>])>;

//===----------------------------------------------------------------------===//
// Model ops
//===----------------------------------------------------------------------===//

def LLM_EmbeddingOp : LLM_WeightUser<"embedding", [Pure, RowWise]> {
  let summary = "Looks up token embeddings";
  let description = [{
    `result[i] = weight[tokens[i]]` with `weight` of shape `[vocab, hidden]`,
    times `scale` where there is one (Gemma's `sqrt(hidden)`).

    Example:
    ```mlir
    %0 = llm.embedding @tok_embeddings[%tokens] : tensor<64xi32> -> tensor<64x256xf32>
    %0 = llm.embedding @tok_embeddings[%tokens] {scale = 16.0 : f64} : tensor<64xi32> -> tensor<64x256xf32>
    ```
  }];
  let arguments = (ins FlatSymbolRefAttr:$weight, LLM_Ids:$tokens, OptionalAttr<F64Attr>:$scale);
  let results = (outs LLM_Activations:$result);
  let assemblyFormat = "$weight `[` $tokens `]` attr-dict `:` type($tokens) `->` type($result)";
  let hasVerifier = 1;
}

def LLM_RMSNormOp : LLM_WeightUser<"rms_norm", [Pure, RowWise]> {
  let summary = "RMSNorm of each row, scaled by a weight";
  let description = [{
    `result[i] = input[i] / sqrt(mean(input[i]^2) + eps) * weight`, in f32,
    stored in the result's element type.

    Example:
    ```mlir
    %1 = llm.rms_norm %0, @layers.0.attention_norm {eps = 1.000000e-05 : f64} : tensor<64x256xf32>
    ```
  }];
  let arguments = (ins LLM_Activations:$input, FlatSymbolRefAttr:$weight, F64Attr:$eps);
  let results = (outs LLM_Activations:$result);
  let assemblyFormat = "$input `,` $weight attr-dict `:` custom<StoredAs>(type($input), type($result))";
  let hasVerifier = 1;
  let builders = [
    OpBuilder<(ins "::mlir::Value":$input, "::mlir::FlatSymbolRefAttr":$weight,
                   "::mlir::FloatAttr":$eps), [{
      build($_builder, $_state, input.getType(), input, weight, eps);
    }]>
  ];
}

def LLM_HeadRMSNormOp : LLM_WeightUser<"head_rms_norm", [Pure, RowWise,
    AllTypesMatch<["input", "result"]>]> {
  let summary = "RMSNorm of each head of each row, scaled by one weight";
  let description = [{
    Each `head_dim`-wide head `h` of row `i` on its own:
    `result[i, h] = input[i, h] / sqrt(mean(input[i, h]^2) + eps) * weight`,
    in f32, with one `weight` of `head_dim` shared by every head (Qwen3's
    q_norm and k_norm, before RoPE).

    Example:
    ```mlir
    %3 = llm.head_rms_norm %2, @layers.0.attention.q_norm {eps = 1.000000e-06 : f64, head_dim = 128 : i64} : tensor<64x2048xf32>
    ```
  }];
  let arguments = (ins LLM_Activations:$input, FlatSymbolRefAttr:$weight, F64Attr:$eps,
                       I64Attr:$head_dim);
  let results = (outs LLM_Activations:$result);
  let assemblyFormat = "$input `,` $weight attr-dict `:` type($input)";
  let hasVerifier = 1;
}

def LLM_AddRMSNormOp : LLM_WeightUser<"add_rms_norm", [Pure, RowWise,
    AllTypesMatch<["lhs", "rhs", "residual"]>]> {
  let summary = "Residual add fused with the RMSNorm that follows it";
  let description = [{
    `residual = lhs + rhs; normed = rms_norm(residual, weight, eps)`: one pass
    over the rows yields both the new residual stream and its normalisation
    (stored in `normed`'s element type). Made by `--fuse-rmsnorm`.

    Example:
    ```mlir
    %n, %r = llm.add_rms_norm %x, %attn, @layers.0.ffn_norm {eps = 1.000000e-05 : f64} : tensor<1x256xf32>
    ```
  }];
  let arguments = (ins LLM_Activations:$lhs, LLM_Activations:$rhs,
                       FlatSymbolRefAttr:$weight, F64Attr:$eps);
  let results = (outs LLM_Activations:$normed, LLM_Activations:$residual);
  let assemblyFormat = "$lhs `,` $rhs `,` $weight attr-dict `:` custom<StoredAs>(type($lhs), type($normed))";
  let hasVerifier = 1;
  let builders = [
    OpBuilder<(ins "::mlir::Value":$lhs, "::mlir::Value":$rhs,
                   "::mlir::FlatSymbolRefAttr":$weight, "::mlir::FloatAttr":$eps), [{
      build($_builder, $_state, lhs.getType(), lhs.getType(), lhs, rhs, weight, eps);
    }]>
  ];
}

def LLM_LinearOp : LLM_WeightUser<"linear", [Pure, RowWise]> {
  let summary = "A matrix product with a weight, optionally plus a bias";
  let description = [{
    `out = input x weight^T (+ bias)` with `weight` of shape `[out, in]`,
    accumulated in f32. With several results, the output columns are split
    among them in order (a fused Q/K/V projection writes Q, K and V apart).

    Example:
    ```mlir
    %q = llm.linear @layers.0.attention.wq(%1) : tensor<64x256xf32> -> tensor<64x256xf32>
    %q, %k, %v = llm.linear @layers.0.attention.wqkv(%1) bias @layers.0.attention.bqkv : tensor<64x256xf32> -> tensor<64x256xf32>, tensor<64x128xf32>, tensor<64x128xf32>
    ```
  }];
  let arguments = (ins FlatSymbolRefAttr:$weight, LLM_Activations:$input,
                       OptionalAttr<FlatSymbolRefAttr>:$bias);
  let results = (outs Variadic<LLM_Activations>:$results);
  let assemblyFormat = [{
    $weight `(` $input `)` (`bias` $bias^)? attr-dict `:` type($input) `->` type($results)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// Output columns in total (rows of the weight).
    int64_t getOutFeatures();
  }];
}

def LLM_RopeOp : LLM_Op<"rope", [Pure, RowWise, AllTypesMatch<["input", "result"]>]> {
  let summary = "Rotary position embedding of each head";
  let description = [{
    Rotates each adjacent pair `(x[2j], x[2j+1])` of every head of row `i`
    by the angle `positions[i] * theta^(-2j / rotary_dim)`; `scaling`, when
    present, is Llama 3's frequency scaling (`#llm.rope_scaling`), and
    `freq_factors`, when present, divide frequency `j` by `freq_factors[j]`
    (`rotary_dim / 2` positive numbers: a GGUF's `rope_freqs`, linear
    scaling's factor, or LongRoPE's list). `rotary_dim` (partial RoPE,
    Phi-4-mini's 96 of 128; `head_dim` when absent) is how many of a head's
    leading dimensions rotate: the rest pass through unchanged. With
    `attention_factor` (LongRoPE's, where only part of a head rotates) the
    rotated pairs are multiplied by it, as cos and sin are in transformers;
    with whole heads the frontend folds that factor into the attention's
    scale instead. Rows with a negative position are padding.

    Example:
    ```mlir
    %5 = llm.rope %2, %positions {head_dim = 32 : i64, theta = 1.000000e+04 : f64} : tensor<64x256xf32>, tensor<64xi32>
    ```
  }];
  let arguments = (ins LLM_Activations:$input, LLM_Ids:$positions,
                       I64Attr:$head_dim, F64Attr:$theta,
                       OptionalAttr<LLM_RopeScalingAttr>:$scaling,
                       OptionalAttr<DenseF64ArrayAttr>:$freq_factors,
                       OptionalAttr<I64Attr>:$rotary_dim, OptionalAttr<F64Attr>:$attention_factor);
  let results = (outs LLM_Activations:$result);
  let assemblyFormat = "$input `,` $positions attr-dict `:` type($input) `,` type($positions)";
  let hasVerifier = 1;
}

def LLM_AttentionOp : LLM_WeightUser<"attention", [Pure]> {
  let summary = "Scaled dot-product attention with grouped-query heads";
  let description = [{
    For each row and each of `num_heads` query heads, softmax(q k^T * scale)
    v over the keys the mask allows; query head `h` reads KV head
    `h / (num_heads / num_kv_heads)`. Keys and values are either fresh
    `[rows, num_kv_heads * head_dim]` tensors (masks `causal` and `self`) or
    the views a `llm.kv_cache_read` makes (mask `cache`). With `window`
    (sliding-window attention: Mistral 7B v0.1, Phi-3), a row at position p
    reads only the keys at positions above p - window, the last `window` of
    them, its own included, as Hugging Face's mask and llama.cpp have it.
    With `softcap` (Gemma 2's attn_logit_softcapping), each scaled score s
    becomes softcap x tanh(s / softcap) before the mask and the softmax.
    With `sinks` (gpt-oss's attention sinks: an f32 weight of one logit a
    query head, `[num_heads]`), each head's softmax has one more score, its
    sink, unscaled and with no value: the key weights are
    `exp(s_j) / (sum_k exp(s_k) + exp(sink))`.

    Example:
    ```mlir
    %7 = llm.attention causal %q, %k, %v {head_dim = 32 : i64, num_heads = 8 : i64, num_kv_heads = 4 : i64, scale = 0.17677669529663687 : f64} : tensor<64x256xf32>, tensor<64x128xf32>, tensor<64x128xf32> -> tensor<64x256xf32>
    ```
  }];
  let arguments = (ins LLM_AttentionMask:$mask, LLM_Activations:$query,
                       LLM_KeysOrValues:$key, LLM_KeysOrValues:$value,
                       I64Attr:$num_heads, I64Attr:$num_kv_heads, I64Attr:$head_dim,
                       F64Attr:$scale, OptionalAttr<I64Attr>:$window,
                       OptionalAttr<F64Attr>:$softcap,
                       OptionalAttr<FlatSymbolRefAttr>:$sinks);
  let results = (outs LLM_Activations:$result);
  let assemblyFormat = [{
    $mask $query `,` $key `,` $value (`sinks` $sinks^)? attr-dict `:` type($query) `,`
    type($key) `,` type($value) `->` type($result)
  }];
  let hasVerifier = 1;
}

def LLM_SwiGLUOp : LLM_Op<"swiglu", [Pure, RowWise, AllTypesMatch<["gate", "up"]>]> {
  let summary = "SiLU(gate) times up (or GELU(gate): GeGLU)";
  let description = [{
    `result = gate * sigmoid(gate) * up`, elementwise; with `gelu`,
    `result = gelu(gate) * up` in GELU's tanh approximation,
    `gelu(x) = x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))`
    (Gemma's `gelu_pytorch_tanh`).

    Example:
    ```mlir
    %12 = llm.swiglu %10, %11 : tensor<64x688xf32>
    %12 = llm.swiglu %10, %11 {gelu} : tensor<64x688xf32>
    ```
  }];
  let arguments = (ins LLM_Activations:$gate, LLM_Activations:$up, UnitAttr:$gelu);
  let results = (outs LLM_Activations:$result);
  let assemblyFormat = "$gate `,` $up attr-dict `:` custom<StoredAs>(type($gate), type($result))";
  let hasVerifier = 1;
  let builders = [
    OpBuilder<(ins "::mlir::Value":$gate, "::mlir::Value":$up, "bool":$gelu), [{
      build($_builder, $_state, gate.getType(), gate, up, gelu);
    }]>
  ];
}

def LLM_FusedFFNOp : LLM_Op<"fused_ffn", [Pure, RowWise]> {
  let summary = "SiLU(gate) times up over a fused gate|up projection";
  let description = [{
    The input holds the gate projection in its first half of columns and the
    up projection in its second; `result = silu(gate) * up`, or with `gelu`
    `gelu(gate) * up` (as `llm.swiglu`'s). Made by `--fuse-ffn` from a
    `llm.swiglu` of two linears of the same input.

    Example:
    ```mlir
    %11 = llm.fused_ffn %10 : tensor<64x1376xf32> -> tensor<64x688xf32>
    ```
  }];
  let arguments = (ins LLM_Activations:$input, UnitAttr:$gelu);
  let results = (outs LLM_Activations:$result);
  let assemblyFormat = "$input attr-dict `:` type($input) `->` type($result)";
  let hasVerifier = 1;
}

def LLM_MoEFFNOp : LLM_WeightUser<"moe_ffn", [Pure, RowWise]> {
  let summary = "A sparse mixture-of-experts FFN: each row through its top experts";
  let description = [{
    The FFN of a mixture-of-experts layer (Mixtral's, Qwen2-MoE's,
    Qwen3-MoE's). For each row `x`: `p = softmax(x router^T)` over the
    experts (`router` is `[experts, in]`); the `experts_per_token` experts of
    the largest `p` (the lower index first among equals) each compute their
    gated FFN, `down_e (act(gate_e x) * up_e x)` with `gate` and `up`
    `[experts, ff, in]` and `down` `[experts, in, ff]`, act SiLU (GELU's
    tanh form with `gelu`); the result is their sum weighted by their `p`,
    divided by the chosen experts' total `p` with `norm_top_k`. Each stack
    holds one matrix an expert; the op reads only the chosen experts'
    matrices.

    With `shared` (Qwen2-MoE's shared expert: a dense FFN of the same input,
    built of ordinary ops), the result adds that row of `shared`, times
    `sigmoid(x . shared_gate)` where `shared_gate` (`[1, in]`) is given.

    gpt-oss's mixture: `router_bias` (`[experts]`) is added to the router's
    scores, `biases` (`[experts, ff]`, `[experts, ff]`, `[experts, in]`) to
    each expert's gate, up and down products, and with `swiglu_limit` the
    activation is its clamped SwiGLU (ggml's swiglu_oai):
    `min(g, limit) * sigmoid(alpha * min(g, limit)) * (clamp(u, -limit, limit) + 1)`
    with `alpha` `swiglu_alpha`.

    Example:
    ```mlir
    %12 = llm.moe_ffn %11 router @layers.0.feed_forward.router experts(@layers.0.feed_forward.experts.w1, @layers.0.feed_forward.experts.w3, @layers.0.feed_forward.experts.w2) {experts_per_token = 2 : i64, norm_top_k} : tensor<64x256xf32> -> tensor<64x256xf32>
    %15 = llm.moe_ffn %11 router @layers.0.feed_forward.router experts(@layers.0.feed_forward.experts.w1, @layers.0.feed_forward.experts.w3, @layers.0.feed_forward.experts.w2) shared %14 : tensor<64x256xf32> gate @layers.0.feed_forward.shared_expert_gate {experts_per_token = 4 : i64} : tensor<64x256xf32> -> tensor<64x256xf32>
    ```
  }];
  let arguments = (ins LLM_Activations:$input, FlatSymbolRefAttr:$router,
                       FlatSymbolRefAttr:$gate, FlatSymbolRefAttr:$up,
                       FlatSymbolRefAttr:$down, I64Attr:$experts_per_token,
                       UnitAttr:$norm_top_k, UnitAttr:$gelu,
                       Optional<LLM_Activations>:$shared,
                       OptionalAttr<FlatSymbolRefAttr>:$shared_gate,
                       OptionalAttr<FlatSymbolRefAttr>:$router_bias,
                       OptionalAttr<FlatSymbolRefAttr>:$gate_bias,
                       OptionalAttr<FlatSymbolRefAttr>:$up_bias,
                       OptionalAttr<FlatSymbolRefAttr>:$down_bias,
                       OptionalAttr<F64Attr>:$swiglu_limit,
                       OptionalAttr<F64Attr>:$swiglu_alpha);
  let results = (outs LLM_Activations:$result);
  let assemblyFormat = [{
    $input `router` $router (`bias` $router_bias^)? `experts` `(` $gate `,` $up `,` $down `)`
    (`biases` `(` $gate_bias^ `,` $up_bias `,` $down_bias `)`)?
    (`shared` $shared^ `:` type($shared) (`gate` $shared_gate^)?)? attr-dict `:`
    type($input) `->` type($result)
  }];
  let hasVerifier = 1;
}

def LLM_AddOp : LLM_Op<"add", [Pure, RowWise, SameOperandsAndResultType, Commutative]> {
  let summary = "Elementwise sum (the residual connection)";
  let description = [{
    Example:
    ```mlir
    %9 = llm.add %0, %8 : tensor<64x256xf32>
    ```
  }];
  let arguments = (ins LLM_Activations:$lhs, LLM_Activations:$rhs);
  let results = (outs LLM_Activations:$result);
  let assemblyFormat = "$lhs `,` $rhs attr-dict `:` type($result)";
}

def LLM_AllReduceOp : LLM_Op<"all_reduce", [RowWise, SameOperandsAndResultType]> {
  let summary = "Sum of every tensor-parallel rank's partial rows";
  let description = [{
    Made by `--partition-tensor-parallel` after a linear whose input
    features are split between ranks (attention's output projection and the
    FFN's down projection): each rank holds a partial product, and every
    rank gets their sum. It is a collective: every rank runs it, in the same
    order, so it is neither pure nor movable past another all-reduce.

    Example:
    ```mlir
    %12 = llm.all_reduce %11 : tensor<1x256xf32>
    ```
  }];
  let arguments = (ins LLM_Activations:$input);
  let results = (outs LLM_Activations:$result);
  let assemblyFormat = "$input attr-dict `:` type($result)";
}

def LLM_LogitsOp : LLM_WeightUser<"logits", [Pure, RowWise]> {
  let summary = "The language-model head: f32 logits over the vocabulary";
  let description = [{
    `logits = input x weight^T` with `weight` of shape `[vocab, hidden]`
    (the output matrix, or the token embeddings when they are tied); the
    result is always f32, since sampling reads it. With `softcap` (Gemma 2's
    final_logit_softcapping) each logit x becomes softcap x tanh(x / softcap).

    Example:
    ```mlir
    %30 = llm.logits @output(%29) : tensor<1x256xf32> -> tensor<1x512xf32>
    ```
  }];
  let arguments = (ins FlatSymbolRefAttr:$weight, LLM_Activations:$input,
                       OptionalAttr<F64Attr>:$softcap);
  let results = (outs LLM_Logits:$result);
  let assemblyFormat = "$weight `(` $input `)` attr-dict `:` type($input) `->` type($result)";
  let hasVerifier = 1;
}

def LLM_TakeLastOp : LLM_Op<"take_last", [Pure]> {
  let summary = "The last row of a prefill chunk that holds a token";
  let description = [{
    Selects the last row whose position is not negative (rows past the
    chunk's tokens are padding, marked by position -1). Made by
    `--prune-last-token`, so that only that row reaches the LM head.

    Example:
    ```mlir
    %28 = llm.take_last %27, %positions : tensor<64x256xf32>, tensor<64xi32> -> tensor<1x256xf32>
    ```
  }];
  let arguments = (ins LLM_Rows:$input, LLM_Ids:$positions);
  let results = (outs LLM_Rows:$result);
  let assemblyFormat = [{
    $input `,` $positions attr-dict `:` type($input) `,` type($positions) `->` type($result)
  }];
  let hasVerifier = 1;
}

def LLM_ConvertOp : LLM_Op<"convert", [Pure, RowWise]> {
  let summary = "Stores rows in another float type";
  let description = [{
    `result = input`, rounded to the result's element type (round to nearest
    even). Made by `--narrow-activations` where a linear with 16-bit weights
    reads a tensor that must stay f32 for another reader.

    Example:
    ```mlir
    %5 = llm.convert %4 : tensor<1x256xf32> -> tensor<1x256xbf16>
    ```
  }];
  let arguments = (ins LLM_Activations:$input);
  let results = (outs LLM_Activations:$result);
  let assemblyFormat = "$input attr-dict `:` type($input) `->` type($result)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// KV cache
//===----------------------------------------------------------------------===//

def LLM_KVCacheWriteOp : LLM_Op<"kv_cache_write", [
    AllTypesMatch<["cache", "result"]>,
    MemoryEffects<[MemRead<LLM_KVCacheResource>, MemWrite<LLM_KVCacheResource>]>]> {
  let summary = "Stores one layer's new keys and values in the paged cache";
  let description = [{
    Row `i`'s key and value go to position `positions[i]` of its sequence:
    page `page_table[s][positions[i] / page_size]`, slot
    `positions[i] % page_size`, where `s` is 0 when the page table has one
    row (prefill: all rows are one sequence) and `i` otherwise (decode: row
    `i` is sequence `i`). Rows with a negative position are skipped. The
    result is the cache after the write; reads of it see the new entries.

    Example:
    ```mlir
    %c1 = llm.kv_cache_write %k, %v into %cache[%page_table] at %positions {layer = 0 : i64} : tensor<64x128xf32>, tensor<64x128xf32>, !llm.kv_cache<layers = 4, pages = 32, page_size = 16, kv_heads = 4, head_dim = 32, element_type = f32>, tensor<1x32xi32>, tensor<64xi32>
    ```
  }];
  let arguments = (ins LLM_Activations:$key, LLM_Activations:$value, LLM_KVCache:$cache,
                       LLM_PageTable:$page_table, LLM_Ids:$positions, I64Attr:$layer);
  let results = (outs LLM_KVCache:$result);
  let assemblyFormat = [{
    $key `,` $value `into` $cache `[` $page_table `]` `at` $positions attr-dict `:`
    type($key) `,` type($value) `,` type($cache) `,` type($page_table) `,` type($positions)
  }];
  let hasVerifier = 1;
}

def LLM_KVCacheReadOp : LLM_Op<"kv_cache_read", [
    MemoryEffects<[MemRead<LLM_KVCacheResource>]>]> {
  let summary = "Views one layer's cached keys and values up to each row's position";
  let description = [{
    For each row `i`, the keys and values of its sequence (chosen as in
    `llm.kv_cache_write`) at positions `[0, positions[i]]`, read in place.

    Example:
    ```mlir
    %kc, %vc = llm.kv_cache_read %c1[%page_table] upto %positions {layer = 0 : i64} : !llm.kv_cache<layers = 4, pages = 32, page_size = 16, kv_heads = 4, head_dim = 32, element_type = f32>, tensor<1x32xi32>, tensor<64xi32> -> !llm.kv_view<kv_heads = 4, head_dim = 32, element_type = f32>, !llm.kv_view<kv_heads = 4, head_dim = 32, element_type = f32>
    ```
  }];
  let arguments = (ins LLM_KVCache:$cache, LLM_PageTable:$page_table, LLM_Ids:$positions,
                       I64Attr:$layer);
  let results = (outs LLM_KVView:$keys, LLM_KVView:$values);
  let assemblyFormat = [{
    $cache `[` $page_table `]` `upto` $positions attr-dict `:` type($cache) `,`
    type($page_table) `,` type($positions) `->` type($keys) `,` type($values)
  }];
  let hasVerifier = 1;
}

def LLM_RopeKVWriteOp : LLM_Op<"rope_kv_write", [
    AttrSizedOperandSegments, AllTypesMatch<["cache", "result"]>,
    MemoryEffects<[MemRead<LLM_KVCacheResource>, MemWrite<LLM_KVCacheResource>]>]> {
  let summary = "RoPE of queries and keys fused with the cache write of keys and values";
  let description = [{
    `rotated_query = rope(query)`, and `rope(key)` and `value` written to the
    cache as `llm.kv_cache_write` writes them: one pass over the rows instead
    of three ops, with the rotated keys never stored apart. The RoPE
    attributes are `llm.rope`'s. Made by `--fuse-rope-kv-write` (the cuda
    target's pipeline).

    Without `key` and `value`, `query` holds the queries, the keys and the
    values side by side in each row (`[rows, q + 2 x kv_heads x head_dim]`):
    the one result of a fused QKV product, so that the product is one matrix
    product at any row count instead of one per part.

    With `q_norm`, `k_norm` and `norm_eps` (Qwen3's), each query and key
    head is first normalized as `llm.head_rms_norm` does, with `q_norm`'s
    and `k_norm`'s `head_dim` weights: the two norms the pass folded in.

    Example:
    ```mlir
    %qr, %c1 = llm.rope_kv_write %q, %k, %v into %cache[%page_table] at %positions {head_dim = 32 : i64, layer = 0 : i64, theta = 1.000000e+04 : f64} : (tensor<1x256xf32>, tensor<1x128xf32>, tensor<1x128xf32>), !llm.kv_cache<layers = 4, pages = 32, page_size = 16, kv_heads = 4, head_dim = 32, element_type = f32>, tensor<1x32xi32>, tensor<1xi32> -> tensor<1x256xf32>
    %qr2, %c2 = llm.rope_kv_write %qkv into %c1[%page_table] at %positions {head_dim = 32 : i64, layer = 1 : i64, theta = 1.000000e+04 : f64} : (tensor<1x512xf32>), !llm.kv_cache<layers = 4, pages = 32, page_size = 16, kv_heads = 4, head_dim = 32, element_type = f32>, tensor<1x32xi32>, tensor<1xi32> -> tensor<1x256xf32>
    ```
  }];
  let arguments = (ins LLM_Activations:$query, Optional<LLM_Activations>:$key,
                       Optional<LLM_Activations>:$value,
                       LLM_KVCache:$cache, LLM_PageTable:$page_table, LLM_Ids:$positions,
                       I64Attr:$head_dim, F64Attr:$theta,
                       OptionalAttr<LLM_RopeScalingAttr>:$scaling,
                       OptionalAttr<DenseF64ArrayAttr>:$freq_factors,
                       OptionalAttr<I64Attr>:$rotary_dim, OptionalAttr<F64Attr>:$attention_factor,
                       I64Attr:$layer,
                       OptionalAttr<FlatSymbolRefAttr>:$q_norm,
                       OptionalAttr<FlatSymbolRefAttr>:$k_norm, OptionalAttr<F64Attr>:$norm_eps);
  let results = (outs LLM_Activations:$rotated_query, LLM_KVCache:$result);
  let assemblyFormat = [{
    $query (`,` $key^ `,` $value)? `into` $cache `[` $page_table `]` `at` $positions attr-dict
    `:` `(` type($query) (`,` type($key)^ `,` type($value))? `)` `,` type($cache) `,`
    type($page_table) `,` type($positions) `->` type($rotated_query)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// Whether `query` holds the keys and values too (no `key`, `value`).
    bool isPacked() { return !getKey(); }
    /// The op whose results are exactly this op's rows (the packed rows, or
    /// the queries, keys and values in order), each read by this op alone;
    /// null otherwise.
    ::mlir::Operation *getSoleProducer();
  }];
}

def LLM_MatVecOp : LLM_WeightUser<"matvec", [Pure]> {
  let summary = "A product for a few rows with its neighbours folded in";
  let description = [{
    `llm.linear` for the few rows of a decode step (or the last prompt row)
    with the ops around it folded into the one kernel that reads the weight:
    - `norm @w {eps}`: the input rows are RMS-normed first, as `llm.rms_norm`
      with scale `@w` would (the prologue);
    - `swiglu`: the weight is a fused gate|up projection and the result is
      `silu(gate) * up`, as `llm.fused_ffn` computes it (an epilogue); with
      `gelu` as well, `gelu(gate) * up`;
    - `plus %addend`: the addend (the residual stream) is added to the
      product (an epilogue);
    - `softcap` (a head's, as `llm.logits`' has it): each output x becomes
      softcap x tanh(x / softcap).
    Several results split the output columns as `llm.linear`'s do; with
    `swiglu` or `plus` there is one. Reading every input row in every block,
    it never writes over its operands. Made by `--fuse-matvec` (the cuda
    target's pipeline).

    Example:
    ```mlir
    %q, %k, %v = llm.matvec @layers.0.attention.wqkv(%0) norm @layers.0.attention_norm {eps = 1.000000e-05 : f64} : tensor<1x256xf32> -> tensor<1x256xf32>, tensor<1x128xf32>, tensor<1x128xf32>
    %4 = llm.matvec @layers.0.attention.wo(%3) plus %0 : tensor<1x256xbf16>, tensor<1x256xf32> -> tensor<1x256xf32>
    %5 = llm.matvec @layers.0.feed_forward.w13(%4) norm @layers.0.ffn_norm swiglu {eps = 1.000000e-05 : f64} : tensor<1x256xf32> -> tensor<1x688xbf16>
    ```
  }];
  let arguments = (ins FlatSymbolRefAttr:$weight, LLM_Activations:$input,
                       OptionalAttr<FlatSymbolRefAttr>:$bias,
                       OptionalAttr<FlatSymbolRefAttr>:$norm, OptionalAttr<F64Attr>:$eps,
                       UnitAttr:$swiglu, UnitAttr:$gelu, OptionalAttr<F64Attr>:$softcap,
                       Optional<LLM_Activations>:$addend);
  let results = (outs Variadic<LLM_Activations>:$results);
  let assemblyFormat = [{
    $weight `(` $input `)` (`norm` $norm^)? (`swiglu` $swiglu^)? (`gelu` $gelu^)?
    (`plus` $addend^)?
    (`bias` $bias^)? attr-dict `:` type($input) (`,` type($addend)^)? `->` type($results)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// Rows of the weight: the output columns, twice them with swiglu.
    int64_t getWeightRows();
  }];
}

def LLM_MatVecRopeKVWriteOp : LLM_WeightUser<"matvec_rope_kv_write", [
    AllTypesMatch<["cache", "result"]>,
    MemoryEffects<[MemRead<LLM_KVCacheResource>, MemWrite<LLM_KVCacheResource>]>]> {
  let summary = "The QKV product of a few rows with RoPE and the cache write as its epilogue";
  let description = [{
    `llm.matvec` of a fused QKV weight (its rows the queries, then the keys,
    then the values; `norm` and `bias` as `llm.matvec`'s) whose three
    results only `llm.rope_kv_write` reads, with that op's work done on the
    product as it is made: `rotated_query` is the rotated queries, and the
    rotated keys and the values go to the cache, never stored apart. The
    RoPE attributes are `llm.rope`'s. Made by `--fuse-matvec` (the cuda
    target's pipeline).

    Example:
    ```mlir
    %qr, %c1 = llm.matvec_rope_kv_write @layers.0.attention.wqkv(%0) norm @layers.0.attention_norm into %cache[%page_table] at %positions {eps = 1.000000e-05 : f64, head_dim = 32 : i64, layer = 0 : i64, theta = 1.000000e+04 : f64} : tensor<1x256xf32>, !llm.kv_cache<layers = 4, pages = 32, page_size = 16, kv_heads = 4, head_dim = 32, element_type = f32>, tensor<1x32xi32>, tensor<1xi32> -> tensor<1x256xf32>
    ```
  }];
  let arguments = (ins FlatSymbolRefAttr:$weight, LLM_Activations:$input,
                       OptionalAttr<FlatSymbolRefAttr>:$bias,
                       OptionalAttr<FlatSymbolRefAttr>:$norm, OptionalAttr<F64Attr>:$eps,
                       LLM_KVCache:$cache, LLM_PageTable:$page_table, LLM_Ids:$positions,
                       I64Attr:$head_dim, F64Attr:$theta,
                       OptionalAttr<LLM_RopeScalingAttr>:$scaling,
                       OptionalAttr<DenseF64ArrayAttr>:$freq_factors,
                       OptionalAttr<I64Attr>:$rotary_dim, OptionalAttr<F64Attr>:$attention_factor,
                       I64Attr:$layer);
  let results = (outs LLM_Activations:$rotated_query, LLM_KVCache:$result);
  let assemblyFormat = [{
    $weight `(` $input `)` (`norm` $norm^)? (`bias` $bias^)? `into` $cache `[` $page_table `]`
    `at` $positions attr-dict `:` type($input) `,` type($cache) `,` type($page_table) `,`
    type($positions) `->` type($rotated_query)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// Rows of the weight: the queries', then the keys' and the values'.
    int64_t getWeightRows();
  }];
}

#endif // KVPLAN_LLM_OPS
