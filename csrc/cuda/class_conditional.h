// Host launchers of the class-conditional first-layer kernels (csrc/cuda/class_conditional.cu).
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

struct ClassConditionalForwardArgs {
  const void* a = nullptr;           // (N, H) input part W_v v + b, any strides
  const void* w_y = nullptr;         // (H, C) class columns of the layer's weight, any strides
  const int64_t* classes = nullptr;  // (N,) class of each row; nullptr: every class (broadcast form)
  void* out = nullptr;               // contiguous out: (N, C, H) broadcast form, (N, H) indexed form
  int64_t N = 0;                     // rows of a
  int64_t H = 0;                     // hidden units
  int64_t C = 0;                     // classes (columns of w_y)
  int64_t stride_an = 0;             // elements between rows of a
  int64_t stride_ah = 0;             // elements between hidden units of a
  int64_t stride_wh = 0;             // elements between rows (hidden units) of w_y
  int64_t stride_wc = 0;             // elements between columns (classes) of w_y
  int64_t stride_cls = 0;            // elements between entries of classes
};

struct ClassConditionalBackwardArgs {
  const void* grad = nullptr;        // contiguous dLoss/dout: (N, C, H) broadcast form, (N, H) indexed
  const void* a = nullptr;           // (N, H), any strides
  const void* w_y = nullptr;         // (H, C), any strides
  const int64_t* classes = nullptr;  // (N,) or nullptr (broadcast form)
  void* da = nullptr;                // (N, H) contiguous out
  void* dw_partial = nullptr;        // (ceil(N / kClassConditionalBackwardRows), C, H) workspace, compute dtype
  void* dw_y = nullptr;              // (H, C) contiguous out
  int64_t N = 0, H = 0, C = 0;
  int64_t stride_an = 0, stride_ah = 0, stride_wh = 0, stride_wc = 0, stride_cls = 0;
};

// out[n, c, h] = act(a[n, h] + w_y[h, c]) for every c (classes == nullptr), else
// out[n, h] = act(a[n, h] + w_y[h, classes[n]]) (NaN for a class outside [0, C): no out-of-bounds read).
void class_conditional_forward(const ClassConditionalForwardArgs& args, ScalarType dtype,
                               Activation activation, std::uintptr_t stream);

// da = grad * act'(pre), summed over c in the broadcast form; dw_y[h, c] = sum over rows (of class c in
// the indexed form) of grad * act'(pre). Deterministic: per-block partials, then a fixed-order sum.
void class_conditional_backward(const ClassConditionalBackwardArgs& args, ScalarType dtype,
                                Activation activation, std::uintptr_t stream);

}  // namespace cuda
}  // namespace ssvae_fast
