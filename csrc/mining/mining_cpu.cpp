// Mining kernels on the CPU (the running top-k), multithreaded over rows.
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

// Heap::replace_top for the min-heap of keys (root = smallest = worst), with the choice of the
// smaller child made by conditional moves: the child comparison is a coin flip that a branch
// mispredicts half the time, and the running top-k does hundreds of replacements per row.
inline void replace_root(uint64_t* h, size_t k, uint64_t key) {
  size_t i = 0;
  for (;;) {
    const size_t l = 2 * i + 1;
    if (l >= k) break;
    const uint64_t hl = h[l];
    const uint64_t hr = l + 1 < k ? h[l + 1] : ~uint64_t(0);
    const bool right = hr < hl;
    const size_t c = right ? l + 1 : l;
    const uint64_t hc = right ? hr : hl;
    if (key <= hc) break;
    h[i] = hc;
    i = c;
  }
  h[i] = key;
}

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

void merge_rows_cpu(const float* S, int64_t lds, int64_t lo, int64_t hi, int64_t tm, int64_t row0, int64_t col0,
                    int64_t m, const Exclude& ex, bool largest, uint64_t* keys, int64_t k, MergeScratch& sc) {
  for (int64_t r = lo; r < hi; ++r) {
    const int64_t row = row0 + r;
    uint64_t* h = keys + row * k;
    const float* s = S + r * lds;
    uint64_t thr = h[0];
    if (thr == 0) {  // empty slots left: select from the tile row directly
      fill_row(s, tm, row, col0, m, ex, largest, h, k, sc.key32, sc.cand, sc.ck, sc.ci);
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
      replace_root(h, static_cast<size_t>(k), key);
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
}

void merge_tile_cpu(const float* S, int64_t lds, int64_t nb, int64_t tm, int64_t row0, int64_t col0, int64_t m,
                    const Exclude& ex, bool largest, uint64_t* keys, int64_t k) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(tm, 1));
  parallel_for(0, nb, grain, [&](int64_t lo, int64_t hi) {
    MergeScratch sc;
    merge_rows_cpu(S, lds, lo, hi, tm, row0, col0, m, ex, largest, keys, k, sc);
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

}  // namespace mining
}  // namespace semvis
