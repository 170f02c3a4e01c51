// Host entry points of the quantized AP: argument checks in a fixed order, then dispatch by device.
#include "quantized_ap.h"

#include <cmath>

namespace semvis {
namespace quantized_ap {
namespace {

constexpr const char* kOp = "quantized_ap";

void check_params(const Params& p) {
  if (p.bins < 2 || p.bins > kMaxBins) failf(kOp, ": bins must lie in [2, ", kMaxBins, "], got ", p.bins);
  if (!std::isfinite(p.lo) || !std::isfinite(p.hi) || !(p.lo < p.hi))
    failf(kOp, ": score_range must be finite with lo < hi, got (", p.lo, ", ", p.hi, ")");
}

DType acc_dtype(DType scores) { return scores == DType::kFloat64 ? DType::kFloat64 : DType::kFloat32; }

void check_inputs(const TensorView& scores, const TensorView& labels) {
  check_device_supported(scores, kOp, "scores");
  check_device_supported(labels, kOp, "labels");
  check_same_device(scores, "scores", labels, "labels", kOp);
  check_dtype(scores, kOp, "scores", {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kBFloat16});
  check_dtype(labels, kOp, "labels",
              {DType::kBool, DType::kUInt8, DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kBFloat16});
  check_rank(scores, kOp, "scores", 2);
  check_shape(labels, kOp, "labels", {scores.size(0), scores.size(1)});
  if (scores.size(0) == 0 || scores.size(1) == 0)
    failf(kOp, ": scores must have at least one query and one item, got ", scores.describe());
}

void check_out(const TensorView& t, const TensorView& like, const char* name, DType dt,
               std::initializer_list<int64_t> shape) {
  check_same_device(like, "scores", t, name, kOp);
  check_dtype(t, kOp, name, {dt});
  check_shape(t, kOp, name, shape);
  check_contiguous(t, kOp, name);
}

}  // namespace

void forward(const TensorView& scores, const TensorView& labels, const Params& p, const TensorView& ap,
             const TensorView& npos, const TensorView& hist, std::uintptr_t stream) {
  check_inputs(scores, labels);
  check_params(p);
  const int64_t Q = scores.size(0);
  const DType acc = acc_dtype(scores.dtype);
  check_out(ap, scores, "ap", acc, {Q});
  check_out(npos, scores, "npos", acc, {Q});
  check_out(hist, scores, "hist", acc, {Q, 2, p.bins});
  check_writable(ap, kOp, "ap");
  check_writable(npos, kOp, "npos");
  check_writable(hist, kOp, "hist");
  if (scores.device == Device::kCPU) {
    forward_cpu(scores, labels, p, ap, npos, hist);
  } else {
#ifdef SEMVIS_WITH_CUDA
    forward_cuda(scores, labels, p, ap, npos, hist, stream);
#else
    (void)stream;
#endif
  }
}

void backward(const TensorView& grad_ap, const TensorView& scores, const TensorView& labels, const TensorView& hist,
              const Params& p, const TensorView& grad_scores, std::uintptr_t stream) {
  check_inputs(scores, labels);
  check_params(p);
  const int64_t Q = scores.size(0), N = scores.size(1);
  const DType acc = acc_dtype(scores.dtype);
  check_device_supported(grad_ap, kOp, "grad_ap");
  check_out(grad_ap, scores, "grad_ap", acc, {Q});
  check_out(hist, scores, "hist", acc, {Q, 2, p.bins});
  check_out(grad_scores, scores, "grad_scores", scores.dtype, {Q, N});
  check_writable(grad_scores, kOp, "grad_scores");
  if (scores.device == Device::kCPU) {
    backward_cpu(grad_ap, scores, labels, hist, p, grad_scores);
  } else {
#ifdef SEMVIS_WITH_CUDA
    backward_cuda(grad_ap, scores, labels, hist, p, grad_scores, stream);
#else
    (void)stream;
#endif
  }
}

}  // namespace quantized_ap
}  // namespace semvis
