// CPU kernels of the ELBO reduction (formulas and VJP in elbo_reduction.h).
//
// What is fused: torch's version is log_softmax, gather, exp, three adds, a product, a row sum and a
// cat, each a pass with its own temporary, and autograd replays as many backward ops. Here one pass per
// direction reads each input once and writes each output once. (n_l + n_u) * C = 2560 elements at
// MNIST sizes, so this saves launch overheads more than bandwidth.
//
// Numerics: log-softmax with the row maximum subtracted, in double; each loss and gradient is computed
// in double and rounded once (bfloat16 inputs are read exactly; the losses come out in float32, the
// gradients of bfloat16 inputs in bfloat16). Parallelism: examples per OpenMP iteration when there are many.

#include "elbo_reduction.h"

#include <cmath>
#include <vector>

#include "vec_math.h"

namespace ssvae_fast {
namespace cpu {
namespace {

// log_q[c] = l[c] - logsumexp(l), in double, with the row maximum subtracted.
template <typename scalar_t>
void log_softmax_row(const scalar_t* l, double* log_q, int64_t C) {
  double m = -INFINITY;
  for (int64_t c = 0; c < C; ++c) m = std::max(m, double(load(l[c])));
  double sum = 0.0;
  for (int64_t c = 0; c < C; ++c) sum += std::exp(double(load(l[c])) - m);
  const double lse = m + std::log(sum);
  for (int64_t c = 0; c < C; ++c) log_q[c] = double(load(l[c])) - lse;
}

// t[c] = kl_u[c] - ll_u[c] + log C + log_q[c] over the C classes of one unlabelled row; returns the row's
// loss f = sum_c q[c] t[c].
template <typename scalar_t>
double unlabelled_terms(const scalar_t* ll_u, const scalar_t* kl_u, const double* log_q, double log_c, int64_t C,
                        double* t) {
  double f = 0.0;
  for (int64_t c = 0; c < C; ++c) {
    t[c] = double(load(kl_u[c])) - double(load(ll_u[c])) + log_c + log_q[c];
    f += std::exp(log_q[c]) * t[c];
  }
  return f;
}

constexpr int64_t kParallelRows = 4096;

// Calls row(r, log_q, t) for r = 0..n-1, with log_q and t scratch rows of C doubles owned by the calling
// thread; the rows are split over the OpenMP threads when there are at least kParallelRows.
template <typename RowFn>
void for_each_row(int64_t n, int64_t C, RowFn&& row) {
  const bool parallel = n >= kParallelRows;
  (void)parallel;
#ifdef _OPENMP
#pragma omp parallel if (parallel)
#endif
  {
    std::vector<double> log_q(static_cast<size_t>(C)), t(static_cast<size_t>(C));
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
    for (int64_t r = 0; r < n; ++r) row(r, log_q.data(), t.data());
  }
}

}  // namespace

template <typename scalar_t>
void elbo_reduction_forward(const scalar_t* logits_y, const int64_t* y_l, const scalar_t* ll_l,
                            const scalar_t* kl_l, const scalar_t* ll_u, const scalar_t* kl_u,
                            compute_t<scalar_t>* loss, int64_t n_l, int64_t n_u, int64_t C, double alpha) {
  const double log_c = std::log(double(C));
  for_each_row(n_l + n_u, C, [&](int64_t r, double* log_q, double* t) {
    log_softmax_row(logits_y + r * C, log_q, C);
    if (r < n_l) {
      loss[r] = compute_t<scalar_t>(double(load(kl_l[r])) - double(load(ll_l[r])) + log_c - alpha * log_q[y_l[r]]);
    } else {
      const int64_t j = r - n_l;
      loss[r] = compute_t<scalar_t>(unlabelled_terms(ll_u + j * C, kl_u + j * C, log_q, log_c, C, t));
    }
  });
}

template <typename scalar_t>
void elbo_reduction_backward(const compute_t<scalar_t>* grad, const scalar_t* logits_y, const int64_t* y_l,
                             const scalar_t* ll_u, const scalar_t* kl_u, scalar_t* grad_logits_y,
                             scalar_t* grad_ll_l, scalar_t* grad_kl_l, scalar_t* grad_ll_u,
                             scalar_t* grad_kl_u, int64_t n_l, int64_t n_u, int64_t C, double alpha) {
  const double log_c = std::log(double(C));
  for_each_row(n_l + n_u, C, [&](int64_t r, double* log_q, double* t) {
    const double g = double(grad[r]);
    if (r < n_l) {
      if (grad_ll_l != nullptr) store(grad_ll_l[r], compute_t<scalar_t>(-g));
      if (grad_kl_l != nullptr) store(grad_kl_l[r], compute_t<scalar_t>(g));
      if (grad_logits_y != nullptr) {
        log_softmax_row(logits_y + r * C, log_q, C);
        const int64_t y = y_l[r];
        for (int64_t c = 0; c < C; ++c) {
          const double q = std::exp(log_q[c]);
          store(grad_logits_y[r * C + c], compute_t<scalar_t>(-alpha * g * ((c == y ? 1.0 : 0.0) - q)));
        }
      }
      return;
    }
    const int64_t j = r - n_l;
    log_softmax_row(logits_y + r * C, log_q, C);
    const double f = unlabelled_terms(ll_u + j * C, kl_u + j * C, log_q, log_c, C, t);
    for (int64_t c = 0; c < C; ++c) {
      const double gq = g * std::exp(log_q[c]);
      if (grad_ll_u != nullptr) store(grad_ll_u[j * C + c], compute_t<scalar_t>(-gq));
      if (grad_kl_u != nullptr) store(grad_kl_u[j * C + c], compute_t<scalar_t>(gq));
      if (grad_logits_y != nullptr) store(grad_logits_y[r * C + c], compute_t<scalar_t>(gq * (t[c] - f)));
    }
  });
}

template void elbo_reduction_forward<float>(const float*, const int64_t*, const float*, const float*,
                                            const float*, const float*, float*, int64_t, int64_t, int64_t,
                                            double);
template void elbo_reduction_forward<double>(const double*, const int64_t*, const double*, const double*,
                                             const double*, const double*, double*, int64_t, int64_t,
                                             int64_t, double);
template void elbo_reduction_backward<float>(const float*, const float*, const int64_t*, const float*,
                                             const float*, float*, float*, float*, float*, float*, int64_t,
                                             int64_t, int64_t, double);
template void elbo_reduction_backward<double>(const double*, const double*, const int64_t*,
                                              const double*, const double*, double*, double*, double*,
                                              double*, double*, int64_t, int64_t, int64_t, double);
template void elbo_reduction_forward<bf16_t>(const bf16_t*, const int64_t*, const bf16_t*, const bf16_t*,
                                             const bf16_t*, const bf16_t*, float*, int64_t, int64_t, int64_t,
                                             double);
template void elbo_reduction_backward<bf16_t>(const float*, const bf16_t*, const int64_t*, const bf16_t*,
                                              const bf16_t*, bf16_t*, bf16_t*, bf16_t*, bf16_t*, bf16_t*, int64_t,
                                              int64_t, int64_t, double);

}  // namespace cpu
}  // namespace ssvae_fast
