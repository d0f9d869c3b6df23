// CUDA kernels of the class-conditional first layer of M2's encoder and decoder (docs/design.md section 2,
// item 1): Linear([v, onehot(c)]) = W_v v + b + W_y[:, c], so the layer's output is act(a + w_y[:, c])
// with a = W_v v + b computed once per row by the caller (a cuBLAS GEMM) and w_y the class columns.
//
// Output rows, labelled first: the first n_l rows of a take one class each (M2's labelled examples), the
// other N - n_l rows every class (the unlabelled ones), so that both go through the network as one batch:
//   out[i]                = act(a[i] + w_y[:, classes[i]])      i < n_l
//   out[n_l + j * C + c]  = act(a[n_l + j] + w_y[:, c])         j < N - n_l, c < C
// (n_l = 0: the broadcast form (N, C, H); n_l = N: the indexed form (N, H)).
//
//   forward   class_conditional_fwd_kernel   one thread per (n, h): reads a[n, h] once and writes
//                                            act(a[n, h] + w_y[h, c]) for c = classes[n] (n < n_l, output
//                                            row n) or for every class c (output rows n_l + (n - n_l) C + c)
//   backward  class_conditional_bwd_kernel   block = 64 rows of a x 32 hidden units: da (summed over the C
//                                            rows of an unlabelled example) and per-block partial sums of dw_y
//             class_conditional_dw_kernel    dw_y[h, c] = fixed-order sum of the partials over row blocks
//
// What is fused, and the memory traffic saved (encoder, N = 100, C = 10, H = 500, fp32; arithmetic, not
// measured): plain torch writes the (N, C, H) pre-activation (2 MB), reads it back for the activation and
// keeps it for backward; its backward writes the (N, C, H) gradient of the pre-activation and reads it
// twice more (sum over C for da, over N for dw_y): ~14 MB in all. Here the forward reads a (0.2 MB) and
// writes the output (2 MB); the backward recomputes the pre-activation (one add), reads the output
// gradient once (2 MB) and writes da (0.2 MB) and ceil(N / 64) x C x H partials (0.04 MB): ~4.4 MB.
//
// Deterministic: no atomics; every sum runs in a fixed order (over c inside a thread; over the rows of a
// block: per thread, then over the 8 warps in warp order; over row blocks in block order).
// Offsets are int64: N * C * H passes 2**31 at realistic sizes. Compute in float (double for double).

#include <cuda_runtime.h>

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "class_conditional_activation.h"
#include "common.cuh"
#include "numeric.cuh"

namespace ssvae_fast {
namespace cuda {
namespace {

constexpr int kThreads = 256;                                    // every kernel of this file
constexpr int kWarps = kThreads / 32;                            // 8
constexpr int kBwdRows = kClassConditionalBackwardRows;          // 64 rows of a per backward block
constexpr int kRowsPerWarp = kBwdRows / kWarps;                  // 8 rows per thread
constexpr int kBwdHidden = 32;                                   // hidden units per backward block (a lane each)
static_assert(kBwdRows % kWarps == 0, "rows per block must split evenly over the warps");

template <Activation kAct, typename acc_t>
__device__ __forceinline__ acc_t activate(acc_t pre) {
  if (kAct == Activation::kSoftplus) return stable_softplus(pre);
  return pre < acc_t(0) ? acc_t(0) : pre;  // relu; NaN stays NaN, like torch.relu
}

// act'(pre): sigmoid for softplus; [pre > 0] for relu (torch's convention at 0).
template <Activation kAct, typename acc_t>
__device__ __forceinline__ acc_t activation_derivative(acc_t pre) {
  if (kAct == Activation::kSoftplus) return stable_sigmoid(pre);
  return pre > acc_t(0) ? acc_t(1) : acc_t(0);
}

template <typename scalar_t, Activation kAct>
__global__ void __launch_bounds__(kThreads)
class_conditional_fwd_kernel(const ClassConditionalForwardArgs p) {  // sizes, strides, pointers: see the .h
  using acc_t = compute_t<scalar_t>;
  const auto* a = static_cast<const scalar_t*>(p.a);
  const auto* w = static_cast<const scalar_t*>(p.w_y);
  auto* out = static_cast<scalar_t*>(p.out);
  const int64_t total = p.N * p.H;
  const int64_t step = int64_t(gridDim.x) * kThreads;
  // i = n * H + h: consecutive threads take consecutive h, so the stores below are coalesced.
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < total; i += step) {
    const int64_t n = i / p.H;
    const int64_t h = i - n * p.H;
    const acc_t a_nh = to_compute(a[n * p.stride_an + h * p.stride_ah]);
    const scalar_t* w_h = w + h * p.stride_wh;  // w_y[h, 0]
    if (n < p.n_l) {  // labelled row: output row n, i.e. out[n * H + h] = out[i]
      const int64_t c = p.classes[n * p.stride_cls];
      const acc_t pre = (c >= 0 && c < p.C) ? a_nh + to_compute(w_h[c * p.stride_wc]) : quiet_nan<acc_t>();
      out[i] = from_compute<scalar_t>(activate<kAct>(pre));
    } else {  // every class: output rows n_l + (n - n_l) * C + c
      scalar_t* out_nh = out + (p.n_l + (n - p.n_l) * p.C) * p.H + h;  // class 0's row, column h
      for (int64_t c = 0; c < p.C; ++c) {
        out_nh[c * p.H] = from_compute<scalar_t>(activate<kAct>(a_nh + to_compute(w_h[c * p.stride_wc])));
      }
    }
  }
}

// Backward (VJP). pre = a[n, h] + w_y[h, c] of each output row (recomputed), t = grad_out * act'(pre):
//   labelled row n < n_l (output row n, c = classes[n]):          da[n, h] = t[n, h]
//   unlabelled row n >= n_l (output rows r_c = n_l + (n - n_l) C + c):  da[n, h] = sum_c t[r_c, h]
//   dw_y[h, c] = sum of t[r, h] over the output rows r of class c (labelled rows of class c included)
// Block (bx, by) owns rows n = 64 bx + warp + 8 k (k = 0..7) of a and hidden unit h = 32 by + lane. For each
// class c (in order) every thread sums t over its 8 rows, the 8 warps' sums meet in shared memory and
// warp 0 adds them in warp order into dw_partial[bx, c, h]; class_conditional_dw_kernel then sums over bx.
// The 32 lanes of a warp share their rows, so `n < n_l` never diverges inside a warp.
template <typename scalar_t, Activation kAct>
__global__ void __launch_bounds__(kThreads)
class_conditional_bwd_kernel(const ClassConditionalBackwardArgs p) {  // sizes, strides, pointers: see the .h
  using acc_t = compute_t<scalar_t>;
  __shared__ acc_t warp_sums[kWarps][32];  // [warp][lane]: lanes hit consecutive words, no bank conflict
  const auto* grad = static_cast<const scalar_t*>(p.grad);
  const auto* a = static_cast<const scalar_t*>(p.a);
  const auto* w = static_cast<const scalar_t*>(p.w_y);
  auto* da = static_cast<scalar_t*>(p.da);
  auto* dw_partial = static_cast<acc_t*>(p.dw_partial);

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int64_t h = int64_t(blockIdx.y) * kBwdHidden + lane;
  const bool h_ok = h < p.H;
  const int64_t row0 = int64_t(blockIdx.x) * kBwdRows + warp;  // this thread's rows: row0 + kWarps * k
  const scalar_t* w_h = w + (h_ok ? h : 0) * p.stride_wh;

  acc_t a_k[kRowsPerWarp];   // a[n_k, h]
  acc_t da_k[kRowsPerWarp];  // da[n_k, h] (labelled row: t[n_k, h], complete after this loop)
  int64_t cls_k[kRowsPerWarp];
#pragma unroll
  for (int k = 0; k < kRowsPerWarp; ++k) {
    const int64_t n = row0 + int64_t(kWarps) * k;
    const bool ok = h_ok && n < p.N;
    a_k[k] = ok ? to_compute(a[n * p.stride_an + h * p.stride_ah]) : acc_t(0);
    da_k[k] = acc_t(0);
    cls_k[k] = -1;
    if (ok && n < p.n_l) {  // labelled row: output row n
      const int64_t c = p.classes[n * p.stride_cls];
      cls_k[k] = c;
      const acc_t pre = (c >= 0 && c < p.C) ? a_k[k] + to_compute(w_h[c * p.stride_wc]) : quiet_nan<acc_t>();
      da_k[k] = to_compute(grad[n * p.H + h]) * activation_derivative<kAct>(pre);
    }
  }
  // Whether some row of this thread (the last is row0 + 8 * 7) may be past the labelled prefix: only then
  // is w_y[h, c] read in the class loop below.
  const bool reads_w = h_ok && row0 + int64_t(kWarps) * (kRowsPerWarp - 1) >= p.n_l;

  // The loop bound p.C is the same for every thread: all threads reach both barriers.
  for (int64_t c = 0; c < p.C; ++c) {
    acc_t part = acc_t(0);
    const acc_t w_hc = reads_w ? to_compute(w_h[c * p.stride_wc]) : acc_t(0);
#pragma unroll
    for (int k = 0; k < kRowsPerWarp; ++k) {
      const int64_t n = row0 + int64_t(kWarps) * k;
      if (!(h_ok && n < p.N)) continue;
      if (n < p.n_l) {
        if (cls_k[k] == c) part += da_k[k];  // a class outside [0, C) matches no c
      } else {  // output row n_l + (n - n_l) * C + c
        const int64_t r = p.n_l + (n - p.n_l) * p.C + c;
        const acc_t t = to_compute(grad[r * p.H + h]) * activation_derivative<kAct>(a_k[k] + w_hc);
        da_k[k] += t;
        part += t;
      }
    }
    warp_sums[warp][lane] = part;
    __syncthreads();
    if (warp == 0 && h_ok) {
      acc_t sum = acc_t(0);
#pragma unroll
      for (int v = 0; v < kWarps; ++v) sum += warp_sums[v][lane];
      dw_partial[(int64_t(blockIdx.x) * p.C + c) * p.H + h] = sum;
    }
    __syncthreads();  // warp 0 has read warp_sums before the next class overwrites it
  }

#pragma unroll
  for (int k = 0; k < kRowsPerWarp; ++k) {
    const int64_t n = row0 + int64_t(kWarps) * k;
    if (h_ok && n < p.N) da[n * p.H + h] = from_compute<scalar_t>(da_k[k]);
  }
}

// dw_y[h, c] = sum_{b = 0}^{n_blocks - 1} dw_partial[b, c, h], in order of b (0 when n_blocks == 0).
// i = c * H + h: consecutive threads read consecutive partials (coalesced); the (H, C) store is strided
// but only H * C elements are written.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
class_conditional_dw_kernel(const compute_t<scalar_t>* __restrict__ dw_partial,  // (n_blocks, C, H)
                            scalar_t* __restrict__ dw_y,                         // (H, C) contiguous out
                            int64_t n_blocks,                                    // row blocks of the bwd kernel
                            int64_t H, int64_t C) {
  using acc_t = compute_t<scalar_t>;
  const int64_t total = H * C;
  const int64_t step = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < total; i += step) {
    const int64_t c = i / H;
    const int64_t h = i - c * H;
    acc_t sum = acc_t(0);
    for (int64_t b = 0; b < n_blocks; ++b) sum += dw_partial[b * total + i];
    dw_y[h * C + c] = from_compute<scalar_t>(sum);
  }
}

void check_sizes(const char* fn, int64_t N, int64_t n_l, int64_t H, int64_t C, const int64_t* classes) {
  if (N < 0 || H < 0 || C < 0) {
    throw std::invalid_argument(std::string("ssvae_fast._C_cuda.") + fn + ": sizes must be non-negative, got N=" +
                                std::to_string(N) + ", H=" + std::to_string(H) + ", C=" + std::to_string(C));
  }
  if (n_l < 0 || n_l > N) {
    throw std::invalid_argument(std::string("ssvae_fast._C_cuda.") + fn + ": n_l must be in [0, N = " +
                                std::to_string(N) + "], got " + std::to_string(n_l));
  }
  if (n_l > 0 && classes == nullptr) {
    throw std::invalid_argument(std::string("ssvae_fast._C_cuda.") + fn + ": classes is a null pointer but n_l = " +
                                std::to_string(n_l));
  }
}

// Calls launch(scalar_t{}, std::integral_constant<Activation, kAct>{}) with scalar_t the element type of
// dtype and kAct the activation (host side).
template <typename Launch>
void dispatch_type_and_activation(ScalarType dtype, Activation activation, const char* op_name, Launch&& launch) {
  dispatch_scalar_type(dtype, op_name, [&](auto tag) {
    if (activation == Activation::kSoftplus) {
      launch(tag, std::integral_constant<Activation, Activation::kSoftplus>{});
    } else {
      launch(tag, std::integral_constant<Activation, Activation::kRelu>{});
    }
  });
}

template <typename scalar_t, Activation kAct>
void launch_forward(const ClassConditionalForwardArgs& args, cudaStream_t stream) {
  const unsigned int blocks = grid_stride_blocks(args.N * args.H, kThreads);
  class_conditional_fwd_kernel<scalar_t, kAct><<<blocks, kThreads, 0, stream>>>(args);
  check_launch("class_conditional_fwd_kernel");
}

template <typename scalar_t, Activation kAct>
void launch_backward(const ClassConditionalBackwardArgs& args, cudaStream_t stream) {
  const int64_t row_blocks = (args.N + kBwdRows - 1) / kBwdRows;
  if (args.N > 0 && args.H > 0) {
    const dim3 grid(static_cast<unsigned int>(row_blocks),
                    static_cast<unsigned int>((args.H + kBwdHidden - 1) / kBwdHidden));
    class_conditional_bwd_kernel<scalar_t, kAct><<<grid, kThreads, 0, stream>>>(args);
    check_launch("class_conditional_bwd_kernel");
  }
  if (args.H * args.C > 0) {  // with N == 0 this writes zeros
    class_conditional_dw_kernel<scalar_t><<<grid_stride_blocks(args.H * args.C, kThreads), kThreads, 0, stream>>>(
        static_cast<const compute_t<scalar_t>*>(args.dw_partial), static_cast<scalar_t*>(args.dw_y), row_blocks,
        args.H, args.C);
    check_launch("class_conditional_dw_kernel");
  }
}

}  // namespace

void class_conditional_forward(const ClassConditionalForwardArgs& args, ScalarType dtype, Activation activation,
                               std::uintptr_t stream) {
  check_sizes("class_conditional_forward", args.N, args.n_l, args.H, args.C, args.classes);
  const int64_t rows = args.n_l + (args.N - args.n_l) * args.C;  // output rows
  if (rows * args.H == 0) return;  // empty output
  auto cuda_stream = reinterpret_cast<cudaStream_t>(stream);
  dispatch_type_and_activation(dtype, activation, "class_conditional_forward", [&](auto tag, auto act) {
    launch_forward<decltype(tag), decltype(act)::value>(args, cuda_stream);
  });
}

void class_conditional_backward(const ClassConditionalBackwardArgs& args, ScalarType dtype, Activation activation,
                                std::uintptr_t stream) {
  check_sizes("class_conditional_backward", args.N, args.n_l, args.H, args.C, args.classes);
  const int64_t row_blocks = (args.N + kBwdRows - 1) / kBwdRows;
  const int64_t hidden_blocks = (args.H + kBwdHidden - 1) / kBwdHidden;
  if (row_blocks > int64_t(std::numeric_limits<int>::max()) || hidden_blocks > 65535) {
    throw std::invalid_argument("ssvae_fast._C_cuda.class_conditional_backward: N = " + std::to_string(args.N) +
                                " or H = " + std::to_string(args.H) +
                                " exceeds the grid (N < 2**31 * 64, H < 65536 * 32)");
  }
  auto cuda_stream = reinterpret_cast<cudaStream_t>(stream);
  dispatch_type_and_activation(dtype, activation, "class_conditional_backward", [&](auto tag, auto act) {
    launch_backward<decltype(tag), decltype(act)::value>(args, cuda_stream);
  });
}

}  // namespace cuda
}  // namespace ssvae_fast
