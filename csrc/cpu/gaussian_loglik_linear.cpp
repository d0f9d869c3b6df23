// CPU kernels of gaussian_loglik_linear's elementwise part (the GEMMs are torch's; see the header).
//
// What is fused: after the means GEMM, torch would add the bias, subtract from the gathered x, square,
// scale by the precision, sum the rows, and form s for the backward: five passes over (M, D) and as many
// temporaries. Here one pass reads each GEMM output once and writes ll and, in place, s. The backward's
// elementwise part (dl = g s with the column sums of g s and g s^2) is one more pass.
//
// Numerics: float32 products (these loops run at M1+M2's widths, D = 50: no target clones), row sums in double (float64: double throughout). Parallelism: OpenMP over
// rows (epilogue) or over fixed blocks of rows (backward: per-block partials summed in block order).

#include "gaussian_loglik_linear.h"

#include <algorithm>
#include <vector>

#include "vec_math.h"

namespace ssvae_fast {
namespace cpu {
namespace {

// sum_d s_d r_d (double) with r = x - (m + b) and s = p r, written to out unless nullptr (may be m).
template <typename scalar_t, bool kStoreS, bool kBias>
double epilogue_row(const scalar_t* m, const scalar_t* b, const scalar_t* p,
                                             const scalar_t* x, scalar_t* out, int64_t D) {
  double acc = 0.0;
  SSVAE_FAST_SIMD_SUM_ACC
  for (int64_t d = 0; d < D; ++d) {
    const scalar_t r = x[d] - (kBias ? m[d] + b[d] : m[d]);
    const scalar_t sr = p[d] * r;
    if (kStoreS) out[d] = sr;
    acc += double(sr) * double(r);
  }
  return acc;
}

// dl = g * s (dl may be s or nullptr); db_acc += g s, q_acc += g s^2 (each unless nullptr).
template <typename scalar_t>
void backward_row(const scalar_t* s, scalar_t g, scalar_t* dl, double* db_acc,
                                           double* q_acc, int64_t D) {
  if (db_acc != nullptr || q_acc != nullptr) {
    for (int64_t d = 0; d < D; ++d) {
      const scalar_t gs = g * s[d];
      if (db_acc != nullptr) db_acc[d] += double(gs);
      if (q_acc != nullptr) q_acc[d] += double(gs) * double(s[d]);
    }
  }
  if (dl != nullptr) {
    SSVAE_FAST_SIMD
    for (int64_t d = 0; d < D; ++d) dl[d] = g * s[d];
  }
}

}  // namespace

template <typename scalar_t>
void gaussian_linear_epilogue(const scalar_t* means, const scalar_t* bias, const scalar_t* precision,
                              const scalar_t* x, scalar_t* ll, scalar_t* s, double offset, int64_t row0,
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
    ll[r] = scalar_t(offset - 0.5 * sum);
  });
}

template <typename scalar_t>
void gaussian_linear_backward_rows(const scalar_t* s, const scalar_t* g, scalar_t* dl, scalar_t* db, scalar_t* q,
                                   int64_t M, int64_t D) {
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
  for (auto [out, part] : {std::pair{db, &db_part}, std::pair{q, &q_part}}) {
    if (out == nullptr) continue;
    for (int64_t d = 0; d < D; ++d) {
      double acc = 0.0;
      for (int64_t i = 0; i < blocks; ++i) acc += (*part)[i * D + d];
      out[d] = scalar_t(acc);
    }
  }
}

template void gaussian_linear_epilogue<float>(const float*, const float*, const float*, const float*, float*, float*,
                                              double, int64_t, int64_t, int64_t, int64_t, int64_t);
template void gaussian_linear_epilogue<double>(const double*, const double*, const double*, const double*, double*,
                                               double*, double, int64_t, int64_t, int64_t, int64_t, int64_t);
template void gaussian_linear_backward_rows<float>(const float*, const float*, float*, float*, float*, int64_t,
                                                   int64_t);
template void gaussian_linear_backward_rows<double>(const double*, const double*, double*, double*, double*, int64_t,
                                                    int64_t);

}  // namespace cpu
}  // namespace ssvae_fast
