// RUN: kvplan-opt %s -split-input-file --prefetch-weights=budget-mib=4 | FileCheck %s
// RUN: kvplan-opt %s -split-input-file --prefetch-weights | FileCheck %s --check-prefix=OFF

// With 4 MiB: the norm asks for all of @a (2 MiB), all of @b (1 MiB) and
// @c's first MiB; @a's product streams 2 MiB itself beside the 2 held for
// later, so it asks for nothing; the add, with 2 MiB held, asks for @c's
// next 2 MiB; @b's product streams 1 MiB beside 3 held, @c's 8 MiB and
// @d's 8: none has room.
// CHECK-LABEL: func.func @layer
// CHECK: llm.rms_norm {{.*}}llm.prefetch = [{rows = array<i64: 0, 1024>, weight = @a}, {rows = array<i64: 0, 512>, weight = @b}, {rows = array<i64: 0, 512>, weight = @c}]}
// CHECK-NEXT: llm.matvec @a({{.*}}) : tensor<1x1024xf32> -> tensor<1x1024xf32>
// CHECK-NEXT: llm.add {{.*}} {llm.prefetch = [{rows = array<i64: 512, 1536>, weight = @c}]}
// CHECK-NEXT: llm.matvec @b({{.*}}) : tensor
// CHECK-NEXT: llm.matvec @c({{.*}}) : tensor
// CHECK-NEXT: llm.matvec @d({{.*}}) : tensor
// OFF-NOT: llm.prefetch
llm.weight @g : tensor<1024xf32>
llm.weight @a : tensor<1024x1024xbf16>
llm.weight @b : tensor<512x1024xbf16>
llm.weight @c : tensor<4096x1024xbf16>
llm.weight @d : tensor<1024x4096xbf16>
func.func @layer(%x: tensor<1x1024xf32>) -> tensor<1x1024xf32> {
  %n = llm.rms_norm %x, @g {eps = 1.0e-5 : f64} : tensor<1x1024xf32>
  %y = llm.matvec @a(%n) : tensor<1x1024xf32> -> tensor<1x1024xf32>
  %s = llm.add %x, %y : tensor<1x1024xf32>
  %o = llm.matvec @b(%s) : tensor<1x1024xf32> -> tensor<1x512xf32>
  %h = llm.matvec @c(%s) : tensor<1x1024xf32> -> tensor<1x4096xf32>
  %z = llm.matvec @d(%h) : tensor<1x4096xf32> -> tensor<1x1024xf32>
  return %z : tensor<1x1024xf32>
}

// -----

// No request reaches past a cuBLAS product (llm.linear) or a product of
// quantized weights (whose scales lie apart), nor asks for more than 4
// weights; f32 rows are 4 bytes an element; a weight asked for whole is
// not asked for again. The linear and the int8 product ask for nothing.
// CHECK-LABEL: func.func @barriers
// CHECK: llm.rms_norm {{.*}}llm.prefetch = [{rows = array<i64: 0, 256>, weight = @p}]}
// CHECK-NEXT: llm.matvec @p({{.*}}) : tensor
// CHECK-NEXT: llm.linear @l({{.*}}) : tensor
// CHECK-NEXT: llm.add {{.*}}llm.prefetch = [{rows = array<i64: 0, 256>, weight = @p}, {rows = array<i64: 0, 256>, weight = @q}, {rows = array<i64: 0, 256>, weight = @r}, {rows = array<i64: 0, 256>, weight = @s}]}
// CHECK-NEXT: llm.matvec @p({{.*}}) {llm.prefetch = [{rows = array<i64: 0, 256>, weight = @t}]}
// CHECK-NEXT: llm.matvec @q({{.*}}) : tensor
// CHECK-NEXT: llm.matvec @r({{.*}}) : tensor
// CHECK-NEXT: llm.matvec @s({{.*}}) : tensor
// CHECK-NEXT: llm.add %{{[^{]*}} : tensor
// CHECK-NEXT: llm.matvec @t({{.*}}) : tensor
// CHECK-NEXT: llm.matvec @i8({{.*}}) : tensor
// CHECK-NEXT: llm.add {{.*}}llm.prefetch = [{rows = array<i64: 0, 256>, weight = @p}]}
llm.weight @g : tensor<256xf32>
llm.weight @p : tensor<256x256xf32>
llm.weight @q : tensor<256x256xf32>
llm.weight @r : tensor<256x256xf32>
llm.weight @s : tensor<256x256xf32>
llm.weight @t : tensor<256x256xf32>
llm.weight @i8 : tensor<256x256xi8>
llm.weight @l : tensor<256x256xf32>
func.func @barriers(%x: tensor<1x256xf32>) -> tensor<1x256xf32> {
  %n = llm.rms_norm %x, @g {eps = 1.0e-5 : f64} : tensor<1x256xf32>
  %a = llm.matvec @p(%n) : tensor<1x256xf32> -> tensor<1x256xf32>
  %b = llm.linear @l(%a) : tensor<1x256xf32> -> tensor<1x256xf32>
  %c = llm.add %x, %b : tensor<1x256xf32>
  %d = llm.matvec @p(%c) : tensor<1x256xf32> -> tensor<1x256xf32>
  %e = llm.matvec @q(%d) : tensor<1x256xf32> -> tensor<1x256xf32>
  %f = llm.matvec @r(%e) : tensor<1x256xf32> -> tensor<1x256xf32>
  %g2 = llm.matvec @s(%f) : tensor<1x256xf32> -> tensor<1x256xf32>
  %h = llm.add %x, %g2 : tensor<1x256xf32>
  %i = llm.matvec @t(%h) : tensor<1x256xf32> -> tensor<1x256xf32>
  %j = llm.matvec @i8(%i) : tensor<1x256xf32> -> tensor<1x256xf32>
  %k = llm.add %x, %j : tensor<1x256xf32>
  %m = llm.matvec @p(%k) : tensor<1x256xf32> -> tensor<1x256xf32>
  return %m : tensor<1x256xf32>
}
