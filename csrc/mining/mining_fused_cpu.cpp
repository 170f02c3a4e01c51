// Fused GEMM + running top-k on the CPU (see mining.h, "fused").
//
// Why: with the framework's GEMM per tile, the GEMM runs on the framework's OpenMP team and the
// selection on our pool; after every tile GEMM the OpenMP workers spin-wait on the cores our
// pool needs (measured: 1.35x the bare matmul on 2 cores, 1.02x single-threaded). Here one pool
// does both: each thread computes a block of dot products and selects from it while it is hot.
//
// GEMM layout (the classic register-blocked scheme): the database is packed once per chunk of
// columns into panels of 16 columns x 256 dimensions (one panel = 16 KiB, L1-resident while a
// thread sweeps its query rows over it); each thread packs its block of query rows into panels of
// 6 rows; the 6 x 16 micro-kernel keeps 12 AVX registers of sums and issues 12 FMAs per 2 loads
// and 6 broadcasts. Sums over d are accumulated in order, 256 dimensions per pass.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "common/parallel.h"
#include "mining.h"

namespace semvis {
namespace mining {
namespace {

constexpr int64_t MR = 6, NR = 16, KC = 256;
constexpr int64_t kDefaultRows = 96, kDefaultCols = 256;
constexpr int64_t kWideColumns = 4096;  // the first block of each row (see topk_fused_cpu)

struct AlignedFree {
  void operator()(float* p) const { std::free(p); }
};
using Buf = std::unique_ptr<float[], AlignedFree>;
Buf alloc_floats(int64_t n) {
  const size_t bytes = (static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(float) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, bytes);
  if (!p) throw std::bad_alloc();
  return Buf(static_cast<float*>(p));
}

// Packed database chunk: for pass kb (dimensions [kb KC, kb KC + kc)) and panel jp (columns
// [16 jp, 16 jp + 16) of the chunk): kc x 16 floats at B + (kb * npanel + jp) * KC * 16,
// column-fastest; columns past the chunk are zero (packed in topk_fused_cpu).

// Packed query block: pass kb, panel ip (rows [6 ip, 6 ip + 6) of the block): kc x 6 floats at
// A + (kb * nip + ip) * KC * 6, row-fastest; rows past the block are zero.
void pack_q(const float* q, int64_t d, int64_t r0, int64_t nr, int64_t nip, float* A) {
  const int64_t nkb = (d + KC - 1) / KC;
  for (int64_t kb = 0; kb < nkb; ++kb) {
    const int64_t k0 = kb * KC, kc = std::min(KC, d - k0);
    for (int64_t ip = 0; ip < nip; ++ip) {
      float* out = A + (kb * nip + ip) * KC * MR;
      for (int64_t i = 0; i < MR; ++i) {
        const int64_t r = ip * MR + i;
        if (r < nr) {
          const float* src = q + (r0 + r) * d + k0;
          for (int64_t p = 0; p < kc; ++p) out[p * MR + i] = src[p];
        } else {
          for (int64_t p = 0; p < kc; ++p) out[p * MR + i] = 0.f;
        }
      }
    }
  }
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) inline void put(float* c, __m256 x0, __m256 x1, bool acc) {
  if (acc) {
    x0 = _mm256_add_ps(x0, _mm256_load_ps(c));
    x1 = _mm256_add_ps(x1, _mm256_load_ps(c + 8));
  }
  _mm256_store_ps(c, x0);
  _mm256_store_ps(c + 8, x1);
}

// C[6, 16] (row stride ldc) = (acc ? C : 0) + A-panel . B-panel over kc dimensions.
__attribute__((target("avx2,fma"))) void ukernel(const float* A, const float* B, float* C, int64_t ldc, int64_t kc,
                                                 bool acc) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
         c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int64_t p = 0; p < kc; ++p) {
    const __m256 b0 = _mm256_load_ps(B), b1 = _mm256_load_ps(B + 8);
    __m256 a = _mm256_broadcast_ss(A);
    c00 = _mm256_fmadd_ps(a, b0, c00);
    c01 = _mm256_fmadd_ps(a, b1, c01);
    a = _mm256_broadcast_ss(A + 1);
    c10 = _mm256_fmadd_ps(a, b0, c10);
    c11 = _mm256_fmadd_ps(a, b1, c11);
    a = _mm256_broadcast_ss(A + 2);
    c20 = _mm256_fmadd_ps(a, b0, c20);
    c21 = _mm256_fmadd_ps(a, b1, c21);
    a = _mm256_broadcast_ss(A + 3);
    c30 = _mm256_fmadd_ps(a, b0, c30);
    c31 = _mm256_fmadd_ps(a, b1, c31);
    a = _mm256_broadcast_ss(A + 4);
    c40 = _mm256_fmadd_ps(a, b0, c40);
    c41 = _mm256_fmadd_ps(a, b1, c41);
    a = _mm256_broadcast_ss(A + 5);
    c50 = _mm256_fmadd_ps(a, b0, c50);
    c51 = _mm256_fmadd_ps(a, b1, c51);
    A += MR;
    B += NR;
  }
  put(C, c00, c01, acc);
  put(C + ldc, c10, c11, acc);
  put(C + 2 * ldc, c20, c21, acc);
  put(C + 3 * ldc, c30, c31, acc);
  put(C + 4 * ldc, c40, c41, acc);
  put(C + 5 * ldc, c50, c51, acc);
}
#endif

}  // namespace

bool fused_available() {
#if defined(__x86_64__)
  static const bool v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return v;
#else
  return false;
#endif
}

void topk_fused_cpu(const float* q, int64_t n, const float* db, int64_t m, int64_t d, const Exclude& ex, bool largest,
                    uint64_t* keys, int64_t k, int64_t block_rows, int64_t block_cols) {
#if defined(__x86_64__)
  const int64_t br = block_rows > 0 ? block_rows : kDefaultRows;
  const int64_t bc = block_cols > 0 ? block_cols : kDefaultCols;
  const int64_t nip = (br + MR - 1) / MR;            // query panels per row block
  const int64_t bpan = (bc + NR - 1) / NR;           // database panels per column block
  const int64_t ldc = bpan * NR;
  const int64_t nkb = (d + KC - 1) / KC;
  // Column chunk: whole column blocks, at most kFusedPackFloats packed floats (and >= 1 block).
  const int64_t per_block = bpan * NR * nkb * KC;
  const int64_t chunk_blocks = std::max<int64_t>(1, kFusedPackFloats / per_block);
  const int64_t npanel_max = chunk_blocks * bpan;
  Buf B = alloc_floats(npanel_max * NR * nkb * KC);
  const int64_t nrb = (n + br - 1) / br;
  // Width (in column blocks) of the first block of every row: whole blocks of 16-column panels
  // only (bc a multiple of 16, so that the panels of consecutive blocks are consecutive columns).
  const int64_t wide_blocks =
      bc % NR == 0 ? std::max<int64_t>(1, std::min<int64_t>(chunk_blocks, kWideColumns / bc)) : 1;
  const int64_t ldc_wide = std::max(ldc, wide_blocks * bpan * NR);
  for (int64_t c0 = 0; c0 < m; c0 += chunk_blocks * bc) {
    const int64_t nc = std::min(chunk_blocks * bc, m - c0);
    const int64_t ncb = (nc + bc - 1) / bc;  // column blocks in this chunk
    // Panels are laid out per column block so that a block's panels are contiguous per pass.
    const int64_t npanel = ncb * bpan;
    parallel_for(0, ncb, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t cb = lo; cb < hi; ++cb) {
        const int64_t bc0 = cb * bc, bnc = std::min(bc, nc - bc0);
        // Panels of block cb are [cb * bpan, cb * bpan + bpan): panel (kb, cb * bpan + j) at
        // B + (kb * npanel + cb * bpan + j) * KC * NR.
        float* base = B.get() + cb * bpan * KC * NR;
        for (int64_t kb = 0; kb < nkb; ++kb) {
          const int64_t k0 = kb * KC, kc = std::min(KC, d - k0);
          for (int64_t j = 0; j < bpan; ++j) {
            float* out = base + (kb * npanel + j) * KC * NR;
            for (int64_t jj = 0; jj < NR; ++jj) {
              const int64_t c = j * NR + jj;
              if (c < bnc) {
                const float* src = db + (c0 + bc0 + c) * d + k0;
                for (int64_t p = 0; p < kc; ++p) out[p * NR + jj] = src[p];
              } else {
                for (int64_t p = 0; p < kc; ++p) out[p * NR + jj] = 0.f;
              }
            }
          }
        }
      }
    });
    parallel_for(0, nrb, 1, [&](int64_t lo, int64_t hi) {
      Buf A = alloc_floats(nkb * nip * KC * MR);
      Buf C = alloc_floats(nip * MR * ldc_wide);
      MergeScratch sc;
      for (int64_t rb = lo; rb < hi; ++rb) {
        const int64_t r0 = rb * br, nr = std::min(br, n - r0);
        const int64_t rip = (nr + MR - 1) / MR;  // panels holding real rows
        pack_q(q, d, r0, nr, nip, A.get());
        for (int64_t cb = 0; cb < ncb;) {
          // The very first columns of a row go in one wide block (whole column blocks): the
          // heaps fill from the best k of ~4,096 columns rather than 256, so that far fewer
          // later candidates beat the k-th (~k (1 + ln(m / 4096)) heap replacements per row
          // instead of ~k (1 + ln(m / 256))).
          const int64_t nblk = (c0 == 0 && cb == 0) ? wide_blocks : 1;
          const int64_t bc0 = cb * bc, bnc = std::min(nblk * bc, nc - bc0);
          const int64_t cpan = (bnc + NR - 1) / NR;
          const int64_t ldw = cpan * NR;
          for (int64_t kb = 0; kb < nkb; ++kb) {
            const int64_t kc = std::min(KC, d - kb * KC);
            const float* Bk = B.get() + (kb * npanel + cb * bpan) * KC * NR;
            const float* Ak = A.get() + kb * nip * KC * MR;
            for (int64_t jp = 0; jp < cpan; ++jp)
              for (int64_t ip = 0; ip < rip; ++ip)
                ukernel(Ak + ip * KC * MR, Bk + jp * KC * NR, C.get() + ip * MR * ldw + jp * NR, ldw, kc, kb > 0);
          }
          merge_rows_cpu(C.get(), ldw, 0, nr, bnc, r0, c0 + bc0, m, ex, largest, keys, k, sc);
          cb += nblk;
        }
      }
    });
  }
#else
  (void)q; (void)n; (void)db; (void)m; (void)d; (void)ex; (void)largest; (void)keys; (void)k;
  (void)block_rows; (void)block_cols;
  fail("topk_similar: the fused CPU kernel needs an x86-64 CPU with AVX2 and FMA");
#endif
}

}  // namespace mining
}  // namespace semvis
