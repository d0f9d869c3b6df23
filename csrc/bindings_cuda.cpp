// pybind11 module ssvae_fast._C_cuda: the CUDA kernels, built only where nvcc is found (separate from
// ssvae_fast._C so that the CPU module always imports on machines without CUDA). The CUDA runtime is
// linked statically: importing this module never needs a libcudart.so.
//
// Every kernel takes device pointers as Python ints (`tensor.data_ptr()`), sizes as int64, a dtype
// string among "float32", "float64", "bfloat16", "float16", every input's strides (in elements) and the
// stream to launch on (`torch.cuda.current_stream().cuda_stream`), and writes contiguous outputs; the
// `cuda` backend's launchers (ssvae_fast/cuda/<op>.py) call them with keyword arguments. Workspaces (partial
// sums, in the compute dtype: float64 for float64, else float32) are allocated by the caller with the
// sizes given by the module constants below. The caller makes the tensors' device current
// (`with torch.cuda.device(t.device)`). Launches are asynchronous; a launch failure raises RuntimeError
// naming the kernel; bad arguments raise ValueError.

#include <cuda_runtime_api.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <tuple>

#include "binding_helpers.h"
#include "cuda/bernoulli_loglik_linear.h"
#include "cuda/class_conditional_activation.h"
#include "cuda/elbo_reduction.h"
#include "cuda/gaussian_reparam_kl.h"

namespace py = pybind11;

namespace {

using namespace ssvae_fast::bindings;  // NOLINT: Checks, def_launcher, field
namespace sc = ssvae_fast::cuda;

constexpr const char* kModule = "ssvae_fast._C_cuda";

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the error so that it does not surface at the next launch check
    return 0;
  }
  return count;
}

// ---------------------------------------------------------------------------------------------------
// The `cuda` backend's ops: each launcher below checks its arguments and launches; the module binds it
// with one keyword argument per member of its argument struct (the `field`s in PYBIND11_MODULE), then
// its trailing parameters.
// ---------------------------------------------------------------------------------------------------

sc::ScalarType parse_scalar_type(const Checks& check, const std::string& dtype) {
  return check.choice<sc::ScalarType>("unsupported dtype", dtype,
                                      {{"float32", sc::ScalarType::kFloat32},
                                       {"float64", sc::ScalarType::kFloat64},
                                       {"bfloat16", sc::ScalarType::kBFloat16},
                                       {"float16", sc::ScalarType::kFloat16}});
}

sc::Activation parse_activation(const Checks& check, const std::string& activation) {
  return check.choice<sc::Activation>("unknown activation", activation,
                                      {{"softplus", sc::Activation::kSoftplus}, {"relu", sc::Activation::kRelu}});
}

sc::MatmulPrecision parse_precision(const Checks& check, const std::string& precision) {
  return check.choice<sc::MatmulPrecision>("unknown precision", precision,
                                           {{"ieee", sc::MatmulPrecision::kIeee},
                                            {"tf32", sc::MatmulPrecision::kTensorCore}});
}

// Sizes are named "size N" in this module's errors.
void check_sizes(const Checks& check, std::initializer_list<std::pair<const char*, int64_t>> sizes) {
  check.non_negative(sizes, "size ");
}

// 0 <= n_l <= bound (the labelled prefix of a row layout, after check_sizes).
void check_labelled(const Checks& check, int64_t n_l, const char* bound_name, int64_t bound) {
  if (n_l > bound) {
    check.fail("n_l must be in [0, " + std::string(bound_name) + " = " + std::to_string(bound) + "], got " +
               std::to_string(n_l));
  }
}

// What the forward and the backward of an op both take, checked in one place (templates over the two
// argument structs).
template <typename Args>
int64_t class_conditional_rows(const Checks& check, const Args& args) {  // n_l + (N - n_l) C, checked
  check_sizes(check, {{"N", args.N}, {"n_l", args.n_l}, {"H", args.H}, {"C", args.C}});
  check_labelled(check, args.n_l, "N", args.N);
  return args.n_l + (args.N - args.n_l) * args.C;
}

template <typename Args>
void check_class_conditional_operands(const Checks& check, const Args& args) {
  check.pointer("a", args.a, args.N * args.H);
  check.pointer("w_y", args.w_y, args.H * args.C);
  check.pointer("classes", args.classes, args.n_l);
}

template <typename Args>
void check_gaussian_operands(const Checks& check, const Args& args) {
  check_sizes(check, {{"R", args.R}, {"Z", args.Z}});
  check.pointer("head", args.head, args.R * 2 * args.Z);
  check.pointer("eps", args.eps, args.R * args.Z);
}

template <typename Args>
void check_elbo_logits(const Checks& check, const Args& args) {
  check.pointer("logits_y", args.logits_y, (args.n_l + args.n_u) * args.C);
  check.pointer("y_l", args.y_l, args.n_l);
}

void class_conditional_forward(const sc::ClassConditionalForwardArgs& args, const std::string& activation,
                               const std::string& dtype, std::uintptr_t stream) {
  const Checks check(kModule, "class_conditional_forward");
  const sc::ScalarType kind = parse_scalar_type(check, dtype);
  const sc::Activation act = parse_activation(check, activation);
  const int64_t rows = class_conditional_rows(check, args);  // output rows
  check_class_conditional_operands(check, args);
  check.pointer("out", args.out, rows * args.H);
  sc::class_conditional_forward(args, kind, act, stream);
}

void class_conditional_backward(const sc::ClassConditionalBackwardArgs& args, const std::string& activation,
                                const std::string& dtype, std::uintptr_t stream) {
  const Checks check(kModule, "class_conditional_backward");
  const sc::ScalarType kind = parse_scalar_type(check, dtype);
  const sc::Activation act = parse_activation(check, activation);
  const int64_t rows = class_conditional_rows(check, args);  // rows of the output (and of grad)
  const int64_t row_blocks = (args.N + sc::kClassConditionalBackwardRows - 1) / sc::kClassConditionalBackwardRows;
  check.pointer("grad", args.grad, rows * args.H);
  check_class_conditional_operands(check, args);
  check.pointer("da", args.da, args.N * args.H);
  check.pointer("dw_partial", args.dw_partial, row_blocks * args.C * args.H);
  check.pointer("dw_y", args.dw_y, args.H * args.C);
  sc::class_conditional_backward(args, kind, act, stream);
}

void gaussian_reparam_kl_forward(const sc::GaussianForwardArgs& args, const std::string& dtype,
                                 std::uintptr_t stream) {
  const Checks check(kModule, "gaussian_reparam_kl_forward");
  const sc::ScalarType kind = parse_scalar_type(check, dtype);
  check_gaussian_operands(check, args);
  check.pointer("z", args.z, args.R * args.Z);
  check.pointer("kl", args.kl, args.R);
  sc::gaussian_reparam_kl_forward(args, kind, stream);
}

void gaussian_reparam_kl_backward(const sc::GaussianBackwardArgs& args, const std::string& dtype,
                                  std::uintptr_t stream) {
  const Checks check(kModule, "gaussian_reparam_kl_backward");
  const sc::ScalarType kind = parse_scalar_type(check, dtype);
  check_gaussian_operands(check, args);
  check.pointer("grad_z", args.grad_z, args.R * args.Z);
  check.pointer("grad_kl", args.grad_kl, args.Z > 0 ? args.R : 0);  // read only where R * Z > 0
  check.pointer("dhead", args.dhead, args.R * 2 * args.Z);
  check.pointer("deps", args.deps, args.R * args.Z);
  sc::gaussian_reparam_kl_backward(args, kind, stream);
}

void elbo_reduction_forward(const sc::ElboForwardArgs& args, const std::string& dtype, std::uintptr_t stream) {
  const Checks check(kModule, "elbo_reduction_forward");
  const sc::ScalarType kind = parse_scalar_type(check, dtype);
  check_sizes(check, {{"n_l", args.n_l}, {"n_u", args.n_u}, {"C", args.C}});
  check_elbo_logits(check, args);
  check.pointer("ll_l", args.ll_l, args.n_l);
  check.pointer("kl_l", args.kl_l, args.n_l);
  check.pointer("ll_u", args.ll_u, args.n_u * args.C);
  check.pointer("kl_u", args.kl_u, args.n_u * args.C);
  check.pointer("loss", args.loss, args.n_l + args.n_u);
  sc::elbo_reduction_forward(args, kind, stream);
}

void elbo_reduction_backward(const sc::ElboBackwardArgs& args, const std::string& dtype, std::uintptr_t stream) {
  const Checks check(kModule, "elbo_reduction_backward");
  const sc::ScalarType kind = parse_scalar_type(check, dtype);
  check_sizes(check, {{"n_l", args.n_l}, {"n_u", args.n_u}, {"C", args.C}});
  check.pointer("grad", args.grad, args.n_l + args.n_u);
  check_elbo_logits(check, args);
  check.pointer("ll_u", args.ll_u, args.n_u * args.C);
  check.pointer("kl_u", args.kl_u, args.n_u * args.C);
  check.pointer("dlogits_y", args.dlogits_y, (args.n_l + args.n_u) * args.C);
  check.pointer("dll_l", args.dll_l, args.n_l);
  check.pointer("dkl_l", args.dkl_l, args.n_l);
  check.pointer("dll_u", args.dll_u, args.n_u * args.C);
  check.pointer("dkl_u", args.dkl_u, args.n_u * args.C);
  sc::elbo_reduction_backward(args, kind, stream);
}

// What the launchers of both likelihoods (the same tile kernels) check: sizes, the row layout and the
// arrays every call reads or writes (bias and s may be null: none, not stored).
void check_linear_loglik(const Checks& check, const sc::LinearLoglikForwardArgs& args) {
  check_sizes(check, {{"M", args.M}, {"D", args.D}, {"H", args.H}, {"C", args.C}, {"n_l", args.n_l}});
  check_labelled(check, args.n_l, "M", args.M);
  const int64_t d_tiles = (args.D + sc::kBernoulliBlockD - 1) / sc::kBernoulliBlockD;
  const int64_t x_rows = args.n_l + (args.C > 0 ? (args.M - args.n_l) / args.C : 0);  // rows of x the kernel reads
  check.pointer("h", args.h, args.M * args.H);
  check.pointer("weight", args.weight, args.D * args.H);
  check.pointer("x", args.x, x_rows * args.D);
  check.pointer("ll_partial", args.ll_partial, d_tiles * args.M);
  check.pointer("ll", args.ll, args.M);
}

void bernoulli_loglik_linear_forward(const sc::BernoulliLinearForwardArgs& args, const std::string& precision,
                                     const std::string& dtype, std::uintptr_t stream) {
  const Checks check(kModule, "bernoulli_loglik_linear_forward");
  const sc::ScalarType kind = parse_scalar_type(check, dtype);
  const sc::MatmulPrecision matmul = parse_precision(check, precision);
  check_linear_loglik(check, args);
  sc::bernoulli_loglik_linear_forward(args, kind, matmul, stream);  // precision_vec unused
}

void gaussian_loglik_linear_forward(const sc::GaussianLinearForwardArgs& args, const std::string& precision,
                                    const std::string& dtype, std::uintptr_t stream) {
  const Checks check(kModule, "gaussian_loglik_linear_forward");
  const sc::ScalarType kind = parse_scalar_type(check, dtype);
  const sc::MatmulPrecision matmul = parse_precision(check, precision);
  check_linear_loglik(check, args);
  check.pointer("precision_vec", args.precision_vec, args.M > 0 ? args.D : 0);  // read only where M * D > 0
  sc::gaussian_loglik_linear_forward(args, kind, matmul, stream);
}

// The keyword arguments of both likelihoods' launchers (the Gaussian's add precision_vec_ptr).
auto linear_loglik_fields() {
  using A = sc::LinearLoglikForwardArgs;
  return std::make_tuple(field("h_ptr", &A::h), field("weight_ptr", &A::weight), field("bias_ptr", &A::bias),
                         field("x_ptr", &A::x), field("s_ptr", &A::s), field("ll_partial_ptr", &A::ll_partial),
                         field("ll_ptr", &A::ll), field("M", &A::M), field("D", &A::D), field("H", &A::H),
                         field("C", &A::C), field("n_l", &A::n_l), field("stride_hm", &A::stride_hm),
                         field("stride_hk", &A::stride_hk), field("stride_wd", &A::stride_wd),
                         field("stride_wk", &A::stride_wk), field("stride_b", &A::stride_b),
                         field("stride_xn", &A::stride_xn), field("stride_xd", &A::stride_xd));
}

}  // namespace

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "ssvae_fast CUDA kernels. Device pointers and a cudaStream_t (as ints) in; no torch headers.";

  m.def("device_count", &device_count,
        "cudaGetDeviceCount as this module's (static) CUDA runtime sees it; 0 on any error.");

  // ---- the `cuda` backend's ops (launched from ssvae_fast/cuda/<op>.py) --------------------------------
  m.attr("BERNOULLI_BLOCK_M") = sc::kBernoulliBlockM;
  m.attr("BERNOULLI_BLOCK_D") = sc::kBernoulliBlockD;
  m.attr("GAUSSIAN_BLOCK_D") = sc::kGaussianBlockD;
  m.attr("CLASS_CONDITIONAL_BACKWARD_ROWS") = sc::kClassConditionalBackwardRows;

  {
    using A = sc::ClassConditionalForwardArgs;
    def_launcher(m, "class_conditional_forward", &class_conditional_forward,
                 std::make_tuple(field("a_ptr", &A::a), field("w_y_ptr", &A::w_y), field("classes_ptr", &A::classes),
                                 field("out_ptr", &A::out), field("N", &A::N), field("n_l", &A::n_l),
                                 field("H", &A::H), field("C", &A::C), field("stride_an", &A::stride_an),
                                 field("stride_ah", &A::stride_ah), field("stride_wh", &A::stride_wh),
                                 field("stride_wc", &A::stride_wc), field("stride_cls", &A::stride_cls)),
                 {"activation", "dtype", "stream"},
                 R"doc(out = act(a[n] + w_y[:, c]) on `stream`: a (N, H) and w_y (H, C) with any strides; the first n_l
(0 <= n_l <= N) rows of a take one class each, classes (n_l,) int64 (classes_ptr may be 0 when n_l = 0), the
others every class. out (n_l + (N - n_l) * C, H) contiguous, labelled rows first: out[i] for row i < n_l,
out[n_l + j * C + c] for row n_l + j and class c (n_l = 0: the (N, C, H) broadcast form; n_l = N: (N, H)).
activation "softplus" or "relu". A class outside [0, C) gives NaN.)doc");
  }

  {
    using A = sc::ClassConditionalBackwardArgs;
    def_launcher(m, "class_conditional_backward", &class_conditional_backward,
                 std::make_tuple(field("grad_ptr", &A::grad), field("a_ptr", &A::a), field("w_y_ptr", &A::w_y),
                                 field("classes_ptr", &A::classes), field("da_ptr", &A::da),
                                 field("dw_partial_ptr", &A::dw_partial), field("dw_y_ptr", &A::dw_y),
                                 field("N", &A::N), field("n_l", &A::n_l), field("H", &A::H), field("C", &A::C),
                                 field("stride_an", &A::stride_an), field("stride_ah", &A::stride_ah),
                                 field("stride_wh", &A::stride_wh), field("stride_wc", &A::stride_wc),
                                 field("stride_cls", &A::stride_cls)),
                 {"activation", "dtype", "stream"},
                 R"doc(da (N, H) and dw_y (H, C), both contiguous, from the contiguous output gradient grad
(n_l + (N - n_l) * C, H) in the forward's row layout; dw_partial is a (ceil(N / CLASS_CONDITIONAL_BACKWARD_ROWS),
C, H) workspace in the compute dtype. Deterministic.)doc");
  }

  {
    using A = sc::GaussianForwardArgs;
    def_launcher(m, "gaussian_reparam_kl_forward", &gaussian_reparam_kl_forward,
                 std::make_tuple(field("head_ptr", &A::head), field("eps_ptr", &A::eps), field("z_ptr", &A::z),
                                 field("kl_ptr", &A::kl), field("R", &A::R), field("Z", &A::Z),
                                 field("stride_hr", &A::stride_hr), field("stride_hz", &A::stride_hz),
                                 field("stride_er", &A::stride_er), field("stride_ez", &A::stride_ez)),
                 {"dtype", "stream"},
                 R"doc(z = mu + exp(logvar / 2) * eps (R, Z) and kl = 0.5 sum_k (mu^2 + exp(logvar) - 1 - logvar) (R,),
contiguous, from head = [mu, logvar] (R, 2Z) and eps (R, Z) with any strides.)doc");
  }

  {
    using A = sc::GaussianBackwardArgs;
    def_launcher(m, "gaussian_reparam_kl_backward", &gaussian_reparam_kl_backward,
                 std::make_tuple(field("head_ptr", &A::head), field("eps_ptr", &A::eps),
                                 field("grad_z_ptr", &A::grad_z), field("grad_kl_ptr", &A::grad_kl),
                                 field("dhead_ptr", &A::dhead), field("deps_ptr", &A::deps), field("R", &A::R),
                                 field("Z", &A::Z), field("stride_hr", &A::stride_hr),
                                 field("stride_hz", &A::stride_hz), field("stride_er", &A::stride_er),
                                 field("stride_ez", &A::stride_ez), field("stride_gzr", &A::stride_gzr),
                                 field("stride_gzz", &A::stride_gzz), field("stride_gkl", &A::stride_gkl)),
                 {"dtype", "stream"},
                 R"doc(dhead (R, 2Z) and deps (R, Z), contiguous, from grad_z (R, Z) and grad_kl (R,) with any strides.)doc");
  }

  {
    using A = sc::ElboForwardArgs;
    def_launcher(m, "elbo_reduction_forward", &elbo_reduction_forward,
                 std::make_tuple(field("logits_y_ptr", &A::logits_y), field("y_l_ptr", &A::y_l),
                                 field("ll_l_ptr", &A::ll_l), field("kl_l_ptr", &A::kl_l),
                                 field("ll_u_ptr", &A::ll_u), field("kl_u_ptr", &A::kl_u),
                                 field("loss_ptr", &A::loss), field("n_l", &A::n_l), field("n_u", &A::n_u),
                                 field("C", &A::C), field("alpha", &A::alpha), field("stride_lr", &A::stride_lr),
                                 field("stride_lc", &A::stride_lc), field("stride_y", &A::stride_y),
                                 field("stride_ll_l", &A::stride_ll_l), field("stride_kl_l", &A::stride_kl_l),
                                 field("stride_ll_ur", &A::stride_ll_ur), field("stride_ll_uc", &A::stride_ll_uc),
                                 field("stride_kl_ur", &A::stride_kl_ur), field("stride_kl_uc", &A::stride_kl_uc)),
                 {"dtype", "stream"},
                 R"doc(Per-example M2 losses (n_l + n_u,), contiguous, labelled first: kl - ll + log C - alpha log q(y|x)
and sum_c q_c (kl_c - ll_c + log C + log q_c). One warp per row; log-softmax in the compute dtype.)doc");
  }

  {
    using A = sc::ElboBackwardArgs;
    def_launcher(m, "elbo_reduction_backward", &elbo_reduction_backward,
                 std::make_tuple(field("grad_ptr", &A::grad), field("logits_y_ptr", &A::logits_y),
                                 field("y_l_ptr", &A::y_l), field("ll_u_ptr", &A::ll_u), field("kl_u_ptr", &A::kl_u),
                                 field("dlogits_y_ptr", &A::dlogits_y), field("dll_l_ptr", &A::dll_l),
                                 field("dkl_l_ptr", &A::dkl_l), field("dll_u_ptr", &A::dll_u),
                                 field("dkl_u_ptr", &A::dkl_u), field("n_l", &A::n_l), field("n_u", &A::n_u),
                                 field("C", &A::C), field("alpha", &A::alpha), field("stride_g", &A::stride_g),
                                 field("stride_lr", &A::stride_lr), field("stride_lc", &A::stride_lc),
                                 field("stride_y", &A::stride_y), field("stride_ll_ur", &A::stride_ll_ur),
                                 field("stride_ll_uc", &A::stride_ll_uc), field("stride_kl_ur", &A::stride_kl_ur),
                                 field("stride_kl_uc", &A::stride_kl_uc)),
                 {"dtype", "stream"},
                 R"doc(The gradients of the per-example losses with respect to logits_y, ll_l, kl_l, ll_u and kl_u, all
contiguous, in one kernel (one warp per row).)doc");
  }

  def_launcher(m, "bernoulli_loglik_linear_forward", &bernoulli_loglik_linear_forward, linear_loglik_fields(),
               {"precision", "dtype", "stream"},
               R"doc(ll[m] = sum_d x[e(m), d] l[m, d] - softplus(l[m, d]) with l = h W^T + b, h (M, H), W (D, H), b (D,)
(bias_ptr 0: none), x (N, D), any strides; ll (M,) contiguous. Rows labelled first: e(m) = m for m < n_l,
n_l + (m - n_l) / C after (M = n_l + (N - n_l) * C; C >= 1 when M > n_l; n_l = 0: every class, x (M / C, D)).
s_ptr != 0 also writes s = x - sigmoid(l), (M, D) contiguous. ll_partial: (ceil(D / BERNOULLI_BLOCK_D), M) workspace in the compute dtype. precision
"tf32" (tensor cores: TF32 for float32, native bfloat16/float16) or "ieee" (exact FMAs); float64 always
"ieee". The logits never reach device memory. Deterministic.)doc");

  {
    using A = sc::GaussianLinearForwardArgs;
    def_launcher(m, "gaussian_loglik_linear_forward", &gaussian_loglik_linear_forward,
                 std::tuple_cat(linear_loglik_fields(), std::make_tuple(field("precision_vec_ptr", &A::precision_vec))),
                 {"precision", "dtype", "stream"},
                 R"doc(ll[m] = -0.5 sum_d p[d] (x[e(m), d] - mu[m, d])^2 with mu = h W^T + b and p = precision_vec (D,),
contiguous in the compute dtype (exp(-logvar)); the other arguments and the row layout as for
bernoulli_loglik_linear_forward (ll_partial: (ceil(D / GAUSSIAN_BLOCK_D), M)). The caller adds the rest of the
log-likelihood, -0.5 (sum_d logvar[d] + D log 2 pi). s_ptr != 0 also writes s = p (x - mu), (M, D) contiguous.
The means never reach device memory. Deterministic.)doc");
  }
}
