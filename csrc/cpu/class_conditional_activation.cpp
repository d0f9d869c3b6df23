// CPU kernels of the class-conditional first layer (see class_conditional_activation.h for the formulas).
//
// What is fused: torch computes `act(a.unsqueeze(1) + W_y.t())` as a broadcast add that writes an
// (N, C, H) temporary and an activation pass over it, and autograd's backward adds another temporary
// per step, a reduction over C for grad_a and one over N for grad_W_y. Here the forward writes only the
// output (one pass); the backward reads grad_out once and produces grad_a and grad_W_y together, with
// the activation's derivative recomputed from what the caller keeps alive anyway.
// At MNIST sizes (B = 256: 26 + 230 x 10 rows of 500, encoder and decoder) each pass is ~1.2 M elements.
//
// Numerics: softplus(v) = max(v, 0) + log1p(exp(-|v|)) exact for every finite v; float32 through
// vec_math.h's polynomials (<= 2 ulp), float64 through libm; bfloat16 loaded into float32, computed as
// float32 and rounded once on store (bfloat16.h). grad_a over C and grad_W_y over rows accumulate in double
// for float32 and float64. For bfloat16, whose outputs keep 8 significant bits, they accumulate in float32:
// grad_a over the C classes of one example, grad_W_y over at most kFlushRows examples of a block before the
// float partial is added into the block's double partial (<= 64 C terms a float sum: relative error about
// 64 * 2^-24 = 4e-6 at worst, against bfloat16's half-ulp of 2^-9), so the accumulators are float vectors,
// twice the lanes of double ones.
//
// Parallelism and determinism: rows (forward) or fixed blocks of rows (backward) per OpenMP iteration,
// schedule(static). grad_W_y: block i sums its rows in order into its own (C, H) partial; the partials
// are then summed in block order. The block partition depends only on N (never on the thread count), so
// results are bitwise identical run to run and across thread counts.

#include "class_conditional_activation.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "bfloat16.h"
#include "vec_math.h"

namespace ssvae_fast {
namespace cpu {
namespace {

constexpr int64_t kMaxBlocks = 16;    // grad_W_y partials: at most 16 (C, H) double buffers
constexpr int64_t kRowsPerBlock = 32;  // ... and at least 32 rows per block
constexpr int64_t kFlushRows = 64;     // bf16: examples a float grad_W_y partial sums before its flush

int64_t reduction_blocks(int64_t N) { return std::max<int64_t>(1, std::min(kMaxBlocks, N / kRowsPerBlock)); }

// ---- float32 and bfloat16 (computed in float32) ------------------------------------------------------
//
// Each row loop is a template over the storage type S (float or bf16_t), inlined into one cloned plain
// function per storage type.

// out[h] = act(a[h] + w[h]) (out: S, or float for a staged bf16 row)
template <typename S, typename O>
inline void activation_row_f32(const S* a, const S* w, O* out, int64_t H, int activation) {
  if (activation == static_cast<int>(Activation::kRelu)) {
    SSVAE_FAST_SIMD
    for (int64_t h = 0; h < H; ++h) {
      const float v = load(a[h]) + load(w[h]);
      store(out[h], v < 0.0f ? 0.0f : v);  // NaN stays NaN
    }
  } else {
    SSVAE_FAST_SIMD
    for (int64_t h = 0; h < H; ++h) store(out[h], softplus_f32(load(a[h]) + load(w[h])));
  }
}

SSVAE_FAST_TARGET_CLONES
void activation_row(const float* a, const float* w, float* out, int64_t H, int activation) {
  activation_row_f32(a, w, out, H, activation);
}

// bf16: a's row widened a chunk at a time (bfloat16.h's staging), the class row w already widened (the
// forward widens W_y's C rows once per call), the float32 row loop, then the output rounded.
SSVAE_FAST_TARGET_CLONES
void activation_row(const bf16_t* a, const float* w, bf16_t* out, int64_t H, int activation) {
  float a_f[kStage], buf[kStage];
  for (int64_t h0 = 0; h0 < H; h0 += kStage) {
    const int64_t n = std::min(kStage, H - h0);
    load_row(a + h0, a_f, n);
    activation_row_f32(a_f, w + h0, buf, n, activation);
    store_row(buf, out + h0, n);
  }
}

// The derivative of one element: g * act'(pre), from pre = a + w or from out = act(pre).
template <bool kFromOut, bool kRelu>
inline float derivative_f32(float g, float a, float w, float out) {
  if (kFromOut) return kRelu ? (out > 0.0f ? g : 0.0f) : g * one_minus_exp_neg_f32(out);  // sigmoid(pre)
  const float pre = a + w;
  return kRelu ? (pre > 0.0f ? g : 0.0f) : g * sigmoid_f32(pre);
}

// One row of the per-row form: t = g * act'(.) -> dst[h] = t (grad_a's row; float for a staged bf16 row)
// and acc_wy[h] += t.
template <bool kFromOut, bool kRelu, typename S, typename O, typename A>
inline void row_backward_f32(const S* g, const S* a, const S* w, const S* out, O* dst, A* acc_wy,
                             int64_t H) {
  SSVAE_FAST_SIMD
  for (int64_t h = 0; h < H; ++h) {
    const float t = derivative_f32<kFromOut, kRelu>(load(g[h]), kFromOut ? 0.0f : load(a[h]),
                                                    kFromOut ? 0.0f : load(w[h]), kFromOut ? load(out[h]) : 0.0f);
    store(dst[h], t);
    acc_wy[h] += A(t);
  }
}

// One (n, c) row of the every-class form: t = g * act'(.) -> acc_a[h] += t and acc_wy[h] += t
// (accumulators A: double, or float for bf16).
template <bool kFromOut, bool kRelu, typename S, typename A>
inline void class_row_backward_f32(const S* g, const S* a, const S* w, const S* out, A* acc_a, A* acc_wy,
                                   int64_t H) {
  SSVAE_FAST_SIMD
  for (int64_t h = 0; h < H; ++h) {
    const A t = A(derivative_f32<kFromOut, kRelu>(load(g[h]), kFromOut ? 0.0f : load(a[h]),
                                                  kFromOut ? 0.0f : load(w[h]), kFromOut ? load(out[h]) : 0.0f));
    acc_a[h] += t;
    acc_wy[h] += t;
  }
}

template <typename S, typename O, typename A>
inline void row_backward_dispatch(const S* g, const S* a, const S* w, const S* out, O* dst, A* acc_wy,
                                  int64_t H, int activation) {
  dispatch_flags(out != nullptr, activation == static_cast<int>(Activation::kRelu), [&](auto from_out, auto relu) {
    row_backward_f32<decltype(from_out)::value, decltype(relu)::value>(g, a, w, out, dst, acc_wy, H);
  });
}

template <typename S, typename A>
inline void class_row_backward_dispatch(const S* g, const S* a, const S* w, const S* out, A* acc_a, A* acc_wy,
                                        int64_t H, int activation) {
  dispatch_flags(out != nullptr, activation == static_cast<int>(Activation::kRelu), [&](auto from_out, auto relu) {
    class_row_backward_f32<decltype(from_out)::value, decltype(relu)::value>(g, a, w, out, acc_a, acc_wy, H);
  });
}

SSVAE_FAST_TARGET_CLONES
void row_backward(const float* g, const float* a, const float* w, const float* out, float* dst,
                  double* acc_wy, int64_t H, int activation) {
  row_backward_dispatch(g, a, w, out, dst, acc_wy, H, activation);
}

// The float rows of a bf16 backward row: g, and either out or (a, w), widened (bfloat16.h). Returns the
// float pointers the float32 loop reads (nullptr where the bf16 pointer was nullptr).
struct StagedRows {
  float g[kStage], a[kStage], w[kStage], out[kStage];
  const float* gp = nullptr;
  const float* ap = nullptr;
  const float* wp = nullptr;
  const float* outp = nullptr;

  void load(const bf16_t* g_, const bf16_t* a_, const bf16_t* w_, const bf16_t* out_, int64_t h0, int64_t n) {
    load_row(g_ + h0, g, n);
    gp = g;
    if (out_ != nullptr) {
      load_row(out_ + h0, out, n);
      outp = out;
    } else {
      load_row(a_ + h0, a, n);
      load_row(w_ + h0, w, n);
      ap = a;
      wp = w;
    }
  }
};

SSVAE_FAST_TARGET_CLONES
void row_backward(const bf16_t* g, const bf16_t* a, const bf16_t* w, const bf16_t* out, bf16_t* dst,
                  float* acc_wy, int64_t H, int activation) {
  StagedRows in;
  float buf[kStage];
  for (int64_t h0 = 0; h0 < H; h0 += kStage) {
    const int64_t n = std::min(kStage, H - h0);
    in.load(g, a, w, out, h0, n);
    row_backward_dispatch(in.gp, in.ap, in.wp, in.outp, buf, acc_wy + h0, n, activation);
    store_row(buf, dst + h0, n);
  }
}

SSVAE_FAST_TARGET_CLONES
void class_row_backward(const float* g, const float* a, const float* w, const float* out, double* acc_a,
                        double* acc_wy, int64_t H, int activation) {
  class_row_backward_dispatch(g, a, w, out, acc_a, acc_wy, H, activation);
}

SSVAE_FAST_TARGET_CLONES
void class_row_backward(const bf16_t* g, const bf16_t* a, const bf16_t* w, const bf16_t* out, float* acc_a,
                        float* acc_wy, int64_t H, int activation) {
  StagedRows in;
  for (int64_t h0 = 0; h0 < H; h0 += kStage) {
    const int64_t n = std::min(kStage, H - h0);
    in.load(g, a, w, out, h0, n);
    class_row_backward_dispatch(in.gp, in.ap, in.wp, in.outp, acc_a + h0, acc_wy + h0, n, activation);
  }
}

// ---- float64 ---------------------------------------------------------------------------------------

void activation_row(const double* a, const double* w, double* out, int64_t H, int activation) {
  const bool relu = activation == static_cast<int>(Activation::kRelu);
  for (int64_t h = 0; h < H; ++h) {
    const double v = a[h] + w[h];
    out[h] = relu ? (v < 0.0 ? 0.0 : v) : softplus_f64(v);
  }
}

double derivative_f64(double g, const double* a, const double* w, const double* out, int64_t h, bool relu) {
  if (out != nullptr) return relu ? (out[h] > 0.0 ? g : 0.0) : g * -std::expm1(-out[h]);
  const double pre = a[h] + w[h];
  return relu ? (pre > 0.0 ? g : 0.0) : g * sigmoid_f64(pre);
}

void row_backward(const double* g, const double* a, const double* w, const double* out, double* dst,
                  double* acc_wy, int64_t H, int activation) {
  const bool relu = activation == static_cast<int>(Activation::kRelu);
  for (int64_t h = 0; h < H; ++h) {
    const double t = derivative_f64(g[h], a, w, out, h, relu);
    dst[h] = t;
    acc_wy[h] += t;
  }
}

void class_row_backward(const double* g, const double* a, const double* w, const double* out, double* acc_a,
                        double* acc_wy, int64_t H, int activation) {
  const bool relu = activation == static_cast<int>(Activation::kRelu);
  for (int64_t h = 0; h < H; ++h) {
    const double t = derivative_f64(g[h], a, w, out, h, relu);
    acc_a[h] += t;
    acc_wy[h] += t;
  }
}

}  // namespace

template <typename scalar_t>
void class_conditional_forward(const scalar_t* a, const scalar_t* wy_t, const int64_t* classes,
                               scalar_t* out, int64_t N, int64_t n_l, int64_t H, int64_t C,
                               Activation activation) {
  const int64_t rows = n_l + (N - n_l) * C;
  const int act = static_cast<int>(activation);
  const WidenedOnce<scalar_t> w(wy_t, C * H);  // bf16: W_y's class rows widened once, not once per row
  parallel_for(rows, rows * H, [&](int64_t r) {
    const int64_t n = r < n_l ? r : n_l + (r - n_l) / C;
    const int64_t c = r < n_l ? classes[r] : (r - n_l) % C;
    activation_row(a + n * H, w.data() + c * H, out + r * H, H, act);
  });
}

template <typename scalar_t>
void class_conditional_backward(const scalar_t* grad_out, const scalar_t* a, const scalar_t* wy_t,
                                const scalar_t* out, const int64_t* classes, scalar_t* grad_a,
                                scalar_t* grad_wy, int64_t N, int64_t n_l, int64_t H, int64_t C,
                                Activation activation) {
  if (N == 0 || H == 0) {
    if (grad_wy != nullptr) std::fill(grad_wy, grad_wy + H * C, scalar_t{});  // +0
    return;
  }
  const int64_t rows = n_l + (N - n_l) * C;
  const int64_t blocks = reduction_blocks(N);
  const int act = static_cast<int>(activation);
  // The accumulators' type: double, or float for bf16 (grad_W_y's float partial flushed into the block's
  // double partial every kFlushRows examples).
  constexpr bool kFloatAcc = std::is_same_v<scalar_t, bf16_t>;
  using acc_t = std::conditional_t<kFloatAcc, float, double>;
  // Block i's (C, H) partial of grad_wy; always accumulated (when grad_wy is not wanted the partials are
  // simply not reduced: one code path, and grad_wy is wanted in every training step).
  std::vector<double> partial(static_cast<size_t>(blocks * C * H), 0.0);
  parallel_for(blocks, rows * H, [&](int64_t i) {
    double* block_wy = partial.data() + i * C * H;
    std::vector<float> float_wy(kFloatAcc ? static_cast<size_t>(C * H) : 0, 0.0f);
    acc_t* acc_wy;
    if constexpr (kFloatAcc) {
      acc_wy = float_wy.data();
    } else {
      acc_wy = block_wy;
    }
    const auto flush = [&] {
      if constexpr (kFloatAcc) {
        for (int64_t k = 0; k < C * H; ++k) block_wy[k] += double(float_wy[k]);
        std::fill(float_wy.begin(), float_wy.end(), 0.0f);
      }
    };
    std::vector<scalar_t> scratch(grad_a == nullptr && n_l > 0 ? static_cast<size_t>(H) : 0);
    std::vector<acc_t> acc_a(N > n_l ? static_cast<size_t>(H) : 0);
    const int64_t begin = block_begin(N, blocks, i), end = block_begin(N, blocks, i + 1);
    for (int64_t n = begin; n < end; ++n) {
      if (n > begin && (n - begin) % kFlushRows == 0) flush();
      if (n >= n_l) {  // every class: output rows n_l + (n - n_l) * C + c
        std::fill(acc_a.begin(), acc_a.end(), acc_t(0));
        for (int64_t c = 0; c < C; ++c) {
          const int64_t offset = (n_l + (n - n_l) * C + c) * H;
          if (out != nullptr) {
            class_row_backward(grad_out + offset, nullptr, nullptr, out + offset, acc_a.data(),
                               acc_wy + c * H, H, act);
          } else {
            class_row_backward(grad_out + offset, a + n * H, wy_t + c * H, nullptr, acc_a.data(),
                               acc_wy + c * H, H, act);
          }
        }
        if (grad_a != nullptr) {
          for (int64_t h = 0; h < H; ++h) store(grad_a[n * H + h], compute_t<scalar_t>(acc_a[h]));
        }
      } else {  // one class: output row n
        const int64_t c = classes[n];
        scalar_t* dst = grad_a != nullptr ? grad_a + n * H : scratch.data();
        if (out != nullptr) {
          row_backward(grad_out + n * H, nullptr, nullptr, out + n * H, dst, acc_wy + c * H, H, act);
        } else {
          row_backward(grad_out + n * H, a + n * H, wy_t + c * H, nullptr, dst, acc_wy + c * H, H, act);
        }
      }
    }
    flush();
  });
  if (grad_wy != nullptr) {
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t h = 0; h < H; ++h) {
        double acc = 0.0;
        for (int64_t i = 0; i < blocks; ++i) acc += partial[(i * C + c) * H + h];
        store(grad_wy[h * C + c], compute_t<scalar_t>(acc));
      }
    }
  }
}

template void class_conditional_forward<float>(const float*, const float*, const int64_t*, float*, int64_t,
                                               int64_t, int64_t, int64_t, Activation);
template void class_conditional_forward<double>(const double*, const double*, const int64_t*, double*,
                                                int64_t, int64_t, int64_t, int64_t, Activation);
template void class_conditional_backward<float>(const float*, const float*, const float*, const float*,
                                                const int64_t*, float*, float*, int64_t, int64_t, int64_t,
                                                int64_t, Activation);
template void class_conditional_backward<double>(const double*, const double*, const double*,
                                                 const double*, const int64_t*, double*, double*, int64_t,
                                                 int64_t, int64_t, int64_t, Activation);
template void class_conditional_forward<bf16_t>(const bf16_t*, const bf16_t*, const int64_t*, bf16_t*, int64_t,
                                                int64_t, int64_t, int64_t, Activation);
template void class_conditional_backward<bf16_t>(const bf16_t*, const bf16_t*, const bf16_t*, const bf16_t*,
                                                 const int64_t*, bf16_t*, bf16_t*, int64_t, int64_t, int64_t,
                                                 int64_t, Activation);

}  // namespace cpu
}  // namespace ssvae_fast
