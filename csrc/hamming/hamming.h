// Exact Hamming distances and top-k between binary codes (K15 of spec/seeds-003-004.md).
//
// A code is a row of nbytes uint8 (nbytes a multiple of 8: any multiple of 64 bits; 256 bits
// is the fast path). distance(a, b) = popcount(a XOR b). Bit i of a code is bit (7 - i % 8) of
// byte i / 8, the order of np.unpackbits (the kd-tree's split dimensions use it too).
//
// The CPU kernels pick their popcount at run time (hardware POPCNT when the CPU has it, a
// portable SWAR count otherwise), as FAISS does; see hamming_simd.h.
#pragma once

#include <cstdint>

#include "common/tensor.h"

namespace semvis {
namespace hamming {

// Host entry points: validate, then run on the device of the inputs.
//   a [na, nbytes], b [nb, nbytes] uint8, contiguous, same device
//   out [na, nb] int32, contiguous (written)
void distances(const TensorView& a, const TensorView& b, const TensorView& out, std::uintptr_t stream);

//   queries [nq, nbytes], codes [n, nbytes] uint8, contiguous, same device; 1 <= k <= n
//   dist [nq, k] int32, idx [nq, k] int64, contiguous (written): the k nearest codes of each
//   query, nearest first, ties by the lowest index.
void topk(const TensorView& queries, const TensorView& codes, int64_t k, const TensorView& dist,
          const TensorView& idx, std::uintptr_t stream);

void distances_cpu(const uint8_t* a, int64_t na, const uint8_t* b, int64_t nb, int64_t nbytes, int32_t* out);
void topk_cpu(const uint8_t* q, int64_t nq, const uint8_t* codes, int64_t n, int64_t nbytes, int64_t k,
              int32_t* dist, int64_t* idx);
#ifdef SEMVIS_WITH_CUDA
void distances_cuda(int device, const uint8_t* a, int64_t na, const uint8_t* b, int64_t nb, int64_t nbytes,
                    int32_t* out, std::uintptr_t stream);
void topk_cuda(int device, const uint8_t* q, int64_t nq, const uint8_t* codes, int64_t n, int64_t nbytes, int64_t k,
               int32_t* dist, int64_t* idx, std::uintptr_t stream);
#endif

}  // namespace hamming
}  // namespace semvis
