// Host launchers of the class-conditional first-layer kernels (csrc/cuda/class_conditional_activation.cu).
// Plain C++ declarations: no CUDA headers, so csrc/bindings_cuda.cpp compiles with the host compiler.
// Pointers are device pointers; `stream` is a cudaStream_t passed as an integer. Strides are in
// elements. Launch failures throw std::runtime_error naming the kernel.
#pragma once

#include <cstdint>

#include "scalar_type.h"

namespace ssvae_fast {
namespace cuda {

enum class Activation { kSoftplus, kRelu };

// Rows of `a` per block of the backward kernel: the dw_y workspace holds one (C, H) slice of partial
// sums per ceil(N / kClassConditionalBackwardRows) row blocks.
constexpr int kClassConditionalBackwardRows = 64;

// Output rows, labelled first (n_l rows of a take one class each, the other N - n_l every class):
//   out[i, h]                = act(a[i, h] + w_y[h, classes[i]])     i < n_l
//   out[n_l + j * C + c, h]  = act(a[n_l + j, h] + w_y[h, c])        j < N - n_l, c < C
// M = n_l + (N - n_l) * C rows of H, contiguous. n_l = 0 (classes unused, may be nullptr) is the broadcast
// form (N, C, H); n_l = N the indexed form (N, H).
struct ClassConditionalForwardArgs {
  const void* a = nullptr;           // (N, H) input part W_v v + b, any strides
  const void* w_y = nullptr;         // (H, C) class columns of the layer's weight, any strides
  const int64_t* classes = nullptr;  // (n_l,) class of each labelled row; nullptr allowed when n_l == 0
  void* out = nullptr;               // (n_l + (N - n_l) * C, H) contiguous out, rows as above
  int64_t N = 0;                     // rows of a
  int64_t n_l = 0;                   // labelled rows (the first n_l rows of a), 0 <= n_l <= N
  int64_t H = 0;                     // hidden units
  int64_t C = 0;                     // classes (columns of w_y)
  int64_t stride_an = 0;             // elements between rows of a
  int64_t stride_ah = 0;             // elements between hidden units of a
  int64_t stride_wh = 0;             // elements between rows (hidden units) of w_y
  int64_t stride_wc = 0;             // elements between columns (classes) of w_y
  int64_t stride_cls = 0;            // elements between entries of classes
};

struct ClassConditionalBackwardArgs {
  const void* grad = nullptr;        // (n_l + (N - n_l) * C, H) contiguous dLoss/dout, rows as the output's
  const void* a = nullptr;           // (N, H), any strides
  const void* w_y = nullptr;         // (H, C), any strides
  const int64_t* classes = nullptr;  // (n_l,); nullptr allowed when n_l == 0
  void* da = nullptr;                // (N, H) contiguous out
  void* dw_partial = nullptr;        // (ceil(N / kClassConditionalBackwardRows), C, H) workspace, compute dtype
  void* dw_y = nullptr;              // (H, C) contiguous out
  int64_t N = 0, n_l = 0, H = 0, C = 0;
  int64_t stride_an = 0, stride_ah = 0, stride_wh = 0, stride_wc = 0, stride_cls = 0;
};

// out as above; a class outside [0, C) gives NaN for that row (no out-of-bounds read).
void class_conditional_forward(const ClassConditionalForwardArgs& args, ScalarType dtype,
                               Activation activation, std::uintptr_t stream);

// t = grad * act'(pre) per output row; da[n] = t of row n (n < n_l), the sum of t over the C rows of
// example n (n >= n_l); dw_y[h, c] = sum of t over the output rows of class c. Deterministic: per-block
// partials, then a fixed-order sum.
void class_conditional_backward(const ClassConditionalBackwardArgs& args, ScalarType dtype,
                                Activation activation, std::uintptr_t stream);

}  // namespace cuda
}  // namespace ssvae_fast
