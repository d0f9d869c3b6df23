// Host launchers of the ELBO reduction kernels (csrc/cuda/elbo_reduction.cu). Plain C++ declarations.
// Pointers are device pointers; `stream` is a cudaStream_t passed as an integer; strides in elements.
#pragma once

#include <cstdint>

#include "scalar_type.h"

namespace ssvae_fast {
namespace cuda {

struct ElboForwardArgs {
  const void* logits_y = nullptr;  // (n_l + n_u, C) classifier logits, labelled rows first, any strides
  const int64_t* y_l = nullptr;    // (n_l,) labels in [0, C) (a label outside gives a NaN loss)
  const void* ll_l = nullptr;      // (n_l,) log p(x | y, z) of the labelled rows
  const void* kl_l = nullptr;      // (n_l,) KL of the labelled rows
  const void* ll_u = nullptr;      // (n_u, C) log p(x | c, z) of the unlabelled rows, every class
  const void* kl_u = nullptr;      // (n_u, C) KL of the unlabelled rows
  void* loss = nullptr;            // (n_l + n_u,) contiguous out: per-example losses
  int64_t n_l = 0;                 // labelled rows
  int64_t n_u = 0;                 // unlabelled rows
  int64_t C = 0;                   // classes (>= 1)
  double alpha = 0.0;              // weight of -log q(y | x) per labelled example
  int64_t stride_lr = 0;           // elements between rows of logits_y
  int64_t stride_lc = 0;           // elements between classes of logits_y
  int64_t stride_y = 0;            // elements between labels
  int64_t stride_ll_l = 0;         // elements between entries of ll_l
  int64_t stride_kl_l = 0;         // elements between entries of kl_l
  int64_t stride_ll_ur = 0;        // elements between rows of ll_u
  int64_t stride_ll_uc = 0;        // elements between classes of ll_u
  int64_t stride_kl_ur = 0;        // elements between rows of kl_u
  int64_t stride_kl_uc = 0;        // elements between classes of kl_u
};

struct ElboBackwardArgs {
  const void* grad = nullptr;      // (n_l + n_u,) dLoss/dloss, any stride (0 for an expanded gradient)
  const void* logits_y = nullptr;  // (n_l + n_u, C)
  const int64_t* y_l = nullptr;    // (n_l,)
  const void* ll_u = nullptr;      // (n_u, C)
  const void* kl_u = nullptr;      // (n_u, C)
  void* dlogits_y = nullptr;       // (n_l + n_u, C) contiguous out
  void* dll_l = nullptr;           // (n_l,) contiguous out
  void* dkl_l = nullptr;           // (n_l,) contiguous out
  void* dll_u = nullptr;           // (n_u, C) contiguous out
  void* dkl_u = nullptr;           // (n_u, C) contiguous out
  int64_t n_l = 0, n_u = 0, C = 0;
  double alpha = 0.0;
  int64_t stride_g = 0;            // elements between entries of grad
  int64_t stride_lr = 0, stride_lc = 0, stride_y = 0;
  int64_t stride_ll_ur = 0, stride_ll_uc = 0, stride_kl_ur = 0, stride_kl_uc = 0;
};

void elbo_reduction_forward(const ElboForwardArgs& args, ScalarType dtype, std::uintptr_t stream);
void elbo_reduction_backward(const ElboBackwardArgs& args, ScalarType dtype, std::uintptr_t stream);

}  // namespace cuda
}  // namespace ssvae_fast
