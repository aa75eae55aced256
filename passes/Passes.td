// The kvplan passes, in pipeline order.
#ifndef KVPLAN_PASSES
#define KVPLAN_PASSES

include "mlir/Pass/PassBase.td"

def PartitionTensorParallel : Pass<"partition-tensor-parallel", "::mlir::ModuleOp"> {
  let summary = "Splits every layer of @forward between tensor-parallel ranks";
  let description = [{
    Megatron-style tensor parallelism over the module's
    `llm.tensor_parallel` ranks (or the `ranks` option), before
    `--split-prefill-decode`, so that every later pass, the buffer plan and
    the memory bill are one rank's. The IR after it is each rank's program;
    a rank differs from another only in the piece of each weight it holds
    (`#llm.shard` on the weight).

    - Q, K and V projections and the FFN's gate and up projections are cut
      by output features, whole heads at a time: each rank runs
      `num_heads / ranks` query heads. KV heads are cut too when the ranks
      divide them; with fewer KV heads than ranks each rank keeps the KV head
      its query heads read (replicated on `ranks / num_kv_heads` ranks, said
      in the weight's `why`).
    - Attention's output projection and the FFN's down projection are cut by
      input features, so each rank's product is a partial sum, followed by
      an `llm.all_reduce`: two per layer.
    - A mixture of experts (`llm.moe_ffn`) is cut by its experts' features
      (each expert's gate and up by outputs, its down by inputs), the router
      whole, one `llm.all_reduce` after it. A shared expert's FFN is cut as
      the dense one, but its partial rows go into the `llm.moe_ffn` (gated
      alike on every rank) and its own `llm.all_reduce` goes: still two a
      layer.
    - The LM head is cut by vocabulary: each rank's logits are its slice, and
      sampling reduces the ranks' best candidates (runtime/ShardedSampling.h).
      Tied embeddings get an `@output` weight made of `tok_embeddings`.
    - The token embeddings and the norms are replicated.

    Refused with the reason: ranks not a power of two, heads, FFN width or
    vocabulary not divisible by the ranks, KV heads that neither divide nor
    are divided by the ranks, a bias on a row-split projection.
  }];
  let options = [
    Option<"ranks", "ranks", "int64_t", "0",
           "tensor-parallel ranks (0: the module's llm.tensor_parallel)">,
  ];
  let dependentDialects = ["::kvplan::llm::LLMDialect"];
}

def SplitPrefillDecode : Pass<"split-prefill-decode", "::mlir::ModuleOp"> {
  let summary = "Splits @forward into a chunked @prefill and a batched @decode";
  let description = [{
    `@forward` runs one whole sequence of `max_seq_len` tokens. This pass
    replaces it by two entry points with the same body and static row counts:
    `@prefill`, one chunk of `prefill_chunk` prompt tokens of one sequence
    (its positions continue from a run-time offset, so a prompt of any length
    runs as several chunks), and `@decode`, one new token for each of up to
    `max_batch` sequences, each at its own position. In `@decode` every row
    is its own sequence, so its attention becomes `self` until
    `--insert-kv-cache` gives it the history. Row counts come from the
    module's `llm.settings` unless given as options.

    With speculative decoding (`llm.speculate = K` on the module, or the
    `speculate` option) a third entry point, `@verify`, checks K draft
    tokens: K + 1 rows of one sequence at any offset, causal like
    `@prefill`, but with logits for every row (prune-last-token leaves it
    alone).

    With `llm.score_rows = N` on the module (or the `score-rows` option)
    another entry point, `@score`, runs N tokens of one sequence like
    `@verify` (any offset, causal, logits for every row): a prompt's tokens
    a call, for their log-probabilities.

    With the module's `llm.decode_copies` (the settings' list: a cuda model's
    default is 1, 8, 32 below its max batch), or the option `decode-rows`
    (which replaces it, leaving out rows not below the max batch), it also
    makes smaller copies of `@decode`, `@decode.1`, `@decode.8` and
    `@decode.32`, one for each of those row counts: the same body at fewer
    rows, so that what is chosen by rows (`--fuse-matvec`: matrix-vector
    kernels up to 8 rows, tensor-core row groups up to 32; the cuda kernels
    of one row) serves a step of few sequences even in a plan for many.
    Their `llm.entry` is `decode`; the runtime runs a decode step of n
    sequences on the smallest of them that has n rows. `llm.prefill_copies`
    or `prefill-rows` (cuda: 8, 32) does the same for `@prefill`:
    `@prefill.8` and `@prefill.32` serve a chunk of up to that many tokens
    (a short prompt, the part of one past its cached prefix, a prompt's last
    chunk).
  }];
  let options = [
    Option<"chunk", "chunk", "int64_t", "0",
           "rows of @prefill (0: llm.settings.prefill_chunk)">,
    Option<"maxBatch", "max-batch", "int64_t", "0",
           "rows of @decode (0: llm.settings.max_batch)">,
    ListOption<"decodeVariantRows", "decode-rows", "int64_t",
               "rows of smaller copies of @decode, @decode.N (instead of the module's "
               "llm.decode_copies), each below the max batch (those not below it are left out)">,
    ListOption<"prefillVariantRows", "prefill-rows", "int64_t",
               "rows of smaller copies of @prefill, @prefill.N (instead of the module's "
               "llm.prefill_copies), each below the chunk (those not below it are left out)">,
    Option<"speculate", "speculate", "int64_t", "0",
           "draft tokens per @verify call; its rows are speculate + 1 (0: the module's "
           "llm.speculate, else no @verify)">,
    Option<"scoreRows", "score-rows", "int64_t", "0",
           "rows of @score, every row's logits (0: the module's llm.score_rows, else no "
           "@score)">,
  ];
  let dependentDialects = ["::kvplan::llm::LLMDialect"];
}

def InsertKVCache : Pass<"insert-kv-cache", "::mlir::ModuleOp"> {
  let summary = "Makes attention read earlier keys and values from a paged cache";
  let description = [{
    Each entry point gains two arguments: a page table (one row of page
    indices per sequence: one row in @prefill, `max_batch` in @decode) and
    the KV cache (`!llm.kv_cache`, a pool of `kv_pages` pages, which must
    hold one sequence's `max_seq_len / page_size`). Every attention over
    fresh keys and values becomes an `llm.kv_cache_write` of the new keys
    and values at their positions, an `llm.kv_cache_read` of positions
    `[0, position]`, and an attention with mask `cache` over the views.
    Settings come from `llm.settings` unless given as options; a `page-size`
    option cuts the settings' pool (`kv_pages x page_size` tokens) into
    pages of its size, and without settings or `kv-pages` the pool holds
    `max_seq_len` tokens for each row of @decode.

    Where some attention ops slide (`window`) and others read every key, and
    the module gives the sliding layers a pool of their own
    (`llm.window_kv_pages`, or the `window-kv-pages` option), the entry
    points gain a second page table and cache, `window_page_table` and
    `window_kv_cache`, of that many pages: the sliding layers write and read
    there (their `layer` counts within that cache), so a sequence can give
    back the pages behind its window in them while the other layers keep
    every page. Both tables index a sequence's pages by position alike.
  }];
  let options = [
    Option<"pageSize", "page-size", "int64_t", "0",
           "tokens per page (0: llm.settings.page_size)">,
    Option<"maxSeqLen", "max-seq-len", "int64_t", "0",
           "tokens per sequence (0: llm.settings.max_seq_len)">,
    Option<"kvPages", "kv-pages", "int64_t", "0",
           "pages in the pool (0: llm.settings.kv_pages)">,
    Option<"windowKvPages", "window-kv-pages", "int64_t", "0",
           "pages of the sliding layers' own pool where they mix with full ones "
           "(0: llm.window_kv_pages, else one pool)">,
  ];
  let dependentDialects = ["::kvplan::llm::LLMDialect"];
}

def PruneLastToken : Pass<"prune-last-token", "::mlir::func::FuncOp"> {
  let summary = "In @prefill, only the last token's row reaches the LM head";
  let description = [{
    Only the last prompt token's logits are sampled, so @prefill takes the
    last row holding a token (`llm.take_last`) before the LM head, and moves
    that selection up through every row-wise op whose result nothing else
    reads: the final norm, and the last layer's output projection, residual
    adds and FFN. The selection stops at attention, whose keys and values
    every row must still write to the cache. Other functions are unchanged.
  }];
  let dependentDialects = ["::kvplan::llm::LLMDialect"];
}

def FuseRMSNorm : Pass<"fuse-rmsnorm", "::mlir::func::FuncOp"> {
  let summary = "Fuses each residual add with the RMSNorm of its result";
  let description = [{
    `%r = llm.add %a, %b` followed by `llm.rms_norm %r` becomes one
    `llm.add_rms_norm %a, %b` that yields the normed rows and the new
    residual stream in one pass over memory.
  }];
  let dependentDialects = ["::kvplan::llm::LLMDialect"];
}

def FuseFFN : Pass<"fuse-ffn", "::mlir::ModuleOp"> {
  let summary = "Fuses the gate/up projections, and the Q/K/V projections";
  let description = [{
    `llm.swiglu` of two linears of the same rows becomes one linear over the
    concatenated weight (`w13 = concat(w1, w3)`) and `llm.fused_ffn`. Linears
    that read the same rows (Q, K and V) become one linear over their
    concatenated weights (and biases) with one result each. The fused weights
    are new `llm.weight` symbols that name their parts; weights no longer
    read are removed.
  }];
  let dependentDialects = ["::kvplan::llm::LLMDialect"];
}

def FuseRopeKVWrite : Pass<"fuse-rope-kv-write", "::mlir::func::FuncOp"> {
  let summary = "Fuses the RoPE of queries and keys with the cache write of keys and values";
  let description = [{
    For the cuda target. A `llm.kv_cache_write` of rotated keys
    (`llm.rope` read by nothing else) and the `llm.rope` of the queries the
    attention over that cache reads (same positions, same RoPE attributes)
    become one `llm.rope_kv_write` at the write: one kernel rotates both and
    writes the keys and values, and the rotated keys are never stored apart.
    Writes whose keys or queries do not fit are left as they are.

    Where the queries, keys and values are the three results of one fused
    QKV `llm.linear` that nothing else reads, the linear gets one result,
    `[rows, q + k + v]`, which the `llm.rope_kv_write` reads packed: one
    matrix product at any row count (a prefill chunk) instead of three.
  }];
  let dependentDialects = ["::kvplan::llm::LLMDialect"];
}

def FuseMatVec : Pass<"fuse-matvec", "::mlir::func::FuncOp"> {
  let summary = "Folds the norms, SwiGLU and residual adds around a few-row product into it";
  let description = [{
    For the cuda target, where a product of at most `max-rows` rows (a
    decode step, the last prompt row) is a matrix-vector kernel that reads
    the weight once, and each kernel boundary costs a launch and a round
    trip of the activations through memory. Each such `llm.linear` or
    `llm.logits` with f32, bf16 or f16 weights (rows of whole 16-byte
    runs), or int8 or int4 weights over f32 rows (rows of whole runs of 16
    codes), becomes an `llm.matvec` that also does the work of its
    neighbours:
    - an `llm.rms_norm` whose rows only this product reads is its prologue
      (`norm @scale`): the product reads the un-normed rows;
    - an `llm.fused_ffn` of its result is its epilogue (`swiglu`);
    - a residual add of its result (`llm.add`, or the add half of an
      `llm.add_rms_norm`, which leaves an `llm.rms_norm` of the sum for the
      next product's prologue) is its epilogue (`plus %residual`);
    - an `llm.rope_kv_write` of its result packed (or of its three results:
      a fused QKV product that nothing else reads) is its epilogue: the op becomes
      `llm.matvec_rope_kv_write`, which rotates the queries and keys as they
      are made and writes the keys and values straight into the cache;
    - with none of these (Gemma's output and down products, whose results
      are normed before the residual add), it becomes a plain `llm.matvec`.
    A decode layer is then five kernels: QKV with the attention norm, RoPE
    and the cache write, attention, the output projection plus the
    residual, gate|up with the FFN norm and SwiGLU, and down plus the
    residual. Products of int8 or int4 weights take them up to
    `max-tensor-core-rows` rows (a decode step at a batch of 9 to 32, a
    prefill chunk of up to 32 rows: the cuda target's tensor-core kernels
    take them in tiles of 8 rows, reading the weights once), of bf16
    weights up to `max-bf16-rows` (32; 16 from stop 45 until 2026-12-05,
    while a block took one group of 8 rows and read the weights again for
    each: on an H200 a decode step at 32 rows in 4 groups took 1.45 times
    cuBLAS's, at 16 the same). Products of more rows and rows that are not
    whole runs are left as they are.
  }];
  let options = [
    Option<"maxRows", "max-rows", "int64_t", "8",
           "the most rows a product may have to become llm.matvec (the cuda target's matrix-vector kernels take 8)">,
    Option<"maxBf16Rows", "max-bf16-rows", "int64_t", "32",
           "the same for bf16 weights (the cuda target's tensor-core kernels take 32 in tiles of 8)">,
    Option<"maxTensorCoreRows", "max-tensor-core-rows", "int64_t", "32",
           "the same for int8 and int4 weights (the cuda target's tensor-core kernels take 32 in tiles of 8)">,
  ];
  let dependentDialects = ["::kvplan::llm::LLMDialect"];
}

def NarrowActivations : Pass<"narrow-activations", "::mlir::func::FuncOp"> {
  let summary = "Stores tensors that only 16-bit linears read in the weights' type";
  let description = [{
    For the cuda target, where cuBLAS multiplies rows and weights of one
    type. A tensor whose every reader is a `llm.linear`, `llm.logits` or
    `llm.matvec` (one that does not normalise its rows) with bf16 (or f16)
    weights, or a `llm.take_last` whose result is such a tensor, is stored
    in that type when its producer can store it so (embedding, rms_norm,
    add_rms_norm's normed rows, attention, fused_ffn, swiglu, take_last, a
    matvec without an addend): half the bytes written and read, and no
    conversion before the product. A linear with 16-bit weights that still
    reads f32 rows gets an `llm.convert` before it; a matvec reads them as
    they are.
  }];
  let dependentDialects = ["::kvplan::llm::LLMDialect"];
}

def PrefetchWeights : Pass<"prefetch-weights", "::mlir::func::FuncOp"> {
  let summary = "Has each kernel ask L2 ahead for the weights the next products stream";
  let description = [{
    For the cuda target, where a decode step at a few rows is a sequence of
    matrix-vector products that each stream their weight once, and each
    kernel boundary leaves the memory idle while the next kernel's first
    loads start (a memory latency or two, and the previous kernel's tail).
    Weights never change, so a kernel may ask for the next products' ones
    at its start: each op that the cuda target lowers to kernels (not an
    `llm.linear` or `llm.logits`, which are cuBLAS products) gets
    `llm.prefetch`, the rows of the weights of the `llm.matvec` and
    `llm.matvec_rope_kv_write` ops after it (f32, bf16 or f16 weights; in
    order, from each one's first row not yet asked for) that fit in
    `budget-mib` beside the weight the op streams itself and the rows asked
    for already and not yet read. No request reaches past a cuBLAS
    product, and no weight is asked for before the one before it is whole,
    so the weights held in L2 never exceed the budget: the op the rows are
    asked for finds them there. The kernel spreads the requests over its
    blocks (`cp.async.bulk.prefetch.L2` on Hopper); they change no result.
    Set by `kvplan compile --l2-prefetch MIB` (`compile.l2_prefetch_mib`,
    `llm.l2_prefetch_mib` on the module); 0, the default, asks for nothing.

    With 32 MiB and Llama-3.2-1B's shape in bf16, each layer's QKV product
    (12 MiB of its own) asks for all of the output projection's 2,048 rows
    (8 MiB) and the first 3,072 of gate|up's 16,384 (12 MiB), and the
    attention after it for the next 3,072: the QKV product's `llm.prefetch`
    list holds `{rows = array<i64: 0, 2048>, weight =
    @layers.1.attention.wo}` and `{rows = array<i64: 0, 3072>, weight =
    @layers.1.feed_forward.w13}`. The products of gate|up (64 MiB) and down
    (32 MiB) leave no room; the embedding asks for the first layer's.
  }];
  let options = [
    Option<"budgetMib", "budget-mib", "int64_t", "-1",
           "MiB of L2 the asked-for rows and the op's own weight may take "
           "(-1: the module's llm.l2_prefetch_mib, else 0)">,
  ];
  let dependentDialects = ["::kvplan::llm::LLMDialect"];
}

def PlanBuffers : Pass<"plan-buffers", "::mlir::func::FuncOp"> {
  let summary = "Gives every tensor of an entry point a fixed offset in one arena";
  let description = [{
    Computes the live range of every tensor (arguments, results and
    intermediates) over the entry point's op sequence and places each at an
    offset (a multiple of `alignment`) so that tensors alive at the same
    time never overlap; KV-cache values live in the cache, not the arena.
    Records the offsets (`llm.offsets` on ops, `llm.offset` on arguments)
    and the arena size (`llm.arena_size` on the function).
  }];
  let options = [
    Option<"alignment", "alignment", "int64_t", "256", "offset alignment in bytes">,
  ];
  let dependentDialects = ["::kvplan::llm::LLMDialect"];
}

def KVPlanPipeline : Pass<"kvplan-pipeline", "::mlir::ModuleOp"> {
  let summary = "Every kvplan pass in order, as `kvplan compile` runs them";
  let description = [{
    Runs the pipeline of the module's target (its `llm.settings`; cpu
    without settings): for cpu split-prefill-decode, insert-kv-cache,
    prune-last-token, fuse-rmsnorm, fuse-ffn, plan-buffers; for cuda
    fuse-rope-kv-write, fuse-matvec and narrow-activations before
    plan-buffers; partition-tensor-parallel first when the module's
    `llm.tensor_parallel` (or the `tensor-parallel` option) is above 1. The
    rest of the settings ride on the module too (`llm.speculate`, `llm.score_rows`,
    `llm.decode_copies`, `llm.prefill_copies`), so that on the frontend's
    IR (`kvplan dump -o DIR`'s `00-frontend.mlir`) it makes what `kvplan
    compile` made. A `target` option that contradicts the module's settings
    is refused.
  }];
  let options = [
    Option<"target", "target", "std::string", "\"\"",
           "cpu or cuda: whose passes to run (default: the module's llm.settings target)">,
    Option<"tensorParallel", "tensor-parallel", "int64_t", "0",
           "ranks: above 1 runs partition-tensor-parallel first (0: the module's "
           "llm.tensor_parallel)">,
  ];
  let dependentDialects = ["::kvplan::llm::LLMDialect"];
}

#endif // KVPLAN_PASSES
