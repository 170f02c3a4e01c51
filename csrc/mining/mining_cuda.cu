// Mining kernels on the GPU.
//
// Running top-k (WarpSelect-style): one warp per query row of a tile. The row's current top-k
// sits in shared memory as a descending list of 64-bit keys (mining.h) padded to K2 = a power of
// two >= max(k, 32); the k-th key is the admission threshold. The warp reads 32 columns at a
// time (coalesced), lanes whose key beats the threshold (and that no exclusion rule removes)
// append to a K2-slot candidate buffer through a ballot; a full buffer is merged into the list by
// a warp bitonic sort of the 2 * K2 keys, which also tightens the threshold. Keys are unique per
// column, so the result is exact and deterministic, identical to the CPU heap.
#include "common/cuda_utils.h"
#include "common/dispatch.h"
#include "mining.h"

namespace semvis {
namespace mining {
namespace {

constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ bool excluded_dev(const Exclude& ex, int64_t row, int64_t col, int64_t m) {
  if (ex.self && row == col) return true;
  if (ex.q_labels && ex.q_labels[row] == ex.db_labels[col]) return true;
  if (ex.dense && ex.dense[row * m + col]) return true;
  if (ex.indptr) {
    int64_t lo = ex.indptr[row], hi = ex.indptr[row + 1];
    while (lo < hi) {  // lower bound in the sorted row
      const int64_t mid = (lo + hi) >> 1;
      if (ex.indices[mid] < col) lo = mid + 1; else hi = mid;
    }
    if (lo < ex.indptr[row + 1] && ex.indices[lo] == col) return true;
  }
  return false;
}

// Sorts list[0 .. N) descending (N a power of two >= 64) with the 32 lanes of a warp.
__device__ void warp_bitonic_desc(uint64_t* list, int N, int lane) {
  for (int size = 2; size <= N; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int t = lane; t < N / 2; t += 32) {
        const int i = 2 * stride * (t / stride) + (t % stride);
        const int j = i + stride;
        const bool desc = (i & size) == 0;
        const uint64_t a = list[i], b = list[j];
        if ((a < b) == desc) {
          list[i] = b;
          list[j] = a;
        }
      }
      __syncwarp();
    }
  }
}

__global__ void merge_kernel(const float* __restrict__ S, int64_t lds, int64_t nb, int64_t tm, int64_t row0,
                             int64_t col0, int64_t m, Exclude ex, bool largest, uint64_t* __restrict__ keys, int64_t k,
                             int K2, int warps) {
  extern __shared__ uint64_t smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * warps + warp;
  if (r >= nb) return;  // whole warps only: no block-wide barrier below
  const int64_t row = row0 + r;
  uint64_t* list = smem + static_cast<int64_t>(warp) * 2 * K2;
  uint64_t* buf = list + K2;
  uint64_t* g = keys + row * k;
  for (int i = lane; i < K2; i += 32) list[i] = i < k ? g[i] : 0;
  __syncwarp();
  uint64_t thr = list[k - 1];
  int cnt = 0;
  const float* s = S + r * lds;
  for (int64_t base = 0; base < tm; base += 32) {
    const int64_t j = base + lane;
    uint64_t key = 0;
    bool take = false;
    if (j < tm) {
      key = make_key(s[j], col0 + j, largest);
      take = key > thr && !excluded_dev(ex, row, col0 + j, m);
    }
    unsigned ballot = __ballot_sync(kFull, take);
    if (ballot == 0) continue;
    if (cnt + __popc(ballot) > K2) {
      for (int i = cnt + lane; i < K2; i += 32) buf[i] = 0;
      __syncwarp();
      warp_bitonic_desc(list, 2 * K2, lane);
      cnt = 0;
      thr = list[k - 1];
      take = take && key > thr;
      ballot = __ballot_sync(kFull, take);
    }
    if (take) buf[cnt + __popc(ballot & ((1u << lane) - 1u))] = key;
    cnt += __popc(ballot);
    __syncwarp();
  }  // base
  if (cnt > 0) {
    for (int i = cnt + lane; i < K2; i += 32) buf[i] = 0;
    __syncwarp();
    warp_bitonic_desc(list, 2 * K2, lane);
  }
  for (int i = lane; i < k; i += 32) g[i] = list[i];
}

// idx may alias keys (decoded in place): no __restrict__ on them.
__global__ void finalize_kernel(const uint64_t* keys, int64_t total, bool largest, float* __restrict__ scores,
                                int64_t* idx) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= total) return;
  const uint64_t key = keys[t];  // rows are already sorted, best first
  if (key == 0) {
    scores[t] = largest ? -INFINITY : INFINITY;
    idx[t] = -1;
  } else {
    scores[t] = key_score(key, largest);
    idx[t] = key_index(key);
  }
}

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

int next_pow2(int64_t v) {
  int p = 1;
  while (p < v) p <<= 1;
  return p;
}

}  // namespace

void merge_tile_cuda(const float* S, int64_t lds, int64_t nb, int64_t tm, int64_t row0, int64_t col0, int64_t m,
                     const Exclude& ex, bool largest, uint64_t* keys, int64_t k, int device, std::uintptr_t stream) {
  DeviceGuard guard(device);
  const int K2 = next_pow2(k < 32 ? 32 : k);
  const int64_t per_warp = 2 * static_cast<int64_t>(K2) * 8;
  int warps = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(8, (48 * 1024) / per_warp)));
  const dim3 block(32 * warps), grid(static_cast<unsigned>(ceil_div(nb, warps)));
  const size_t smem = static_cast<size_t>(per_warp) * warps;
  merge_kernel<<<grid, block, smem, as_stream(stream)>>>(S, lds, nb, tm, row0, col0, m, ex, largest, keys, k, K2, warps);
  SEMVIS_CUDA_LAUNCH_CHECK();
}

void finalize_cuda(const uint64_t* keys, int64_t n, int64_t k, bool largest, float* scores, int64_t* idx, int device,
                   std::uintptr_t stream) {
  DeviceGuard guard(device);
  const int64_t total = n * k;
  finalize_kernel<<<static_cast<unsigned>(ceil_div(total, 256)), 256, 0, as_stream(stream)>>>(keys, total, largest,
                                                                                             scores, idx);
  SEMVIS_CUDA_LAUNCH_CHECK();
}

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

}  // namespace mining
}  // namespace semvis
