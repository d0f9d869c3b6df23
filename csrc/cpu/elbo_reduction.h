// CPU kernels of M2's ELBO reduction (docs/design.md section 1): per-example losses from the per-(example,
// class) terms, and their backward, one pass each.
//
// Rows 0..n_l-1 of logits_y are the labelled examples, rows n_l..n_l+n_u-1 the unlabelled ones.
// With log q = log_softmax(logits_y) (stable: max subtracted), q = exp(log q), log C = -log p(y):
//
//   labelled    loss[i]       = kl_l[i] - ll_l[i] + log C - alpha * log q[i, y[i]]
//   unlabelled  t[j, c]       = kl_u[j, c] - ll_u[j, c] + log C + log q[n_l + j, c]
//               loss[n_l + j] = f_j = sum_c q[n_l + j, c] t[j, c]
//
// VJP (g = dLoss/dloss):
//   labelled    dll_l = -g,  dkl_l = g,  dlogits[i, c] = -alpha g (1[c == y] - q[i, c])
//   unlabelled  dll_u = -g q,  dkl_u = g q,  dlogits[n_l + j, c] = g q_c (t_c - f_j)
//     (d(sum_c q_c L_c + q_c log q_c)/dlogit_k = q_k (L_k + log q_k - f), as d q_c / d logit_k =
//      q_c (1[c == k] - q_k) and sum_c q_c (1[c == k] - q_k) = 0.)
//
// Everything is computed in double (float inputs too) and rounded once. Rows are independent. scalar_t is
// float, double or bf16_t (bfloat16.h); the losses and their gradient are in its compute type
// compute_t<scalar_t> (float32 for bf16_t: the reduction's result stays in float32), the other arrays in
// scalar_t.
#pragma once

#include <cstdint>

#include "bfloat16.h"

namespace ssvae_fast {
namespace cpu {

template <typename scalar_t>
void elbo_reduction_forward(const scalar_t* logits_y,   // (n_l + n_u, C)
                            const int64_t* y_l,         // (n_l,) in [0, C)
                            const scalar_t* ll_l,       // (n_l,)
                            const scalar_t* kl_l,       // (n_l,)
                            const scalar_t* ll_u,       // (n_u, C)
                            const scalar_t* kl_u,       // (n_u, C)
                            compute_t<scalar_t>* loss,  // (n_l + n_u,), written
                            int64_t n_l, int64_t n_u, int64_t C, double alpha);

// Any of the outputs may be nullptr (not computed).
template <typename scalar_t>
void elbo_reduction_backward(const compute_t<scalar_t>* grad,  // (n_l + n_u,)
                             const scalar_t* logits_y,         // (n_l + n_u, C)
                             const int64_t* y_l,               // (n_l,)
                             const scalar_t* ll_u,             // (n_u, C)
                             const scalar_t* kl_u,             // (n_u, C)
                             scalar_t* grad_logits_y,          // (n_l + n_u, C)
                             scalar_t* grad_ll_l,              // (n_l,)
                             scalar_t* grad_kl_l,              // (n_l,)
                             scalar_t* grad_ll_u,              // (n_u, C)
                             scalar_t* grad_kl_u,              // (n_u, C)
                             int64_t n_l, int64_t n_u, int64_t C, double alpha);

}  // namespace cpu
}  // namespace ssvae_fast
