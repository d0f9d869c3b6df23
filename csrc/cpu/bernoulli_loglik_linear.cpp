// CPU kernels of bernoulli_loglik_linear's elementwise part (the GEMMs are torch's; see the header).
//
// What is fused: after the logits GEMM, torch would add the bias (addmm copies it into the output first),
// run softplus (one pass, one (M, D) temporary), the x * l product and its row sum (two more), sigmoid
// for the backward (another) and x - sigmoid (another): six passes over M * D = 1.8 M elements at MNIST
// sizes (B = 256). Here one pass reads each GEMM output once and writes ll and, in place,
// s = x - sigmoid(l), which is all the backward needs (dl = g * s with g a per-row scalar); exp(-|l|)
// is shared by softplus and sigmoid, and the log of softplus is taken once per block of a row (below).
// The backward's elementwise parts (g * h with db, then the row scaling of s W) are two more passes
// over (M, H)-sized data, without any (M, D) temporary.
//
// Numerics: softplus(l) = max(l, 0) + log1p(exp(-|l|)), exact for every finite l; sigmoid on the side
// where exp cannot overflow; float32 with vec_math.h's exp polynomial (<= 1 ulp) and one libm log per
// block of 512 elements of a product in double, float64 with libm throughout; bfloat16 loaded into float32
// and computed as float32, s rounded to bfloat16 once on store, ll kept in float32. Row sums in double.
// Extreme logits: exp(-|l|) is 0 past |l| = 87, so softplus(l) = max(l, 0) exactly there (the true
// correction is below 1.7e-38), and s = x - [l > 0]; |l| up to FLT_MAX stays finite.
//
// Parallelism: OpenMP `parallel for schedule(static)` over rows (epilogue) or over fixed blocks of rows
// (backward: db's partials); serial below kParallelGrainElements elements.

#include "bernoulli_loglik_linear.h"

#include <algorithm>
#include <vector>

#include "vec_math.h"

namespace ssvae_fast {
namespace cpu {
namespace {

// ---- float32 and bfloat16 (computed in float32) ------------------------------------------------------
//
// With v = l + b and e = exp(-|v|) (vec_math.h's polynomial), softplus(v) = max(v, 0) + log1p(e), and the
// row's sum of log1p(e_d) is the log of one product: sum_d log1p(e_d) = log(prod_d (1 + e_d)). Each
// factor 1 + e_d is exact in double and lies in [1, 2], so a product over kProductBlock elements stays
// below 2^512 and rounds only by 1e-16 relative per factor; one libm log per block then replaces a log
// per element (the row costs one exp and, for s, one division per element: 0.75 vs 1.36 ns/element,
// M = 2300 rows of D = 784 on one core). The rest of the row sum, x v - max(v, 0), is formed in float
// (exact for binary x) and summed in double. Each loop is a template over the storage type S (float or
// bf16_t: loaded into float, s rounded once on store), inlined into one cloned function per storage type.

constexpr int64_t kProductBlock = 512;

// Elements d0..d1-1 of a row, with v = l + b (kBias) or l: adds x v - max(v, 0) to acc_sum, writes
// s = x - sigmoid(v) (kStoreS) and returns prod_d (1 + exp(-|v|)).
template <bool kStoreS, bool kBias, typename S>
inline double epilogue_block(const S* l, const S* b, const S* x, S* s, int64_t d0, int64_t d1, double& acc_sum) {
  double acc = acc_sum, prod = 1.0;
  SSVAE_FAST_SIMD_SUM_ACC_PROD
  for (int64_t d = d0; d < d1; ++d) {
    const float v = kBias ? load(l[d]) + load(b[d]) : load(l[d]);
    const float xd = load(x[d]);
    const float e = exp_neg_f32(std::fabs(v));
    if (kStoreS) store(s[d], xd - sigmoid_from_exp_neg_abs_f32(v, e));
    prod *= 1.0 + double(e);
    acc += double(xd * v - (v > 0.0f ? v : 0.0f));
  }
  acc_sum = acc;
  return prod;
}

// Returns sum_d x[d] v[d] - softplus(v[d]) (double) with v = l + b (b may be nullptr: zero), and
// writes s[d] = x[d] - sigmoid(v[d]) unless s is nullptr (s may be l itself).
template <typename S>
inline double epilogue_row_f32(const S* l, const S* b, const S* x, S* s, int64_t D) {
  double acc = 0.0, log_sum = 0.0;
  for (int64_t d0 = 0; d0 < D; d0 += kProductBlock) {
    const int64_t d1 = std::min(D, d0 + kProductBlock);
    double prod = 1.0;
    dispatch_flags(s != nullptr, b != nullptr, [&](auto store_s, auto bias) {
      prod = epilogue_block<decltype(store_s)::value, decltype(bias)::value>(l, b, x, s, d0, d1, acc);
    });
    log_sum += std::log(prod);
  }
  return acc - log_sum;
}

SSVAE_FAST_TARGET_CLONES
double epilogue_row(const float* l, const float* b, const float* x, float* s, int64_t D) {
  return epilogue_row_f32(l, b, x, s, D);
}

// bf16: each product block's l and x widened to float buffers, the float32 block loop run on them and s
// rounded from a float buffer (bfloat16.h's staging): the same blocks and values as a float row would give.
// The bias b comes widened already (once per call: every row shares it).
SSVAE_FAST_TARGET_CLONES
double epilogue_row(const bf16_t* l, const float* b, const bf16_t* x, bf16_t* s, int64_t D) {
  float l_f[kProductBlock], x_f[kProductBlock], s_f[kProductBlock];
  double acc = 0.0, log_sum = 0.0;
  for (int64_t d0 = 0; d0 < D; d0 += kProductBlock) {
    const int64_t n = std::min(D - d0, kProductBlock);
    load_row(l + d0, l_f, n);
    load_row(x + d0, x_f, n);
    const float* b_f = b != nullptr ? b + d0 : nullptr;
    double prod = 1.0;
    dispatch_flags(s != nullptr, b != nullptr, [&](auto store_s, auto bias) {
      prod = epilogue_block<decltype(store_s)::value, decltype(bias)::value>(l_f, b_f, x_f, s_f, 0, n, acc);
    });
    log_sum += std::log(prod);
    if (s != nullptr) store_row(s_f, s + d0, n);
  }
  return acc - log_sum;
}

// y[j] *= g (in place) over one row.
template <typename S>
inline void scale_row_inplace_f32(S* y, float g, int64_t n) {
  SSVAE_FAST_SIMD
  for (int64_t j = 0; j < n; ++j) store(y[j], load(y[j]) * g);
}

// y[j] = g * v[j] over one row.
template <typename S>
inline void scale_row_f32(const S* v, float g, S* y, int64_t n) {
  SSVAE_FAST_SIMD
  for (int64_t j = 0; j < n; ++j) store(y[j], g * load(v[j]));
}

// acc[j] += double(g * v[j]) over one row (the product rounded to float first, as dl = g * s would be in
// float32).
template <typename S>
inline void accumulate_scaled_row_f32(double* acc, const S* v, float g, int64_t n) {
  SSVAE_FAST_SIMD
  for (int64_t j = 0; j < n; ++j) acc[j] += double(g * load(v[j]));
}

SSVAE_FAST_TARGET_CLONES
void scale_row_inplace(float* y, float g, int64_t n) { scale_row_inplace_f32(y, g, n); }

SSVAE_FAST_TARGET_CLONES
void scale_row(const float* v, float g, float* y, int64_t n) { scale_row_f32(v, g, y, n); }

// bf16 rows of the scalings, staged (bfloat16.h); each chunk is read before it is written, so y may be v.
SSVAE_FAST_TARGET_CLONES
void scale_row(const bf16_t* v, float g, bf16_t* y, int64_t n) {
  float buf[kStage];
  for (int64_t j0 = 0; j0 < n; j0 += kStage) {
    const int64_t m = std::min(kStage, n - j0);
    load_row(v + j0, buf, m);
    scale_row_inplace_f32(buf, g, m);  // g * v[j], as scale_row_f32 (multiplication commutes exactly)
    store_row(buf, y + j0, m);
  }
}

SSVAE_FAST_TARGET_CLONES
void scale_row_inplace(bf16_t* y, float g, int64_t n) { scale_row(y, g, y, n); }

SSVAE_FAST_TARGET_CLONES
void accumulate_scaled_row(double* acc, const float* v, float g, int64_t n) { accumulate_scaled_row_f32(acc, v, g, n); }

SSVAE_FAST_TARGET_CLONES
void accumulate_scaled_row(double* acc, const bf16_t* v, float g, int64_t n) {
  float buf[kStage];
  for (int64_t j0 = 0; j0 < n; j0 += kStage) {
    const int64_t m = std::min(kStage, n - j0);
    load_row(v + j0, buf, m);
    accumulate_scaled_row_f32(acc + j0, buf, g, m);
  }
}

// ---- float64 ---------------------------------------------------------------------------------------

double epilogue_row(const double* l, const double* b, const double* x, double* s, int64_t D) {
  double acc = 0.0;
  for (int64_t d = 0; d < D; ++d) {
    const double v = b != nullptr ? l[d] + b[d] : l[d];
    acc += x[d] * v - softplus_f64(v);
    if (s != nullptr) s[d] = x[d] - sigmoid_f64(v);
  }
  return acc;
}

void scale_row_inplace(double* y, double g, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] *= g;
}

void scale_row(const double* v, double g, double* y, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] = g * v[j];
}

void accumulate_scaled_row(double* acc, const double* v, double g, int64_t n) {
  for (int64_t j = 0; j < n; ++j) acc[j] += g * v[j];
}

}  // namespace

template <typename scalar_t>
void bernoulli_linear_epilogue(const scalar_t* logits, const scalar_t* bias, const scalar_t* x,
                               compute_t<scalar_t>* ll, scalar_t* s, int64_t row0, int64_t rows, int64_t n_l,
                               int64_t C, int64_t D) {
  const WidenedOnce<scalar_t> b(bias, D);  // bf16: the bias widened once, not once per row
  parallel_for(rows, rows * D, [&](int64_t r) {
    const int64_t row = row0 + r;
    const scalar_t* xr = x + (row < n_l ? row : n_l + (row - n_l) / C) * D;
    ll[r] = compute_t<scalar_t>(epilogue_row(logits + r * D, b.data(), xr, s != nullptr ? s + r * D : nullptr, D));
  });
}

// One pass over fixed blocks of rows (block_begin: a partition that depends only on M): block i scales
// its rows of grad_h, writes its rows of g_h and sums g[r] s[r] over its rows in order into its own
// partial of db (each part only when its pointer is given); the partials are then summed in block
// order. Deterministic whatever the thread count.
template <typename scalar_t>
void bernoulli_linear_backward_rows(const scalar_t* s, const compute_t<scalar_t>* g, const scalar_t* h,
                                    scalar_t* grad_h, scalar_t* g_h, scalar_t* db, int64_t M, int64_t D, int64_t H) {
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(64, M / 32));
  const int64_t work = M * ((db != nullptr ? D : 0) + (grad_h != nullptr ? H : 0) + (g_h != nullptr ? H : 0));
  std::vector<double> partial(db != nullptr ? static_cast<size_t>(blocks * D) : 0, 0.0);
  parallel_for(blocks, work, [&](int64_t i) {
    for (int64_t r = block_begin(M, blocks, i); r < block_begin(M, blocks, i + 1); ++r) {
      // db first: grad_h may be s itself.
      if (db != nullptr) accumulate_scaled_row(partial.data() + i * D, s + r * D, g[r], D);
      if (grad_h != nullptr) scale_row_inplace(grad_h + r * H, g[r], H);
      if (g_h != nullptr) scale_row(h + r * H, g[r], g_h + r * H, H);
    }
  });
  if (db != nullptr) {
    for (int64_t d = 0; d < D; ++d) {
      double acc = 0.0;
      for (int64_t i = 0; i < blocks; ++i) acc += partial[i * D + d];
      store(db[d], compute_t<scalar_t>(acc));
    }
  }
}

template void bernoulli_linear_epilogue<float>(const float*, const float*, const float*, float*, float*,
                                               int64_t, int64_t, int64_t, int64_t, int64_t);
template void bernoulli_linear_epilogue<double>(const double*, const double*, const double*, double*,
                                                double*, int64_t, int64_t, int64_t, int64_t, int64_t);
template void bernoulli_linear_epilogue<bf16_t>(const bf16_t*, const bf16_t*, const bf16_t*, float*, bf16_t*,
                                                int64_t, int64_t, int64_t, int64_t, int64_t);
template void bernoulli_linear_backward_rows<float>(const float*, const float*, const float*, float*, float*,
                                                    float*, int64_t, int64_t, int64_t);
template void bernoulli_linear_backward_rows<double>(const double*, const double*, const double*, double*,
                                                     double*, double*, int64_t, int64_t, int64_t);
template void bernoulli_linear_backward_rows<bf16_t>(const bf16_t*, const float*, const bf16_t*, bf16_t*,
                                                     bf16_t*, bf16_t*, int64_t, int64_t, int64_t);

}  // namespace cpu
}  // namespace ssvae_fast
