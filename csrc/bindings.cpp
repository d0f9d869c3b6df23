// pybind11 module ssvae_fast._C: the CPU kernels (no torch headers; torch is never needed to build).
//
// Every kernel takes raw data pointers as Python ints (`tensor.data_ptr()`), sizes as int64 and a dtype
// string ("float32", "float64" or "bfloat16"): the storage type of the activations, weights and their
// gradients; per-row results (ll, kl, the losses), the gradients flowing into them and the Gaussian
// precisions are in its compute type, float32 for "bfloat16" (csrc/cpu/bfloat16.h). The op modules
// (ssvae_fast/ops/<op>.py) check shapes and devices, the launchers (ssvae_fast/cpu/<op>.py) make the inputs
// contiguous and allocate the outputs. Bad arguments raise ValueError (std::invalid_argument). The GIL is
// released while a kernel runs.

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "binding_helpers.h"
#include "cpu/bernoulli_loglik_linear.h"
#include "cpu/bfloat16.h"
#include "cpu/class_conditional_activation.h"
#include "cpu/elbo_reduction.h"
#include "cpu/gaussian_loglik_linear.h"
#include "cpu/gaussian_reparam_kl.h"
#include "cpu/vec_math.h"

namespace py = pybind11;

namespace {

using namespace ssvae_fast::bindings;  // NOLINT: Address, Checks, dispatch_float
namespace cpu = ssvae_fast::cpu;

constexpr const char* kModule = "ssvae_fast._C";

// The first n_l of N examples are labelled (one row each); the others have C rows each.
void check_labelled_rows(const Checks& check, int64_t N, int64_t n_l) {
  if (n_l > N) {
    check.fail("n_l = " + std::to_string(n_l) + " labelled rows exceed N = " + std::to_string(N));
  }
}

// Rows [row0, row0 + rows) of the labelled-prefix layout of N examples (n_l labelled, C rows per other one).
void check_row_block(const Checks& check, int64_t row0, int64_t rows, int64_t N, int64_t n_l, int64_t C) {
  check_labelled_rows(check, N, n_l);
  const int64_t total = n_l + (N - n_l) * C;
  if (row0 + rows > total) {
    check.fail("rows [" + std::to_string(row0) + ", " + std::to_string(row0 + rows) +
               ") exceed n_l + (N - n_l) * C = " + std::to_string(total));
  }
}

// Class indices are read as array offsets: check them (with the GIL held) before any kernel runs.
void check_class_indices(const Checks& check, const char* name, std::uintptr_t ptr, int64_t n, int64_t C) {
  check.pointer(name, ptr, n);
  const int64_t* classes = Address{ptr};
  for (int64_t i = 0; i < n; ++i) {
    if (classes[i] < 0 || classes[i] >= C) {
      check.fail(std::string(name) + "[" + std::to_string(i) + "] = " + std::to_string(classes[i]) +
                 " is not a class index in [0, " + std::to_string(C) + ")");
    }
  }
}

cpu::Activation parse_activation(const Checks& check, const std::string& activation) {
  return check.choice<cpu::Activation>("unknown activation", activation,
                                       {{"softplus", cpu::Activation::kSoftplus}, {"relu", cpu::Activation::kRelu}});
}

void class_conditional_forward(std::uintptr_t a_ptr, std::uintptr_t wy_t_ptr, std::uintptr_t classes_ptr,
                               std::uintptr_t out_ptr, int64_t N, int64_t n_l, int64_t H, int64_t C,
                               const std::string& activation, const std::string& dtype) {
  const Checks check(kModule, "class_conditional_forward");
  check.non_negative({{"N", N}, {"n_l", n_l}, {"H", H}, {"C", C}});
  check_labelled_rows(check, N, n_l);
  const auto act = parse_activation(check, activation);
  check.pointer("a", a_ptr, N * H);
  check.pointer("wy_t", wy_t_ptr, C * H);
  check_class_indices(check, "classes", classes_ptr, n_l, C);
  check.pointer("out", out_ptr, (n_l + (N - n_l) * C) * H);
  dispatch_float(kModule, dtype, [&](auto zero) {
    using T = decltype(zero);
    cpu::class_conditional_forward<T>(Address{a_ptr}, Address{wy_t_ptr}, Address{classes_ptr}, Address{out_ptr}, N,
                                      n_l, H, C, act);
  });
}

void class_conditional_backward(std::uintptr_t grad_out_ptr, std::uintptr_t a_ptr, std::uintptr_t wy_t_ptr,
                                std::uintptr_t out_ptr, std::uintptr_t classes_ptr,
                                std::uintptr_t grad_a_ptr, std::uintptr_t grad_wy_ptr, int64_t N, int64_t n_l,
                                int64_t H, int64_t C, const std::string& activation, const std::string& dtype) {
  const Checks check(kModule, "class_conditional_backward");
  check.non_negative({{"N", N}, {"n_l", n_l}, {"H", H}, {"C", C}});
  check_labelled_rows(check, N, n_l);
  const auto act = parse_activation(check, activation);
  check.pointer("grad_out", grad_out_ptr, (n_l + (N - n_l) * C) * H);
  if (out_ptr == 0) {
    check.pointer("a", a_ptr, N * H);
    check.pointer("wy_t", wy_t_ptr, C * H);
  }
  check_class_indices(check, "classes", classes_ptr, n_l, C);
  dispatch_float(kModule, dtype, [&](auto zero) {
    using T = decltype(zero);
    cpu::class_conditional_backward<T>(Address{grad_out_ptr}, Address{a_ptr}, Address{wy_t_ptr}, Address{out_ptr},
                                       Address{classes_ptr}, Address{grad_a_ptr}, Address{grad_wy_ptr}, N, n_l, H,
                                       C, act);
  });
}

void gaussian_reparam_kl_forward(std::uintptr_t head_ptr, std::uintptr_t eps_ptr, std::uintptr_t z_ptr,
                                 std::uintptr_t kl_ptr, int64_t R, int64_t Z, const std::string& dtype) {
  const Checks check(kModule, "gaussian_reparam_kl_forward");
  check.non_negative({{"R", R}, {"Z", Z}});
  check.pointer("head", head_ptr, R * 2 * Z);
  check.pointer("eps", eps_ptr, R * Z);
  check.pointer("z", z_ptr, R * Z);
  check.pointer("kl", kl_ptr, R);
  dispatch_float(kModule, dtype, [&](auto zero) {
    using T = decltype(zero);
    cpu::gaussian_reparam_kl_forward<T>(Address{head_ptr}, Address{eps_ptr}, Address{z_ptr}, Address{kl_ptr}, R,
                                        Z);
  });
}

void gaussian_reparam_kl_backward(std::uintptr_t head_ptr, std::uintptr_t eps_ptr, std::uintptr_t grad_z_ptr,
                                  std::uintptr_t grad_kl_ptr, std::uintptr_t grad_head_ptr,
                                  std::uintptr_t grad_eps_ptr, int64_t R, int64_t Z,
                                  const std::string& dtype) {
  const Checks check(kModule, "gaussian_reparam_kl_backward");
  check.non_negative({{"R", R}, {"Z", Z}});
  check.pointer("head", head_ptr, R * 2 * Z);
  check.pointer("eps", eps_ptr, R * Z);
  dispatch_float(kModule, dtype, [&](auto zero) {
    using T = decltype(zero);
    cpu::gaussian_reparam_kl_backward<T>(Address{head_ptr}, Address{eps_ptr}, Address{grad_z_ptr},
                                         Address{grad_kl_ptr}, Address{grad_head_ptr}, Address{grad_eps_ptr}, R, Z);
  });
}

void elbo_reduction_forward(std::uintptr_t logits_y_ptr, std::uintptr_t y_l_ptr, std::uintptr_t ll_l_ptr,
                            std::uintptr_t kl_l_ptr, std::uintptr_t ll_u_ptr, std::uintptr_t kl_u_ptr,
                            std::uintptr_t loss_ptr, int64_t n_l, int64_t n_u, int64_t C, double alpha,
                            const std::string& dtype) {
  const Checks check(kModule, "elbo_reduction_forward");
  check.non_negative({{"n_l", n_l}, {"n_u", n_u}, {"C", C}});
  check.pointer("logits_y", logits_y_ptr, (n_l + n_u) * C);
  check_class_indices(check, "y_l", y_l_ptr, n_l, C);
  check.pointer("ll_l", ll_l_ptr, n_l);
  check.pointer("kl_l", kl_l_ptr, n_l);
  check.pointer("ll_u", ll_u_ptr, n_u * C);
  check.pointer("kl_u", kl_u_ptr, n_u * C);
  check.pointer("loss", loss_ptr, n_l + n_u);
  dispatch_float(kModule, dtype, [&](auto zero) {
    using T = decltype(zero);
    cpu::elbo_reduction_forward<T>(Address{logits_y_ptr}, Address{y_l_ptr}, Address{ll_l_ptr}, Address{kl_l_ptr},
                                   Address{ll_u_ptr}, Address{kl_u_ptr}, Address{loss_ptr}, n_l, n_u, C, alpha);
  });
}

void elbo_reduction_backward(std::uintptr_t grad_ptr, std::uintptr_t logits_y_ptr, std::uintptr_t y_l_ptr,
                             std::uintptr_t ll_u_ptr, std::uintptr_t kl_u_ptr,
                             std::uintptr_t grad_logits_y_ptr, std::uintptr_t grad_ll_l_ptr,
                             std::uintptr_t grad_kl_l_ptr,
                             std::uintptr_t grad_ll_u_ptr, std::uintptr_t grad_kl_u_ptr, int64_t n_l,
                             int64_t n_u, int64_t C, double alpha, const std::string& dtype) {
  const Checks check(kModule, "elbo_reduction_backward");
  check.non_negative({{"n_l", n_l}, {"n_u", n_u}, {"C", C}});
  check.pointer("grad", grad_ptr, n_l + n_u);
  check.pointer("logits_y", logits_y_ptr, (n_l + n_u) * C);
  check_class_indices(check, "y_l", y_l_ptr, n_l, C);
  check.pointer("ll_u", ll_u_ptr, n_u * C);
  check.pointer("kl_u", kl_u_ptr, n_u * C);
  dispatch_float(kModule, dtype, [&](auto zero) {
    using T = decltype(zero);
    cpu::elbo_reduction_backward<T>(Address{grad_ptr}, Address{logits_y_ptr}, Address{y_l_ptr}, Address{ll_u_ptr},
                                    Address{kl_u_ptr}, Address{grad_logits_y_ptr}, Address{grad_ll_l_ptr},
                                    Address{grad_kl_l_ptr}, Address{grad_ll_u_ptr}, Address{grad_kl_u_ptr}, n_l,
                                    n_u, C, alpha);
  });
}

void bernoulli_linear_epilogue(std::uintptr_t logits_ptr, std::uintptr_t bias_ptr, std::uintptr_t x_ptr,
                               std::uintptr_t ll_ptr, std::uintptr_t s_ptr, int64_t row0, int64_t rows,
                               int64_t N, int64_t n_l, int64_t C, int64_t D, const std::string& dtype) {
  const Checks check(kModule, "bernoulli_linear_epilogue");
  check.non_negative({{"row0", row0}, {"rows", rows}, {"N", N}, {"n_l", n_l}, {"C", C}, {"D", D}});
  check_row_block(check, row0, rows, N, n_l, C);
  check.pointer("logits", logits_ptr, rows * D);
  check.pointer("x", x_ptr, N * D);
  check.pointer("ll", ll_ptr, rows);
  dispatch_float(kModule, dtype, [&](auto zero) {
    using T = decltype(zero);
    cpu::bernoulli_linear_epilogue<T>(Address{logits_ptr}, Address{bias_ptr}, Address{x_ptr}, Address{ll_ptr},
                                      Address{s_ptr}, row0, rows, n_l, C, D);
  });
}

void bernoulli_linear_backward_rows(std::uintptr_t s_ptr, std::uintptr_t g_ptr, std::uintptr_t h_ptr,
                                    std::uintptr_t grad_h_ptr, std::uintptr_t g_h_ptr, std::uintptr_t db_ptr,
                                    int64_t M, int64_t D, int64_t H, const std::string& dtype) {
  const Checks check(kModule, "bernoulli_linear_backward_rows");
  check.non_negative({{"M", M}, {"D", D}, {"H", H}});
  check.pointer("g", g_ptr, M);
  if (db_ptr != 0) check.pointer("s", s_ptr, M * D);
  if (g_h_ptr != 0) check.pointer("h", h_ptr, M * H);
  dispatch_float(kModule, dtype, [&](auto zero) {
    using T = decltype(zero);
    cpu::bernoulli_linear_backward_rows<T>(Address{s_ptr}, Address{g_ptr}, Address{h_ptr}, Address{grad_h_ptr},
                                           Address{g_h_ptr}, Address{db_ptr}, M, D, H);
  });
}

void gaussian_linear_epilogue(std::uintptr_t means_ptr, std::uintptr_t bias_ptr, std::uintptr_t precision_ptr,
                              std::uintptr_t x_ptr, std::uintptr_t ll_ptr, std::uintptr_t s_ptr, double offset,
                              int64_t row0, int64_t rows, int64_t N, int64_t n_l, int64_t C, int64_t D,
                              const std::string& dtype) {
  const Checks check(kModule, "gaussian_linear_epilogue");
  check.non_negative({{"row0", row0}, {"rows", rows}, {"N", N}, {"n_l", n_l}, {"C", C}, {"D", D}});
  check_row_block(check, row0, rows, N, n_l, C);
  check.pointer("means", means_ptr, rows * D);
  check.pointer("precision", precision_ptr, D);
  check.pointer("x", x_ptr, N * D);
  check.pointer("ll", ll_ptr, rows);
  dispatch_float(kModule, dtype, [&](auto zero) {
    using T = decltype(zero);
    cpu::gaussian_linear_epilogue<T>(Address{means_ptr}, Address{bias_ptr}, Address{precision_ptr}, Address{x_ptr},
                                     Address{ll_ptr}, Address{s_ptr}, offset, row0, rows, n_l, C, D);
  });
}

void gaussian_linear_backward_rows(std::uintptr_t s_ptr, std::uintptr_t g_ptr, std::uintptr_t dl_ptr,
                                   std::uintptr_t db_ptr, std::uintptr_t q_ptr, int64_t M, int64_t D,
                                   const std::string& dtype) {
  const Checks check(kModule, "gaussian_linear_backward_rows");
  check.non_negative({{"M", M}, {"D", D}});
  check.pointer("s", s_ptr, M * D);
  check.pointer("g", g_ptr, M);
  dispatch_float(kModule, dtype, [&](auto zero) {
    using T = decltype(zero);
    cpu::gaussian_linear_backward_rows<T>(Address{s_ptr}, Address{g_ptr}, Address{dl_ptr}, Address{db_ptr},
                                          Address{q_ptr}, M, D);
  });
}

// ---- vec_math.h's float32 helpers (and bfloat16.h's rounding) over an array, for the accuracy tests ----
// Each loop is compiled as the kernels compile theirs (the same target clones, picked at load time, and
// `omp simd`), so the tests measure the code the kernels run, contractions and all.
#define SSVAE_FAST_VEC_MATH_EVAL(NAME, EXPR)                                 \
  SSVAE_FAST_TARGET_CLONES                                                   \
  void eval_##NAME(const float* in, float* out, int64_t n) {                 \
    SSVAE_FAST_SIMD                                                          \
    for (int64_t i = 0; i < n; ++i) {                                        \
      const float v = in[i];                                                 \
      out[i] = (EXPR);                                                       \
    }                                                                        \
  }

SSVAE_FAST_VEC_MATH_EVAL(exp_neg, cpu::exp_neg_f32(v))
SSVAE_FAST_VEC_MATH_EVAL(exp, cpu::exp_f32(v))
SSVAE_FAST_VEC_MATH_EVAL(log1p_unit_poly, cpu::log1p_unit_poly_f32(v))
SSVAE_FAST_VEC_MATH_EVAL(log1p_exp_neg, cpu::log1p_unit_poly_f32(cpu::exp_neg_f32(v)))
SSVAE_FAST_VEC_MATH_EVAL(one_minus_exp_neg, cpu::one_minus_exp_neg_f32(v))
SSVAE_FAST_VEC_MATH_EVAL(sigmoid, cpu::sigmoid_f32(v))
SSVAE_FAST_VEC_MATH_EVAL(sigmoid_from_exp_neg_abs,
                         cpu::sigmoid_from_exp_neg_abs_f32(v, cpu::exp_neg_f32(std::fabs(v))))
SSVAE_FAST_VEC_MATH_EVAL(softplus, cpu::softplus_f32(v))
SSVAE_FAST_VEC_MATH_EVAL(sigmoid_from_softplus, cpu::one_minus_exp_neg_f32(cpu::softplus_f32(v)))
SSVAE_FAST_VEC_MATH_EVAL(bf16_round, cpu::bf16_to_f32(cpu::f32_to_bf16(v)))
#undef SSVAE_FAST_VEC_MATH_EVAL

void vec_math_eval(const std::string& name, std::uintptr_t in_ptr, std::uintptr_t out_ptr, int64_t n) {
  const Checks check(kModule, "vec_math_eval");
  check.non_negative({{"n", n}});
  check.pointer("in", in_ptr, n);
  check.pointer("out", out_ptr, n);
  using Eval = void (*)(const float*, float*, int64_t);
  const Eval eval = check.choice<Eval>(
      "unknown function", name,
      {{"exp_neg", &eval_exp_neg},
       {"exp", &eval_exp},
       {"log1p_unit_poly", &eval_log1p_unit_poly},
       {"log1p_exp_neg", &eval_log1p_exp_neg},
       {"one_minus_exp_neg", &eval_one_minus_exp_neg},
       {"sigmoid", &eval_sigmoid},
       {"sigmoid_from_exp_neg_abs", &eval_sigmoid_from_exp_neg_abs},
       {"softplus", &eval_softplus},
       {"sigmoid_from_softplus", &eval_sigmoid_from_softplus},
       {"bf16_round", &eval_bf16_round}});
  py::gil_scoped_release release;
  eval(Address{in_ptr}, Address{out_ptr}, n);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "ssvae_fast CPU kernels (C++/OpenMP). Raw pointers in, no torch headers.";

  // ---- the `cpu` backend (launched from ssvae_fast/cpu/<op>.py); formulas in csrc/cpu/<op>.h ---------
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
        R"doc(Per-example M2 losses (n_l + n_u,), labelled first (csrc/cpu/elbo_reduction.h). Computed in double.)doc");
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

  m.def("gaussian_linear_epilogue", &gaussian_linear_epilogue, py::arg("means_ptr"), py::arg("bias_ptr"),
        py::arg("precision_ptr"), py::arg("x_ptr"), py::arg("ll_ptr"), py::arg("s_ptr"), py::arg("offset"),
        py::arg("row0"), py::arg("rows"), py::arg("N"), py::arg("n_l"), py::arg("C"), py::arg("D"), py::arg("dtype"),
        R"doc(On a block of rows (rows, D) of h W^T (rows as in bernoulli_linear_epilogue), with mu = h W^T + bias
(bias_ptr 0: none) and p = precision (D,): ll[r] = offset - 0.5 sum_d p (x - mu)^2 (in double) and, unless
s_ptr is 0, s[r] = p (x - mu) (s may be means itself).)doc");
  m.def("gaussian_linear_backward_rows", &gaussian_linear_backward_rows, py::arg("s_ptr"), py::arg("g_ptr"),
        py::arg("dl_ptr"), py::arg("db_ptr"), py::arg("q_ptr"), py::arg("M"), py::arg("D"), py::arg("dtype"),
        R"doc(One pass over the rows of s (M, D) (any output pointer may be 0: skipped): dl[r] = g[r] s[r] (dl may
be s), db = sum_r g[r] s[r] and q = sum_r g[r] s[r]^2, in double over a fixed partition of the rows.)doc");

  m.def("vec_math_eval", &vec_math_eval, py::arg("name"), py::arg("in_ptr"), py::arg("out_ptr"), py::arg("n"),
        R"doc(out[i] = f(in[i]) for n contiguous float32 values, f one of csrc/cpu/vec_math.h's float32 helpers
as the kernels compile them: "exp_neg" (exp(-a), a >= 0), "exp", "log1p_unit_poly" (log1p(e), e in [0, 1]),
"log1p_exp_neg" (log1p(exp(-a)), a >= 0), "one_minus_exp_neg" (1 - exp(-y), y >= 0), "sigmoid",
"sigmoid_from_exp_neg_abs" (the Bernoulli epilogue's form), "softplus", "sigmoid_from_softplus"
(1 - exp(-softplus(v)): softplus' from its output), "bf16_round" (v rounded to bfloat16 and back, as the
kernels store bfloat16: csrc/cpu/bfloat16.h). For the accuracy tests.)doc");
  m.def("num_threads", &cpu::num_threads,
        "OpenMP's maximum number of threads (1 when built without OpenMP).");
  m.def("has_openmp", &cpu::has_openmp, "Whether the module was built with OpenMP.");
}
