// WELDON on the CPU: parallel over (batch, channel) rows. Each row's values are turned into
// order-preserving 32-bit keys (NaN above +inf, -0.0 == +0.0). k = 1 is a single AVX2 pass; a
// larger k finds the threshold of each side by the bitwise search of common/select_cpu.h (both
// sides in one AVX2 loop, 32 compares per cell at most, early exit when a candidate splits
// exactly k), then reads the winners back in row-major order (lowest index first among keys equal
// to the threshold). Measured against nth_element on packed (key, index) words at 13 x 13,
// k = 30 %: ~20x less time per row. The winners are sorted only when the caller wants them
// ordered. double (gradcheck) keeps a partial selection on (key, index) pairs.
#include <algorithm>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <type_traits>
#include <vector>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "common/dispatch.h"
#include "common/parallel.h"
#include "common/select_cpu.h"
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

// Selection keys for double: (value key, index) pairs, compared lexicographically.
struct PairKey {
  uint64_t v;
  uint32_t i;
};

// Order keys of n floats into top[] (value order) and bot[] (reversed), zero-padded to a
// multiple of 8 for the vector loops.
#if defined(__x86_64__)
__attribute__((target("avx2"))) void keys_avx2(const float* v, int64_t n, uint32_t* top, uint32_t* bot) {
  const __m256i ones = _mm256_set1_epi32(-1);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i k = order_keys8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + i)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(top + i), k);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(bot + i), _mm256_xor_si256(k, ones));
  }
  for (; i < n; ++i) {
    top[i] = order_key(v[i]);
    bot[i] = ~top[i];
  }
}
#endif

void row_keys(const float* v, int64_t n, uint32_t* top, uint32_t* bot) {
  const int64_t padded = (n + 7) / 8 * 8;
#if defined(__x86_64__)
  static const bool has_avx2 = __builtin_cpu_supports("avx2");
  if (has_avx2) {
    keys_avx2(v, n, top, bot);
  } else
#endif
  {
    for (int64_t i = 0; i < n; ++i) {
      top[i] = order_key(v[i]);
      bot[i] = ~top[i];
    }
  }
  for (int64_t i = n; i < padded; ++i) top[i] = bot[i] = 0;
}

template <typename T>
struct RowSelector {
  using Acc = typename acc_type<T>::type;
  std::vector<Acc> vals;
  std::vector<uint32_t> top, bot;   // 32-bit value keys (top order / reversed), padded
  std::vector<uint8_t> mask;        // selected cells, 8 per byte
  std::vector<uint64_t> packed;     // ordered mode: (key, index) words of the winners
  std::vector<PairKey> ptop, pbot;  // double

  // Emits one side: indices (map coordinates) into out, returns the sum of the values.
  // Row-major order unless ordered (then best first: key desc, index asc).
  double emit(const Acc* v, const uint32_t* keys, int64_t n, int64_t k, const select::Threshold& t, bool ordered,
              int64_t w, int64_t W, int32_t* out) {
    auto to_map = [&](int64_t i) { return static_cast<int32_t>((i / w) * W + (i % w)); };
    const int64_t nv = (n + 7) / 8;
    mask.resize(nv);
    select::selected_masks(keys, n, t, mask.data());
    if (!ordered) {
      double s = 0;
      int64_t j = 0;
      for (int64_t b = 0; b < nv; ++b) {
        unsigned m = mask[b];
        while (m) {
          const int64_t i = 8 * b + __builtin_ctz(m);
          m &= m - 1;
          out[j++] = to_map(i);
          s += v[i];
        }
      }
      return s;
    }
    packed.clear();
    for (int64_t b = 0; b < nv; ++b) {
      unsigned m = mask[b];
      while (m) {
        const int64_t i = 8 * b + __builtin_ctz(m);
        m &= m - 1;
        packed.push_back((static_cast<uint64_t>(keys[i]) << 32) | (0xffffffffu - static_cast<uint32_t>(i)));
      }
    }
    std::sort(packed.begin(), packed.end(), std::greater<uint64_t>());
    double s = 0;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t i = 0xffffffffu - static_cast<uint32_t>(packed[j]);
      out[j] = to_map(i);
      s += v[i];
    }
    return s;
  }

  // Selects the kt largest and kb smallest of v[0..n) (v = vals.data() or the input row itself),
  // writes the indices (map coordinates) into out_top/out_bot and returns the two sums.
  void select(const Acc* v, int64_t n, int64_t w, int64_t W, int64_t kt, int64_t kb, bool ordered, int32_t* out_top,
              int32_t* out_bot, double* sum_top, double* sum_bot) {
    if constexpr (sizeof(Acc) == 4) {
      kt = std::min(kt, n);
      kb = std::min(kb, n);
      const int64_t padded = (n + 7) / 8 * 8;
      top.resize(padded);
      bot.resize(padded);
      row_keys(v, n, top.data(), bot.data());
      select::Threshold tt, tb;
      select::kth_largest_u32_pair(top.data(), bot.data(), n, kt, kb, &tt, &tb);
      if (kt > 0) *sum_top = emit(v, top.data(), n, kt, tt, ordered, w, W, out_top);
      if (kb > 0) *sum_bot = emit(v, bot.data(), n, kb, tb, ordered, w, W, out_bot);
    } else {
      auto to_map = [&](int64_t i) { return static_cast<int32_t>((i / w) * W + (i % w)); };
      ptop.resize(n);
      for (int64_t i = 0; i < n; ++i) ptop[i] = PairKey{order_key(static_cast<double>(v[i])), static_cast<uint32_t>(i)};
      pbot = ptop;
      auto greater = [](const PairKey& a, const PairKey& b) { return a.v != b.v ? a.v > b.v : a.i < b.i; };
      auto less = [](const PairKey& a, const PairKey& b) { return a.v != b.v ? a.v < b.v : a.i < b.i; };
      if (kt > 0) {
        select::select_best(ptop.data(), n, kt, true, greater);
        double s = 0;
        for (int64_t j = 0; j < kt; ++j) {
          out_top[j] = to_map(ptop[j].i);
          s += v[ptop[j].i];
        }
        *sum_top = s;
      }
      if (kb > 0) {
        select::select_best(pbot.data(), n, kb, true, less);
        double s = 0;
        for (int64_t j = 0; j < kb; ++j) {
          out_bot[j] = to_map(pbot[j].i);
          s += v[pbot[j].i];
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
  int32_t* I = idx.ptr<int32_t>();
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
      int32_t* out = I + r * K;
      if constexpr (std::is_same_v<T, float>) {
        if (kt <= 1 && kb <= 1 && KT == kt && KB == kb && sW == 1 && (sH == W || h == 1) && w == W) {
          int64_t imax, imin;
          minmax_first(base, n, &imax, &imin);
          if (kt == 1) out[0] = static_cast<int32_t>(imax);
          if (kb == 1) out[KT] = static_cast<int32_t>(imin);
          double ft, fb;
          side_scales(p, kt, kb, &ft, &fb);
          const double res = (kt ? ft * base[imax] : 0.0) + (kb ? fb * base[imin] : 0.0);
          Y[r] = static_cast<float>(res);
          continue;
        }
      }
      const Acc* v = sel.vals.data();
      Acc* buf = sel.vals.data();
      if (std::is_same_v<T, Acc> && sW == 1 && (sH == W || h == 1) && w == W) {
        v = reinterpret_cast<const Acc*>(base);  // contiguous row of the accumulator type: read in place
      } else if (sW == 1 && (sH == W || h == 1) && w == W) {
        for (int64_t i = 0; i < n; ++i) buf[i] = load_acc(base[i]);
      } else {
        for (int64_t iy = 0; iy < h; ++iy)
          for (int64_t ix = 0; ix < w; ++ix) buf[iy * w + ix] = load_acc(base[iy * sH + ix * sW]);
      }
      std::fill(out, out + K, int32_t(-1));
      double st = 0, sb = 0;
      sel.select(v, n, w, W, kt, kb, p.ordered, out, out + KT, &st, &sb);
      double ft, fb;
      side_scales(p, kt, kb, &ft, &fb);
      const double res = (kt > 0 ? ft * st : 0.0) + (kb > 0 ? fb * sb : 0.0);
      Y[r] = store_acc<T>(static_cast<Acc>(res));
    }
  });
}

// The gradient map is a fresh allocation written once: on Linux, page faults on its first touch
// cost more than the kernel (measured: 150 ms of 200 at 64 x 2400 x 13 x 13). Asking for
// transparent huge pages on the whole 2 MiB pages inside it (what torch does for every large
// allocation under THP_MEM_ALLOC_ENABLE=1) cuts the faults 512-fold. A hint: ignored where THP is
// off, and harmless to the memory's owner.
void advise_huge_pages(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  if (bytes < 2 * kHuge) return;
  const uintptr_t lo = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t hi = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(kHuge - 1);
  if (hi > lo) (void)madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

template <typename T>
void backward_impl(const TensorView& gy, const TensorView& idx, const int64_t* vhw, const Params& p, int64_t KT,
                   int64_t KB, const TensorView& gx) {
  using Acc = typename acc_type<T>::type;
  const int64_t B = gx.size(0), C = gx.size(1), H = gx.size(2), W = gx.size(3), HW = H * W;
  const T* G = gy.ptr<const T>();
  const int32_t* I = idx.ptr<const int32_t>();
  T* GX = gx.ptr<T>();
  const int64_t K = KT + KB;
  // Indices come from the caller: the host entry (weldon.cpp, check_indices) has refused any outside
  // [-1, HW) before this runs, on every device.
  advise_huge_pages(GX, static_cast<size_t>(B * C * HW) * sizeof(T));
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
      const int32_t* ix = I + r * K;
      const Acc gt = static_cast<Acc>(g * ft), gb = static_cast<Acc>(g * fb);
      // The forward's positions are distinct within a side, but a caller's may repeat, and a position
      // can be on both sides (kmax + kmin > n): every occurrence adds its share, top slots first,
      // then bottom slots, each add rounded to T (the CUDA kernel adds in the same order).
      for (int64_t j = 0; j < kt; ++j) {
        const int32_t q = ix[j];
        if (q < 0) continue;
        out[q] = store_acc<T>(load_acc(out[q]) + gt);
      }
      for (int64_t j = 0; j < kb; ++j) {
        const int32_t q = ix[KT + j];
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
