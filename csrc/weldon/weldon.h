// WELDON / WILDCAT max+min spatial pooling (Durand et al.; BEAN/DSVE-loc image head, Eq. 3.3).
//
//   y[b, c] = s * ( mean of the kt largest of x[b, c, :h_b, :w_b]
//                   + alpha * mean of the kb smallest of x[b, c, :h_b, :w_b] )
//
// with s = 1 (DSVE-loc form) or s = 1/2 (WILDCAT form, only when kb > 0 and alpha != 0).
// Ordering is that of torch.sort: NaN above +inf, -0.0 == +0.0, ties by the lowest row-major
// index. The selected positions are returned (largest first, then smallest first) so that the
// backward pass scatters grad / k to them.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/numeric.h"
#include "common/tensor.h"

namespace semvis {
namespace weldon {

struct Params {
  int64_t kmax_count = 1;   // used when kmax_frac < 0
  double kmax_frac = -1.0;  // fraction of the (valid) map in (0, 1]
  int64_t kmin_count = 1;
  double kmin_frac = -1.0;
  double alpha = 1.0;
  bool wildcat = false;  // WILDCAT form: halve, round fractions, clamp k to the map size
  // true: each side's indices are listed (and summed) by value, largest / smallest first.
  // false (CPU only): in row-major order, which skips sorting the winners; the backward pass
  // needs only the set. CUDA always produces the ordered form.
  bool ordered = true;
};

// Number of positions selected on one side for a map of n cells.
// DSVE-loc form: fractions -> max(1, floor(f * n)); counts used as given (checked <= n).
// WILDCAT form: fractions -> max(1, round-half-even(f * n)); everything clamped to n.
SEMVIS_HD int64_t resolve_k(int64_t count, double frac, int64_t n, bool wildcat) {
  int64_t k = count;
  if (frac >= 0) {
    const double v = frac * static_cast<double>(n);
    k = static_cast<int64_t>(wildcat ? nearbyint(v) : floor(v));
    if (k < 1) k = 1;
  }
  if (wildcat && k > n) k = n;
  return k;
}

// Scale of each side: y = scale_top * sum_top + scale_bottom * sum_bottom. Sums and scales are
// double on both backends (a float32 sum of two values near FLT_MAX would overflow where the
// mean does not), so CPU and CUDA results stay bit-identical.
SEMVIS_HD void side_scales(const Params& p, int64_t kt, int64_t kb, double* st, double* sb) {
  const bool halve = p.wildcat && kb > 0 && p.alpha != 0.0;
  const double h = halve ? 0.5 : 1.0;
  *st = kt > 0 ? h / static_cast<double>(kt) : 0.0;
  *sb = kb > 0 ? h * p.alpha / static_cast<double>(kb) : 0.0;
}

// Host entry points: validate, then run on the device of x.
//   x        [B, C, H, W]  float32/float16/bfloat16 (float64 on the CPU), any strides
//   vhw_host [B, 2] int64 on the CPU (or null): valid (h, w) of each image
//   vhw_dev  the same values on x's device (or null)
//   y        [B, C] dtype of x, contiguous          (written)
//   idx      [B, C, KT + KB] int32, contiguous      (written; -1 pads unused slots)
// KT / KB are resolve_k of the full map H * W (an upper bound for every image).
void forward(const TensorView& x, const TensorView* vhw_host, const TensorView* vhw_dev, const Params& p,
             const TensorView& y, const TensorView& idx, std::uintptr_t stream);

//   gy  [B, C] contiguous, idx from forward, gx [B, C, H, W] contiguous (fully written).
// idx comes from the caller (semvis::weldon_pool_backward is public): on every device an entry
// outside [-1, H * W) is refused here, before any backend runs or anything is written (the one
// range check: the backends rely on it). Positions may repeat, within a side or across the two
// sides: every occurrence adds its share (grad * scale of its side), top slots first, then bottom
// slots, each add rounded to the dtype, so CPU and CUDA agree bit for bit.
void backward(const TensorView& gy, const TensorView& idx, const TensorView* vhw_host, const TensorView* vhw_dev,
              const Params& p, const TensorView& gx, std::uintptr_t stream);

// Backend implementations (arguments already validated).
void forward_cpu(const TensorView& x, const int64_t* vhw, const Params& p, int64_t KT, int64_t KB,
                 const TensorView& y, const TensorView& idx);
void backward_cpu(const TensorView& gy, const TensorView& idx, const int64_t* vhw, const Params& p, int64_t KT,
                  int64_t KB, const TensorView& gx);
#ifdef SEMVIS_WITH_CUDA
void forward_cuda(const TensorView& x, const int64_t* vhw, const Params& p, int64_t KT, int64_t KB,
                  const TensorView& y, const TensorView& idx, std::uintptr_t stream);
void backward_cuda(const TensorView& gy, const TensorView& idx, const int64_t* vhw, const Params& p, int64_t KT,
                   int64_t KB, const TensorView& gx, std::uintptr_t stream);
// Lowest flat position j of the contiguous int32 idx (on the GPU) with idx[j] outside [-1, HW), or -1;
// *value gets idx[j]. Synchronizes `stream`.
int64_t first_bad_index_cuda(const TensorView& idx, int64_t HW, int64_t* value, std::uintptr_t stream);
#endif

}  // namespace weldon
}  // namespace semvis
