// CPU kernels (OpenMP) of the fused decoder output layer + Gaussian log-likelihood with a per-dimension
// log-variance v; the GEMMs (means = h W^T, and the backward's products) are torch's, called from
// ssvae_fast/cpu/gaussian_loglik_linear.py. With p = exp(-v) (D,) and offset = -0.5 (sum_d v_d + D log 2 pi):
//
//   epilogue   on a block of rows of h W^T, the bias added here:
//              mu[r, d] = (h W^T)[r, d] + b[d],   s[r, d] = p[d] (x[e(r), d] - mu[r, d])
//              ll[r] = offset - 0.5 sum_d s[r, d] (x[e(r), d] - mu[r, d])
//              s written unless nullptr (it may overwrite h W^T in place); e(r) as in the Bernoulli op.
//   backward   with g = dLoss/dll a per-row scalar, one pass over rows: dl = g * s (in place over s or
//              into its own buffer), db[d] = sum_r g[r] s[r, d] and q[d] = sum_r g[r] s[r, d]^2 (the
//              log-variance's gradient is 0.5 exp(v) q - 0.5 sum_r g[r]).
//
// Contiguous arrays. scalar_t is float, double or bf16_t (bfloat16.h; computed in float32); p, ll, g and
// q are in its compute type compute_t<scalar_t> (float32 for bf16_t), the (rows, D) arrays and db in
// scalar_t. Reductions in double over a fixed partition of the rows (deterministic).
#pragma once

#include <cstdint>

#include "bfloat16.h"

namespace ssvae_fast {
namespace cpu {

template <typename scalar_t>
void gaussian_linear_epilogue(const scalar_t* means,                 // (rows, D), h W^T without bias
                              const scalar_t* bias,                  // (D,) or nullptr
                              const compute_t<scalar_t>* precision,  // (D,), p = exp(-v)
                              const scalar_t* x,                     // (N, D)
                              compute_t<scalar_t>* ll,               // (rows,), written
                              scalar_t* s,                           // (rows, D) written, or nullptr; may == means
                              double offset, int64_t row0, int64_t rows, int64_t n_l, int64_t C, int64_t D);

// dl may be s itself (in place) or nullptr; db and q may be nullptr.
template <typename scalar_t>
void gaussian_linear_backward_rows(const scalar_t* s,             // (M, D)
                                   const compute_t<scalar_t>* g,  // (M,)
                                   scalar_t* dl,                  // (M, D): g * s
                                   scalar_t* db,                  // (D,): sum_r g s
                                   compute_t<scalar_t>* q,        // (D,): sum_r g s^2
                                   int64_t M, int64_t D);

}  // namespace cpu
}  // namespace ssvae_fast
