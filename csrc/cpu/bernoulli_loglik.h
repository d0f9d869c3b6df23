// Bernoulli log-likelihood of per-class logits against an x shared by the C class rows of each example.
//
//   ll[b, c]          = sum_d x[b, d] * l[b, c, d] - softplus(l[b, c, d])
//   grad_logits[b,c,d] = g[b, c] * (x[b, d] - sigmoid(l[b, c, d]))
//   grad_x[b, d]       = sum_c g[b, c] * l[b, c, d]
//
// All arrays are contiguous: logits (B, C, D), x (B, D), ll / g (B, C). Reductions accumulate in double
// (for float inputs too); every output element is written by exactly one thread, so results are
// bitwise deterministic whatever the number of OpenMP threads.
#pragma once

#include <cstdint>

namespace ssvae_fast {
namespace cpu {

template <typename scalar_t>
void bernoulli_loglik_forward(const scalar_t* logits,  // (B, C, D) contiguous
                              const scalar_t* x,       // (B, D) contiguous
                              scalar_t* out,           // (B, C) contiguous, written
                              int64_t B, int64_t C, int64_t D);

// grad_x may be nullptr: then only grad_logits is computed.
template <typename scalar_t>
void bernoulli_loglik_backward(const scalar_t* logits,    // (B, C, D) contiguous
                               const scalar_t* x,         // (B, D) contiguous
                               const scalar_t* grad_out,  // (B, C) contiguous, dLoss/dll
                               scalar_t* grad_logits,     // (B, C, D) contiguous, written
                               scalar_t* grad_x,          // (B, D) contiguous, written; or nullptr
                               int64_t B, int64_t C, int64_t D);

// OpenMP's maximum number of threads (1 when built without OpenMP).
int num_threads();

// Whether this module was compiled with OpenMP.
bool has_openmp();

}  // namespace cpu
}  // namespace ssvae_fast
