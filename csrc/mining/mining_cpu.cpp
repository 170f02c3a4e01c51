// Mining kernels on the CPU, multithreaded over rows (top-k, VSE) or feature columns (backward).
//
// Running top-k: each row's state is a binary min-heap of k keys (mining.h; the heap of the shared
// CPU selection template, common/select_cpu.h), so the worst kept candidate is h[0].
// - While a row's heap still has empty slots (its first tile), the tile row is not pushed element
//   by element (~k (1 + ln(tile / k)) sifts): its 32-bit order keys (excluded pairs zeroed) go
//   through the bitwise threshold search of select_cpu.h, the k best are gathered in one pass,
//   merged with what the heap held, and heapified: O(tile) vector work.
// - Afterwards a tile row is scanned 32 floats at a time (AVX2 when the CPU has it) against the
//   value of h[0]; only the rare survivors build a key, consult the exclusion rules and sift in.
// Both run on the tile right after the GEMM wrote it, so the selection costs a small fraction of
// the GEMM.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "common/dispatch.h"
#include "common/parallel.h"
#include "common/select_cpu.h"
#include "mining.h"

namespace semvis {
namespace mining {
namespace {

inline bool excluded(const Exclude& ex, int64_t row, int64_t col, int64_t m) {
  if (ex.self && row == col) return true;
  if (ex.q_labels && ex.q_labels[row] == ex.db_labels[col]) return true;
  if (ex.dense && ex.dense[row * m + col]) return true;
  if (ex.indptr) {
    const int64_t* lo = ex.indices + ex.indptr[row];
    const int64_t* hi = ex.indices + ex.indptr[row + 1];
    if (lo < hi && std::binary_search(lo, hi, col)) return true;
  }
  return false;
}

using Heap = select::BoundedTopK<uint64_t, std::greater<uint64_t>>;  // larger key = better

// Zeroes the 32-bit keys of the excluded columns of one tile row (col0 .. col0 + tm).
void zero_excluded(const Exclude& ex, int64_t row, int64_t col0, int64_t tm, int64_t m, uint32_t* key) {
  if (ex.self && row >= col0 && row < col0 + tm) key[row - col0] = 0;
  if (ex.q_labels) {
    const int64_t l = ex.q_labels[row];
    const int64_t* dl = ex.db_labels + col0;
    for (int64_t j = 0; j < tm; ++j)
      if (dl[j] == l) key[j] = 0;
  }
  if (ex.dense) {
    const uint8_t* d = ex.dense + row * m + col0;
    for (int64_t j = 0; j < tm; ++j)
      if (d[j]) key[j] = 0;
  }
  if (ex.indptr) {
    const int64_t* lo = ex.indices + ex.indptr[row];
    const int64_t* hi = ex.indices + ex.indptr[row + 1];
    for (const int64_t* p = std::lower_bound(lo, hi, col0); p < hi && *p < col0 + tm; ++p) key[*p - col0] = 0;
  }
}

// 32-bit order keys of n floats (complemented when `invert`), zero-padded to a multiple of 8.
#if defined(__x86_64__)
__attribute__((target("avx2"))) void order_keys_avx2(const float* v, int64_t n, bool invert, uint32_t* out) {
  const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  const __m256i absmask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
  const __m256i inv = _mm256_set1_epi32(invert ? -1 : 0);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + i));
    __m256i k = _mm256_xor_si256(u, _mm256_or_si256(_mm256_srai_epi32(u, 31), sign));
    k = _mm256_blendv_epi8(k, sign, _mm256_cmpeq_epi32(u, sign));                   // -0.0 -> +0.0
    k = _mm256_or_si256(k, _mm256_cmpgt_epi32(_mm256_and_si256(u, absmask), inf));  // NaN -> ~0
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), _mm256_xor_si256(k, inv));
  }
  for (; i < n; ++i) out[i] = invert ? ~order_key(v[i]) : order_key(v[i]);
}
#endif

void order_keys(const float* v, int64_t n, bool invert, uint32_t* out) {
#if defined(__x86_64__)
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) return order_keys_avx2(v, n, invert, out);
#endif
  for (int64_t i = 0; i < n; ++i) out[i] = invert ? ~order_key(v[i]) : order_key(v[i]);
}

// A row whose heap is not full: select the best of the tile row directly (see the top).
void fill_row(const float* s, int64_t tm, int64_t row, int64_t col0, int64_t m, const Exclude& ex, bool largest,
              uint64_t* h, int64_t k, std::vector<uint32_t>& key, std::vector<uint64_t>& cand,
              std::vector<uint32_t>& ck, std::vector<int32_t>& ci) {
  const int64_t padded = (tm + 7) / 8 * 8;
  key.resize(padded);
  order_keys(s, tm, !largest, key.data());  // never 0 for a real value (see numeric.h)
  for (int64_t j = tm; j < padded; ++j) key[j] = 0;
  zero_excluded(ex, row, col0, tm, m, key.data());
  int64_t admissible = 0;
  for (int64_t j = 0; j < tm; ++j) admissible += key[j] != 0;
  cand.clear();
  for (int64_t j = 0; j < k; ++j)
    if (h[j] != 0) cand.push_back(h[j]);
  const int64_t kk = std::min(k, admissible);
  if (kk > 0) {
    select::for_each_top(key.data(), tm, kk, ck, ci, [&](int64_t j) {
      cand.push_back((static_cast<uint64_t>(key[j]) << 32) | (0xffffffffu - static_cast<uint32_t>(col0 + j)));
    });
  }
  const int64_t c = static_cast<int64_t>(cand.size());
  select::select_best(cand.data(), c, k, false, std::greater<uint64_t>());
  const int64_t kept = std::min(c, k);
  std::copy(cand.begin(), cand.begin() + kept, h);
  std::fill(h + kept, h + k, uint64_t(0));
  Heap::make(h, static_cast<size_t>(k), std::greater<uint64_t>());
}

// Offsets j in [j0, j1) of the tile row whose value may enter (u = +v or -v not below ts; NaN
// always passes) are reported through mark(j); returns nothing. AVX2: 32 floats per test.
#if defined(__x86_64__)
template <typename Visit>
__attribute__((target("avx2"))) inline int64_t scan_avx2(const float* s, int64_t tm, bool largest, float& ts,
                                                         Visit&& visit) {
  const __m256 flip = _mm256_castsi256_ps(_mm256_set1_epi32(largest ? 0 : static_cast<int>(0x80000000u)));
  int64_t j = 0;
  for (; j + 32 <= tm; j += 32) {
    const __m256 t = _mm256_set1_ps(ts);
    const __m256 a = _mm256_xor_ps(_mm256_loadu_ps(s + j), flip);
    const __m256 b = _mm256_xor_ps(_mm256_loadu_ps(s + j + 8), flip);
    const __m256 c = _mm256_xor_ps(_mm256_loadu_ps(s + j + 16), flip);
    const __m256 d = _mm256_xor_ps(_mm256_loadu_ps(s + j + 24), flip);
    // !(u < t), true for NaN: _CMP_NLT_UQ
    const __m256 m = _mm256_or_ps(_mm256_or_ps(_mm256_cmp_ps(a, t, _CMP_NLT_UQ), _mm256_cmp_ps(b, t, _CMP_NLT_UQ)),
                                  _mm256_or_ps(_mm256_cmp_ps(c, t, _CMP_NLT_UQ), _mm256_cmp_ps(d, t, _CMP_NLT_UQ)));
    if (_mm256_movemask_ps(m) == 0) continue;
    uint32_t bits = static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(a, t, _CMP_NLT_UQ))) |
                    static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(b, t, _CMP_NLT_UQ))) << 8 |
                    static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(c, t, _CMP_NLT_UQ))) << 16 |
                    static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(d, t, _CMP_NLT_UQ))) << 24;
    while (bits) {  // visit re-tests against the threshold, which may have risen meanwhile
      visit(j + __builtin_ctz(bits));
      bits &= bits - 1;
    }
  }
  return j;
}
inline bool has_avx2() {
  static const bool v = __builtin_cpu_supports("avx2");
  return v;
}
#endif

}  // namespace

void merge_tile_cpu(const float* S, int64_t lds, int64_t nb, int64_t tm, int64_t row0, int64_t col0, int64_t m,
                    const Exclude& ex, bool largest, uint64_t* keys, int64_t k) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(tm, 1));
  parallel_for(0, nb, grain, [&](int64_t lo, int64_t hi) {
    std::vector<uint32_t> key32, ck;
    std::vector<int32_t> ci;
    std::vector<uint64_t> cand;
    for (int64_t r = lo; r < hi; ++r) {
      const int64_t row = row0 + r;
      uint64_t* h = keys + row * k;
      const float* s = S + r * lds;
      uint64_t thr = h[0];
      if (thr == 0) {  // empty slots left: select from the tile row directly
        fill_row(s, tm, row, col0, m, ex, largest, h, k, key32, cand, ck, ci);
        continue;
      }
      // Pre-filter value: an element can enter only if its score is not worse than the root's.
      // Written as !(v < t) so that NaN (ranked above +inf, as torch.topk does) passes.
      const float t = key_score(thr, largest);
      // Compare with a sign flip so that one loop serves both directions: u = +v or -v.
      const float sgn = largest ? 1.f : -1.f;
      float ts = sgn * t;
      auto visit = [&](int64_t j) {
        const float v = s[j];
        if (sgn * v < ts) return;
        const int64_t col = col0 + j;
        const uint64_t key = make_key(v, col, largest);
        if (key <= thr) return;
        if (excluded(ex, row, col, m)) return;
        Heap::replace_top(h, static_cast<size_t>(k), key, std::greater<uint64_t>());
        thr = h[0];
        ts = sgn * key_score(thr, largest);
      };
      int64_t j = 0;
#if defined(__x86_64__)
      if (has_avx2()) j = scan_avx2(s, tm, largest, ts, visit);
#endif
      constexpr int64_t kBlock = 16;
      for (; j + kBlock <= tm; j += kBlock) {
        // Branch-free test of a whole block (vectorized): most blocks hold no candidate.
        // Written as !(u < ts) so that NaN, which must rank first, is never skipped.
        int any = 0;
        for (int64_t u = 0; u < kBlock; ++u) any |= !(sgn * s[j + u] < ts);
        if (!any) continue;
        for (int64_t u = 0; u < kBlock; ++u) visit(j + u);
      }  // blocks
      for (; j < tm; ++j) visit(j);
    }  // r
  });
}

void finalize_cpu(const uint64_t* keys, int64_t n, int64_t k, bool largest, float* scores, int64_t* idx) {
  parallel_for(0, n, std::max<int64_t>(1, 4096 / k), [&](int64_t lo, int64_t hi) {
    std::vector<uint64_t> row(k);
    for (int64_t r = lo; r < hi; ++r) {
      std::copy(keys + r * k, keys + (r + 1) * k, row.begin());
      std::sort(row.begin(), row.end(), std::greater<uint64_t>());
      for (int64_t j = 0; j < k; ++j) {
        const uint64_t key = row[j];
        if (key == 0) {  // empty slot: fewer than k admissible columns in this row
          scores[r * k + j] = largest ? -INFINITY : INFINITY;
          idx[r * k + j] = -1;
        } else {
          scores[r * k + j] = key_score(key, largest);
          idx[r * k + j] = key_index(key);
        }
      }
    }
  });
}

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
        std::nth_element(cand.begin(), cand.begin() + K, cand.end(), better);
        cand.resize(K);
        std::sort(cand.begin(), cand.end(), better);
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

}  // namespace mining
}  // namespace semvis
