// region_attention on the CPU: parallel over (image, block of CH channels). Each task holds the
// R x CH tiles of L and G of its block in L1 and makes two passes over them (max, then
// exp / sum / weighted sum); the loops run over the contiguous channel axis so that they
// vectorize (AVX2 + FMA clone chosen at run time, exp without a libm call).
// Selects in the vectorized loops need it (see common/vec_exp.h).
#pragma GCC optimize("no-trapping-math")
#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/dispatch.h"
#include "common/parallel.h"
#include "common/vec_exp.h"
#include "region_attention.h"

#define SEMVIS_INLINE __attribute__((always_inline)) inline

namespace semvis {
namespace region_attention {
namespace {

constexpr int64_t CH = 512;  // channels per task: 2 KiB rows keep the hardware prefetcher streaming

template <typename T>
using Acc = typename acc_type<T>::type;

template <typename T>
struct Args {
  const T* G;
  const T* L;     // null for mean / no-conv
  const T* gx;    // backward only
  T* x;           // forward only
  Acc<T>* m;      // [B, K] stats (null without)
  Acc<T>* s;
  T* gG;
  T* gL;
  const int64_t* len;
  int mode;
  Shape sh;
};

// One (image, channel block) of the forward pass.
template <typename T>
SEMVIS_INLINE void forward_block(const Args<T>& a, int64_t b, int64_t c0) {
  using A = Acc<T>;
  const int64_t R = a.sh.R, d = a.sh.d;
  const int64_t n = a.len ? a.len[b] : R;
  const int64_t cw = std::min(CH, d - c0);
  const T* G = a.G + b * R * d + c0;
  A acc[CH], mx[CH], sm[CH];
  for (int64_t c = 0; c < cw; ++c) acc[c] = 0;
  if (a.mode == kSoftmax || a.mode == kNoConv) {
    const T* L = (a.mode == kNoConv ? a.G : a.L) + b * R * d + c0;
    for (int64_t c = 0; c < cw; ++c) mx[c] = -std::numeric_limits<A>::infinity();
    for (int64_t r = 0; r < n; ++r) {
      const T* l = L + r * d;
      for (int64_t c = 0; c < cw; ++c) {
        const A v = load_acc(l[c]);
        mx[c] = (v > mx[c] || v != v) ? v : mx[c];  // a NaN logit sticks: the softmax is NaN
      }
    }
    for (int64_t c = 0; c < cw; ++c) sm[c] = 0;
    for (int64_t r = 0; r < n; ++r) {
      const T* l = L + r * d;
      const T* g = G + r * d;
      for (int64_t c = 0; c < cw; ++c) {
        const A e = exp_sat(load_acc(l[c]) - mx[c]);
        sm[c] += e;
        acc[c] += e * load_acc(g[c]);
      }
    }
    A* m = a.m + b * d + c0;
    A* s = a.s + b * d + c0;
    T* x = a.x + b * d + c0;
    for (int64_t c = 0; c < cw; ++c) {
      m[c] = mx[c];
      s[c] = sm[c];
      x[c] = store_acc<T>(acc[c] / sm[c]);
    }
    return;
  }
  if (a.mode == kOneAtt) {
    // One softmax per image over its n region logits, shared by all channels.
    const T* L = a.L + b * R;
    A mx1 = -std::numeric_limits<A>::infinity(), s1 = 0;
    for (int64_t r = 0; r < n; ++r) {
      const A v = load_acc(L[r]);
      mx1 = (v > mx1 || v != v) ? v : mx1;
    }
    for (int64_t r = 0; r < n; ++r) s1 += exp_sat(load_acc(L[r]) - mx1);
    const A inv = A(1) / s1;
    for (int64_t r = 0; r < n; ++r) {
      const A w = exp_sat(load_acc(L[r]) - mx1) * inv;
      const T* g = G + r * d;
      for (int64_t c = 0; c < cw; ++c) acc[c] += w * load_acc(g[c]);
    }
    if (c0 == 0) {
      a.m[b] = mx1;
      a.s[b] = s1;
    }
  } else if (a.mode == kNoSoftmax) {
    const T* L = a.L + b * R * d + c0;
    for (int64_t r = 0; r < n; ++r) {
      const T* l = L + r * d;
      const T* g = G + r * d;
      for (int64_t c = 0; c < cw; ++c) acc[c] += load_acc(l[c]) * load_acc(g[c]);
    }
  } else {  // kMean
    for (int64_t r = 0; r < n; ++r) {
      const T* g = G + r * d;
      for (int64_t c = 0; c < cw; ++c) acc[c] += load_acc(g[c]);
    }
    const A inv = A(1) / static_cast<A>(n);
    for (int64_t c = 0; c < cw; ++c) acc[c] *= inv;
  }
  T* x = a.x + b * d + c0;
  for (int64_t c = 0; c < cw; ++c) x[c] = store_acc<T>(acc[c]);
}

// One (image, channel block) of the backward pass, every mode but 1-att.
template <typename T>
SEMVIS_INLINE void backward_block(const Args<T>& a, int64_t b, int64_t c0, Acc<T>* abuf) {
  using A = Acc<T>;
  const int64_t R = a.sh.R, d = a.sh.d;
  const int64_t n = a.len ? a.len[b] : R;
  const int64_t cw = std::min(CH, d - c0);
  const T* G = a.G + b * R * d + c0;
  const T* gxp = a.gx + b * d + c0;
  T* gG = a.gG + b * R * d + c0;
  T* gL = a.gL ? a.gL + b * R * d + c0 : nullptr;
  A gx[CH];
  for (int64_t c = 0; c < cw; ++c) gx[c] = load_acc(gxp[c]);
  if (a.mode == kSoftmax || a.mode == kNoConv) {
    const T* L = (a.mode == kNoConv ? a.G : a.L) + b * R * d + c0;
    const A* m = a.m + b * d + c0;
    const A* s = a.s + b * d + c0;
    A inv[CH], x[CH];
    for (int64_t c = 0; c < cw; ++c) {
      inv[c] = A(1) / s[c];
      x[c] = 0;
    }
    // The weights once into the tile buffer, and x again in the accumulation type.
    for (int64_t r = 0; r < n; ++r) {
      const T* l = L + r * d;
      const T* g = G + r * d;
      A* w = abuf + r * CH;
      for (int64_t c = 0; c < cw; ++c) {
        w[c] = exp_sat(load_acc(l[c]) - m[c]) * inv[c];
        x[c] += w[c] * load_acc(g[c]);
      }
    }
    const bool noconv = a.mode == kNoConv;
    for (int64_t r = 0; r < n; ++r) {
      const T* g = G + r * d;
      const A* w = abuf + r * CH;
      T* gg = gG + r * d;
      T* gl = noconv ? nullptr : gL + r * d;
      for (int64_t c = 0; c < cw; ++c) {
        const A ga = gx[c] * w[c];
        const A gdl = ga * (load_acc(g[c]) - x[c]);  // d x / d L = a (G - x)
        if (noconv) {
          gg[c] = store_acc<T>(ga + gdl);
        } else {
          gg[c] = store_acc<T>(ga);
          gl[c] = store_acc<T>(gdl);
        }
      }
    }
  } else if (a.mode == kNoSoftmax) {
    const T* L = a.L + b * R * d + c0;
    for (int64_t r = 0; r < n; ++r) {
      const T* l = L + r * d;
      const T* g = G + r * d;
      T* gg = gG + r * d;
      T* gl = gL + r * d;
      for (int64_t c = 0; c < cw; ++c) {
        gg[c] = store_acc<T>(gx[c] * load_acc(l[c]));
        gl[c] = store_acc<T>(gx[c] * load_acc(g[c]));
      }
    }
  } else {  // kMean
    const A inv = A(1) / static_cast<A>(n);
    for (int64_t r = 0; r < n; ++r) {
      T* gg = gG + r * d;
      for (int64_t c = 0; c < cw; ++c) gg[c] = store_acc<T>(gx[c] * inv);
    }
  }
  // Padded regions: exactly zero gradient.
  const T zero = store_acc<T>(A(0));
  for (int64_t r = n; r < R; ++r) {
    T* gg = gG + r * d;
    for (int64_t c = 0; c < cw; ++c) gg[c] = zero;
    if (gL && a.mode != kNoConv) {
      T* gl = gL + r * d;
      for (int64_t c = 0; c < cw; ++c) gl[c] = zero;
    }
  }
}

// 1-att backward for one image: gG = gx a_r, gL[r] = a_r sum_k gx[k] (G[r, k] - x[k]).
template <typename T>
void backward_one_att(const Args<T>& a, int64_t b, std::vector<Acc<T>>& xbuf) {
  using A = Acc<T>;
  const int64_t R = a.sh.R, d = a.sh.d;
  const int64_t n = a.len ? a.len[b] : R;
  const T* G = a.G + b * R * d;
  const T* L = a.L + b * R;
  const T* gx = a.gx + b * d;
  T* gG = a.gG + b * R * d;
  T* gL = a.gL + b * R;
  const A mx = a.m[b], inv = A(1) / a.s[b];
  xbuf.assign(d, A(0));
  for (int64_t r = 0; r < n; ++r) {
    const A w = exp_sat(load_acc(L[r]) - mx) * inv;
    const T* g = G + r * d;
    for (int64_t c = 0; c < d; ++c) xbuf[c] += w * load_acc(g[c]);
  }
  const T zero = store_acc<T>(A(0));
  for (int64_t r = 0; r < R; ++r) {
    T* gg = gG + r * d;
    if (r >= n) {
      for (int64_t c = 0; c < d; ++c) gg[c] = zero;
      gL[r] = zero;
      continue;
    }
    const A w = exp_sat(load_acc(L[r]) - mx) * inv;
    const T* g = G + r * d;
    double dot = 0;  // a sum over all d channels: double keeps it order-insensitive enough
    for (int64_t c = 0; c < d; ++c) {
      const A gxc = load_acc(gx[c]);
      gg[c] = store_acc<T>(gxc * w);
      dot += static_cast<double>(gxc) * static_cast<double>(load_acc(g[c]) - xbuf[c]);
    }
    gL[r] = store_acc<T>(static_cast<A>(w * dot));
  }
}

// Two instantiations of each loop nest: baseline and AVX2 + FMA, picked at run time.
template <typename T>
void forward_range(const Args<T>& a, int64_t nchunks, int64_t lo, int64_t hi) {
  for (int64_t t = lo; t < hi; ++t) forward_block(a, t / nchunks, (t % nchunks) * CH);
}
template <typename T>
void backward_range(const Args<T>& a, int64_t nchunks, int64_t lo, int64_t hi) {
  std::vector<Acc<T>> buf(static_cast<size_t>(a.sh.R * CH));
  for (int64_t t = lo; t < hi; ++t) backward_block(a, t / nchunks, (t % nchunks) * CH, buf.data());
}
#if defined(__x86_64__)
template <typename T>
__attribute__((target("avx2,fma"))) void forward_range_avx2(const Args<T>& a, int64_t nchunks, int64_t lo,
                                                            int64_t hi) {
  for (int64_t t = lo; t < hi; ++t) forward_block(a, t / nchunks, (t % nchunks) * CH);
}
template <typename T>
__attribute__((target("avx2,fma"))) void backward_range_avx2(const Args<T>& a, int64_t nchunks, int64_t lo,
                                                             int64_t hi) {
  std::vector<Acc<T>> buf(static_cast<size_t>(a.sh.R * CH));
  for (int64_t t = lo; t < hi; ++t) backward_block(a, t / nchunks, (t % nchunks) * CH, buf.data());
}
bool use_avx2() {
  static const bool v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return v;
}
#endif

// The gradient buffers are fresh allocations the size of G, written once: ask for transparent huge
// pages (where the system leaves it to madvise) so that first touch costs 1 fault per 2 MiB, not
// per 4 KiB. Advisory only; without THP nothing changes.
void advise_huge_pages(void* p, size_t bytes) {
#if defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(1) << 21;
  if (bytes < 2 * kHuge) return;
  const uintptr_t lo = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t hi = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(kHuge - 1);
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

template <typename T>
Args<T> make_args(const TensorView& G, const TensorView* L, const int64_t* len, int mode, const Shape& sh) {
  Args<T> a{};
  a.G = G.ptr<const T>();
  a.L = L ? L->ptr<const T>() : nullptr;
  a.len = len;
  a.mode = mode;
  a.sh = sh;
  return a;
}

}  // namespace

void forward_cpu(const TensorView& G, const TensorView* L, const int64_t* len, int mode, const Shape& sh,
                 const TensorView& x, const TensorView& m, const TensorView& s) {
  SEMVIS_DISPATCH_FLOAT(G.dtype, "region_attention", {
    Args<scalar_t> a = make_args<scalar_t>(G, L, len, mode, sh);
    a.x = x.ptr<scalar_t>();
    a.m = has_stats(mode) ? m.ptr<Acc<scalar_t>>() : nullptr;
    a.s = has_stats(mode) ? s.ptr<Acc<scalar_t>>() : nullptr;
    const int64_t nchunks = (sh.d + CH - 1) / CH;
    const int64_t grain = 2;
    parallel_for(0, sh.B * nchunks, grain, [&](int64_t lo, int64_t hi) {
#if defined(__x86_64__)
      if (use_avx2()) return forward_range_avx2(a, nchunks, lo, hi);
#endif
      forward_range(a, nchunks, lo, hi);
    });
  });
}

void backward_cpu(const TensorView& gx, const TensorView& G, const TensorView* L, const int64_t* len, int mode,
                  const Shape& sh, const TensorView& m, const TensorView& s, const TensorView& gG,
                  const TensorView* gL) {
  SEMVIS_DISPATCH_FLOAT(G.dtype, "region_attention", {
    Args<scalar_t> a = make_args<scalar_t>(G, L, len, mode, sh);
    a.gx = gx.ptr<const scalar_t>();
    a.m = has_stats(mode) ? m.ptr<Acc<scalar_t>>() : nullptr;
    a.s = has_stats(mode) ? s.ptr<Acc<scalar_t>>() : nullptr;
    a.gG = gG.ptr<scalar_t>();
    a.gL = gL ? gL->ptr<scalar_t>() : nullptr;
    advise_huge_pages(a.gG, static_cast<size_t>(gG.numel()) * sizeof(scalar_t));
    if (a.gL) advise_huge_pages(a.gL, static_cast<size_t>(gL->numel()) * sizeof(scalar_t));
    if (mode == kOneAtt) {
      parallel_for(0, sh.B, 1, [&](int64_t lo, int64_t hi) {
        std::vector<Acc<scalar_t>> xbuf;
        for (int64_t b = lo; b < hi; ++b) backward_one_att(a, b, xbuf);
      });
    } else {
      const int64_t nchunks = (sh.d + CH - 1) / CH;
      const int64_t grain = 2;
      parallel_for(0, sh.B * nchunks, grain, [&](int64_t lo, int64_t hi) {
#if defined(__x86_64__)
        if (use_avx2()) return backward_range_avx2(a, nchunks, lo, hi);
#endif
        backward_range(a, nchunks, lo, hi);
      });
    }
  });
}

}  // namespace region_attention
}  // namespace semvis
