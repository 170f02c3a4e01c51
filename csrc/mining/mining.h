// Hard-negative mining and the triplet losses built on it (Gordo & Larlus 2017, Sec. 3.3 / seed
// 000.8; VSE++ / BEAN Eq. 7).
//
// The similarity tiles are computed by the caller (the framework's GEMM, as FAISS does with its
// GEMM tiles); these kernels do what a GEMM cannot: mask, select and reduce, with memory
// O(n * k) at any database size.
//
// 1. Running top-k (topk_similar). The state of each query row is k 64-bit keys
//      key = order_key(score) << 32 | (0xffffffff - column)        (largest = true)
//      key = ~order_key(score) << 32 | (0xffffffff - column)       (largest = false)
//    so that "better score, then lower column" is a plain unsigned maximum and key 0 is an empty
//    slot (no real candidate has key 0). merge_tile folds one tile S[nb, tm] of similarities into
//    the state of rows [row0, row0 + nb); finalize decodes it into sorted (score, index) rows,
//    empty slots becoming (-inf, -1) (largest) or (+inf, -1) (smallest). The state layout is
//    backend-private (a min-heap per row on the CPU, a descending list on the GPU): only
//    finalize of the same backend reads it.
// 2. VSE hardest-negative loss (vse_forward): from S = img txt^T [B, B], per row (image query)
//    and per column (caption query) the K hardest negatives, hinge margin + S_neg - S_pos,
//    summed; the gradient is returned as a list of weighted (i, j) entries dL/dS[i, j].
// 3. Triplet margin loss over index triplets (triplet_forward), same entry-list gradient.
// 4. pair_backward: gA[i] += g * w * B[j], gB[j] += g * w * A[i] over the entries: the backward of
//    both losses without a [B, B] (or [T, d]) intermediate.
#pragma once

#include <cstdint>

#include "common/numeric.h"
#include "common/tensor.h"

namespace semvis {
namespace mining {

// Optional exclusion rules; a pair (row, col) is excluded when any given rule says so.
// All pointers are on the device of the tile, indexed by global row / column.
struct Exclude {
  const int64_t* q_labels = nullptr;   // [n]   exclude when q_labels[row] == db_labels[col]
  const int64_t* db_labels = nullptr;  // [m]
  const int64_t* indptr = nullptr;     // [n + 1] CSR, indices sorted ascending within each row
  const int64_t* indices = nullptr;    // [nnz]
  const uint8_t* dense = nullptr;      // [n, m] bool, row-major contiguous
  bool self = false;                   // exclude col == row
};

SEMVIS_HD uint64_t make_key(float v, int64_t col, bool largest) {
  uint32_t k = order_key(v);
  if (!largest) k = ~k;
  return (static_cast<uint64_t>(k) << 32) | static_cast<uint64_t>(0xffffffffu - static_cast<uint32_t>(col));
}
SEMVIS_HD float key_score(uint64_t key, bool largest) {
  const uint32_t k = static_cast<uint32_t>(key >> 32);
  return order_key_value(largest ? k : ~k);
}
SEMVIS_HD int64_t key_index(uint64_t key) {
  return static_cast<int64_t>(0xffffffffu - static_cast<uint32_t>(key & 0xffffffffu));
}

// Largest column count a key can hold (index -1 must stay distinguishable).
constexpr int64_t kMaxColumns = int64_t(1) << 31;
// CUDA keeps 2 * next_pow2(k) keys per row in shared memory.
constexpr int64_t kMaxCudaK = 2048;

// ---- running top-k -------------------------------------------------------------------------
//   S        [nb, tm] float32, stride(1) == 1 (any row stride): similarities of rows row0.. and
//            columns col0..
//   n, m     full query / database sizes (bounds of the exclusion rules)
//   q_labels [n] int64 / db_labels [m] int64 / indptr [n + 1] int64 / indices [nnz] int64 /
//   dense    [n, m] bool: each optional, on S's device, contiguous
//   keys     [n, k] int64, contiguous: the running state (all zero = empty at the start)
void merge_tile(const TensorView& S, int64_t row0, int64_t col0, int64_t n, int64_t m, const TensorView* q_labels,
                const TensorView* db_labels, const TensorView* indptr, const TensorView* indices,
                const TensorView* dense, bool exclude_self, bool largest, const TensorView& keys,
                std::uintptr_t stream);
//   keys [n, k] -> scores [n, k] float32, idx [n, k] int64 (both contiguous, written), best first.
//   idx may be the keys buffer itself (decoded in place, saving n * k * 8 bytes).
void finalize(const TensorView& keys, bool largest, const TensorView& scores, const TensorView& idx,
              std::uintptr_t stream);

void merge_tile_cpu(const float* S, int64_t lds, int64_t nb, int64_t tm, int64_t row0, int64_t col0, int64_t m,
                    const Exclude& ex, bool largest, uint64_t* keys, int64_t k);
void finalize_cpu(const uint64_t* keys, int64_t n, int64_t k, bool largest, float* scores, int64_t* idx);
#ifdef SEMVIS_WITH_CUDA
void merge_tile_cuda(const float* S, int64_t lds, int64_t nb, int64_t tm, int64_t row0, int64_t col0, int64_t m,
                     const Exclude& ex, bool largest, uint64_t* keys, int64_t k, int device, std::uintptr_t stream);
void finalize_cuda(const uint64_t* keys, int64_t n, int64_t k, bool largest, float* scores, int64_t* idx,
                   int device, std::uintptr_t stream);
#endif

// ---- VSE hardest-negative loss ---------------------------------------------------------------
struct VseParams {
  double margin = 0.2;
  int64_t k = 1;         // negatives per query; >= B - 1 means all of them (the VSE0 sum variant)
  bool both = true;      // also the caption-query (column) direction
  double scale = 1.0;    // reduction: 1 (sum) or 1 / B (mean over the batch, BEAN Eq. 7)
};
// Entries per direction and query: K = min(k, B - 1) selected negatives + 1 diagonal entry.
inline int64_t vse_entries(int64_t B, const VseParams& p) {
  const int64_t K = p.k < B - 1 ? p.k : B - 1;
  return (p.both ? 2 : 1) * B * (K + 1);
}
//   S      [B, B] float32 or float64 contiguous (S[i, j] = img_i . txt_j)
//   labels [B] int64 (optional, on S's device): pairs with equal labels are not negatives
//   loss   [] dtype of S; ei, ej [E] int64; ew [E] dtype of S (E = vse_entries), all written.
// Inactive entries carry weight 0 (and indices 0).
void vse_forward(const TensorView& S, const TensorView* labels, const VseParams& p, const TensorView& loss,
                 const TensorView& ei, const TensorView& ej, const TensorView& ew, std::uintptr_t stream);

// ---- triplet margin loss over index triplets -------------------------------------------------
struct TripletParams {
  double margin = 0.1;
  double scale = 0.5;   // the 1/2 of Gordo & Larlus Eq. 1
  bool mean = true;     // divide by the number of triplets
};
//   A [na, d], Bt [nb, d] same float dtype, contiguous; trip [T, 3] int64 (anchor row of A,
//   positive row of Bt, negative row of Bt), contiguous, checked in range.
//   loss [] acc dtype; ei, ej [2T] int64; ew [2T] acc dtype (written).
void triplet_forward(const TensorView& A, const TensorView& Bt, const TensorView& trip, const TripletParams& p,
                     const TensorView& loss, const TensorView& ei, const TensorView& ej, const TensorView& ew,
                     std::uintptr_t stream);

// ---- backward of both losses -----------------------------------------------------------------
//   g [] (or [1]) acc dtype: the upstream gradient; A [na, d], Bt [nb, d] contiguous, same dtype;
//   ei, ej [E] int64; ew [E] acc dtype; gA [na, d], gB [nb, d] acc dtype contiguous (written).
// Deterministic: each feature column sums its entries in entry order.
void pair_backward(const TensorView& g, const TensorView& A, const TensorView& Bt, const TensorView& ei,
                   const TensorView& ej, const TensorView& ew, const TensorView& gA, const TensorView& gB,
                   std::uintptr_t stream);

// Backend implementations (arguments validated).
template <typename Acc>
void vse_forward_cpu(const Acc* S, int64_t B, const int64_t* labels, const VseParams& p, Acc* loss, int64_t* ei,
                     int64_t* ej, Acc* ew);
void triplet_forward_cpu(const TensorView& A, const TensorView& Bt, const int64_t* trip, int64_t T,
                         const TripletParams& p, void* loss, int64_t* ei, int64_t* ej, void* ew);
void pair_backward_cpu(const TensorView& g, const TensorView& A, const TensorView& Bt, const int64_t* ei,
                       const int64_t* ej, const TensorView& ew, const TensorView& gA, const TensorView& gB);
#ifdef SEMVIS_WITH_CUDA
void vse_forward_cuda(const TensorView& S, const int64_t* labels, const VseParams& p, const TensorView& loss,
                      int64_t* ei, int64_t* ej, const TensorView& ew, std::uintptr_t stream);
void triplet_forward_cuda(const TensorView& A, const TensorView& Bt, const int64_t* trip, int64_t T,
                          const TripletParams& p, const TensorView& loss, int64_t* ei, int64_t* ej,
                          const TensorView& ew, std::uintptr_t stream);
void pair_backward_cuda(const TensorView& g, const TensorView& A, const TensorView& Bt, const int64_t* ei,
                        const int64_t* ej, const TensorView& ew, const TensorView& gA, const TensorView& gB,
                        std::uintptr_t stream);
#endif

}  // namespace mining
}  // namespace semvis
