// Host entry points of mining (topk_similar and what builds on it): argument checks in a fixed order (device, same
// device, dtype, shape / contiguity, early return on empty), then dispatch by device.
#include "mining.h"

#include <cmath>

namespace semvis {
namespace mining {
namespace {
// The exclusion arguments that the tiled and the fused entry share, checked against ``anchor`` (the tensor whose
// device they must live on) and packed into an Exclude.
Exclude checked_exclusions(const char* op, const TensorView& anchor, const char* anchor_name, int64_t n, int64_t m,
                           const TensorView* q_labels, const TensorView* db_labels, const TensorView* indptr,
                           const TensorView* indices, const TensorView* dense, bool exclude_self) {
  if ((q_labels == nullptr) != (db_labels == nullptr)) failf(op, ": q_labels and db_labels go together");
  if ((indptr == nullptr) != (indices == nullptr)) failf(op, ": indptr and indices go together");
  check_optional_int64_vector(q_labels, anchor, anchor_name, op, "q_labels", n);
  check_optional_int64_vector(db_labels, anchor, anchor_name, op, "db_labels", m);
  check_optional_int64_vector(indptr, anchor, anchor_name, op, "indptr", n + 1);
  check_optional_int64_vector(indices, anchor, anchor_name, op, "indices", indices ? indices->size(0) : 0);
  if (indices) check_rank(*indices, op, "indices", 1);
  if (dense) {
    check_same_device(anchor, anchor_name, *dense, "exclude", op);
    check_dtype(*dense, op, "exclude", {DType::kBool, DType::kUInt8});
    check_shape(*dense, op, "exclude", {n, m});
    check_contiguous(*dense, op, "exclude");
  }
  Exclude ex;
  ex.q_labels = q_labels ? q_labels->ptr<const int64_t>() : nullptr;
  ex.db_labels = db_labels ? db_labels->ptr<const int64_t>() : nullptr;
  ex.indptr = indptr ? indptr->ptr<const int64_t>() : nullptr;
  ex.indices = indices ? indices->ptr<const int64_t>() : nullptr;
  ex.dense = dense ? dense->ptr<const uint8_t>() : nullptr;
  ex.self = exclude_self;
  return ex;
}
}  // namespace

void merge_tile(const TensorView& S, int64_t row0, int64_t col0, int64_t n, int64_t m, const TensorView* q_labels,
                const TensorView* db_labels, const TensorView* indptr, const TensorView* indices,
                const TensorView* dense, bool exclude_self, bool largest, const TensorView& keys,
                std::uintptr_t stream) {
  constexpr const char* op = "topk_similar";
  check_device_supported(S, op, "similarities");
  check_same_device(S, "similarities", keys, "state", op);
  check_dtype(S, op, "similarities", {DType::kFloat32});
  check_rank(S, op, "similarities", 2);
  if (S.stride(1) != 1 && S.size(1) > 1) failf(op, ": similarities must have unit column stride, got ", S.describe());
  check_dtype(keys, op, "state", {DType::kInt64});
  check_rank(keys, op, "state", 2);
  check_contiguous(keys, op, "state");
  check_writable(keys, op, "state");
  const int64_t nb = S.size(0), tm = S.size(1), k = keys.size(1);
  if (keys.size(0) != n) failf(op, ": state must have ", n, " rows, got ", keys.describe());
  if (k < 1) failf(op, ": k must be >= 1, got ", k);
  if (m > kMaxColumns) failf(op, ": the database may hold at most ", kMaxColumns, " rows, got ", m);
  if (row0 < 0 || col0 < 0 || row0 + nb > n || col0 + tm > m)
    failf(op, ": tile [", row0, ", ", row0 + nb, ") x [", col0, ", ", col0 + tm, ") lies outside ", n, " x ", m);
  const Exclude ex = checked_exclusions(op, S, "similarities", n, m, q_labels, db_labels, indptr, indices, dense,
                                        exclude_self);
  if (on_cuda(S) && k > kMaxCudaK) failf(op, ": k must be <= ", kMaxCudaK, " on cuda, got ", k);
  if (nb == 0 || tm == 0) return;
  const int64_t lds = nb > 1 ? S.stride(0) : tm;
  uint64_t* K = reinterpret_cast<uint64_t*>(keys.ptr<int64_t>());
  if (!on_cuda(S)) {
    merge_tile_cpu(S.ptr<const float>(), lds, nb, tm, row0, col0, m, ex, largest, K, k);
  } else {
#ifdef SEMVIS_WITH_CUDA
    merge_tile_cuda(S.ptr<const float>(), lds, nb, tm, row0, col0, m, ex, largest, K, k, S.device_id, stream);
#else
    (void)stream;
#endif
  }
}

void topk_fused(const TensorView& q, const TensorView& db, const TensorView* q_labels, const TensorView* db_labels,
                const TensorView* indptr, const TensorView* indices, const TensorView* dense, bool exclude_self,
                bool largest, const TensorView& keys, int64_t block_rows, int64_t block_cols) {
  constexpr const char* op = "topk_similar";
  if (on_cuda(q) || on_cuda(db) || on_cuda(keys)) failf(op, ": the fused kernel runs on the CPU only");
  if (!fused_available()) failf(op, ": the fused CPU kernel needs AVX2 and FMA");
  check_dtype(q, op, "q", {DType::kFloat32});
  check_dtype(db, op, "db", {DType::kFloat32});
  check_rank(q, op, "q", 2);
  check_rank(db, op, "db", 2);
  check_contiguous(q, op, "q");
  check_contiguous(db, op, "db");
  check_dtype(keys, op, "state", {DType::kInt64});
  check_rank(keys, op, "state", 2);
  check_contiguous(keys, op, "state");
  check_writable(keys, op, "state");
  const int64_t n = q.size(0), m = db.size(0), d = q.size(1), k = keys.size(1);
  if (db.size(1) != d) failf(op, ": q and db must have the same dimension, got ", q.describe(), " and ", db.describe());
  if (d < 1 || d > kFusedMaxDim) failf(op, ": the fused kernel takes 1 <= d <= ", kFusedMaxDim, ", got ", d);
  if (keys.size(0) != n) failf(op, ": state must have ", n, " rows, got ", keys.describe());
  if (k < 1) failf(op, ": k must be >= 1, got ", k);
  if (m > kMaxColumns) failf(op, ": the database may hold at most ", kMaxColumns, " rows, got ", m);
  const Exclude ex = checked_exclusions(op, q, "q", n, m, q_labels, db_labels, indptr, indices, dense, exclude_self);
  if (n == 0 || m == 0) return;
  topk_fused_cpu(q.ptr<const float>(), n, db.ptr<const float>(), m, d, ex, largest,
                 reinterpret_cast<uint64_t*>(keys.ptr<int64_t>()), k, block_rows, block_cols);
}

void finalize(const TensorView& keys, bool largest, const TensorView& scores, const TensorView& idx,
              std::uintptr_t stream) {
  constexpr const char* op = "topk_similar";
  check_device_supported(keys, op, "state");
  check_same_device(keys, "state", scores, "scores", op);
  check_same_device(keys, "state", idx, "indices", op);
  check_dtype(keys, op, "state", {DType::kInt64});
  check_rank(keys, op, "state", 2);
  check_contiguous(keys, op, "state");
  const int64_t n = keys.size(0), k = keys.size(1);
  check_output(scores, op, "scores", DType::kFloat32, {n, k});
  check_output(idx, op, "indices", DType::kInt64, {n, k});
  if (n == 0 || k == 0) return;
  const uint64_t* K = reinterpret_cast<const uint64_t*>(keys.ptr<const int64_t>());
  if (!on_cuda(keys)) {
    finalize_cpu(K, n, k, largest, scores.ptr<float>(), idx.ptr<int64_t>());
  } else {
#ifdef SEMVIS_WITH_CUDA
    finalize_cuda(K, n, k, largest, scores.ptr<float>(), idx.ptr<int64_t>(), keys.device_id, stream);
#else
    (void)stream;
#endif
  }
}

}  // namespace mining
}  // namespace semvis
