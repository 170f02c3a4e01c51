// WELDON on the CPU: parallel over (batch, channel) rows. Each row's values are turned into
// order-preserving integer keys with the index folded in, so that "largest value, lowest index
// on ties" is a plain integer maximum; k = 1 is a single pass, larger k a partial selection
// (nth_element) followed by a sort of the k winners only when the caller wants them ordered
// (otherwise winners are flagged and read back in row-major order).
#include <algorithm>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <type_traits>
#include <vector>

#include "common/dispatch.h"
#include "common/parallel.h"
#include "weldon.h"

namespace semvis {
namespace weldon {
namespace {

// Max and min order keys of a contiguous float32 row. AVX2 has unsigned 32-bit min/max; the
// CPU is checked at run time (no -march flags), with the scalar loop as the fallback.
#if defined(__x86_64__)
__attribute__((target("avx2"))) inline __m256i order_keys8(__m256i u) {
  const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  const __m256i absmask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
  __m256i k = _mm256_xor_si256(u, _mm256_or_si256(_mm256_srai_epi32(u, 31), sign));
  k = _mm256_blendv_epi8(k, sign, _mm256_cmpeq_epi32(u, sign));                   // -0.0 -> +0.0
  return _mm256_or_si256(k, _mm256_cmpgt_epi32(_mm256_and_si256(u, absmask), inf));  // NaN -> ~0
}

__attribute__((target("avx2"))) void minmax_first_avx2(const float* v, int64_t n, int64_t* imax, int64_t* imin) {
  __m256i mx = _mm256_setzero_si256(), mn = _mm256_set1_epi32(-1);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i k = order_keys8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + i)));
    mx = _mm256_max_epu32(mx, k);
    mn = _mm256_min_epu32(mn, k);
  }
  alignas(32) uint32_t a[8], b[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(a), mx);
  _mm256_store_si256(reinterpret_cast<__m256i*>(b), mn);
  uint32_t m1 = 0, m2 = 0xffffffffu;
  for (int j = 0; j < 8; ++j) {
    m1 = std::max(m1, a[j]);
    m2 = std::min(m2, b[j]);
  }
  for (int64_t t = i; t < n; ++t) {
    const uint32_t k = order_key(v[t]);
    m1 = std::max(m1, k);
    m2 = std::min(m2, k);
  }
  // Second pass: the first position of each extreme, 8 lanes at a time.
  const __m256i vmx = _mm256_set1_epi32(static_cast<int>(m1)), vmn = _mm256_set1_epi32(static_cast<int>(m2));
  int64_t fmax = -1, fmin = -1;
  for (i = 0; i + 8 <= n && (fmax < 0 || fmin < 0); i += 8) {
    const __m256i k = order_keys8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + i)));
    const int a1 = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(k, vmx)));
    const int b1 = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(k, vmn)));
    if (fmax < 0 && a1) fmax = i + __builtin_ctz(a1);
    if (fmin < 0 && b1) fmin = i + __builtin_ctz(b1);
  }
  for (; i < n && (fmax < 0 || fmin < 0); ++i) {
    const uint32_t k = order_key(v[i]);
    if (fmax < 0 && k == m1) fmax = i;
    if (fmin < 0 && k == m2) fmin = i;
  }
  *imax = fmax;
  *imin = fmin;
}
#endif

void minmax_keys_scalar(const float* v, int64_t n, uint32_t* kmax, uint32_t* kmin) {
  uint32_t m1 = 0, m2 = 0xffffffffu;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t k = order_key(v[i]);
    m1 = std::max(m1, k);
    m2 = std::min(m2, k);
  }
  *kmax = m1;
  *kmin = m2;
}

// k = 1 on a contiguous float32 row: the extreme keys in one vectorized pass, then the first
// position holding each (ties to the lowest index).
void minmax_first(const float* v, int64_t n, int64_t* imax, int64_t* imin) {
#if defined(__x86_64__)
  static const bool has_avx2 = __builtin_cpu_supports("avx2");
  if (has_avx2) return minmax_first_avx2(v, n, imax, imin);
#endif
  uint32_t mx, mn;
  minmax_keys_scalar(v, n, &mx, &mn);
  *imax = *imin = -1;
  for (int64_t i = 0; i < n && (*imax < 0 || *imin < 0); ++i) {
    const uint32_t k = order_key(v[i]);
    if (*imax < 0 && k == mx) *imax = i;
    if (*imin < 0 && k == mn) *imin = i;
  }
}

// Selection keys: for 32-bit value keys the index shares a 64-bit word; for double the value
// key alone is 64 bits, so (value key, index) pairs are compared.
struct PairKey {
  uint64_t v;
  uint32_t i;
};

template <typename T>
struct RowSelector {
  using Acc = typename acc_type<T>::type;
  std::vector<Acc> vals;
  std::vector<uint64_t> top, bot;  // packed keys (32-bit value types)
  std::vector<PairKey> ptop, pbot;  // pair keys (double)
  std::vector<uint8_t> flags;       // unordered mode: bit 0 top winner, bit 1 bottom winner

  // Selects the kt largest and kb smallest of vals[0..n), writes the indices (map coordinates)
  // in order into out_top/out_bot and returns the two sums (accumulated in that order).
  void select(int64_t n, int64_t w, int64_t W, int64_t kt, int64_t kb, bool ordered, int64_t* out_top,
              int64_t* out_bot, double* sum_top, double* sum_bot) {
    auto to_map = [&](int64_t i) { return (i / w) * W + (i % w); };
    if constexpr (sizeof(Acc) == 4) {
      if (kt <= 1 && kb <= 1) {
        // One pass: the max of (key << 32 | ~i) is the largest value at the lowest index,
        // the min of (key << 32 | i) the smallest value at the lowest index.
        uint64_t best_t = 0, best_b = ~0ull;
        for (int64_t i = 0; i < n; ++i) {
          const uint64_t k = static_cast<uint64_t>(order_key(static_cast<float>(vals[i]))) << 32;
          best_t = std::max(best_t, k | (0xffffffffu - static_cast<uint32_t>(i)));
          best_b = std::min(best_b, k | static_cast<uint32_t>(i));
        }
        if (kt == 1) {
          const int64_t i = 0xffffffffu - static_cast<uint32_t>(best_t);
          out_top[0] = to_map(i);
          *sum_top = vals[i];
        }
        if (kb == 1) {
          const int64_t i = static_cast<uint32_t>(best_b);
          out_bot[0] = to_map(i);
          *sum_bot = vals[i];
        }
        return;
      }
      top.resize(n);
      bot.resize(n);
      for (int64_t i = 0; i < n; ++i) {
        const uint64_t k = static_cast<uint64_t>(order_key(static_cast<float>(vals[i]))) << 32;
        top[i] = k | (0xffffffffu - static_cast<uint32_t>(i));
        bot[i] = k | static_cast<uint32_t>(i);
      }
      if (!ordered) {
        if (kt > 0 && kt < n) std::nth_element(top.begin(), top.begin() + kt, top.end(), std::greater<uint64_t>());
        if (kb > 0 && kb < n) std::nth_element(bot.begin(), bot.begin() + kb, bot.end());
        flags.assign(n, 0);
        for (int64_t j = 0; j < kt; ++j) flags[0xffffffffu - static_cast<uint32_t>(top[j])] |= 1;
        for (int64_t j = 0; j < kb; ++j) flags[static_cast<uint32_t>(bot[j])] |= 2;
        double s1 = 0, s2 = 0;
        int64_t jt = 0, jb = 0;
        for (int64_t i = 0; i < n; ++i) {
          if (flags[i] & 1) { out_top[jt++] = to_map(i); s1 += vals[i]; }
          if (flags[i] & 2) { out_bot[jb++] = to_map(i); s2 += vals[i]; }
        }
        *sum_top = s1;
        *sum_bot = s2;
        return;
      }
      if (kt > 0) {
        if (kt < n) std::nth_element(top.begin(), top.begin() + kt, top.end(), std::greater<uint64_t>());
        std::sort(top.begin(), top.begin() + kt, std::greater<uint64_t>());
        double s = 0;
        for (int64_t j = 0; j < kt; ++j) {
          const int64_t i = 0xffffffffu - static_cast<uint32_t>(top[j]);
          out_top[j] = to_map(i);
          s += vals[i];
        }
        *sum_top = s;
      }
      if (kb > 0) {
        if (kb < n) std::nth_element(bot.begin(), bot.begin() + kb, bot.end());
        std::sort(bot.begin(), bot.begin() + kb);
        double s = 0;
        for (int64_t j = 0; j < kb; ++j) {
          const int64_t i = static_cast<uint32_t>(bot[j]);
          out_bot[j] = to_map(i);
          s += vals[i];
        }
        *sum_bot = s;
      }
    } else {
      ptop.resize(n);
      for (int64_t i = 0; i < n; ++i) ptop[i] = PairKey{order_key(static_cast<double>(vals[i])), static_cast<uint32_t>(i)};
      pbot = ptop;
      auto greater = [](const PairKey& a, const PairKey& b) { return a.v != b.v ? a.v > b.v : a.i < b.i; };
      auto less = [](const PairKey& a, const PairKey& b) { return a.v != b.v ? a.v < b.v : a.i < b.i; };
      if (kt > 0) {
        if (kt < n) std::nth_element(ptop.begin(), ptop.begin() + kt, ptop.end(), greater);
        std::sort(ptop.begin(), ptop.begin() + kt, greater);
        double s = 0;
        for (int64_t j = 0; j < kt; ++j) {
          out_top[j] = to_map(ptop[j].i);
          s += vals[ptop[j].i];
        }
        *sum_top = s;
      }
      if (kb > 0) {
        if (kb < n) std::nth_element(pbot.begin(), pbot.begin() + kb, pbot.end(), less);
        std::sort(pbot.begin(), pbot.begin() + kb, less);
        double s = 0;
        for (int64_t j = 0; j < kb; ++j) {
          out_bot[j] = to_map(pbot[j].i);
          s += vals[pbot[j].i];
        }
        *sum_bot = s;
      }
    }
  }
};

template <typename T>
void forward_impl(const TensorView& x, const int64_t* vhw, const Params& p, int64_t KT, int64_t KB,
                  const TensorView& y, const TensorView& idx) {
  using Acc = typename acc_type<T>::type;
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t sB = x.stride(0), sC = x.stride(1), sH = x.stride(2), sW = x.stride(3);
  const T* X = x.ptr<const T>();
  T* Y = y.ptr<T>();
  int64_t* I = idx.ptr<int64_t>();
  const int64_t K = KT + KB;
  const int64_t grain = std::max<int64_t>(1, 4096 / (H * W));
  parallel_for(0, B * C, grain, [&](int64_t lo, int64_t hi) {
    RowSelector<T> sel;
    sel.vals.resize(H * W);
    for (int64_t r = lo; r < hi; ++r) {
      const int64_t b = r / C, c = r % C;
      const int64_t h = vhw ? vhw[2 * b] : H, w = vhw ? vhw[2 * b + 1] : W, n = h * w;
      const int64_t kt = resolve_k(p.kmax_count, p.kmax_frac, n, p.wildcat);
      const int64_t kb = resolve_k(p.kmin_count, p.kmin_frac, n, p.wildcat);
      const T* base = X + b * sB + c * sC;
      int64_t* out = I + r * K;
      if constexpr (std::is_same_v<T, float>) {
        if (kt <= 1 && kb <= 1 && KT == kt && KB == kb && sW == 1 && (sH == W || h == 1) && w == W) {
          int64_t imax, imin;
          minmax_first(base, n, &imax, &imin);
          if (kt == 1) out[0] = imax;
          if (kb == 1) out[KT] = imin;
          double ft, fb;
          side_scales(p, kt, kb, &ft, &fb);
          const double res = (kt ? ft * base[imax] : 0.0) + (kb ? fb * base[imin] : 0.0);
          Y[r] = static_cast<float>(res);
          continue;
        }
      }
      Acc* v = sel.vals.data();
      if (sW == 1 && (sH == W || h == 1) && w == W) {
        for (int64_t i = 0; i < n; ++i) v[i] = load_acc(base[i]);
      } else {
        for (int64_t iy = 0; iy < h; ++iy)
          for (int64_t ix = 0; ix < w; ++ix) v[iy * w + ix] = load_acc(base[iy * sH + ix * sW]);
      }
      std::fill(out, out + K, int64_t(-1));
      double st = 0, sb = 0;
      sel.select(n, w, W, kt, kb, p.ordered, out, out + KT, &st, &sb);
      double ft, fb;
      side_scales(p, kt, kb, &ft, &fb);
      const double res = (kt > 0 ? ft * st : 0.0) + (kb > 0 ? fb * sb : 0.0);
      Y[r] = store_acc<T>(static_cast<Acc>(res));
    }
  });
}

template <typename T>
void backward_impl(const TensorView& gy, const TensorView& idx, const int64_t* vhw, const Params& p, int64_t KT,
                   int64_t KB, const TensorView& gx) {
  using Acc = typename acc_type<T>::type;
  const int64_t B = gx.size(0), C = gx.size(1), H = gx.size(2), W = gx.size(3), HW = H * W;
  const T* G = gy.ptr<const T>();
  const int64_t* I = idx.ptr<const int64_t>();
  T* GX = gx.ptr<T>();
  const int64_t K = KT + KB;
  // Indices come from the caller: check them all before writing anything.
  parallel_for(0, B * C * K, 1 << 16, [&](int64_t lo, int64_t hi) {
    for (int64_t j = lo; j < hi; ++j)
      if (I[j] < -1 || I[j] >= HW) failf("weldon_pool: indices holds ", I[j], ", outside [-1, ", HW, ")");
  });
  const int64_t grain = std::max<int64_t>(1, 4096 / HW);
  parallel_for(0, B * C, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const int64_t b = r / C;
      const int64_t n = vhw ? vhw[2 * b] * vhw[2 * b + 1] : HW;
      const int64_t kt = resolve_k(p.kmax_count, p.kmax_frac, n, p.wildcat);
      const int64_t kb = resolve_k(p.kmin_count, p.kmin_frac, n, p.wildcat);
      double ft, fb;
      side_scales(p, kt, kb, &ft, &fb);
      T* out = GX + r * HW;
      std::fill(out, out + HW, store_acc<T>(Acc(0)));
      const double g = load_acc(G[r]);
      const int64_t* ix = I + r * K;
      const Acc gt = static_cast<Acc>(g * ft), gb = static_cast<Acc>(g * fb);
      // Top positions are distinct, and so are bottom positions; a position in both gets both.
      for (int64_t j = 0; j < kt; ++j)
        if (ix[j] >= 0) out[ix[j]] = store_acc<T>(gt);
      for (int64_t j = 0; j < kb; ++j) {
        const int64_t q = ix[KT + j];
        if (q < 0) continue;
        out[q] = store_acc<T>(load_acc(out[q]) + gb);
      }
    }
  });
}

}  // namespace

void forward_cpu(const TensorView& x, const int64_t* vhw, const Params& p, int64_t KT, int64_t KB,
                 const TensorView& y, const TensorView& idx) {
  SEMVIS_DISPATCH_FLOAT(x.dtype, "weldon_pool", forward_impl<scalar_t>(x, vhw, p, KT, KB, y, idx));
}

void backward_cpu(const TensorView& gy, const TensorView& idx, const int64_t* vhw, const Params& p, int64_t KT,
                  int64_t KB, const TensorView& gx) {
  SEMVIS_DISPATCH_FLOAT(gy.dtype, "weldon_pool", backward_impl<scalar_t>(gy, idx, vhw, p, KT, KB, gx));
}

}  // namespace weldon
}  // namespace semvis
