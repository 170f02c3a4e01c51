// "How fast": the inner Hamming loops, one variant per instruction set, chosen at run time.
// Callers (the top-k driver, the kd-tree) see only these function pointers, never an intrinsic.
#pragma once

#include <cstdint>

namespace semvis {
namespace hamming {

// out[i] = popcount(q XOR codes[i]) for the n contiguous codes of nbytes bytes starting at codes.
using RangeFn = void (*)(const uint8_t* q, const uint8_t* codes, int64_t n, int64_t nbytes, int32_t* out);

struct Kernels {
  const char* name;  // "popcnt" or "generic"
  RangeFn range;
};

// The variant in use: the best the CPU supports, or SEMVIS_HAMMING_IMPL=generic|popcnt.
const Kernels& kernels();
// Selects a variant by name ("auto", "generic", "popcnt"); throws std::invalid_argument for an
// unknown name or one the CPU cannot run. For tests and benchmarks; not thread-safe w.r.t.
// running searches.
void set_kernels(const char* name);

}  // namespace hamming
}  // namespace semvis
