// CUDA kernels of the Bernoulli log-likelihood of M2's enumerated decoder logits.
//
//   forward   bernoulli_loglik_fwd_kernel       one block per (b, c) row: ll[b,c] = sum_d x*l - softplus(l)
//   backward  bernoulli_loglik_bwd_logits_kernel one block per (b, c) row: dl = g * (x - sigmoid(l))
//             bernoulli_loglik_bwd_x_kernel      one thread per (b, d), loops over c: dx = sum_c g * l
//
// What it saves against the plain-torch formula: x is read in place for all C rows of example b (torch
// materializes x broadcast against (B, C, D) products), and the forward writes B*C numbers instead of
// two (B, C, D) temporaries. The backward reads logits twice (once per kernel); each output element is
// owned by one thread or block and reduced in a fixed order: no atomics, bitwise deterministic.
//
// Numerics: IEEE expf/log1pf (this file is compiled without --use_fast_math), softplus(l) =
// max(l, 0) + log1p(exp(-|l|)), sigmoid on the side where exp cannot overflow; reductions accumulate in
// double for float inputs too (the same contract as the CPU kernels in csrc/cpu/bernoulli_loglik.cpp).
// Offsets are int64: B*C*D may pass 2**31.

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include "bernoulli_loglik.h"
#include "common.cuh"

namespace ssvae_fast {
namespace cuda {
namespace {

constexpr int kBlockSize = 256;           // threads per block in all three kernels
constexpr int64_t kMaxGridX = 1 << 20;    // grid-stride beyond this many blocks (bwd_x kernel)

__device__ __forceinline__ float softplus_correction(float v) { return log1pf(expf(-fabsf(v))); }
__device__ __forceinline__ double softplus_correction(double v) { return log1p(exp(-fabs(v))); }

__device__ __forceinline__ float stable_sigmoid(float v) {
  if (v >= 0.0f) return 1.0f / (1.0f + expf(-v));
  const float e = expf(v);
  return e / (1.0f + e);
}
__device__ __forceinline__ double stable_sigmoid(double v) {
  if (v >= 0.0) return 1.0 / (1.0 + exp(-v));
  const double e = exp(v);
  return e / (1.0 + e);
}

template <typename scalar_t>
__global__ void __launch_bounds__(kBlockSize)
bernoulli_loglik_fwd_kernel(const scalar_t* __restrict__ logits,  // (B, C, D) contiguous
                            const scalar_t* __restrict__ x,       // (B, D) contiguous
                            scalar_t* __restrict__ out,           // (B, C) contiguous
                            int64_t C,                            // classes per example
                            int64_t D) {                          // elements per row
  const int64_t row = blockIdx.x;  // b * C + c
  const scalar_t* l = logits + row * D;
  const scalar_t* xb = x + (row / C) * D;
  double acc = 0.0;
  for (int64_t d = threadIdx.x; d < D; d += kBlockSize) {
    const scalar_t v = l[d];
    acc += double(xb[d]) * double(v) - double(v > scalar_t(0) ? v : scalar_t(0)) -
           double(softplus_correction(v));
  }
  acc = block_reduce_sum<kBlockSize>(acc);
  if (threadIdx.x == 0) out[row] = scalar_t(acc);
}

// VJP of ll[b,c] = sum_d x[b,d] l[b,c,d] - softplus(l[b,c,d]) with g = grad_out = dLoss/dll:
//   grad_logits[b,c,d] = g[b,c] * (x[b,d] - sigmoid(l[b,c,d]))
//   grad_x[b,d]        = sum_c g[b,c] * l[b,c,d]
template <typename scalar_t>
__global__ void __launch_bounds__(kBlockSize)
bernoulli_loglik_bwd_logits_kernel(const scalar_t* __restrict__ logits,    // (B, C, D)
                                   const scalar_t* __restrict__ x,         // (B, D)
                                   const scalar_t* __restrict__ grad_out,  // (B, C)
                                   scalar_t* __restrict__ grad_logits,     // (B, C, D)
                                   int64_t C, int64_t D) {
  const int64_t row = blockIdx.x;  // b * C + c
  const scalar_t g = grad_out[row];
  const scalar_t* l = logits + row * D;
  const scalar_t* xb = x + (row / C) * D;
  scalar_t* gl = grad_logits + row * D;
  for (int64_t d = threadIdx.x; d < D; d += kBlockSize) {
    gl[d] = g * (xb[d] - stable_sigmoid(l[d]));
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kBlockSize)
bernoulli_loglik_bwd_x_kernel(const scalar_t* __restrict__ logits,    // (B, C, D)
                              const scalar_t* __restrict__ grad_out,  // (B, C)
                              scalar_t* __restrict__ grad_x,          // (B, D)
                              int64_t B, int64_t C, int64_t D) {
  const int64_t total = B * D;
  const int64_t stride = int64_t(gridDim.x) * kBlockSize;
  for (int64_t i = int64_t(blockIdx.x) * kBlockSize + threadIdx.x; i < total; i += stride) {
    const int64_t b = i / D;
    const int64_t d = i - b * D;
    const scalar_t* l = logits + b * C * D + d;  // l[b, 0, d]; consecutive threads read consecutive d
    const scalar_t* g = grad_out + b * C;
    double acc = 0.0;
    for (int64_t c = 0; c < C; ++c) acc += double(g[c]) * double(l[c * D]);
    grad_x[i] = scalar_t(acc);
  }
}

void check_rows(const char* kernel_name, int64_t rows) {
  if (rows > int64_t(std::numeric_limits<int>::max())) {
    throw std::invalid_argument(std::string("ssvae_fast._C_cuda: ") + kernel_name +
                                ": B*C = " + std::to_string(rows) +
                                " rows exceed the grid limit 2**31-1");
  }
}

}  // namespace

template <typename scalar_t>
void bernoulli_loglik_forward(const scalar_t* logits, const scalar_t* x, scalar_t* out, int64_t B,
                              int64_t C, int64_t D, std::uintptr_t stream) {
  const int64_t rows = B * C;
  if (rows == 0) return;  // nothing to write; a zero-block grid is a launch error
  check_rows("bernoulli_loglik_fwd_kernel", rows);
  auto cuda_stream = reinterpret_cast<cudaStream_t>(stream);
  bernoulli_loglik_fwd_kernel<scalar_t>
      <<<static_cast<unsigned int>(rows), kBlockSize, 0, cuda_stream>>>(logits, x, out, C, D);
  check_launch("bernoulli_loglik_fwd_kernel");
}

template <typename scalar_t>
void bernoulli_loglik_backward(const scalar_t* logits, const scalar_t* x, const scalar_t* grad_out,
                               scalar_t* grad_logits, scalar_t* grad_x, int64_t B, int64_t C,
                               int64_t D, std::uintptr_t stream) {
  auto cuda_stream = reinterpret_cast<cudaStream_t>(stream);
  const int64_t rows = B * C;
  if (rows > 0 && D > 0) {
    check_rows("bernoulli_loglik_bwd_logits_kernel", rows);
    bernoulli_loglik_bwd_logits_kernel<scalar_t>
        <<<static_cast<unsigned int>(rows), kBlockSize, 0, cuda_stream>>>(logits, x, grad_out,
                                                                          grad_logits, C, D);
    check_launch("bernoulli_loglik_bwd_logits_kernel");
  }
  if (grad_x != nullptr && B * D > 0) {
    const int64_t blocks = std::min<int64_t>((B * D + kBlockSize - 1) / kBlockSize, kMaxGridX);
    bernoulli_loglik_bwd_x_kernel<scalar_t>
        <<<static_cast<unsigned int>(blocks), kBlockSize, 0, cuda_stream>>>(logits, grad_out, grad_x,
                                                                            B, C, D);
    check_launch("bernoulli_loglik_bwd_x_kernel");
  }
}

template void bernoulli_loglik_forward<float>(const float*, const float*, float*, int64_t, int64_t,
                                              int64_t, std::uintptr_t);
template void bernoulli_loglik_forward<double>(const double*, const double*, double*, int64_t,
                                               int64_t, int64_t, std::uintptr_t);
template void bernoulli_loglik_backward<float>(const float*, const float*, const float*, float*,
                                               float*, int64_t, int64_t, int64_t, std::uintptr_t);
template void bernoulli_loglik_backward<double>(const double*, const double*, const double*,
                                                double*, double*, int64_t, int64_t, int64_t,
                                                std::uintptr_t);

}  // namespace cuda
}  // namespace ssvae_fast
