// region_attention on the GPU: one thread per (image, channel); the threads of a block read the
// R regions of consecutive channels (coalesced, the channel axis is contiguous). The forward
// makes two passes over the regions (max, then exp / sum / weighted sum) and writes the
// statistics; the backward recomputes the weights from them. 1-att's logit gradient, a sum over
// the channels, is one block per image: D[r] = sum_k gx[k] G[r, k], then
// gL[r] = a_r (D[r] - sum_r' a_r' D[r']) (the same value as a_r sum_k gx[k] (G[r, k] - x[k])).
#include <cmath>

#include "common/cuda_utils.h"
#include "common/dispatch.h"
#include "region_attention.h"

namespace semvis {
namespace region_attention {
namespace {

constexpr int kThreads = 256;

template <typename T>
using Acc = typename acc_type<T>::type;

__device__ __forceinline__ float dexp(float v) { return expf(v); }
__device__ __forceinline__ double dexp(double v) { return exp(v); }

template <typename A>
__device__ __forceinline__ A neg_inf();
template <>
__device__ __forceinline__ float neg_inf<float>() { return -INFINITY; }
template <>
__device__ __forceinline__ double neg_inf<double>() { return -static_cast<double>(INFINITY); }

// Softmax statistics of one image's n logits L[0], L[stride], ... (NaN sticks).
template <typename T, typename A>
__device__ __forceinline__ void stats(const T* L, int64_t stride, int64_t n, A* mx, A* sm) {
  A m = neg_inf<A>();
  for (int64_t r = 0; r < n; ++r) {
    const A v = load_acc(L[r * stride]);
    m = (v > m || v != v) ? v : m;
  }
  A s = 0;
  for (int64_t r = 0; r < n; ++r) s += dexp(load_acc(L[r * stride]) - m);
  *mx = m;
  *sm = s;
}

template <typename T>
__global__ void forward_kernel(const T* __restrict__ G, const T* __restrict__ L, const int64_t* __restrict__ len,
                               int mode, int64_t R, int64_t d, T* __restrict__ x, Acc<T>* __restrict__ m,
                               Acc<T>* __restrict__ s) {
  using A = Acc<T>;
  const int64_t b = blockIdx.y;
  const int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= d) return;
  const int64_t n = len ? len[b] : R;
  const T* g = G + b * R * d + k;
  A acc = 0;
  if (mode == kSoftmax || mode == kNoConv) {
    const T* l = (mode == kNoConv ? G : L) + b * R * d + k;
    A mx, sm;
    stats<T, A>(l, d, n, &mx, &sm);
    for (int64_t r = 0; r < n; ++r) acc += dexp(load_acc(l[r * d]) - mx) * load_acc(g[r * d]);
    m[b * d + k] = mx;
    s[b * d + k] = sm;
    acc /= sm;
  } else if (mode == kOneAtt) {
    const T* l = L + b * R;
    A mx, sm;
    stats<T, A>(l, 1, n, &mx, &sm);
    const A inv = A(1) / sm;
    for (int64_t r = 0; r < n; ++r) acc += dexp(load_acc(l[r]) - mx) * inv * load_acc(g[r * d]);
    if (k == 0) {
      m[b] = mx;
      s[b] = sm;
    }
  } else if (mode == kNoSoftmax) {
    const T* l = L + b * R * d + k;
    for (int64_t r = 0; r < n; ++r) acc += load_acc(l[r * d]) * load_acc(g[r * d]);
  } else {
    for (int64_t r = 0; r < n; ++r) acc += load_acc(g[r * d]);
    acc *= A(1) / static_cast<A>(n);
  }
  x[b * d + k] = store_acc<T>(acc);
}

template <typename T>
__global__ void backward_kernel(const T* __restrict__ gx, const T* __restrict__ G, const T* __restrict__ L,
                                const int64_t* __restrict__ len, int mode, int64_t R, int64_t d,
                                const Acc<T>* __restrict__ m, const Acc<T>* __restrict__ s, T* __restrict__ gG,
                                T* __restrict__ gL) {
  using A = Acc<T>;
  const int64_t b = blockIdx.y;
  const int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= d) return;
  const int64_t n = len ? len[b] : R;
  const A gk = load_acc(gx[b * d + k]);
  const T* g = G + b * R * d + k;
  T* gg = gG + b * R * d + k;
  const T zero = store_acc<T>(A(0));
  if (mode == kSoftmax || mode == kNoConv) {
    const bool noconv = mode == kNoConv;
    const T* l = (noconv ? G : L) + b * R * d + k;
    T* gl = noconv ? nullptr : gL + b * R * d + k;
    const A mx = m[b * d + k], inv = A(1) / s[b * d + k];
    A xk = 0;
    for (int64_t r = 0; r < n; ++r) xk += dexp(load_acc(l[r * d]) - mx) * inv * load_acc(g[r * d]);
    for (int64_t r = 0; r < n; ++r) {
      const A ga = gk * dexp(load_acc(l[r * d]) - mx) * inv;
      const A gdl = ga * (load_acc(g[r * d]) - xk);
      if (noconv) {
        gg[r * d] = store_acc<T>(ga + gdl);
      } else {
        gg[r * d] = store_acc<T>(ga);
        gl[r * d] = store_acc<T>(gdl);
      }
    }
    for (int64_t r = n; r < R; ++r) {
      gg[r * d] = zero;
      if (!noconv) gl[r * d] = zero;
    }
  } else if (mode == kOneAtt) {
    const T* l = L + b * R;
    const A mx = m[b], inv = A(1) / s[b];
    for (int64_t r = 0; r < n; ++r) gg[r * d] = store_acc<T>(gk * dexp(load_acc(l[r]) - mx) * inv);
    for (int64_t r = n; r < R; ++r) gg[r * d] = zero;
  } else if (mode == kNoSoftmax) {
    const T* l = L + b * R * d + k;
    T* gl = gL + b * R * d + k;
    for (int64_t r = 0; r < n; ++r) {
      gg[r * d] = store_acc<T>(gk * load_acc(l[r * d]));
      gl[r * d] = store_acc<T>(gk * load_acc(g[r * d]));
    }
    for (int64_t r = n; r < R; ++r) gg[r * d] = gl[r * d] = zero;
  } else {
    const A inv = A(1) / static_cast<A>(n);
    for (int64_t r = 0; r < n; ++r) gg[r * d] = store_acc<T>(gk * inv);
    for (int64_t r = n; r < R; ++r) gg[r * d] = zero;
  }
}

// 1-att logit gradient: one block per image; D[r] in double in dynamic shared memory.
template <typename T>
__global__ void one_att_logit_grad_kernel(const T* __restrict__ gx, const T* __restrict__ G,
                                          const T* __restrict__ L, const int64_t* __restrict__ len, int64_t R,
                                          int64_t d, const Acc<T>* __restrict__ m, const Acc<T>* __restrict__ s,
                                          T* __restrict__ gL) {
  using A = Acc<T>;
  extern __shared__ double D[];  // R values, then kThreads partial sums
  double* part = D + R;
  const int64_t b = blockIdx.x;
  const int64_t n = len ? len[b] : R;
  const T* gxb = gx + b * d;
  for (int64_t r = 0; r < n; ++r) {
    const T* g = G + (b * R + r) * d;
    double acc = 0;
    for (int64_t k = threadIdx.x; k < d; k += blockDim.x) acc += static_cast<double>(load_acc(gxb[k])) * load_acc(g[k]);
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
      if (static_cast<int>(threadIdx.x) < w) part[threadIdx.x] += part[threadIdx.x + w];
      __syncthreads();
    }
    if (threadIdx.x == 0) D[r] = part[0];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const A mx = m[b], inv = A(1) / s[b];
    const T* l = L + b * R;
    double xd = 0;
    for (int64_t r = 0; r < n; ++r) xd += static_cast<double>(dexp(load_acc(l[r]) - mx) * inv) * D[r];
    for (int64_t r = 0; r < R; ++r) {
      if (r < n) {
        const A w = dexp(load_acc(l[r]) - mx) * inv;
        gL[b * R + r] = store_acc<T>(static_cast<A>(w * (D[r] - xd)));
      } else {
        gL[b * R + r] = store_acc<T>(A(0));
      }
    }
  }
}

}  // namespace

void forward_cuda(const TensorView& G, const TensorView* L, const int64_t* len, int mode, const Shape& sh,
                  const TensorView& x, const TensorView& m, const TensorView& s, std::uintptr_t stream) {
  if (sh.B > 65535) failf("region_attention: at most 65535 images per call on cuda, got ", sh.B);
  DeviceGuard guard(G.device_id);
  const dim3 grid(static_cast<unsigned>(ceil_div(sh.d, kThreads)), static_cast<unsigned>(sh.B));
  SEMVIS_DISPATCH_FLOAT(G.dtype, "region_attention", {
    using A = Acc<scalar_t>;
    forward_kernel<scalar_t><<<grid, kThreads, 0, as_stream(stream)>>>(
        G.ptr<const scalar_t>(), L ? L->ptr<const scalar_t>() : nullptr, len, mode, sh.R, sh.d,
        x.ptr<scalar_t>(), has_stats(mode) ? m.ptr<A>() : nullptr, has_stats(mode) ? s.ptr<A>() : nullptr);
    SEMVIS_CUDA_LAUNCH_CHECK();
  });
}

void backward_cuda(const TensorView& gx, const TensorView& G, const TensorView* L, const int64_t* len, int mode,
                   const Shape& sh, const TensorView& m, const TensorView& s, const TensorView& gG,
                   const TensorView* gL, std::uintptr_t stream) {
  if (sh.B > 65535) failf("region_attention: at most 65535 images per call on cuda, got ", sh.B);
  DeviceGuard guard(G.device_id);
  SEMVIS_DISPATCH_FLOAT(G.dtype, "region_attention", {
    using A = Acc<scalar_t>;
    const A* mp = has_stats(mode) ? m.ptr<const A>() : nullptr;
    const A* sp = has_stats(mode) ? s.ptr<const A>() : nullptr;
    if (sh.d > 0) {
      const dim3 grid(static_cast<unsigned>(ceil_div(sh.d, kThreads)), static_cast<unsigned>(sh.B));
      backward_kernel<scalar_t><<<grid, kThreads, 0, as_stream(stream)>>>(
          gx.ptr<const scalar_t>(), G.ptr<const scalar_t>(), L ? L->ptr<const scalar_t>() : nullptr, len, mode,
          sh.R, sh.d, mp, sp, gG.ptr<scalar_t>(),
          (gL && mode != kOneAtt) ? gL->ptr<scalar_t>() : nullptr);
      SEMVIS_CUDA_LAUNCH_CHECK();
    }
    if (mode == kOneAtt) {
      const size_t shmem = static_cast<size_t>(sh.R + kThreads) * sizeof(double);
      if (shmem > 48 * 1024) failf("region_attention: 1-att supports at most ", 48 * 1024 / 8 - kThreads,
                                   " regions on cuda, got ", sh.R);
      one_att_logit_grad_kernel<scalar_t><<<static_cast<unsigned>(sh.B), kThreads, shmem, as_stream(stream)>>>(
          gx.ptr<const scalar_t>(), G.ptr<const scalar_t>(), L->ptr<const scalar_t>(), len, sh.R, sh.d, mp, sp,
          gL->ptr<scalar_t>());
      SEMVIS_CUDA_LAUNCH_CHECK();
    }
  });
}

}  // namespace region_attention
}  // namespace semvis
