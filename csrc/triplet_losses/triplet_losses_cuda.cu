// Triplet-loss kernels on the GPU: the VSE loss in one block (warp per query, warps summed in a
// fixed order), the triplet margin loss (warp per triplet) and the backward (thread per feature
// column, entries in order): deterministic, no atomics.
#include "common/cuda_utils.h"
#include "common/dispatch.h"
#include "triplet_losses.h"

namespace semvis {
namespace triplet_losses {
namespace {

constexpr unsigned kFull = 0xffffffffu;

// ---- VSE loss: one block; warp w handles queries w, w + W, ... and the block sums the warps in
// a fixed order (deterministic, no scratch memory). ---------------------------------------------
template <typename Acc>
__device__ __forceinline__ uint64_t acc_key(Acc v) { return static_cast<uint64_t>(order_key(v)); }
template <>
__device__ __forceinline__ uint64_t acc_key<double>(double v) { return order_key(v); }

template <typename Acc>
__global__ void vse_kernel(const Acc* __restrict__ S, int64_t B, const int64_t* __restrict__ labels, Acc margin,
                           int64_t K, int ndir, Acc scale, Acc* __restrict__ loss, int64_t* __restrict__ ei,
                           int64_t* __restrict__ ej, Acc* __restrict__ ew) {
  __shared__ Acc part[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, W = blockDim.x >> 5;
  Acc wsum = 0;
  for (int64_t qq = warp; qq < ndir * B; qq += W) {
    const int dir = static_cast<int>(qq / B);
    const int64_t q = qq % B;
    const Acc pos = S[q * B + q];
    int64_t* pi = ei + qq * (K + 1);
    int64_t* pj = ej + qq * (K + 1);
    Acc* pw = ew + qq * (K + 1);
    // admissible negatives
    int64_t count = 0;
    for (int64_t o = lane; o < B; o += 32) count += (o != q && !(labels && labels[o] == labels[q]));
    for (int mk = 16; mk > 0; mk >>= 1) count += __shfl_xor_sync(kFull, count, mk);
    for (int64_t t = lane; t <= K; t += 32) {
      pi[t] = 0;
      pj[t] = 0;
      pw[t] = 0;
    }
    __syncwarp();
    Acc sum = 0;
    int64_t active = 0;
    if (count <= K) {
      // all admissible negatives, in index order (a sequential pass by lane 0 keeps the CPU's order)
      if (lane == 0) {
        int64_t t = 0;
        for (int64_t o = 0; o < B; ++o) {
          if (o == q || (labels && labels[o] == labels[q])) continue;
          const Acc v = dir == 0 ? S[q * B + o] : S[o * B + q];
          const Acc c = margin + v - pos;
          if (c > 0) {
            sum += c;
            ++active;
            pi[t] = dir == 0 ? q : o;
            pj[t] = dir == 0 ? o : q;
            pw[t] = scale;
          }
          ++t;
        }
      }
    } else {
      // K rounds of a warp arg-max over (value key desc, index asc) strictly after the last winner
      uint64_t last_v = 0;
      int64_t last_i = -1;
      for (int64_t t = 0; t < K; ++t) {
        uint64_t bv = 0;
        int64_t bi = -1;
        for (int64_t o = lane; o < B; o += 32) {
          if (o == q || (labels && labels[o] == labels[q])) continue;
          const uint64_t kv = acc_key<Acc>(dir == 0 ? S[q * B + o] : S[o * B + q]);
          if (t > 0 && !(kv < last_v || (kv == last_v && o > last_i))) continue;
          if (bi < 0 || kv > bv || (kv == bv && o < bi)) {
            bv = kv;
            bi = o;
          }
        }
        for (int mk = 16; mk > 0; mk >>= 1) {
          const uint64_t ov = __shfl_xor_sync(kFull, bv, mk);
          const int64_t oi = __shfl_xor_sync(kFull, bi, mk);
          if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) {
            bv = ov;
            bi = oi;
          }
        }
        last_v = bv;
        last_i = bi;
        if (lane == 0 && bi >= 0) {
          const Acc v = dir == 0 ? S[q * B + bi] : S[bi * B + q];
          const Acc c = margin + v - pos;
          if (c > 0) {
            sum += c;
            ++active;
            pi[t] = dir == 0 ? q : bi;
            pj[t] = dir == 0 ? bi : q;
            pw[t] = scale;
          }
        }
      }
    }
    if (lane == 0) {
      pi[K] = q;
      pj[K] = q;
      pw[K] = -scale * static_cast<Acc>(active);
      wsum += sum;
    }
    __syncwarp();
  }
  if (lane == 0) part[warp] = wsum;
  __syncthreads();
  if (threadIdx.x == 0) {
    Acc total = 0;
    for (int w = 0; w < W; ++w) total += part[w];
    loss[0] = scale * total;
  }
}

// ---- triplet margin loss: one block, warp per triplet ---------------------------------------
template <typename T>
__global__ void triplet_kernel(const T* __restrict__ A, const T* __restrict__ Bt, int64_t na, int64_t nb, int64_t d,
                               const int64_t* __restrict__ trip, int64_t Tn, typename acc_type<T>::type margin,
                               typename acc_type<T>::type scale, typename acc_type<T>::type r,
                               typename acc_type<T>::type* __restrict__ loss, int64_t* __restrict__ ei,
                               int64_t* __restrict__ ej, typename acc_type<T>::type* __restrict__ ew) {
  using Acc = typename acc_type<T>::type;
  __shared__ Acc part[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, W = blockDim.x >> 5;
  Acc wsum = 0;
  for (int64_t t = warp; t < Tn; t += W) {
    const int64_t q = trip[3 * t], ps = trip[3 * t + 1], ng = trip[3 * t + 2];
    const bool ok = q >= 0 && q < na && ps >= 0 && ps < nb && ng >= 0 && ng < nb;
    Acc sp = 0, sn = 0;
    if (ok) {
      for (int64_t c = lane; c < d; c += 32) {
        const Acc a = load_acc(A[q * d + c]);
        sp += a * load_acc(Bt[ps * d + c]);
        sn += a * load_acc(Bt[ng * d + c]);
      }
    }
    for (int mk = 16; mk > 0; mk >>= 1) {
      sp += __shfl_xor_sync(kFull, sp, mk);
      sn += __shfl_xor_sync(kFull, sn, mk);
    }
    if (lane == 0) {
      const Acc c = margin - sp + sn;
      const bool on = ok && c > 0;
      if (on) wsum += scale * c;
      ei[2 * t] = ok ? q : 0;
      ej[2 * t] = ok ? ps : 0;
      ew[2 * t] = on ? -scale * r : Acc(0);
      ei[2 * t + 1] = ok ? q : 0;
      ej[2 * t + 1] = ok ? ng : 0;
      ew[2 * t + 1] = on ? scale * r : Acc(0);
    }
  }
  if (lane == 0) part[warp] = wsum;
  __syncthreads();
  if (threadIdx.x == 0) {
    Acc total = 0;
    for (int w = 0; w < W; ++w) total += part[w];
    loss[0] = total * r;
  }
}

// ---- backward: one thread per feature column, entries in order ------------------------------
template <typename T>
__global__ void pair_backward_kernel(const typename acc_type<T>::type* __restrict__ g, const T* __restrict__ A,
                                     const T* __restrict__ Bt, int64_t na, int64_t nb, int64_t d,
                                     const int64_t* __restrict__ ei, const int64_t* __restrict__ ej,
                                     const typename acc_type<T>::type* __restrict__ ew, int64_t E,
                                     typename acc_type<T>::type* __restrict__ gA,
                                     typename acc_type<T>::type* __restrict__ gB) {
  using Acc = typename acc_type<T>::type;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= d) return;
  for (int64_t i = 0; i < na; ++i) gA[i * d + c] = 0;
  for (int64_t j = 0; j < nb; ++j) gB[j * d + c] = 0;
  const Acc g0 = g[0];
  for (int64_t e = 0; e < E; ++e) {
    const Acc w = ew[e];
    if (w == 0) continue;
    const int64_t i = ei[e], j = ej[e];
    if (i < 0 || i >= na || j < 0 || j >= nb) continue;
    const Acc s = g0 * w;
    gA[i * d + c] += s * load_acc(Bt[j * d + c]);
    gB[j * d + c] += s * load_acc(A[i * d + c]);
  }
}

}  // namespace

void vse_forward_cuda(const TensorView& S, const int64_t* labels, const VseParams& p, const TensorView& loss,
                      int64_t* ei, int64_t* ej, const TensorView& ew, std::uintptr_t stream) {
  DeviceGuard guard(S.device_id);
  const int64_t B = S.size(0);
  const int64_t K = std::min<int64_t>(p.k, B - 1);
  const int ndir = p.both ? 2 : 1;
  if (S.dtype == DType::kFloat32) {
    vse_kernel<float><<<1, 1024, 0, as_stream(stream)>>>(S.ptr<const float>(), B, labels, static_cast<float>(p.margin),
                                                         K, ndir, static_cast<float>(p.scale), loss.ptr<float>(), ei,
                                                         ej, ew.ptr<float>());
  } else {
    vse_kernel<double><<<1, 1024, 0, as_stream(stream)>>>(S.ptr<const double>(), B, labels, p.margin, K, ndir, p.scale,
                                                          loss.ptr<double>(), ei, ej, ew.ptr<double>());
  }
  SEMVIS_CUDA_LAUNCH_CHECK();
}

void triplet_forward_cuda(const TensorView& A, const TensorView& Bt, const int64_t* trip, int64_t T,
                          const TripletParams& p, const TensorView& loss, int64_t* ei, int64_t* ej,
                          const TensorView& ew, std::uintptr_t stream) {
  DeviceGuard guard(A.device_id);
  SEMVIS_DISPATCH_FLOAT(A.dtype, "triplet_margin_loss", {
    using Acc = typename acc_type<scalar_t>::type;
    const Acc r = p.mean && T > 0 ? Acc(1) / static_cast<Acc>(T) : Acc(1);
    triplet_kernel<scalar_t><<<1, 1024, 0, as_stream(stream)>>>(
        A.ptr<const scalar_t>(), Bt.ptr<const scalar_t>(), A.size(0), Bt.size(0), A.size(1), trip, T,
        static_cast<Acc>(p.margin), static_cast<Acc>(p.scale), r, loss.ptr<Acc>(), ei, ej, ew.ptr<Acc>());
  });
  SEMVIS_CUDA_LAUNCH_CHECK();
}

void pair_backward_cuda(const TensorView& g, const TensorView& A, const TensorView& Bt, const int64_t* ei,
                        const int64_t* ej, const TensorView& ew, const TensorView& gA, const TensorView& gB,
                        std::uintptr_t stream) {
  DeviceGuard guard(A.device_id);
  const int64_t d = A.size(1);
  if (d == 0) return;
  SEMVIS_DISPATCH_FLOAT(A.dtype, "pair_backward", {
    using Acc = typename acc_type<scalar_t>::type;
    pair_backward_kernel<scalar_t><<<static_cast<unsigned>(ceil_div(d, 128)), 128, 0, as_stream(stream)>>>(
        g.ptr<const Acc>(), A.ptr<const scalar_t>(), Bt.ptr<const scalar_t>(), A.size(0), Bt.size(0), d, ei, ej,
        ew.ptr<const Acc>(), ew.size(0), gA.ptr<Acc>(), gB.ptr<Acc>());
  });
  SEMVIS_CUDA_LAUNCH_CHECK();
}

}  // namespace triplet_losses
}  // namespace semvis
