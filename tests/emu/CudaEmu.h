// A CPU emulator for kvplan's generated CUDA kernels, for tests on machines
// without a GPU. The generated source is compiled by the host compiler with
// this header forced in front (g++ -include CudaEmu.h -x c++): every CUDA
// thread of a block becomes a fiber (ucontext) run by a cooperative
// scheduler on one OS thread, so __syncthreads and warp shuffles have their
// real semantics; __shared__ variables become statics, which is right
// because blocks run one after another. Memory is host memory.
//
// What it checks: indexing, reductions, barriers, the softmax and sampling
// arithmetic, the launch table's grids and arguments. What it cannot: speed,
// coalescing, real concurrency between blocks, the hardware's own float
// rounding of intrinsics (expf here is the C library's).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <vector_types.h>

#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __shared__
#undef __constant__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static
#define __constant__ static const

namespace kvemu {

struct Index {
  unsigned x = 0, y = 0, z = 0;
};

struct Fiber {
  ucontext_t ctx;
  enum State { runnable, atBlockBarrier, atWarpBarrier, done } state = runnable;
  unsigned tid = 0;
};

struct Scheduler {
  ucontext_t main;
  std::vector<Fiber> fibers;
  std::vector<char> stacks;
  static constexpr size_t kStack = 64 * 1024;
  unsigned current = 0, threads = 0, live = 0, blockArrived = 0;
  unsigned warpLive[32] = {}, warpArrived[32] = {};
  unsigned long long slot[1024] = {}; // shuffle exchange, one per thread
  void (*kernel)(const void *) = nullptr;
  const void *args = nullptr;
  Index blockIdx, blockDim, threadIdx;
};
inline Scheduler S;

inline void yieldToScheduler() { swapcontext(&S.fibers[S.current].ctx, &S.main); }

inline void releaseBlock() {
  for (Fiber &f : S.fibers)
    if (f.state == Fiber::atBlockBarrier) f.state = Fiber::runnable;
  S.blockArrived = 0;
}
inline void releaseWarp(unsigned w) {
  for (unsigned t = w * 32; t < S.threads && t < w * 32 + 32; ++t)
    if (S.fibers[t].state == Fiber::atWarpBarrier) S.fibers[t].state = Fiber::runnable;
  S.warpArrived[w] = 0;
}

inline void blockBarrier() {
  Fiber &f = S.fibers[S.current];
  if (++S.blockArrived == S.live) {
    releaseBlock();
    return;
  }
  f.state = Fiber::atBlockBarrier;
  yieldToScheduler();
}

inline void warpBarrier() {
  Fiber &f = S.fibers[S.current];
  const unsigned w = f.tid / 32;
  if (++S.warpArrived[w] == S.warpLive[w]) {
    releaseWarp(w);
    return;
  }
  f.state = Fiber::atWarpBarrier;
  yieldToScheduler();
}

inline void fiberMain() {
  S.kernel(S.args);
  Fiber &f = S.fibers[S.current];
  f.state = Fiber::done;
  --S.live;
  const unsigned w = f.tid / 32;
  --S.warpLive[w];
  // Threads that returned early no longer hold a barrier back.
  if (S.blockArrived && S.blockArrived == S.live) releaseBlock();
  if (S.warpArrived[w] && S.warpArrived[w] == S.warpLive[w]) releaseWarp(w);
  swapcontext(&f.ctx, &S.main);
}

/// Runs every block of a launch, one after another.
inline void launch(void (*kernel)(const void *), const void *args, Index grid, Index block) {
  S.threads = block.x * block.y * block.z;
  if (S.threads == 0 || S.threads > 1024 || block.y != 1 || block.z != 1) {
    std::fprintf(stderr, "kvemu: unsupported block %u x %u x %u\n", block.x, block.y, block.z);
    std::abort();
  }
  S.fibers.resize(S.threads);
  if (S.stacks.size() < S.threads * Scheduler::kStack) S.stacks.resize(S.threads * Scheduler::kStack);
  S.kernel = kernel;
  S.args = args;
  S.blockDim = block;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        S.blockIdx = {x, y, z};
        S.live = S.threads;
        S.blockArrived = 0;
        for (unsigned w = 0; w < 32; ++w) {
          S.warpArrived[w] = 0;
          S.warpLive[w] = w * 32 < S.threads ? std::min(32u, S.threads - w * 32) : 0;
        }
        for (unsigned t = 0; t < S.threads; ++t) {
          Fiber &f = S.fibers[t];
          f.tid = t;
          f.state = Fiber::runnable;
          getcontext(&f.ctx);
          f.ctx.uc_stack.ss_sp = S.stacks.data() + t * Scheduler::kStack;
          f.ctx.uc_stack.ss_size = Scheduler::kStack;
          f.ctx.uc_link = nullptr;
          makecontext(&f.ctx, fiberMain, 0);
        }
        for (;;) {
          bool ran = false, pending = false;
          for (unsigned t = 0; t < S.threads; ++t) {
            Fiber &f = S.fibers[t];
            if (f.state == Fiber::done) continue;
            pending = true;
            if (f.state != Fiber::runnable) continue;
            S.current = t;
            S.threadIdx = {t, 0, 0};
            ran = true;
            swapcontext(&S.main, &f.ctx);
          }
          if (!pending) break;
          if (!ran) {
            std::fprintf(stderr, "kvemu: deadlock in block (%u, %u, %u): threads wait at a "
                                 "barrier others never reach\n", x, y, z);
            std::abort();
          }
        }
      }
}

} // namespace kvemu

// CUDA's names for the block's coordinates: read through the scheduler,
// which sets them before resuming each fiber.
#define threadIdx (kvemu::S.threadIdx)
#define blockIdx (kvemu::S.blockIdx)
#define blockDim (kvemu::S.blockDim)

inline void __syncthreads() { kvemu::blockBarrier(); }

template <class T> inline T __shfl_xor_sync(unsigned, T v, int laneMask) {
  static_assert(sizeof(T) <= 8, "shuffles move up to 8 bytes");
  const unsigned tid = kvemu::S.fibers[kvemu::S.current].tid;
  std::memcpy(&kvemu::S.slot[tid], &v, sizeof(T));
  kvemu::warpBarrier();
  T r;
  std::memcpy(&r, &kvemu::S.slot[(tid & ~31u) | ((tid & 31u) ^ unsigned(laneMask))], sizeof(T));
  kvemu::warpBarrier();
  return r;
}
template <class T> inline T __shfl_up_sync(unsigned, T v, unsigned delta) {
  const unsigned tid = kvemu::S.fibers[kvemu::S.current].tid;
  std::memcpy(&kvemu::S.slot[tid], &v, sizeof(T));
  kvemu::warpBarrier();
  T r = v;
  if ((tid & 31u) >= delta) std::memcpy(&r, &kvemu::S.slot[tid - delta], sizeof(T));
  kvemu::warpBarrier();
  return r;
}

inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
// Fibers never run at once: a plain add is atomic here.
inline unsigned atomicAdd(unsigned *p, unsigned v) {
  unsigned old = *p;
  *p += v;
  return old;
}
inline float atomicAdd(float *p, float v) {
  float old = *p;
  *p += v;
  return old;
}
inline int min(int a, int b) { return a < b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }


#include <math.h>

// tests/emu/CudaEmuLaunch.inc, appended after the generated source, defines
// kvemu_launch(), which the tests find with dlsym.
