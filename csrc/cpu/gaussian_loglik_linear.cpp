// CPU kernels of gaussian_loglik_linear's elementwise part (the GEMMs are torch's; see the header).
//
// What is fused: after the means GEMM, torch would add the bias, subtract from the gathered x, square,
// scale by the precision, sum the rows, and form s for the backward: five passes over (M, D) and as many
// temporaries. Here one pass reads each GEMM output once and writes ll and, in place, s. The backward's
// elementwise part (dl = g s with the column sums of g s and g s^2) is one more pass.
//
// Numerics: float32 products (these loops run at M1+M2's widths, D = 50: no target clones), row sums in
// double (float64: double throughout; bfloat16 loaded into float32, s and dl rounded once on store).
// Parallelism: OpenMP over rows (epilogue) or over fixed blocks of rows (backward: per-block partials
// summed in block order).

#include "gaussian_loglik_linear.h"

#include <algorithm>
#include <vector>

#include "vec_math.h"

namespace ssvae_fast {
namespace cpu {
namespace {

// sum_d s_d r_d (double) with r = x - (m + b) and s = p r, written to out unless nullptr (may be m); computed
// in compute_t<S> (float32 for bf16_t storage, s rounded once on store).
template <typename S, bool kStoreS, bool kBias>
double epilogue_row(const S* m, const S* b, const compute_t<S>* p, const S* x, S* out, int64_t D) {
  using C = compute_t<S>;
  double acc = 0.0;
  SSVAE_FAST_SIMD_SUM_ACC
  for (int64_t d = 0; d < D; ++d) {
    const C r = load(x[d]) - (kBias ? load(m[d]) + load(b[d]) : load(m[d]));
    const C sr = p[d] * r;
    if (kStoreS) store(out[d], sr);
    acc += double(sr) * double(r);
  }
  return acc;
}

// dl = g * s (dl may be s or nullptr); db_acc += g s, q_acc += g s^2 (each unless nullptr).
template <typename S>
void backward_row(const S* s, compute_t<S> g, S* dl, double* db_acc, double* q_acc, int64_t D) {
  using C = compute_t<S>;
  if (db_acc != nullptr || q_acc != nullptr) {
    for (int64_t d = 0; d < D; ++d) {
      const C sd = load(s[d]);
      const C gs = g * sd;
      if (db_acc != nullptr) db_acc[d] += double(gs);
      if (q_acc != nullptr) q_acc[d] += double(gs) * double(sd);
    }
  }
  if (dl != nullptr) {
    SSVAE_FAST_SIMD
    for (int64_t d = 0; d < D; ++d) store(dl[d], g * load(s[d]));
  }
}

// out[d] = the sum over blocks of part[i * D + d], in block order, rounded once into out's type.
template <typename T>
void sum_partials(const std::vector<double>& part, int64_t blocks, int64_t D, T* out) {
  for (int64_t d = 0; d < D; ++d) {
    double acc = 0.0;
    for (int64_t i = 0; i < blocks; ++i) acc += part[i * D + d];
    store(out[d], compute_t<T>(acc));
  }
}

}  // namespace

template <typename scalar_t>
void gaussian_linear_epilogue(const scalar_t* means, const scalar_t* bias, const compute_t<scalar_t>* precision,
                              const scalar_t* x, compute_t<scalar_t>* ll, scalar_t* s, double offset, int64_t row0,
                              int64_t rows, int64_t n_l, int64_t C, int64_t D) {
  parallel_for(rows, rows * D, [&](int64_t r) {
    const int64_t row = row0 + r;
    const scalar_t* xr = x + (row < n_l ? row : n_l + (row - n_l) / C) * D;
    const scalar_t* m = means + r * D;
    double sum = 0.0;
    dispatch_flags(s != nullptr, bias != nullptr, [&](auto store_s, auto with_bias) {
      sum = epilogue_row<scalar_t, decltype(store_s)::value, decltype(with_bias)::value>(
          m, bias, precision, xr, s != nullptr ? s + r * D : nullptr, D);
    });
    ll[r] = compute_t<scalar_t>(offset - 0.5 * sum);
  });
}

template <typename scalar_t>
void gaussian_linear_backward_rows(const scalar_t* s, const compute_t<scalar_t>* g, scalar_t* dl, scalar_t* db,
                                   compute_t<scalar_t>* q, int64_t M, int64_t D) {
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(64, M / 32));
  const bool sums = db != nullptr || q != nullptr;
  std::vector<double> db_part(db != nullptr ? static_cast<size_t>(blocks * D) : 0, 0.0);
  std::vector<double> q_part(q != nullptr ? static_cast<size_t>(blocks * D) : 0, 0.0);
  parallel_for(blocks, M * D * (sums ? 2 : 1), [&](int64_t i) {
    for (int64_t r = block_begin(M, blocks, i); r < block_begin(M, blocks, i + 1); ++r) {
      backward_row(s + r * D, g[r], dl != nullptr ? dl + r * D : nullptr,
                   db != nullptr ? db_part.data() + i * D : nullptr, q != nullptr ? q_part.data() + i * D : nullptr,
                   D);
    }
  });
  if (db != nullptr) sum_partials(db_part, blocks, D, db);
  if (q != nullptr) sum_partials(q_part, blocks, D, q);
}

template void gaussian_linear_epilogue<float>(const float*, const float*, const float*, const float*, float*, float*,
                                              double, int64_t, int64_t, int64_t, int64_t, int64_t);
template void gaussian_linear_epilogue<double>(const double*, const double*, const double*, const double*, double*,
                                               double*, double, int64_t, int64_t, int64_t, int64_t, int64_t);
template void gaussian_linear_epilogue<bf16_t>(const bf16_t*, const bf16_t*, const float*, const bf16_t*, float*,
                                               bf16_t*, double, int64_t, int64_t, int64_t, int64_t, int64_t);
template void gaussian_linear_backward_rows<float>(const float*, const float*, float*, float*, float*, int64_t,
                                                   int64_t);
template void gaussian_linear_backward_rows<double>(const double*, const double*, double*, double*, double*, int64_t,
                                                    int64_t);
template void gaussian_linear_backward_rows<bf16_t>(const bf16_t*, const float*, bf16_t*, bf16_t*, float*, int64_t,
                                                    int64_t);

}  // namespace cpu
}  // namespace ssvae_fast
