// What the pybind11 modules ssvae_fast._C (csrc/bindings.cpp) and ssvae_fast._C_cuda
// (csrc/bindings_cuda.cpp) share: data pointers passed as Python ints, argument checks that raise
// ValueError (std::invalid_argument) naming the function, the parsing of the dtype / activation /
// precision strings, the float32 / float64 / bfloat16 dispatch of the CPU kernels, and the binding of a launcher
// whose keyword arguments are the members of its argument struct.
#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>

#include "cpu/bfloat16.h"

namespace ssvae_fast {
namespace bindings {

namespace py = pybind11;

// A data pointer passed from Python as an int (`tensor.data_ptr()`, 0 for none); converts to any
// pointer type.
struct Address {
  std::uintptr_t value;

  template <typename T>
  operator T*() const {
    return reinterpret_cast<T*>(value);
  }
};

// "'a' or 'b'", "'a', 'b' or 'c'": the accepted values of a string argument, for error messages.
template <typename T>
std::string quoted_choices(std::initializer_list<std::pair<const char*, T>> choices) {
  std::string text;
  std::size_t i = 0;
  for (const auto& choice : choices) {
    if (i > 0) text += (i + 1 == choices.size()) ? " or " : ", ";
    text += std::string("'") + choice.first + "'";
    ++i;
  }
  return text;
}

// The value paired with `value` among `choices`; else ValueError
// "<where>: <what> '<value>'; expected <the choices' names>" (what: "unsupported dtype", ...).
template <typename T>
T parse_choice(const std::string& where, const char* what, const std::string& value,
               std::initializer_list<std::pair<const char*, T>> choices) {
  for (const auto& choice : choices) {
    if (value == choice.first) return choice.second;
  }
  throw std::invalid_argument(where + ": " + what + " '" + value + "'; expected " + quoted_choices(choices));
}

// The checks of one call of a module function; each failure raises ValueError
// "<module>.<function>: <what>".
class Checks {
 public:
  Checks(const char* module, const char* function) : where_(std::string(module) + "." + function) {}

  // "<module>.<function>".
  const std::string& where() const { return where_; }

  [[noreturn]] void fail(const std::string& what) const { throw std::invalid_argument(where_ + ": " + what); }

  // A null pointer is an error only when the array has elements.
  void pointer(const char* name, const void* ptr, int64_t numel) const {
    if (ptr == nullptr && numel > 0) {
      fail(std::string(name) + " is a null pointer but has " + std::to_string(numel) + " elements");
    }
  }
  void pointer(const char* name, std::uintptr_t ptr, int64_t numel) const { pointer(name, Address{ptr}, numel); }

  // "<label><name> must be non-negative, got <value>" for the first negative size.
  void non_negative(std::initializer_list<std::pair<const char*, int64_t>> sizes, const char* label = "") const {
    for (const auto& size : sizes) {
      if (size.second < 0) {
        fail(std::string(label) + size.first + " must be non-negative, got " + std::to_string(size.second));
      }
    }
  }

  // parse_choice, with this function's name in the error.
  template <typename T>
  T choice(const char* what, const std::string& value, std::initializer_list<std::pair<const char*, T>> choices) const {
    return parse_choice(where_, what, value, choices);
  }

 private:
  std::string where_;
};

// Calls fn(float{}), fn(double{}) or fn(cpu::bf16_t{}) for the dtype string "float32", "float64" or
// "bfloat16" (else ValueError "<module>: unsupported dtype ..."), with the GIL released during the call.
template <typename Fn>
void dispatch_float(const char* module, const std::string& dtype, Fn&& fn) {
  enum class Storage { kFloat32, kFloat64, kBFloat16 };
  const Storage storage = parse_choice<Storage>(
      module, "unsupported dtype", dtype,
      {{"float32", Storage::kFloat32}, {"float64", Storage::kFloat64}, {"bfloat16", Storage::kBFloat16}});
  py::gil_scoped_release no_gil;
  switch (storage) {
    case Storage::kFloat32:
      fn(float{});
      break;
    case Storage::kFloat64:
      fn(double{});
      break;
    case Storage::kBFloat16:
      fn(cpu::bf16_t{});
      break;
  }
}

// ---- launchers taking an argument struct -----------------------------------------------------------

// A keyword argument that sets one member of a launcher's argument struct Args.
template <typename Args, typename T>
struct Field {
  const char* name;  // the Python keyword
  T Args::*member;
};

template <typename Args, typename T>
Field<Args, T> field(const char* name, T Args::*member) {
  return {name, member};
}

// The C++ parameter through which Python passes a member of type T: an int address for a pointer.
template <typename T>
struct ParamOf {
  using type = T;
};
template <typename T>
struct ParamOf<T*> {
  using type = std::uintptr_t;
};

template <typename T>
void assign(T*& member, std::uintptr_t address) {
  member = Address{address};
}
template <typename T>
void assign(T& member, T value) {
  member = value;
}

template <typename Args, typename... T, std::size_t... I>
Args make_args(const std::tuple<Field<Args, T>...>& fields, std::index_sequence<I...>,
               typename ParamOf<T>::type... values) {
  Args args;
  (assign(args.*std::get<I>(fields).member, values), ...);
  return args;
}

template <typename Fn, typename... F, std::size_t... J>
void def_with_keywords(py::module_& m, const char* name, const Fn& fn, const std::tuple<F...>& fields,
                       const char* const* extra_names, std::index_sequence<J...>, const char* doc) {
  std::apply([&](const auto&... f) { m.def(name, fn, py::arg(f.name)..., py::arg(extra_names[J])..., doc); }, fields);
}

// Defines m.`name`(<one keyword argument per field, in order>, <launch's trailing parameters, named
// extra_names>) -> None, which fills an Args from the fields' values and calls launch(args, trailing...).
// A pointer member takes an int address (0: nullptr).
template <typename Args, typename... T, typename... Extra, std::size_t N>
void def_launcher(py::module_& m, const char* name, void (*launch)(const Args&, Extra...),
                  const std::tuple<Field<Args, T>...>& fields, const char* const (&extra_names)[N], const char* doc) {
  static_assert(N == sizeof...(Extra), "one name per trailing parameter of the launcher");
  auto fn = [launch, fields](typename ParamOf<T>::type... values, Extra... extra) {
    launch(make_args(fields, std::index_sequence_for<T...>{}, values...), extra...);
  };
  def_with_keywords(m, name, fn, fields, extra_names, std::make_index_sequence<N>{}, doc);
}

}  // namespace bindings
}  // namespace ssvae_fast
