// CPU kernels of the reparameterization + Gaussian KL epilogue (formulas in gaussian_reparam_kl.h).
//
// What is fused: torch's plain formula (slices, exp, mul, add for z; square, exp, sub, sub, sum for
// the KL) makes ~8 passes and as many (R, Z) temporaries, and autograd's backward as many again; here
// one pass per direction reads head and eps once. R * Z = 116 K elements at MNIST sizes (B = 256).
//
// Numerics: float32 exp through vec_math.h's exp_f32 (<= 1 ulp, gradual underflow, inf past 88.72 as
// torch), float64 through libm. The KL row sum accumulates in double (each term in double).
// Parallelism: rows per OpenMP iteration, schedule(static); serial below kParallelGrainElements.

#include "gaussian_reparam_kl.h"

#include "vec_math.h"

namespace ssvae_fast {
namespace cpu {
namespace {

// ---- float32 ---------------------------------------------------------------------------------------

SSVAE_FAST_TARGET_CLONES
double forward_row(const float* mu, const float* logvar, const float* eps, float* z, int64_t Z) {
  double acc = 0.0;
  SSVAE_FAST_SIMD_SUM_ACC
  for (int64_t k = 0; k < Z; ++k) {
    const float m = mu[k], lv = logvar[k];
    z[k] = m + exp_f32(0.5f * lv) * eps[k];
    acc += double(m) * double(m) + double(exp_f32(lv)) - 1.0 - double(lv);
  }
  return 0.5 * acc;
}

SSVAE_FAST_TARGET_CLONES
void backward_row(const float* mu, const float* logvar, const float* eps, const float* gz, float gk,
                  float* dmu, float* dlogvar, float* deps, int64_t Z) {
  SSVAE_FAST_SIMD
  for (int64_t k = 0; k < Z; ++k) {
    const float m = mu[k], lv = logvar[k];
    const float sd = exp_f32(0.5f * lv);
    const float g = gz != nullptr ? gz[k] : 0.0f;
    if (dmu != nullptr) {
      dmu[k] = g + gk * m;
      dlogvar[k] = 0.5f * g * eps[k] * sd + 0.5f * gk * (exp_f32(lv) - 1.0f);
    }
    if (deps != nullptr) deps[k] = g * sd;
  }
}

// ---- float64 ---------------------------------------------------------------------------------------

double forward_row(const double* mu, const double* logvar, const double* eps, double* z, int64_t Z) {
  double acc = 0.0;
  for (int64_t k = 0; k < Z; ++k) {
    const double m = mu[k], lv = logvar[k];
    z[k] = m + std::exp(0.5 * lv) * eps[k];
    acc += m * m + std::exp(lv) - 1.0 - lv;
  }
  return 0.5 * acc;
}

void backward_row(const double* mu, const double* logvar, const double* eps, const double* gz, double gk,
                  double* dmu, double* dlogvar, double* deps, int64_t Z) {
  for (int64_t k = 0; k < Z; ++k) {
    const double m = mu[k], lv = logvar[k];
    const double sd = std::exp(0.5 * lv);
    const double g = gz != nullptr ? gz[k] : 0.0;
    if (dmu != nullptr) {
      dmu[k] = g + gk * m;
      dlogvar[k] = 0.5 * g * eps[k] * sd + 0.5 * gk * (std::exp(lv) - 1.0);
    }
    if (deps != nullptr) deps[k] = g * sd;
  }
}

}  // namespace

template <typename scalar_t>
void gaussian_reparam_kl_forward(const scalar_t* head, const scalar_t* eps, scalar_t* z, scalar_t* kl,
                                 int64_t R, int64_t Z) {
  parallel_for(R, R * Z, [&](int64_t r) {
    const scalar_t* mu = head + r * 2 * Z;
    kl[r] = scalar_t(forward_row(mu, mu + Z, eps + r * Z, z + r * Z, Z));
  });
}

template <typename scalar_t>
void gaussian_reparam_kl_backward(const scalar_t* head, const scalar_t* eps, const scalar_t* grad_z,
                                  const scalar_t* grad_kl, scalar_t* grad_head, scalar_t* grad_eps,
                                  int64_t R, int64_t Z) {
  parallel_for(R, R * Z, [&](int64_t r) {
    const scalar_t* mu = head + r * 2 * Z;
    scalar_t* dmu = grad_head != nullptr ? grad_head + r * 2 * Z : nullptr;
    backward_row(mu, mu + Z, eps + r * Z, grad_z != nullptr ? grad_z + r * Z : nullptr,
                 grad_kl != nullptr ? grad_kl[r] : scalar_t(0), dmu, dmu != nullptr ? dmu + Z : nullptr,
                 grad_eps != nullptr ? grad_eps + r * Z : nullptr, Z);
  });
}

template void gaussian_reparam_kl_forward<float>(const float*, const float*, float*, float*, int64_t,
                                                 int64_t);
template void gaussian_reparam_kl_forward<double>(const double*, const double*, double*, double*, int64_t,
                                                  int64_t);
template void gaussian_reparam_kl_backward<float>(const float*, const float*, const float*, const float*,
                                                  float*, float*, int64_t, int64_t);
template void gaussian_reparam_kl_backward<double>(const double*, const double*, const double*,
                                                   const double*, double*, double*, int64_t, int64_t);

}  // namespace cpu
}  // namespace ssvae_fast
