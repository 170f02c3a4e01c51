// Host entry points of the triplet losses: argument checks in a fixed order (device, same
// device, dtype, shape / contiguity, early return on empty), then dispatch by device.
#include "triplet_losses.h"

#include <cmath>

namespace semvis {
namespace triplet_losses {
void vse_forward(const TensorView& S, const TensorView* labels, const VseParams& p, const TensorView& loss,
                 const TensorView& ei, const TensorView& ej, const TensorView& ew, std::uintptr_t stream) {
  constexpr const char* op = "vse_hardest_triplet_loss";
  check_device_supported(S, op, "similarities");
  check_same_device(S, "similarities", loss, "loss", op);
  check_same_device(S, "similarities", ei, "entries", op);
  check_same_device(S, "similarities", ej, "entries", op);
  check_same_device(S, "similarities", ew, "entries", op);
  check_dtype(S, op, "similarities", {DType::kFloat32, DType::kFloat64});
  check_rank(S, op, "similarities", 2);
  const int64_t B = S.size(0);
  check_shape(S, op, "similarities", {B, B});
  check_contiguous(S, op, "similarities");
  if (B < 1) failf(op, ": the batch must hold at least one pair, got ", S.describe());
  if (p.k < 1) failf(op, ": k must be >= 1, got ", p.k);
  if (!std::isfinite(p.margin)) failf(op, ": margin must be finite, got ", p.margin);
  if (labels) {
    check_same_device(S, "similarities", *labels, "labels", op);
    check_dtype(*labels, op, "labels", {DType::kInt64});
    check_shape(*labels, op, "labels", {B});
    check_contiguous(*labels, op, "labels");
  }
  const int64_t E = vse_entries(B, p);
  check_dtype(loss, op, "loss", {S.dtype});
  check_contiguous(loss, op, "loss");
  if (loss.numel() != 1) failf(op, ": loss must hold one element, got ", loss.describe());
  check_dtype(ei, op, "entries", {DType::kInt64});
  check_dtype(ej, op, "entries", {DType::kInt64});
  check_dtype(ew, op, "entries", {S.dtype});
  check_shape(ei, op, "entries", {E});
  check_shape(ej, op, "entries", {E});
  check_shape(ew, op, "entries", {E});
  check_contiguous(ei, op, "entries");
  check_contiguous(ej, op, "entries");
  check_contiguous(ew, op, "entries");
  const int64_t* lab = labels ? labels->ptr<const int64_t>() : nullptr;
  if (!on_cuda(S)) {
    if (S.dtype == DType::kFloat32)
      vse_forward_cpu<float>(S.ptr<const float>(), B, lab, p, loss.ptr<float>(), ei.ptr<int64_t>(), ej.ptr<int64_t>(),
                             ew.ptr<float>());
    else
      vse_forward_cpu<double>(S.ptr<const double>(), B, lab, p, loss.ptr<double>(), ei.ptr<int64_t>(),
                              ej.ptr<int64_t>(), ew.ptr<double>());
  } else {
#ifdef SEMVIS_WITH_CUDA
    vse_forward_cuda(S, lab, p, loss, ei.ptr<int64_t>(), ej.ptr<int64_t>(), ew, stream);
#else
    (void)stream;
#endif
  }
}

namespace {
DType acc_dtype(DType dt) { return dt == DType::kFloat64 ? DType::kFloat64 : DType::kFloat32; }

// anchors [na, d] and candidates [nb, d]: same floating dtype, contiguous, same d.
void check_anchors_candidates(const TensorView& A, const TensorView& Bt, const char* op) {
  check_dtype(A, op, "anchors", {DType::kFloat32, DType::kFloat16, DType::kBFloat16, DType::kFloat64});
  check_dtype(Bt, op, "candidates", {A.dtype});
  check_rank(A, op, "anchors", 2);
  check_rank(Bt, op, "candidates", 2);
  check_contiguous(A, op, "anchors");
  check_contiguous(Bt, op, "candidates");
  if (Bt.size(1) != A.size(1))
    failf(op, ": anchors and candidates must have the same dimension, got ", A.describe(), " and ", Bt.describe());
}
}  // namespace

void triplet_forward(const TensorView& A, const TensorView& Bt, const TensorView& trip, const TripletParams& p,
                     const TensorView& loss, const TensorView& ei, const TensorView& ej, const TensorView& ew,
                     std::uintptr_t stream) {
  constexpr const char* op = "triplet_margin_loss";
  check_device_supported(A, op, "anchors");
  check_same_device(A, "anchors", Bt, "candidates", op);
  check_same_device(A, "anchors", trip, "triplets", op);
  check_same_device(A, "anchors", loss, "loss", op);
  check_same_device(A, "anchors", ew, "entries", op);
  check_anchors_candidates(A, Bt, op);
  check_dtype(trip, op, "triplets", {DType::kInt64});
  check_shape(trip, op, "triplets", {-1, 3});
  check_contiguous(trip, op, "triplets");
  if (!std::isfinite(p.margin)) failf(op, ": margin must be finite, got ", p.margin);
  const int64_t T = trip.size(0);
  const DType acc = acc_dtype(A.dtype);
  check_dtype(loss, op, "loss", {acc});
  if (loss.numel() != 1) failf(op, ": loss must hold one element, got ", loss.describe());
  check_dtype(ei, op, "entries", {DType::kInt64});
  check_dtype(ej, op, "entries", {DType::kInt64});
  check_dtype(ew, op, "entries", {acc});
  check_shape(ei, op, "entries", {2 * T});
  check_shape(ej, op, "entries", {2 * T});
  check_shape(ew, op, "entries", {2 * T});
  const int64_t* tp = trip.ptr<const int64_t>();
  if (!on_cuda(A)) {
    const int64_t na = A.size(0), nb = Bt.size(0);
    for (int64_t t = 0; t < T; ++t) {
      if (tp[3 * t] < 0 || tp[3 * t] >= na) failf(op, ": triplets[", t, ", 0] = ", tp[3 * t], " outside [0, ", na, ")");
      for (int c = 1; c < 3; ++c)
        if (tp[3 * t + c] < 0 || tp[3 * t + c] >= nb)
          failf(op, ": triplets[", t, ", ", c, "] = ", tp[3 * t + c], " outside [0, ", nb, ")");
    }
    triplet_forward_cpu(A, Bt, tp, T, p, loss.data, ei.ptr<int64_t>(), ej.ptr<int64_t>(), ew.data);
  } else {
#ifdef SEMVIS_WITH_CUDA
    // Indices are checked by the Python layer (a device sync); the kernel skips out-of-range rows.
    triplet_forward_cuda(A, Bt, tp, T, p, loss, ei.ptr<int64_t>(), ej.ptr<int64_t>(), ew, stream);
#else
    (void)stream;
#endif
  }
}

void pair_backward(const TensorView& g, const TensorView& A, const TensorView& Bt, const TensorView& ei,
                   const TensorView& ej, const TensorView& ew, const TensorView& gA, const TensorView& gB,
                   std::uintptr_t stream) {
  constexpr const char* op = "pair_backward";
  check_device_supported(A, op, "anchors");
  check_same_device(A, "anchors", Bt, "candidates", op);
  check_same_device(A, "anchors", g, "grad_output", op);
  check_same_device(A, "anchors", ei, "entries", op);
  check_same_device(A, "anchors", gA, "grad_anchors", op);
  check_same_device(A, "anchors", gB, "grad_candidates", op);
  check_anchors_candidates(A, Bt, op);
  const DType acc = acc_dtype(A.dtype);
  check_dtype(g, op, "grad_output", {acc});
  if (g.numel() != 1) failf(op, ": grad_output must hold one element, got ", g.describe());
  check_dtype(ei, op, "entries", {DType::kInt64});
  check_dtype(ej, op, "entries", {DType::kInt64});
  check_dtype(ew, op, "entries", {acc});
  check_rank(ei, op, "entries", 1);
  const int64_t E = ei.size(0);
  check_shape(ej, op, "entries", {E});
  check_shape(ew, op, "entries", {E});
  check_contiguous(ei, op, "entries");
  check_contiguous(ej, op, "entries");
  check_contiguous(ew, op, "entries");
  check_dtype(gA, op, "grad_anchors", {acc});
  check_dtype(gB, op, "grad_candidates", {acc});
  check_shape(gA, op, "grad_anchors", {A.size(0), A.size(1)});
  check_shape(gB, op, "grad_candidates", {Bt.size(0), Bt.size(1)});
  check_contiguous(gA, op, "grad_anchors");
  check_contiguous(gB, op, "grad_candidates");
  if (!on_cuda(A)) {
    const int64_t* pi = ei.ptr<const int64_t>();
    const int64_t* pj = ej.ptr<const int64_t>();
    for (int64_t e = 0; e < E; ++e)
      if (pi[e] < 0 || pi[e] >= A.size(0) || pj[e] < 0 || pj[e] >= Bt.size(0))
        failf(op, ": entry ", e, " = (", pi[e], ", ", pj[e], ") lies outside ", A.size(0), " x ", Bt.size(0));
    pair_backward_cpu(g, A, Bt, pi, pj, ew, gA, gB);
  } else {
#ifdef SEMVIS_WITH_CUDA
    pair_backward_cuda(g, A, Bt, ei.ptr<const int64_t>(), ej.ptr<const int64_t>(), ew, gA, gB, stream);
#else
    (void)stream;
#endif
  }
}

}  // namespace triplet_losses
}  // namespace semvis
