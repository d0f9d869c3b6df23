// Host launchers of the fused decoder output layer + Bernoulli log-likelihood kernels
// (csrc/cuda/bernoulli_loglik_linear.cu). Plain C++ declarations: no CUDA headers.
// Pointers are device pointers; `stream` is a cudaStream_t passed as an integer; strides in elements.
#pragma once

#include <cstdint>

#include "scalar_type.h"

namespace ssvae_fast {
namespace cuda {

// Output tile of one block: rows (of h, i.e. (example, class) pairs) x columns (pixels d). The launcher's
// caller sizes the ll_partial workspace as (ceil(D / kBernoulliBlockD), M).
constexpr int kBernoulliBlockM = 64;
constexpr int kBernoulliBlockD = 64;

// How the logits' products are formed (fp32 accumulation always; float64 inputs always use kIeee).
//   kIeee        FMA tiles on the CUDA cores: exact float products, the fp32 (fp64) GEMM of any BLAS
//   kTensorCore  tensor-core MMA: float32 inputs rounded to TF32 (10-bit mantissa), bfloat16/float16
//                inputs as they are; Python calls this precision "tf32"
enum class MatmulPrecision { kIeee, kTensorCore };

// Rows of h, labelled first: row m < n_l scores x[m] (a labelled example, one row), row n_l + j * C + c
// scores x[n_l + j] (an unlabelled example, one row per class c): the example of row m is
//   e(m) = m < n_l ? m : n_l + (m - n_l) / C,      M = n_l + (N - n_l) * C.
// n_l = 0 is the every-class form (M = N * C, e(m) = m / C).
struct BernoulliLinearForwardArgs {
  const void* h = nullptr;       // (M, H) decoder hidden rows in the layout above
  const void* weight = nullptr;  // (D, H) output layer weight
  const void* bias = nullptr;    // (D,) output layer bias, or nullptr
  const void* x = nullptr;       // (N, D) data; row e(m) is shared by the rows m of its example
  void* s = nullptr;             // (M, D) contiguous out: x - sigmoid(l), or nullptr (not stored)
  void* ll_partial = nullptr;    // (ceil(D / kBernoulliBlockD), M) workspace in the compute dtype
  void* ll = nullptr;            // (M,) contiguous out: sum_d x * l - softplus(l)
  int64_t M = 0;                 // rows of h (n_l + (N - n_l) * C)
  int64_t D = 0;                 // pixels (rows of weight)
  int64_t H = 0;                 // hidden units (the GEMM's reduction length)
  int64_t C = 0;                 // rows of h per unlabelled example (>= 1 when M > n_l)
  int64_t n_l = 0;               // labelled rows (one per example) before the enumerated ones, 0 <= n_l <= M
  int64_t stride_hm = 0;         // elements between rows of h
  int64_t stride_hk = 0;         // elements between hidden units of h
  int64_t stride_wd = 0;         // elements between rows of weight
  int64_t stride_wk = 0;         // elements between hidden units of weight
  int64_t stride_b = 0;          // elements between entries of bias
  int64_t stride_xn = 0;         // elements between rows of x
  int64_t stride_xd = 0;         // elements between pixels of x
};

// ll[m] = sum_d x[e(m), d] * l[m, d] - softplus(l[m, d]), l = h W^T + b, and s = x - sigmoid(l) when
// args.s is not null; the (M, D) logits never reach device memory. Deterministic.
void bernoulli_loglik_linear_forward(const BernoulliLinearForwardArgs& args, ScalarType dtype,
                                     MatmulPrecision precision, std::uintptr_t stream);

}  // namespace cuda
}  // namespace ssvae_fast
