// A fake cuBLAS for tests/fakegpu: the seven functions the CUDA executor
// opens, with cublasGemmEx computed on the host (f32 accumulation) and
// recorded into graphs like the fake runtime's other work. The executor
// loads it through KVPLAN_CUBLAS_LIBRARY.
#include "tests/fakegpu/FakeCuda.h"

#include <cublas_api.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <vector>

namespace {

float load(const void *p, cudaDataType t, long long i) {
  switch (t) {
  case CUDA_R_32F: return static_cast<const float *>(p)[i];
  case CUDA_R_16BF: return __bfloat162float(static_cast<const __nv_bfloat16 *>(p)[i]);
  case CUDA_R_16F: return __half2float(static_cast<const __half *>(p)[i]);
  default: return 0;
  }
}

} // namespace

extern "C" {

cublasStatus_t cublasCreate_v2(cublasHandle_t *h) {
  *h = reinterpret_cast<cublasHandle_t>(new int(0));
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t h) {
  delete reinterpret_cast<int *>(h);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream_v2(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t, void *, size_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }
const char *cublasGetStatusString(cublasStatus_t s) {
  return s == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS" : "CUBLAS_STATUS_NOT_SUPPORTED";
}

// C(m x n) = op(A)(m x k) B(k x n), column-major; the executor asks for
// op(A) = A^T with A stored k x m (lda), B k x n (ldb), C m x n (ldc).
cublasStatus_t cublasGemmEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m,
                            int n, int k, const void *alpha, const void *A, cudaDataType at,
                            int lda, const void *B, cudaDataType bt, int ldb, const void *beta,
                            void *C, cudaDataType ct, int ldc, cublasComputeType_t compute,
                            cublasGemmAlgo_t) {
  if (ta != CUBLAS_OP_T || tb != CUBLAS_OP_N || ct != CUDA_R_32F || compute != CUBLAS_COMPUTE_32F ||
      lda < k || ldb < k || ldc < m)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  const float a = *static_cast<const float *>(alpha), b = *static_cast<const float *>(beta);
  fakecudaEnqueue([=] {
    float *c = static_cast<float *>(C);
    for (int col = 0; col < n; ++col)
      for (int row = 0; row < m; ++row) {
        float s = 0;
        for (int i = 0; i < k; ++i)
          s += load(A, at, (long long)row * lda + i) * load(B, bt, (long long)col * ldb + i);
        float &out = c[(long long)col * ldc + row];
        out = a * s + (b != 0 ? b * out : 0.0f);
      }
  });
  return CUBLAS_STATUS_SUCCESS;
}

} // extern "C"
