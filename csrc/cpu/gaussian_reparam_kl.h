// CPU kernels (OpenMP) of the Gaussian head epilogue of M2's encoder: reparameterization + KL.
//
//   forward   head = [mu, logvar] (R, 2Z), eps (R, Z):
//             z[r, k]  = mu[r, k] + exp(logvar[r, k] / 2) * eps[r, k]
//             kl[r]    = 0.5 * sum_k (mu^2 + exp(logvar) - 1 - logvar)[r, k]
//   backward  with gz = dLoss/dz (or zero), gk = dLoss/dkl (or zero), std = exp(logvar / 2):
//             dmu      = gz + gk * mu
//             dlogvar  = 0.5 * gz * eps * std + 0.5 * gk * (exp(logvar) - 1)
//             deps     = gz * std
//
// All arrays contiguous. scalar_t is float, double or bf16_t (bfloat16.h; computed in float32); kl and
// grad_kl are in its compute type compute_t<scalar_t> (float32 for bf16_t: they feed no GEMM), z and the
// gradients in scalar_t. kl accumulates in double. Rows are independent: deterministic.
#pragma once

#include <cstdint>

#include "bfloat16.h"

namespace ssvae_fast {
namespace cpu {

template <typename scalar_t>
void gaussian_reparam_kl_forward(const scalar_t* head,     // (R, 2Z): [mu, logvar] per row
                                 const scalar_t* eps,      // (R, Z)
                                 scalar_t* z,              // (R, Z), written
                                 compute_t<scalar_t>* kl,  // (R,), written
                                 int64_t R, int64_t Z);

template <typename scalar_t>
void gaussian_reparam_kl_backward(const scalar_t* head,                // (R, 2Z)
                                  const scalar_t* eps,                 // (R, Z)
                                  const scalar_t* grad_z,              // (R, Z), or nullptr (zero)
                                  const compute_t<scalar_t>* grad_kl,  // (R,), or nullptr (zero)
                                  scalar_t* grad_head,                 // (R, 2Z) written, or nullptr
                                  scalar_t* grad_eps,                  // (R, Z) written, or nullptr
                                  int64_t R, int64_t Z);

}  // namespace cpu
}  // namespace ssvae_fast
