// CPU kernels (OpenMP) of the fused decoder output layer + Bernoulli log-likelihood; the GEMMs
// (logits = h W^T + b, and the backward's products) are torch's, called from
// ssvae_fast/ops/cpu_backend.py. What runs here is what torch would do in several elementwise passes:
//
//   epilogue   on a block of rows of h W^T (a chunk still in cache, or the whole (M, D) buffer), with
//              the bias added here (torch's addmm would first copy the broadcast bias into its output):
//              l[r, d] = (h W^T)[r, d] + b[d]
//              ll[r] = sum_d x[e(r), d] l[r, d] - softplus(l[r, d])
//              s[r, d] = x[e(r), d] - sigmoid(l[r, d])           (optional; may overwrite h W^T in place)
//              where e(r) = r for the n_l labelled rows r < n_l, n_l + (r - n_l) / C after them
//   backward   with g = dLoss/dll a per-row scalar, dl = g s never needs to exist:
//              dW = s^T (g * h)  (g * h written here; the GEMM by torch)
//              db[d] = sum_r g[r] s[r, d]
//              dh = g * (s W)  (s W by torch, into g * h's buffer once dW is done; the row scaling
//                               here, in place)
//              one kernel, any subset of the three per call: the launcher runs g * h and db in one
//              pass before the dW GEMM and the row scaling after the dh GEMM.
//
// All arrays are contiguous (row r of logits / s at r * D). Reductions accumulate in double.
// Deterministic: the epilogue's rows are independent; db sums fixed blocks of rows (a partition that
// depends only on M) and then the blocks in order.
#pragma once

#include <cstdint>

namespace ssvae_fast {
namespace cpu {

// Rows r = 0..rows-1 of the block are global rows row0 + r (example e(row0 + r)).
template <typename scalar_t>
void bernoulli_linear_epilogue(const scalar_t* logits,  // (rows, D), the block's logits without bias
                               const scalar_t* bias,    // (D,), added here; or nullptr
                               const scalar_t* x,       // (N, D), N > e(row0 + rows - 1)
                               scalar_t* ll,            // (rows,), written
                               scalar_t* s,             // (rows, D) written, or nullptr; may == logits
                               int64_t row0, int64_t rows, int64_t n_l, int64_t C, int64_t D);

// Any of grad_h, g_h, db may be nullptr (not computed).
template <typename scalar_t>
void bernoulli_linear_backward_rows(const scalar_t* s,  // (M, D), x - sigmoid(l)
                                    const scalar_t* g,  // (M,), dLoss/dll
                                    const scalar_t* h,  // (M, H)
                                    scalar_t* grad_h,   // (M, H): s W on entry, g * (s W) on exit
                                    scalar_t* g_h,      // (M, H), written: g * h
                                    scalar_t* db,       // (D,), written: sum_r g[r] s[r]
                                    int64_t M, int64_t D, int64_t H);

}  // namespace cpu
}  // namespace ssvae_fast
