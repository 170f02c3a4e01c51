// soft_rank on the GPU: one thread per score i; the block walks the row's scores in shared-memory
// tiles and sums the n pairwise sigmoids (forward) or (g_j - g_i) p (1 - p) (backward). O(n^2)
// work per row, O(n) memory; no pairwise tensor.
#include <cmath>

#include "common/cuda_utils.h"
#include "common/dispatch.h"
#include "soft_rank.h"

namespace semvis {
namespace soft_rank {
namespace {

constexpr int kThreads = 256;

template <typename T>
using Acc = typename acc_type<T>::type;

__device__ __forceinline__ float sigm(float z) { return 1.0f / (1.0f + expf(-z)); }
__device__ __forceinline__ double sigm(double z) { return 1.0 / (1.0 + exp(-z)); }

// BACKWARD = false: out[i] = sum_{j != i} sigmoid(lam (s_j - s_i)), scaled / shifted.
// BACKWARD = true:  out[i] = scale * sum_j (g_j - g_i) p (1 - p).
template <typename T, bool BACKWARD>
__global__ void pairs_kernel(const T* __restrict__ S, const T* __restrict__ Gr, int64_t n, Acc<T> lam, Acc<T> scale,
                             Acc<T> shift, T* __restrict__ out) {
  using A = Acc<T>;
  __shared__ A ts[kThreads];
  __shared__ A tg[kThreads];
  const int64_t b = blockIdx.y;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const T* s = S + b * n;
  const A si = i < n ? load_acc(s[i]) : A(0);
  const A gi = (BACKWARD && i < n) ? load_acc(Gr[b * n + i]) : A(0);
  A acc = 0;
  for (int64_t j0 = 0; j0 < n; j0 += kThreads) {
    const int64_t j = j0 + threadIdx.x;
    if (j < n) {
      ts[threadIdx.x] = load_acc(s[j]);
      if (BACKWARD) tg[threadIdx.x] = load_acc(Gr[b * n + j]);
    }
    __syncthreads();
    const int64_t m = n - j0 < kThreads ? n - j0 : kThreads;
    if (i < n) {
      for (int64_t t = 0; t < m; ++t) {
        const A p = sigm(lam * (ts[t] - si));
        if (BACKWARD) {
          acc += (tg[t] - gi) * (p * (A(1) - p));
        } else {
          acc += p;
        }
      }
    }
    __syncthreads();
  }
  if (i < n) {
    if (!BACKWARD) acc -= A(0.5);  // the j = i term
    out[b * n + i] = store_acc<T>((acc + shift) * scale);
  }
}

}  // namespace

void forward_cuda(const TensorView& s, const Params& p, const TensorView& rank, std::uintptr_t stream) {
  const int64_t B = s.size(0), n = s.size(1);
  if (B > 65535) failf("soft_rank: at most 65535 rows per call on cuda, got ", B);
  DeviceGuard guard(s.device_id);
  const dim3 grid(static_cast<unsigned>(ceil_div(n, kThreads)), static_cast<unsigned>(B));
  SEMVIS_DISPATCH_FLOAT(s.dtype, "soft_rank", {
    using A = Acc<scalar_t>;
    const A scale = p.normalize ? A(1) / static_cast<A>(n) : A(1);
    pairs_kernel<scalar_t, false><<<grid, kThreads, 0, as_stream(stream)>>>(
        s.ptr<const scalar_t>(), nullptr, n, static_cast<A>(p.lam), scale, p.normalize ? A(1) : A(0),
        rank.ptr<scalar_t>());
    SEMVIS_CUDA_LAUNCH_CHECK();
  });
}

void backward_cuda(const TensorView& g, const TensorView& s, const Params& p, const TensorView& gs,
                   std::uintptr_t stream) {
  const int64_t B = s.size(0), n = s.size(1);
  if (B > 65535) failf("soft_rank: at most 65535 rows per call on cuda, got ", B);
  DeviceGuard guard(s.device_id);
  const dim3 grid(static_cast<unsigned>(ceil_div(n, kThreads)), static_cast<unsigned>(B));
  SEMVIS_DISPATCH_FLOAT(s.dtype, "soft_rank", {
    using A = Acc<scalar_t>;
    const A scale = static_cast<A>(p.lam) * (p.normalize ? A(1) / static_cast<A>(n) : A(1));
    pairs_kernel<scalar_t, true><<<grid, kThreads, 0, as_stream(stream)>>>(
        s.ptr<const scalar_t>(), g.ptr<const scalar_t>(), n, static_cast<A>(p.lam), scale, A(0),
        gs.ptr<scalar_t>());
    SEMVIS_CUDA_LAUNCH_CHECK();
  });
}

}  // namespace soft_rank
}  // namespace semvis
