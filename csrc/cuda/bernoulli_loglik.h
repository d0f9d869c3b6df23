// Host launchers of the CUDA Bernoulli log-likelihood kernels (csrc/cuda/bernoulli_loglik.cu).
// Plain C++ declarations: no CUDA headers, so csrc/bindings_cuda.cpp compiles with the host compiler.
// Pointers are device pointers; `stream` is a cudaStream_t passed as an integer (0: legacy default).
// Launch failures throw std::runtime_error naming the kernel.
#pragma once

#include <cstdint>

namespace ssvae_fast {
namespace cuda {

// ll[b, c] = sum_d x[b, d] * l[b, c, d] - softplus(l[b, c, d]); logits (B, C, D), x (B, D), out (B, C).
template <typename scalar_t>
void bernoulli_loglik_forward(const scalar_t* logits, const scalar_t* x, scalar_t* out, int64_t B,
                              int64_t C, int64_t D, std::uintptr_t stream);

// grad_logits[b, c, d] = g[b, c] * (x[b, d] - sigmoid(l[b, c, d])); grad_x[b, d] = sum_c g[b, c] * l[b, c, d]
// (skipped when grad_x is nullptr).
template <typename scalar_t>
void bernoulli_loglik_backward(const scalar_t* logits, const scalar_t* x, const scalar_t* grad_out,
                               scalar_t* grad_logits, scalar_t* grad_x, int64_t B, int64_t C,
                               int64_t D, std::uintptr_t stream);

}  // namespace cuda
}  // namespace ssvae_fast
