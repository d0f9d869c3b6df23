// CPU kernels (OpenMP) of the fused decoder output layer + Bernoulli log-likelihood; the GEMMs
// (logits = h W^T + b, and the backward's products) are torch's, called from
// ssvae_fast/cpu/bernoulli_loglik_linear.py. What runs here is what torch would do in several elementwise
// passes:
//
//   epilogue   on a block of rows of h W^T (a chunk still in cache, or the whole (M, D) buffer), with
//              the bias added here (torch's addmm would first copy the broadcast bias into its output):
//              l[r, d] = (h W^T)[r, d] + b[d]
//              ll[r] = sum_d x[e(r), d] l[r, d] - softplus(l[r, d])
//              s[r, d] = x[e(r), d] - sigmoid(l[r, d])           (optional; may overwrite h W^T in place)
//              where e(r) = r for the n_l labelled rows r < n_l, n_l + (r - n_l) / C after them
//   backward   with g = dLoss/dll a per-row scalar, one pass over rows computes any subset of
//              dl = g * s  (in place over s, or into its own buffer: `g_h` with h = s)
//              db[d] = sum_r g[r] s[r, d]
//              g * h, or g * v in place for a given (M, H) v
//              the launcher forms dl and db in one pass, then dW = dl^T h and dh = dl W (torch GEMMs).
//
// All arrays are contiguous (row r of logits / s at r * D). scalar_t is float, double or bf16_t
// (bfloat16.h; computed in float32); the per-row ll and g are in its compute type compute_t<scalar_t>
// (float32 for bf16_t: they feed no GEMM), the (rows, D) and (M, H) arrays and db in scalar_t.
// Reductions accumulate in double. Deterministic: the epilogue's rows are independent; db sums fixed
// blocks of rows (a partition that depends only on M) and then the blocks in order.
#pragma once

#include <cstdint>

#include "bfloat16.h"

namespace ssvae_fast {
namespace cpu {

// Rows r = 0..rows-1 of the block are global rows row0 + r (example e(row0 + r)).
template <typename scalar_t>
void bernoulli_linear_epilogue(const scalar_t* logits,   // (rows, D), the block's logits without bias
                               const scalar_t* bias,     // (D,), added here; or nullptr
                               const scalar_t* x,        // (N, D), N > e(row0 + rows - 1)
                               compute_t<scalar_t>* ll,  // (rows,), written
                               scalar_t* s,              // (rows, D) written, or nullptr; may == logits
                               int64_t row0, int64_t rows, int64_t n_l, int64_t C, int64_t D);

// Any of grad_h, g_h, db may be nullptr (not computed). grad_h may be s itself (with H = D): each row's
// db term is read before the row is scaled, so one pass turns s into dl = g * s and sums db.
template <typename scalar_t>
void bernoulli_linear_backward_rows(const scalar_t* s,             // (M, D), x - sigmoid(l)
                                    const compute_t<scalar_t>* g,  // (M,), dLoss/dll
                                    const scalar_t* h,             // (M, H)
                                    scalar_t* grad_h,  // (M, H): v on entry, g * v on exit (v = s W, or s)
                                    scalar_t* g_h,     // (M, H), written: g * h
                                    scalar_t* db,      // (D,), written: sum_r g[r] s[r]
                                    int64_t M, int64_t D, int64_t H);

}  // namespace cpu
}  // namespace ssvae_fast
