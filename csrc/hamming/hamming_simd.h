// "How fast": the inner Hamming loops, one variant per instruction set, chosen at run time.
// Callers (the top-k driver, the kd-tree) see only these function pointers, never an intrinsic.
#pragma once

#include <cstdint>

namespace semvis {
namespace hamming {

// out[i] = popcount(q XOR codes[i]) for the n contiguous codes of nbytes bytes starting at codes.
using RangeFn = void (*)(const uint8_t* q, const uint8_t* codes, int64_t n, int64_t nbytes, int32_t* out);

// Filtered scan of a block of up to kScanQueries queries against m contiguous codes: appends
// (code i, query j, distance d) for every pair with d < thr[j] (thr read once, at the start),
// as cand[c] = i * kScanQueries + j and cd[c] = d; returns the number appended (<= m * nq).
// The caller sizes the chunk so that cand fits, then pushes the candidates into its heaps and
// tightens thr before the next chunk. Codes are loaded once per block of queries, and the
// distances never leave registers unless they pass the filter.
constexpr int kScanQueries = 4;
using ScanFn = int64_t (*)(const uint8_t* q, int nq, const uint8_t* codes, int64_t m, int64_t nbytes,
                           const int32_t* thr, uint32_t* cand, int32_t* cd);

// 256-bit codes, vertical layout (AVX2): transpose32 writes m codes as groups of 8 codes,
// group g = 8 x 8 uint32 words, word w of code 8 g + l at out[64 g + 8 w + l] (the last group
// padded with zeros); scan32v then compares up to kVerticalQueries queries with 8 codes per
// instruction (per-lane popcount by nibble table, no horizontal sums) and appends (code i,
// query j, d) with d < thr[j] as cand[c] = i * kVerticalQueries + j, in increasing i for each j.
constexpr int kVerticalQueries = 64;
using Transpose32Fn = void (*)(const uint8_t* codes, int64_t m, uint32_t* out);
using Scan32VFn = int64_t (*)(const uint32_t* tcodes, int64_t m, const uint8_t* q, int nq, const int32_t* thr,
                              uint32_t* cand, int32_t* cd);

struct Kernels {
  const char* name;  // "popcnt" or "generic"
  RangeFn range;
  ScanFn scan;
  Transpose32Fn transpose32;  // nullptr: no vertical path on this CPU / variant
  Scan32VFn scan32v;
};

// The variant in use: the best the CPU supports, or SEMVIS_HAMMING_IMPL=generic|popcnt.
const Kernels& kernels();
// Selects a variant by name ("auto", "generic", "popcnt", "popcnt-scalar": POPCNT without the
// AVX2 scans, for measurements and tests); throws std::invalid_argument for an
// unknown name or one the CPU cannot run. For tests and benchmarks; not thread-safe w.r.t.
// running searches.
void set_kernels(const char* name);

}  // namespace hamming
}  // namespace semvis
