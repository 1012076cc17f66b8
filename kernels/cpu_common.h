// What the C++ CPU kernels (kernels/*/cpu_chunk.cpp) share: row-major gemm over the BLAS that
// libtorch_cpu exports, exponentials flushed to zero far below 1, and the guards a task runs
// under (denormals flushed, BLAS on the task's own thread). Included by each kernel's single
// source file; the build folder's key covers this file too (kernels/cpu_build.py).
#pragma once

#include <omp.h>

#include <cmath>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

// Fortran BLAS single-precision gemm (MKL's, exported by libtorch_cpu on x86 builds).
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n,
                       const int* k, const float* alpha, const float* a, const int* lda,
                       const float* b, const int* ldb, const float* beta, float* c,
                       const int* ldc);
// MKL's per-thread thread count, C interface (exported by libtorch_cpu where its BLAS is MKL;
// the lower-case mkl_set_num_threads_local there is the Fortran one, taking an int*). Weak, so
// a torch with another BLAS loads the kernels too: the pointer is then null.
extern "C" int MKL_Set_Num_Threads_Local(int nthreads) __attribute__((weak));

namespace anatomy_cpu {

// Exponents below this give exactly 0 (exp(-80) ~ 2e-35, below every weight that matters).
constexpr float FLUSH_BELOW = -80.0f;

// Row-major C[m, n] = alpha op(A) op(B) + beta C (op: optional transpose), A, B, C strided by
// their leading dimensions. Column-major BLAS computes C^T = op(B)^T op(A)^T.
inline void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a,
                 int lda, const float* b, int ldb, float beta, float* c, int ldc) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {  // C = beta C
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
  const char ta = trans_b ? 'T' : 'N', tb = trans_a ? 'T' : 'N';
  sgemm_(&ta, &tb, &n, &m, &k, &alpha, b, &ldb, a, &lda, &beta, c, &ldc);
}

// exp(x), 0 below FLUSH_BELOW.
inline float flushed_exp(float x) { return x < FLUSH_BELOW ? 0.0f : std::exp(x); }

// out[i] = exp(x[i]), 0 below FLUSH_BELOW (vectorised by the compiler).
inline void flushed_exp(const float* x, float* out, int count) {
#pragma omp simd
  for (int i = 0; i < count; ++i) out[i] = x[i] < FLUSH_BELOW ? 0.0f : std::exp(x[i]);
}

// Sets the flush-to-zero and denormals-are-zero bits for the life of the object.
struct FlushDenormals {
#if defined(__SSE__)
  unsigned int saved = _mm_getcsr();
  FlushDenormals() { _mm_setcsr(saved | 0x8040); }
  ~FlushDenormals() { _mm_setcsr(saved); }
#endif
};

// Runs the BLAS calls of one task on the calling thread only, for the life of the object.
// The kernels' parallelism is across (batch, head) tasks on torch's threads. With a single
// task, at::parallel_for runs it on the caller outside any OpenMP parallel region, and MKL
// then split every small per-chunk gemm across its own threads: a barrier per gemm, thousands
// per call (2x slower beside one busy process; a T = 65,536 test ran for over 15 minutes at a
// lower priority than that process). Inside a parallel region MKL already keeps each call on
// its thread, and setting the count there looked slower (delta rule, B*H = 8, T = 4096:
// 71 and 78 ms against 47 and 51 ms without, a noisy machine), so the guard acts only outside.
struct SequentialBlas {
  const bool active = MKL_Set_Num_Threads_Local != nullptr && !omp_in_parallel();
  const int saved = active ? MKL_Set_Num_Threads_Local(1) : 0;
  ~SequentialBlas() {
    if (active) MKL_Set_Num_Threads_Local(saved);  // 0: back to the global count
  }
};

}  // namespace anatomy_cpu
