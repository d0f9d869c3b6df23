// pybind11 module ssvae_fast._C_cuda: the CUDA kernels, built only where nvcc is found (separate from
// ssvae_fast._C so that the CPU module always imports on machines without CUDA). The CUDA runtime is
// linked statically: importing this module never needs a libcudart.so.
//
// Every kernel takes device pointers as Python ints (`tensor.data_ptr()`), sizes as int64, a dtype
// string ("float32" or "float64") and the stream to launch on (`torch.cuda.current_stream().cuda_stream`).
// The caller makes the tensors' device current (`with torch.cuda.device(t.device)`). Launches are
// asynchronous; a launch failure raises RuntimeError naming the kernel; bad arguments raise ValueError.

#include <cuda_runtime_api.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda/bernoulli_loglik.h"

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
}
