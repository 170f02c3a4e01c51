// Plain C++ tensor views and argument checks shared by every op.
// Kernels see raw pointers and sizes; the bindings build a TensorView from a DLPack capsule
// and the host entry points of each op validate it with the checks below before any launch.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace semvis {

enum class DType : int {
  kFloat32 = 0,
  kFloat16,
  kBFloat16,
  kFloat64,
  kInt64,
  kInt32,
  kInt16,
  kInt8,
  kUInt8,
  kBool,
  kUnknown,
};

enum class Device : int { kCPU = 0, kCUDA = 1, kOther = 2 };

const char* dtype_name(DType dt);
int64_t dtype_size(DType dt);

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kUnknown;
  Device device = Device::kCPU;
  int device_id = 0;
  bool readonly = false;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;  // in elements

  int dim() const { return static_cast<int>(shape.size()); }
  int64_t size(int d) const { return shape.at(d < 0 ? d + dim() : d); }
  int64_t stride(int d) const { return strides.at(d < 0 ? d + dim() : d); }
  int64_t numel() const;
  bool is_contiguous() const;
  std::string describe() const;  // "float32[2, 3] on cpu"

  template <typename T>
  T* ptr() const { return static_cast<T*>(data); }
};

// Every check throws std::invalid_argument (pybind11 turns it into ValueError) with a message
// "<op>: <arg> <what was expected>, got <what came>".
[[noreturn]] void fail(const std::string& msg);

template <typename... Args>
[[noreturn]] void failf(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  fail(os.str());
}

void check_rank(const TensorView& t, const char* op, const char* name, int rank);
void check_dtype(const TensorView& t, const char* op, const char* name, std::initializer_list<DType> allowed);
void check_contiguous(const TensorView& t, const char* op, const char* name);
void check_writable(const TensorView& t, const char* op, const char* name);
// expected: -1 is a wildcard.
void check_shape(const TensorView& t, const char* op, const char* name, std::initializer_list<int64_t> expected);
// An output buffer: dtype, shape, contiguous, writable (in that order).
void check_output(const TensorView& t, const char* op, const char* name, DType dtype,
                  std::initializer_list<int64_t> shape);
void check_same_device(const TensorView& a, const char* an, const TensorView& b, const char* bn, const char* op);
// Packed binary codes: uint8 [n, nbytes], contiguous, nbytes a positive multiple of 8 (64-bit words).
void check_binary_codes(const TensorView& t, const char* op, const char* name);
void check_device_supported(const TensorView& t, const char* op, const char* name);
// An optional int64 vector of length len (labels, CSR offsets): nothing when t is null, else
// device supported and that of `like` (named like_name), int64, shape [len], contiguous.
void check_optional_int64_vector(const TensorView* t, const TensorView& like, const char* like_name, const char* op,
                                 const char* name, int64_t len);
inline bool on_cuda(const TensorView& t) { return t.device == Device::kCUDA; }

bool cuda_available_at_build();

}  // namespace semvis
