// Host launchers of the Gaussian head epilogue kernels (csrc/cuda/gaussian_reparam_kl.cu). Plain C++
// declarations. Pointers are device pointers; `stream` is a cudaStream_t passed as an integer; strides in
// elements.
#pragma once

#include <cstdint>

#include "scalar_type.h"

namespace ssvae_fast {
namespace cuda {

struct GaussianForwardArgs {
  const void* head = nullptr;  // (R, 2Z) = [mu, logvar], any strides
  const void* eps = nullptr;   // (R, Z) standard normal noise, any strides
  void* z = nullptr;           // (R, Z) contiguous out: mu + exp(logvar / 2) * eps
  void* kl = nullptr;          // (R,) contiguous out: 0.5 * sum_k (mu^2 + exp(logvar) - 1 - logvar)
  int64_t R = 0;               // rows
  int64_t Z = 0;               // latent dimensions
  int64_t stride_hr = 0;       // elements between rows of head
  int64_t stride_hz = 0;       // elements between columns of head
  int64_t stride_er = 0;       // elements between rows of eps
  int64_t stride_ez = 0;       // elements between columns of eps
};

struct GaussianBackwardArgs {
  const void* head = nullptr;     // (R, 2Z), any strides
  const void* eps = nullptr;      // (R, Z), any strides
  const void* grad_z = nullptr;   // (R, Z) dLoss/dz, any strides
  const void* grad_kl = nullptr;  // (R,) dLoss/dkl, any stride (0 for an expanded gradient)
  void* dhead = nullptr;          // (R, 2Z) contiguous out
  void* deps = nullptr;           // (R, Z) contiguous out
  int64_t R = 0, Z = 0;
  int64_t stride_hr = 0, stride_hz = 0, stride_er = 0, stride_ez = 0;
  int64_t stride_gzr = 0;         // elements between rows of grad_z
  int64_t stride_gzz = 0;         // elements between columns of grad_z
  int64_t stride_gkl = 0;         // elements between entries of grad_kl
};

void gaussian_reparam_kl_forward(const GaussianForwardArgs& args, ScalarType dtype, std::uintptr_t stream);
void gaussian_reparam_kl_backward(const GaussianBackwardArgs& args, ScalarType dtype, std::uintptr_t stream);

}  // namespace cuda
}  // namespace ssvae_fast
