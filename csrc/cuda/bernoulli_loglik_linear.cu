// CUDA kernels of M2's decoder output layer fused with the Bernoulli log-likelihood (docs/design.md section 2,
// items 2 and 3): for the M = n_l + (N - n_l) * C rows h[m], labelled first (row m < n_l: example m, its
// label's row; row n_l + j * C + c: example n_l + j, class c), with e(m) = m < n_l ? m : n_l + (m - n_l) / C
// the example of row m (n_l = 0: every class of every example, e(m) = m / C),
//
//   l[m, d]  = sum_k h[m, k] * W[d, k] + b[d]                       (the decoder's logits, never stored)
//   ll[m]    = sum_d x[e(m), d] * l[m, d] - softplus(l[m, d])
//   s[m, d]  = x[e(m), d] - sigmoid(l[m, d])                        (optional: the backward's dl = g * s)
//
// and, with the likelihood a template parameter of the same kernels (only the epilogue differs), the
// Gaussian with per-dimension precisions p = exp(-logvar) (args.precision_vec, from the caller):
//
//   ll[m]    = -0.5 sum_d p[d] (x[e(m), d] - mu[m, d])^2,  mu = l   (the caller adds the row-independent
//                                                                    -0.5 (sum_d logvar[d] + D log 2 pi))
//   s[m, d]  = p[d] (x[e(m), d] - mu[m, d])                          (optional: the backward's only (M, D) input)
//
//   linear_loglik_tc_kernel          64 x 64 output tile per block of 4 warps, tensor cores through
//                                    nvcuda::wmma (16x16x8 TF32 for float, 16x16x16 for bfloat16/half),
//                                    fp32 accumulation; K (= H) in steps of 32, operands staged through
//                                    shared memory (zero-padded at every edge), the next step's global
//                                    loads issued before this step's MMAs
//   linear_loglik_simt_kernel        the same tile with exact FMAs on the CUDA cores (256 threads, 4 x 4
//                                    outputs each): float ("ieee" precision), double, and 16-bit inputs
//                                    in "ieee" precision (products in float)
//   linear_loglik_row_sum_kernel     ll[m] = sum over the D tiles of the per-tile partial sums, in order
//
// Epilogue (both tile kernels): the accumulators go to a shared-memory logits tile; each warp then takes
// whole rows, its lanes the tile's columns, adds the bias, computes x * l - softplus(l) (stable:
// max(l, 0) + log1p(exp(-|l|))) and s (Gaussian: p r^2 and s = p r, r = x - mu), and reduces the row over
// the tile's 64 columns with a fixed shuffle tree (Gaussian: then times -0.5, exact); lane 0 writes
// ll_partial[d_tile, m]. No float atomics: bitwise deterministic.
//
// Memory traffic saved (MNIST M2, N = 100, C = 10, D = 784, H = 500, fp32; arithmetic, not measured): the
// plain-torch op writes the (M, D) = (1000, 784) logits (3.1 MB), reads them back for softplus, writes
// and reads the softplus and product temporaries: ~16 MB. Here: h (2 MB), W (1.6 MB, L2-resident), x once
// per tile (L1/L2) and ll_partial (M * 13 floats, 52 KB) in; ll out; plus s (3.1 MB) when a gradient is
// needed, which replaces the logits the plain-torch backward would keep and rescan.
//
// Bernoulli backward (VJP) with g = dLoss/dll (M,), in ssvae_fast/cuda/bernoulli_loglik_linear.py (cuBLAS
// GEMMs on s; the Gaussian's: ssvae_fast/cuda/gaussian_loglik_linear.py, ssvae_fast/rows.py):
//   dl[m, d] = g[m] * s[m, d]
//   dh       = dl W            = g[:, None] * (s W)                          (M, H)
//   dW       = dl^T h          = s^T (g[:, None] * h)                        (D, H)
//   db       = sum_m dl[m]     = s^T g                                       (D,)
//   dx[n, d] = sum_{m : e(m) = n} g[m] l[m, d] = (sum_{e(m) = n} g[m] h[m]) W^T [d] + b[d] sum_{e(m) = n} g[m]
//
// Offsets are int64 (M * D and M * H pass 2**31 at realistic sizes). Any H, D, M (masks and zero
// padding at every tile edge); any strides.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "bernoulli_loglik_linear.h"
#include "common.cuh"
#include "numeric.cuh"

namespace ssvae_fast {
namespace cuda {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kBlockM = kBernoulliBlockM;  // 64 rows of h per block
constexpr int kBlockD = kBernoulliBlockD;  // 64 pixels per block
// Leading dimension of the shared-memory logits tile: a multiple of 4 floats (wmma::store_matrix_sync),
// and 16 words past 64 so that the SIMT kernel's two rows per warp land in disjoint bank halves.
constexpr int kTileLd = kBlockD + 16;
constexpr int kRowSumThreads = 256;

// The likelihood scored by the tile kernels' epilogue (a template parameter: one instantiation each).
enum class Likelihood { kBernoulli, kGaussian };

// The names in this file's errors, per likelihood: the launcher and its kernels.
struct LikelihoodNames {
  const char* launcher;
  const char* tc_kernel;
  const char* simt_kernel;
  const char* row_sum_kernel;
};
constexpr LikelihoodNames names_of(Likelihood lik) {
  return lik == Likelihood::kBernoulli
             ? LikelihoodNames{"bernoulli_loglik_linear_forward", "bernoulli_linear_tc_kernel",
                               "bernoulli_linear_simt_kernel", "bernoulli_linear_row_sum_kernel"}
             : LikelihoodNames{"gaussian_loglik_linear_forward", "gaussian_linear_tc_kernel",
                               "gaussian_linear_simt_kernel", "gaussian_linear_row_sum_kernel"};
}

// ------------------------------------------------------------------------------------------------------
// Epilogue shared by both tile kernels. `tile` holds the 64 x 64 logits (means) without bias, row-major
// with leading dimension kTileLd, written by every thread of the block before a __syncthreads.
// ------------------------------------------------------------------------------------------------------
template <Likelihood kLik, int kThreads, typename scalar_t, typename acc_t>
__device__ __forceinline__ void loglik_epilogue(const acc_t* tile, const LinearLoglikForwardArgs& p, int64_t m0,
                                                int64_t d0) {
  constexpr int kWarps = kThreads / 32;
  const auto* x = static_cast<const scalar_t*>(p.x);
  const auto* bias = static_cast<const scalar_t*>(p.bias);
  const auto* precision_vec = static_cast<const acc_t*>(p.precision_vec);  // Gaussian only
  auto* s = static_cast<scalar_t*>(p.s);
  auto* ll_partial = static_cast<acc_t*>(p.ll_partial);
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  for (int r = warp; r < kBlockM; r += kWarps) {
    const int64_t row = m0 + r;
    if (row >= p.M) break;  // rows grow with r; the whole warp leaves together
    // The example's x, shared by its rows: e(row) = row < n_l ? row : n_l + (row - n_l) / C (C >= 1 there).
    const int64_t example = row < p.n_l ? row : p.n_l + (row - p.n_l) / p.C;
    const scalar_t* x_row = x + example * p.stride_xn;
    acc_t sum = acc_t(0);
#pragma unroll
    for (int j = 0; j < kBlockD / 32; ++j) {
      const int col = lane + 32 * j;  // consecutive lanes: consecutive d (coalesced x and s, no bank conflict)
      const int64_t d = d0 + col;
      if (d < p.D) {
        acc_t l = tile[r * kTileLd + col];
        if (bias != nullptr) l += to_compute(bias[d * p.stride_b]);
        const acc_t x_d = to_compute(x_row[d * p.stride_xd]);
        if constexpr (kLik == Likelihood::kBernoulli) {
          sum += x_d * l - stable_softplus(l);
          if (s != nullptr) s[row * p.D + d] = from_compute<scalar_t>(x_d - stable_sigmoid(l));
        } else {  // l is the mean: p r^2 = (p r) r, r = x - mu
          const acc_t r = x_d - l;
          const acc_t pr = precision_vec[d] * r;
          sum += pr * r;
          if (s != nullptr) s[row * p.D + d] = from_compute<scalar_t>(pr);
        }
      }
    }
    sum = warp_allreduce_sum(sum);
    if constexpr (kLik == Likelihood::kGaussian) sum *= acc_t(-0.5);  // exact: the row's -0.5 sum p r^2
    if (lane == 0) ll_partial[int64_t(blockIdx.y) * p.M + row] = sum;
  }
}

// Loads this thread's kLoads elements of a (64 rows) x (kBlockK) operand tile into registers, as floats
// (doubles): element i is row `row0 + r_first + i * kRowStep`, column `k0 + k_local`; zero outside
// [0, rows) x [0, K).
template <int kLoads, int kRowStep, typename in_t, typename reg_t>
__device__ __forceinline__ void load_operand(reg_t (&reg)[kLoads], const in_t* base, int64_t rows, int64_t row0,
                                             int64_t stride_row, int64_t stride_k, int64_t K, int64_t k0,
                                             int r_first, int k_local) {
  const int64_t k = k0 + k_local;
  const bool k_ok = k < K;
#pragma unroll
  for (int i = 0; i < kLoads; ++i) {
    const int64_t row = row0 + r_first + i * kRowStep;
    reg[i] = (k_ok && row < rows) ? reg_t(to_compute(base[row * stride_row + k * stride_k])) : reg_t(0);
  }
}

// Both operands of the K step at k0 (load_operand): rows m0.. of h into a_reg, rows d0.. of W into b_reg.
template <int kLoads, int kRowStep, typename in_t, typename reg_t>
__device__ __forceinline__ void load_operands(reg_t (&a_reg)[kLoads], reg_t (&b_reg)[kLoads],
                                              const LinearLoglikForwardArgs& p, int64_t m0, int64_t d0, int64_t k0,
                                              int r_first, int k_local) {
  load_operand<kLoads, kRowStep>(a_reg, static_cast<const in_t*>(p.h), p.M, m0, p.stride_hm, p.stride_hk, p.H, k0,
                                 r_first, k_local);
  load_operand<kLoads, kRowStep>(b_reg, static_cast<const in_t*>(p.weight), p.D, d0, p.stride_wd, p.stride_wk, p.H,
                                 k0, r_first, k_local);
}

// ------------------------------------------------------------------------------------------------------
// Tensor-core path.
// ------------------------------------------------------------------------------------------------------
constexpr int kTcThreads = 128;  // 4 warps as 2 x 2, each 32 x 32 outputs (2 x 2 fragments of 16 x 16)
constexpr int kTcBlockK = 32;    // K step staged in shared memory

// Fragment element type, MMA depth and shared-memory layout per input type. kLd (the operand tiles'
// leading dimension) is a multiple of 16 bytes (wmma's ldm rule), and 16 rows of it a multiple of 32
// bytes, so every fragment pointer below is 256-bit aligned; the 16-byte pad staggers rows across banks.
template <typename in_t>
struct MmaTraits;
template <>
struct MmaTraits<float> {
  using frag_t = wmma::precision::tf32;
  using smem_t = float;
  static constexpr int kK = 8;
  static constexpr int kLd = kTcBlockK + 4;  // 36 floats
  __device__ __forceinline__ static smem_t to_smem(float v) { return wmma::__float_to_tf32(v); }  // round to TF32
};
template <>
struct MmaTraits<__nv_bfloat16> {
  using frag_t = __nv_bfloat16;
  using smem_t = __nv_bfloat16;
  static constexpr int kK = 16;
  static constexpr int kLd = kTcBlockK + 8;  // 40 elements
  __device__ __forceinline__ static smem_t to_smem(float v) { return __float2bfloat16_rn(v); }  // exact
};
template <>
struct MmaTraits<__half> {
  using frag_t = __half;
  using smem_t = __half;
  static constexpr int kK = 16;
  static constexpr int kLd = kTcBlockK + 8;
  __device__ __forceinline__ static smem_t to_smem(float v) { return __float2half_rn(v); }  // exact
};

template <Likelihood kLik, typename in_t>
__global__ void __launch_bounds__(kTcThreads)
linear_loglik_tc_kernel(const LinearLoglikForwardArgs p) {  // sizes, strides, pointers: see the .h
  using Traits = MmaTraits<in_t>;
  using smem_t = typename Traits::smem_t;
  constexpr int kLd = Traits::kLd;
  constexpr int kOperandElems = kBlockM * kLd;  // one operand tile: 64 rows x kLd
  constexpr size_t kOperandBytes = 2 * kOperandElems * sizeof(smem_t);
  constexpr size_t kTileBytes = size_t(kBlockM) * kTileLd * sizeof(float);
  constexpr size_t kSmemBytes = kOperandBytes > kTileBytes ? kOperandBytes : kTileBytes;
  static_assert(kLd * sizeof(smem_t) % 16 == 0 && 16 * kLd * sizeof(smem_t) % 32 == 0, "wmma alignment");
  static_assert(kOperandElems * sizeof(smem_t) % 32 == 0, "b_tile must stay 256-bit aligned");
  static_assert(kTcBlockK % Traits::kK == 0, "K step must be a multiple of the MMA depth");
  // The operand tiles during the K loop, the logits tile after it (a barrier separates the two uses).
  __shared__ __align__(128) unsigned char smem[kSmemBytes];
  smem_t* a_tile = reinterpret_cast<smem_t*>(smem);     // [r][k] = h[m0 + r, k0 + k]
  smem_t* b_tile = a_tile + kOperandElems;               // [r][k] = W[d0 + r, k0 + k]
  float* logits_tile = reinterpret_cast<float*>(smem);  // [r][c] = (h W^T)[m0 + r, d0 + c]

  const int64_t m0 = int64_t(blockIdx.x) * kBlockM;
  const int64_t d0 = int64_t(blockIdx.y) * kBlockD;

  // Staging: thread t loads column k = t % 32 of rows t / 32 + 4 i (i = 0..15) of both operands, so a
  // warp reads 32 consecutive k of one row (coalesced when stride_hk = stride_wk = 1) and stores 32
  // consecutive shared-memory words (no bank conflict).
  constexpr int kLoads = kBlockM * kTcBlockK / kTcThreads;  // 16
  constexpr int kRowStep = kTcThreads / kTcBlockK;          // 4
  const int load_k = threadIdx.x % kTcBlockK;
  const int load_r = threadIdx.x / kTcBlockK;
  float a_reg[kLoads];
  float b_reg[kLoads];

  const int warp = threadIdx.x / 32;
  const int wm = warp / 2;  // warp rows wm * 32 .. + 32 of the tile
  const int wn = warp % 2;  // warp columns wn * 32 .. + 32
  wmma::fragment<wmma::accumulator, 16, 16, Traits::kK, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
  }

  const int64_t k_steps = (p.H + kTcBlockK - 1) / kTcBlockK;
  if (k_steps > 0) load_operands<kLoads, kRowStep, in_t>(a_reg, b_reg, p, m0, d0, 0, load_r, load_k);
  for (int64_t t = 0; t < k_steps; ++t) {
#pragma unroll
    for (int i = 0; i < kLoads; ++i) {
      a_tile[(load_r + i * kRowStep) * kLd + load_k] = Traits::to_smem(a_reg[i]);
      b_tile[(load_r + i * kRowStep) * kLd + load_k] = Traits::to_smem(b_reg[i]);
    }
    __syncthreads();  // the tiles are complete
    if (t + 1 < k_steps) {  // next step's global loads, in flight during the MMAs below
      load_operands<kLoads, kRowStep, in_t>(a_reg, b_reg, p, m0, d0, (t + 1) * kTcBlockK, load_r, load_k);
    }
#pragma unroll
    for (int kk = 0; kk < kTcBlockK; kk += Traits::kK) {
      // A = h rows (16 x kK, row-major); B = W^T (kK x 16): element (k, n) = W[n, k] = b_tile[n * kLd + k],
      // i.e. column-major with leading dimension kLd.
      wmma::fragment<wmma::matrix_a, 16, 16, Traits::kK, typename Traits::frag_t, wmma::row_major> a_frag[2];
      wmma::fragment<wmma::matrix_b, 16, 16, Traits::kK, typename Traits::frag_t, wmma::col_major> b_frag[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(a_frag[i], a_tile + (wm * 32 + i * 16) * kLd + kk, kLd);
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(b_frag[j], b_tile + (wn * 32 + j * 16) * kLd + kk, kLd);
#pragma unroll
      for (int i = 0; i < 2; ++i) {
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a_frag[i], b_frag[j], acc[i][j]);
      }
    }
    __syncthreads();  // every warp is done with the tiles before they are overwritten (next step or logits)
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      wmma::store_matrix_sync(logits_tile + (wm * 32 + i * 16) * kTileLd + wn * 32 + j * 16, acc[i][j], kTileLd,
                              wmma::mem_row_major);
    }
  }
  __syncthreads();
  loglik_epilogue<kLik, kTcThreads, in_t, float>(logits_tile, p, m0, d0);
}

// ------------------------------------------------------------------------------------------------------
// SIMT path (exact products).
// ------------------------------------------------------------------------------------------------------
constexpr int kSimtThreads = 256;           // 16 x 16 threads, 4 x 4 outputs each
constexpr int kSimtBlockK = 16;             // K step staged in shared memory
constexpr int kSimtLd = kSimtBlockK + 1;    // odd: the 16 rows a warp reads of b_tile fall in 16 banks

template <Likelihood kLik, typename scalar_t>
__global__ void __launch_bounds__(kSimtThreads)
linear_loglik_simt_kernel(const LinearLoglikForwardArgs p) {  // sizes, strides, pointers: see the .h
  using acc_t = compute_t<scalar_t>;
  constexpr int kOperandElems = kBlockM * kSimtLd;
  constexpr int kTileElems = kBlockM * kTileLd;
  constexpr int kSmemElems = 2 * kOperandElems > kTileElems ? 2 * kOperandElems : kTileElems;
  // The operand tiles during the K loop, the logits tile after it (a barrier separates the two uses).
  // 40 KB for double: under the 48 KB static limit.
  __shared__ __align__(16) unsigned char smem[kSmemElems * sizeof(acc_t)];
  acc_t* a_tile = reinterpret_cast<acc_t*>(smem);  // [r][k] = h[m0 + r, k0 + k]
  acc_t* b_tile = a_tile + kOperandElems;           // [r][k] = W[d0 + r, k0 + k]
  acc_t* logits_tile = a_tile;                      // [r][c]

  const int64_t m0 = int64_t(blockIdx.x) * kBlockM;
  const int64_t d0 = int64_t(blockIdx.y) * kBlockD;

  // Staging: thread t loads column t % 16 of rows t / 16 + 16 i (i = 0..3) of both operands.
  constexpr int kLoads = kBlockM * kSimtBlockK / kSimtThreads;  // 4
  constexpr int kRowStep = kSimtThreads / kSimtBlockK;          // 16
  const int load_k = threadIdx.x % kSimtBlockK;
  const int load_r = threadIdx.x / kSimtBlockK;
  acc_t a_reg[kLoads];
  acc_t b_reg[kLoads];

  // Thread (tr, tc) computes rows tr + 16 i and columns tc + 16 j (i, j = 0..3). A warp holds two tr and
  // all 16 tc: its a_tile reads are 2 broadcast words, its b_tile reads 16 rows of stride 17 (16 banks).
  const int tr = threadIdx.x / 16;
  const int tc = threadIdx.x % 16;
  acc_t acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = acc_t(0);
  }

  const int64_t k_steps = (p.H + kSimtBlockK - 1) / kSimtBlockK;
  if (k_steps > 0) load_operands<kLoads, kRowStep, scalar_t>(a_reg, b_reg, p, m0, d0, 0, load_r, load_k);
  for (int64_t t = 0; t < k_steps; ++t) {
#pragma unroll
    for (int i = 0; i < kLoads; ++i) {
      a_tile[(load_r + i * kRowStep) * kSimtLd + load_k] = a_reg[i];
      b_tile[(load_r + i * kRowStep) * kSimtLd + load_k] = b_reg[i];
    }
    __syncthreads();  // the tiles are complete
    if (t + 1 < k_steps) {  // next step's global loads, in flight during the FMAs below
      load_operands<kLoads, kRowStep, scalar_t>(a_reg, b_reg, p, m0, d0, (t + 1) * kSimtBlockK, load_r, load_k);
    }
#pragma unroll
    for (int k = 0; k < kSimtBlockK; ++k) {
      acc_t a_k[4];
      acc_t b_k[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a_k[i] = a_tile[(tr + 16 * i) * kSimtLd + k];
#pragma unroll
      for (int j = 0; j < 4; ++j) b_k[j] = b_tile[(tc + 16 * j) * kSimtLd + k];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fma(a_k[i], b_k[j], acc[i][j]);
      }
    }
    __syncthreads();  // every thread is done with the tiles before they are overwritten (next step or logits)
  }

#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) logits_tile[(tr + 16 * i) * kTileLd + tc + 16 * j] = acc[i][j];
  }
  __syncthreads();
  loglik_epilogue<kLik, kSimtThreads, scalar_t, acc_t>(logits_tile, p, m0, d0);
}

// ll[m] = sum_{t = 0}^{n_tiles - 1} ll_partial[t, m] in order of t (0 when n_tiles == 0, i.e. D == 0).
template <typename scalar_t>
__global__ void __launch_bounds__(kRowSumThreads)
linear_loglik_row_sum_kernel(const compute_t<scalar_t>* __restrict__ ll_partial,  // (n_tiles, M)
                             scalar_t* __restrict__ ll,                         // (M,) out
                             int64_t M,                                         // rows
                             int64_t n_tiles) {                                 // D tiles
  using acc_t = compute_t<scalar_t>;
  const int64_t step = int64_t(gridDim.x) * kRowSumThreads;
  for (int64_t m = int64_t(blockIdx.x) * kRowSumThreads + threadIdx.x; m < M; m += step) {
    acc_t sum = acc_t(0);
    for (int64_t t = 0; t < n_tiles; ++t) sum += ll_partial[t * M + m];
    ll[m] = from_compute<scalar_t>(sum);
  }
}

template <Likelihood kLik, typename scalar_t>
void launch(const LinearLoglikForwardArgs& args, MatmulPrecision precision, cudaStream_t stream) {
  constexpr LikelihoodNames kNames = names_of(kLik);
  const int64_t m_tiles = (args.M + kBlockM - 1) / kBlockM;
  const int64_t d_tiles = (args.D + kBlockD - 1) / kBlockD;
  if (d_tiles > 0) {
    const dim3 grid(static_cast<unsigned int>(m_tiles), static_cast<unsigned int>(d_tiles));
    if constexpr (std::is_same<scalar_t, double>::value) {
      linear_loglik_simt_kernel<kLik, double><<<grid, kSimtThreads, 0, stream>>>(args);
      check_launch(kNames.simt_kernel);
    } else {
      if (precision == MatmulPrecision::kTensorCore) {
        linear_loglik_tc_kernel<kLik, scalar_t><<<grid, kTcThreads, 0, stream>>>(args);
        check_launch(kNames.tc_kernel);
      } else {
        linear_loglik_simt_kernel<kLik, scalar_t><<<grid, kSimtThreads, 0, stream>>>(args);
        check_launch(kNames.simt_kernel);
      }
    }
  }
  linear_loglik_row_sum_kernel<scalar_t>
      <<<grid_stride_blocks(args.M, kRowSumThreads), kRowSumThreads, 0, stream>>>(
          static_cast<const compute_t<scalar_t>*>(args.ll_partial), static_cast<scalar_t*>(args.ll), args.M,
          d_tiles);
  check_launch(kNames.row_sum_kernel);
}

// Checks the sizes (std::invalid_argument naming the launcher), then launches the kernels of kLik.
template <Likelihood kLik>
void forward(const LinearLoglikForwardArgs& args, ScalarType dtype, MatmulPrecision precision,
             std::uintptr_t stream) {
  const std::string fn = std::string("ssvae_fast._C_cuda.") + names_of(kLik).launcher;
  if (args.M < 0 || args.D < 0 || args.H < 0 || args.C < 0) {
    throw std::invalid_argument(fn + ": sizes must be non-negative, got M=" + std::to_string(args.M) +
                                ", D=" + std::to_string(args.D) + ", H=" + std::to_string(args.H) +
                                ", C=" + std::to_string(args.C));
  }
  if (args.n_l < 0 || args.n_l > args.M) {
    throw std::invalid_argument(fn + ": n_l must be in [0, M = " + std::to_string(args.M) + "], got " +
                                std::to_string(args.n_l));
  }
  if (args.M == 0) return;  // nothing to write
  if (kLik == Likelihood::kGaussian && args.D > 0 && args.precision_vec == nullptr) {
    throw std::invalid_argument(fn + ": precision_vec is a null pointer but has " + std::to_string(args.D) +
                                " elements");
  }
  // Rows past the labelled prefix come in groups of C (the kernels divide by C only for those rows).
  if (args.M > args.n_l && (args.C < 1 || (args.M - args.n_l) % args.C != 0)) {
    throw std::invalid_argument(fn + ": M - n_l = " + std::to_string(args.M - args.n_l) +
                                " rows must be a positive multiple of C = " + std::to_string(args.C));
  }
  const int64_t m_tiles = (args.M + kBlockM - 1) / kBlockM;
  const int64_t d_tiles = (args.D + kBlockD - 1) / kBlockD;
  if (m_tiles > int64_t(std::numeric_limits<int>::max()) || d_tiles > 65535) {
    throw std::invalid_argument(fn + ": M = " + std::to_string(args.M) + " or D = " +
                                std::to_string(args.D) + " exceeds the grid (M < 2**31 * 64, D < 65536 * 64)");
  }
  auto cuda_stream = reinterpret_cast<cudaStream_t>(stream);
  dispatch_scalar_type(dtype, names_of(kLik).launcher, [&](auto tag) {
    using scalar_t = decltype(tag);
    launch<kLik, scalar_t>(args, precision, cuda_stream);
  });
}

}  // namespace

void bernoulli_loglik_linear_forward(const BernoulliLinearForwardArgs& args, ScalarType dtype,
                                     MatmulPrecision precision, std::uintptr_t stream) {
  forward<Likelihood::kBernoulli>(args, dtype, precision, stream);
}

void gaussian_loglik_linear_forward(const GaussianLinearForwardArgs& args, ScalarType dtype,
                                    MatmulPrecision precision, std::uintptr_t stream) {
  forward<Likelihood::kGaussian>(args, dtype, precision, stream);
}

}  // namespace cuda
}  // namespace ssvae_fast
