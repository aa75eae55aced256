// The integer-dot linear with AVX-512 VNNI (LinearDotImpl.h): the AVX2
// kernels with vpdpbusd for their products (int8: unsigned x bytes against
// the weights as stored, no sign instructions), compiled with -mavx512vl
// -mavx512vnni (and AVX2's flags) and called only when the CPU has them.
// The results are the AVX2 kernels' bit for bit: the same integers, scaled
// and summed in the same order.
#define KVPLAN_DOT_VNNI 1
#include "runtime/cpu/LinearDotImpl.h"

namespace kvplan::cpu {

void linearDotVnni(const float *x, int64_t rows, int64_t K, TensorRef w, TensorRef bias,
                   const LinearOutputs &out, int64_t jBegin, int64_t jEnd) {
  linearDotX86(x, rows, K, w, bias, out, jBegin, jEnd);
}

} // namespace kvplan::cpu
