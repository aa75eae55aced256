// A pool too small for one sequence at full context is refused, from the
// kv-pages option as from llm.settings (whose verifier refuses it first).
// RUN: kvplan-opt %s --insert-kv-cache="page-size=4 max-seq-len=16 kv-pages=3" -verify-diagnostics

// expected-error @below {{insert-kv-cache: a pool of 3 pages cannot hold one sequence of 4 pages (max_seq_len 16 / page_size 4); give kv-pages >= 4}}
module {
}
