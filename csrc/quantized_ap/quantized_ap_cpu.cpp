// Quantized AP on the CPU: parallel over queries. Each worker keeps its query's two histograms
// (O(M), in double for every input dtype) and makes one pass over the query's scores and labels;
// the backward recomputes each item's bin pair from its score (no per-item state is stored).
#include <algorithm>
#include <type_traits>
#include <vector>

#include "quantized_ap.h"
#include "common/dispatch.h"
#include "common/parallel.h"

namespace semvis {
namespace quantized_ap {
namespace {

// Consecutive items often land in the same bin; spreading them over a few histogram copies
// breaks the store-to-load dependency between successive increments of one bin.
constexpr int64_t kCopies = 4;

template <typename T>
inline double score_at(const T* base, int64_t i, int64_t st) {
  return static_cast<double>(to_float(base[i * st]));
}

template <typename T>
inline T store_double(double v) {
  if constexpr (std::is_same_v<T, double>) {
    return v;
  } else {
    return store_acc<T>(static_cast<float>(v));
  }
}

template <typename T, typename L>
void forward_impl(const TensorView& scores, const TensorView& labels, const Params& p, const TensorView& ap,
                  const TensorView& npos, const TensorView& hist) {
  using Out = typename acc_type<T>::type;
  const int64_t Q = scores.size(0), N = scores.size(1), M = p.bins;
  const int64_t sq = scores.stride(0), sn = scores.stride(1), lq = labels.stride(0), ln = labels.stride(1);
  const T* S = scores.ptr<const T>();
  const L* Y = labels.ptr<const L>();
  Out* AP = ap.ptr<Out>();
  Out* NP = npos.ptr<Out>();
  Out* H = hist.ptr<Out>();
  const double lo = p.lo, hi = p.hi, inv_delta = static_cast<double>(M - 1) / (p.hi - p.lo);
  const int64_t copies = M <= 512 ? kCopies : 1;
  const int64_t grain = std::max<int64_t>(1, 16384 / N);
  parallel_for(0, Q, grain, [&](int64_t qa, int64_t qb) {
    std::vector<double> buf(copies * 2 * M);
    for (int64_t q = qa; q < qb; ++q) {
      std::fill(buf.begin(), buf.end(), 0.0);
      const T* s_row = S + q * sq;
      const L* y_row = Y + q * lq;
      for (int64_t i = 0; i < N; ++i) {
        const double s = score_at(s_row, i, sn);
        const double y = label_value<double>(y_row[i * ln]);
        // written as !(in range) so that NaN takes these branches
        if (!(s == s)) failf("quantized_ap: scores must not contain NaN, found one at [", q, ", ", i, "]");
        if (!(y >= 0.0 && y <= 1.0))
          failf("quantized_ap: labels must lie in [0, 1], got ", y, " at [", q, ", ", i, "]");
        int64_t j;
        double f;
        bool inside;
        bin_of<double>(s, lo, hi, inv_delta, M, &j, &f, &inside);
        double* h = buf.data() + (i & (copies - 1)) * 2 * M;
        h[j] += 1.0 - f;
        h[j + 1] += f;
        if (y != 0.0) {  // most items are negatives: skip their zero increments
          h[M + j] += y * (1.0 - f);
          h[M + j + 1] += y * f;
        }
      }  // i
      for (int64_t c = 1; c < copies; ++c)
        for (int64_t m = 0; m < 2 * M; ++m) buf[m] += buf[c * 2 * M + m];
      double a, n;
      ap_from_hist<double>(buf.data(), buf.data() + M, M, &a, &n);
      AP[q] = static_cast<Out>(a);
      NP[q] = static_cast<Out>(n);
      Out* hq = H + q * 2 * M;
      for (int64_t m = 0; m < 2 * M; ++m) hq[m] = static_cast<Out>(buf[m]);
    }  // q
  });
}

template <typename T, typename L>
void backward_impl(const TensorView& grad_ap, const TensorView& scores, const TensorView& labels,
                   const TensorView& hist, const Params& p, const TensorView& grad_scores) {
  using Out = typename acc_type<T>::type;
  const int64_t Q = scores.size(0), N = scores.size(1), M = p.bins;
  const int64_t sq = scores.stride(0), sn = scores.stride(1), lq = labels.stride(0), ln = labels.stride(1);
  const T* S = scores.ptr<const T>();
  const L* Y = labels.ptr<const L>();
  const Out* G = grad_ap.ptr<const Out>();
  const Out* H = hist.ptr<const Out>();
  T* GS = grad_scores.ptr<T>();
  const double lo = p.lo, hi = p.hi, inv_delta = static_cast<double>(M - 1) / (p.hi - p.lo);
  const int64_t grain = std::max<int64_t>(1, 16384 / N);
  parallel_for(0, Q, grain, [&](int64_t qa, int64_t qb) {
    std::vector<double> c(M), pp(M), dp(M), dc(M);
    for (int64_t q = qa; q < qb; ++q) {
      T* out = GS + q * N;
      double n = 0;
      for (int64_t m = 0; m < M; ++m) {
        c[m] = static_cast<double>(H[q * 2 * M + m]);
        pp[m] = static_cast<double>(H[q * 2 * M + M + m]);
        n += pp[m];
      }
      const double g = static_cast<double>(G[q]);
      if (!(n > 0.0) || g == 0.0) {  // no positives: the query is excluded, no gradient
        std::fill(out, out + N, store_double<T>(0.0));
        continue;
      }
      grad_coeffs<double>(c.data(), pp.data(), M, g * inv_delta / n, dp.data(), dc.data());
      const T* s_row = S + q * sq;
      const L* y_row = Y + q * lq;
      for (int64_t i = 0; i < N; ++i) {
        const double s = score_at(s_row, i, sn);
        const double y = label_value<double>(y_row[i * ln]);
        int64_t j;
        double f;
        bool inside;
        bin_of<double>(s, lo, hi, inv_delta, M, &j, &f, &inside);
        out[i] = store_double<T>(inside ? y * dp[j] + dc[j] : 0.0);
      }  // i
    }  // q
  });
}

}  // namespace

void forward_cpu(const TensorView& scores, const TensorView& labels, const Params& p, const TensorView& ap,
                 const TensorView& npos, const TensorView& hist) {
  SEMVIS_DISPATCH_FLOAT(scores.dtype, "quantized_ap", SEMVIS_QUANTIZED_AP_DISPATCH_LABEL(labels.dtype, {
    forward_impl<scalar_t, label_t>(scores, labels, p, ap, npos, hist);
  }));
}

void backward_cpu(const TensorView& grad_ap, const TensorView& scores, const TensorView& labels,
                  const TensorView& hist, const Params& p, const TensorView& grad_scores) {
  SEMVIS_DISPATCH_FLOAT(scores.dtype, "quantized_ap", SEMVIS_QUANTIZED_AP_DISPATCH_LABEL(labels.dtype, {
    backward_impl<scalar_t, label_t>(grad_ap, scores, labels, hist, p, grad_scores);
  }));
}

}  // namespace quantized_ap
}  // namespace semvis
