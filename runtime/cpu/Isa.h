// Which vector instructions the CPU kernels use: detected at run time, so
// one binary runs everywhere and uses what each CPU has.
#pragma once

namespace kvplan::cpu {

enum class Isa {
  scalar, // portable C++ (the compiler's baseline vectorisation)
  avx2,   // AVX2 + FMA + F16C
  avx512, // AVX-512 F/BW/VL/DQ
};

const char *isaName(Isa isa);
/// The best level this CPU supports.
Isa detectIsa();
/// The level the kernels use: detectIsa(), or lower when the environment
/// variable KVPLAN_ISA (scalar, avx2, avx512) asks for it. Asking for more
/// than the CPU has is ignored, so a binary never executes an instruction
/// its CPU lacks.
Isa activeIsa();
/// Whether the CPU has AVX512_BF16 (vdpbf16ps), used with the avx512 level
/// (runtime/cpu/LinearDot.h).
bool cpuHasAvx512Bf16();
/// Whether the CPU has AVX512_VNNI (vpdpbusd) with AVX-512 VL, used with
/// the avx512 level (runtime/cpu/LinearDot.h).
bool cpuHasAvx512Vnni();
/// Overrides activeIsa() (tests run every level the CPU has); clamped to
/// detectIsa().
void setActiveIsa(Isa isa);

} // namespace kvplan::cpu
