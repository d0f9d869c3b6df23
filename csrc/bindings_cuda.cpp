// pybind11 module ssvae_fast._C_cuda: the CUDA kernels, built only where nvcc is found (separate from
// ssvae_fast._C so that the CPU module always imports on machines without CUDA). The CUDA runtime is
// linked statically: importing this module never needs a libcudart.so.
//
// Every kernel takes device pointers as Python ints (`tensor.data_ptr()`), sizes as int64, a dtype
// string ("float32" or "float64") and the stream to launch on (`torch.cuda.current_stream().cuda_stream`).
// The caller makes the tensors' device current (`with torch.cuda.device(t.device)`). Launches are
// asynchronous; a launch failure raises RuntimeError naming the kernel; bad arguments raise ValueError.
//
// The `cuda` backend's ops (ssvae_fast/ops/cuda_backend.py calls them with keyword arguments) take a
// dtype string among "float32", "float64", "bfloat16", "float16", every input's strides (in elements),
// and write contiguous outputs; workspaces (partial sums, in the compute dtype: float64 for float64,
// else float32) are allocated by the caller with the sizes given by the module constants below.

#include <cuda_runtime_api.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <utility>

#include "cuda/bernoulli_loglik.h"
#include "cuda/bernoulli_loglik_linear.h"
#include "cuda/class_conditional.h"
#include "cuda/elbo.h"
#include "cuda/gaussian.h"

namespace py = pybind11;

namespace {

enum class DType { kFloat32, kFloat64 };

DType parse_dtype(const std::string& dtype) {
  if (dtype == "float32") return DType::kFloat32;
  if (dtype == "float64") return DType::kFloat64;
  throw std::invalid_argument("ssvae_fast._C_cuda: unsupported dtype '" + dtype +
                              "'; expected 'float32' or 'float64'");
}

void check_sizes(const char* fn, int64_t B, int64_t C, int64_t D) {
  if (B < 0 || C < 0 || D < 0) {
    throw std::invalid_argument(std::string("ssvae_fast._C_cuda.") + fn +
                                ": sizes must be non-negative, got B=" + std::to_string(B) +
                                ", C=" + std::to_string(C) + ", D=" + std::to_string(D));
  }
}

void check_pointer(const char* fn, const char* name, std::uintptr_t ptr, int64_t numel) {
  if (ptr == 0 && numel > 0) {
    throw std::invalid_argument(std::string("ssvae_fast._C_cuda.") + fn + ": " + name +
                                " is a null pointer but has " + std::to_string(numel) + " elements");
  }
}

template <typename scalar_t>
scalar_t* as_ptr(std::uintptr_t ptr) {
  return reinterpret_cast<scalar_t*>(ptr);
}

void bernoulli_loglik_forward(std::uintptr_t logits_ptr, std::uintptr_t x_ptr, std::uintptr_t out_ptr,
                              int64_t B, int64_t C, int64_t D, const std::string& dtype,
                              std::uintptr_t stream) {
  const char* fn = "bernoulli_loglik_forward";
  const DType kind = parse_dtype(dtype);
  check_sizes(fn, B, C, D);
  check_pointer(fn, "logits", logits_ptr, B * C * D);
  check_pointer(fn, "x", x_ptr, B * D);
  check_pointer(fn, "out", out_ptr, B * C);
  if (kind == DType::kFloat32) {
    ssvae_fast::cuda::bernoulli_loglik_forward<float>(as_ptr<const float>(logits_ptr),
                                                      as_ptr<const float>(x_ptr),
                                                      as_ptr<float>(out_ptr), B, C, D, stream);
  } else {
    ssvae_fast::cuda::bernoulli_loglik_forward<double>(as_ptr<const double>(logits_ptr),
                                                       as_ptr<const double>(x_ptr),
                                                       as_ptr<double>(out_ptr), B, C, D, stream);
  }
}

void bernoulli_loglik_backward(std::uintptr_t logits_ptr, std::uintptr_t x_ptr,
                               std::uintptr_t grad_out_ptr, std::uintptr_t grad_logits_ptr,
                               std::uintptr_t grad_x_ptr, int64_t B, int64_t C, int64_t D,
                               const std::string& dtype, std::uintptr_t stream) {
  const char* fn = "bernoulli_loglik_backward";
  const DType kind = parse_dtype(dtype);
  check_sizes(fn, B, C, D);
  check_pointer(fn, "logits", logits_ptr, B * C * D);
  check_pointer(fn, "x", x_ptr, B * D);
  check_pointer(fn, "grad_out", grad_out_ptr, B * C);
  check_pointer(fn, "grad_logits", grad_logits_ptr, B * C * D);
  if (kind == DType::kFloat32) {
    ssvae_fast::cuda::bernoulli_loglik_backward<float>(
        as_ptr<const float>(logits_ptr), as_ptr<const float>(x_ptr),
        as_ptr<const float>(grad_out_ptr), as_ptr<float>(grad_logits_ptr),
        as_ptr<float>(grad_x_ptr), B, C, D, stream);
  } else {
    ssvae_fast::cuda::bernoulli_loglik_backward<double>(
        as_ptr<const double>(logits_ptr), as_ptr<const double>(x_ptr),
        as_ptr<const double>(grad_out_ptr), as_ptr<double>(grad_logits_ptr),
        as_ptr<double>(grad_x_ptr), B, C, D, stream);
  }
}

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the error so that it does not surface at the next launch check
    return 0;
  }
  return count;
}

// ---------------------------------------------------------------------------------------------------
// The `cuda` backend's ops.
// ---------------------------------------------------------------------------------------------------
namespace sc = ssvae_fast::cuda;

std::string where(const char* fn) { return std::string("ssvae_fast._C_cuda.") + fn; }

sc::ScalarType parse_scalar_type(const char* fn, const std::string& dtype) {
  if (dtype == "float32") return sc::ScalarType::kFloat32;
  if (dtype == "float64") return sc::ScalarType::kFloat64;
  if (dtype == "bfloat16") return sc::ScalarType::kBFloat16;
  if (dtype == "float16") return sc::ScalarType::kFloat16;
  throw std::invalid_argument(where(fn) + ": unsupported dtype '" + dtype +
                              "'; expected 'float32', 'float64', 'bfloat16' or 'float16'");
}

sc::Activation parse_activation(const char* fn, const std::string& activation) {
  if (activation == "softplus") return sc::Activation::kSoftplus;
  if (activation == "relu") return sc::Activation::kRelu;
  throw std::invalid_argument(where(fn) + ": unknown activation '" + activation +
                              "'; expected 'softplus' or 'relu'");
}

sc::MatmulPrecision parse_precision(const char* fn, const std::string& precision) {
  if (precision == "ieee") return sc::MatmulPrecision::kIeee;
  if (precision == "tf32") return sc::MatmulPrecision::kTensorCore;
  throw std::invalid_argument(where(fn) + ": unknown precision '" + precision + "'; expected 'ieee' or 'tf32'");
}

void check_non_negative(const char* fn, std::initializer_list<std::pair<const char*, int64_t>> sizes) {
  for (const auto& size : sizes) {
    if (size.second < 0) {
      throw std::invalid_argument(where(fn) + ": size " + size.first + " must be non-negative, got " +
                                  std::to_string(size.second));
    }
  }
}

// 0 <= n_l <= bound (the labelled prefix of a row layout, after check_non_negative).
void check_labelled(const char* fn, int64_t n_l, const char* bound_name, int64_t bound) {
  if (n_l > bound) {
    throw std::invalid_argument(where(fn) + ": n_l must be in [0, " + bound_name + " = " + std::to_string(bound) +
                                "], got " + std::to_string(n_l));
  }
}

template <typename T = void>
T* ptr(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

void class_conditional_forward(std::uintptr_t a_ptr, std::uintptr_t w_y_ptr, std::uintptr_t classes_ptr,
                               std::uintptr_t out_ptr, int64_t N, int64_t n_l, int64_t H, int64_t C, int64_t stride_an,
                               int64_t stride_ah, int64_t stride_wh, int64_t stride_wc, int64_t stride_cls,
                               const std::string& activation, const std::string& dtype, std::uintptr_t stream) {
  const char* fn = "class_conditional_forward";
  const sc::ScalarType kind = parse_scalar_type(fn, dtype);
  const sc::Activation act = parse_activation(fn, activation);
  check_non_negative(fn, {{"N", N}, {"n_l", n_l}, {"H", H}, {"C", C}});
  check_labelled(fn, n_l, "N", N);
  const int64_t rows = n_l + (N - n_l) * C;  // output rows
  check_pointer(fn, "a", a_ptr, N * H);
  check_pointer(fn, "w_y", w_y_ptr, H * C);
  check_pointer(fn, "classes", classes_ptr, n_l);
  check_pointer(fn, "out", out_ptr, rows * H);
  sc::ClassConditionalForwardArgs args;
  args.a = ptr<const void>(a_ptr);
  args.w_y = ptr<const void>(w_y_ptr);
  args.classes = ptr<const int64_t>(classes_ptr);
  args.out = ptr(out_ptr);
  args.N = N;
  args.n_l = n_l;
  args.H = H;
  args.C = C;
  args.stride_an = stride_an;
  args.stride_ah = stride_ah;
  args.stride_wh = stride_wh;
  args.stride_wc = stride_wc;
  args.stride_cls = stride_cls;
  sc::class_conditional_forward(args, kind, act, stream);
}

void class_conditional_backward(std::uintptr_t grad_ptr, std::uintptr_t a_ptr, std::uintptr_t w_y_ptr,
                                std::uintptr_t classes_ptr, std::uintptr_t da_ptr, std::uintptr_t dw_partial_ptr,
                                std::uintptr_t dw_y_ptr, int64_t N, int64_t n_l, int64_t H, int64_t C,
                                int64_t stride_an, int64_t stride_ah, int64_t stride_wh, int64_t stride_wc, int64_t stride_cls,
                                const std::string& activation, const std::string& dtype, std::uintptr_t stream) {
  const char* fn = "class_conditional_backward";
  const sc::ScalarType kind = parse_scalar_type(fn, dtype);
  const sc::Activation act = parse_activation(fn, activation);
  check_non_negative(fn, {{"N", N}, {"n_l", n_l}, {"H", H}, {"C", C}});
  check_labelled(fn, n_l, "N", N);
  const int64_t rows = n_l + (N - n_l) * C;  // rows of the output (and of grad)
  const int64_t row_blocks = (N + sc::kClassConditionalBackwardRows - 1) / sc::kClassConditionalBackwardRows;
  check_pointer(fn, "grad", grad_ptr, rows * H);
  check_pointer(fn, "a", a_ptr, N * H);
  check_pointer(fn, "w_y", w_y_ptr, H * C);
  check_pointer(fn, "classes", classes_ptr, n_l);
  check_pointer(fn, "da", da_ptr, N * H);
  check_pointer(fn, "dw_partial", dw_partial_ptr, row_blocks * C * H);
  check_pointer(fn, "dw_y", dw_y_ptr, H * C);
  sc::ClassConditionalBackwardArgs args;
  args.grad = ptr<const void>(grad_ptr);
  args.a = ptr<const void>(a_ptr);
  args.w_y = ptr<const void>(w_y_ptr);
  args.classes = ptr<const int64_t>(classes_ptr);
  args.da = ptr(da_ptr);
  args.dw_partial = ptr(dw_partial_ptr);
  args.dw_y = ptr(dw_y_ptr);
  args.N = N;
  args.n_l = n_l;
  args.H = H;
  args.C = C;
  args.stride_an = stride_an;
  args.stride_ah = stride_ah;
  args.stride_wh = stride_wh;
  args.stride_wc = stride_wc;
  args.stride_cls = stride_cls;
  sc::class_conditional_backward(args, kind, act, stream);
}

void gaussian_reparam_kl_forward(std::uintptr_t head_ptr, std::uintptr_t eps_ptr, std::uintptr_t z_ptr,
                                 std::uintptr_t kl_ptr, int64_t R, int64_t Z, int64_t stride_hr, int64_t stride_hz,
                                 int64_t stride_er, int64_t stride_ez, const std::string& dtype,
                                 std::uintptr_t stream) {
  const char* fn = "gaussian_reparam_kl_forward";
  const sc::ScalarType kind = parse_scalar_type(fn, dtype);
  check_non_negative(fn, {{"R", R}, {"Z", Z}});
  check_pointer(fn, "head", head_ptr, R * 2 * Z);
  check_pointer(fn, "eps", eps_ptr, R * Z);
  check_pointer(fn, "z", z_ptr, R * Z);
  check_pointer(fn, "kl", kl_ptr, R);
  sc::GaussianForwardArgs args;
  args.head = ptr<const void>(head_ptr);
  args.eps = ptr<const void>(eps_ptr);
  args.z = ptr(z_ptr);
  args.kl = ptr(kl_ptr);
  args.R = R;
  args.Z = Z;
  args.stride_hr = stride_hr;
  args.stride_hz = stride_hz;
  args.stride_er = stride_er;
  args.stride_ez = stride_ez;
  sc::gaussian_reparam_kl_forward(args, kind, stream);
}

void gaussian_reparam_kl_backward(std::uintptr_t head_ptr, std::uintptr_t eps_ptr, std::uintptr_t grad_z_ptr,
                                  std::uintptr_t grad_kl_ptr, std::uintptr_t dhead_ptr, std::uintptr_t deps_ptr,
                                  int64_t R, int64_t Z, int64_t stride_hr, int64_t stride_hz, int64_t stride_er,
                                  int64_t stride_ez, int64_t stride_gzr, int64_t stride_gzz, int64_t stride_gkl,
                                  const std::string& dtype, std::uintptr_t stream) {
  const char* fn = "gaussian_reparam_kl_backward";
  const sc::ScalarType kind = parse_scalar_type(fn, dtype);
  check_non_negative(fn, {{"R", R}, {"Z", Z}});
  check_pointer(fn, "head", head_ptr, R * 2 * Z);
  check_pointer(fn, "eps", eps_ptr, R * Z);
  check_pointer(fn, "grad_z", grad_z_ptr, R * Z);
  check_pointer(fn, "grad_kl", grad_kl_ptr, Z > 0 ? R : 0);  // read only where R * Z > 0
  check_pointer(fn, "dhead", dhead_ptr, R * 2 * Z);
  check_pointer(fn, "deps", deps_ptr, R * Z);
  sc::GaussianBackwardArgs args;
  args.head = ptr<const void>(head_ptr);
  args.eps = ptr<const void>(eps_ptr);
  args.grad_z = ptr<const void>(grad_z_ptr);
  args.grad_kl = ptr<const void>(grad_kl_ptr);
  args.dhead = ptr(dhead_ptr);
  args.deps = ptr(deps_ptr);
  args.R = R;
  args.Z = Z;
  args.stride_hr = stride_hr;
  args.stride_hz = stride_hz;
  args.stride_er = stride_er;
  args.stride_ez = stride_ez;
  args.stride_gzr = stride_gzr;
  args.stride_gzz = stride_gzz;
  args.stride_gkl = stride_gkl;
  sc::gaussian_reparam_kl_backward(args, kind, stream);
}

void elbo_reduction_forward(std::uintptr_t logits_y_ptr, std::uintptr_t y_l_ptr, std::uintptr_t ll_l_ptr,
                            std::uintptr_t kl_l_ptr, std::uintptr_t ll_u_ptr, std::uintptr_t kl_u_ptr,
                            std::uintptr_t loss_ptr, int64_t n_l, int64_t n_u, int64_t C, double alpha,
                            int64_t stride_lr, int64_t stride_lc, int64_t stride_y, int64_t stride_ll_l,
                            int64_t stride_kl_l, int64_t stride_ll_ur, int64_t stride_ll_uc, int64_t stride_kl_ur,
                            int64_t stride_kl_uc, const std::string& dtype, std::uintptr_t stream) {
  const char* fn = "elbo_reduction_forward";
  const sc::ScalarType kind = parse_scalar_type(fn, dtype);
  check_non_negative(fn, {{"n_l", n_l}, {"n_u", n_u}, {"C", C}});
  check_pointer(fn, "logits_y", logits_y_ptr, (n_l + n_u) * C);
  check_pointer(fn, "y_l", y_l_ptr, n_l);
  check_pointer(fn, "ll_l", ll_l_ptr, n_l);
  check_pointer(fn, "kl_l", kl_l_ptr, n_l);
  check_pointer(fn, "ll_u", ll_u_ptr, n_u * C);
  check_pointer(fn, "kl_u", kl_u_ptr, n_u * C);
  check_pointer(fn, "loss", loss_ptr, n_l + n_u);
  sc::ElboForwardArgs args;
  args.logits_y = ptr<const void>(logits_y_ptr);
  args.y_l = ptr<const int64_t>(y_l_ptr);
  args.ll_l = ptr<const void>(ll_l_ptr);
  args.kl_l = ptr<const void>(kl_l_ptr);
  args.ll_u = ptr<const void>(ll_u_ptr);
  args.kl_u = ptr<const void>(kl_u_ptr);
  args.loss = ptr(loss_ptr);
  args.n_l = n_l;
  args.n_u = n_u;
  args.C = C;
  args.alpha = alpha;
  args.stride_lr = stride_lr;
  args.stride_lc = stride_lc;
  args.stride_y = stride_y;
  args.stride_ll_l = stride_ll_l;
  args.stride_kl_l = stride_kl_l;
  args.stride_ll_ur = stride_ll_ur;
  args.stride_ll_uc = stride_ll_uc;
  args.stride_kl_ur = stride_kl_ur;
  args.stride_kl_uc = stride_kl_uc;
  sc::elbo_reduction_forward(args, kind, stream);
}

void elbo_reduction_backward(std::uintptr_t grad_ptr, std::uintptr_t logits_y_ptr, std::uintptr_t y_l_ptr,
                             std::uintptr_t ll_u_ptr, std::uintptr_t kl_u_ptr, std::uintptr_t dlogits_y_ptr,
                             std::uintptr_t dll_l_ptr, std::uintptr_t dkl_l_ptr, std::uintptr_t dll_u_ptr,
                             std::uintptr_t dkl_u_ptr, int64_t n_l, int64_t n_u, int64_t C, double alpha,
                             int64_t stride_g, int64_t stride_lr, int64_t stride_lc, int64_t stride_y,
                             int64_t stride_ll_ur, int64_t stride_ll_uc, int64_t stride_kl_ur, int64_t stride_kl_uc,
                             const std::string& dtype, std::uintptr_t stream) {
  const char* fn = "elbo_reduction_backward";
  const sc::ScalarType kind = parse_scalar_type(fn, dtype);
  check_non_negative(fn, {{"n_l", n_l}, {"n_u", n_u}, {"C", C}});
  check_pointer(fn, "grad", grad_ptr, n_l + n_u);
  check_pointer(fn, "logits_y", logits_y_ptr, (n_l + n_u) * C);
  check_pointer(fn, "y_l", y_l_ptr, n_l);
  check_pointer(fn, "ll_u", ll_u_ptr, n_u * C);
  check_pointer(fn, "kl_u", kl_u_ptr, n_u * C);
  check_pointer(fn, "dlogits_y", dlogits_y_ptr, (n_l + n_u) * C);
  check_pointer(fn, "dll_l", dll_l_ptr, n_l);
  check_pointer(fn, "dkl_l", dkl_l_ptr, n_l);
  check_pointer(fn, "dll_u", dll_u_ptr, n_u * C);
  check_pointer(fn, "dkl_u", dkl_u_ptr, n_u * C);
  sc::ElboBackwardArgs args;
  args.grad = ptr<const void>(grad_ptr);
  args.logits_y = ptr<const void>(logits_y_ptr);
  args.y_l = ptr<const int64_t>(y_l_ptr);
  args.ll_u = ptr<const void>(ll_u_ptr);
  args.kl_u = ptr<const void>(kl_u_ptr);
  args.dlogits_y = ptr(dlogits_y_ptr);
  args.dll_l = ptr(dll_l_ptr);
  args.dkl_l = ptr(dkl_l_ptr);
  args.dll_u = ptr(dll_u_ptr);
  args.dkl_u = ptr(dkl_u_ptr);
  args.n_l = n_l;
  args.n_u = n_u;
  args.C = C;
  args.alpha = alpha;
  args.stride_g = stride_g;
  args.stride_lr = stride_lr;
  args.stride_lc = stride_lc;
  args.stride_y = stride_y;
  args.stride_ll_ur = stride_ll_ur;
  args.stride_ll_uc = stride_ll_uc;
  args.stride_kl_ur = stride_kl_ur;
  args.stride_kl_uc = stride_kl_uc;
  sc::elbo_reduction_backward(args, kind, stream);
}

void bernoulli_loglik_linear_forward(std::uintptr_t h_ptr, std::uintptr_t weight_ptr, std::uintptr_t bias_ptr,
                                     std::uintptr_t x_ptr, std::uintptr_t s_ptr, std::uintptr_t ll_partial_ptr,
                                     std::uintptr_t ll_ptr, int64_t M, int64_t D, int64_t H, int64_t C,
                                     int64_t n_l, int64_t stride_hm, int64_t stride_hk, int64_t stride_wd,
                                     int64_t stride_wk, int64_t stride_b, int64_t stride_xn, int64_t stride_xd,
                                     const std::string& precision, const std::string& dtype,
                                     std::uintptr_t stream) {
  const char* fn = "bernoulli_loglik_linear_forward";
  const sc::ScalarType kind = parse_scalar_type(fn, dtype);
  const sc::MatmulPrecision matmul = parse_precision(fn, precision);
  check_non_negative(fn, {{"M", M}, {"D", D}, {"H", H}, {"C", C}, {"n_l", n_l}});
  check_labelled(fn, n_l, "M", M);
  const int64_t d_tiles = (D + sc::kBernoulliBlockD - 1) / sc::kBernoulliBlockD;
  const int64_t x_rows = n_l + (C > 0 ? (M - n_l) / C : 0);  // rows of x the kernel reads
  check_pointer(fn, "h", h_ptr, M * H);
  check_pointer(fn, "weight", weight_ptr, D * H);
  check_pointer(fn, "x", x_ptr, x_rows * D);
  check_pointer(fn, "ll_partial", ll_partial_ptr, d_tiles * M);
  check_pointer(fn, "ll", ll_ptr, M);
  sc::BernoulliLinearForwardArgs args;
  args.h = ptr<const void>(h_ptr);
  args.weight = ptr<const void>(weight_ptr);
  args.bias = ptr<const void>(bias_ptr);  // 0: no bias
  args.x = ptr<const void>(x_ptr);
  args.s = ptr(s_ptr);  // 0: s not stored
  args.ll_partial = ptr(ll_partial_ptr);
  args.ll = ptr(ll_ptr);
  args.M = M;
  args.D = D;
  args.H = H;
  args.C = C;
  args.n_l = n_l;
  args.stride_hm = stride_hm;
  args.stride_hk = stride_hk;
  args.stride_wd = stride_wd;
  args.stride_wk = stride_wk;
  args.stride_b = stride_b;
  args.stride_xn = stride_xn;
  args.stride_xd = stride_xd;
  sc::bernoulli_loglik_linear_forward(args, kind, matmul, stream);
}

}  // namespace

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "ssvae_fast CUDA kernels. Device pointers and a cudaStream_t (as ints) in; no torch headers.";

  m.def("bernoulli_loglik_forward", &bernoulli_loglik_forward, py::arg("logits_ptr"),
        py::arg("x_ptr"), py::arg("out_ptr"), py::arg("B"), py::arg("C"), py::arg("D"),
        py::arg("dtype"), py::arg("stream"),
        R"doc(ll[b, c] = sum_d x[b, d] * l[b, c, d] - softplus(l[b, c, d]) on `stream`.

logits (B, C, D), x (B, D), out (B, C): contiguous CUDA tensors of one dtype ("float32" or
"float64"), passed as data pointers. One block per (b, c) row; accumulates in double. Deterministic.)doc");

  m.def("bernoulli_loglik_backward", &bernoulli_loglik_backward, py::arg("logits_ptr"),
        py::arg("x_ptr"), py::arg("grad_out_ptr"), py::arg("grad_logits_ptr"), py::arg("grad_x_ptr"),
        py::arg("B"), py::arg("C"), py::arg("D"), py::arg("dtype"), py::arg("stream"),
        R"doc(grad_logits[b, c, d] = g[b, c] * (x[b, d] - sigmoid(l[b, c, d])) and, unless grad_x_ptr is 0,
grad_x[b, d] = sum_c g[b, c] * l[b, c, d] (accumulated in double), on `stream`. Deterministic.)doc");

  m.def("device_count", &device_count,
        "cudaGetDeviceCount as this module's (static) CUDA runtime sees it; 0 on any error.");

  // ---- the `cuda` backend's ops (ssvae_fast/ops/cuda_backend.py) --------------------------------------
  m.attr("BERNOULLI_BLOCK_M") = sc::kBernoulliBlockM;
  m.attr("BERNOULLI_BLOCK_D") = sc::kBernoulliBlockD;
  m.attr("CLASS_CONDITIONAL_BACKWARD_ROWS") = sc::kClassConditionalBackwardRows;

  m.def("class_conditional_forward", &class_conditional_forward, py::arg("a_ptr"), py::arg("w_y_ptr"),
        py::arg("classes_ptr"), py::arg("out_ptr"), py::arg("N"), py::arg("n_l"), py::arg("H"), py::arg("C"),
        py::arg("stride_an"), py::arg("stride_ah"), py::arg("stride_wh"), py::arg("stride_wc"),
        py::arg("stride_cls"), py::arg("activation"), py::arg("dtype"), py::arg("stream"),
        R"doc(out = act(a[n] + w_y[:, c]) on `stream`: a (N, H) and w_y (H, C) with any strides; the first n_l
(0 <= n_l <= N) rows of a take one class each, classes (n_l,) int64 (classes_ptr may be 0 when n_l = 0), the
others every class. out (n_l + (N - n_l) * C, H) contiguous, labelled rows first: out[i] for row i < n_l,
out[n_l + j * C + c] for row n_l + j and class c (n_l = 0: the (N, C, H) broadcast form; n_l = N: (N, H)).
activation "softplus" or "relu". A class outside [0, C) gives NaN.)doc");

  m.def("class_conditional_backward", &class_conditional_backward, py::arg("grad_ptr"), py::arg("a_ptr"),
        py::arg("w_y_ptr"), py::arg("classes_ptr"), py::arg("da_ptr"), py::arg("dw_partial_ptr"),
        py::arg("dw_y_ptr"), py::arg("N"), py::arg("n_l"), py::arg("H"), py::arg("C"), py::arg("stride_an"),
        py::arg("stride_ah"), py::arg("stride_wh"), py::arg("stride_wc"), py::arg("stride_cls"), py::arg("activation"),
        py::arg("dtype"), py::arg("stream"),
        R"doc(da (N, H) and dw_y (H, C), both contiguous, from the contiguous output gradient grad
(n_l + (N - n_l) * C, H) in the forward's row layout; dw_partial is a (ceil(N / CLASS_CONDITIONAL_BACKWARD_ROWS),
C, H) workspace in the compute dtype. Deterministic.)doc");

  m.def("gaussian_reparam_kl_forward", &gaussian_reparam_kl_forward, py::arg("head_ptr"), py::arg("eps_ptr"),
        py::arg("z_ptr"), py::arg("kl_ptr"), py::arg("R"), py::arg("Z"), py::arg("stride_hr"),
        py::arg("stride_hz"), py::arg("stride_er"), py::arg("stride_ez"), py::arg("dtype"), py::arg("stream"),
        R"doc(z = mu + exp(logvar / 2) * eps (R, Z) and kl = 0.5 sum_k (mu^2 + exp(logvar) - 1 - logvar) (R,),
contiguous, from head = [mu, logvar] (R, 2Z) and eps (R, Z) with any strides.)doc");

  m.def("gaussian_reparam_kl_backward", &gaussian_reparam_kl_backward, py::arg("head_ptr"), py::arg("eps_ptr"),
        py::arg("grad_z_ptr"), py::arg("grad_kl_ptr"), py::arg("dhead_ptr"), py::arg("deps_ptr"), py::arg("R"),
        py::arg("Z"), py::arg("stride_hr"), py::arg("stride_hz"), py::arg("stride_er"), py::arg("stride_ez"),
        py::arg("stride_gzr"), py::arg("stride_gzz"), py::arg("stride_gkl"), py::arg("dtype"), py::arg("stream"),
        R"doc(dhead (R, 2Z) and deps (R, Z), contiguous, from grad_z (R, Z) and grad_kl (R,) with any strides.)doc");

  m.def("elbo_reduction_forward", &elbo_reduction_forward, py::arg("logits_y_ptr"), py::arg("y_l_ptr"),
        py::arg("ll_l_ptr"), py::arg("kl_l_ptr"), py::arg("ll_u_ptr"), py::arg("kl_u_ptr"), py::arg("loss_ptr"),
        py::arg("n_l"), py::arg("n_u"), py::arg("C"), py::arg("alpha"), py::arg("stride_lr"), py::arg("stride_lc"),
        py::arg("stride_y"), py::arg("stride_ll_l"), py::arg("stride_kl_l"), py::arg("stride_ll_ur"),
        py::arg("stride_ll_uc"), py::arg("stride_kl_ur"), py::arg("stride_kl_uc"), py::arg("dtype"),
        py::arg("stream"),
        R"doc(Per-example M2 losses (n_l + n_u,), contiguous, labelled first: kl - ll + log C - alpha log q(y|x)
and sum_c q_c (kl_c - ll_c + log C + log q_c). One warp per row; log-softmax in the compute dtype.)doc");

  m.def("elbo_reduction_backward", &elbo_reduction_backward, py::arg("grad_ptr"), py::arg("logits_y_ptr"),
        py::arg("y_l_ptr"), py::arg("ll_u_ptr"), py::arg("kl_u_ptr"), py::arg("dlogits_y_ptr"),
        py::arg("dll_l_ptr"), py::arg("dkl_l_ptr"), py::arg("dll_u_ptr"), py::arg("dkl_u_ptr"), py::arg("n_l"),
        py::arg("n_u"), py::arg("C"), py::arg("alpha"), py::arg("stride_g"), py::arg("stride_lr"),
        py::arg("stride_lc"), py::arg("stride_y"), py::arg("stride_ll_ur"), py::arg("stride_ll_uc"),
        py::arg("stride_kl_ur"), py::arg("stride_kl_uc"), py::arg("dtype"), py::arg("stream"),
        R"doc(The gradients of the per-example losses with respect to logits_y, ll_l, kl_l, ll_u and kl_u, all
contiguous, in one kernel (one warp per row).)doc");

  m.def("bernoulli_loglik_linear_forward", &bernoulli_loglik_linear_forward, py::arg("h_ptr"),
        py::arg("weight_ptr"), py::arg("bias_ptr"), py::arg("x_ptr"), py::arg("s_ptr"), py::arg("ll_partial_ptr"),
        py::arg("ll_ptr"), py::arg("M"), py::arg("D"), py::arg("H"), py::arg("C"), py::arg("n_l"),
        py::arg("stride_hm"), py::arg("stride_hk"), py::arg("stride_wd"), py::arg("stride_wk"), py::arg("stride_b"),
        py::arg("stride_xn"), py::arg("stride_xd"), py::arg("precision"), py::arg("dtype"), py::arg("stream"),
        R"doc(ll[m] = sum_d x[e(m), d] l[m, d] - softplus(l[m, d]) with l = h W^T + b, h (M, H), W (D, H), b (D,)
(bias_ptr 0: none), x (N, D), any strides; ll (M,) contiguous. Rows labelled first: e(m) = m for m < n_l,
n_l + (m - n_l) / C after (M = n_l + (N - n_l) * C; C >= 1 when M > n_l; n_l = 0: every class, x (M / C, D)).
s_ptr != 0 also writes s = x - sigmoid(l), (M, D) contiguous. ll_partial: (ceil(D / BERNOULLI_BLOCK_D), M) workspace in the compute dtype. precision
"tf32" (tensor cores: TF32 for float32, native bfloat16/float16) or "ieee" (exact FMAs); float64 always
"ieee". The logits never reach device memory. Deterministic.)doc");
}
