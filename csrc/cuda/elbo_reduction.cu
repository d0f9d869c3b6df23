// CUDA kernels of M2's classifier-weighted ELBO reduction (docs/design.md section 2, item 5).
//
//   log_q = log_softmax(logits_y)  (n_l + n_u, C), labelled rows first;   L = -ll + kl + log C
//   labelled row r:    loss[r] = kl_l[r] - ll_l[r] + log C - alpha * log_q[r, y_l[r]]
//   unlabelled row r:  loss[r] = sum_c q[r, c] * (kl_u[u, c] - ll_u[u, c] + log C + log_q[r, c]),  u = r - n_l
//
//   forward   elbo_fwd_kernel   one warp per row: max, sum of exp and the q-weighted sum as lane loops over
//                               the classes plus warp butterflies; lane 0 writes the loss
//   backward  elbo_bwd_kernel   one warp per row: every input's gradient in one pass (the row's softmax and
//                               loss are recomputed; nothing is saved by the forward)
//
// What is fused, and the memory traffic saved (n = 1000 rows, C = 10; arithmetic, not measured): plain torch
// runs ~12 small kernels (log_softmax, gather, exp, subtractions, add, mul, sum, cat, ...), each a round trip
// of (n, C), and as many again backward; here the forward reads logits_y, ll_*, kl_* once and writes n
// losses, the backward reads them and the upstream gradient once and writes the five gradients.
//
// Numerics: log-softmax in float (double for double) as torch computes it, (l - max) - log(sum exp(l - max));
// q = exp(log_q). alpha and log C arrive as double. Deterministic (fixed lane order, fixed shuffle trees).

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common.cuh"
#include "elbo_reduction.h"
#include "numeric.cuh"

namespace ssvae_fast {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / 32;  // one warp per row

// (max, log sum exp(l - max)) of one row of logits, in every lane of the warp.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void row_log_softmax_stats(const scalar_t* logits_r, int64_t stride_lc, int64_t C,
                                                      int lane, acc_t& row_max, acc_t& log_sum) {
  acc_t m = -INFINITY;
  for (int64_t c = lane; c < C; c += 32) m = fmax(m, to_compute(logits_r[c * stride_lc]));
  m = warp_allreduce_max(m);
  acc_t sum = acc_t(0);
  for (int64_t c = lane; c < C; c += 32) sum += exp(to_compute(logits_r[c * stride_lc]) - m);
  sum = warp_allreduce_sum(sum);
  row_max = m;
  log_sum = log(sum);
}

// One class c of unlabelled row r = n_l + u, from the row's log-softmax statistics (m, log_sum):
// log q = log_q[r, c] and f = kl_u[u, c] - ll_u[u, c] + log C + log q.
template <typename acc_t>
struct UnlabelledTerm {
  acc_t log_q;
  acc_t f;
};

template <typename scalar_t, typename acc_t, typename Args>
__device__ __forceinline__ UnlabelledTerm<acc_t> unlabelled_term(const Args& p, const scalar_t* logits_r,
                                                                 const scalar_t* ll_u, const scalar_t* kl_u, int64_t u,
                                                                 int64_t c, acc_t m, acc_t log_sum, acc_t log_c) {
  const acc_t log_q = (to_compute(logits_r[c * p.stride_lc]) - m) - log_sum;
  const acc_t f = to_compute(kl_u[u * p.stride_kl_ur + c * p.stride_kl_uc]) -
                  to_compute(ll_u[u * p.stride_ll_ur + c * p.stride_ll_uc]) + log_c + log_q;
  return {log_q, f};
}

// The loss of unlabelled row r = n_l + u, sum_c q_c f_c, in every lane of the warp.
template <typename scalar_t, typename acc_t, typename Args>
__device__ __forceinline__ acc_t unlabelled_loss(const Args& p, const scalar_t* logits_r, const scalar_t* ll_u,
                                                 const scalar_t* kl_u, int64_t u, int lane, acc_t m, acc_t log_sum,
                                                 acc_t log_c) {
  acc_t sum = acc_t(0);
  for (int64_t c = lane; c < p.C; c += 32) {
    const UnlabelledTerm<acc_t> term = unlabelled_term(p, logits_r, ll_u, kl_u, u, c, m, log_sum, log_c);
    sum += exp(term.log_q) * term.f;
  }
  return warp_allreduce_sum(sum);
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
elbo_fwd_kernel(const ElboForwardArgs p,  // sizes, strides, pointers, alpha: see elbo_reduction.h
                double log_n_classes) {   // log C, from the host (no double math in float kernels)
  using acc_t = compute_t<scalar_t>;
  const auto* logits = static_cast<const scalar_t*>(p.logits_y);
  const auto* ll_l = static_cast<const scalar_t*>(p.ll_l);
  const auto* kl_l = static_cast<const scalar_t*>(p.kl_l);
  const auto* ll_u = static_cast<const scalar_t*>(p.ll_u);
  const auto* kl_u = static_cast<const scalar_t*>(p.kl_u);
  auto* loss = static_cast<scalar_t*>(p.loss);
  const acc_t alpha = acc_t(p.alpha);
  const acc_t log_c = acc_t(log_n_classes);
  const int lane = threadIdx.x % 32;
  const int64_t n = p.n_l + p.n_u;
  const int64_t step = int64_t(gridDim.x) * kRowsPerBlock;
  // r depends on the warp only: all lanes of a warp take the same branches (full-mask shuffles).
  for (int64_t r = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32; r < n; r += step) {
    const scalar_t* logits_r = logits + r * p.stride_lr;
    acc_t m, log_sum;
    row_log_softmax_stats(logits_r, p.stride_lc, p.C, lane, m, log_sum);
    if (r < p.n_l) {
      if (lane == 0) {
        const int64_t y = p.y_l[r * p.stride_y];
        const acc_t log_q_y =
            (y >= 0 && y < p.C) ? (to_compute(logits_r[y * p.stride_lc]) - m) - log_sum : quiet_nan<acc_t>();
        const acc_t value = to_compute(kl_l[r * p.stride_kl_l]) - to_compute(ll_l[r * p.stride_ll_l]) + log_c -
                            alpha * log_q_y;
        loss[r] = from_compute<scalar_t>(value);
      }
    } else {
      const acc_t sum = unlabelled_loss(p, logits_r, ll_u, kl_u, r - p.n_l, lane, m, log_sum, log_c);
      if (lane == 0) loss[r] = from_compute<scalar_t>(sum);
    }
  }
}

// Backward (VJP), g = grad[r] = dLoss/dloss[r], q = softmax(logits_y[r]):
//   labelled row r (y = y_l[r]):  loss = kl - ll + log C - alpha * log_q[y]
//       d ll_l[r] = -g,   d kl_l[r] = g
//       d logits[r, j] = -alpha * g * ([j == y] - q_j)            (d log_q_y / d l_j = [j == y] - q_j)
//   unlabelled row r (u = r - n_l), f_c = kl_u[u, c] - ll_u[u, c] + log C + log_q_c, loss = sum_c q_c f_c:
//       d ll_u[u, c] = -g * q_c,   d kl_u[u, c] = g * q_c
//       d logits[r, j] = g * (sum_c (d q_c / d l_j) f_c + sum_c q_c (d log_q_c / d l_j))
//                      = g * (q_j f_j - q_j loss + (q_j - q_j sum_c q_c))
//                      = g * q_j * (f_j - loss)                   (sum_c q_c = 1: the entropy part vanishes)
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
elbo_bwd_kernel(const ElboBackwardArgs p,  // sizes, strides, pointers, alpha: see elbo_reduction.h
                double log_n_classes) {    // log C, from the host
  using acc_t = compute_t<scalar_t>;
  const auto* grad = static_cast<const scalar_t*>(p.grad);
  const auto* logits = static_cast<const scalar_t*>(p.logits_y);
  const auto* ll_u = static_cast<const scalar_t*>(p.ll_u);
  const auto* kl_u = static_cast<const scalar_t*>(p.kl_u);
  auto* dlogits = static_cast<scalar_t*>(p.dlogits_y);
  auto* dll_l = static_cast<scalar_t*>(p.dll_l);
  auto* dkl_l = static_cast<scalar_t*>(p.dkl_l);
  auto* dll_u = static_cast<scalar_t*>(p.dll_u);
  auto* dkl_u = static_cast<scalar_t*>(p.dkl_u);
  const acc_t alpha = acc_t(p.alpha);
  const acc_t log_c = acc_t(log_n_classes);
  const int lane = threadIdx.x % 32;
  const int64_t n = p.n_l + p.n_u;
  const int64_t step = int64_t(gridDim.x) * kRowsPerBlock;
  for (int64_t r = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32; r < n; r += step) {
    const scalar_t* logits_r = logits + r * p.stride_lr;
    scalar_t* dlogits_r = dlogits + r * p.C;
    const acc_t g = to_compute(grad[r * p.stride_g]);
    acc_t m, log_sum;
    row_log_softmax_stats(logits_r, p.stride_lc, p.C, lane, m, log_sum);
    if (r < p.n_l) {
      const int64_t y = p.y_l[r * p.stride_y];
      const bool y_ok = y >= 0 && y < p.C;
      const acc_t scale = -alpha * g;
      for (int64_t c = lane; c < p.C; c += 32) {
        const acc_t q = exp((to_compute(logits_r[c * p.stride_lc]) - m) - log_sum);
        const acc_t one_hot = y_ok ? (c == y ? acc_t(1) : acc_t(0)) : quiet_nan<acc_t>();
        dlogits_r[c] = from_compute<scalar_t>(scale * (one_hot - q));
      }
      if (lane == 0) {
        dll_l[r] = from_compute<scalar_t>(-g);
        dkl_l[r] = from_compute<scalar_t>(g);
      }
    } else {
      const int64_t u = r - p.n_l;
      // Pass 1: the row's loss (as the forward computes it). Pass 2: the gradients.
      const acc_t loss = unlabelled_loss(p, logits_r, ll_u, kl_u, u, lane, m, log_sum, log_c);
      for (int64_t c = lane; c < p.C; c += 32) {
        const UnlabelledTerm<acc_t> term = unlabelled_term(p, logits_r, ll_u, kl_u, u, c, m, log_sum, log_c);
        const acc_t g_q = g * exp(term.log_q);
        dlogits_r[c] = from_compute<scalar_t>(g_q * (term.f - loss));
        dll_u[u * p.C + c] = from_compute<scalar_t>(-g_q);
        dkl_u[u * p.C + c] = from_compute<scalar_t>(g_q);
      }
    }
  }
}

void check_sizes(const char* fn, int64_t n_l, int64_t n_u, int64_t C) {
  if (n_l < 0 || n_u < 0 || C < 1) {
    throw std::invalid_argument(std::string("ssvae_fast._C_cuda.") + fn +
                                ": need n_l >= 0, n_u >= 0 and C >= 1, got n_l=" + std::to_string(n_l) +
                                ", n_u=" + std::to_string(n_u) + ", C=" + std::to_string(C));
  }
}

// Checks the sizes and, unless there are no rows, calls launch(scalar_t{}, blocks, stream, log C) with
// scalar_t the element type of dtype and `blocks` for one warp per row (host side).
template <typename Args, typename Launch>
void launch_rows(const char* fn, const Args& args, ScalarType dtype, std::uintptr_t stream, Launch&& launch) {
  check_sizes(fn, args.n_l, args.n_u, args.C);
  const int64_t n = args.n_l + args.n_u;
  if (n == 0) return;
  auto cuda_stream = reinterpret_cast<cudaStream_t>(stream);
  dispatch_scalar_type(dtype, fn, [&](auto tag) {
    const double log_n_classes = std::log(double(args.C));
    launch(tag, grid_stride_blocks(n, kRowsPerBlock), cuda_stream, log_n_classes);
  });
}

}  // namespace

void elbo_reduction_forward(const ElboForwardArgs& args, ScalarType dtype, std::uintptr_t stream) {
  launch_rows("elbo_reduction_forward", args, dtype, stream,
              [&](auto tag, unsigned int blocks, cudaStream_t cuda_stream, double log_n_classes) {
                elbo_fwd_kernel<decltype(tag)><<<blocks, kThreads, 0, cuda_stream>>>(args, log_n_classes);
                check_launch("elbo_fwd_kernel");
              });
}

void elbo_reduction_backward(const ElboBackwardArgs& args, ScalarType dtype, std::uintptr_t stream) {
  launch_rows("elbo_reduction_backward", args, dtype, stream,
              [&](auto tag, unsigned int blocks, cudaStream_t cuda_stream, double log_n_classes) {
                elbo_bwd_kernel<decltype(tag)><<<blocks, kThreads, 0, cuda_stream>>>(args, log_n_classes);
                check_launch("elbo_bwd_kernel");
              });
}

}  // namespace cuda
}  // namespace ssvae_fast
