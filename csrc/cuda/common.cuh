// Shared CUDA helpers: launch checking and warp reductions.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace ssvae_fast {
namespace cuda {

// Throws std::runtime_error naming `kernel_name` when the last launch failed (bad configuration,
// no kernel image for this GPU, a sticky error from an earlier kernel, ...). Python sees RuntimeError.
inline void check_launch(const char* kernel_name) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("ssvae_fast._C_cuda: ") + kernel_name +
                             " failed to launch: " + cudaGetErrorName(err) + ": " +
                             cudaGetErrorString(err));
  }
}

// Sum over the 32 lanes of a warp by a butterfly (XOR shuffles); every lane gets the same bits (each
// step adds a pair in both lanes, and a + b == b + a exactly), in a fixed order: deterministic.
// All 32 lanes must call it.
template <typename T>
__device__ __forceinline__ T warp_allreduce_sum(T value) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    value += __shfl_xor_sync(0xffffffffu, value, offset);
  }
  return value;
}

// Maximum over the 32 lanes of a warp (fmax: a NaN lane is ignored), valid in every lane.
template <typename T>
__device__ __forceinline__ T warp_allreduce_max(T value) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    value = fmax(value, __shfl_xor_sync(0xffffffffu, value, offset));
  }
  return value;
}

}  // namespace cuda
}  // namespace ssvae_fast
