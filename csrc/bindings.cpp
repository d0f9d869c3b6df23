// pybind11 module ssvae_fast._C: the CPU kernels (no torch headers; torch is never needed to build).
//
// Every kernel takes raw data pointers as Python ints (`tensor.data_ptr()`), sizes as int64 and a dtype
// string ("float32" or "float64"); the Python launchers in ssvae_fast/ops check shapes, devices and
// contiguity and allocate the outputs. Bad arguments raise ValueError (std::invalid_argument). The GIL
// is released while a kernel runs.

#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <utility>

#include "cpu/bernoulli_loglik.h"
#include "cpu/bernoulli_loglik_linear.h"
#include "cpu/class_conditional.h"
#include "cpu/elbo.h"
#include "cpu/gaussian.h"

namespace py = pybind11;

namespace {

enum class DType { kFloat32, kFloat64 };

DType parse_dtype(const std::string& dtype) {
  if (dtype == "float32") return DType::kFloat32;
  if (dtype == "float64") return DType::kFloat64;
  throw std::invalid_argument("ssvae_fast._C: unsupported dtype '" + dtype +
                              "'; expected 'float32' or 'float64'");
}

void check_sizes(const char* fn, int64_t B, int64_t C, int64_t D) {
  if (B < 0 || C < 0 || D < 0) {
    throw std::invalid_argument(std::string("ssvae_fast._C.") + fn +
                                ": sizes must be non-negative, got B=" + std::to_string(B) +
                                ", C=" + std::to_string(C) + ", D=" + std::to_string(D));
  }
}

void check_pointer(const char* fn, const char* name, std::uintptr_t ptr, int64_t numel) {
  if (ptr == 0 && numel > 0) {
    throw std::invalid_argument(std::string("ssvae_fast._C.") + fn + ": " + name +
                                " is a null pointer but has " + std::to_string(numel) + " elements");
  }
}

template <typename scalar_t>
scalar_t* as_ptr(std::uintptr_t ptr) {
  return reinterpret_cast<scalar_t*>(ptr);
}

void bernoulli_loglik_forward(std::uintptr_t logits_ptr, std::uintptr_t x_ptr, std::uintptr_t out_ptr,
                              int64_t B, int64_t C, int64_t D, const std::string& dtype) {
  const char* fn = "bernoulli_loglik_forward";
  const DType kind = parse_dtype(dtype);
  check_sizes(fn, B, C, D);
  check_pointer(fn, "logits", logits_ptr, B * C * D);
  check_pointer(fn, "x", x_ptr, B * D);
  check_pointer(fn, "out", out_ptr, B * C);
  py::gil_scoped_release no_gil;
  if (kind == DType::kFloat32) {
    ssvae_fast::cpu::bernoulli_loglik_forward<float>(as_ptr<const float>(logits_ptr),
                                                     as_ptr<const float>(x_ptr),
                                                     as_ptr<float>(out_ptr), B, C, D);
  } else {
    ssvae_fast::cpu::bernoulli_loglik_forward<double>(as_ptr<const double>(logits_ptr),
                                                      as_ptr<const double>(x_ptr),
                                                      as_ptr<double>(out_ptr), B, C, D);
  }
}

void bernoulli_loglik_backward(std::uintptr_t logits_ptr, std::uintptr_t x_ptr,
                               std::uintptr_t grad_out_ptr, std::uintptr_t grad_logits_ptr,
                               std::uintptr_t grad_x_ptr, int64_t B, int64_t C, int64_t D,
                               const std::string& dtype) {
  const char* fn = "bernoulli_loglik_backward";
  const DType kind = parse_dtype(dtype);
  check_sizes(fn, B, C, D);
  check_pointer(fn, "logits", logits_ptr, B * C * D);
  check_pointer(fn, "x", x_ptr, B * D);
  check_pointer(fn, "grad_out", grad_out_ptr, B * C);
  check_pointer(fn, "grad_logits", grad_logits_ptr, B * C * D);
  py::gil_scoped_release no_gil;
  if (kind == DType::kFloat32) {
    ssvae_fast::cpu::bernoulli_loglik_backward<float>(
        as_ptr<const float>(logits_ptr), as_ptr<const float>(x_ptr),
        as_ptr<const float>(grad_out_ptr), as_ptr<float>(grad_logits_ptr),
        as_ptr<float>(grad_x_ptr), B, C, D);
  } else {
    ssvae_fast::cpu::bernoulli_loglik_backward<double>(
        as_ptr<const double>(logits_ptr), as_ptr<const double>(x_ptr),
        as_ptr<const double>(grad_out_ptr), as_ptr<double>(grad_logits_ptr),
        as_ptr<double>(grad_x_ptr), B, C, D);
  }
}

// ---- the `cpu` backend's kernels (ssvae_fast/ops/cpu_backend.py) -----------------------------------

// Calls fn(float{}) or fn(double{}) for the dtype string; the GIL is released during the call.
template <typename Fn>
void dispatch_float(const std::string& dtype, Fn&& fn) {
  const DType kind = parse_dtype(dtype);
  py::gil_scoped_release no_gil;
  if (kind == DType::kFloat32) {
    fn(float{});
  } else {
    fn(double{});
  }
}

void check_nonnegative(const char* fn, std::initializer_list<std::pair<const char*, int64_t>> sizes) {
  for (const auto& [name, value] : sizes) {
    if (value < 0) {
      throw std::invalid_argument(std::string("ssvae_fast._C.") + fn + ": " + name +
                                  " must be non-negative, got " + std::to_string(value));
    }
  }
}

// The first n_l of N examples are labelled (one row each); the others have C rows each.
void check_labelled_rows(const char* fn, int64_t N, int64_t n_l) {
  if (n_l > N) {
    throw std::invalid_argument(std::string("ssvae_fast._C.") + fn + ": n_l = " + std::to_string(n_l) +
                                " labelled rows exceed N = " + std::to_string(N));
  }
}

// Class indices are read as array offsets: check them (with the GIL held) before any kernel runs.
void check_class_indices(const char* fn, const char* name, std::uintptr_t ptr, int64_t n, int64_t C) {
  check_pointer(fn, name, ptr, n);
  const int64_t* classes = reinterpret_cast<const int64_t*>(ptr);
  for (int64_t i = 0; i < n; ++i) {
    if (classes[i] < 0 || classes[i] >= C) {
      throw std::invalid_argument(std::string("ssvae_fast._C.") + fn + ": " + name + "[" +
                                  std::to_string(i) + "] = " + std::to_string(classes[i]) +
                                  " is not a class index in [0, " + std::to_string(C) + ")");
    }
  }
}

ssvae_fast::cpu::Activation parse_activation(const char* fn, const std::string& name) {
  if (name == "softplus") return ssvae_fast::cpu::Activation::kSoftplus;
  if (name == "relu") return ssvae_fast::cpu::Activation::kRelu;
  throw std::invalid_argument(std::string("ssvae_fast._C.") + fn + ": unknown activation '" + name +
                              "'; expected 'softplus' or 'relu'");
}

void class_conditional_forward(std::uintptr_t a_ptr, std::uintptr_t wy_t_ptr, std::uintptr_t classes_ptr,
                               std::uintptr_t out_ptr, int64_t N, int64_t n_l, int64_t H, int64_t C,
                               const std::string& activation, const std::string& dtype) {
  const char* fn = "class_conditional_forward";
  check_nonnegative(fn, {{"N", N}, {"n_l", n_l}, {"H", H}, {"C", C}});
  check_labelled_rows(fn, N, n_l);
  const auto act = parse_activation(fn, activation);
  check_pointer(fn, "a", a_ptr, N * H);
  check_pointer(fn, "wy_t", wy_t_ptr, C * H);
  check_class_indices(fn, "classes", classes_ptr, n_l, C);
  check_pointer(fn, "out", out_ptr, (n_l + (N - n_l) * C) * H);
  const auto* classes = reinterpret_cast<const int64_t*>(classes_ptr);
  dispatch_float(dtype, [&](auto zero) {
    using T = decltype(zero);
    ssvae_fast::cpu::class_conditional_forward<T>(as_ptr<const T>(a_ptr), as_ptr<const T>(wy_t_ptr), classes,
                                                  as_ptr<T>(out_ptr), N, n_l, H, C, act);
  });
}

void class_conditional_backward(std::uintptr_t grad_out_ptr, std::uintptr_t a_ptr, std::uintptr_t wy_t_ptr,
                                std::uintptr_t out_ptr, std::uintptr_t classes_ptr,
                                std::uintptr_t grad_a_ptr, std::uintptr_t grad_wy_ptr, int64_t N, int64_t n_l,
                                int64_t H, int64_t C, const std::string& activation, const std::string& dtype) {
  const char* fn = "class_conditional_backward";
  check_nonnegative(fn, {{"N", N}, {"n_l", n_l}, {"H", H}, {"C", C}});
  check_labelled_rows(fn, N, n_l);
  const auto act = parse_activation(fn, activation);
  check_pointer(fn, "grad_out", grad_out_ptr, (n_l + (N - n_l) * C) * H);
  if (out_ptr == 0) {
    check_pointer(fn, "a", a_ptr, N * H);
    check_pointer(fn, "wy_t", wy_t_ptr, C * H);
  }
  check_class_indices(fn, "classes", classes_ptr, n_l, C);
  const auto* classes = reinterpret_cast<const int64_t*>(classes_ptr);
  dispatch_float(dtype, [&](auto zero) {
    using T = decltype(zero);
    ssvae_fast::cpu::class_conditional_backward<T>(
        as_ptr<const T>(grad_out_ptr), as_ptr<const T>(a_ptr), as_ptr<const T>(wy_t_ptr),
        as_ptr<const T>(out_ptr), classes, as_ptr<T>(grad_a_ptr), as_ptr<T>(grad_wy_ptr), N, n_l, H, C, act);
  });
}

void gaussian_reparam_kl_forward(std::uintptr_t head_ptr, std::uintptr_t eps_ptr, std::uintptr_t z_ptr,
                                 std::uintptr_t kl_ptr, int64_t R, int64_t Z, const std::string& dtype) {
  const char* fn = "gaussian_reparam_kl_forward";
  check_nonnegative(fn, {{"R", R}, {"Z", Z}});
  check_pointer(fn, "head", head_ptr, R * 2 * Z);
  check_pointer(fn, "eps", eps_ptr, R * Z);
  check_pointer(fn, "z", z_ptr, R * Z);
  check_pointer(fn, "kl", kl_ptr, R);
  dispatch_float(dtype, [&](auto zero) {
    using T = decltype(zero);
    ssvae_fast::cpu::gaussian_reparam_kl_forward<T>(as_ptr<const T>(head_ptr), as_ptr<const T>(eps_ptr),
                                                    as_ptr<T>(z_ptr), as_ptr<T>(kl_ptr), R, Z);
  });
}

void gaussian_reparam_kl_backward(std::uintptr_t head_ptr, std::uintptr_t eps_ptr, std::uintptr_t grad_z_ptr,
                                  std::uintptr_t grad_kl_ptr, std::uintptr_t grad_head_ptr,
                                  std::uintptr_t grad_eps_ptr, int64_t R, int64_t Z,
                                  const std::string& dtype) {
  const char* fn = "gaussian_reparam_kl_backward";
  check_nonnegative(fn, {{"R", R}, {"Z", Z}});
  check_pointer(fn, "head", head_ptr, R * 2 * Z);
  check_pointer(fn, "eps", eps_ptr, R * Z);
  dispatch_float(dtype, [&](auto zero) {
    using T = decltype(zero);
    ssvae_fast::cpu::gaussian_reparam_kl_backward<T>(
        as_ptr<const T>(head_ptr), as_ptr<const T>(eps_ptr), as_ptr<const T>(grad_z_ptr),
        as_ptr<const T>(grad_kl_ptr), as_ptr<T>(grad_head_ptr), as_ptr<T>(grad_eps_ptr), R, Z);
  });
}

void elbo_reduction_forward(std::uintptr_t logits_y_ptr, std::uintptr_t y_l_ptr, std::uintptr_t ll_l_ptr,
                            std::uintptr_t kl_l_ptr, std::uintptr_t ll_u_ptr, std::uintptr_t kl_u_ptr,
                            std::uintptr_t loss_ptr, int64_t n_l, int64_t n_u, int64_t C, double alpha,
                            const std::string& dtype) {
  const char* fn = "elbo_reduction_forward";
  check_nonnegative(fn, {{"n_l", n_l}, {"n_u", n_u}, {"C", C}});
  check_pointer(fn, "logits_y", logits_y_ptr, (n_l + n_u) * C);
  check_class_indices(fn, "y_l", y_l_ptr, n_l, C);
  check_pointer(fn, "ll_l", ll_l_ptr, n_l);
  check_pointer(fn, "kl_l", kl_l_ptr, n_l);
  check_pointer(fn, "ll_u", ll_u_ptr, n_u * C);
  check_pointer(fn, "kl_u", kl_u_ptr, n_u * C);
  check_pointer(fn, "loss", loss_ptr, n_l + n_u);
  dispatch_float(dtype, [&](auto zero) {
    using T = decltype(zero);
    ssvae_fast::cpu::elbo_reduction_forward<T>(
        as_ptr<const T>(logits_y_ptr), reinterpret_cast<const int64_t*>(y_l_ptr), as_ptr<const T>(ll_l_ptr),
        as_ptr<const T>(kl_l_ptr), as_ptr<const T>(ll_u_ptr), as_ptr<const T>(kl_u_ptr), as_ptr<T>(loss_ptr),
        n_l, n_u, C, alpha);
  });
}

void elbo_reduction_backward(std::uintptr_t grad_ptr, std::uintptr_t logits_y_ptr, std::uintptr_t y_l_ptr,
                             std::uintptr_t ll_u_ptr, std::uintptr_t kl_u_ptr,
                             std::uintptr_t grad_logits_y_ptr, std::uintptr_t grad_ll_l_ptr,
                             std::uintptr_t grad_kl_l_ptr,
                             std::uintptr_t grad_ll_u_ptr, std::uintptr_t grad_kl_u_ptr, int64_t n_l,
                             int64_t n_u, int64_t C, double alpha, const std::string& dtype) {
  const char* fn = "elbo_reduction_backward";
  check_nonnegative(fn, {{"n_l", n_l}, {"n_u", n_u}, {"C", C}});
  check_pointer(fn, "grad", grad_ptr, n_l + n_u);
  check_pointer(fn, "logits_y", logits_y_ptr, (n_l + n_u) * C);
  check_class_indices(fn, "y_l", y_l_ptr, n_l, C);
  check_pointer(fn, "ll_u", ll_u_ptr, n_u * C);
  check_pointer(fn, "kl_u", kl_u_ptr, n_u * C);
  dispatch_float(dtype, [&](auto zero) {
    using T = decltype(zero);
    ssvae_fast::cpu::elbo_reduction_backward<T>(
        as_ptr<const T>(grad_ptr), as_ptr<const T>(logits_y_ptr), reinterpret_cast<const int64_t*>(y_l_ptr),
        as_ptr<const T>(ll_u_ptr), as_ptr<const T>(kl_u_ptr), as_ptr<T>(grad_logits_y_ptr),
        as_ptr<T>(grad_ll_l_ptr), as_ptr<T>(grad_kl_l_ptr), as_ptr<T>(grad_ll_u_ptr),
        as_ptr<T>(grad_kl_u_ptr), n_l, n_u, C, alpha);
  });
}

void bernoulli_linear_epilogue(std::uintptr_t logits_ptr, std::uintptr_t bias_ptr, std::uintptr_t x_ptr,
                               std::uintptr_t ll_ptr, std::uintptr_t s_ptr, int64_t row0, int64_t rows,
                               int64_t N, int64_t n_l, int64_t C, int64_t D, const std::string& dtype) {
  const char* fn = "bernoulli_linear_epilogue";
  check_nonnegative(fn, {{"row0", row0}, {"rows", rows}, {"N", N}, {"n_l", n_l}, {"C", C}, {"D", D}});
  check_labelled_rows(fn, N, n_l);
  const int64_t total = n_l + (N - n_l) * C;
  if (row0 + rows > total) {
    throw std::invalid_argument(std::string("ssvae_fast._C.") + fn + ": rows [" + std::to_string(row0) +
                                ", " + std::to_string(row0 + rows) + ") exceed n_l + (N - n_l) * C = " +
                                std::to_string(total));
  }
  check_pointer(fn, "logits", logits_ptr, rows * D);
  check_pointer(fn, "x", x_ptr, N * D);
  check_pointer(fn, "ll", ll_ptr, rows);
  dispatch_float(dtype, [&](auto zero) {
    using T = decltype(zero);
    ssvae_fast::cpu::bernoulli_linear_epilogue<T>(as_ptr<const T>(logits_ptr), as_ptr<const T>(bias_ptr),
                                                  as_ptr<const T>(x_ptr), as_ptr<T>(ll_ptr), as_ptr<T>(s_ptr),
                                                  row0, rows, n_l, C, D);
  });
}

void bernoulli_linear_backward_rows(std::uintptr_t s_ptr, std::uintptr_t g_ptr, std::uintptr_t h_ptr,
                                    std::uintptr_t grad_h_ptr, std::uintptr_t g_h_ptr, std::uintptr_t db_ptr,
                                    int64_t M, int64_t D, int64_t H, const std::string& dtype) {
  const char* fn = "bernoulli_linear_backward_rows";
  check_nonnegative(fn, {{"M", M}, {"D", D}, {"H", H}});
  check_pointer(fn, "g", g_ptr, M);
  if (db_ptr != 0) check_pointer(fn, "s", s_ptr, M * D);
  if (g_h_ptr != 0) check_pointer(fn, "h", h_ptr, M * H);
  dispatch_float(dtype, [&](auto zero) {
    using T = decltype(zero);
    ssvae_fast::cpu::bernoulli_linear_backward_rows<T>(as_ptr<const T>(s_ptr), as_ptr<const T>(g_ptr),
                                                       as_ptr<const T>(h_ptr), as_ptr<T>(grad_h_ptr),
                                                       as_ptr<T>(g_h_ptr), as_ptr<T>(db_ptr), M, D, H);
  });
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "ssvae_fast CPU kernels (C++/OpenMP). Raw pointers in, no torch headers.";

  m.def("bernoulli_loglik_forward", &bernoulli_loglik_forward, py::arg("logits_ptr"),
        py::arg("x_ptr"), py::arg("out_ptr"), py::arg("B"), py::arg("C"), py::arg("D"),
        py::arg("dtype"),
        R"doc(ll[b, c] = sum_d x[b, d] * l[b, c, d] - softplus(l[b, c, d]).

logits (B, C, D), x (B, D), out (B, C): contiguous, same dtype ("float32" or "float64"), passed as
data pointers. Accumulates in double. Deterministic.)doc");

  m.def("bernoulli_loglik_backward", &bernoulli_loglik_backward, py::arg("logits_ptr"),
        py::arg("x_ptr"), py::arg("grad_out_ptr"), py::arg("grad_logits_ptr"), py::arg("grad_x_ptr"),
        py::arg("B"), py::arg("C"), py::arg("D"), py::arg("dtype"),
        R"doc(grad_logits[b, c, d] = g[b, c] * (x[b, d] - sigmoid(l[b, c, d])) and, unless grad_x_ptr is 0,
grad_x[b, d] = sum_c g[b, c] * l[b, c, d] (accumulated in double).

logits / grad_logits (B, C, D), x / grad_x (B, D), grad_out g (B, C): contiguous, same dtype.
Deterministic: no atomics, each output element is owned by one thread.)doc");

  // ---- the `cpu` backend (ssvae_fast/ops/cpu_backend.py); formulas in csrc/cpu/<op>.h -------------
  m.def("class_conditional_forward", &class_conditional_forward, py::arg("a_ptr"), py::arg("wy_t_ptr"),
        py::arg("classes_ptr"), py::arg("out_ptr"), py::arg("N"), py::arg("n_l"), py::arg("H"), py::arg("C"),
        py::arg("activation"), py::arg("dtype"),
        R"doc(out = act(a[n] + wy_t[c]), (n_l + (N - n_l) * C, H): row i < n_l has n = i, c = classes[i]
(int64, checked to lie in [0, C)); row n_l + j * C + c has n = n_l + j. a (N, H), wy_t (C, H): contiguous.)doc");
  m.def("class_conditional_backward", &class_conditional_backward, py::arg("grad_out_ptr"), py::arg("a_ptr"),
        py::arg("wy_t_ptr"), py::arg("out_ptr"), py::arg("classes_ptr"), py::arg("grad_a_ptr"),
        py::arg("grad_wy_ptr"), py::arg("N"), py::arg("n_l"), py::arg("H"), py::arg("C"), py::arg("activation"),
        py::arg("dtype"),
        R"doc(grad_a (N, H) and grad_wy (H, C) (either pointer may be 0: not computed) of
class_conditional_forward; act' from out when out_ptr is not 0, else from a + wy_t. Deterministic.)doc");
  m.def("gaussian_reparam_kl_forward", &gaussian_reparam_kl_forward, py::arg("head_ptr"), py::arg("eps_ptr"),
        py::arg("z_ptr"), py::arg("kl_ptr"), py::arg("R"), py::arg("Z"), py::arg("dtype"),
        R"doc(z = mu + exp(logvar / 2) eps (R, Z) and kl = 0.5 sum (mu^2 + exp(logvar) - 1 - logvar) (R,),
head = [mu, logvar] (R, 2Z). Contiguous. KL accumulated in double.)doc");
  m.def("gaussian_reparam_kl_backward", &gaussian_reparam_kl_backward, py::arg("head_ptr"),
        py::arg("eps_ptr"), py::arg("grad_z_ptr"), py::arg("grad_kl_ptr"), py::arg("grad_head_ptr"),
        py::arg("grad_eps_ptr"),
        py::arg("R"), py::arg("Z"), py::arg("dtype"),
        R"doc(grad_head (R, 2Z) and grad_eps (R, Z) (0: not computed) from grad_z (R, Z) and grad_kl (R,)
(0: zero).)doc");
  m.def("elbo_reduction_forward", &elbo_reduction_forward, py::arg("logits_y_ptr"), py::arg("y_l_ptr"),
        py::arg("ll_l_ptr"), py::arg("kl_l_ptr"), py::arg("ll_u_ptr"), py::arg("kl_u_ptr"),
        py::arg("loss_ptr"), py::arg("n_l"), py::arg("n_u"), py::arg("C"), py::arg("alpha"), py::arg("dtype"),
        R"doc(Per-example M2 losses (n_l + n_u,), labelled first (csrc/cpu/elbo.h). Computed in double.)doc");
  m.def("elbo_reduction_backward", &elbo_reduction_backward, py::arg("grad_ptr"), py::arg("logits_y_ptr"),
        py::arg("y_l_ptr"), py::arg("ll_u_ptr"), py::arg("kl_u_ptr"), py::arg("grad_logits_y_ptr"),
        py::arg("grad_ll_l_ptr"), py::arg("grad_kl_l_ptr"), py::arg("grad_ll_u_ptr"),
        py::arg("grad_kl_u_ptr"), py::arg("n_l"), py::arg("n_u"), py::arg("C"), py::arg("alpha"),
        py::arg("dtype"),
        R"doc(Gradients of elbo_reduction_forward's losses (any output pointer may be 0: not computed).)doc");
  m.def("bernoulli_linear_epilogue", &bernoulli_linear_epilogue, py::arg("logits_ptr"), py::arg("bias_ptr"),
        py::arg("x_ptr"),
        py::arg("ll_ptr"), py::arg("s_ptr"), py::arg("row0"), py::arg("rows"), py::arg("N"), py::arg("n_l"),
        py::arg("C"), py::arg("D"), py::arg("dtype"),
        R"doc(On a block of rows (rows, D) of h W^T (global rows row0..; row r scores x[r] for r < n_l, else
x[n_l + (r - n_l) / C], x (N, D)), with
l = h W^T + bias (bias_ptr 0: no bias): ll[r] = sum_d x l - softplus(l) (accumulated in double) and,
unless s_ptr is 0, s[r] = x - sigmoid(l) (s may be logits itself).)doc");
  m.def("bernoulli_linear_backward_rows", &bernoulli_linear_backward_rows, py::arg("s_ptr"), py::arg("g_ptr"),
        py::arg("h_ptr"), py::arg("grad_h_ptr"), py::arg("g_h_ptr"), py::arg("db_ptr"), py::arg("M"),
        py::arg("D"), py::arg("H"), py::arg("dtype"),
        R"doc(The elementwise part of bernoulli_loglik_linear's backward, one pass over the rows (any output
pointer may be 0: skipped): grad_h[r] *= g[r] in place (grad_h = s W on entry), g_h[r] = g[r] h[r], and
db = sum_r g[r] s[r] in double over a fixed partition of the rows (deterministic).)doc");

  m.def("num_threads", &ssvae_fast::cpu::num_threads,
        "OpenMP's maximum number of threads (1 when built without OpenMP).");
  m.def("has_openmp", &ssvae_fast::cpu::has_openmp, "Whether the module was built with OpenMP.");
}
