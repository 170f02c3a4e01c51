// Multithreaded brute-force Hamming kernels on the CPU.
// Top-k: each task takes a block of queries and sweeps the codes in tiles that stay in L2, so
// a tile is read from memory once per block of queries rather than once per query. Per query a
// bounded heap keeps the k best (distance, index); the codes arrive in increasing index order,
// so a candidate enters only when strictly closer than the current k-th (ties: lowest index).
#include <algorithm>
#include <vector>

#include "common/parallel.h"
#include "hamming.h"
#include "hamming_simd.h"
#include "topk_heap.h"

namespace semvis {
namespace hamming {

void distances_cpu(const uint8_t* a, int64_t na, const uint8_t* b, int64_t nb, int64_t nbytes, int32_t* out) {
  const RangeFn range = kernels().range;
  parallel_for(0, na, std::max<int64_t>(1, 65536 / std::max<int64_t>(nb, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) range(a + i * nbytes, b, nb, nbytes, out + i * nb);
  });
}

namespace {
// 256-bit codes with the vertical AVX2 scan: blocks of up to 64 queries share each chunk of codes,
// transposed once per block (hamming_simd.h); the heaps fill from the first chunk's distances,
// then only the pairs closer than their query's k-th distance (read once per chunk) come back.
void topk32_vertical(const Kernels& kern, const uint8_t* q, int64_t nq, const uint8_t* codes, int64_t n, int64_t k,
                     int32_t* dist, int64_t* idx) {
  const int64_t qb = std::max<int64_t>(1, std::min<int64_t>(kVerticalQueries, (1 << 16) / k));
  constexpr int64_t kChunk = 2048;  // codes per transposed chunk (64 KiB)
  const int64_t nblocks = (nq + qb - 1) / qb;
  parallel_for(0, nblocks, 1, [&](int64_t blo, int64_t bhi) {
    std::vector<TopK> heaps(qb);
    std::vector<uint32_t> tc(kChunk * 8);
    std::vector<uint32_t> cand(kChunk * kVerticalQueries);
    std::vector<int32_t> cd(kChunk * kVerticalQueries);
    std::vector<int32_t> buf(kChunk);
    int32_t thr[kVerticalQueries];
    for (int64_t blk = blo; blk < bhi; ++blk) {
      const int64_t q0 = blk * qb, q1 = std::min(nq, q0 + qb);
      const int nb = static_cast<int>(q1 - q0);
      for (int j = 0; j < nb; ++j) heaps[j].reset(k);
      for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
        const int64_t m = std::min(kChunk, n - c0);
        bool all_full = true;
        for (int j = 0; j < nb; ++j) all_full &= heaps[j].full();
        if (!all_full) {  // filling the heaps: every distance, one query at a time
          for (int j = 0; j < nb; ++j) {
            TopK& h = heaps[j];
            kern.range(q + (q0 + j) * 32, codes + c0 * 32, m, 32, buf.data());
            int32_t th = h.threshold();
            for (int64_t i = 0; i < m; ++i) {
              if (buf[i] < th) {
                h.push(buf[i], c0 + i);
                th = h.threshold();
              }
            }
          }
          continue;
        }
        for (int j = 0; j < nb; ++j) thr[j] = heaps[j].threshold();
        kern.transpose32(codes + c0 * 32, m, tc.data());
        const int64_t nc = kern.scan32v(tc.data(), m, q + q0 * 32, nb, thr, cand.data(), cd.data());
        for (int64_t c = 0; c < nc; ++c) {  // per query, candidates in increasing code order
          const int j = static_cast<int>(cand[c] % kVerticalQueries);
          TopK& h = heaps[j];
          if (cd[c] < h.threshold()) h.push(cd[c], c0 + cand[c] / kVerticalQueries);
        }
      }
      for (int j = 0; j < nb; ++j) heaps[j].write_sorted(dist + (q0 + j) * k, idx + (q0 + j) * k);
    }
  });
}
}  // namespace

void topk_cpu(const uint8_t* q, int64_t nq, const uint8_t* codes, int64_t n, int64_t nbytes, int64_t k,
              int32_t* dist, int64_t* idx) {
  const Kernels& kern = kernels();
  if (nbytes == 32 && kern.scan32v != nullptr && k <= (1 << 16) / 8) {
    topk32_vertical(kern, q, nq, codes, n, k, dist, idx);
    return;
  }
  // 16 queries share each tile; fewer when k is large, so that the heaps stay O(k) per thread
  const int64_t kQueryBlock = std::max<int64_t>(1, std::min<int64_t>(16, (1 << 16) / k));
  const int64_t tile = std::max<int64_t>(256, (256 << 10) / nbytes);  // ~256 KiB of codes
  constexpr int64_t kChunk = 2048;                                    // codes per filtered scan
  const int64_t nblocks = (nq + kQueryBlock - 1) / kQueryBlock;
  parallel_for(0, nblocks, 1, [&](int64_t blo, int64_t bhi) {
    std::vector<TopK> heaps(kQueryBlock);
    std::vector<int32_t> buf(std::min(tile, n));
    std::vector<uint32_t> cand(kChunk * kScanQueries);
    std::vector<int32_t> cd(kChunk * kScanQueries);
    for (int64_t blk = blo; blk < bhi; ++blk) {
      const int64_t q0 = blk * kQueryBlock, q1 = std::min(nq, q0 + kQueryBlock);
      for (int64_t j = q0; j < q1; ++j) heaps[j - q0].reset(k);
      for (int64_t t0 = 0; t0 < n; t0 += tile) {
        const int64_t m = std::min(tile, n - t0);
        for (int64_t s0 = q0; s0 < q1; s0 += kScanQueries) {
          const int nsub = static_cast<int>(std::min<int64_t>(kScanQueries, q1 - s0));
          bool all_full = true;
          for (int j = 0; j < nsub; ++j) all_full &= heaps[s0 - q0 + j].full();
          if (!all_full) {
            // Filling the heaps (the first k codes): every distance, one query at a time.
            for (int j = 0; j < nsub; ++j) {
              TopK& h = heaps[s0 - q0 + j];
              kern.range(q + (s0 + j) * nbytes, codes + t0 * nbytes, m, nbytes, buf.data());
              int32_t th = h.threshold();
              for (int64_t i = 0; i < m; ++i) {
                if (buf[i] < th) {
                  h.push(buf[i], t0 + i);
                  th = h.threshold();
                }
              }
            }
            continue;
          }
          // Steady state: the filtered scan keeps the distances in registers; only the pairs
          // closer than their query's current k-th distance come back (codes arrive in index
          // order, so a tie at the k-th distance never wins: the filter is strict).
          int32_t thr[kScanQueries];
          for (int j = 0; j < nsub; ++j) thr[j] = heaps[s0 - q0 + j].threshold();
          for (int64_t c0 = 0; c0 < m; c0 += kChunk) {
            const int64_t mc = std::min(kChunk, m - c0);
            const int64_t nc = kern.scan(q + s0 * nbytes, nsub, codes + (t0 + c0) * nbytes, mc, nbytes, thr,
                                         cand.data(), cd.data());
            for (int64_t c = 0; c < nc; ++c) {
              const int j = static_cast<int>(cand[c] % kScanQueries);
              TopK& h = heaps[s0 - q0 + j];
              if (cd[c] < h.threshold()) {
                h.push(cd[c], t0 + c0 + cand[c] / kScanQueries);
                thr[j] = h.threshold();
              }
            }
          }
        }  // s0
      }    // t0
      for (int64_t j = q0; j < q1; ++j) heaps[j - q0].write_sorted(dist + j * k, idx + j * k);
    }
  });
}

}  // namespace hamming
}  // namespace semvis
