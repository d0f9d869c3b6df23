// CPU kernels of the reparameterization + Gaussian KL epilogue (formulas in gaussian_reparam_kl.h).
//
// What is fused: torch's plain formula (slices, exp, mul, add for z; square, exp, sub, sub, sum for
// the KL) makes ~8 passes and as many (R, Z) temporaries, and autograd's backward as many again; here
// one pass per direction reads head and eps once. R * Z = 116 K elements at MNIST sizes (B = 256).
//
// Numerics: float32 exp through vec_math.h's exp_f32 (<= 1 ulp, gradual underflow, inf past 88.72 as
// torch), float64 through libm; bfloat16 loaded into float32, z and the gradients rounded once on store,
// kl kept in float32; a bf16 row is staged (bfloat16.h: its chunks widened to float buffers, the float32 row
// loop run on them, the outputs rounded from float buffers), the same values at the float32 loop's speed.
// The KL row sum accumulates in double (each term in double).
// Parallelism: rows per OpenMP iteration, schedule(static); serial below kParallelGrainElements.

#include "gaussian_reparam_kl.h"

#include <algorithm>

#include "bfloat16.h"
#include "vec_math.h"

namespace ssvae_fast {
namespace cpu {
namespace {

// ---- float32 and bfloat16 (computed in float32) ------------------------------------------------------
//
// Each row loop is a template over the storage type S (float or bf16_t), inlined into one cloned plain
// function per storage type.

template <typename S>
inline double forward_row_f32(const S* mu, const S* logvar, const S* eps, S* z, int64_t Z) {
  double acc = 0.0;
  SSVAE_FAST_SIMD_SUM_ACC
  for (int64_t k = 0; k < Z; ++k) {
    const float m = load(mu[k]), lv = load(logvar[k]);
    store(z[k], m + exp_f32(0.5f * lv) * load(eps[k]));
    acc += double(m) * double(m) + double(exp_f32(lv)) - 1.0 - double(lv);
  }
  return 0.5 * acc;
}

// kGz: grad_z given (else zero); kHead: dmu and dlogvar wanted; kEps: deps wanted. Specialized so that the
// loop holds no test.
template <bool kGz, bool kHead, bool kEps, typename S>
inline void backward_row_f32(const S* mu, const S* logvar, const S* eps, const S* gz, float gk, S* dmu,
                             S* dlogvar, S* deps, int64_t Z) {
  SSVAE_FAST_SIMD
  for (int64_t k = 0; k < Z; ++k) {
    const float m = load(mu[k]), lv = load(logvar[k]);
    const float sd = exp_f32(0.5f * lv);
    const float g = kGz ? load(gz[k]) : 0.0f;
    if (kHead) {
      store(dmu[k], g + gk * m);
      store(dlogvar[k], 0.5f * g * load(eps[k]) * sd + 0.5f * gk * (exp_f32(lv) - 1.0f));
    }
    if (kEps) store(deps[k], g * sd);
  }
}

template <typename S>
inline void backward_row_dispatch(const S* mu, const S* logvar, const S* eps, const S* gz, float gk, S* dmu,
                                  S* dlogvar, S* deps, int64_t Z) {
  dispatch_flags(gz != nullptr, dmu != nullptr, [&](auto with_gz, auto head) {
    constexpr bool kGz = decltype(with_gz)::value, kHead = decltype(head)::value;
    if (deps != nullptr) {
      backward_row_f32<kGz, kHead, true>(mu, logvar, eps, gz, gk, dmu, dlogvar, deps, Z);
    } else {
      backward_row_f32<kGz, kHead, false>(mu, logvar, eps, gz, gk, dmu, dlogvar, deps, Z);
    }
  });
}

SSVAE_FAST_TARGET_CLONES
double forward_row(const float* mu, const float* logvar, const float* eps, float* z, int64_t Z) {
  return forward_row_f32(mu, logvar, eps, z, Z);
}

// The float rows of a bf16 row chunk (bfloat16.h's staging).
struct StagedChunk {
  float mu[kStage], logvar[kStage], eps[kStage], gz[kStage], out[3][kStage];
};

SSVAE_FAST_TARGET_CLONES
double forward_row(const bf16_t* mu, const bf16_t* logvar, const bf16_t* eps, bf16_t* z, int64_t Z) {
  StagedChunk c;
  double kl = 0.0;
  for (int64_t k0 = 0; k0 < Z; k0 += kStage) {
    const int64_t n = std::min(kStage, Z - k0);
    load_row(mu + k0, c.mu, n);
    load_row(logvar + k0, c.logvar, n);
    load_row(eps + k0, c.eps, n);
    kl += forward_row_f32(c.mu, c.logvar, c.eps, c.out[0], n);
    store_row(c.out[0], z + k0, n);
  }
  return kl;
}

SSVAE_FAST_TARGET_CLONES
void backward_row(const float* mu, const float* logvar, const float* eps, const float* gz, float gk, float* dmu,
                  float* dlogvar, float* deps, int64_t Z) {
  backward_row_dispatch(mu, logvar, eps, gz, gk, dmu, dlogvar, deps, Z);
}

SSVAE_FAST_TARGET_CLONES
void backward_row(const bf16_t* mu, const bf16_t* logvar, const bf16_t* eps, const bf16_t* gz, float gk,
                  bf16_t* dmu, bf16_t* dlogvar, bf16_t* deps, int64_t Z) {
  StagedChunk c;
  for (int64_t k0 = 0; k0 < Z; k0 += kStage) {
    const int64_t n = std::min(kStage, Z - k0);
    load_row(mu + k0, c.mu, n);
    load_row(logvar + k0, c.logvar, n);
    if (dmu != nullptr) load_row(eps + k0, c.eps, n);  // read by dlogvar alone
    if (gz != nullptr) load_row(gz + k0, c.gz, n);
    backward_row_dispatch<float>(c.mu, c.logvar, c.eps, gz != nullptr ? c.gz : nullptr, gk,
                                 dmu != nullptr ? c.out[0] : nullptr, dmu != nullptr ? c.out[1] : nullptr,
                                 deps != nullptr ? c.out[2] : nullptr, n);
    if (dmu != nullptr) {
      store_row(c.out[0], dmu + k0, n);
      store_row(c.out[1], dlogvar + k0, n);
    }
    if (deps != nullptr) store_row(c.out[2], deps + k0, n);
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
void gaussian_reparam_kl_forward(const scalar_t* head, const scalar_t* eps, scalar_t* z, compute_t<scalar_t>* kl,
                                 int64_t R, int64_t Z) {
  parallel_for(R, R * Z, [&](int64_t r) {
    const scalar_t* mu = head + r * 2 * Z;
    kl[r] = compute_t<scalar_t>(forward_row(mu, mu + Z, eps + r * Z, z + r * Z, Z));
  });
}

template <typename scalar_t>
void gaussian_reparam_kl_backward(const scalar_t* head, const scalar_t* eps, const scalar_t* grad_z,
                                  const compute_t<scalar_t>* grad_kl, scalar_t* grad_head, scalar_t* grad_eps,
                                  int64_t R, int64_t Z) {
  parallel_for(R, R * Z, [&](int64_t r) {
    const scalar_t* mu = head + r * 2 * Z;
    scalar_t* dmu = grad_head != nullptr ? grad_head + r * 2 * Z : nullptr;
    backward_row(mu, mu + Z, eps + r * Z, grad_z != nullptr ? grad_z + r * Z : nullptr,
                 grad_kl != nullptr ? grad_kl[r] : compute_t<scalar_t>(0), dmu, dmu != nullptr ? dmu + Z : nullptr,
                 grad_eps != nullptr ? grad_eps + r * Z : nullptr, Z);
  });
}

template void gaussian_reparam_kl_forward<float>(const float*, const float*, float*, float*, int64_t,
                                                 int64_t);
template void gaussian_reparam_kl_forward<double>(const double*, const double*, double*, double*, int64_t,
                                                  int64_t);
template void gaussian_reparam_kl_forward<bf16_t>(const bf16_t*, const bf16_t*, bf16_t*, float*, int64_t,
                                                  int64_t);
template void gaussian_reparam_kl_backward<float>(const float*, const float*, const float*, const float*,
                                                  float*, float*, int64_t, int64_t);
template void gaussian_reparam_kl_backward<double>(const double*, const double*, const double*,
                                                   const double*, double*, double*, int64_t, int64_t);
template void gaussian_reparam_kl_backward<bf16_t>(const bf16_t*, const bf16_t*, const bf16_t*, const float*,
                                                   bf16_t*, bf16_t*, int64_t, int64_t);

}  // namespace cpu
}  // namespace ssvae_fast
