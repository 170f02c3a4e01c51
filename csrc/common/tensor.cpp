#include "tensor.h"

namespace semvis {

const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kFloat64: return "float64";
    case DType::kInt64: return "int64";
    case DType::kInt32: return "int32";
    case DType::kInt16: return "int16";
    case DType::kInt8: return "int8";
    case DType::kUInt8: return "uint8";
    case DType::kBool: return "bool";
    default: return "unknown";
  }
}

int64_t dtype_size(DType dt) {
  switch (dt) {
    case DType::kFloat64:
    case DType::kInt64: return 8;
    case DType::kFloat32:
    case DType::kInt32: return 4;
    case DType::kFloat16:
    case DType::kBFloat16:
    case DType::kInt16: return 2;
    default: return 1;
  }
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}

bool TensorView::is_contiguous() const {
  if (numel() == 0) return true;  // no element to address (NumPy exports odd strides for empty arrays)
  int64_t expected = 1;
  for (int d = dim() - 1; d >= 0; --d) {
    // size-1 dimensions may carry any stride
    if (shape[d] != 1 && strides[d] != expected) return false;
    expected *= shape[d];
  }
  return true;
}

std::string TensorView::describe() const {
  std::ostringstream os;
  os << dtype_name(dtype) << "[";
  for (int d = 0; d < dim(); ++d) os << (d ? ", " : "") << shape[d];
  os << "] on " << (device == Device::kCPU ? "cpu" : device == Device::kCUDA ? "cuda" : "an unsupported device");
  if (device == Device::kCUDA) os << ":" << device_id;
  return os.str();
}

void fail(const std::string& msg) { throw std::invalid_argument(msg); }

void check_rank(const TensorView& t, const char* op, const char* name, int rank) {
  if (t.dim() != rank) failf(op, ": ", name, " must have ", rank, " dimensions, got ", t.describe());
}

void check_dtype(const TensorView& t, const char* op, const char* name, std::initializer_list<DType> allowed) {
  for (auto a : allowed)
    if (t.dtype == a) return;
  std::ostringstream os;
  os << op << ": " << name << " must have dtype ";
  bool first = true;
  for (auto a : allowed) {
    os << (first ? "" : " or ") << dtype_name(a);
    first = false;
  }
  os << ", got " << t.describe();
  fail(os.str());
}

void check_contiguous(const TensorView& t, const char* op, const char* name) {
  if (!t.is_contiguous()) failf(op, ": ", name, " must be contiguous, got strides that are not row-major for ", t.describe());
}

void check_writable(const TensorView& t, const char* op, const char* name) {
  if (t.readonly) failf(op, ": ", name, " must be writable, got a read-only ", t.describe());
}

void check_shape(const TensorView& t, const char* op, const char* name, std::initializer_list<int64_t> expected) {
  bool ok = static_cast<size_t>(t.dim()) == expected.size();
  int d = 0;
  for (auto e : expected) {
    if (ok && e >= 0 && t.shape[d] != e) ok = false;
    ++d;
  }
  if (ok) return;
  std::ostringstream os;
  os << op << ": " << name << " must have shape [";
  d = 0;
  for (auto e : expected) {
    os << (d++ ? ", " : "");
    if (e < 0) os << "*"; else os << e;
  }
  os << "], got " << t.describe();
  fail(os.str());
}

void check_output(const TensorView& t, const char* op, const char* name, DType dtype,
                  std::initializer_list<int64_t> shape) {
  check_dtype(t, op, name, {dtype});
  check_shape(t, op, name, shape);
  check_contiguous(t, op, name);
  check_writable(t, op, name);
}

void check_binary_codes(const TensorView& t, const char* op, const char* name) {
  check_dtype(t, op, name, {DType::kUInt8});
  check_rank(t, op, name, 2);
  check_contiguous(t, op, name);
  if (t.size(1) == 0 || t.size(1) % 8 != 0)
    failf(op, ": ", name, " rows must have a positive multiple of 8 bytes (64 bits), got ", t.describe());
}

void check_same_device(const TensorView& a, const char* an, const TensorView& b, const char* bn, const char* op) {
  if (a.device != b.device || (a.device == Device::kCUDA && a.device_id != b.device_id))
    failf(op, ": ", an, " and ", bn, " must be on the same device, got ", a.describe(), " and ", b.describe());
}

void check_device_supported(const TensorView& t, const char* op, const char* name) {
  if (t.device == Device::kCPU) return;
  if (t.device == Device::kCUDA) {
    if (!cuda_available_at_build())
      failf(op, ": ", name, " is on cuda but semvis_ext was built without CUDA; rebuild with a CUDA compiler");
    return;
  }
  failf(op, ": ", name, " must be on cpu or cuda, got ", t.describe());
}

void check_optional_int64_vector(const TensorView* t, const TensorView& like, const char* like_name, const char* op,
                                 const char* name, int64_t len) {
  if (!t) return;
  check_device_supported(*t, op, name);
  check_same_device(like, like_name, *t, name, op);
  check_dtype(*t, op, name, {DType::kInt64});
  check_shape(*t, op, name, {len});
  check_contiguous(*t, op, name);
}

bool cuda_available_at_build() {
#ifdef SEMVIS_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace semvis
