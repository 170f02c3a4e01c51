// Triplet-loss kernels on the CPU, multithreaded over queries / triplets (forward) or feature
// columns (backward).
#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "common/dispatch.h"
#include "common/parallel.h"
#include "common/select_cpu.h"
#include "triplet_losses.h"

namespace semvis {
namespace triplet_losses {

// ---- VSE loss --------------------------------------------------------------------------------
// For query q of direction dir (0: image q against captions = row q; 1: caption q against images
// = column q), the K hardest admissible negatives o (value desc, index asc; all of them in index
// order when K covers them), hinge c = margin + S_neg - S_qq (VSE++ ContrastiveLoss, BEAN Eq. 7).
template <typename Acc>
void vse_forward_cpu(const Acc* S, int64_t B, const int64_t* labels, const VseParams& p, Acc* loss, int64_t* ei,
                     int64_t* ej, Acc* ew) {
  const int64_t K = std::min<int64_t>(p.k, B - 1);
  const int ndir = p.both ? 2 : 1;
  const int64_t Q = ndir * B;
  std::vector<Acc> part(Q, Acc(0));
  const Acc margin = static_cast<Acc>(p.margin), scale = static_cast<Acc>(p.scale);
  parallel_for(0, Q, 8, [&](int64_t lo, int64_t hi) {
    std::vector<std::pair<Acc, int64_t>> cand;
    for (int64_t qq = lo; qq < hi; ++qq) {
      const int dir = static_cast<int>(qq / B);
      const int64_t q = qq % B;
      const Acc pos = S[q * B + q];
      cand.clear();
      for (int64_t o = 0; o < B; ++o) {
        if (o == q || (labels && labels[o] == labels[q])) continue;
        cand.emplace_back(dir == 0 ? S[q * B + o] : S[o * B + q], o);
      }
      if (static_cast<int64_t>(cand.size()) > K) {
        auto better = [](const std::pair<Acc, int64_t>& a, const std::pair<Acc, int64_t>& b) {
          const uint64_t ka = order_key(a.first), kb = order_key(b.first);
          return ka != kb ? ka > kb : a.second < b.second;
        };
        select::select_best(cand.data(), static_cast<int64_t>(cand.size()), K, true, better);
        cand.resize(K);
      }
      int64_t* pi = ei + qq * (K + 1);
      int64_t* pj = ej + qq * (K + 1);
      Acc* pw = ew + qq * (K + 1);
      Acc sum = 0;
      int64_t active = 0;
      for (int64_t t = 0; t < K; ++t) {
        pi[t] = 0;
        pj[t] = 0;
        pw[t] = 0;
        if (t >= static_cast<int64_t>(cand.size())) continue;
        const Acc c = margin + cand[t].first - pos;
        if (!(c > 0)) continue;
        sum += c;
        ++active;
        pi[t] = dir == 0 ? q : cand[t].second;
        pj[t] = dir == 0 ? cand[t].second : q;
        pw[t] = scale;
      }
      pi[K] = q;
      pj[K] = q;
      pw[K] = -scale * static_cast<Acc>(active);
      part[qq] = sum;
    }
  });
  Acc total = 0;
  for (int64_t qq = 0; qq < Q; ++qq) total += part[qq];
  loss[0] = scale * total;
}
template void vse_forward_cpu<float>(const float*, int64_t, const int64_t*, const VseParams&, float*, int64_t*,
                                     int64_t*, float*);
template void vse_forward_cpu<double>(const double*, int64_t, const int64_t*, const VseParams&, double*, int64_t*,
                                      int64_t*, double*);

// ---- triplet margin loss ---------------------------------------------------------------------
namespace {

template <typename T, typename Acc>
inline Acc dot(const T* a, const T* b, int64_t d) {
  Acc s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= d; i += 8)
    for (int u = 0; u < 8; ++u) s[u] += load_acc(a[i + u]) * load_acc(b[i + u]);
  Acc r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; i < d; ++i) r += load_acc(a[i]) * load_acc(b[i]);
  return r;
}

template <typename T>
void triplet_impl(const TensorView& A, const TensorView& Bt, const int64_t* trip, int64_t T_, const TripletParams& p,
                  void* loss_v, int64_t* ei, int64_t* ej, void* ew_v) {
  using Acc = typename acc_type<T>::type;
  const int64_t d = A.size(1);
  const T* a = A.ptr<const T>();
  const T* b = Bt.ptr<const T>();
  Acc* ew = static_cast<Acc*>(ew_v);
  std::vector<Acc> part(T_);
  const Acc r = p.mean && T_ > 0 ? Acc(1) / static_cast<Acc>(T_) : Acc(1);
  const Acc margin = static_cast<Acc>(p.margin), scale = static_cast<Acc>(p.scale);
  parallel_for(0, T_, std::max<int64_t>(1, 16384 / std::max<int64_t>(d, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t q = trip[3 * t], ps = trip[3 * t + 1], ng = trip[3 * t + 2];
      const Acc sp = dot<T, Acc>(a + q * d, b + ps * d, d);
      const Acc sn = dot<T, Acc>(a + q * d, b + ng * d, d);
      const Acc c = margin - sp + sn;  // Eq. 1 of Gordo & Larlus (before the 1/2)
      const bool on = c > 0;
      part[t] = on ? scale * c : Acc(0);
      ei[2 * t] = q;
      ej[2 * t] = ps;
      ew[2 * t] = on ? -scale * r : Acc(0);
      ei[2 * t + 1] = q;
      ej[2 * t + 1] = ng;
      ew[2 * t + 1] = on ? scale * r : Acc(0);
    }
  });
  Acc total = 0;
  for (int64_t t = 0; t < T_; ++t) total += part[t];
  static_cast<Acc*>(loss_v)[0] = total * r;
}

template <typename T>
void pair_backward_impl(const TensorView& g, const TensorView& A, const TensorView& Bt, const int64_t* ei,
                        const int64_t* ej, const TensorView& ew, const TensorView& gA, const TensorView& gB) {
  using Acc = typename acc_type<T>::type;
  const int64_t d = A.size(1), E = ew.size(0);
  const T* a = A.ptr<const T>();
  const T* b = Bt.ptr<const T>();
  const Acc* w = ew.ptr<const Acc>();
  Acc* ga = gA.ptr<Acc>();
  Acc* gb = gB.ptr<Acc>();
  const Acc g0 = g.ptr<const Acc>()[0];
  const int64_t na = A.size(0), nb = Bt.size(0);
  // Each thread owns a range of feature columns: no write conflicts, a fixed summation order.
  parallel_for(0, d, 128, [&](int64_t c0, int64_t c1) {
    for (int64_t i = 0; i < na; ++i) std::fill(ga + i * d + c0, ga + i * d + c1, Acc(0));
    for (int64_t j = 0; j < nb; ++j) std::fill(gb + j * d + c0, gb + j * d + c1, Acc(0));
    for (int64_t e = 0; e < E; ++e) {
      if (w[e] == 0) continue;
      const Acc s = g0 * w[e];
      const int64_t i = ei[e], j = ej[e];
      Acc* gai = ga + i * d;
      Acc* gbj = gb + j * d;
      const T* ai = a + i * d;
      const T* bj = b + j * d;
      for (int64_t c = c0; c < c1; ++c) {
        gai[c] += s * load_acc(bj[c]);
        gbj[c] += s * load_acc(ai[c]);
      }
    }  // e
  });
}

}  // namespace

void triplet_forward_cpu(const TensorView& A, const TensorView& Bt, const int64_t* trip, int64_t T,
                         const TripletParams& p, void* loss, int64_t* ei, int64_t* ej, void* ew) {
  SEMVIS_DISPATCH_FLOAT(A.dtype, "triplet_margin_loss", triplet_impl<scalar_t>(A, Bt, trip, T, p, loss, ei, ej, ew));
}

void pair_backward_cpu(const TensorView& g, const TensorView& A, const TensorView& Bt, const int64_t* ei,
                       const int64_t* ej, const TensorView& ew, const TensorView& gA, const TensorView& gB) {
  SEMVIS_DISPATCH_FLOAT(A.dtype, "pair_backward", pair_backward_impl<scalar_t>(g, A, Bt, ei, ej, ew, gA, gB));
}

}  // namespace triplet_losses
}  // namespace semvis
