// soft_rank on the CPU. Each pair is evaluated once (p_ji = 1 - p_ij) when there are enough rows
// to keep every thread busy, else rows are split across threads by blocks of i and every pair is
// evaluated from both sides. The sigmoid needs no exp per pair when the scores span a moderate
// range: with e_i = exp(lam (s_i - mid)), sigmoid(lam (s_j - s_i)) = e_j / (e_i + e_j), a division
// (exact to a few ulp); wider ranges fall back to one vectorized exp per pair.
// Sums over j run in kLanes independent partial sums so that they vectorize without
// reassociating flags; selects need no-trapping-math (see common/vec_exp.h).
#pragma GCC optimize("no-trapping-math")
#include <algorithm>
#include <cmath>
#include <vector>

#include "common/dispatch.h"
#include "common/parallel.h"
#include "common/vec_exp.h"
#include "soft_rank.h"

#define SEMVIS_INLINE __attribute__((always_inline)) inline

namespace semvis {
namespace soft_rank {
namespace {

constexpr int kLanes = 8;

template <typename A>
SEMVIS_INLINE A hsum(const A (&v)[kLanes]) {
  A t = 0;
  for (int l = 0; l < kLanes; ++l) t += v[l];
  return t;
}

template <typename A>
constexpr A ratio_range() { return sizeof(A) == 4 ? A(80) : A(1000); }

// One row's state: the scores as A, the ratio-path weights e (or empty: exp path).
template <typename A>
struct Row {
  const A* s;
  const A* e;  // null: exp path
  int64_t n;
  A lam;
};

// sigmoid(lam (s_j - s_i)) and its complement, ratio or exp form.
template <typename A, bool RATIO>
SEMVIS_INLINE void pair(const Row<A>& w, int64_t i, int64_t j, A* p, A* q) {
  if (RATIO) {
    const A inv = A(1) / (w.e[i] + w.e[j]);
    *p = w.e[j] * inv;
    *q = w.e[i] * inv;
  } else {
    const A E = exp_sat(w.lam * (w.s[i] - w.s[j]));
    const A pp = A(1) / (A(1) + E);
    *p = pp;
    *q = E * pp;
  }
}

// Symmetric forward over one row: r[i] = sum_{j != i} p_ij. Rows go by blocks of kIB so that
// each e[j] / r[j] is loaded and stored once per block instead of once per row.
constexpr int kIB = 4;

template <typename A, bool RATIO>
SEMVIS_INLINE void forward_sym(const Row<A>& w, A* r) {
  const int64_t n = w.n;
  for (int64_t i = 0; i < n; ++i) r[i] = 0;
  int64_t i0 = 0;
  for (; i0 + kIB <= n; i0 += kIB) {
    for (int t = 0; t < kIB; ++t) {  // pairs inside the block
      for (int u = t + 1; u < kIB; ++u) {
        A p, q;
        pair<A, RATIO>(w, i0 + t, i0 + u, &p, &q);
        r[i0 + t] += p;
        r[i0 + u] += q;
      }
    }
    A lanes[kIB][kLanes] = {};
    int64_t j = i0 + kIB;
    for (; j + kLanes <= n; j += kLanes) {
      A rj[kLanes] = {};
      for (int t = 0; t < kIB; ++t) {
        for (int l = 0; l < kLanes; ++l) {
          A p, q;
          pair<A, RATIO>(w, i0 + t, j + l, &p, &q);
          lanes[t][l] += p;
          rj[l] += q;
        }
      }
      for (int l = 0; l < kLanes; ++l) r[j + l] += rj[l];
    }
    for (; j < n; ++j) {
      for (int t = 0; t < kIB; ++t) {
        A p, q;
        pair<A, RATIO>(w, i0 + t, j, &p, &q);
        r[i0 + t] += p;
        r[j] += q;
      }
    }
    for (int t = 0; t < kIB; ++t) r[i0 + t] += hsum(lanes[t]);
  }
  for (int64_t i = i0; i < n; ++i) {  // the last rows (fewer than a block)
    for (int64_t j = i + 1; j < n; ++j) {
      A p, q;
      pair<A, RATIO>(w, i, j, &p, &q);
      r[i] += p;
      r[j] += q;
    }
  }
}

// Rows [i0, i1) of the full form: r[i] = sum_j p_ij - 1/2 (the j = i term is exactly 1/2).
template <typename A, bool RATIO>
SEMVIS_INLINE void forward_full(const Row<A>& w, int64_t i0, int64_t i1, A* r) {
  for (int64_t i = i0; i < i1; ++i) {
    A lanes[kLanes] = {};
    int64_t j = 0;
    for (; j + kLanes <= w.n; j += kLanes) {
      for (int l = 0; l < kLanes; ++l) {
        A p, q;
        pair<A, RATIO>(w, i, j + l, &p, &q);
        lanes[l] += p;
      }
    }
    A acc = 0;
    for (; j < w.n; ++j) {
      A p, q;
      pair<A, RATIO>(w, i, j, &p, &q);
      acc += p;
    }
    r[i] = (acc + hsum(lanes)) - A(0.5);
  }
}

// Symmetric backward: gs[k] = sum_{i != k} (g_i - g_k) p_ik (1 - p_ik) (scale applied by the caller),
// blocked as the forward.
template <typename A, bool RATIO>
SEMVIS_INLINE void backward_sym(const Row<A>& w, const A* g, A* gs) {
  const int64_t n = w.n;
  for (int64_t i = 0; i < n; ++i) gs[i] = 0;
  int64_t i0 = 0;
  for (; i0 + kIB <= n; i0 += kIB) {
    for (int t = 0; t < kIB; ++t) {
      for (int u = t + 1; u < kIB; ++u) {
        A p, q;
        pair<A, RATIO>(w, i0 + t, i0 + u, &p, &q);
        const A v = (g[i0 + u] - g[i0 + t]) * (p * q);
        gs[i0 + t] += v;
        gs[i0 + u] -= v;
      }
    }
    A lanes[kIB][kLanes] = {};
    A gi[kIB];
    for (int t = 0; t < kIB; ++t) gi[t] = g[i0 + t];
    int64_t j = i0 + kIB;
    for (; j + kLanes <= n; j += kLanes) {
      A gj[kLanes] = {};
      for (int t = 0; t < kIB; ++t) {
        for (int l = 0; l < kLanes; ++l) {
          A p, q;
          pair<A, RATIO>(w, i0 + t, j + l, &p, &q);
          const A v = (g[j + l] - gi[t]) * (p * q);
          lanes[t][l] += v;
          gj[l] += v;
        }
      }
      for (int l = 0; l < kLanes; ++l) gs[j + l] -= gj[l];
    }
    for (; j < n; ++j) {
      for (int t = 0; t < kIB; ++t) {
        A p, q;
        pair<A, RATIO>(w, i0 + t, j, &p, &q);
        const A v = (g[j] - gi[t]) * (p * q);
        gs[i0 + t] += v;
        gs[j] -= v;
      }
    }
    for (int t = 0; t < kIB; ++t) gs[i0 + t] += hsum(lanes[t]);
  }
  for (int64_t i = i0; i < n; ++i) {
    for (int64_t j = i + 1; j < n; ++j) {
      A p, q;
      pair<A, RATIO>(w, i, j, &p, &q);
      const A v = (g[j] - g[i]) * (p * q);
      gs[i] += v;
      gs[j] -= v;
    }
  }
}

template <typename A, bool RATIO>
SEMVIS_INLINE void backward_full(const Row<A>& w, const A* g, int64_t i0, int64_t i1, A* gs) {
  for (int64_t i = i0; i < i1; ++i) {
    A lanes[kLanes] = {};
    const A gi = g[i];
    int64_t j = 0;
    for (; j + kLanes <= w.n; j += kLanes) {
      for (int l = 0; l < kLanes; ++l) {
        A p, q;
        pair<A, RATIO>(w, i, j + l, &p, &q);
        lanes[l] += (g[j + l] - gi) * (p * q);
      }
    }
    A acc = 0;
    for (; j < w.n; ++j) {
      A p, q;
      pair<A, RATIO>(w, i, j, &p, &q);
      acc += (g[j] - gi) * (p * q);
    }
    gs[i] = acc + hsum(lanes);
  }
}

// Loads a row as A and prepares the ratio-path weights when the range allows them.
template <typename T, typename A>
Row<A> load_row(const T* src, int64_t n, A lam, std::vector<A>& sbuf, std::vector<A>& ebuf) {
  sbuf.resize(n);
  A lo = load_acc(src[0]), hi = lo;
  for (int64_t i = 0; i < n; ++i) {
    const A v = load_acc(src[i]);
    sbuf[i] = v;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  Row<A> w{sbuf.data(), nullptr, n, lam};
  if (lam * (hi - lo) <= ratio_range<A>()) {
    const A mid = lo + (hi - lo) / 2;
    ebuf.resize(n);
    for (int64_t i = 0; i < n; ++i) ebuf[i] = exp_sat(lam * (sbuf[i] - mid));
    w.e = ebuf.data();
  }
  return w;
}

// Dispatch over the AVX2 + FMA clone. `F` is called with the row, inside the clone.
#if defined(__x86_64__)
bool use_avx2() {
  static const bool v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return v;
}
#endif

template <typename A>
void fwd_sym_plain(const Row<A>& w, A* r) { w.e ? forward_sym<A, true>(w, r) : forward_sym<A, false>(w, r); }
template <typename A>
void fwd_full_plain(const Row<A>& w, int64_t i0, int64_t i1, A* r) {
  w.e ? forward_full<A, true>(w, i0, i1, r) : forward_full<A, false>(w, i0, i1, r);
}
template <typename A>
void bwd_sym_plain(const Row<A>& w, const A* g, A* gs) {
  w.e ? backward_sym<A, true>(w, g, gs) : backward_sym<A, false>(w, g, gs);
}
template <typename A>
void bwd_full_plain(const Row<A>& w, const A* g, int64_t i0, int64_t i1, A* gs) {
  w.e ? backward_full<A, true>(w, g, i0, i1, gs) : backward_full<A, false>(w, g, i0, i1, gs);
}
#if defined(__x86_64__)
template <typename A>
__attribute__((target("avx2,fma"))) void fwd_sym_avx2(const Row<A>& w, A* r) {
  w.e ? forward_sym<A, true>(w, r) : forward_sym<A, false>(w, r);
}
template <typename A>
__attribute__((target("avx2,fma"))) void fwd_full_avx2(const Row<A>& w, int64_t i0, int64_t i1, A* r) {
  w.e ? forward_full<A, true>(w, i0, i1, r) : forward_full<A, false>(w, i0, i1, r);
}
template <typename A>
__attribute__((target("avx2,fma"))) void bwd_sym_avx2(const Row<A>& w, const A* g, A* gs) {
  w.e ? backward_sym<A, true>(w, g, gs) : backward_sym<A, false>(w, g, gs);
}
template <typename A>
__attribute__((target("avx2,fma"))) void bwd_full_avx2(const Row<A>& w, const A* g, int64_t i0, int64_t i1, A* gs) {
  w.e ? backward_full<A, true>(w, g, i0, i1, gs) : backward_full<A, false>(w, g, i0, i1, gs);
}
#define SEMVIS_PICK(NAME, ...) (use_avx2() ? NAME##_avx2(__VA_ARGS__) : NAME##_plain(__VA_ARGS__))
#else
#define SEMVIS_PICK(NAME, ...) NAME##_plain(__VA_ARGS__)
#endif

// Rows per thread decide the scheme: whole rows (each pair once) or blocks of i (each pair twice,
// but one row spreads over the threads).
bool whole_rows(int64_t B) { return B >= 2 * static_cast<int64_t>(get_num_threads()); }

constexpr int64_t kIBlock = 64;

}  // namespace

void forward_cpu(const TensorView& s, const Params& p, const TensorView& rank) {
  const int64_t B = s.size(0), n = s.size(1);
  SEMVIS_DISPATCH_FLOAT(s.dtype, "soft_rank", {
    using A = typename acc_type<scalar_t>::type;
    const scalar_t* S = s.ptr<const scalar_t>();
    scalar_t* Rk = rank.ptr<scalar_t>();
    const A lam = static_cast<A>(p.lam);
    const A scale = p.normalize ? A(1) / static_cast<A>(n) : A(1);
    const A shift = p.normalize ? A(1) : A(0);
    if (whole_rows(B)) {
      parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
        std::vector<A> sb, eb, r(n);
        for (int64_t b = lo; b < hi; ++b) {
          const Row<A> w = load_row<scalar_t, A>(S + b * n, n, lam, sb, eb);
          SEMVIS_PICK(fwd_sym, w, r.data());
          for (int64_t i = 0; i < n; ++i) Rk[b * n + i] = store_acc<scalar_t>((r[i] + shift) * scale);
        }
      });
    } else {
      std::vector<A> sb, eb, r(n);
      for (int64_t b = 0; b < B; ++b) {
        const Row<A> w = load_row<scalar_t, A>(S + b * n, n, lam, sb, eb);
        const int64_t nblk = (n + kIBlock - 1) / kIBlock;
        parallel_for(0, nblk, 1, [&](int64_t lo, int64_t hi) {
          SEMVIS_PICK(fwd_full, w, lo * kIBlock, std::min(n, hi * kIBlock), r.data());
        });
        for (int64_t i = 0; i < n; ++i) Rk[b * n + i] = store_acc<scalar_t>((r[i] + shift) * scale);
      }
    }
  });
}

void backward_cpu(const TensorView& g, const TensorView& s, const Params& p, const TensorView& gs) {
  const int64_t B = s.size(0), n = s.size(1);
  SEMVIS_DISPATCH_FLOAT(s.dtype, "soft_rank", {
    using A = typename acc_type<scalar_t>::type;
    const scalar_t* S = s.ptr<const scalar_t>();
    const scalar_t* Gr = g.ptr<const scalar_t>();
    scalar_t* GS = gs.ptr<scalar_t>();
    const A lam = static_cast<A>(p.lam);
    const A scale = lam * (p.normalize ? A(1) / static_cast<A>(n) : A(1));
    auto load_g = [&](int64_t b, std::vector<A>& gb) {
      gb.resize(n);
      for (int64_t i = 0; i < n; ++i) gb[i] = load_acc(Gr[b * n + i]);
    };
    if (whole_rows(B)) {
      parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
        std::vector<A> sb, eb, gb, out(n);
        for (int64_t b = lo; b < hi; ++b) {
          const Row<A> w = load_row<scalar_t, A>(S + b * n, n, lam, sb, eb);
          load_g(b, gb);
          SEMVIS_PICK(bwd_sym, w, gb.data(), out.data());
          for (int64_t i = 0; i < n; ++i) GS[b * n + i] = store_acc<scalar_t>(out[i] * scale);
        }
      });
    } else {
      std::vector<A> sb, eb, gb, out(n);
      for (int64_t b = 0; b < B; ++b) {
        const Row<A> w = load_row<scalar_t, A>(S + b * n, n, lam, sb, eb);
        load_g(b, gb);
        const int64_t nblk = (n + kIBlock - 1) / kIBlock;
        parallel_for(0, nblk, 1, [&](int64_t lo, int64_t hi) {
          SEMVIS_PICK(bwd_full, w, gb.data(), lo * kIBlock, std::min(n, hi * kIBlock), out.data());
        });
        for (int64_t i = 0; i < n; ++i) GS[b * n + i] = store_acc<scalar_t>(out[i] * scale);
      }
    }
  });
}

}  // namespace soft_rank
}  // namespace semvis
