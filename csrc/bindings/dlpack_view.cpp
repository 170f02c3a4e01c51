#include "dlpack_view.h"

#include <algorithm>
#include <map>
#include <string>

#include "common/dlpack.h"

namespace semvis {
namespace {

DType dtype_from_dl(const DLDataType& t) {
  if (t.lanes != 1) return DType::kUnknown;
  switch (t.code) {
    case kDLFloat:
      if (t.bits == 32) return DType::kFloat32;
      if (t.bits == 16) return DType::kFloat16;
      if (t.bits == 64) return DType::kFloat64;
      break;
    case kDLBfloat:
      if (t.bits == 16) return DType::kBFloat16;
      break;
    case kDLInt:
      if (t.bits == 64) return DType::kInt64;
      if (t.bits == 32) return DType::kInt32;
      if (t.bits == 16) return DType::kInt16;
      if (t.bits == 8) return DType::kInt8;
      break;
    case kDLUInt:
      if (t.bits == 8) return DType::kUInt8;
      break;
    case kDLBool:
      if (t.bits == 8) return DType::kBool;
      break;
    default:
      break;
  }
  return DType::kUnknown;
}

TensorView from_dltensor(const DLTensor& t, bool readonly, const char* name) {
  TensorView v;
  v.dtype = dtype_from_dl(t.dtype);
  if (v.dtype == DType::kUnknown)
    throw py::type_error(std::string(name) + ": unsupported element type (DLPack code " +
                         std::to_string(t.dtype.code) + ", " + std::to_string(t.dtype.bits) + " bits)");
  switch (t.device.device_type) {
    case kDLCPU:
    case kDLCUDAHost:
      v.device = Device::kCPU;
      break;
    case kDLCUDA:
    case kDLCUDAManaged:
      v.device = Device::kCUDA;
      break;
    default:
      v.device = Device::kOther;
  }
  v.device_id = t.device.device_id;
  v.readonly = readonly;
  v.shape.assign(t.shape, t.shape + t.ndim);
  if (t.strides) {
    v.strides.assign(t.strides, t.strides + t.ndim);
  } else {
    v.strides.resize(t.ndim);
    int64_t s = 1;
    for (int d = t.ndim - 1; d >= 0; --d) {
      v.strides[d] = s;
      s *= t.shape[d];
    }
  }
  for (int d = 0; d < t.ndim; ++d)
    if (v.strides[d] < 0)
      throw py::value_error(std::string(name) + ": negative strides are not supported; call .contiguous() first");
  v.data = static_cast<char*>(t.data) + t.byte_offset;
  return v;
}

std::map<std::string, BindFn>& registry() {
  static std::map<std::string, BindFn> r;
  return r;
}

}  // namespace

TensorView as_view(py::handle obj, const char* name, std::vector<py::object>& keep) {
  PyObject* cap = obj.ptr();
  if (!PyCapsule_CheckExact(cap)) {
    if (!py::hasattr(obj, "__dlpack__"))
      throw py::type_error(std::string(name) + " must be a tensor or array (DLPack), got " +
                           std::string(py::str(py::type::of(obj).attr("__name__"))));
    py::object c = obj.attr("__dlpack__")();
    keep.push_back(c);
    cap = c.ptr();
  }
  if (PyCapsule_IsValid(cap, "dltensor")) {
    auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap, "dltensor"));
    return from_dltensor(m->dl_tensor, false, name);
  }
  if (PyCapsule_IsValid(cap, "dltensor_versioned")) {
    auto* m = static_cast<DLManagedTensorVersioned*>(PyCapsule_GetPointer(cap, "dltensor_versioned"));
    if (m->version.major != DLPACK_MAJOR_VERSION)
      throw py::type_error(std::string(name) + ": unsupported DLPack major version " + std::to_string(m->version.major));
    return from_dltensor(m->dl_tensor, (m->flags & DLPACK_FLAG_BITMASK_READ_ONLY) != 0, name);
  }
  throw py::type_error(std::string(name) + " must be an unused DLPack capsule (this one was already consumed)");
}

bool as_optional_view(py::handle obj, const char* name, std::vector<py::object>& keep, TensorView* out) {
  if (obj.is_none()) return false;
  *out = as_view(obj, name, keep);
  return true;
}

int register_bindings(const char* name, BindFn fn) {
  registry()[name] = fn;
  return 0;
}

void bind_all(py::module_& m) {
  for (auto& kv : registry()) kv.second(m);
}

}  // namespace semvis
