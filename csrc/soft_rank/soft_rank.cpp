// Host entry points of soft_rank: argument checks in a fixed order, then dispatch by device.
#include "soft_rank.h"

#include <cmath>

#include "common/dispatch.h"

namespace semvis {
namespace soft_rank {
namespace {

constexpr const char* kOp = "soft_rank";

void check_params(const Params& p) {
  if (!(std::isfinite(p.lam) && p.lam > 0)) failf(kOp, ": lam must be a finite number > 0, got ", p.lam);
}

void check_scores(const TensorView& s, const char* name) {
  check_device_supported(s, kOp, name);
  check_dtype(s, kOp, name, {DType::kFloat32, DType::kFloat16, DType::kBFloat16, DType::kFloat64});
  check_rank(s, kOp, name, 2);
  check_contiguous(s, kOp, name);
  if (s.size(1) == 0) failf(kOp, ": ", name, " must have at least one score per row, got ", s.describe());
}

// Finite scores on the CPU (CUDA inputs are checked by the Python layer with one reduction).
void check_finite_cpu(const TensorView& s) {
  const int64_t N = s.numel();
  SEMVIS_DISPATCH_FLOAT(s.dtype, kOp, {
    const scalar_t* v = s.ptr<const scalar_t>();
    for (int64_t i = 0; i < N; ++i) {
      const double x = static_cast<double>(load_acc(v[i]));
      if (!std::isfinite(x)) failf(kOp, ": scores must be finite, got ", x, " at flat index ", i);
    }
  });
}

}  // namespace

void forward(const TensorView& s, const Params& p, const TensorView& rank, std::uintptr_t stream) {
  check_scores(s, "scores");
  check_params(p);
  check_same_device(s, "scores", rank, "output", kOp);
  check_output(rank, kOp, "output", s.dtype, {s.size(0), s.size(1)});
  if (s.size(0) == 0) return;
  if (s.device == Device::kCPU) {
    check_finite_cpu(s);
    forward_cpu(s, p, rank);
  } else {
#ifdef SEMVIS_WITH_CUDA
    forward_cuda(s, p, rank, stream);
#else
    (void)stream;
#endif
  }
}

void backward(const TensorView& g, const TensorView& s, const Params& p, const TensorView& gs, std::uintptr_t stream) {
  check_scores(s, "scores");
  check_params(p);
  check_same_device(s, "scores", g, "grad_output", kOp);
  check_dtype(g, kOp, "grad_output", {s.dtype});
  check_shape(g, kOp, "grad_output", {s.size(0), s.size(1)});
  check_contiguous(g, kOp, "grad_output");
  check_same_device(s, "scores", gs, "grad_scores", kOp);
  check_output(gs, kOp, "grad_scores", s.dtype, {s.size(0), s.size(1)});
  if (s.size(0) == 0) return;
  if (s.device == Device::kCPU) {
    backward_cpu(g, s, p, gs);
  } else {
#ifdef SEMVIS_WITH_CUDA
    backward_cuda(g, s, p, gs, stream);
#else
    (void)stream;
#endif
  }
}

}  // namespace soft_rank
}  // namespace semvis
