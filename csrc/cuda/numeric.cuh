// Numerics shared by the `cuda` backend's kernels: the compute type of each element type, conversions,
// a quiet NaN, the stable softplus and sigmoid, and the host-side dispatch over ScalarType.
//
// Compute type: float for float, __nv_bfloat16 and __half; double for double. Every kernel loads with
// to_compute(), computes, and stores with from_compute<scalar_t>() (round to nearest for the 16-bit
// types). IEEE expf/log1pf/exp/log1p: the project compiles without --use_fast_math.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "scalar_type.h"

namespace ssvae_fast {
namespace cuda {

template <typename scalar_t>
struct ComputeType {
  using type = float;
};
template <>
struct ComputeType<double> {
  using type = double;
};
template <typename scalar_t>
using compute_t = typename ComputeType<scalar_t>::type;

__device__ __forceinline__ float to_compute(float v) { return v; }
__device__ __forceinline__ double to_compute(double v) { return v; }
__device__ __forceinline__ float to_compute(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_compute(__nv_bfloat16 v) { return __bfloat162float(v); }

// from_compute<scalar_t>(v): v (in compute_t<scalar_t>) rounded to scalar_t.
template <typename scalar_t>
struct FromCompute;
template <>
struct FromCompute<float> {
  __device__ __forceinline__ static float apply(float v) { return v; }
};
template <>
struct FromCompute<double> {
  __device__ __forceinline__ static double apply(double v) { return v; }
};
template <>
struct FromCompute<__half> {
  __device__ __forceinline__ static __half apply(float v) { return __float2half_rn(v); }
};
template <>
struct FromCompute<__nv_bfloat16> {
  __device__ __forceinline__ static __nv_bfloat16 apply(float v) { return __float2bfloat16_rn(v); }
};
template <typename scalar_t>
__device__ __forceinline__ scalar_t from_compute(compute_t<scalar_t> v) {
  return FromCompute<scalar_t>::apply(v);
}

template <typename acc_t>
__device__ __forceinline__ acc_t quiet_nan();
template <>
__device__ __forceinline__ float quiet_nan<float>() { return __int_as_float(0x7fc00000); }
template <>
__device__ __forceinline__ double quiet_nan<double>() { return __longlong_as_double(0x7ff8000000000000LL); }

// softplus(v) = log(1 + exp(v)) = max(v, 0) + log1p(exp(-|v|)): exp never overflows, exact for every
// finite v (torch.logaddexp(v, 0), the reference's softplus, uses the same formula). NaN propagates.
__device__ __forceinline__ float stable_softplus(float v) {
  return (v > 0.0f ? v : 0.0f) + log1pf(expf(-fabsf(v)));
}
__device__ __forceinline__ double stable_softplus(double v) {
  return (v > 0.0 ? v : 0.0) + log1p(exp(-fabs(v)));
}

// sigmoid(v) = softplus'(v), evaluated on the side where exp cannot overflow. NaN propagates.
__device__ __forceinline__ float stable_sigmoid(float v) {
  const float e = expf(-fabsf(v));
  return v >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
}
__device__ __forceinline__ double stable_sigmoid(double v) {
  const double e = exp(-fabs(v));
  return v >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}

// Calls f(scalar_t{}) with scalar_t the C++ type of `dtype` (host side, in the launchers).
template <typename F>
void dispatch_scalar_type(ScalarType dtype, const char* op_name, F&& f) {
  switch (dtype) {
    case ScalarType::kFloat32: return f(float{});
    case ScalarType::kFloat64: return f(double{});
    case ScalarType::kBFloat16: return f(__nv_bfloat16{});
    case ScalarType::kFloat16: return f(__half{});
  }
  throw std::invalid_argument(std::string("ssvae_fast._C_cuda.") + op_name + ": unknown ScalarType");
}

// Blocks for a grid-stride loop over `total` items with `per_block` items per block per pass: enough to
// fill the GPU many times over, capped so that any size fits the grid (the loop covers the rest).
inline unsigned int grid_stride_blocks(long long total, long long per_block) {
  const long long kMaxBlocks = 1LL << 20;
  long long blocks = (total + per_block - 1) / per_block;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned int>(blocks);
}

}  // namespace cuda
}  // namespace ssvae_fast
