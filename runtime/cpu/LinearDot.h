// The linears whose activations are rounded to suit the weights:
//  - int8, int4 and mxfp4 weights: activations quantized to int8, and every
//    weight group's products summed in integers (below);
//  - bf16 weights, where the CPU has AVX512_BF16: activations rounded to
//    bf16 and multiplied by vdpbf16ps (LinearBf16Avx512.cpp), as llama.cpp
//    does; each product of two bf16 values is exact in f32 and the sums stay
//    f32, so the price is x's rounding alone: each activation moves by at
//    most 2^-9 of itself.
//
// For the integer dot:
// Each row of x is cut into groups of 32 (kInt8Group = kInt4Group), the
// groups of the weights; group g of row r becomes 32 int8 values q and one
// f32 step d (d = max|x| / 127, q = x / d rounded to nearest, even on ties),
// as llama.cpp's Q8_0 activations. A weight group with scale s (and, for
// int4, minimum m) then contributes
//   int8: s * d * sum(w q)
//   int4: s * d * sum(c q) + m * sum(x)
//   mxfp4: s * d * sum(v q), v the doubled E2M1 values (integers, |v| <= 12)
//          and s the group's step 2^(e - 128)
// where sum(w q) and sum(c q) are exact integers and sum(x) is the group's
// f32 sum of the activations themselves (so int4's minimums meet no
// rounding of x). On AVX2 one vpmaddubsw + vpmaddwd computes a group's 32
// products, where the f32 kernels convert and multiply every weight: this
// is what makes quantized decode reach the memory bound.
//
// The price is x's rounding: each activation moves by at most d / 2, a
// relative 1/254 of its group's largest. Tests state what that does to a
// whole model's logits (LinearDotTest, Int4ModelTest, StoriesTest).
// KVPLAN_ACTIVATIONS=f32 (or setActiveActivations) keeps the f32 activations
// of the float kernels, which compute the plan's arithmetic as written; the
// GPU target always does.
#pragma once

#include "runtime/cpu/Kernels.h"
#include "spec/ModelSpec.h"

#include <string>
#include <vector>

namespace kvplan::cpu {

/// How the linear treats activations against int8, int4, mxfp4 and bf16
/// weights.
enum class Activations {
  f32,     // as they are (the plan's arithmetic)
  reduced, // rounded to suit the weights, as above (the default)
};

const char *activationsName(Activations a);
/// The mode in use: reduced, or what KVPLAN_ACTIVATIONS (f32, reduced) says.
Activations activeActivations();
/// Overrides activeActivations() (tests compare both).
void setActiveActivations(Activations a);
/// Whether bf16 weights meet bf16 activations: the mode is reduced, the
/// kernels in use are AVX-512's (activeIsa()) and the CPU has AVX512_BF16.
bool bf16Dot();
/// What weights of this type meet in the active mode: "int8", "bf16" or
/// "f32" (float weights other than bf16 always meet f32).
const char *activationsFor(DType weights);
/// What a plan's matrices meet: activationsFor its weight type, and where
/// its experts' type meets other activations, ", the experts' " and theirs
/// ("f32, the experts' int8").
std::string activationsFor(const CompileSettings &settings);

/// Rows of x quantized as above. Row r's group g: q[(r * groups + g) * 32 ..
/// + 32) (zero beyond K), d[r * groups + g], sums[r * groups + g]. The three
/// arrays are padded so that a load of 32 bytes or 8 floats from any group
/// stays inside them.
struct QuantizedRows {
  std::vector<int8_t> q;
  std::vector<float> d, sums;
  int64_t groups = 0;
  int64_t K = 0;
};

/// A group holding a NaN or an infinity gets q = 0 and d = NaN: every
/// output it reaches is NaN, as non-finite activations give non-finite
/// outputs with f32 activations, never a finite wrong number.
/// Fills `out` from rows [0, rows) of x ([rows, K]); `withSums` also
/// computes the f32 sums (int4 needs them). q and d are the same bytes on
/// every ISA (x * (1 / d) rounds to nearest-even in f32 whatever the ISA);
/// the sums may differ in their last bits (their additions' order).
void quantizeRowsScalar(const float *x, int64_t rows, int64_t K, bool withSums,
                        QuantizedRows &out);
void quantizeRowsAvx2(const float *x, int64_t rows, int64_t K, bool withSums,
                      QuantizedRows &out);

/// The integer-dot linear (same contract as linear()); w is int8, int4 or
/// mxfp4.
void linearDotScalar(const float *x, int64_t rows, int64_t K, TensorRef w, TensorRef bias,
                     const LinearOutputs &out, int64_t jBegin, int64_t jEnd);
void linearDotAvx2(const float *x, int64_t rows, int64_t K, TensorRef w, TensorRef bias,
                   const LinearOutputs &out, int64_t jBegin, int64_t jEnd);

/// The same kernels with AVX-512 VNNI's vpdpbusd for their products (at
/// 256 bits), bit for bit linearDotAvx2's results; used at the avx512 level
/// where the CPU has AVX512_VNNI.
void linearDotVnni(const float *x, int64_t rows, int64_t K, TensorRef w, TensorRef bias,
                   const LinearOutputs &out, int64_t jBegin, int64_t jEnd);

/// The bf16 dot-product linear (same contract as linear()); w is bf16. Only
/// where bf16Dot() is true.
void linearBf16DotAvx512(const float *x, int64_t rows, int64_t K, TensorRef w, TensorRef bias,
                         const LinearOutputs &out, int64_t jBegin, int64_t jEnd);

} // namespace kvplan::cpu
