// Host entry points of WELDON: argument checks in a fixed order, then dispatch by device.
#include "weldon.h"

#include <atomic>
#include <cmath>

#include "common/parallel.h"

namespace semvis {
namespace weldon {
namespace {

constexpr const char* kOp = "weldon_pool";

void check_params(const Params& p) {
  if (p.kmax_frac < 0 && p.kmax_count < 0) failf(kOp, ": kmax must be >= 0, got ", p.kmax_count);
  if (p.kmin_frac < 0 && p.kmin_count < 0) failf(kOp, ": kmin must be >= 0, got ", p.kmin_count);
  if (p.kmax_frac >= 0 && !(p.kmax_frac > 0 && p.kmax_frac <= 1))
    failf(kOp, ": a fractional kmax must lie in (0, 1], got ", p.kmax_frac);
  if (p.kmin_frac >= 0 && !(p.kmin_frac > 0 && p.kmin_frac <= 1))
    failf(kOp, ": a fractional kmin must lie in (0, 1], got ", p.kmin_frac);
  if (!std::isfinite(p.alpha)) failf(kOp, ": alpha must be finite, got ", p.alpha);
  if (p.kmax_frac < 0 && p.kmin_frac < 0 && p.kmax_count == 0 && p.kmin_count == 0)
    failf(kOp, ": kmax and kmin cannot both be 0");
}

void check_k_fits(const Params& p, int64_t n, const char* where) {
  if (p.wildcat) return;  // clamped
  if (p.kmax_frac < 0 && p.kmax_count > n)
    failf(kOp, ": kmax=", p.kmax_count, " is larger than the ", where, " (", n, " positions)");
  if (p.kmin_frac < 0 && p.kmin_count > n)
    failf(kOp, ": kmin=", p.kmin_count, " is larger than the ", where, " (", n, " positions)");
}

// Validates valid_hw and returns its host pointer (or null).
const int64_t* check_valid_hw(const TensorView* vhw_host, const TensorView* vhw_dev, const TensorView& x_like,
                              int64_t B, int64_t H, int64_t W, const Params& p) {
  if (!vhw_host) return nullptr;
  check_device_supported(*vhw_host, kOp, "valid_hw");
  if (vhw_host->device != Device::kCPU) failf(kOp, ": the host copy of valid_hw must be on cpu");
  check_dtype(*vhw_host, kOp, "valid_hw", {DType::kInt64});
  check_shape(*vhw_host, kOp, "valid_hw", {B, 2});
  check_contiguous(*vhw_host, kOp, "valid_hw");
  if (!vhw_dev) failf(kOp, ": valid_hw has no copy on the device of the input");
  check_same_device(x_like, "input", *vhw_dev, "valid_hw", kOp);
  check_shape(*vhw_dev, kOp, "valid_hw", {B, 2});
  check_dtype(*vhw_dev, kOp, "valid_hw", {DType::kInt64});
  check_contiguous(*vhw_dev, kOp, "valid_hw");
  const int64_t* v = vhw_host->ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    const int64_t h = v[2 * b], w = v[2 * b + 1];
    if (h < 1 || h > H || w < 1 || w > W)
      failf(kOp, ": valid_hw[", b, "] = (", h, ", ", w, ") must lie in [1, ", H, "] x [1, ", W, "]");
    check_k_fits(p, h * w, "valid map of an image");
  }
  return v;
}

// Every backend needs the positions in range: refuses the lowest flat position holding one outside
// [-1, HW) (-1 pads unused slots). The GPU check is one pass and a stream synchronization.
void check_indices(const TensorView& idx, int64_t HW, std::uintptr_t stream) {
  const int64_t n = idx.numel();
  if (n == 0) return;
  int64_t bad = -1, value = 0;
  if (idx.device == Device::kCPU) {
    const int32_t* I = idx.ptr<const int32_t>();
    std::atomic<int64_t> first{n};
    parallel_for(0, n, 1 << 16, [&](int64_t lo, int64_t hi) {
      for (int64_t j = lo; j < hi && j < first.load(std::memory_order_relaxed); ++j) {
        if (I[j] < -1 || I[j] >= HW) {
          int64_t cur = first.load();
          while (j < cur && !first.compare_exchange_weak(cur, j)) {
          }
          break;
        }
      }
    });
    if (first.load() < n) {
      bad = first.load();
      value = I[bad];
    }
  } else {
#ifdef SEMVIS_WITH_CUDA
    bad = first_bad_index_cuda(idx, HW, &value, stream);
#else
    (void)stream;
#endif
  }
  if (bad >= 0) {
    const int64_t K = idx.size(2), C = idx.size(1);
    failf(kOp, ": indices holds ", value, " at [", bad / (C * K), ", ", bad / K % C, ", ", bad % K,
          "], outside [-1, ", HW, ")");
  }
}

}  // namespace

void forward(const TensorView& x, const TensorView* vhw_host, const TensorView* vhw_dev, const Params& p,
             const TensorView& y, const TensorView& idx, std::uintptr_t stream) {
  check_device_supported(x, kOp, "input");
  check_dtype(x, kOp, "input", {DType::kFloat32, DType::kFloat16, DType::kBFloat16, DType::kFloat64});
  check_rank(x, kOp, "input", 4);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  if (B == 0 || C == 0) failf(kOp, ": input must have a non-empty batch and channel dimension, got ", x.describe());
  if (H == 0 || W == 0) failf(kOp, ": input must have a non-empty spatial map, got ", x.describe());
  check_params(p);
  check_k_fits(p, H * W, "feature map");
  const int64_t* vhw = check_valid_hw(vhw_host, vhw_dev, x, B, H, W, p);
  const int64_t KT = resolve_k(p.kmax_count, p.kmax_frac, H * W, p.wildcat);
  const int64_t KB = resolve_k(p.kmin_count, p.kmin_frac, H * W, p.wildcat);

  check_same_device(x, "input", y, "output", kOp);
  check_same_device(x, "input", idx, "indices", kOp);
  check_output(y, kOp, "output", x.dtype, {B, C});
  check_output(idx, kOp, "indices", DType::kInt32, {B, C, KT + KB});

  if (x.device == Device::kCPU) {
    forward_cpu(x, vhw, p, KT, KB, y, idx);
  } else {
#ifdef SEMVIS_WITH_CUDA
    forward_cuda(x, vhw ? vhw_dev->ptr<int64_t>() : nullptr, p, KT, KB, y, idx, stream);
#else
    (void)stream;
#endif
  }
}

void backward(const TensorView& gy, const TensorView& idx, const TensorView* vhw_host, const TensorView* vhw_dev,
              const Params& p, const TensorView& gx, std::uintptr_t stream) {
  check_device_supported(gy, kOp, "grad_output");
  check_dtype(gy, kOp, "grad_output", {DType::kFloat32, DType::kFloat16, DType::kBFloat16, DType::kFloat64});
  check_rank(gy, kOp, "grad_output", 2);
  check_rank(gx, kOp, "grad_input", 4);
  const int64_t B = gx.size(0), C = gx.size(1), H = gx.size(2), W = gx.size(3);
  check_params(p);
  check_k_fits(p, H * W, "feature map");
  const int64_t KT = resolve_k(p.kmax_count, p.kmax_frac, H * W, p.wildcat);
  const int64_t KB = resolve_k(p.kmin_count, p.kmin_frac, H * W, p.wildcat);
  check_shape(gy, kOp, "grad_output", {B, C});
  check_contiguous(gy, kOp, "grad_output");
  check_same_device(gy, "grad_output", idx, "indices", kOp);
  check_same_device(gy, "grad_output", gx, "grad_input", kOp);
  check_dtype(idx, kOp, "indices", {DType::kInt32});
  check_shape(idx, kOp, "indices", {B, C, KT + KB});
  check_contiguous(idx, kOp, "indices");
  check_dtype(gx, kOp, "grad_input", {gy.dtype});
  check_contiguous(gx, kOp, "grad_input");
  check_writable(gx, kOp, "grad_input");
  const int64_t* vhw = check_valid_hw(vhw_host, vhw_dev, gy, B, H, W, p);
  if (B == 0 || C == 0) return;
  check_indices(idx, H * W, stream);

  if (gy.device == Device::kCPU) {
    backward_cpu(gy, idx, vhw, p, KT, KB, gx);
  } else {
#ifdef SEMVIS_WITH_CUDA
    backward_cuda(gy, idx, vhw ? vhw_dev->ptr<int64_t>() : nullptr, p, KT, KB, gx, stream);
#else
    (void)stream;
#endif
  }
}

}  // namespace weldon
}  // namespace semvis
