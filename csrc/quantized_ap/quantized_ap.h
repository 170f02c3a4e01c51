// Quantized average precision by histogram binning (Revaud et al., "Learning with Average
// Precision", ICCV 2019; the APLoss of naver/deep-image-retrieval), forward and closed-form
// backward in O(Q * M) memory: no [Q, N, M] tensor is ever built.
//
// For query q with scores s_i and relevance y_i in [0, 1], M bins centred at
//   b_m = hi - m * D,   D = (hi - lo) / (M - 1),   m = 0 .. M-1   (bin 0 = the highest score)
// and the triangular assignment delta(s, m) = max(0, 1 - |clamp(s, lo, hi) - b_m| / D), every item
// falls in two adjacent bins j, j+1 with weights 1-f and f (t = (hi - s) / D, j = floor(t), f = t - j):
//   c_m = sum_i delta(s_i, m)          p_m = sum_i y_i delta(s_i, m)       (histograms, O(M))
//   C_m = sum_{m' <= m} c_m'           P_m = sum_{m' <= m} p_m'
//   AP  = (1 / N+) sum_m p_m * P_m / (eps + C_m),   N+ = sum_m p_m  (= sum_i y_i),  eps = 1e-16
// which is dirtorch's `prec = cumsum(rec) / (1e-16 + cumsum(nbs))`, `rec /= rec.sum()`, `ap = sum(prec * rec)`.
// Queries with N+ = 0 get AP = 0 here; the Python layer reports them as NaN / excludes them.
//
// Backward (the derivative of N+ cancels since sum_m delta(s, m) = 1): with
//   dAP/dp_k = (1/N+) (P_k / (eps + C_k) + sum_{m >= k} p_m / (eps + C_m))
//   dAP/dc_k = -(1/N+) sum_{m >= k} p_m P_m / (eps + C_m)^2
// an item in bins (j, j+1) inside [lo, hi] gets dAP/ds_i = (y_i * Dp_j + Dc_j) / D where
//   Dp_j = dAP/dp_j - dAP/dp_{j+1} = (1/N+) (P_j / (eps + C_j) - P_{j+1} / (eps + C_{j+1}) + p_j / (eps + C_j))
//   Dc_j = dAP/dc_j - dAP/dc_{j+1} = -(1/N+) p_j P_j / (eps + C_j)^2.
// Items clamped to an end bin (s < lo or s > hi) get 0; at a bin centre the derivative of the
// pair (j, j+1) with j = floor(t) is used (the one-sided derivative as s decreases; at s = lo the
// pair is (M-2, M-1)).
#pragma once

#include <cstdint>

#include "common/numeric.h"
#include "common/tensor.h"

// Runs __VA_ARGS__ with label_t bound to the storage type of a label dtype.
#define SEMVIS_QUANTIZED_AP_DISPATCH_LABEL(DT, ...)                                                      \
  switch (DT) {                                                                                  \
    case ::semvis::DType::kBool:                                                                 \
    case ::semvis::DType::kUInt8: { using label_t = uint8_t; __VA_ARGS__; break; }               \
    case ::semvis::DType::kFloat32: { using label_t = float; __VA_ARGS__; break; }               \
    case ::semvis::DType::kFloat64: { using label_t = double; __VA_ARGS__; break; }              \
    case ::semvis::DType::kFloat16: { using label_t = ::semvis::half_t; __VA_ARGS__; break; }    \
    case ::semvis::DType::kBFloat16: { using label_t = ::semvis::bfloat16_t; __VA_ARGS__; break; } \
    default: ::semvis::failf("quantized_ap: unsupported labels dtype ", ::semvis::dtype_name(DT)); \
  }

namespace semvis {
namespace quantized_ap {

constexpr int64_t kMaxBins = 4096;
constexpr double kEps = 1e-16;  // dirtorch's guard in the precision denominator

struct Params {
  int64_t bins = 20;
  double lo = -1.0;
  double hi = 1.0;
};

// Position of a (clamped) score on the bin axis: bins j and j + 1 with weights 1 - f and f.
template <typename Acc>
SEMVIS_HD void bin_of(Acc s, Acc lo, Acc hi, Acc inv_delta, int64_t M, int64_t* j, Acc* f, bool* inside) {
  *inside = s >= lo && s <= hi;
  const Acc c = s > hi ? hi : (s < lo ? lo : s);
  Acc t = (hi - c) * inv_delta;
  if (t < Acc(0)) t = Acc(0);
  int64_t jj = static_cast<int64_t>(t);
  if (jj > M - 2) jj = M - 2;
  Acc ff = t - static_cast<Acc>(jj);
  if (ff > Acc(1)) ff = Acc(1);
  *j = jj;
  *f = ff;
}

// Relevance of a label element: bool/uint8 read as bytes, floats as their value.
template <typename Acc> SEMVIS_HD Acc label_value(uint8_t v) { return static_cast<Acc>(v); }
template <typename Acc> SEMVIS_HD Acc label_value(float v) { return static_cast<Acc>(v); }
template <typename Acc> SEMVIS_HD Acc label_value(double v) { return static_cast<Acc>(v); }
template <typename Acc> SEMVIS_HD Acc label_value(half_t v) { return static_cast<Acc>(to_float(v)); }
template <typename Acc> SEMVIS_HD Acc label_value(bfloat16_t v) { return static_cast<Acc>(to_float(v)); }

// AP of one query from its histograms c[M], p[M] (Eq. 8 of Revaud et al. 2019, dirtorch's form).
template <typename Acc>
SEMVIS_HD void ap_from_hist(const Acc* c, const Acc* p, int64_t M, Acc* ap, Acc* npos) {
  Acc C = 0, P = 0, s = 0, n = 0;
  for (int64_t m = 0; m < M; ++m) {
    C += c[m];
    P += p[m];
    n += p[m];
    s += p[m] * (P / (Acc(kEps) + C));
  }
  *npos = n;
  *ap = n > Acc(0) ? s / n : Acc(0);
}

// Per-bin-pair gradient coefficients of one query (see the header comment): dp[j], dc[j] for
// j = 0 .. M-2, already multiplied by scale = grad_ap / (N+ * D). All zero when N+ = 0.
template <typename Acc>
SEMVIS_HD void grad_coeffs(const Acc* c, const Acc* p, int64_t M, Acc scale_over_npos_delta, Acc* dp, Acc* dc) {
  Acc C = 0, P = 0;
  Acc prev_r = 0, prev_p = 0, prev_C = 0, prev_P = 0;
  for (int64_t m = 0; m < M; ++m) {
    C += c[m];
    P += p[m];
    const Acc r = P / (Acc(kEps) + C);
    if (m > 0) {
      const Acc den = Acc(kEps) + prev_C;
      dp[m - 1] = scale_over_npos_delta * (prev_r - r + prev_p / den);
      dc[m - 1] = -scale_over_npos_delta * prev_p * prev_P / (den * den);
    }
    prev_r = r;
    prev_p = p[m];
    prev_C = C;
    prev_P = P;
  }
}

// Host entry points: validate, then run on the device of scores.
//   scores [Q, N] float32/float64/float16/bfloat16, any strides
//   labels [Q, N] bool/uint8 (0 or 1) or float32/float64/float16/bfloat16 in [0, 1], any strides
//   ap     [Q]        acc dtype (float64 for float64 scores, else float32), contiguous (written)
//   npos   [Q]        acc dtype: N+ of each query (written)
//   hist   [Q, 2, M]  acc dtype: c_m then p_m of each query (written; the backward's only state)
// Raises (std::invalid_argument) on NaN scores and labels outside [0, 1]; on CUDA this costs one
// stream synchronization.
void forward(const TensorView& scores, const TensorView& labels, const Params& p, const TensorView& ap,
             const TensorView& npos, const TensorView& hist, std::uintptr_t stream);

//   grad_ap [Q] acc dtype, contiguous; hist from forward; grad_scores [Q, N] scores' dtype, contiguous.
void backward(const TensorView& grad_ap, const TensorView& scores, const TensorView& labels, const TensorView& hist,
              const Params& p, const TensorView& grad_scores, std::uintptr_t stream);

// Backend implementations (arguments already validated).
void forward_cpu(const TensorView& scores, const TensorView& labels, const Params& p, const TensorView& ap,
                 const TensorView& npos, const TensorView& hist);
void backward_cpu(const TensorView& grad_ap, const TensorView& scores, const TensorView& labels,
                  const TensorView& hist, const Params& p, const TensorView& grad_scores);
#ifdef SEMVIS_WITH_CUDA
void forward_cuda(const TensorView& scores, const TensorView& labels, const Params& p, const TensorView& ap,
                  const TensorView& npos, const TensorView& hist, std::uintptr_t stream);
void backward_cuda(const TensorView& grad_ap, const TensorView& scores, const TensorView& labels,
                   const TensorView& hist, const Params& p, const TensorView& grad_scores, std::uintptr_t stream);
#endif

}  // namespace quantized_ap
}  // namespace semvis
