// Multi-index hashing (Norouzi, Punjani & Fleet, "Fast exact search in Hamming space with
// multi-index hashing", TPAMI 2014): exact k-NN of binary codes in Hamming space.
//
// Layout. The nbits bits of a code are cut into m contiguous substrings; substring j has
// s_j = nbits / m bits, the first nbits % m substrings one more (bits numbered as np.unpackbits
// does, see hamming.h; a substring's first bit is the most significant bit of its value). Table j
// is a direct-address table over the 2^s_j substring values in CSR form: offsets_j [2^s_j + 1]
// int32 and positions_j [n] int32, the positions (rows of codes) whose substring j has value v
// being positions_j[offsets_j[v] : offsets_j[v + 1]], in increasing order.
//
// Search (exact). By the pigeonhole principle a key at distance d from the query is within
// floor(d / m) of it in at least one substring. For radius r = 0, 1, ... and each table j in
// turn, every bucket at exactly distance r from the query's substring j is looked up and its
// unseen keys are scored (a visited set; full distance, popcount). After table j at radius r,
// every unseen key has distance >= m r + j + 1; the search stops when k keys have been scored
// and the k-th best distance is below that bound, so the result is exactly the brute-force top
// k, ties by the lowest id (the (distance, id) order of hamming_topk). When the next radius
// would bring the lookups past n / 128, or more than n / 64 keys were scored, or k >= n, the
// unseen keys are scored by a linear scan instead (still exact; the work spent before the scan
// is bounded by about one scan).
#pragma once

#include <cstdint>
#include <vector>

#include "common/tensor.h"

namespace semvis {
namespace mih {

constexpr int64_t kMaxSubstringBits = 24;

// Bits of substring j (j < m) of nbits-bit codes.
inline int64_t substring_bits(int64_t nbits, int64_t m, int64_t j) { return nbits / m + (j < nbits % m ? 1 : 0); }
// Total length of the offsets array: sum_j (2^s_j + 1).
int64_t offsets_size(int64_t nbits, int64_t m);

//   codes [n, nbytes] uint8 (CPU, contiguous), offsets [offsets_size] int32, positions [m, n] int32
//   (both writable: filled). Throws std::invalid_argument for bad arguments.
void build(const TensorView& codes, int64_t m, const TensorView& offsets, const TensorView& positions);

// Throws std::invalid_argument unless (offsets, positions) are well-formed tables over n keys.
void validate(const TensorView& offsets, const TensorView& positions, int64_t n, int64_t nbits, int64_t m);

//   codes [n, nbytes] uint8, ids [n] int64, the tables, queries [nq, nbytes] uint8
//   dist [nq, k] int32, out_ids [nq, k] int64, counts [nq] int64 (optional: keys scored)
void search(const TensorView& codes, const TensorView& ids, int64_t m, const TensorView& offsets,
            const TensorView& positions, const TensorView& queries, int64_t k, const TensorView& dist,
            const TensorView& out_ids, const TensorView* counts);

struct IndexRef {
  const uint8_t* codes;
  const int64_t* ids;
  int64_t n, nbytes, m;
  const int32_t* offsets;
  const int32_t* positions;
};
void build_cpu(const uint8_t* codes, int64_t n, int64_t nbytes, int64_t m, int32_t* offsets, int32_t* positions);
void search_cpu(const IndexRef& x, const uint8_t* queries, int64_t nq, int64_t k, int32_t* dist, int64_t* out_ids,
                int64_t* counts);

}  // namespace mih
}  // namespace semvis
