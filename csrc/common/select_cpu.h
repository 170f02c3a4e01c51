// The CPU selection template shared by the kernels that keep "the k best" of something
// (WELDON's per-channel top/bottom k, mining's running top-k, Hamming's top-k and kd-tree).
// The CUDA side has its own (warp) template; on the CPU every selection is one of three shapes:
//
// 1. BoundedTopK<Key, Better>: a running top-k over a stream of candidates, a binary heap whose
//    root is the worst kept key, so that "does this candidate enter?" is one comparison with
//    worst(). Keys are totally ordered by Better (ties must be broken inside the key: a packed
//    (value, index) word, or a struct compared lexicographically).
// 2. kth_largest_u32: the threshold of the k largest of n unsigned 32-bit keys by a bitwise
//    (radix-2) search, counting with AVX2 when the CPU has it (chosen at run time; no -march
//    flags). Exact, O(32 n) branch-free compares with an early exit when a candidate threshold
//    already splits exactly k; the selection is then one pass in index order (lowest index first
//    among keys equal to the threshold). Up to two key arrays are searched in one loop (WELDON's
//    top and bottom sides) to hide the latency of the horizontal sums.
// 3. select_best: partial selection of the k best of an array of keys (nth_element), sorted when
//    the caller wants them ordered; for keys wider than 32 bits (double values, pairs).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace semvis {
namespace select {

// ---- 1. running top-k ----------------------------------------------------------------------
// Better(a, b): a ranks strictly before b. The heap keeps the k best seen; root = worst kept.
template <typename Key, typename Better>
class BoundedTopK {
 public:
  explicit BoundedTopK(Better better = Better()) : better_(better) {}
  void reset(int64_t k) {
    k_ = k;
    h_.clear();
    h_.reserve(static_cast<size_t>(k));
  }
  bool full() const { return static_cast<int64_t>(h_.size()) == k_; }
  int64_t size() const { return static_cast<int64_t>(h_.size()); }
  int64_t capacity() const { return k_; }
  // The worst kept key (only when full()).
  const Key& worst() const { return h_[0]; }
  // Offers a candidate; returns true when it was kept.
  bool push(const Key& key) {
    if (!full()) {
      h_.push_back(key);
      sift_up(h_.size() - 1);
      return true;
    }
    if (k_ == 0 || !better_(key, h_[0])) return false;
    replace_top(h_.data(), h_.size(), key, better_);
    return true;
  }
  // Moves the kept keys out, best first.
  template <typename Out>
  void write_sorted(Out out) {
    std::sort(h_.begin(), h_.end(), better_);
    for (size_t i = 0; i < h_.size(); ++i) out(i, h_[i]);
  }
  // Heap primitives on a raw array (mining keeps its heaps in one [n, k] buffer).
  // h[0..k) is a heap whose root is the worst; key is better than h[0]: replace the root.
  static void replace_top(Key* h, size_t k, const Key& key, Better better) {
    size_t i = 0;
    for (;;) {
      const size_t l = 2 * i + 1;
      if (l >= k) break;
      size_t c = l;
      if (l + 1 < k && better(h[l], h[l + 1])) c = l + 1;  // the worse child
      if (!better(key, h[c])) break;
      h[i] = h[c];
      i = c;
    }
    h[i] = key;
  }
  // Turns h[0..k) into a heap whose root is the worst.
  static void make(Key* h, size_t k, Better better) { std::make_heap(h, h + k, better); }

 private:
  void sift_up(size_t i) {
    while (i > 0) {
      const size_t p = (i - 1) / 2;
      if (!better_(h_[p], h_[i])) return;  // parent already worse
      std::swap(h_[p], h_[i]);
      i = p;
    }
  }
  Better better_;
  int64_t k_ = 0;
  std::vector<Key> h_;
};

// ---- 2. bitwise threshold search on 32-bit keys ----------------------------------------------
// The k largest of d[0..n) (1 <= k <= n) are exactly the i with
//   d[i] > gt, or d[i] == eq among the first need_eq such i in index order.
struct Threshold {
  uint32_t gt = 0;
  uint32_t eq = 0;
  int64_t need_eq = 0;
  bool selected_gt(uint32_t v) const { return v > gt; }
};

namespace detail {
inline int64_t count_ge_scalar(const uint32_t* d, int64_t n, uint32_t c) {
  int64_t s = 0;
  for (int64_t i = 0; i < n; ++i) s += d[i] >= c;
  return s;
}

#if defined(__x86_64__)
// Signed compare after flipping the sign bit = unsigned compare. d padded with zeros to a
// multiple of 8 (a padded 0 never counts: every candidate c is >= 1).
__attribute__((target("avx2"))) inline int64_t count_ge_avx2(const uint32_t* d, int64_t nv, uint32_t c) {
  const __m256i flip = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  const __m256i t = _mm256_set1_epi32(static_cast<int>((c - 1) ^ 0x80000000u));
  __m256i acc = _mm256_setzero_si256();
  for (int64_t v = 0; v < nv; ++v) {
    const __m256i x = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(d + 8 * v)), flip);
    acc = _mm256_sub_epi32(acc, _mm256_cmpgt_epi32(x, t));
  }
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

// Two searches in one loop (independent dependency chains).
__attribute__((target("avx2"))) inline void search2_avx2(const uint32_t* a, const uint32_t* b, int64_t nv, int64_t ka,
                                                         int64_t kb, uint32_t* ta, uint32_t* tb, bool* exact_a,
                                                         bool* exact_b) {
  const __m256i flip = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  uint32_t A = 0, B = 0;
  bool da = ka <= 0, db = kb <= 0;
  *exact_a = *exact_b = false;
  for (int bit = 31; bit >= 0 && !(da && db); --bit) {
    const uint32_t ca = A | (1u << bit), cb = B | (1u << bit);
    const __m256i xa = _mm256_set1_epi32(static_cast<int>((ca - 1) ^ 0x80000000u));
    const __m256i xb = _mm256_set1_epi32(static_cast<int>((cb - 1) ^ 0x80000000u));
    __m256i sa = _mm256_setzero_si256(), sb = _mm256_setzero_si256();
    for (int64_t v = 0; v < nv; ++v) {
      const __m256i u = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + 8 * v)), flip);
      const __m256i w = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 8 * v)), flip);
      sa = _mm256_sub_epi32(sa, _mm256_cmpgt_epi32(u, xa));
      sb = _mm256_sub_epi32(sb, _mm256_cmpgt_epi32(w, xb));
    }
    // Horizontal sums of both at once.
    __m256i h = _mm256_hadd_epi32(sa, sb);  // a0+a1 a2+a3 b0+b1 b2+b3 | a4+a5 a6+a7 b4+b5 b6+b7
    h = _mm256_hadd_epi32(h, h);             // a(0..3) b(0..3) a b | a(4..7) b(4..7) a b
    const __m128i s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
    const int64_t na = _mm_cvtsi128_si32(s), nb = _mm_extract_epi32(s, 1);
    if (!da) {
      if (na >= ka) A = ca;
      if (na == ka) { da = true; *exact_a = true; }
    }
    if (!db) {
      if (nb >= kb) B = cb;
      if (nb == kb) { db = true; *exact_b = true; }
    }
  }
  *ta = A;
  *tb = B;
}

inline bool cpu_has_avx2() {
  static const bool v = __builtin_cpu_supports("avx2");
  return v;
}
#endif

inline void search1_scalar(const uint32_t* d, int64_t n, int64_t k, uint32_t* t, bool* exact) {
  uint32_t T = 0;
  *exact = false;
  for (int bit = 31; bit >= 0; --bit) {
    const uint32_t c = T | (1u << bit);
    const int64_t cnt = count_ge_scalar(d, n, c);
    if (cnt >= k) T = c;
    if (cnt == k) {
      *exact = true;
      break;
    }
  }
  *t = T;
}

// From the search result: exact -> every key >= T (i.e. > T - 1) and nothing else; otherwise
// T is the k-th largest key: all keys > T and the first (k - #{> T}) keys equal to T.
inline Threshold finish(const uint32_t* d, int64_t n, int64_t k, uint32_t T, bool exact) {
  Threshold r;
  if (exact) {
    r.gt = T - 1;  // T >= 1 whenever exact (the candidates all have a bit set)
    r.eq = 0;
    r.need_eq = 0;
    return r;
  }
  int64_t gt = 0;
  for (int64_t i = 0; i < n; ++i) gt += d[i] > T;
  r.gt = T;
  r.eq = T;
  r.need_eq = k - gt;
  return r;
}
}  // namespace detail

// Thresholds of the ka largest of a[0..n) and the kb largest of b[0..n) (k = 0: that side is
// skipped). a and b hold at least round_up(n, 8) keys, the tail padded with 0.
inline void kth_largest_u32_pair(const uint32_t* a, const uint32_t* b, int64_t n, int64_t ka, int64_t kb,
                                 Threshold* ta, Threshold* tb) {
  uint32_t A = 0, B = 0;
  bool ea = false, eb = false;
#if defined(__x86_64__)
  if (detail::cpu_has_avx2()) {
    detail::search2_avx2(a, b, (n + 7) / 8, ka, kb, &A, &B, &ea, &eb);
  } else
#endif
  {
    if (ka > 0) detail::search1_scalar(a, n, ka, &A, &ea);
    if (kb > 0) detail::search1_scalar(b, n, kb, &B, &eb);
  }
  if (ka > 0) *ta = detail::finish(a, n, ka, A, ea);
  if (kb > 0) *tb = detail::finish(b, n, kb, B, eb);
}

inline Threshold kth_largest_u32(const uint32_t* d, int64_t n, int64_t k) {
  Threshold t, unused;
  kth_largest_u32_pair(d, d, n, k, 0, &t, &unused);
  return t;
}

namespace detail {
#if defined(__x86_64__)
__attribute__((target("avx2"))) inline void masks_avx2(const uint32_t* d, int64_t n, const Threshold& t,
                                                       uint8_t* mask) {
  const __m256i flip = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  const __m256i g = _mm256_set1_epi32(static_cast<int>(t.gt ^ 0x80000000u));
  const __m256i e = _mm256_set1_epi32(static_cast<int>(t.eq));
  int64_t need = t.need_eq;
  const int64_t nv = (n + 7) / 8;
  for (int64_t v = 0; v < nv; ++v) {
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(d + 8 * v));
    const int lanes = static_cast<int>(std::min<int64_t>(8, n - 8 * v));
    const unsigned valid = (1u << lanes) - 1u;
    unsigned m = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(
                     _mm256_cmpgt_epi32(_mm256_xor_si256(raw, flip), g)))) & valid;
    if (need > 0) {
      unsigned q = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(raw, e)))) & valid;
      while (q && need > 0) {
        m |= q & (0u - q);
        q &= q - 1;
        --need;
      }
    }
    mask[v] = static_cast<uint8_t>(m);
  }
}
#endif
}  // namespace detail

// mask[v] bit j = "d[8 v + j] is selected" for the threshold t (exactly k bits over n keys;
// d readable up to round_up(n, 8)).
inline void selected_masks(const uint32_t* d, int64_t n, const Threshold& t, uint8_t* mask) {
#if defined(__x86_64__)
  if (detail::cpu_has_avx2()) return detail::masks_avx2(d, n, t, mask);
#endif
  int64_t need = t.need_eq;
  for (int64_t v = 0; v < (n + 7) / 8; ++v) {
    unsigned m = 0;
    for (int j = 0; j < 8 && 8 * v + j < n; ++j) {
      const uint32_t x = d[8 * v + j];
      if (x > t.gt || (need > 0 && x == t.eq && (--need, true))) m |= 1u << j;
    }
    mask[v] = static_cast<uint8_t>(m);
  }
}

// Calls f(i) for the selected i of d[0..n) in increasing i (exactly k calls).
template <typename F>
inline void for_each_selected(const uint32_t* d, int64_t n, const Threshold& t, F&& f) {
  int64_t need = t.need_eq;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t v = d[i];
    if (v > t.gt) {
      f(i);
    } else if (need > 0 && v == t.eq) {
      --need;
      f(i);
    }
  }
}

namespace detail {
// Lower bound of the k-th largest of key[0..8 nv): the smallest of the maxima of k disjoint
// blocks of vectors (k distinct keys are >= it). 0 when some block holds only zeros.
#if defined(__x86_64__)
__attribute__((target("avx2"))) inline uint32_t block_max_bound_avx2(const uint32_t* key, int64_t nv, int64_t k) {
  const int64_t per = nv / k;
  uint32_t L = 0xffffffffu;
  for (int64_t b = 0; b < k; ++b) {
    const int64_t v0 = b * per, v1 = b + 1 == k ? nv : v0 + per;
    __m256i mx = _mm256_setzero_si256();
    for (int64_t v = v0; v < v1; ++v)
      mx = _mm256_max_epu32(mx, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(key + 8 * v)));
    __m128i m = _mm_max_epu32(_mm256_castsi256_si128(mx), _mm256_extracti128_si256(mx, 1));
    m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0x4e));
    m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0xb1));
    L = std::min(L, static_cast<uint32_t>(_mm_cvtsi128_si32(m)));
  }
  return L;
}
#endif
inline uint32_t block_max_bound(const uint32_t* key, int64_t nv, int64_t k) {
#if defined(__x86_64__)
  if (cpu_has_avx2()) return block_max_bound_avx2(key, nv, k);
#endif
  const int64_t per = nv / k;
  uint32_t L = 0xffffffffu;
  for (int64_t b = 0; b < k; ++b) {
    const int64_t i0 = 8 * b * per, i1 = b + 1 == k ? 8 * nv : i0 + 8 * per;
    uint32_t mx = 0;
    for (int64_t i = i0; i < i1; ++i) mx = std::max(mx, key[i]);
    L = std::min(L, mx);
  }
  return L;
}
}  // namespace detail

// Calls f(i) for the k largest keys of key[0..n) in increasing i (ties: lowest i first), for
// 1 <= k <= #{i : key[i] != 0}; key padded with zeros to a multiple of 8. For k much smaller
// than n, a cheap bound (the smallest of k block maxima) first compacts the keys that can still
// win, so that the bitwise search runs on a few k keys instead of n. Scratch: ck, ci.
template <typename F>
inline void for_each_top(const uint32_t* key, int64_t n, int64_t k, std::vector<uint32_t>& ck,
                         std::vector<int32_t>& ci, F&& f) {
  const int64_t nv = (n + 7) / 8;
  if (nv >= 4 * k) {
    const uint32_t L = detail::block_max_bound(key, nv, k);
    if (L > 0) {
      ck.resize(8 * nv + 8);
      ci.resize(8 * nv + 8);
      int64_t c = 0;
      for (int64_t i = 0; i < n; ++i) {  // branch-free compaction, index order kept
        ck[c] = key[i];
        ci[c] = static_cast<int32_t>(i);
        c += key[i] >= L;
      }
      for (int64_t i = c; i < (c + 7) / 8 * 8; ++i) ck[i] = 0;
      const Threshold t = kth_largest_u32(ck.data(), c, k);
      for_each_selected(ck.data(), c, t, [&](int64_t j) { f(static_cast<int64_t>(ci[j])); });
      return;
    }
  }
  const Threshold t = kth_largest_u32(key, n, k);
  for_each_selected(key, n, t, f);
}

// ---- 3. partial selection of an array -------------------------------------------------------
// Moves the k best (by Better) of a[0..n) to a[0..k), sorted best first when `sorted`.
template <typename Key, typename Better>
inline void select_best(Key* a, int64_t n, int64_t k, bool sorted, Better better) {
  if (k <= 0) return;
  if (k < n) std::nth_element(a, a + k, a + n, better);
  if (sorted) std::sort(a, a + std::min(k, n), better);
}

}  // namespace select
}  // namespace semvis
