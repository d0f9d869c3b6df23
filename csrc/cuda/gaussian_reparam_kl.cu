// CUDA kernels of M2's Gaussian head epilogue (docs/design.md section 2, item 4): reparameterization and
// KL(q(z|x,y) || N(0, I)) from the encoder head's output, in one pass.
//
//   forward   gaussian_fwd_kernel   one warp per row: z = mu + exp(logvar / 2) * eps (lanes over k) and
//                                   kl = 0.5 * sum_k (mu^2 + exp(logvar) - 1 - logvar) (warp reduction)
//   backward  gaussian_bwd_kernel   one thread per (r, k): d mu, d logvar, d eps (no reduction)
//
// What is fused, and the memory traffic saved (R = 1000 rows = 100 examples x 10 classes, Z = 50, fp32;
// arithmetic, not measured): plain torch slices mu and logvar, then runs ~9 elementwise kernels
// (0.5 * logvar, exp, * eps, + mu, square, exp, - 1, - logvar, sum), each a round trip of (R, Z) = 0.2 MB,
// ~3 MB forward and as much again backward. Here the forward reads head and eps once and writes z and kl
// (0.8 MB in all); the backward reads head, eps, grad_z, grad_kl once and writes dhead and deps (1.4 MB).
//
// Deterministic: the only reduction (kl over k) runs per lane in order of k, then over a fixed shuffle
// tree. Offsets int64. Compute in float (double for double).

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "common.cuh"
#include "gaussian_reparam_kl.h"
#include "numeric.cuh"

namespace ssvae_fast {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / 32;  // forward: one warp per row

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) gaussian_fwd_kernel(const GaussianForwardArgs p) {  // see the .h
  using acc_t = compute_t<scalar_t>;
  const auto* head = static_cast<const scalar_t*>(p.head);
  const auto* eps = static_cast<const scalar_t*>(p.eps);
  auto* z = static_cast<scalar_t*>(p.z);
  auto* kl = static_cast<scalar_t*>(p.kl);
  const int lane = threadIdx.x % 32;
  const int64_t step = int64_t(gridDim.x) * kRowsPerBlock;
  // r depends on the warp only: every lane of a warp runs the same iterations (full-mask shuffles).
  for (int64_t r = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32; r < p.R; r += step) {
    const scalar_t* head_r = head + r * p.stride_hr;
    acc_t kl_sum = acc_t(0);
    for (int64_t k = lane; k < p.Z; k += 32) {
      const acc_t mu = to_compute(head_r[k * p.stride_hz]);
      const acc_t logvar = to_compute(head_r[(p.Z + k) * p.stride_hz]);
      const acc_t e = to_compute(eps[r * p.stride_er + k * p.stride_ez]);
      z[r * p.Z + k] = from_compute<scalar_t>(mu + exp(acc_t(0.5) * logvar) * e);
      kl_sum += mu * mu + exp(logvar) - acc_t(1) - logvar;
    }
    kl_sum = warp_allreduce_sum(kl_sum);
    if (lane == 0) kl[r] = from_compute<scalar_t>(acc_t(0.5) * kl_sum);
  }
}

// Backward (VJP). With std = exp(logvar / 2), z = mu + std * eps, kl = 0.5 sum_k (mu^2 + exp(logvar) - 1 - logvar),
// g_z = grad_z[r, k], g_kl = grad_kl[r]:
//   d mu[r, k]     = g_z + g_kl * mu
//   d logvar[r, k] = g_z * eps * 0.5 * std + g_kl * 0.5 * (exp(logvar) - 1)
//   d eps[r, k]    = g_z * std
// dhead = [d mu, d logvar] (R, 2Z).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) gaussian_bwd_kernel(const GaussianBackwardArgs p) {  // see the .h
  using acc_t = compute_t<scalar_t>;
  const auto* head = static_cast<const scalar_t*>(p.head);
  const auto* eps = static_cast<const scalar_t*>(p.eps);
  const auto* grad_z = static_cast<const scalar_t*>(p.grad_z);
  const auto* grad_kl = static_cast<const scalar_t*>(p.grad_kl);
  auto* dhead = static_cast<scalar_t*>(p.dhead);
  auto* deps = static_cast<scalar_t*>(p.deps);
  const int64_t total = p.R * p.Z;
  const int64_t step = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < total; i += step) {
    const int64_t r = i / p.Z;
    const int64_t k = i - r * p.Z;
    const acc_t mu = to_compute(head[r * p.stride_hr + k * p.stride_hz]);
    const acc_t logvar = to_compute(head[r * p.stride_hr + (p.Z + k) * p.stride_hz]);
    const acc_t e = to_compute(eps[r * p.stride_er + k * p.stride_ez]);
    const acc_t g_z = to_compute(grad_z[r * p.stride_gzr + k * p.stride_gzz]);
    const acc_t g_kl = to_compute(grad_kl[r * p.stride_gkl]);
    const acc_t std_dev = exp(acc_t(0.5) * logvar);
    scalar_t* dhead_r = dhead + r * 2 * p.Z;
    dhead_r[k] = from_compute<scalar_t>(g_z + g_kl * mu);
    const acc_t d_logvar = g_z * e * acc_t(0.5) * std_dev + g_kl * acc_t(0.5) * (exp(logvar) - acc_t(1));
    dhead_r[p.Z + k] = from_compute<scalar_t>(d_logvar);
    deps[i] = from_compute<scalar_t>(g_z * std_dev);
  }
}

void check_sizes(const char* fn, int64_t R, int64_t Z) {
  if (R < 0 || Z < 0) {
    throw std::invalid_argument(std::string("ssvae_fast._C_cuda.") + fn + ": sizes must be non-negative, got R=" +
                                std::to_string(R) + ", Z=" + std::to_string(Z));
  }
}

}  // namespace

void gaussian_reparam_kl_forward(const GaussianForwardArgs& args, ScalarType dtype, std::uintptr_t stream) {
  check_sizes("gaussian_reparam_kl_forward", args.R, args.Z);
  if (args.R == 0) return;  // Z == 0 still writes kl = 0
  auto cuda_stream = reinterpret_cast<cudaStream_t>(stream);
  dispatch_scalar_type(dtype, "gaussian_reparam_kl_forward", [&](auto tag) {
    using scalar_t = decltype(tag);
    gaussian_fwd_kernel<scalar_t><<<grid_stride_blocks(args.R, kRowsPerBlock), kThreads, 0, cuda_stream>>>(args);
    check_launch("gaussian_fwd_kernel");
  });
}

void gaussian_reparam_kl_backward(const GaussianBackwardArgs& args, ScalarType dtype, std::uintptr_t stream) {
  check_sizes("gaussian_reparam_kl_backward", args.R, args.Z);
  if (args.R * args.Z == 0) return;
  auto cuda_stream = reinterpret_cast<cudaStream_t>(stream);
  dispatch_scalar_type(dtype, "gaussian_reparam_kl_backward", [&](auto tag) {
    using scalar_t = decltype(tag);
    gaussian_bwd_kernel<scalar_t><<<grid_stride_blocks(args.R * args.Z, kThreads), kThreads, 0, cuda_stream>>>(args);
    check_launch("gaussian_bwd_kernel");
  });
}

}  // namespace cuda
}  // namespace ssvae_fast
