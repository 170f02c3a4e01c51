// Region pooling on the GPU: one warp per (batch, channel) row, all regions of all images in one
// launch. Grid regions are computed in the kernel from each image's valid size (the same float32
// arithmetic as the host, region_pool.h), explicit boxes are read from [B, R, 4]. For every region the
// warp strides over the box cells and reduces (max with lowest-position ties, or the GeM sums) with
// shuffles; the map is re-read per region through L1/L2, never copied. The backward pass handles
// regions in chunks of 32: first each region's arg-max (or GeM coefficient) goes to shared memory,
// then each lane sums, for its cells, the contributions of the chunk's regions in increasing order
// (deterministic; no atomics).
#include <cfloat>

#include "common/cuda_utils.h"
#include "common/dispatch.h"
#include "region_pool.h"

namespace semvis {
namespace region_pool {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kChunk = 32;

__device__ __forceinline__ float acc_pow(float a, float b) { return powf(a, b); }
__device__ __forceinline__ double acc_pow(double a, double b) { return pow(a, b); }
__device__ __forceinline__ float acc_log(float a) { return logf(a); }
__device__ __forceinline__ double acc_log(double a) { return log(a); }

template <typename Acc>
__device__ __forceinline__ bool pair_better(Acc va, int64_t ia, Acc vb, int64_t ib) {
  const bool an = va != va, bn = vb != vb;
  if (an != bn) return an;  // NaN ranks above everything
  if (!an && va != vb) return va > vb;
  return ia < ib;
}

template <typename Acc>
__device__ __forceinline__ Acc warp_sum(Acc v) {
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  return v;
}

struct Geometry {
  int64_t B, C, H, W, R, sB, sC, sH, sW;
};

__device__ __forceinline__ void image_size(const DevRegions& d, const Geometry& g, int64_t b, int64_t* h, int64_t* w) {
  *h = g.H;
  *w = g.W;
  if (d.vhw) {  // validated on the host; clamped again so that bad values never read out of bounds
    *h = min(max(d.vhw[2 * b], int64_t(1)), g.H);
    *w = min(max(d.vhw[2 * b + 1], int64_t(1)), g.W);
  }
}

__device__ __forceinline__ int64_t region_count(const DevRegions& d, const Geometry& g, const Params& prm, int64_t b) {
  if (d.boxes) return min(max(d.counts[b], int64_t(0)), g.R);
  int64_t h, w;
  image_size(d, g, b, &h, &w);
  return min(grid_count(h, w, prm.levels, prm.include_global), g.R);
}

__device__ __forceinline__ Box region_box(const DevRegions& d, const Geometry& g, const Params& prm, int64_t b,
                                          int64_t r) {
  if (d.boxes) {
    const int64_t* q = d.boxes + (b * g.R + r) * 4;
    // validated on the host; clipped so that a bad box can never address outside the map
    Box bx{static_cast<int32_t>(min(max(q[0], int64_t(0)), g.H - 1)),
           static_cast<int32_t>(min(max(q[1], int64_t(0)), g.W - 1)), 0, 0};
    bx.h = static_cast<int32_t>(min(max(q[2], int64_t(1)), g.H - bx.y));
    bx.w = static_cast<int32_t>(min(max(q[3], int64_t(1)), g.W - bx.x));
    return bx;
  }
  int64_t h, w;
  image_size(d, g, b, &h, &w);
  return grid_box(h, w, prm.levels, prm.include_global, r);
}

// Warp arg-max over a box; every lane returns the winner (flat position y * W + x) and its value.
template <typename T>
__device__ void warp_box_argmax(const T* base, const Geometry& g, const Box& bx, int lane,
                                typename acc_type<T>::type* val, int64_t* pos) {
  using Acc = typename acc_type<T>::type;
  const int64_t area = static_cast<int64_t>(bx.h) * bx.w;
  Acc best = -INFINITY;
  int64_t bi = INT64_MAX;
  for (int64_t i = lane; i < area; i += 32) {
    const int64_t yy = bx.y + i / bx.w, xx = bx.x + i % bx.w;
    const Acc v = load_acc(base[yy * g.sH + xx * g.sW]);
    const int64_t q = yy * g.W + xx;
    if (pair_better(v, q, best, bi)) {
      best = v;
      bi = q;
    }
  }
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) {
    const Acc ov = __shfl_xor_sync(0xffffffffu, best, m);
    const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, m);
    if (pair_better(ov, oi, best, bi)) {
      best = ov;
      bi = oi;
    }
  }
  *val = best;
  *pos = bi;
}

// Warp sums of c^p and c^p ln c over a box (c = max(x, eps)); every lane gets them.
template <typename T, bool WITH_LOG>
__device__ void warp_box_gem(const T* base, const Geometry& g, const Box& bx, int lane, typename acc_type<T>::type p,
                             typename acc_type<T>::type eps, typename acc_type<T>::type* s0,
                             typename acc_type<T>::type* s1) {
  using Acc = typename acc_type<T>::type;
  const int64_t area = static_cast<int64_t>(bx.h) * bx.w;
  Acc a0 = 0, a1 = 0;
  for (int64_t i = lane; i < area; i += 32) {
    const int64_t yy = bx.y + i / bx.w, xx = bx.x + i % bx.w;
    Acc e = load_acc(base[yy * g.sH + xx * g.sW]);
    e = e < eps ? eps : e;
    const Acc pw = acc_pow(e, p);
    a0 += pw;
    if (WITH_LOG) a1 += pw * acc_log(e);
  }
  *s0 = warp_sum(a0);
  if (WITH_LOG) *s1 = warp_sum(a1);
}

template <typename T>
__global__ void forward_kernel(const T* __restrict__ X, Geometry g, DevRegions d, Params prm,
                               const typename acc_type<T>::type* __restrict__ P, T* __restrict__ Y) {
  using Acc = typename acc_type<T>::type;
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= g.B * g.C) return;
  const int64_t b = row / g.C, c = row % g.C;
  const T* base = X + b * g.sB + c * g.sC;
  const int64_t n = region_count(d, g, prm, b);
  const Acc p = P ? *P : Acc(1), eps = static_cast<Acc>(prm.eps);
  T* out = Y + b * g.R * g.C + c;
  for (int64_t r = 0; r < g.R; ++r) {
    Acc res = 0;
    if (r < n) {
      const Box bx = region_box(d, g, prm, b, r);
      if (prm.gem) {
        Acc s0, s1;
        warp_box_gem<T, false>(base, g, bx, lane, p, eps, &s0, &s1);
        res = acc_pow(s0 / (static_cast<Acc>(bx.h) * static_cast<Acc>(bx.w)), Acc(1) / p);
      } else {
        int64_t pos;
        warp_box_argmax(base, g, bx, lane, &res, &pos);
      }
    }
    if (lane == 0) out[r * g.C] = store_acc<T>(res);
  }
}

template <typename T>
__global__ void backward_kernel(const T* __restrict__ G, const T* __restrict__ X, Geometry g, DevRegions d, Params prm,
                                const typename acc_type<T>::type* __restrict__ P, T* __restrict__ GX,
                                typename acc_type<T>::type* __restrict__ GP) {
  using Acc = typename acc_type<T>::type;
  __shared__ Box sbox[kWarpsPerBlock][kChunk];
  __shared__ Acc scoef[kWarpsPerBlock][kChunk];
  __shared__ int64_t spos[kWarpsPerBlock][kChunk];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + warp;
  if (row >= g.B * g.C) return;
  const int64_t b = row / g.C, c = row % g.C, HW = g.H * g.W;
  const T* base = X + b * g.sB + c * g.sC;
  const T* gr = G + b * g.R * g.C + c;
  T* out = GX + row * HW;
  const int64_t n = region_count(d, g, prm, b);
  const Acc p = P ? *P : Acc(1), eps = static_cast<Acc>(prm.eps), inv_p = Acc(1) / p;
  Acc dp = 0;
  if (n == 0) {
    for (int64_t i = lane; i < HW; i += 32) out[i] = store_acc<T>(Acc(0));
  }
  for (int64_t start = 0; start < n; start += kChunk) {
    const int m = static_cast<int>(min(static_cast<int64_t>(kChunk), n - start));
    for (int j = 0; j < m; ++j) {
      const Box bx = region_box(d, g, prm, b, start + j);
      const Acc gv = load_acc(gr[(start + j) * g.C]);
      if (prm.gem) {
        Acc s0, s1;
        warp_box_gem<T, true>(base, g, bx, lane, p, eps, &s0, &s1);
        const Acc area = static_cast<Acc>(bx.h) * static_cast<Acc>(bx.w);
        const Acc mm = s0 / area, yv = acc_pow(mm, inv_p);
        if (lane == 0) {
          sbox[warp][j] = bx;
          scoef[warp][j] = gv * acc_pow(yv, Acc(1) - p) / area;
        }
        dp += gv * yv * inv_p * (s1 / s0 - acc_log(mm) * inv_p);
      } else {
        Acc val;
        int64_t pos;
        warp_box_argmax(base, g, bx, lane, &val, &pos);
        if (lane == 0) {
          spos[warp][j] = pos;
          scoef[warp][j] = gv;
        }
      }
    }
    __syncwarp();
    const bool last = start + kChunk >= n;
    for (int64_t i = lane; i < HW; i += 32) {
      const int64_t yy = i / g.W, xx = i % g.W;
      Acc a = start == 0 ? Acc(0) : load_acc(out[i]);
      for (int j = 0; j < m; ++j) {
        if (prm.gem) {
          const Box& bx = sbox[warp][j];
          if (yy >= bx.y && yy < bx.y + bx.h && xx >= bx.x && xx < bx.x + bx.w) a += scoef[warp][j];
        } else if (spos[warp][j] == i) {
          a += scoef[warp][j];
        }
      }
      if (prm.gem && last) {
        const Acc v = load_acc(base[yy * g.sH + xx * g.sW]);
        // clamp passes the gradient where x >= eps (torch.clamp_min's rule)
        a = v >= eps ? a * acc_pow(v, p - Acc(1)) : Acc(0);
      }
      out[i] = store_acc<T>(a);
    }
    __syncwarp();
  }
  if (prm.gem && lane == 0) GP[row] = dp;
}

// Sizes and strides of the input x [B, C, H, W] with R regions per image.
Geometry geometry_of(const TensorView& x, int64_t R) {
  return Geometry{x.size(0), x.size(1), x.size(2), x.size(3), R, x.stride(0), x.stride(1), x.stride(2), x.stride(3)};
}

}  // namespace

void forward_cuda(const TensorView& x, const DevRegions& reg, const Params& prm, const TensorView* p,
                  const TensorView& y, std::uintptr_t stream) {
  DeviceGuard guard(x.device_id);
  const Geometry g = geometry_of(x, y.size(1));
  const int64_t rows = g.B * g.C;
  const dim3 block(32 * kWarpsPerBlock);
  const dim3 grid(static_cast<unsigned>(ceil_div(rows, kWarpsPerBlock)));
  SEMVIS_DISPATCH_FLOAT(x.dtype, "region_pool", {
    using Acc = typename acc_type<scalar_t>::type;
    forward_kernel<scalar_t><<<grid, block, 0, as_stream(stream)>>>(
        x.ptr<const scalar_t>(), g, reg, prm, p ? p->ptr<const Acc>() : nullptr, y.ptr<scalar_t>());
  });
  SEMVIS_CUDA_LAUNCH_CHECK();
}

void backward_cuda(const TensorView& gy, const TensorView& x, const DevRegions& reg, const Params& prm,
                   const TensorView* p, const TensorView& gx, const TensorView* gp, std::uintptr_t stream) {
  DeviceGuard guard(x.device_id);
  const Geometry g = geometry_of(x, gy.size(1));
  const int64_t rows = g.B * g.C;
  const dim3 block(32 * kWarpsPerBlock);
  const dim3 grid(static_cast<unsigned>(ceil_div(rows, kWarpsPerBlock)));
  SEMVIS_DISPATCH_FLOAT(x.dtype, "region_pool", {
    using Acc = typename acc_type<scalar_t>::type;
    backward_kernel<scalar_t><<<grid, block, 0, as_stream(stream)>>>(
        gy.ptr<const scalar_t>(), x.ptr<const scalar_t>(), g, reg, prm, p ? p->ptr<const Acc>() : nullptr,
        gx.ptr<scalar_t>(), gp ? gp->ptr<Acc>() : nullptr);
  });
  SEMVIS_CUDA_LAUNCH_CHECK();
}

}  // namespace region_pool
}  // namespace semvis
