// Hamming kernels on the GPU.
// distances: one thread per (a, b) pair. top-k: one warp per query, two sweeps over the codes.
// Distances are small integers (0..nbits), so the first sweep builds a histogram in shared
// memory and its exclusive prefix sum gives, for each distance d, the output slot of the first
// code at distance d. The second sweep walks the codes in index order, 32 at a time; lanes
// holding equal distances are ranked with __match_any_sync, so the slot of a code is
// prefix[d] + (codes at distance d already seen) + (its rank in the chunk): the output comes out
// sorted by (distance, index) without any sort, deterministic, and equal to the CPU kernel.
#include "common/cuda_utils.h"
#include "hamming.h"

#include <algorithm>
#include <climits>

namespace semvis {
namespace hamming {
namespace {

__device__ __forceinline__ int code_distance(const uint64_t* q, const uint64_t* c, int words) {
  if (words == 4) {
    return __popcll(q[0] ^ c[0]) + __popcll(q[1] ^ c[1]) + __popcll(q[2] ^ c[2]) + __popcll(q[3] ^ c[3]);
  }
  int s = 0;
  for (int w = 0; w < words; ++w) s += __popcll(q[w] ^ c[w]);
  return s;
}

__global__ void distances_kernel(const uint64_t* __restrict__ a, int64_t na, const uint64_t* __restrict__ b,
                                 int64_t nb, int words, int32_t* __restrict__ out) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= nb) return;
  for (int64_t i = blockIdx.y; i < na; i += gridDim.y) out[i * nb + j] = code_distance(a + i * words, b + j * words, words);
}

__global__ void topk_kernel(const uint64_t* __restrict__ q, int64_t nq, const uint64_t* __restrict__ codes,
                            int64_t n, int words, int64_t k, int32_t* __restrict__ dist,
                            int64_t* __restrict__ idx) {
  extern __shared__ int smem[];
  const int nbits1 = words * 64 + 1;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t qi = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + warp;
  if (qi >= nq) return;  // whole warps leave together; only warp-level synchronization below
  int* prefix = smem + warp * 2 * nbits1;
  int* seen = prefix + nbits1;
  for (int b = lane; b < nbits1; b += 32) {
    prefix[b] = 0;
    seen[b] = 0;
  }
  __syncwarp();
  const uint64_t* qv = q + qi * words;
  for (int64_t i = lane; i < n; i += 32) atomicAdd(&prefix[code_distance(qv, codes + i * words, words)], 1);
  __syncwarp();
  if (lane == 0) {
    int s = 0;
    for (int b = 0; b < nbits1; ++b) {
      const int c = prefix[b];
      prefix[b] = s;
      s += c;
    }
  }
  __syncwarp();
  int64_t taken = 0;
  const unsigned below = (1u << lane) - 1u;
  for (int64_t base = 0; base < n && taken < k; base += 32) {
    const int64_t i = base + lane;
    const bool valid = i < n;
    const int d = valid ? code_distance(qv, codes + i * words, words) : -1;
    const unsigned same = __match_any_sync(0xffffffffu, d);
    const int rank = __popc(same & below);
    bool wrote = false;
    if (valid) {
      const int64_t pos = static_cast<int64_t>(prefix[d]) + seen[d] + rank;
      if (pos < k) {
        dist[qi * k + pos] = d;
        idx[qi * k + pos] = i;
        wrote = true;
      }
    }
    taken += __popc(__ballot_sync(0xffffffffu, wrote));
    __syncwarp();
    if (valid && rank == 0) seen[d] += __popc(same);
    __syncwarp();
  }
}

void check_aligned(const void* p, const char* name) {
  if (reinterpret_cast<std::uintptr_t>(p) % 8 != 0)
    failf("hamming: on cuda, ", name, " must start at an 8-byte aligned address (a fresh or contiguous tensor)");
}

}  // namespace

void distances_cuda(int device, const uint8_t* a, int64_t na, const uint8_t* b, int64_t nb, int64_t nbytes,
                    int32_t* out, std::uintptr_t stream) {
  check_aligned(a, "a");
  check_aligned(b, "b");
  DeviceGuard guard(device);
  constexpr int kThreads = 256;
  dim3 grid(static_cast<unsigned>(ceil_div(nb, kThreads)), static_cast<unsigned>(std::min<int64_t>(na, 65535)));
  distances_kernel<<<grid, kThreads, 0, as_stream(stream)>>>(reinterpret_cast<const uint64_t*>(a), na,
                                                             reinterpret_cast<const uint64_t*>(b), nb,
                                                             static_cast<int>(nbytes / 8), out);
  SEMVIS_CUDA_LAUNCH_CHECK();
}

void topk_cuda(int device, const uint8_t* q, int64_t nq, const uint8_t* codes, int64_t n, int64_t nbytes, int64_t k,
               int32_t* dist, int64_t* idx, std::uintptr_t stream) {
  check_aligned(q, "queries");
  check_aligned(codes, "codes");
  if (n > INT_MAX) failf("hamming_topk: on cuda, codes may have at most ", INT_MAX, " rows");
  const int64_t per_warp = 2 * (nbytes * 8 + 1) * static_cast<int64_t>(sizeof(int));
  constexpr int64_t kSmem = 48 << 10;
  if (per_warp > kSmem)
    failf("hamming_topk: on cuda, codes may have at most ", (kSmem / 8 - 1) / 64 * 64, " bits, got ", nbytes * 8);
  const int warps = static_cast<int>(std::min<int64_t>(8, kSmem / per_warp));
  DeviceGuard guard(device);
  const int64_t blocks = ceil_div(nq, warps);
  topk_kernel<<<static_cast<unsigned>(blocks), warps * 32, warps * per_warp, as_stream(stream)>>>(
      reinterpret_cast<const uint64_t*>(q), nq, reinterpret_cast<const uint64_t*>(codes), n,
      static_cast<int>(nbytes / 8), k, dist, idx);
  SEMVIS_CUDA_LAUNCH_CHECK();
}

}  // namespace hamming
}  // namespace semvis
