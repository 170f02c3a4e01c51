// CUDA helpers for the host side of the kernels (included only from .cu files).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "numeric.h"

namespace semvis {

inline void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}
#define SEMVIS_CUDA_CHECK(expr) ::semvis::cuda_check((expr), #expr)
// After a launch: configuration errors surface here, not at the next sync.
#define SEMVIS_CUDA_LAUNCH_CHECK() ::semvis::cuda_check(cudaGetLastError(), "kernel launch")

// Makes `device` current for the scope, restoring the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    SEMVIS_CUDA_CHECK(cudaGetDevice(&prev_));
    if (prev_ != device) SEMVIS_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() { cudaSetDevice(prev_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
};

inline cudaStream_t as_stream(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// CUDA's own 16-bit types are not used: the kernels read raw bits through semvis::half_t /
// bfloat16_t and convert with numeric.h, identically on host and device.

}  // namespace semvis
