// WELDON on the GPU: one warp per (batch, channel) row. The row's order keys stay in registers
// (maps of up to 256 cells, which covers the BEAN shapes 8x8 and 13x13) or are re-read from
// global memory for larger maps. The k winners of each side are found in k rounds of a warp
// arg-max over (value key, index) pairs, each round taking the best pair strictly below the
// previous winner: no flags, no shared memory, deterministic, and the same order and summation
// as the CPU kernel, so both backends return bit-identical results.
#include <algorithm>
#include <climits>

#include "common/cuda_utils.h"
#include "common/dispatch.h"
#include "weldon.h"

namespace semvis {
namespace weldon {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kRegPerLane = 8;  // register-cached path for maps with <= 32 * 8 cells

struct Pair {
  uint64_t v;  // order key of the value; ~0 with i = ~0u marks "none"
  uint32_t i;
};

__device__ __forceinline__ bool pair_greater(const Pair& a, const Pair& b) {
  return a.v != b.v ? a.v > b.v : a.i < b.i;
}

__device__ __forceinline__ Pair shfl_xor(const Pair& p, int m) {
  Pair q;
  q.v = __shfl_xor_sync(0xffffffffu, p.v, m);
  q.i = __shfl_xor_sync(0xffffffffu, p.i, m);
  return q;
}

template <typename T>
__device__ __forceinline__ uint64_t key_of(T v) {
  return static_cast<uint64_t>(order_key(to_float(v)));
}
template <>
__device__ __forceinline__ uint64_t key_of<double>(double v) {
  return order_key(v);
}
template <typename T>
__device__ __forceinline__ typename acc_type<T>::type value_of(uint64_t k) {
  return order_key_value(static_cast<uint32_t>(k));
}
template <>
__device__ __forceinline__ double value_of<double>(uint64_t k) {
  return order_key_value(k);
}

// One side of the selection. TOP: largest first (ties: lowest index); else smallest first.
// Candidates are the row's cells; `last` excludes everything already taken.
template <typename T, bool TOP, int REG>
__device__ void select_side(const T* base, int64_t sH, int64_t sW, int64_t w, int64_t W, int64_t n, int64_t k,
                            const uint64_t (&keys)[REG > 0 ? REG : 1], int lane, int32_t* out,
                            double* sum) {
  double s = 0;
  Pair last{0, 0};
  for (int64_t r = 0; r < k; ++r) {
    bool has = false;
    Pair best{0, 0};
    for (int64_t j = 0; (REG > 0 ? j < REG : true); ++j) {
      const int64_t i = lane + 32 * j;
      if (i >= n) break;
      Pair c;
      if constexpr (REG > 0) {
        c.v = keys[j];
      } else {
        c.v = key_of<T>(base[(i / w) * sH + (i % w) * sW]);
      }
      if constexpr (!TOP) c.v = ~c.v;  // smallest value = largest complemented key; ties still lowest index
      c.i = static_cast<uint32_t>(i);
      if (r > 0 && !pair_greater(last, c)) continue;
      if (!has || pair_greater(c, best)) {
        best = c;
        has = true;
      }
    }
    if (!has) best = Pair{0, 0xffffffffu};  // loses to every real candidate except (0, >i) which cannot exist
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) {
      Pair o = shfl_xor(best, m);
      const bool o_none = (o.i == 0xffffffffu), b_none = (best.i == 0xffffffffu);
      if (b_none || (!o_none && pair_greater(o, best))) best = o;
    }
    last = best;
    const uint64_t vk = TOP ? best.v : ~best.v;
    if (lane == 0) {
      const int64_t i = best.i;
      out[r] = static_cast<int32_t>((i / w) * W + (i % w));
      s += value_of<T>(vk);
    }
  }
  if (lane == 0) *sum = s;
}

template <typename T, int REG>
__global__ void forward_kernel(const T* __restrict__ X, int64_t B, int64_t C, int64_t H, int64_t W, int64_t sB,
                               int64_t sC, int64_t sH, int64_t sW, const int64_t* __restrict__ vhw, Params p,
                               int64_t KT, int64_t KB, T* __restrict__ Y, int32_t* __restrict__ I) {
  using Acc = typename acc_type<T>::type;
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= B * C) return;
  const int64_t b = row / C, c = row % C;
  int64_t h = H, w = W;
  if (vhw) {  // validated on the host; clamped again so that bad values can never read out of bounds
    h = min(max(vhw[2 * b], int64_t(1)), H);
    w = min(max(vhw[2 * b + 1], int64_t(1)), W);
  }
  const int64_t n = h * w;
  const int64_t kt = resolve_k(p.kmax_count, p.kmax_frac, n, p.wildcat);
  const int64_t kb = resolve_k(p.kmin_count, p.kmin_frac, n, p.wildcat);
  const T* base = X + b * sB + c * sC;
  uint64_t keys[REG > 0 ? REG : 1];
  if constexpr (REG > 0) {
#pragma unroll
    for (int j = 0; j < REG; ++j) {
      const int64_t i = lane + 32 * j;
      keys[j] = i < n ? key_of<T>(base[(i / w) * sH + (i % w) * sW]) : 0;
    }
  }
  const int64_t K = KT + KB;
  int32_t* out = I + row * K;
  for (int64_t j = lane; j < K; j += 32) out[j] = -1;
  __syncwarp();
  double st = 0, sb = 0;
  if (kt > 0) select_side<T, true, REG>(base, sH, sW, w, W, n, min(kt, n), keys, lane, out, &st);
  if (kb > 0) select_side<T, false, REG>(base, sH, sW, w, W, n, min(kb, n), keys, lane, out + KT, &sb);
  if (lane == 0) {
    double ft, fb;
    side_scales(p, kt, kb, &ft, &fb);
    const double res = (kt > 0 ? ft * st : 0.0) + (kb > 0 ? fb * sb : 0.0);
    Y[row] = store_acc<T>(static_cast<Acc>(res));
  }
}

// Adds `share` to out[ix[j]] for every slot j < k of one side (-1 = unused), slots in order, each
// add rounded to T: the CPU kernel's sum even when positions repeat. Called by the whole warp
// (the loop bound is warp-uniform); returns after a __syncwarp, so the caller's next writes are
// ordered after these.
template <typename T>
__device__ __forceinline__ void accumulate_slots(const int32_t* __restrict__ ix, int64_t k,
                                                 typename acc_type<T>::type share, int lane, T* out, int64_t HW) {
  for (int64_t base = 0; base < k; base += 32) {
    const int64_t j = base + lane;
    const int32_t q = j < k ? ix[j] : -1;
    const bool live = q >= 0 && q < HW;
    // Lanes without a position get a key no position can take (-2 - lane, distinct per lane).
    const unsigned group = __match_any_sync(0xffffffffu, live ? q : -2 - lane);
    if (live && (__ffs(group) - 1) == lane) {
      T v = out[q];
      for (int t = __popc(group); t > 0; --t) v = store_acc<T>(load_acc(v) + share);
      out[q] = v;
    }
    __syncwarp();
  }
}

template <typename T>
__global__ void backward_kernel(const T* __restrict__ G, const int32_t* __restrict__ I, int64_t B, int64_t C,
                                int64_t H, int64_t W, const int64_t* __restrict__ vhw, Params p, int64_t KT,
                                int64_t KB, T* __restrict__ GX) {
  using Acc = typename acc_type<T>::type;
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= B * C) return;
  const int64_t HW = H * W;
  const int64_t b = row / C;
  int64_t n = HW;
  if (vhw) n = min(max(vhw[2 * b], int64_t(1)), H) * min(max(vhw[2 * b + 1], int64_t(1)), W);
  const int64_t kt = resolve_k(p.kmax_count, p.kmax_frac, n, p.wildcat);
  const int64_t kb = resolve_k(p.kmin_count, p.kmin_frac, n, p.wildcat);
  T* out = GX + row * HW;
  for (int64_t j = lane; j < HW; j += 32) out[j] = store_acc<T>(Acc(0));
  __syncwarp();
  const double g = load_acc(G[row]);
  double ft, fb;
  side_scales(p, kt, kb, &ft, &fb);
  const Acc gt = static_cast<Acc>(g * ft), gb = static_cast<Acc>(g * fb);
  const int32_t* ix = I + row * (KT + KB);
  // The indices come from the caller (weldon_pool_backward is public) and are in range (checked by
  // the host entry, weldon.cpp) but may repeat: within one side (a hand-made list) or across the
  // sides (kmax + kmin > n). Every occurrence adds its share, in the CPU kernel's order: the top
  // side's slots in order, then the bottom side's, each add rounded to T. A plain store per slot
  // would lose updates when two lanes hold the same position, so each round of 32 slots groups the
  // lanes by position (__match_any_sync): the lowest lane of a group adds the group's shares one
  // after the other, and the rounds are ordered by __syncwarp. Disjoint positions (the forward's
  // own output) make every group a single lane: one load and one store per slot, as before.
  accumulate_slots<T>(ix, min(kt, KT), gt, lane, out, HW);
  accumulate_slots<T>(ix + KT, min(kb, KB), gb, lane, out, HW);
}

__global__ void first_bad_index_kernel(const int32_t* __restrict__ I, int64_t n, int64_t HW,
                                       unsigned long long* first) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < n; j += stride)
    if (I[j] < -1 || I[j] >= HW) {
      atomicMin(first, static_cast<unsigned long long>(j));
      return;  // later j of this thread are larger
    }
}

}  // namespace

int64_t first_bad_index_cuda(const TensorView& idx, int64_t HW, int64_t* value, std::uintptr_t stream) {
  DeviceGuard guard(idx.device_id);
  const int64_t n = idx.numel();
  cudaStream_t st = as_stream(stream);
  unsigned long long* first = nullptr;
  SEMVIS_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&first), sizeof(unsigned long long), st));
  SEMVIS_CUDA_CHECK(cudaMemsetAsync(first, 0xff, sizeof(unsigned long long), st));
  const int threads = 256;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(ceil_div(n, threads), 4096));
  first_bad_index_kernel<<<blocks, threads, 0, st>>>(idx.ptr<const int32_t>(), n, HW, first);
  SEMVIS_CUDA_LAUNCH_CHECK();
  unsigned long long pos = 0;
  SEMVIS_CUDA_CHECK(cudaMemcpyAsync(&pos, first, sizeof(pos), cudaMemcpyDeviceToHost, st));
  SEMVIS_CUDA_CHECK(cudaFreeAsync(first, st));
  SEMVIS_CUDA_CHECK(cudaStreamSynchronize(st));
  if (pos == ULLONG_MAX) return -1;
  int32_t v32 = 0;
  SEMVIS_CUDA_CHECK(cudaMemcpy(&v32, idx.ptr<const int32_t>() + pos, sizeof(int32_t), cudaMemcpyDeviceToHost));
  *value = v32;
  return static_cast<int64_t>(pos);
}

void forward_cuda(const TensorView& x, const int64_t* vhw, const Params& p, int64_t KT, int64_t KB,
                  const TensorView& y, const TensorView& idx, std::uintptr_t stream) {
  DeviceGuard guard(x.device_id);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t rows = B * C;
  const dim3 block(32 * kWarpsPerBlock);
  const dim3 grid(static_cast<unsigned>(ceil_div(rows, kWarpsPerBlock)));
  SEMVIS_DISPATCH_FLOAT(x.dtype, "weldon_pool", {
    if (H * W <= 32 * kRegPerLane) {
      forward_kernel<scalar_t, kRegPerLane><<<grid, block, 0, as_stream(stream)>>>(
          x.ptr<const scalar_t>(), B, C, H, W, x.stride(0), x.stride(1), x.stride(2), x.stride(3), vhw, p, KT, KB,
          y.ptr<scalar_t>(), idx.ptr<int32_t>());
    } else {
      forward_kernel<scalar_t, 0><<<grid, block, 0, as_stream(stream)>>>(
          x.ptr<const scalar_t>(), B, C, H, W, x.stride(0), x.stride(1), x.stride(2), x.stride(3), vhw, p, KT, KB,
          y.ptr<scalar_t>(), idx.ptr<int32_t>());
    }
  });
  SEMVIS_CUDA_LAUNCH_CHECK();
}

void backward_cuda(const TensorView& gy, const TensorView& idx, const int64_t* vhw, const Params& p, int64_t KT,
                   int64_t KB, const TensorView& gx, std::uintptr_t stream) {
  DeviceGuard guard(gy.device_id);
  const int64_t B = gx.size(0), C = gx.size(1), H = gx.size(2), W = gx.size(3);
  const dim3 block(32 * kWarpsPerBlock);
  const dim3 grid(static_cast<unsigned>(ceil_div(B * C, kWarpsPerBlock)));
  SEMVIS_DISPATCH_FLOAT(gy.dtype, "weldon_pool", {
    backward_kernel<scalar_t><<<grid, block, 0, as_stream(stream)>>>(gy.ptr<const scalar_t>(), idx.ptr<const int32_t>(),
                                                                     B, C, H, W, vhw, p, KT, KB, gx.ptr<scalar_t>());
  });
  SEMVIS_CUDA_LAUNCH_CHECK();
}

}  // namespace weldon
}  // namespace semvis
