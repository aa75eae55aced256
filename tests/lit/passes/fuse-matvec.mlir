// RUN: kvplan-opt %s -split-input-file --fuse-matvec | FileCheck %s
// RUN: kvplan-opt %s -split-input-file '--fuse-matvec=max-rows=1 max-bf16-rows=1 max-tensor-core-rows=1' | FileCheck %s --check-prefix=ONE
// RUN: kvplan-opt %s -split-input-file '--fuse-matvec=max-tensor-core-rows=8 max-bf16-rows=8' | FileCheck %s --check-prefix=QEIGHT
// RUN: kvplan-opt %s -split-input-file --fuse-matvec=max-bf16-rows=16 | FileCheck %s --check-prefix=BF16

// A decode layer of 2 rows: the first norm folds into QKV (three results),
// the o product takes the add of add_rms_norm and leaves its norm to the
// gate|up product, which also takes SwiGLU; down takes the plain add.
// CHECK-LABEL: func.func @layer
// CHECK-SAME: (%[[X:[^:]*]]: tensor<2x16xf32>
// CHECK-NEXT: %[[QKV:.*]]:3 = llm.matvec @wqkv(%[[X]]) norm @attention_norm {eps = 1.000000e-05 : f64} : tensor<2x16xf32> -> tensor<2x16xf32>, tensor<2x8xf32>, tensor<2x8xf32>
// CHECK-NEXT: %[[H:.*]] = llm.matvec @wo(%[[QKV]]#0) plus %[[X]] : tensor<2x16xf32>, tensor<2x16xf32> -> tensor<2x16xf32>
// CHECK-NEXT: %[[G:.*]] = llm.matvec @w13(%[[H]]) norm @ffn_norm swiglu {eps = {{.*}} : f64} : tensor<2x16xf32> -> tensor<2x32xf32>
// CHECK-NEXT: %[[OUT:.*]] = llm.matvec @w2(%[[G]]) plus %[[H]] : tensor<2x32xf32>, tensor<2x16xf32> -> tensor<2x16xf32>
// CHECK-NEXT: return %[[OUT]], %[[QKV]]#1, %[[QKV]]#2
// ONE-LABEL: func.func @layer
// ONE-NOT: llm.matvec
// ONE: return
module {
  llm.weight @attention_norm : tensor<16xf32>
  llm.weight @wqkv : tensor<32x16xbf16>
  llm.weight @wo : tensor<16x16xbf16>
  llm.weight @ffn_norm : tensor<16xf32>
  llm.weight @w13 : tensor<64x16xbf16>
  llm.weight @w2 : tensor<16x32xbf16>
  func.func @layer(%x: tensor<2x16xf32>) -> (tensor<2x16xf32>, tensor<2x8xf32>, tensor<2x8xf32>) {
    %n = llm.rms_norm %x, @attention_norm {eps = 1.000000e-05 : f64} : tensor<2x16xf32>
    %q, %k, %v = llm.linear @wqkv(%n) : tensor<2x16xf32> -> tensor<2x16xf32>, tensor<2x8xf32>, tensor<2x8xf32>
    %o = llm.linear @wo(%q) : tensor<2x16xf32> -> tensor<2x16xf32>
    %normed, %h = llm.add_rms_norm %x, %o, @ffn_norm {eps = 1.000000e-06 : f64} : tensor<2x16xf32>
    %gu = llm.linear @w13(%normed) : tensor<2x16xf32> -> tensor<2x64xf32>
    %g = llm.fused_ffn %gu : tensor<2x64xf32> -> tensor<2x32xf32>
    %d = llm.linear @w2(%g) : tensor<2x32xf32> -> tensor<2x16xf32>
    %out = llm.add %d, %h : tensor<2x16xf32>
    return %out, %k, %v : tensor<2x16xf32>, tensor<2x8xf32>, tensor<2x8xf32>
  }
}

// -----

// What the matrix-vector kernel does not take stays as it is: more rows than
// max-rows (f16: bf16 would be taken up to max-tensor-core-rows), int8 rows
// that are not whole runs of 16 codes (8), rows that are not whole 16-byte
// runs of weights (12 bf16). A norm something else reads too, and an add
// and SwiGLU of a product read twice, stay outside: the products become
// plain matvecs.
// CHECK-LABEL: func.func @left
// CHECK-NEXT: llm.rms_norm
// CHECK-NEXT: llm.linear @wide
// CHECK-NEXT: llm.rms_norm
// CHECK-NEXT: llm.linear @q8
// CHECK-NEXT: llm.rms_norm
// CHECK-NEXT: llm.linear @odd
// CHECK-NEXT: llm.rms_norm
// CHECK-NEXT: llm.matvec @w(%{{.*}}) :
// CHECK-NEXT: llm.matvec @w(%{{.*}}) :
// CHECK-NEXT: llm.add
// CHECK-NEXT: llm.fused_ffn
// CHECK-NEXT: return
module {
  llm.weight @s16 : tensor<16xf32>
  llm.weight @s12 : tensor<12xf32>
  llm.weight @wide : tensor<16x16xf16>
  llm.weight @s8 : tensor<8xf32>
  llm.weight @q8 : tensor<16x8xi8>
  llm.weight @odd : tensor<16x12xbf16>
  llm.weight @w : tensor<16x16xf32>
  func.func @left(%many: tensor<16x16xf32>, %x: tensor<2x16xf32>, %y: tensor<2x12xf32>, %z: tensor<2x8xf32>) -> (tensor<16x16xf32>, tensor<2x16xf32>, tensor<2x16xf32>, tensor<2x16xf32>, tensor<2x16xf32>, tensor<2x8xf32>) {
    %0 = llm.rms_norm %many, @s16 {eps = 1.000000e-05 : f64} : tensor<16x16xf32>
    %1 = llm.linear @wide(%0) : tensor<16x16xf32> -> tensor<16x16xf32>
    %z8 = llm.rms_norm %z, @s8 {eps = 1.000000e-05 : f64} : tensor<2x8xf32>
    %2 = llm.linear @q8(%z8) : tensor<2x8xf32> -> tensor<2x16xf32>
    %3 = llm.rms_norm %y, @s12 {eps = 1.000000e-05 : f64} : tensor<2x12xf32>
    %4 = llm.linear @odd(%3) : tensor<2x12xf32> -> tensor<2x16xf32>
    %5 = llm.rms_norm %x, @s16 {eps = 1.000000e-05 : f64} : tensor<2x16xf32>
    %6 = llm.linear @w(%5) : tensor<2x16xf32> -> tensor<2x16xf32>
    %7 = llm.linear @w(%5) : tensor<2x16xf32> -> tensor<2x16xf32>
    %8 = llm.add %7, %x : tensor<2x16xf32>
    %9 = llm.fused_ffn %7 : tensor<2x16xf32> -> tensor<2x8xf32>
    return %1, %2, %4, %6, %8, %9 : tensor<16x16xf32>, tensor<2x16xf32>, tensor<2x16xf32>, tensor<2x16xf32>, tensor<2x16xf32>, tensor<2x8xf32>
  }
}

// -----

// int8 and int4 weights over f32 rows take the same folds: the norm into an
// int8 product, SwiGLU into an int4 gate|up product, the residual into an
// int8 product whose rows of 48 codes end in half a group.
// CHECK-LABEL: func.func @quantized
// CHECK-SAME: (%[[X:[^:]*]]: tensor<2x16xf32>
// CHECK-NEXT: %[[A:.*]] = llm.matvec @q8(%[[X]]) norm @s16 {eps = 1.000000e-05 : f64} : tensor<2x16xf32> -> tensor<2x48xf32>
// CHECK-NEXT: %[[G:.*]] = llm.matvec @q4(%[[X]]) swiglu : tensor<2x16xf32> -> tensor<2x48xf32>
// CHECK-NEXT: %[[D:.*]] = llm.matvec @half(%[[G]]) plus %[[A]] : tensor<2x48xf32>, tensor<2x48xf32> -> tensor<2x48xf32>
// CHECK-NEXT: return %[[D]]
module {
  llm.weight @s16 : tensor<16xf32>
  llm.weight @q8 : tensor<48x16xi8>
  llm.weight @q4 : tensor<96x16xi4>
  llm.weight @half : tensor<48x48xi8>
  func.func @quantized(%x: tensor<2x16xf32>) -> tensor<2x48xf32> {
    %n = llm.rms_norm %x, @s16 {eps = 1.000000e-05 : f64} : tensor<2x16xf32>
    %a = llm.linear @q8(%n) : tensor<2x16xf32> -> tensor<2x48xf32>
    %gu = llm.linear @q4(%x) : tensor<2x16xf32> -> tensor<2x96xf32>
    %g = llm.fused_ffn %gu : tensor<2x96xf32> -> tensor<2x48xf32>
    %d = llm.linear @half(%g) : tensor<2x48xf32> -> tensor<2x48xf32>
    %out = llm.add %d, %a : tensor<2x48xf32>
    return %out : tensor<2x48xf32>
  }
}

// -----

// RoPE and the cache write of a QKV product's three results become its
// epilogue, with its norm: layer 0's from an rms_norm, layer 1's from the
// add_rms_norm the o product leaves as a norm (folded in place, whichever
// fusion comes first). Where the keys have another reader,
// llm.rope_kv_write stays as it is, after a plain matvec.
// CHECK-LABEL: func.func @rope
// CHECK-SAME: (%[[X:[^:]*]]: tensor<2x16xf32>, %[[C:[^:]*]]: !llm.kv_cache<{{.*}}>, %[[T:[^:]*]]: tensor<2x4xi32>, %[[P:[^:]*]]: tensor<2xi32>)
// CHECK-NEXT: %[[Q0:.*]], %[[C0:.*]] = llm.matvec_rope_kv_write @wqkv(%[[X]]) norm @attention_norm into %[[C]][%[[T]]] at %[[P]] {eps = 1.000000e-05 : f64, head_dim = 8 : i64, layer = 0 : i64, theta = 1.000000e+04 : f64} : tensor<2x16xf32>, <{{.*}}>, tensor<2x4xi32>, tensor<2xi32> -> tensor<2x16xf32>
// CHECK-NEXT: %[[H:.*]] = llm.matvec @wo(%[[Q0]]) plus %[[X]]
// CHECK-NEXT: %[[Q1:.*]], %[[C1:.*]] = llm.matvec_rope_kv_write @wqkv(%[[H]]) norm @ffn_norm into %[[C0]][%[[T]]] at %[[P]] {eps = {{.*}}, head_dim = 8 : i64, layer = 1 : i64, theta = 1.000000e+04 : f64}
// CHECK-NEXT: %[[QKV:.*]]:3 = llm.matvec @wqkv(%[[Q1]]) :
// CHECK-NEXT: %{{.*}}, %{{.*}} = llm.rope_kv_write %[[QKV]]#0, %[[QKV]]#1, %[[QKV]]#2 into %[[C1]]
// CHECK-NEXT: return
// ONE-LABEL: func.func @rope
// ONE-NOT: llm.matvec
// ONE: return
module {
  llm.weight @attention_norm : tensor<16xf32>
  llm.weight @ffn_norm : tensor<16xf32>
  llm.weight @wqkv : tensor<32x16xbf16>
  llm.weight @wo : tensor<16x16xbf16>
  func.func @rope(%x: tensor<2x16xf32>, %cache: !llm.kv_cache<layers = 2, pages = 4, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, %table: tensor<2x4xi32>, %pos: tensor<2xi32>) -> (tensor<2x16xf32>, tensor<2x8xf32>, !llm.kv_cache<layers = 2, pages = 4, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>) {
    %n = llm.rms_norm %x, @attention_norm {eps = 1.000000e-05 : f64} : tensor<2x16xf32>
    %q, %k, %v = llm.linear @wqkv(%n) : tensor<2x16xf32> -> tensor<2x16xf32>, tensor<2x8xf32>, tensor<2x8xf32>
    %qr, %c0 = llm.rope_kv_write %q, %k, %v into %cache[%table] at %pos {head_dim = 8 : i64, layer = 0 : i64, theta = 1.000000e+04 : f64} : (tensor<2x16xf32>, tensor<2x8xf32>, tensor<2x8xf32>), !llm.kv_cache<layers = 2, pages = 4, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<2x4xi32>, tensor<2xi32> -> tensor<2x16xf32>
    %o = llm.linear @wo(%qr) : tensor<2x16xf32> -> tensor<2x16xf32>
    %normed, %h = llm.add_rms_norm %x, %o, @ffn_norm {eps = 1.000000e-06 : f64} : tensor<2x16xf32>
    %q1, %k1, %v1 = llm.linear @wqkv(%normed) : tensor<2x16xf32> -> tensor<2x16xf32>, tensor<2x8xf32>, tensor<2x8xf32>
    %qr1, %c1 = llm.rope_kv_write %q1, %k1, %v1 into %c0[%table] at %pos {head_dim = 8 : i64, layer = 1 : i64, theta = 1.000000e+04 : f64} : (tensor<2x16xf32>, tensor<2x8xf32>, tensor<2x8xf32>), !llm.kv_cache<layers = 2, pages = 4, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<2x4xi32>, tensor<2xi32> -> tensor<2x16xf32>
    %q2, %k2, %v2 = llm.linear @wqkv(%qr1) : tensor<2x16xf32> -> tensor<2x16xf32>, tensor<2x8xf32>, tensor<2x8xf32>
    %qr2, %c2 = llm.rope_kv_write %q2, %k2, %v2 into %c1[%table] at %pos {head_dim = 8 : i64, layer = 1 : i64, theta = 1.000000e+04 : f64} : (tensor<2x16xf32>, tensor<2x8xf32>, tensor<2x8xf32>), !llm.kv_cache<layers = 2, pages = 4, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<2x4xi32>, tensor<2xi32> -> tensor<2x16xf32>
    return %qr2, %k2, %c2 : tensor<2x16xf32>, tensor<2x8xf32>, !llm.kv_cache<layers = 2, pages = 4, page_size = 4, kv_heads = 1, head_dim = 8, element_type = f32>
  }
}

// -----

// int8 and int4 weights take every fold up to 32 rows
// (max-tensor-core-rows: the cuda target's tensor-core kernels take their
// rows in tiles of 8), bf16 ones too (max-bf16-rows, 32): at 24 rows the
// int8 QKV product takes its norm, RoPE and the cache write, the bf16 o the
// residual add and the int4 gate|up its norm and SwiGLU; with
// max-bf16-rows=16 the bf16 o is left, and so is its residual add, and the
// int4 gate|up takes SwiGLU alone; a product of 40 rows is left as it is.
// CHECK-LABEL: func.func @quantRows
// CHECK-SAME: (%[[X:[^:]*]]: tensor<24x16xf32>, %{{[^:]*}}: !llm.kv_cache<{{.*}}>, %{{[^:]*}}: tensor<24x4xi32>, %{{[^:]*}}: tensor<24xi32>, %[[MANY:[^:]*]]: tensor<40x16xf32>)
// CHECK-NEXT: %[[Q:.*]], %{{.*}} = llm.matvec_rope_kv_write @wqkv(%[[X]]) norm @attention_norm
// CHECK-NEXT: %[[H:.*]] = llm.matvec @wo(%[[Q]]) plus %[[X]] : tensor<24x16xf32>, tensor<24x16xf32> -> tensor<24x16xf32>
// CHECK-NEXT: %[[G:.*]] = llm.matvec @w13(%[[H]]) norm @ffn_norm swiglu {eps = {{.*}} : f64} : tensor<24x16xf32> -> tensor<24x32xf32>
// CHECK-NEXT: llm.linear @wo(%[[MANY]]) : tensor<40x16xf32> -> tensor<40x16xf32>
// CHECK-NEXT: return
// BF16-LABEL: func.func @quantRows
// BF16-SAME: (%[[X:[^:]*]]: tensor<24x16xf32>, %[[C:[^:]*]]: !llm.kv_cache<{{.*}}>, %[[T:[^:]*]]: tensor<24x4xi32>, %[[P:[^:]*]]: tensor<24xi32>, %[[MANY:[^:]*]]: tensor<40x16xf32>)
// BF16-NEXT: %[[Q:.*]], %[[C0:.*]] = llm.matvec_rope_kv_write @wqkv(%[[X]]) norm @attention_norm into %[[C]][%[[T]]] at %[[P]] {eps = 1.000000e-05 : f64, head_dim = 8 : i64, layer = 0 : i64, theta = 1.000000e+04 : f64} : tensor<24x16xf32>, <{{.*}}>, tensor<24x4xi32>, tensor<24xi32> -> tensor<24x16xf32>
// BF16-NEXT: %[[O:.*]] = llm.linear @wo(%[[Q]]) : tensor<24x16xf32> -> tensor<24x16xf32>
// BF16-NEXT: %[[N:.*]], %{{.*}} = llm.add_rms_norm %[[X]], %[[O]], @ffn_norm
// BF16-NEXT: %[[G:.*]] = llm.matvec @w13(%[[N]]) swiglu : tensor<24x16xf32> -> tensor<24x32xf32>
// BF16-NEXT: llm.linear @wo(%[[MANY]]) : tensor<40x16xf32> -> tensor<40x16xf32>
// BF16-NEXT: return
// QEIGHT-LABEL: func.func @quantRows
// QEIGHT-NOT: llm.matvec
// QEIGHT: return
module {
  llm.weight @attention_norm : tensor<16xf32>
  llm.weight @ffn_norm : tensor<16xf32>
  llm.weight @wqkv : tensor<32x16xi8>
  llm.weight @wo : tensor<16x16xbf16>
  llm.weight @w13 : tensor<64x16xi4>
  func.func @quantRows(%x: tensor<24x16xf32>, %cache: !llm.kv_cache<layers = 1, pages = 4, page_size = 8, kv_heads = 1, head_dim = 8, element_type = f32>, %table: tensor<24x4xi32>, %pos: tensor<24xi32>, %many: tensor<40x16xf32>) -> (tensor<24x32xf32>, !llm.kv_cache<layers = 1, pages = 4, page_size = 8, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<40x16xf32>) {
    %n = llm.rms_norm %x, @attention_norm {eps = 1.000000e-05 : f64} : tensor<24x16xf32>
    %q, %k, %v = llm.linear @wqkv(%n) : tensor<24x16xf32> -> tensor<24x16xf32>, tensor<24x8xf32>, tensor<24x8xf32>
    %qr, %c0 = llm.rope_kv_write %q, %k, %v into %cache[%table] at %pos {head_dim = 8 : i64, layer = 0 : i64, theta = 1.000000e+04 : f64} : (tensor<24x16xf32>, tensor<24x8xf32>, tensor<24x8xf32>), !llm.kv_cache<layers = 1, pages = 4, page_size = 8, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<24x4xi32>, tensor<24xi32> -> tensor<24x16xf32>
    %o = llm.linear @wo(%qr) : tensor<24x16xf32> -> tensor<24x16xf32>
    %normed, %h = llm.add_rms_norm %x, %o, @ffn_norm {eps = 1.000000e-06 : f64} : tensor<24x16xf32>
    %gu = llm.linear @w13(%normed) : tensor<24x16xf32> -> tensor<24x64xf32>
    %g = llm.fused_ffn %gu : tensor<24x64xf32> -> tensor<24x32xf32>
    %m = llm.linear @wo(%many) : tensor<40x16xf32> -> tensor<40x16xf32>
    return %g, %c0, %m : tensor<24x32xf32>, !llm.kv_cache<layers = 1, pages = 4, page_size = 8, kv_heads = 1, head_dim = 8, element_type = f32>, tensor<40x16xf32>
  }
}
