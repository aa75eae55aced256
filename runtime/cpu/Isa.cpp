// ISA detection and selection.
#include "runtime/cpu/Isa.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace kvplan::cpu {

const char *isaName(Isa isa) {
  switch (isa) {
  case Isa::scalar: return "scalar";
  case Isa::avx2: return "avx2";
  case Isa::avx512: return "avx512";
  }
  return "?";
}

Isa detectIsa() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c"))
    return Isa::avx2;
#endif
  return Isa::scalar;
}

// An AVX-512 extension, asked once: the linear's dispatch asks on every
// call. (__builtin_cpu_supports takes only a literal, hence the macro.)
#if defined(__x86_64__) || defined(__i386__)
#define KVPLAN_AVX512_HAS(feature) (detectIsa() == Isa::avx512 && __builtin_cpu_supports(feature))
#else
#define KVPLAN_AVX512_HAS(feature) false
#endif

bool cpuHasAvx512Bf16() {
  static const bool has = KVPLAN_AVX512_HAS("avx512bf16");
  return has;
}

bool cpuHasAvx512Vnni() {
  static const bool has = KVPLAN_AVX512_HAS("avx512vnni");
  return has;
}

namespace {
std::atomic<int> chosen{-1};

Isa fromEnvironment() {
  Isa best = detectIsa();
  const char *env = std::getenv("KVPLAN_ISA");
  if (!env) return best;
  Isa want = best;
  if (!std::strcmp(env, "scalar")) want = Isa::scalar;
  else if (!std::strcmp(env, "avx2")) want = Isa::avx2;
  else if (!std::strcmp(env, "avx512")) want = Isa::avx512;
  return int(want) < int(best) ? want : best;
}
} // namespace

Isa activeIsa() {
  int v = chosen.load(std::memory_order_relaxed);
  if (v < 0) {
    v = int(fromEnvironment());
    chosen.store(v, std::memory_order_relaxed);
  }
  return Isa(v);
}

void setActiveIsa(Isa isa) {
  Isa best = detectIsa();
  chosen.store(int(int(isa) < int(best) ? isa : best), std::memory_order_relaxed);
}

} // namespace kvplan::cpu
