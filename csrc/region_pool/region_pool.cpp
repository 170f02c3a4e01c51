// Host entry points of the region pooling: argument checks in a fixed order, then dispatch.
#include "region_pool.h"

#include <algorithm>
#include <vector>

namespace semvis {
namespace region_pool {
namespace {

constexpr const char* kOp = "region_pool";

int64_t grid_max_count_impl(int64_t H, int64_t W, int64_t L, bool g) {
  int64_t best = 0;
  for (int64_t h = 1; h <= H; ++h)
    for (int64_t w = 1; w <= W; ++w) best = std::max(best, grid_count(h, w, L, g));
  return best;
}

void check_params(const Params& prm) {
  if (prm.levels < 1) failf(kOp, ": levels must be >= 1, got ", prm.levels);
  if (prm.gem && !(prm.eps > 0 && std::isfinite(prm.eps))) failf(kOp, ": eps must be a finite number > 0, got ", prm.eps);
}

void check_index_pair(const TensorView* host, const TensorView* dev, const TensorView& x, const char* name,
                      std::initializer_list<int64_t> shape) {
  check_device_supported(*host, kOp, name);
  if (host->device != Device::kCPU) failf(kOp, ": the host copy of ", name, " must be on cpu");
  check_dtype(*host, kOp, name, {DType::kInt64});
  check_shape(*host, kOp, name, shape);
  if (host->numel() > 0) check_contiguous(*host, kOp, name);  // empty tensors may carry any strides
  if (!dev) failf(kOp, ": ", name, " has no copy on the device of the input");
  check_same_device(x, "input", *dev, name, kOp);
  check_dtype(*dev, kOp, name, {DType::kInt64});
  check_shape(*dev, kOp, name, shape);
  if (dev->numel() > 0) check_contiguous(*dev, kOp, name);
}

// Validates the region sources and returns every image's boxes flattened (host side) with offsets.
// R is the region dimension of the output.
int64_t resolve_regions(const TensorView& x, const Regions& reg, const Params& prm, std::vector<Box>& boxes,
                        std::vector<int64_t>& off) {
  const int64_t B = x.size(0), H = x.size(2), W = x.size(3);
  const int64_t* vhw = nullptr;
  if (reg.vhw_host) {
    check_index_pair(reg.vhw_host, reg.vhw_dev, x, "valid_hw", {B, 2});
    vhw = reg.vhw_host->ptr<int64_t>();
    for (int64_t b = 0; b < B; ++b) {
      const int64_t h = vhw[2 * b], w = vhw[2 * b + 1];
      if (h < 1 || h > H || w < 1 || w > W)
        failf(kOp, ": valid_hw[", b, "] = (", h, ", ", w, ") must lie in [1, ", H, "] x [1, ", W, "]");
    }
  }
  off.assign(B + 1, 0);
  boxes.clear();
  if (!reg.boxes_host) {
    const int64_t R = vhw ? grid_max_count_impl(H, W, prm.levels, prm.include_global)
                          : grid_count(H, W, prm.levels, prm.include_global);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t h = vhw ? vhw[2 * b] : H, w = vhw ? vhw[2 * b + 1] : W;
      const int64_t n = grid_count(h, w, prm.levels, prm.include_global);
      for (int64_t r = 0; r < n; ++r) boxes.push_back(grid_box(h, w, prm.levels, prm.include_global, r));
      off[b + 1] = off[b] + n;
    }
    return R;
  }
  check_rank(*reg.boxes_host, kOp, "regions", 3);
  const int64_t R = reg.boxes_host->size(1);
  check_index_pair(reg.boxes_host, reg.boxes_dev, x, "regions", {B, R, 4});
  if (!reg.counts_host) failf(kOp, ": regions need their per-image counts");
  check_index_pair(reg.counts_host, reg.counts_dev, x, "region counts", {B});
  const int64_t* bx = reg.boxes_host->ptr<int64_t>();
  const int64_t* cn = reg.counts_host->ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    if (cn[b] < 0 || cn[b] > R) failf(kOp, ": image ", b, " has ", cn[b], " regions, expected 0..", R);
    const int64_t h = vhw ? vhw[2 * b] : H, w = vhw ? vhw[2 * b + 1] : W;
    for (int64_t r = 0; r < cn[b]; ++r) {
      const int64_t* q = bx + (b * R + r) * 4;
      if (q[2] < 1 || q[3] < 1)
        failf(kOp, ": regions[", b, "][", r, "] = (", q[0], ", ", q[1], ", ", q[2], ", ", q[3],
              ") is empty; (y, x, height, width) needs height >= 1 and width >= 1");
      // written as !(in range) on each term so that huge values cannot overflow into range
      if (q[0] < 0 || q[1] < 0 || q[0] > h || q[1] > w || q[2] > h - q[0] || q[3] > w - q[1])
        failf(kOp, ": regions[", b, "][", r, "] = (", q[0], ", ", q[1], ", ", q[2], ", ", q[3],
              ") is out of bounds of the ", h, " x ", w, vhw ? " valid window of the image" : " map");
      boxes.push_back(Box{static_cast<int32_t>(q[0]), static_cast<int32_t>(q[1]), static_cast<int32_t>(q[2]),
                          static_cast<int32_t>(q[3])});
    }
    off[b + 1] = off[b] + cn[b];
  }
  return R;
}

void check_input(const TensorView& x, const char* name) {
  check_device_supported(x, kOp, name);
  check_dtype(x, kOp, name, {DType::kFloat32, DType::kFloat16, DType::kBFloat16, DType::kFloat64});
  check_rank(x, kOp, name, 4);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  if (B == 0 || C == 0) failf(kOp, ": ", name, " must have a non-empty batch and channel dimension, got ", x.describe());
  if (H == 0 || W == 0) failf(kOp, ": ", name, " must have a non-empty spatial map, got ", x.describe());
  if (H > (1 << 30) / W) failf(kOp, ": ", name, " has a map larger than 2^30 cells: ", x.describe());
}

void check_p(const TensorView& x, const Params& prm, const TensorView* p) {
  if (!prm.gem) {
    if (p) failf(kOp, ": p given without GeM");
    return;
  }
  if (!p) failf(kOp, ": GeM needs p");
  check_same_device(x, "input", *p, "p", kOp);
  check_dtype(*p, kOp, "p", {x.dtype == DType::kFloat64 ? DType::kFloat64 : DType::kFloat32});
  if (p->numel() != 1) failf(kOp, ": p must have one element, got ", p->describe());
}

// What forward and backward both check first (input, parameters, p); returns R and fills the
// regions of every image.
int64_t checked_regions(const TensorView& x, const Regions& reg, const Params& prm, const TensorView* p,
                        std::vector<Box>& boxes, std::vector<int64_t>& off) {
  check_input(x, "input");
  check_params(prm);
  check_p(x, prm, p);
  return resolve_regions(x, reg, prm, boxes, off);
}

}  // namespace

int64_t grid_max_count(int64_t H, int64_t W, int64_t L, bool include_global) {
  if (H < 1 || W < 1) failf("rmac_regions: the map size must be >= 1, got ", H, " x ", W);
  if (L < 1) failf("rmac_regions: levels must be >= 1, got ", L);
  return grid_max_count_impl(H, W, L, include_global);
}

void forward(const TensorView& x, const Regions& reg, const Params& prm, const TensorView* p, const TensorView& y,
             const TensorView& counts, std::uintptr_t stream) {
  std::vector<Box> boxes;
  std::vector<int64_t> off;
  const int64_t R = checked_regions(x, reg, prm, p, boxes, off);
  const int64_t B = x.size(0), C = x.size(1);
  check_same_device(x, "input", y, "output", kOp);
  check_dtype(y, kOp, "output", {x.dtype});
  check_shape(y, kOp, "output", {B, R, C});
  if (R > 0) check_contiguous(y, kOp, "output");
  check_writable(y, kOp, "output");
  if (counts.device != Device::kCPU) failf(kOp, ": counts must be on cpu");
  check_output(counts, kOp, "counts", DType::kInt64, {B});
  for (int64_t b = 0; b < B; ++b) counts.ptr<int64_t>()[b] = off[b + 1] - off[b];
  if (R == 0) return;
  if (x.device == Device::kCPU) {
    forward_cpu(x, boxes.data(), off.data(), prm, p, y);
  } else {
#ifdef SEMVIS_WITH_CUDA
    DevRegions d;
    if (reg.boxes_dev) d.boxes = reg.boxes_dev->ptr<int64_t>();
    if (reg.counts_dev) d.counts = reg.counts_dev->ptr<int64_t>();
    if (reg.vhw_dev) d.vhw = reg.vhw_dev->ptr<int64_t>();
    forward_cuda(x, d, prm, p, y, stream);
#else
    (void)stream;
#endif
  }
}

void backward(const TensorView& gy, const TensorView& x, const Regions& reg, const Params& prm, const TensorView* p,
              const TensorView& gx, const TensorView* gp, std::uintptr_t stream) {
  std::vector<Box> boxes;
  std::vector<int64_t> off;
  const int64_t R = checked_regions(x, reg, prm, p, boxes, off);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  check_same_device(x, "input", gy, "grad_output", kOp);
  check_dtype(gy, kOp, "grad_output", {x.dtype});
  check_shape(gy, kOp, "grad_output", {B, R, C});
  if (R > 0) check_contiguous(gy, kOp, "grad_output");
  check_same_device(x, "input", gx, "grad_input", kOp);
  check_output(gx, kOp, "grad_input", x.dtype, {B, C, H, W});
  if (prm.gem) {
    if (!gp) failf(kOp, ": GeM backward needs the grad_p buffer");
    check_same_device(x, "input", *gp, "grad_p", kOp);
    check_dtype(*gp, kOp, "grad_p", {x.dtype == DType::kFloat64 ? DType::kFloat64 : DType::kFloat32});
    check_shape(*gp, kOp, "grad_p", {B * C});
    check_contiguous(*gp, kOp, "grad_p");
    check_writable(*gp, kOp, "grad_p");
  }
  if (x.device == Device::kCPU) {
    backward_cpu(gy, x, boxes.data(), off.data(), prm, p, gx, prm.gem ? gp : nullptr);
  } else {
#ifdef SEMVIS_WITH_CUDA
    DevRegions d;
    if (reg.boxes_dev) d.boxes = reg.boxes_dev->ptr<int64_t>();
    if (reg.counts_dev) d.counts = reg.counts_dev->ptr<int64_t>();
    if (reg.vhw_dev) d.vhw = reg.vhw_dev->ptr<int64_t>();
    backward_cuda(gy, x, d, prm, p, gx, prm.gem ? gp : nullptr, stream);
#else
    (void)stream;
#endif
  }
}

}  // namespace region_pool
}  // namespace semvis
