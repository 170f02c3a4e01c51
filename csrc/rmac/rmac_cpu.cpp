// Region pooling on the CPU: parallel over (batch, channel) rows. Each row's map is loaded once
// into a small accumulator-typed buffer (GeM: the clamped powers) and every region of the image
// is reduced from it, so the map is read from memory once whatever the number of regions. The
// backward pass rebuilds the same per-region quantities and accumulates the gradient of each
// cell over the regions in increasing order (deterministic).
#include <algorithm>
#include <cmath>
#include <vector>

#include "common/dispatch.h"
#include "common/parallel.h"
#include "rmac.h"

namespace semvis {
namespace rmac {
namespace {

template <typename Acc>
inline bool beats(Acc v, Acc best) {
  // larger, or a NaN over a number (NaN ranks above +inf); equal values keep the earlier position
  return v > best || (v != v && best == best);
}

// Arg-max of box `bx` over the row buffer v (row-major, row stride W). Ties: lowest position.
template <typename Acc>
inline int64_t box_argmax(const Acc* v, int64_t W, const Box& bx) {
  int64_t bi = static_cast<int64_t>(bx.y) * W + bx.x;
  Acc best = v[bi];
  for (int64_t yy = bx.y; yy < bx.y + bx.h; ++yy) {
    const Acc* row = v + yy * W;
    for (int64_t xx = bx.x; xx < bx.x + bx.w; ++xx) {
      if (beats(row[xx], best)) {
        best = row[xx];
        bi = yy * W + xx;
      }
    }
  }
  return bi;
}

template <typename Acc>
inline Acc box_sum(const Acc* v, int64_t W, const Box& bx) {
  Acc s = 0;
  for (int64_t yy = bx.y; yy < bx.y + bx.h; ++yy) {
    const Acc* row = v + yy * W;
    for (int64_t xx = bx.x; xx < bx.x + bx.w; ++xx) s += row[xx];
  }
  return s;
}

// Loads the used part of one (b, c) map (rows < hmax, columns < wmax) as Acc.
template <typename T, typename Acc>
inline void load_row(const T* base, int64_t sH, int64_t sW, int64_t hmax, int64_t wmax, int64_t W, Acc* v) {
  for (int64_t yy = 0; yy < hmax; ++yy)
    for (int64_t xx = 0; xx < wmax; ++xx) v[yy * W + xx] = load_acc(base[yy * sH + xx * sW]);
}

// The extent of an image's boxes (the part of the map any region touches).
inline void extent(const Box* bx, int64_t n, int64_t* hmax, int64_t* wmax) {
  *hmax = 0;
  *wmax = 0;
  for (int64_t r = 0; r < n; ++r) {
    *hmax = std::max<int64_t>(*hmax, bx[r].y + bx[r].h);
    *wmax = std::max<int64_t>(*wmax, bx[r].x + bx[r].w);
  }
}

template <typename Acc>
inline Acc read_p(const TensorView* p) {
  return p ? static_cast<Acc>(*p->ptr<const Acc>()) : Acc(1);
}

template <typename T>
void forward_impl(const TensorView& x, const Box* boxes, const int64_t* off, const Params& prm, const TensorView* p,
                  const TensorView& y) {
  using Acc = typename acc_type<T>::type;
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), R = y.size(1);
  const int64_t sB = x.stride(0), sC = x.stride(1), sH = x.stride(2), sW = x.stride(3);
  const T* X = x.ptr<const T>();
  T* Y = y.ptr<T>();
  const Acc pv = read_p<Acc>(p), eps = static_cast<Acc>(prm.eps), inv_p = Acc(1) / pv;
  const int64_t grain = std::max<int64_t>(1, 16384 / (H * W + R));
  parallel_for(0, B * C, grain, [&](int64_t lo, int64_t hi) {
    std::vector<Acc> buf(H * W);
    Acc* v = buf.data();
    for (int64_t row = lo; row < hi; ++row) {
      const int64_t b = row / C, c = row % C;
      const Box* bx = boxes + off[b];
      const int64_t n = off[b + 1] - off[b];
      int64_t hmax, wmax;
      extent(bx, n, &hmax, &wmax);
      load_row(X + b * sB + c * sC, sH, sW, hmax, wmax, W, v);
      T* out = Y + b * R * C + c;
      if (prm.gem) {
        for (int64_t yy = 0; yy < hmax; ++yy)
          for (int64_t xx = 0; xx < wmax; ++xx) {
            Acc& e = v[yy * W + xx];
            e = std::pow(e < eps ? eps : e, pv);  // clamp(min=eps) keeps NaN, as torch does
          }
        for (int64_t r = 0; r < n; ++r) {
          const Acc area = static_cast<Acc>(bx[r].h) * static_cast<Acc>(bx[r].w);
          out[r * C] = store_acc<T>(std::pow(box_sum(v, W, bx[r]) / area, inv_p));
        }
      } else {
        for (int64_t r = 0; r < n; ++r) out[r * C] = store_acc<T>(v[box_argmax(v, W, bx[r])]);
      }
      for (int64_t r = n; r < R; ++r) out[r * C] = store_acc<T>(Acc(0));
    }
  });
}

template <typename T>
void backward_impl(const TensorView& gy, const TensorView& x, const Box* boxes, const int64_t* off, const Params& prm,
                   const TensorView* p, const TensorView& gx, const TensorView* gp) {
  using Acc = typename acc_type<T>::type;
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), R = gy.size(1), HW = H * W;
  const int64_t sB = x.stride(0), sC = x.stride(1), sH = x.stride(2), sW = x.stride(3);
  const T* X = x.ptr<const T>();
  const T* G = gy.ptr<const T>();
  T* GX = gx.ptr<T>();
  Acc* GP = gp ? gp->ptr<Acc>() : nullptr;
  const Acc pv = read_p<Acc>(p), eps = static_cast<Acc>(prm.eps), inv_p = Acc(1) / pv;
  const int64_t grain = std::max<int64_t>(1, 16384 / (HW + R));
  parallel_for(0, B * C, grain, [&](int64_t lo, int64_t hi) {
    std::vector<Acc> buf(HW), acc(HW), pw(prm.gem ? HW : 0), lg(prm.gem ? HW : 0);
    Acc* v = buf.data();
    for (int64_t row = lo; row < hi; ++row) {
      const int64_t b = row / C, c = row % C;
      const Box* bx = boxes + off[b];
      const int64_t n = off[b + 1] - off[b];
      int64_t hmax, wmax;
      extent(bx, n, &hmax, &wmax);
      load_row(X + b * sB + c * sC, sH, sW, hmax, wmax, W, v);
      std::fill(acc.begin(), acc.end(), Acc(0));
      const T* g = G + b * R * C + c;
      if (!prm.gem) {
        for (int64_t r = 0; r < n; ++r) acc[box_argmax(v, W, bx[r])] += load_acc(g[r * C]);
        T* out = GX + row * HW;
        for (int64_t i = 0; i < HW; ++i) out[i] = store_acc<T>(acc[i]);
        continue;
      }
      // GeM: y = m^(1/p), m = S0 / n, S0 = sum c^p, c = max(x, eps).
      //   dy/dx_i = y^(1-p) c_i^(p-1) / n  (0 where x_i < eps)
      //   dy/dp   = y / p * (S1 / S0 - ln(m) / p),  S1 = sum c^p ln c
      for (int64_t yy = 0; yy < hmax; ++yy)
        for (int64_t xx = 0; xx < wmax; ++xx) {
          const int64_t i = yy * W + xx;
          const Acc e = v[i] < eps ? eps : v[i];
          pw[i] = std::pow(e, pv);
          lg[i] = pw[i] * std::log(e);
        }
      Acc dp = 0;
      for (int64_t r = 0; r < n; ++r) {
        const Acc gr = load_acc(g[r * C]);
        const Acc area = static_cast<Acc>(bx[r].h) * static_cast<Acc>(bx[r].w);
        const Acc s0 = box_sum(pw.data(), W, bx[r]), s1 = box_sum(lg.data(), W, bx[r]);
        const Acc m = s0 / area, yv = std::pow(m, inv_p);
        const Acc a = gr * std::pow(yv, Acc(1) - pv) / area;
        for (int64_t yy = bx[r].y; yy < bx[r].y + bx[r].h; ++yy)
          for (int64_t xx = bx[r].x; xx < bx[r].x + bx[r].w; ++xx) acc[yy * W + xx] += a;
        dp += gr * yv * inv_p * (s1 / s0 - std::log(m) * inv_p);
      }
      T* out = GX + row * HW;
      for (int64_t i = 0; i < HW; ++i) out[i] = store_acc<T>(Acc(0));
      for (int64_t yy = 0; yy < hmax; ++yy)
        for (int64_t xx = 0; xx < wmax; ++xx) {
          const int64_t i = yy * W + xx;
          const Acc e = v[i] < eps ? eps : v[i];
          // clamp passes the gradient where x >= eps (torch.clamp_min's rule)
          out[i] = store_acc<T>(v[i] >= eps ? acc[i] * pw[i] / e : Acc(0));
        }
      GP[row] = dp;
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

}  // namespace rmac
}  // namespace semvis
