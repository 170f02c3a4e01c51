// The triplet losses (semvis_ext/ops/triplet_losses.py, tests/test_triplet_losses.py,
// benchmarks/bench_triplet_losses.py): VSE++ hardest-negative loss (BEAN Eq. 7) and the triplet
// margin loss over index triplets (Gordo & Larlus 2017, Eq. 1), with one backward for both.
//
// 1. vse_forward: from S = img txt^T [B, B], per row (image query) and per column (caption
//    query) the K hardest negatives, hinge margin + S_neg - S_pos, summed; the gradient is
//    returned as a list of weighted (i, j) entries dL/dS[i, j].
// 2. triplet_forward: the triplet margin loss over index triplets, same entry-list gradient.
// 3. pair_backward: gA[i] += g * w * B[j], gB[j] += g * w * A[i] over the entries: the backward
//    of both losses without a [B, B] (or [T, d]) intermediate.
#pragma once

#include <cstdint>

#include "common/numeric.h"
#include "common/tensor.h"

namespace semvis {
namespace triplet_losses {

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

}  // namespace triplet_losses
}  // namespace semvis
