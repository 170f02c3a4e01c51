// DLPack capsule -> semvis::TensorView, and the registry through which each op's binding file
// adds its functions to the module. This directory is the only code that includes pybind11.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "common/tensor.h"

namespace semvis {
namespace py = pybind11;

// Borrows the tensor behind `obj` (a "dltensor" / "dltensor_versioned" capsule, or any object
// with __dlpack__) for the duration of the call. Capsules created here are kept alive in `keep`.
// Raises TypeError naming `name` for anything else.
TensorView as_view(py::handle obj, const char* name, std::vector<py::object>& keep);
// Same, but None -> nullopt-like (returns false).
bool as_optional_view(py::handle obj, const char* name, std::vector<py::object>& keep, TensorView* out);

using BindFn = void (*)(py::module_&);
// Each binding file registers itself with a static SEMVIS_REGISTER_BINDINGS(name, fn); module.cpp
// calls them all, in name order.
int register_bindings(const char* name, BindFn fn);
void bind_all(py::module_& m);

#define SEMVIS_REGISTER_BINDINGS(NAME, FN) \
  static const int semvis_bindings_registered_##NAME = ::semvis::register_bindings(#NAME, FN)

}  // namespace semvis
