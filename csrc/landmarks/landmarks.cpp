// Host entry points of the landmarks evaluation: argument checks in a fixed order, then the
// CPU kernels (this op has no CUDA kernel: its input is read once, so a device copy costs as much
// as the work; the Python layer moves cuda scores to the host).
#include "landmarks.h"

#include "landmarks_cpu.h"
#include <limits>

namespace semvis {
namespace landmarks {
namespace {

constexpr const char* kOp = "landmarks_positions";

void check_cpu(const TensorView& t, const char* op, const char* name) {
  if (t.device != Device::kCPU) failf(op, ": ", name, " must be on the cpu, got ", t.describe());
}

void check_index(const TensorView& t, const char* op, const char* name, int64_t n) {
  check_cpu(t, op, name);
  check_dtype(t, op, name, {DType::kInt64});
  check_shape(t, op, name, {n});
  check_contiguous(t, op, name);
}

// indptr [Q + 1] starting at 0, non-decreasing, ending at ids.size(0); ids in [0, limit).
void check_csr(const TensorView& indptr, const TensorView& ids, int64_t Q, int64_t limit, const char* op,
               const char* name, bool allow_unranked = false) {
  check_index(indptr, op, "indptr", Q + 1);
  check_cpu(ids, op, name);
  check_dtype(ids, op, name, {DType::kInt64});
  check_rank(ids, op, name, 1);
  check_contiguous(ids, op, name);
  const int64_t* p = indptr.ptr<int64_t>();
  if (p[0] != 0) failf(op, ": indptr[0] must be 0, got ", p[0]);
  for (int64_t q = 0; q < Q; ++q)
    if (p[q + 1] < p[q]) failf(op, ": indptr must be non-decreasing, got ", p[q], " then ", p[q + 1], " at ", q);
  if (p[Q] != ids.size(0)) failf(op, ": indptr[-1] must equal the number of ", name, " (", ids.size(0), "), got ", p[Q]);
  const int64_t* v = ids.ptr<int64_t>();
  for (int64_t t = 0; t < ids.size(0); ++t)
    if (!(v[t] >= (allow_unranked ? -1 : 0) && v[t] < limit)) {
      if (allow_unranked) failf(op, ": ", name, " must be positions >= 0 (or -1 = not ranked), got ", v[t]);
      failf(op, ": ", name, " must be database ids in [0, ", limit, "), got ", v[t]);
    }
}

}  // namespace

void positions_from_scores(const TensorView& scores, const TensorView& indptr, const TensorView& ids,
                           const TensorView& out) {
  check_cpu(scores, kOp, "scores");
  check_dtype(scores, kOp, "scores", {DType::kFloat32, DType::kFloat64});
  check_rank(scores, kOp, "scores", 2);
  const int64_t N = scores.size(0), Q = scores.size(1);
  check_csr(indptr, ids, Q, N, kOp, "ids");
  check_output(out, kOp, "out", DType::kInt64, {ids.size(0)});
  if (ids.size(0) == 0) return;
  if (scores.dtype == DType::kFloat32) {
    positions_from_scores_cpu<float>(scores.ptr<float>(), N, Q, scores.stride(0), scores.stride(1),
                                     indptr.ptr<int64_t>(), ids.ptr<int64_t>(), out.ptr<int64_t>());
  } else {
    positions_from_scores_cpu<double>(scores.ptr<double>(), N, Q, scores.stride(0), scores.stride(1),
                                      indptr.ptr<int64_t>(), ids.ptr<int64_t>(), out.ptr<int64_t>());
  }
}

void positions_from_ranks(const TensorView& ranks, int64_t db_size, const TensorView& indptr, const TensorView& ids,
                          const TensorView& out) {
  check_cpu(ranks, kOp, "ranks");
  check_dtype(ranks, kOp, "ranks", {DType::kInt64});
  check_rank(ranks, kOp, "ranks", 2);
  const int64_t K = ranks.size(0), Q = ranks.size(1);
  if (db_size < K) failf(kOp, ": db_size must be >= the ranking length ", K, ", got ", db_size);
  check_csr(indptr, ids, Q, db_size, kOp, "ids");
  check_output(out, kOp, "out", DType::kInt64, {ids.size(0)});
  if (Q == 0) return;
  positions_from_ranks_cpu(ranks.ptr<int64_t>(), K, Q, ranks.stride(0), ranks.stride(1), db_size,
                           indptr.ptr<int64_t>(), ids.ptr<int64_t>(), out.ptr<int64_t>());
}

void average_precision(const TensorView& pos_indptr, const TensorView& pos, const TensorView& nres,
                       const TensorView& junk_indptr, const TensorView& junk, const TensorView& kappas,
                       const TensorView& aps, const TensorView& prs) {
  constexpr const char* op = "landmarks_average_precision";
  check_cpu(nres, op, "nres");
  check_dtype(nres, op, "nres", {DType::kInt64});
  check_rank(nres, op, "nres", 1);
  check_contiguous(nres, op, "nres");
  const int64_t Q = nres.size(0);
  const int64_t big = std::numeric_limits<int64_t>::max();
  check_csr(pos_indptr, pos, Q, big, op, "pos", true);
  check_csr(junk_indptr, junk, Q, big, op, "junk", true);
  check_cpu(kappas, op, "kappas");
  check_dtype(kappas, op, "kappas", {DType::kInt64});
  check_rank(kappas, op, "kappas", 1);
  check_contiguous(kappas, op, "kappas");
  const int64_t K = kappas.size(0);
  for (int64_t j = 0; j < K; ++j)
    if (kappas.ptr<int64_t>()[j] < 1) failf(op, ": kappas must be >= 1, got ", kappas.ptr<int64_t>()[j]);
  const int64_t* pi = pos_indptr.ptr<int64_t>();
  for (int64_t q = 0; q < Q; ++q) {
    const int64_t nr = nres.ptr<int64_t>()[q];
    if (nr < pi[q + 1] - pi[q])
      failf(op, ": nres[", q, "] = ", nr, " is smaller than the number of positives given (", pi[q + 1] - pi[q], ")");
  }
  check_output(aps, op, "aps", DType::kFloat64, {Q});
  check_output(prs, op, "prs", DType::kFloat64, {Q, K});
  if (Q == 0) return;
  average_precision_cpu(Q, pi, pos.ptr<int64_t>(), nres.ptr<int64_t>(), junk_indptr.ptr<int64_t>(), junk.ptr<int64_t>(),
                        K, kappas.ptr<int64_t>(), aps.ptr<double>(), prs.ptr<double>());
}

}  // namespace landmarks
}  // namespace semvis
