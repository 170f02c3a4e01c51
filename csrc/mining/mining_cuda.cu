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

}  // namespace mining
}  // namespace semvis
