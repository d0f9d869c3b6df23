// CPU kernels (OpenMP) of the class-conditional first layer: act(a + W_y[:, c]) with the class as a
// bias column. The first n_l rows of a take one class each (classes[i]); the other N - n_l rows take
// every class. Output rows, labelled first (R = n_l + (N - n_l) * C rows of H):
//
//   out[i, h]                = act(a[i, h] + wy_t[classes[i], h])        i < n_l
//   out[n_l + j * C + c, h]  = act(a[n_l + j, h] + wy_t[c, h])           j < N - n_l, c < C
//
// (n_l = 0: M2's every-class form, (N, C, H); n_l = N: one class per row, (N, H).) The backward, with
// t = grad_out * act'(pre) per output row, pre = a + wy_t[class]:
//
//   grad_a[n, h]   = t of row n (n < n_l)  |  sum_c t of row (n, c) (n >= n_l)
//   grad_wy[h, c]  = sum of t over the output rows of class c
//
// act' comes from the pre-activation (recomputed from a and wy_t; `out` == nullptr) or from the output
// (`out` given): softplus' = sigmoid(pre) = 1 - exp(-out), relu' = [pre > 0] = [out > 0]. The caller
// keeps whichever tensor is alive anyway.
//
// scalar_t is float, double or bf16_t (bfloat16.h; computed in float32). wy_t is W_y transposed, (C, H)
// contiguous, so a class column is a contiguous row. Every other array is contiguous. grad_wy is (H, C)
// contiguous (W_y's layout). Reductions accumulate in double; grad_wy sums fixed blocks of rows of a (a
// partition that depends only on N) and then the blocks in order: deterministic, whatever the thread count.
#pragma once

#include <cstdint>

namespace ssvae_fast {
namespace cpu {

enum class Activation : int { kSoftplus = 0, kRelu = 1 };

template <typename scalar_t>
void class_conditional_forward(const scalar_t* a,        // (N, H)
                               const scalar_t* wy_t,     // (C, H)
                               const int64_t* classes,   // (n_l,) in [0, C); nullptr when n_l = 0
                               scalar_t* out,            // (n_l + (N - n_l) * C, H), written
                               int64_t N, int64_t n_l, int64_t H, int64_t C, Activation activation);

template <typename scalar_t>
void class_conditional_backward(const scalar_t* grad_out,  // like out
                                const scalar_t* a,         // (N, H); read when out == nullptr
                                const scalar_t* wy_t,      // (C, H); read when out == nullptr
                                const scalar_t* out,       // like grad_out, or nullptr
                                const int64_t* classes,    // (n_l,); nullptr when n_l = 0
                                scalar_t* grad_a,          // (N, H) written, or nullptr
                                scalar_t* grad_wy,         // (H, C) written, or nullptr
                                int64_t N, int64_t n_l, int64_t H, int64_t C, Activation activation);

}  // namespace cpu
}  // namespace ssvae_fast
