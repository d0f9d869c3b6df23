// Shared CUDA helpers: launch checking, warp and block reductions.
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

// Sum over the 32 lanes of a warp; the result is valid in lane 0.
template <typename T>
__device__ __forceinline__ T warp_reduce_sum(T value) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    value += __shfl_down_sync(0xffffffffu, value, offset);
  }
  return value;
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

// Sum over the kBlockSize threads of a block (a fixed tree, so deterministic); valid in thread 0.
// Every thread of the block must call it.
template <int kBlockSize, typename T>
__device__ __forceinline__ T block_reduce_sum(T value) {
  static_assert(kBlockSize % 32 == 0 && kBlockSize <= 1024, "block size must be a multiple of 32");
  constexpr int kWarps = kBlockSize / 32;
  __shared__ T warp_sums[kWarps];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  value = warp_reduce_sum(value);
  if (lane == 0) warp_sums[warp] = value;
  __syncthreads();
  value = (threadIdx.x < kWarps) ? warp_sums[lane] : T(0);
  if (warp == 0) value = warp_reduce_sum(value);
  return value;
}

}  // namespace cuda
}  // namespace ssvae_fast
