// R-MAC region grid (Tolias et al. 2016, as computed by cirtorch) and fused region pooling:
//
//   y[b, r, c] = max over box r of image b of x[b, c]                         (MAC, p absent)
//   y[b, r, c] = ( mean over box r of max(x[b, c], eps)^p )^(1/p)             (GeM, p a scalar)
//
// Boxes are (y, x, height, width) in feature-map cells. They come either from the grid of each
// image's valid size (computed on the fly, on the host or in the CUDA kernel) or from explicit
// per-image boxes [B, R, 4] with a count per image. Slots r >= count(b) are written as 0.
// Max ties go to the lowest row-major position; NaN ranks above +inf (it is selected and
// propagates). The backward pass recomputes the arg-max from x (no index tensor is kept) and
// routes the gradient there; GeM's gradient is analytic, including d/dp.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/numeric.h"
#include "common/tensor.h"

namespace semvis {
namespace region_pool {

struct Box {
  int32_t y, x, h, w;
};

// ---------------------------------------------------------------------------------------------
// The grid. cirtorch/layers/functional.py (`rmac`, `roipool`) computes it with float32 torch
// tensors; every line below reproduces one torch expression of that code, in float32, so that
// the regions agree cell for cell (tests/test_region_pool.py checks it against that torch code).
// ---------------------------------------------------------------------------------------------

// Number of extra regions along the long side ("region overplus"): Wd for H < W, Hd for H > W.
SEMVIS_HD int grid_overplus(int64_t H, int64_t W) {
  if (H == W) return 0;
  const int64_t w = H < W ? H : W;
  const int64_t d = (H < W ? W : H) - w;
  const float ww = static_cast<float>(w * w);
  float best = 0.f;
  int idx = 0;
  for (int s = 2; s <= 7; ++s) {
    // b = (max - w) / (steps - 1): torch's int / tensor is tensor.reciprocal() * int
    const float b = (1.0f / static_cast<float>(s - 1)) * static_cast<float>(d);
    const float wb = static_cast<float>(w) * b;
    const float v = fabsf((ww - wb) / ww - 0.4f);
    if (s == 2 || v < best) {  // torch.min: the first of equal minima
      best = v;
      idx = s - 2;
    }
  }
  return idx + 1;
}

// Side of the square regions of level l (wl = floor(2 w / (l + 1)); 0 means "no region").
SEMVIS_HD int64_t grid_side(int64_t H, int64_t W, int64_t l) {
  const int64_t w = H < W ? H : W;
  return (2 * w) / (l + 1);
}

// Levels past 2 * min(H, W) - 1 have side 0 and add no region: loops stop there, so any L
// (up to INT64_MAX) costs O(min(H, W)).
SEMVIS_HD int64_t grid_last_level(int64_t H, int64_t W, int64_t L) {
  const int64_t m2 = 2 * (H < W ? H : W);
  return L < m2 ? L : m2;
}

// Regions of level l along one axis of length `len`, with `extra` = overplus on that axis.
SEMVIS_HD int64_t grid_positions(int64_t l, int extra) { return l + extra; }

// Offset of the i-th region of level l on an axis of length `len` (cirtorch: cenW / cenH).
SEMVIS_HD int64_t grid_offset(int64_t len, int64_t wl, int64_t n, int64_t i) {
  // wl2 = floor(wl / 2 - 1) in Python (wl >= 1 here)
  const int64_t wl2 = (wl - 2) >= 0 ? (wl - 2) / 2 : -((3 - wl) / 2);
  // b = (len - wl) / (n - 1) in double, then torch multiplies a float32 tensor by it (float32)
  const double bd = n == 1 ? 0.0 : static_cast<double>(len - wl) / static_cast<double>(n - 1);
  const float prod = static_cast<float>(i) * static_cast<float>(bd);
  const float c = floorf(static_cast<float>(wl2) + prod);
  return static_cast<int64_t>(c) - wl2;
}

// Regions of the grid of an H x W map with L levels (+1 for the full map when include_global).
SEMVIS_HD int64_t grid_count(int64_t H, int64_t W, int64_t L, bool include_global) {
  const int over = grid_overplus(H, W);
  const int Wd = H < W ? over : 0, Hd = H > W ? over : 0;
  int64_t n = include_global ? 1 : 0;
  for (int64_t l = 1, last = grid_last_level(H, W, L); l <= last; ++l) {
    if (grid_side(H, W, l) == 0) continue;
    n += grid_positions(l, Hd) * grid_positions(l, Wd);
  }
  return n;
}

// Region r (0 <= r < grid_count) of the grid: the full map first, then levels 1..L, each in
// row-major order (H outer, W inner).
SEMVIS_HD Box grid_box(int64_t H, int64_t W, int64_t L, bool include_global, int64_t r) {
  if (include_global) {
    if (r == 0) return Box{0, 0, static_cast<int32_t>(H), static_cast<int32_t>(W)};
    --r;
  }
  const int over = grid_overplus(H, W);
  const int Wd = H < W ? over : 0, Hd = H > W ? over : 0;
  for (int64_t l = 1, last = grid_last_level(H, W, L); l <= last; ++l) {
    const int64_t wl = grid_side(H, W, l);
    if (wl == 0) continue;
    const int64_t nh = grid_positions(l, Hd), nw = grid_positions(l, Wd);
    if (r < nh * nw) {
      const int64_t i = r / nw, j = r % nw;
      return Box{static_cast<int32_t>(grid_offset(H, wl, nh, i)), static_cast<int32_t>(grid_offset(W, wl, nw, j)),
                 static_cast<int32_t>(wl), static_cast<int32_t>(wl)};
    }
    r -= nh * nw;
  }
  return Box{0, 0, 0, 0};  // unreachable for valid r
}

// Largest grid_count over every valid size h <= H, w <= W (the region dimension of a padded batch).
int64_t grid_max_count(int64_t H, int64_t W, int64_t L, bool include_global);

struct Params {
  int64_t levels = 3;
  bool include_global = true;
  bool gem = false;   // GeM with the exponent read from p (a 1-element tensor on x's device)
  double eps = 1e-6;  // GeM clamp
};

// Sources of the regions. Exactly one of the two modes:
//  grid:  boxes == null; valid_hw (optional, [B, 2] int64) restricts each image to its top-left
//         h x w window and the grid is that of (h, w).
//  boxes: [B, R, 4] int64 (y, x, h, w) and counts [B] int64 (boxes r >= counts[b] are ignored);
//         each box must lie inside the image's valid window (or the map).
// Every tensor argument comes as a host copy (validation, CPU kernel) and a copy on x's device.
struct Regions {
  const TensorView* boxes_host = nullptr;
  const TensorView* boxes_dev = nullptr;
  const TensorView* counts_host = nullptr;
  const TensorView* counts_dev = nullptr;
  const TensorView* vhw_host = nullptr;
  const TensorView* vhw_dev = nullptr;
};

// Host entry points: validate, then run on the device of x.
//   x       [B, C, H, W] float32/float16/bfloat16/float64, any strides
//   p       1 element, float32 (float64 for float64 x), on x's device; required iff params.gem
//   y       [B, R, C] dtype of x, contiguous (written; R = boxes' R, or grid_count / grid_max_count)
//   counts  [B] int64 on the cpu, contiguous (written: regions of each image)
void forward(const TensorView& x, const Regions& reg, const Params& prm, const TensorView* p, const TensorView& y,
             const TensorView& counts, std::uintptr_t stream);

//   gy [B, R, C] contiguous; gx [B, C, H, W] contiguous (fully written);
//   gp [B * C] accumulator dtype (GeM only: per-row contributions to d loss / d p, summed by the caller)
void backward(const TensorView& gy, const TensorView& x, const Regions& reg, const Params& prm, const TensorView* p,
              const TensorView& gx, const TensorView* gp, std::uintptr_t stream);

// Backends (arguments validated). The CPU gets every image's boxes flattened: boxes[off[b]..off[b+1]).
void forward_cpu(const TensorView& x, const Box* boxes, const int64_t* off, const Params& prm, const TensorView* p,
                 const TensorView& y);
void backward_cpu(const TensorView& gy, const TensorView& x, const Box* boxes, const int64_t* off, const Params& prm,
                  const TensorView* p, const TensorView& gx, const TensorView* gp);
#ifdef SEMVIS_WITH_CUDA
// Device-side region description: grid mode (boxes == null, vhw optional) or explicit boxes.
struct DevRegions {
  const int64_t* boxes = nullptr;   // [B, R, 4]
  const int64_t* counts = nullptr;  // [B]
  const int64_t* vhw = nullptr;     // [B, 2]
};
void forward_cuda(const TensorView& x, const DevRegions& reg, const Params& prm, const TensorView* p,
                  const TensorView& y, std::uintptr_t stream);
void backward_cuda(const TensorView& gy, const TensorView& x, const DevRegions& reg, const Params& prm,
                   const TensorView* p, const TensorView& gx, const TensorView* gp, std::uintptr_t stream);
#endif

}  // namespace region_pool
}  // namespace semvis
