// Quantized AP on the GPU: one block per query. Forward: the block's warps accumulate the query's
// two histograms in shared memory (one copy per warp while it fits, to spread the atomics), then
// one thread runs the O(M) precision/recall scan. Backward: one thread turns the saved histograms
// into per-bin-pair coefficients in shared memory, then every thread recomputes its items' bin
// pair and writes the gradient. No [Q, N, M] tensor, no global scratch beyond an error word.
#include <climits>

#include "quantized_ap.h"
#include "common/cuda_utils.h"
#include "common/dispatch.h"

namespace semvis {
namespace quantized_ap {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr size_t kDefaultSmem = 48 * 1024;

// err[0]: lowest flat index q * N + i of a NaN score; err[1]: of a label outside [0, 1].
template <typename T, typename L, typename Acc>
__global__ void forward_kernel(const T* __restrict__ S, const L* __restrict__ Y, int64_t N, int64_t sq, int64_t sn,
                               int64_t lq, int64_t ln, int64_t M, int copies, Acc lo, Acc hi, Acc inv_delta,
                               Acc* __restrict__ AP, Acc* __restrict__ NP, Acc* __restrict__ H,
                               unsigned long long* err) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Acc* sh = reinterpret_cast<Acc*>(smem_raw);
  const int64_t q = blockIdx.x;
  const int64_t width = 2 * M;
  for (int64_t k = threadIdx.x; k < copies * width; k += blockDim.x) sh[k] = Acc(0);
  __syncthreads();
  Acc* h = sh + ((threadIdx.x / 32) % copies) * width;
  const T* s_row = S + q * sq;
  const L* y_row = Y + q * lq;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
    const Acc s = static_cast<Acc>(to_float(s_row[i * sn]));
    const Acc y = label_value<Acc>(y_row[i * ln]);
    // written as !(in range) so that NaN takes these branches
    if (!(s == s)) {
      atomicMin(err, static_cast<unsigned long long>(q * N + i));
      continue;
    }
    if (!(y >= Acc(0) && y <= Acc(1))) {
      atomicMin(err + 1, static_cast<unsigned long long>(q * N + i));
      continue;
    }
    int64_t j;
    Acc f;
    bool inside;
    bin_of<Acc>(s, lo, hi, inv_delta, M, &j, &f, &inside);
    atomicAdd(h + j, Acc(1) - f);
    atomicAdd(h + j + 1, f);
    if (y != Acc(0)) {
      atomicAdd(h + M + j, y * (Acc(1) - f));
      atomicAdd(h + M + j + 1, y * f);
    }
  }  // i
  __syncthreads();
  Acc* hq = H + q * width;
  for (int64_t k = threadIdx.x; k < width; k += blockDim.x) {
    Acc v = sh[k];
    for (int c = 1; c < copies; ++c) v += sh[c * width + k];
    sh[k] = v;
    hq[k] = v;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    Acc a, n;
    ap_from_hist<Acc>(sh, sh + M, M, &a, &n);
    AP[q] = a;
    NP[q] = n;
  }
}

template <typename T, typename L, typename Acc>
__global__ void backward_kernel(const Acc* __restrict__ G, const T* __restrict__ S, const L* __restrict__ Y,
                                int64_t N, int64_t sq, int64_t sn, int64_t lq, int64_t ln, int64_t M, Acc lo, Acc hi,
                                Acc inv_delta, const Acc* __restrict__ H, T* __restrict__ GS) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Acc* dp = reinterpret_cast<Acc*>(smem_raw);
  Acc* dc = dp + M;
  __shared__ int active;
  const int64_t q = blockIdx.x;
  if (threadIdx.x == 0) {
    const Acc* hq = H + q * 2 * M;
    Acc n = 0;
    for (int64_t m = 0; m < M; ++m) n += hq[M + m];
    const Acc g = G[q];
    active = n > Acc(0) && g != Acc(0);  // no positives: the query is excluded, no gradient
    if (active) grad_coeffs<Acc>(hq, hq + M, M, g * inv_delta / n, dp, dc);
  }
  __syncthreads();
  const T* s_row = S + q * sq;
  const L* y_row = Y + q * lq;
  T* out = GS + q * N;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
    Acc v = Acc(0);
    if (active) {
      const Acc s = static_cast<Acc>(to_float(s_row[i * sn]));
      const Acc y = label_value<Acc>(y_row[i * ln]);
      int64_t j;
      Acc f;
      bool inside;
      bin_of<Acc>(s, lo, hi, inv_delta, M, &j, &f, &inside);
      if (inside) v = y * dp[j] + dc[j];
    }
    out[i] = store_acc<T>(v);
  }  // i
}

template <typename K>
void allow_smem(K kernel, size_t bytes) {
  if (bytes > kDefaultSmem)
    SEMVIS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

}  // namespace

void forward_cuda(const TensorView& scores, const TensorView& labels, const Params& p, const TensorView& ap,
                  const TensorView& npos, const TensorView& hist, std::uintptr_t stream) {
  DeviceGuard guard(scores.device_id);
  const int64_t Q = scores.size(0), N = scores.size(1), M = p.bins;
  cudaStream_t st = as_stream(stream);
  unsigned long long* err = nullptr;
  SEMVIS_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&err), 2 * sizeof(unsigned long long), st));
  SEMVIS_CUDA_CHECK(cudaMemsetAsync(err, 0xff, 2 * sizeof(unsigned long long), st));
  SEMVIS_DISPATCH_FLOAT(scores.dtype, "quantized_ap", SEMVIS_QUANTIZED_AP_DISPATCH_LABEL(labels.dtype, {
    using Acc = typename acc_type<scalar_t>::type;
    const size_t per_copy = 2 * M * sizeof(Acc);
    int copies = static_cast<int>(kDefaultSmem / per_copy);
    copies = copies < 1 ? 1 : (copies > kWarps ? kWarps : copies);
    const size_t bytes = copies * per_copy;
    auto kernel = forward_kernel<scalar_t, label_t, Acc>;
    allow_smem(kernel, bytes);
    const Acc lo = static_cast<Acc>(p.lo), hi = static_cast<Acc>(p.hi);
    const Acc inv_delta = static_cast<Acc>(static_cast<double>(M - 1) / (p.hi - p.lo));
    kernel<<<static_cast<unsigned>(Q), kThreads, bytes, st>>>(
        scores.ptr<const scalar_t>(), labels.ptr<const label_t>(), N, scores.stride(0), scores.stride(1),
        labels.stride(0), labels.stride(1), M, copies, lo, hi, inv_delta, ap.ptr<Acc>(), npos.ptr<Acc>(),
        hist.ptr<Acc>(), err);
  }));
  SEMVIS_CUDA_LAUNCH_CHECK();
  unsigned long long bad[2];
  SEMVIS_CUDA_CHECK(cudaMemcpyAsync(bad, err, sizeof(bad), cudaMemcpyDeviceToHost, st));
  SEMVIS_CUDA_CHECK(cudaFreeAsync(err, st));
  SEMVIS_CUDA_CHECK(cudaStreamSynchronize(st));
  if (bad[0] != ULLONG_MAX)
    failf("quantized_ap: scores must not contain NaN, found one at [", bad[0] / N, ", ", bad[0] % N, "]");
  if (bad[1] != ULLONG_MAX)
    failf("quantized_ap: labels must lie in [0, 1], found a value outside at [", bad[1] / N, ", ", bad[1] % N, "]");
}

void backward_cuda(const TensorView& grad_ap, const TensorView& scores, const TensorView& labels,
                   const TensorView& hist, const Params& p, const TensorView& grad_scores, std::uintptr_t stream) {
  DeviceGuard guard(scores.device_id);
  const int64_t Q = scores.size(0), N = scores.size(1), M = p.bins;
  cudaStream_t st = as_stream(stream);
  SEMVIS_DISPATCH_FLOAT(scores.dtype, "quantized_ap", SEMVIS_QUANTIZED_AP_DISPATCH_LABEL(labels.dtype, {
    using Acc = typename acc_type<scalar_t>::type;
    const size_t bytes = 2 * M * sizeof(Acc);
    auto kernel = backward_kernel<scalar_t, label_t, Acc>;
    allow_smem(kernel, bytes);
    const Acc lo = static_cast<Acc>(p.lo), hi = static_cast<Acc>(p.hi);
    const Acc inv_delta = static_cast<Acc>(static_cast<double>(M - 1) / (p.hi - p.lo));
    kernel<<<static_cast<unsigned>(Q), kThreads, bytes, st>>>(
        grad_ap.ptr<const Acc>(), scores.ptr<const scalar_t>(), labels.ptr<const label_t>(), N, scores.stride(0),
        scores.stride(1), labels.stride(0), labels.stride(1), M, lo, hi, inv_delta, hist.ptr<const Acc>(),
        grad_scores.ptr<scalar_t>());
  }));
  SEMVIS_CUDA_LAUNCH_CHECK();
}

}  // namespace quantized_ap
}  // namespace semvis
