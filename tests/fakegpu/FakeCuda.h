// Controls of the fake CUDA runtime (tests/fakegpu/FakeCudart.cpp).
#pragma once

#include <functional>

struct FakeCudaCounters {
  long long launches = 0, copies = 0, captures = 0, graphLaunches = 0, deviceAllocations = 0;
  long long dependentLaunches = 0; // launches a programmatic dependent (cudaLaunchKernelExC)
  long long deviceBytes = 0, pinnedBytes = 0; // allocated now
};

/// A byte range a kernel asked L2 for (kvemu::Prefetch's layout).
struct FakeCudaPrefetch {
  const void *start;
  long long bytes;
};

extern "C" {
/// `count` devices of compute capability major.minor with `freeBytes` free;
/// resets the counters.
void fakecuda_configure(int count, int major, int minor, long long freeBytes);
FakeCudaCounters fakecuda_counters();
/// Addresses only: device allocations reserve address space and copies to
/// and from them do nothing, libraries load no code. For counting what an
/// executor allocates for models too large to hold.
void fakecuda_set_dry(int dry);
/// Every run of the kernel named `name` faults (an illegal address) from now
/// on, the error coming back from the next synchronisation; "" or null: none.
void fakecuda_fail_kernel(const char *name);
/// The byte ranges the kernels run since the last call asked L2 for, in the
/// order asked, into out[0..max); returns how many there were (and forgets
/// them).
size_t fakecuda_take_prefetched(FakeCudaPrefetch *out, size_t max);
}

/// Runs `work` now, or records it while a stream is being captured.
void fakecudaEnqueue(std::function<void()> work);
