// The llm dialect: the dialect, its types and its attributes.
#ifndef KVPLAN_LLM_DIALECT
#define KVPLAN_LLM_DIALECT

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"

def LLM_Dialect : Dialect {
  let name = "llm";
  let cppNamespace = "::kvplan::llm";
  let summary = "Operations of Llama-family language models";
  let description = [{
    One op per step of the model as its authors describe it (embedding,
    RMSNorm, linear, RoPE, grouped-query attention, SwiGLU, residual add,
    logits), on statically shaped tensors. Weights are module-level symbols
    (`llm.weight`) referenced by name. The kvplan passes split the model into
    `prefill` and `decode` entry points, thread an explicit paged KV cache
    through them, fuse, and plan every intermediate into one arena.

    Ops compute in f32; an activation's element type is the type it is stored
    in. Everything is f32 until a target's pass (`--narrow-activations` for
    cuda) stores tensors that only 16-bit linears read in the weights' type.
  }];
  let useDefaultTypePrinterParser = 1;
  let useDefaultAttributePrinterParser = 1;
  // Verifies the discardable llm.* attributes (llm.settings, llm.entry,
  // llm.offsets, ...) wherever they appear.
  let hasOperationAttrVerify = 1;
  let hasRegionArgAttrVerify = 1;
  let dependentDialects = ["::mlir::func::FuncDialect"];
}

//===----------------------------------------------------------------------===//
// Types
//===----------------------------------------------------------------------===//

class LLM_Type<string name, string typeMnemonic> : TypeDef<LLM_Dialect, name> {
  let mnemonic = typeMnemonic;
}

def LLM_KVCacheType : LLM_Type<"KVCache", "kv_cache"> {
  let summary = "A paged key/value cache for every layer of a model";
  let description = [{
    A pool of `pages` fixed-size pages of `page_size` token slots, for
    each of `layers` layers, keys and values apart. A sequence owns a list of
    pages, given at run time by its row of the page table, so that token
    position `p` lives in page `page_table[p / page_size]`, slot
    `p % page_size`. Layout in memory (row-major, outermost first):
    `[layers][2 (k, v)][pages][kv_heads][page_size][head_dim]`, so that one
    head's keys in one page are contiguous.

    Example:
    ```mlir
    !llm.kv_cache<layers = 4, pages = 32, page_size = 16, kv_heads = 4, head_dim = 32, element_type = f32>
    ```
  }];
  let parameters = (ins "int64_t":$layers, "int64_t":$pages, "int64_t":$page_size,
                        "int64_t":$kv_heads, "int64_t":$head_dim,
                        "::mlir::Type":$element_type);
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// Bytes of the whole pool.
    int64_t getSizeInBytes() const;
  }];
}

def LLM_KVViewType : LLM_Type<"KVView", "kv_view"> {
  let summary = "The cached keys or values one layer's attention reads";
  let description = [{
    Made by `llm.kv_cache_read`: for each query row, the keys (or values) of
    that row's sequence at positions `[0, position]`, read in place from the
    cache. It occupies no arena memory.

    Example:
    ```mlir
    !llm.kv_view<kv_heads = 4, head_dim = 32, element_type = f32>
    ```
  }];
  let parameters = (ins "int64_t":$kv_heads, "int64_t":$head_dim,
                        "::mlir::Type":$element_type);
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

def LLM_MXFP4Type : LLM_Type<"MXFP4", "mxfp4"> {
  let summary = "A weight element in the OCP microscaling format MXFP4";
  let description = [{
    The element type of a matrix (or stack of matrices) stored as MXFP4, the
    format gpt-oss's experts are published in: 4-bit E2M1 codes (values 0,
    0.5, 1, 1.5, 2, 3, 4, 6 and their negatives) in groups of 32 along the
    input dimension, each group scaled by one E8M0 byte, a power of two.
    MLIR 19 has no builtin 4-bit float, so the dialect names it.

    Example:
    ```mlir
    llm.weight @layers.0.feed_forward.experts.w1 : tensor<32x2880x2880x!llm.mxfp4>
    ```
  }];
}

//===----------------------------------------------------------------------===//
// Attributes
//===----------------------------------------------------------------------===//

class LLM_Attr<string name, string attrMnemonic> : AttrDef<LLM_Dialect, name> {
  let mnemonic = attrMnemonic;
}

def LLM_SettingsAttr : LLM_Attr<"Settings", "settings"> {
  let summary = "How the model is compiled: target, types and static sizes";
  let description = [{
    Rides on the module as `llm.settings`, so every stage's IR is
    self-contained: the passes take row counts, the page size, the size of
    the KV-cache pool (`kv_pages`, pages of `page_size` tokens, at least one
    sequence's `max_seq_len / page_size`) and the cache's element type from
    it unless their options say otherwise. Every key is required; the
    verifier names an unknown type or a size that cannot work.

    Example:
    ```mlir
    module attributes {llm.settings = #llm.settings<target = "cpu", weight_dtype = "bf16", kv_dtype = "bf16", max_batch = 4, max_seq_len = 2048, prefill_chunk = 64, page_size = 16, kv_pages = 512>}
    ```
  }];
  let parameters = (ins StringRefParameter<"cpu or cuda">:$target,
                        StringRefParameter<"f32, bf16, f16, int8, int4 or mxfp4">:$weight_dtype,
                        StringRefParameter<"f32, bf16 or f16">:$kv_dtype,
                        "int64_t":$max_batch, "int64_t":$max_seq_len,
                        "int64_t":$prefill_chunk, "int64_t":$page_size,
                        "int64_t":$kv_pages);
  // `key = value` in any order; a missing or unknown key is named.
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// The KV cache's element type (f32, bf16 or f16).
    ::mlir::Type getKvElementType() const;
  }];
}

def LLM_ShardAttr : LLM_Attr<"Shard", "shard"> {
  let summary = "How a weight is cut between tensor-parallel ranks";
  let description = [{
    Made by `--partition-tensor-parallel` on a weight it splits: the
    checkpoint tensor (each of its `concat` parts, when fused) is cut along
    dimension `dim` into `pieces` equal pieces, and rank `r` of the module's
    `llm.tensor_parallel` ranks holds piece `r * pieces / ranks`. The weight's
    type is one piece. Fewer pieces than ranks replicate each piece on
    `ranks / pieces` ranks (KV heads fewer than the ranks); `why` says so.

    Example:
    ```mlir
    llm.weight @layers.0.attention.wq {shard = #llm.shard<dim = 0, pieces = 2>} : tensor<128x256xf32>
    ```
  }];
  let parameters = (ins "int64_t":$dim, "int64_t":$pieces,
                        StringRefParameter<"why pieces are fewer than ranks", [{""}]>:$why);
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

def LLM_RopeScalingAttr : LLM_Attr<"RopeScaling", "rope_scaling"> {
  let summary = "Llama 3's RoPE frequency scaling";
  let description = [{
    Wavelengths longer than `original_max_position_embeddings /
    low_freq_factor` are slowed by `factor`, those shorter than
    `original_max_position_embeddings / high_freq_factor` kept, and the band
    between blends the two.

    Example:
    ```mlir
    #llm.rope_scaling<factor = 8.000000e+00, low_freq_factor = 1.000000e+00, high_freq_factor = 4.000000e+00, original_max_position_embeddings = 8192>
    ```
  }];
  let parameters = (ins APFloatParameter<"">:$factor, APFloatParameter<"">:$low_freq_factor,
                        APFloatParameter<"">:$high_freq_factor,
                        "int64_t":$original_max_position_embeddings);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
}

def LLM_AttentionMask : I32EnumAttr<"AttentionMask",
    "which keys each query row attends to", [
  // Rows are one sequence in order: row i sees rows 0..i of this call.
  I32EnumAttrCase<"causal", 0>,
  // Each row is its own sequence of one token: it sees only itself.
  I32EnumAttrCase<"self", 1>,
  // Keys and values are kv_views: row i sees its sequence's cache up to its
  // position.
  I32EnumAttrCase<"cache", 2>
]> {
  let cppNamespace = "::kvplan::llm";
}

#endif // KVPLAN_LLM_DIALECT
