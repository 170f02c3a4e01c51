// Region pooling on the CPU. Work items are (image, block of kCB channels). The block's maps are
// loaded once, transposed to [cell][channel] in an accumulator-typed buffer (GeM: the clamped
// powers), so that every region reduction is a vertical max / sum over kCB contiguous lanes
// (auto-vectorized, no horizontal reductions) and the outputs y[b, r, c0 : c0 + kCB] are contiguous.
// The map is read from memory once whatever the number of regions; nothing per region is copied.
// The backward pass recomputes the arg-max (strict >, so ties keep the first row-major position)
// or GeM's sums and accumulates each cell's gradient over the regions in increasing order.
#include <algorithm>
#include <cmath>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "common/dispatch.h"
#include "common/parallel.h"
#include "region_pool.h"

namespace semvis {
namespace region_pool {
namespace {

constexpr int64_t kCB = 16;  // channels per work item (one cache line of float per cell)

// The extent of an image's boxes (the part of the map any region touches).
inline void extent(const Box* bx, int64_t n, int64_t* hmax, int64_t* wmax) {
  *hmax = 0;
  *wmax = 0;
  for (int64_t r = 0; r < n; ++r) {
    *hmax = std::max<int64_t>(*hmax, bx[r].y + bx[r].h);
    *wmax = std::max<int64_t>(*wmax, bx[r].x + bx[r].w);
  }
}

// buf[(y * W + x) * kCB + k] = x[b, c0 + k, y, x] for the used window; lanes k >= cb hold `fill`.
template <typename T, typename Acc>
void load_block(const T* base, int64_t sC, int64_t sH, int64_t sW, int64_t cb, int64_t hmax, int64_t wmax, int64_t W,
                Acc fill, Acc* buf) {
  for (int64_t k = 0; k < kCB; ++k) {
    if (k >= cb) {
      for (int64_t yy = 0; yy < hmax; ++yy)
        for (int64_t xx = 0; xx < wmax; ++xx) buf[(yy * W + xx) * kCB + k] = fill;
      continue;
    }
    const T* src = base + k * sC;
    for (int64_t yy = 0; yy < hmax; ++yy)
      for (int64_t xx = 0; xx < wmax; ++xx) buf[(yy * W + xx) * kCB + k] = load_acc(src[yy * sH + xx * sW]);
  }
}

// Per-lane max over a box; NaN sticks once seen (NaN ranks above +inf).
template <typename Acc>
inline void box_max(const Acc* buf, int64_t W, const Box& bx, Acc* m) {
  const Acc* first = buf + (static_cast<int64_t>(bx.y) * W + bx.x) * kCB;
  for (int64_t k = 0; k < kCB; ++k) m[k] = first[k];
  for (int64_t yy = bx.y; yy < bx.y + bx.h; ++yy) {
    const Acc* row = buf + yy * W * kCB;
    for (int64_t xx = bx.x; xx < bx.x + bx.w; ++xx) {
      const Acc* v = row + xx * kCB;
      for (int64_t k = 0; k < kCB; ++k) m[k] = (v[k] > m[k] || v[k] != v[k]) ? v[k] : m[k];
    }
  }
}

// Per-lane arg-max (flat cell index) over a box: the first maximum in row-major order; a NaN
// beats any number and the first NaN wins among NaNs.
template <typename Acc>
inline void box_argmax(const Acc* buf, int64_t W, const Box& bx, int32_t* idx) {
  Acc m[kCB];
  const int32_t i0 = static_cast<int32_t>(bx.y * W + bx.x);
  const Acc* first = buf + static_cast<int64_t>(i0) * kCB;
  for (int64_t k = 0; k < kCB; ++k) {
    m[k] = first[k];
    idx[k] = i0;
  }
  for (int64_t yy = bx.y; yy < bx.y + bx.h; ++yy) {
    for (int64_t xx = bx.x; xx < bx.x + bx.w; ++xx) {
      const int32_t i = static_cast<int32_t>(yy * W + xx);
      const Acc* v = buf + static_cast<int64_t>(i) * kCB;
      for (int64_t k = 0; k < kCB; ++k) {
        const bool take = v[k] > m[k] || (v[k] != v[k] && m[k] == m[k]);
        m[k] = take ? v[k] : m[k];
        idx[k] = take ? i : idx[k];
      }
    }
  }
}

#if defined(__SSE2__)
// float: the same two reductions with SSE2 (the x86-64 baseline), 4 x 4 lanes per cell.
template <>
inline void box_max<float>(const float* buf, int64_t W, const Box& bx, float* m) {
  const float* first = buf + (static_cast<int64_t>(bx.y) * W + bx.x) * kCB;
  __m128 mv[4], nan[4];
  for (int j = 0; j < 4; ++j) {
    mv[j] = _mm_loadu_ps(first + 4 * j);
    nan[j] = _mm_setzero_ps();
  }
  for (int64_t yy = bx.y; yy < bx.y + bx.h; ++yy) {
    const float* row = buf + yy * W * kCB;
    for (int64_t xx = bx.x; xx < bx.x + bx.w; ++xx) {
      const float* v = row + xx * kCB;
      for (int j = 0; j < 4; ++j) {
        const __m128 a = _mm_loadu_ps(v + 4 * j);
        mv[j] = _mm_max_ps(a, mv[j]);
        nan[j] = _mm_or_ps(nan[j], _mm_cmpunord_ps(a, a));
      }
    }
  }
  const __m128 qnan = _mm_set1_ps(NAN);
  for (int j = 0; j < 4; ++j)  // lanes that saw a NaN return NaN
    _mm_storeu_ps(m + 4 * j, _mm_or_ps(_mm_and_ps(nan[j], qnan), _mm_andnot_ps(nan[j], mv[j])));
}

template <>
inline void box_argmax<float>(const float* buf, int64_t W, const Box& bx, int32_t* idx) {
  const int32_t i0 = static_cast<int32_t>(bx.y * W + bx.x);
  const float* first = buf + static_cast<int64_t>(i0) * kCB;
  __m128 mv[4];
  __m128i iv[4];
  for (int j = 0; j < 4; ++j) {
    mv[j] = _mm_loadu_ps(first + 4 * j);
    iv[j] = _mm_set1_epi32(i0);
  }
  for (int64_t yy = bx.y; yy < bx.y + bx.h; ++yy) {
    for (int64_t xx = bx.x; xx < bx.x + bx.w; ++xx) {
      const int32_t i = static_cast<int32_t>(yy * W + xx);
      const float* v = buf + static_cast<int64_t>(i) * kCB;
      const __m128i ii = _mm_set1_epi32(i);
      for (int j = 0; j < 4; ++j) {
        const __m128 a = _mm_loadu_ps(v + 4 * j);
        // take: a > m, or a is the first NaN (a NaN while m is a number)
        const __m128 t = _mm_or_ps(_mm_cmpgt_ps(a, mv[j]), _mm_and_ps(_mm_cmpunord_ps(a, a), _mm_cmpord_ps(mv[j], mv[j])));
        const __m128i ti = _mm_castps_si128(t);
        mv[j] = _mm_or_ps(_mm_and_ps(t, a), _mm_andnot_ps(t, mv[j]));
        iv[j] = _mm_or_si128(_mm_and_si128(ti, ii), _mm_andnot_si128(ti, iv[j]));
      }
    }
  }
  for (int j = 0; j < 4; ++j) _mm_storeu_si128(reinterpret_cast<__m128i*>(idx + 4 * j), iv[j]);
}
#endif

template <typename Acc>
inline void box_sum(const Acc* buf, int64_t W, const Box& bx, Acc* s) {
  for (int64_t k = 0; k < kCB; ++k) s[k] = 0;
  for (int64_t yy = bx.y; yy < bx.y + bx.h; ++yy) {
    const Acc* row = buf + yy * W * kCB;
    for (int64_t xx = bx.x; xx < bx.x + bx.w; ++xx) {
      const Acc* v = row + xx * kCB;
      for (int64_t k = 0; k < kCB; ++k) s[k] += v[k];
    }
  }
}

// c^p with exact products for the common small integer exponents (GeM's p = 3).
template <typename Acc>
inline Acc powp(Acc e, Acc p) {
  if (p == Acc(1)) return e;
  if (p == Acc(2)) return e * e;
  if (p == Acc(3)) return e * e * e;
  return std::pow(e, p);
}

template <typename Acc>
inline Acc read_p(const TensorView* p) {
  return p ? *p->ptr<const Acc>() : Acc(1);
}

template <typename T>
void forward_impl(const TensorView& x, const Box* boxes, const int64_t* off, const Params& prm, const TensorView* p,
                  const TensorView& y) {
  using Acc = typename acc_type<T>::type;
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), R = y.size(1);
  const int64_t sB = x.stride(0), sC = x.stride(1), sH = x.stride(2), sW = x.stride(3);
  const int64_t NB = (C + kCB - 1) / kCB;
  const T* X = x.ptr<const T>();
  T* Y = y.ptr<T>();
  const Acc pv = read_p<Acc>(p), eps = static_cast<Acc>(prm.eps), inv_p = Acc(1) / pv;
  parallel_for(0, B * NB, 1, [&](int64_t lo, int64_t hi) {
    std::vector<Acc> buf(H * W * kCB);
    Acc m[kCB];
    for (int64_t item = lo; item < hi; ++item) {
      const int64_t b = item / NB, c0 = (item % NB) * kCB, cb = std::min(kCB, C - c0);
      const Box* bx = boxes + off[b];
      const int64_t n = off[b + 1] - off[b];
      int64_t hmax, wmax;
      extent(bx, n, &hmax, &wmax);
      load_block(X + b * sB + c0 * sC, sC, sH, sW, cb, hmax, wmax, W, Acc(1), buf.data());
      if (prm.gem) {
        for (int64_t yy = 0; yy < hmax; ++yy)
          for (int64_t i = yy * W * kCB; i < (yy * W + wmax) * kCB; ++i) {
            const Acc e = buf[i] < eps ? eps : buf[i];  // clamp(min=eps) keeps NaN, as torch does
            buf[i] = powp(e, pv);
          }
      }
      T* out = Y + b * R * C + c0;
      for (int64_t r = 0; r < n; ++r) {
        if (prm.gem) {
          box_sum(buf.data(), W, bx[r], m);
          const Acc area = static_cast<Acc>(bx[r].h) * static_cast<Acc>(bx[r].w);
          for (int64_t k = 0; k < cb; ++k) out[r * C + k] = store_acc<T>(std::pow(m[k] / area, inv_p));
        } else {
          box_max(buf.data(), W, bx[r], m);
          for (int64_t k = 0; k < cb; ++k) out[r * C + k] = store_acc<T>(m[k]);
        }
      }
      for (int64_t r = n; r < R; ++r)
        for (int64_t k = 0; k < cb; ++k) out[r * C + k] = store_acc<T>(Acc(0));
    }
  });
}

template <typename T>
void backward_impl(const TensorView& gy, const TensorView& x, const Box* boxes, const int64_t* off, const Params& prm,
                   const TensorView* p, const TensorView& gx, const TensorView* gp) {
  using Acc = typename acc_type<T>::type;
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), R = gy.size(1), HW = H * W;
  const int64_t sB = x.stride(0), sC = x.stride(1), sH = x.stride(2), sW = x.stride(3);
  const int64_t NB = (C + kCB - 1) / kCB;
  const T* X = x.ptr<const T>();
  const T* G = gy.ptr<const T>();
  T* GX = gx.ptr<T>();
  Acc* GP = gp ? gp->ptr<Acc>() : nullptr;
  const Acc pv = read_p<Acc>(p), eps = static_cast<Acc>(prm.eps), inv_p = Acc(1) / pv;
  parallel_for(0, B * NB, 1, [&](int64_t lo, int64_t hi) {
    std::vector<Acc> buf(HW * kCB), acc(HW * kCB), pw(prm.gem ? HW * kCB : 0), lg(prm.gem ? HW * kCB : 0);
    int32_t idx[kCB];
    Acc g[kCB], s0[kCB], s1[kCB], a[kCB], dp[kCB];
    for (int64_t item = lo; item < hi; ++item) {
      const int64_t b = item / NB, c0 = (item % NB) * kCB, cb = std::min(kCB, C - c0);
      const Box* bx = boxes + off[b];
      const int64_t n = off[b + 1] - off[b];
      int64_t hmax, wmax;
      extent(bx, n, &hmax, &wmax);
      load_block(X + b * sB + c0 * sC, sC, sH, sW, cb, hmax, wmax, W, Acc(1), buf.data());
      std::fill(acc.begin(), acc.end(), Acc(0));
      const T* grow = G + b * R * C + c0;
      if (prm.gem) {
        // GeM: y = m^(1/p), m = S0 / n, S0 = sum c^p, c = max(x, eps).
        //   dy/dx_i = y^(1-p) c_i^(p-1) / n  (0 where x_i < eps)
        //   dy/dp   = y / p * (S1 / S0 - ln(m) / p),  S1 = sum c^p ln c
        for (int64_t yy = 0; yy < hmax; ++yy)
          for (int64_t i = yy * W * kCB; i < (yy * W + wmax) * kCB; ++i) {
            const Acc e = buf[i] < eps ? eps : buf[i];
            pw[i] = powp(e, pv);
            lg[i] = pw[i] * std::log(e);
          }
        for (int64_t k = 0; k < kCB; ++k) dp[k] = 0;
      }
      for (int64_t r = 0; r < n; ++r) {
        for (int64_t k = 0; k < kCB; ++k) g[k] = k < cb ? load_acc(grow[r * C + k]) : Acc(0);
        if (!prm.gem) {
          box_argmax(buf.data(), W, bx[r], idx);
          for (int64_t k = 0; k < cb; ++k) acc[static_cast<int64_t>(idx[k]) * kCB + k] += g[k];
          continue;
        }
        box_sum(pw.data(), W, bx[r], s0);
        box_sum(lg.data(), W, bx[r], s1);
        const Acc area = static_cast<Acc>(bx[r].h) * static_cast<Acc>(bx[r].w);
        for (int64_t k = 0; k < cb; ++k) {
          const Acc mm = s0[k] / area, yv = std::pow(mm, inv_p);
          a[k] = g[k] * std::pow(yv, Acc(1) - pv) / area;
          dp[k] += g[k] * yv * inv_p * (s1[k] / s0[k] - std::log(mm) * inv_p);
        }
        for (int64_t k = cb; k < kCB; ++k) a[k] = 0;
        for (int64_t yy = bx[r].y; yy < bx[r].y + bx[r].h; ++yy)
          for (int64_t xx = bx[r].x; xx < bx[r].x + bx[r].w; ++xx) {
            Acc* q = acc.data() + (yy * W + xx) * kCB;
            for (int64_t k = 0; k < kCB; ++k) q[k] += a[k];
          }
      }
      if (prm.gem) {
        for (int64_t yy = 0; yy < hmax; ++yy)
          for (int64_t i = yy * W * kCB; i < (yy * W + wmax) * kCB; ++i) {
            const Acc e = buf[i] < eps ? eps : buf[i];
            // clamp passes the gradient where x >= eps (torch.clamp_min's rule)
            acc[i] = buf[i] >= eps ? acc[i] * pw[i] / e : Acc(0);
          }
        for (int64_t k = 0; k < cb; ++k) GP[b * C + c0 + k] = dp[k];
      }
      for (int64_t k = 0; k < cb; ++k) {
        T* out = GX + (b * C + c0 + k) * HW;
        for (int64_t i = 0; i < HW; ++i) out[i] = store_acc<T>(acc[i * kCB + k]);
      }
    }
  });
}

}  // namespace

void forward_cpu(const TensorView& x, const Box* boxes, const int64_t* off, const Params& prm, const TensorView* p,
                 const TensorView& y) {
  SEMVIS_DISPATCH_FLOAT(x.dtype, "region_pool", forward_impl<scalar_t>(x, boxes, off, prm, p, y));
}

void backward_cpu(const TensorView& gy, const TensorView& x, const Box* boxes, const int64_t* off, const Params& prm,
                  const TensorView* p, const TensorView& gx, const TensorView* gp) {
  SEMVIS_DISPATCH_FLOAT(x.dtype, "region_pool", backward_impl<scalar_t>(gy, x, boxes, off, prm, p, gx, gp));
}

}  // namespace region_pool
}  // namespace semvis
