#pragma once
#include "numeric.h"
#include "tensor.h"

// Runs __VA_ARGS__ with scalar_t bound to the storage type of a floating dtype.
#define SEMVIS_DISPATCH_FLOAT(DT, NAME, ...)                                     \
  switch (DT) {                                                                  \
    case ::semvis::DType::kFloat32: { using scalar_t = float; __VA_ARGS__; break; }        \
    case ::semvis::DType::kFloat64: { using scalar_t = double; __VA_ARGS__; break; }       \
    case ::semvis::DType::kFloat16: { using scalar_t = ::semvis::half_t; __VA_ARGS__; break; }     \
    case ::semvis::DType::kBFloat16: { using scalar_t = ::semvis::bfloat16_t; __VA_ARGS__; break; } \
    default: ::semvis::failf(NAME, ": unsupported dtype ", ::semvis::dtype_name(DT));  \
  }
