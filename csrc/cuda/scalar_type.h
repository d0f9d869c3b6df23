// Element types of the tensors the CUDA kernels of the `cuda` backend read and write (plain C++: no CUDA
// headers, so csrc/bindings_cuda.cpp compiles with the host compiler).
//
// Every op computes in float32 for float32, bfloat16 and float16 inputs and in float64 for float64
// inputs; "compute dtype" in the launchers' comments means that type (workspaces are allocated in it).
#pragma once

#include <cstdint>

namespace ssvae_fast {
namespace cuda {

enum class ScalarType { kFloat32, kFloat64, kBFloat16, kFloat16 };

}  // namespace cuda
}  // namespace ssvae_fast
