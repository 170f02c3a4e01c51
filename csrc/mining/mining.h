// Hard-negative mining (Gordo & Larlus 2017, Sec. 3.3 / seed 000.8): the running top-k behind
// topk_similar, hard_triplets and relevance (semvis_ext/ops/mining.py, tests/test_mining.py,
// benchmarks/bench_mining.py). The triplet losses (VSE++, triplet margin) live in
// csrc/triplet_losses.
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
#pragma once

#include <cstdint>
#include <vector>

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

// Per-thread scratch of the CPU row merge.
struct MergeScratch {
  std::vector<uint32_t> key32, ck;
  std::vector<int32_t> ci;
  std::vector<uint64_t> cand;
};
// merge_tile_cpu's work on rows [lo, hi) of the tile, on the calling thread (no parallelism).
void merge_rows_cpu(const float* S, int64_t lds, int64_t lo, int64_t hi, int64_t tm, int64_t row0, int64_t col0,
                    int64_t m, const Exclude& ex, bool largest, uint64_t* keys, int64_t k, MergeScratch& sc);

// ---- fused GEMM + running top-k on the CPU (float32, AVX2 + FMA) ------------------------------
// topk_similar without the framework's GEMM: the CPU's threads (the shared pool) each compute a
// block of block_rows x block_cols dot products with a register-blocked FMA kernel and fold it
// into the state while it is still in cache, so no other thread pool runs between GEMM and
// selection. Dot products accumulate in float32 over d in order (blocks of 256).
//   q [n, d], db [m, d] float32 contiguous CPU; keys [n, k] int64 as merge_tile. block_rows,
//   block_cols <= 0 pick the defaults (96 x 256). Extra memory: a packed copy of at most
//   max(kFusedPackFloats, block_cols x d) database floats + per thread
//   block_rows x (d + max(block_cols, 4096)) floats (a row's first ~4,096 columns are one wide
//   block, so that its heap fills from them).
bool fused_available();  // the CPU has AVX2 and FMA
constexpr int64_t kFusedMaxDim = 4096;
constexpr int64_t kFusedPackFloats = int64_t(1) << 22;
void topk_fused(const TensorView& q, const TensorView& db, const TensorView* q_labels, const TensorView* db_labels,
                const TensorView* indptr, const TensorView* indices, const TensorView* dense, bool exclude_self,
                bool largest, const TensorView& keys, int64_t block_rows, int64_t block_cols);
void topk_fused_cpu(const float* q, int64_t n, const float* db, int64_t m, int64_t d, const Exclude& ex, bool largest,
                    uint64_t* keys, int64_t k, int64_t block_rows, int64_t block_cols);
#ifdef SEMVIS_WITH_CUDA
void merge_tile_cuda(const float* S, int64_t lds, int64_t nb, int64_t tm, int64_t row0, int64_t col0, int64_t m,
                     const Exclude& ex, bool largest, uint64_t* keys, int64_t k, int device, std::uintptr_t stream);
void finalize_cuda(const uint64_t* keys, int64_t n, int64_t k, bool largest, float* scores, int64_t* idx,
                   int device, std::uintptr_t stream);
#endif

}  // namespace mining
}  // namespace semvis
