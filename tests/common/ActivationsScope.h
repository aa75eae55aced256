// Sets the CPU linear's activation mode (runtime/cpu/LinearDot.h) for a
// scope: tests that compare the runtime with the plan's f32 arithmetic
// (references in double, the GPU target) take f32 activations; the int8
// default is tested against its own definition and for its accuracy.
#pragma once

#include "runtime/cpu/LinearDot.h"

namespace kvplan::test {

class ActivationsScope {
public:
  explicit ActivationsScope(cpu::Activations a) : saved(cpu::activeActivations()) {
    cpu::setActiveActivations(a);
  }
  ~ActivationsScope() { cpu::setActiveActivations(saved); }
  ActivationsScope(const ActivationsScope &) = delete;
  ActivationsScope &operator=(const ActivationsScope &) = delete;

private:
  cpu::Activations saved;
};

/// Both modes, the default first.
inline constexpr cpu::Activations kBothActivations[] = {cpu::Activations::reduced,
                                                         cpu::Activations::f32};

} // namespace kvplan::test
