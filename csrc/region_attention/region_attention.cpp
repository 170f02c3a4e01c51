// Host entry points of region_attention: argument checks in a fixed order, then dispatch by device.
#include "region_attention.h"

namespace semvis {
namespace region_attention {
namespace {

constexpr const char* kOp = "region_attention";

void check_mode(int mode) {
  if (mode < kSoftmax || mode > kNoSoftmax) failf(kOp, ": unknown mode ", mode);
}

DType stats_dtype(DType g) { return g == DType::kFloat64 ? DType::kFloat64 : DType::kFloat32; }

// G, L and the lengths; returns the resolved shape and the host lengths pointer (or null).
Shape check_inputs(const TensorView& G, const TensorView* L, const TensorView* len_host, const TensorView* len_dev,
                   int mode, const char* gname, const int64_t** len_out) {
  check_mode(mode);
  check_device_supported(G, kOp, gname);
  check_dtype(G, kOp, gname, {DType::kFloat32, DType::kFloat16, DType::kBFloat16, DType::kFloat64});
  check_rank(G, kOp, gname, 3);
  check_contiguous(G, kOp, gname);
  Shape sh;
  sh.B = G.size(0);
  sh.R = G.size(1);
  sh.d = G.size(2);
  if (sh.R == 0) failf(kOp, ": ", gname, " must have at least one region, got ", G.describe());
  sh.K = mode == kOneAtt ? 1 : (mode == kMean ? 0 : sh.d);
  if (has_logits(mode)) {
    if (!L) failf(kOp, ": this mode needs logits");
    check_same_device(G, gname, *L, "logits", kOp);
    check_dtype(*L, kOp, "logits", {G.dtype});
    check_shape(*L, kOp, "logits", {sh.B, sh.R, sh.K});
    check_contiguous(*L, kOp, "logits");
  } else if (L) {
    failf(kOp, ": this mode takes no logits");
  }
  *len_out = nullptr;
  if (len_host) {
    check_device_supported(*len_host, kOp, "lengths");
    if (len_host->device != Device::kCPU) failf(kOp, ": the host copy of lengths must be on cpu");
    check_dtype(*len_host, kOp, "lengths", {DType::kInt64});
    check_shape(*len_host, kOp, "lengths", {sh.B});
    check_contiguous(*len_host, kOp, "lengths");
    if (!len_dev) failf(kOp, ": lengths has no copy on the device of ", gname);
    check_same_device(G, gname, *len_dev, "lengths", kOp);
    check_dtype(*len_dev, kOp, "lengths", {DType::kInt64});
    check_shape(*len_dev, kOp, "lengths", {sh.B});
    check_contiguous(*len_dev, kOp, "lengths");
    const int64_t* v = len_host->ptr<int64_t>();
    for (int64_t b = 0; b < sh.B; ++b) {
      if (v[b] == 0) failf(kOp, ": lengths[", b, "] = 0: image ", b, " has no valid region (all masked)");
      if (v[b] < 0 || v[b] > sh.R) failf(kOp, ": lengths[", b, "] = ", v[b], " must lie in [1, ", sh.R, "]");
    }
    *len_out = v;
  }
  return sh;
}

void check_stats(const TensorView& G, const Shape& sh, int mode, const TensorView& m, const TensorView& s,
                 bool output) {
  const int64_t k = has_stats(mode) ? sh.K : 0;
  const DType dt = stats_dtype(G.dtype);
  check_same_device(G, "G", m, "stats_max", kOp);
  check_same_device(G, "G", s, "stats_sum", kOp);
  if (output) {
    check_output(m, kOp, "stats_max", dt, {sh.B, k});
    check_output(s, kOp, "stats_sum", dt, {sh.B, k});
  } else {
    check_dtype(m, kOp, "stats_max", {dt});
    check_shape(m, kOp, "stats_max", {sh.B, k});
    check_contiguous(m, kOp, "stats_max");
    check_dtype(s, kOp, "stats_sum", {dt});
    check_shape(s, kOp, "stats_sum", {sh.B, k});
    check_contiguous(s, kOp, "stats_sum");
  }
}

}  // namespace

void forward(const TensorView& G, const TensorView* L, const TensorView* len_host, const TensorView* len_dev, int mode,
             const TensorView& x, const TensorView& m, const TensorView& s, std::uintptr_t stream) {
  const int64_t* len = nullptr;
  const Shape sh = check_inputs(G, L, len_host, len_dev, mode, "G", &len);
  check_same_device(G, "G", x, "output", kOp);
  check_output(x, kOp, "output", G.dtype, {sh.B, sh.d});
  check_stats(G, sh, mode, m, s, true);
  if (sh.B == 0 || sh.d == 0) return;
  if (G.device == Device::kCPU) {
    forward_cpu(G, L, len, mode, sh, x, m, s);
  } else {
#ifdef SEMVIS_WITH_CUDA
    forward_cuda(G, L, len ? len_dev->ptr<int64_t>() : nullptr, mode, sh, x, m, s, stream);
#else
    (void)stream;
#endif
  }
}

void backward(const TensorView& gx, const TensorView& G, const TensorView* L, const TensorView* len_host,
              const TensorView* len_dev, int mode, const TensorView& m, const TensorView& s, const TensorView& gG,
              const TensorView* gL, std::uintptr_t stream) {
  const int64_t* len = nullptr;
  const Shape sh = check_inputs(G, L, len_host, len_dev, mode, "G", &len);
  check_same_device(G, "G", gx, "grad_output", kOp);
  check_dtype(gx, kOp, "grad_output", {G.dtype});
  check_shape(gx, kOp, "grad_output", {sh.B, sh.d});
  check_contiguous(gx, kOp, "grad_output");
  check_stats(G, sh, mode, m, s, false);
  check_same_device(G, "G", gG, "grad_G", kOp);
  check_output(gG, kOp, "grad_G", G.dtype, {sh.B, sh.R, sh.d});
  if (has_logits(mode)) {
    if (!gL) failf(kOp, ": grad_logits is required in this mode");
    check_same_device(G, "G", *gL, "grad_logits", kOp);
    check_output(*gL, kOp, "grad_logits", G.dtype, {sh.B, sh.R, sh.K});
  } else {
    gL = nullptr;
  }
  if (sh.B == 0) return;
  if (G.device == Device::kCPU) {
    backward_cpu(gx, G, L, len, mode, sh, m, s, gG, gL);
  } else {
#ifdef SEMVIS_WITH_CUDA
    backward_cuda(gx, G, L, len ? len_dev->ptr<int64_t>() : nullptr, mode, sh, m, s, gG, gL, stream);
#else
    (void)stream;
#endif
  }
}

}  // namespace region_attention
}  // namespace semvis
