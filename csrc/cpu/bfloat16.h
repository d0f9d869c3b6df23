// bfloat16 storage for the CPU kernels, and the storage / compute types every kernel is written over.
//
// A kernel template over its storage type T (float, double or bf16_t) reads its arrays with load(), computes
// in compute_t<T> (float for float and bf16_t, double for double) and writes with store(): for float and
// double both are identities, so the float32 and float64 code is unchanged. Reductions accumulate in double
// (or in compute_t<T> where the float32 path does), and per-row results that feed no GEMM (log-likelihoods,
// KLs, losses, and the gradients flowing into them) are kept in compute_t<T>; only tensors a GEMM reads next
// (activations, s, dl, gradients of bf16 inputs) are stored as bf16.
//
// bf16_t is torch.bfloat16's layout: the upper 16 bits of a float32, as uint16_t. The conversions are
// branch-free integer operations (a shift to load; round to nearest even, NaN kept NaN, to store), inlined
// into the kernels' `omp simd` loops, which GCC vectorizes at -O3 on any x86-64 target (no -march, no
// AVX-512 BF16 instructions needed: a load is a zero-extension and a shift, a store an add, a compare and a
// blend). No -ffast-math: the values are exactly those of torch's own conversions.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace ssvae_fast {
namespace cpu {

// A bfloat16 value: sign, 8 exponent bits and 7 mantissa bits (the upper half of a float32).
struct bf16_t {
  uint16_t bits;
};

static_assert(sizeof(bf16_t) == 2, "bf16_t must be two bytes, the layout of torch.bfloat16");

// The float32 of the same value: exact (the low 16 mantissa bits are zero).
inline float bf16_to_f32(bf16_t v) {
  const uint32_t bits = uint32_t(v.bits) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// f rounded to the nearest bfloat16, ties to even (torch's rounding); +-inf stay inf, values past the
// largest bfloat16 round to inf, and NaN stays NaN (its quiet bit set, sign kept).
inline bf16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  const uint32_t rounded = bits + 0x7fffu + ((bits >> 16) & 1u);
  const uint32_t nan = bits | 0x00400000u;  // the quiet bit lies in the upper half: the result stays NaN
  const uint32_t out = (bits & 0x7fffffffu) > 0x7f800000u ? nan : rounded;
  return bf16_t{static_cast<uint16_t>(out >> 16)};
}

// compute_t<T>: the type a kernel computes in for storage type T.
template <typename T>
struct ComputeType {
  using type = T;
};
template <>
struct ComputeType<bf16_t> {
  using type = float;
};
template <typename T>
using compute_t = typename ComputeType<T>::type;

// An element in its compute type.
inline float load(float v) { return v; }
inline double load(double v) { return v; }
inline float load(bf16_t v) { return bf16_to_f32(v); }

// dst = v in dst's storage type (rounded to nearest even for bf16_t).
inline void store(float& dst, float v) { dst = v; }
inline void store(double& dst, double v) { dst = v; }
inline void store(bf16_t& dst, float v) { dst = f32_to_bf16(v); }

// Staging. GCC (12, -O3) vectorizes a loop that converts bfloat16 to float32, one that computes in float32
// over float32 arrays, and one that rounds float32 to bfloat16, each at the full vector width of its target
// clone; one loop that mixes 16-bit loads or stores with a long float computation is vectorized at a
// quarter or half of that width, or not at all (measured: the class-conditional softplus 3.6x slower in
// bf16 than in float32). A bf16 row kernel therefore widens kStage elements of each input to float buffers
// with load_row, runs the float32 row loop on them, and rounds its bf16 outputs with store_row: the same
// float computation, at the float32 loop's speed, and the same values.
constexpr int64_t kStage = 256;

// dst[i] = src[i] as float (exact), i < n.
inline void load_row(const bf16_t* src, float* dst, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
}

// dst[i] = src[i] rounded to bfloat16, i < n.
inline void store_row(const float* src, bf16_t* dst, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
}

// An array every row of a kernel reads (a bias, W_y's class rows) in the kernel's compute type, widened once
// per call rather than once per row: for bf16_t a float copy of src[0, n), for float and double src itself;
// data() is nullptr when src is.
template <typename T>
class WidenedOnce {
 public:
  WidenedOnce(const T* src, int64_t n) : src_(src) {
    if constexpr (std::is_same_v<T, bf16_t>) {
      if (src != nullptr) {
        wide_.resize(static_cast<size_t>(n));
        load_row(src, wide_.data(), n);
      }
    }
  }
  const compute_t<T>* data() const {
    if constexpr (std::is_same_v<T, bf16_t>) {
      return src_ != nullptr ? wide_.data() : nullptr;
    } else {
      return src_;
    }
  }

 private:
  const T* src_;
  std::vector<float> wide_;
};

}  // namespace cpu
}  // namespace ssvae_fast
