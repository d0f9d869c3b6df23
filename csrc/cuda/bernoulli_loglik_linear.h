// Host launchers of the fused decoder output layer + log-likelihood kernels (csrc/cuda/bernoulli_loglik_linear.cu):
// Bernoulli (logits) and Gaussian with a learned per-dimension log-variance (means), the same tile kernels
// with the likelihood as a template parameter of their epilogue. Plain C++ declarations: no CUDA headers.
// Pointers are device pointers; `stream` is a cudaStream_t passed as an integer; strides in elements.
#pragma once

#include <cstdint>

#include "scalar_type.h"

namespace ssvae_fast {
namespace cuda {

// Output tile of one block: rows (of h, i.e. (example, class) pairs) x columns (pixels d). The launcher's
// caller sizes the ll_partial workspace as (ceil(D / kBernoulliBlockD), M) (kGaussianBlockD: the same tiles).
constexpr int kBernoulliBlockM = 64;
constexpr int kBernoulliBlockD = 64;
constexpr int kGaussianBlockD = kBernoulliBlockD;

// How the logits' (means') products are formed (fp32 accumulation always; float64 inputs always use kIeee).
//   kIeee        FMA tiles on the CUDA cores: exact float products, the fp32 (fp64) GEMM of any BLAS
//   kTensorCore  tensor-core MMA: float32 inputs rounded to TF32 (10-bit mantissa), bfloat16/float16
//                inputs as they are; Python calls this precision "tf32"
enum class MatmulPrecision { kIeee, kTensorCore };

// Rows of h, labelled first: row m < n_l scores x[m] (a labelled example, one row), row n_l + j * C + c
// scores x[n_l + j] (an unlabelled example, one row per class c): the example of row m is
//   e(m) = m < n_l ? m : n_l + (m - n_l) / C,      M = n_l + (N - n_l) * C.
// n_l = 0 is the every-class form (M = N * C, e(m) = m / C). One struct for both likelihoods: l below is
// the output layer's value h W^T + b (Bernoulli: the logits; Gaussian: the means mu).
struct LinearLoglikForwardArgs {
  const void* h = nullptr;       // (M, H) decoder hidden rows in the layout above
  const void* weight = nullptr;  // (D, H) output layer weight
  const void* bias = nullptr;    // (D,) output layer bias, or nullptr
  const void* x = nullptr;       // (N, D) data; row e(m) is shared by the rows m of its example
  // (D,) contiguous, in the compute dtype: p = exp(-logvar), the Gaussian's precisions (computed by the
  // caller). Read only by the Gaussian launcher; ignored (nullptr) for the Bernoulli.
  const void* precision_vec = nullptr;
  void* s = nullptr;             // (M, D) contiguous out, or nullptr (not stored): Bernoulli x - sigmoid(l),
                                 // Gaussian p (x - mu)
  void* ll_partial = nullptr;    // (ceil(D / kBernoulliBlockD), M) workspace in the compute dtype
  void* ll = nullptr;            // (M,) contiguous out: Bernoulli sum_d x * l - softplus(l), Gaussian
                                 // -0.5 sum_d p (x - mu)^2 (the caller adds -0.5 (sum logvar + D log 2 pi))
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
using BernoulliLinearForwardArgs = LinearLoglikForwardArgs;  // precision_vec unused
using GaussianLinearForwardArgs = LinearLoglikForwardArgs;   // precision_vec required when M * D > 0

// ll[m] = sum_d x[e(m), d] * l[m, d] - softplus(l[m, d]), l = h W^T + b, and s = x - sigmoid(l) when
// args.s is not null; the (M, D) logits never reach device memory. Deterministic.
void bernoulli_loglik_linear_forward(const BernoulliLinearForwardArgs& args, ScalarType dtype,
                                     MatmulPrecision precision, std::uintptr_t stream);

// ll[m] = -0.5 sum_d p[d] (x[e(m), d] - mu[m, d])^2, mu = h W^T + b, p = args.precision_vec, and
// s = p (x - mu) when args.s is not null; the (M, D) means never reach device memory. The row-independent
// rest of the Gaussian log-likelihood, -0.5 (sum_d logvar[d] + D log 2 pi), is the caller's to add.
// Deterministic.
void gaussian_loglik_linear_forward(const GaussianLinearForwardArgs& args, ScalarType dtype,
                                    MatmulPrecision precision, std::uintptr_t stream);

}  // namespace cuda
}  // namespace ssvae_fast
