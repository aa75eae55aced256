// Pass options stand in for llm.settings, and are checked the same way.
// RUN: kvplan-opt %s --insert-kv-cache="page-size=5 max-seq-len=16" -verify-diagnostics

// expected-error @below {{insert-kv-cache needs a page size that divides max_seq_len (got 5 and 16)}}
module {
}
