// CPU kernels (OpenMP) of the class-conditional first layer: act(a + W_y[:, c]) with the class as a
// bias column, in M2's two forms:
//
//   all classes (classes == nullptr)  out[n, c, h] = act(a[n, h] + wy_t[c, h])       (N, C, H)
//   one class per row                 out[n, h]    = act(a[n, h] + wy_t[classes[n], h])  (N, H)
//
// and their backward, with t = grad_out * act'(pre), pre = a + wy_t[class]:
//
//   grad_a[n, h]     = sum_c t[n, c, h]            (all classes)  |  t[n, h]   (one class per row)
//   grad_wy[h, c]    = sum_n t[n, c, h]            (all classes)  |  sum over the rows n of class c
//
// act' comes from the pre-activation (recomputed from a and wy_t; `out` == nullptr) or from the output
// (`out` given): softplus' = sigmoid(pre) = 1 - exp(-out), relu' = [pre > 0] = [out > 0]. The caller
// keeps whichever tensor is alive anyway.
//
// wy_t is W_y transposed, (C, H) contiguous, so a class column is a contiguous row. Every other array is
// contiguous. grad_wy is (H, C) contiguous (W_y's layout). Reductions accumulate in double; grad_wy
// sums fixed blocks of rows (a partition that depends only on N) and then the blocks in order:
// deterministic, whatever the thread count.
#pragma once

#include <cstdint>

namespace ssvae_fast {
namespace cpu {

enum class Activation : int { kSoftplus = 0, kRelu = 1 };

template <typename scalar_t>
void class_conditional_forward(const scalar_t* a,        // (N, H)
                               const scalar_t* wy_t,     // (C, H)
                               const int64_t* classes,   // (N,) in [0, C), or nullptr: all classes
                               scalar_t* out,            // (N, C, H) or (N, H), written
                               int64_t N, int64_t H, int64_t C, Activation activation);

template <typename scalar_t>
void class_conditional_backward(const scalar_t* grad_out,  // like out
                                const scalar_t* a,         // (N, H); read when out == nullptr
                                const scalar_t* wy_t,      // (C, H); read when out == nullptr
                                const scalar_t* out,       // like grad_out, or nullptr
                                const int64_t* classes,    // (N,) or nullptr: all classes
                                scalar_t* grad_a,          // (N, H) written, or nullptr
                                scalar_t* grad_wy,         // (H, C) written, or nullptr
                                int64_t N, int64_t H, int64_t C, Activation activation);

}  // namespace cpu
}  // namespace ssvae_fast
