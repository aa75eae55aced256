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
  }];
  let useDefaultTypePrinterParser = 1;
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

//===----------------------------------------------------------------------===//
// Attributes
//===----------------------------------------------------------------------===//

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
