// Inner Hamming loops. Each variant is one function compiled for its instruction set with a
// target attribute; the loop bodies are always_inline templates so that __builtin_popcountll is
// expanded inside the target function (to POPCNT there, never in code the CPU may not run).
#include "hamming_simd.h"

#include <algorithm>
#include <cstdlib>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <cstring>
#include <string>

#include "common/tensor.h"

namespace semvis {
namespace hamming {
namespace {

#define SEMVIS_INLINE inline __attribute__((always_inline))

SEMVIS_INLINE uint64_t load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);  // numpy rows need not be 8-byte aligned
  return v;
}

struct PopSwar {
  static SEMVIS_INLINE int pop(uint64_t x) {
    x = x - ((x >> 1) & 0x5555555555555555ULL);
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
    return static_cast<int>((x * 0x0101010101010101ULL) >> 56);
  }
};

struct PopBuiltin {
  static SEMVIS_INLINE int pop(uint64_t x) { return __builtin_popcountll(x); }
};

template <class P>
SEMVIS_INLINE void range_impl(const uint8_t* q, const uint8_t* codes, int64_t n, int64_t nbytes, int32_t* out) {
  if (nbytes == 32) {  // 256-bit fast path: the query stays in four registers
    const uint64_t q0 = load64(q), q1 = load64(q + 8), q2 = load64(q + 16), q3 = load64(q + 24);
    for (int64_t i = 0; i < n; ++i) {
      const uint8_t* c = codes + 32 * i;
      out[i] = P::pop(q0 ^ load64(c)) + P::pop(q1 ^ load64(c + 8)) + P::pop(q2 ^ load64(c + 16)) +
               P::pop(q3 ^ load64(c + 24));
    }
    return;
  }
  if (nbytes == 8) {
    const uint64_t q0 = load64(q);
    for (int64_t i = 0; i < n; ++i) out[i] = P::pop(q0 ^ load64(codes + 8 * i));
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* c = codes + nbytes * i;
    int s = 0;
    for (int64_t w = 0; w < nbytes; w += 8) s += P::pop(load64(q + w) ^ load64(c + w));
    out[i] = s;
  }
}

// Words per code known at compile time for the common sizes (64/128/256/512 bits): the query
// block stays in registers (or L1) and each code word is loaded once for all its queries.
template <class P, int NW>
SEMVIS_INLINE int64_t scan_words(const uint8_t* q, int nq, const uint8_t* codes, int64_t m, const int32_t* thr,
                                 uint32_t* cand, int32_t* cd) {
  uint64_t qw[kScanQueries][NW];
  int32_t t[kScanQueries];
  for (int j = 0; j < kScanQueries; ++j) {
    const int jj = j < nq ? j : nq - 1;  // pad the block with copies of its last query
    for (int w = 0; w < NW; ++w) qw[j][w] = load64(q + jj * NW * 8 + 8 * w);
    t[j] = j < nq ? thr[jj] : 0;         // a padded query never passes
  }
  int64_t c = 0;
  for (int64_t i = 0; i < m; ++i) {
    const uint8_t* p = codes + i * NW * 8;
    uint64_t cw[NW];
    for (int w = 0; w < NW; ++w) cw[w] = load64(p + 8 * w);
    int32_t d[kScanQueries];
    for (int j = 0; j < kScanQueries; ++j) {
      int s = 0;
      for (int w = 0; w < NW; ++w) s += P::pop(qw[j][w] ^ cw[w]);
      d[j] = s;
    }
    // One well-predicted branch per code: almost every code fails every filter.
    // d < t <=> d - t < 0 (both within [0, 2^31)): one sign test for the four filters.
    if (((d[0] - t[0]) | (d[1] - t[1]) | (d[2] - t[2]) | (d[3] - t[3])) < 0) {
      for (int j = 0; j < kScanQueries; ++j) {
        if (d[j] < t[j]) {
          cand[c] = static_cast<uint32_t>(i * kScanQueries + j);
          cd[c] = d[j];
          ++c;
        }
      }
    }
  }
  return c;
}
static_assert(kScanQueries == 4, "scan_words tests four filters at once");

template <class P>
SEMVIS_INLINE int64_t scan_impl(const uint8_t* q, int nq, const uint8_t* codes, int64_t m, int64_t nbytes,
                                const int32_t* thr, uint32_t* cand, int32_t* cd) {
  switch (nbytes) {
    case 8: return scan_words<P, 1>(q, nq, codes, m, thr, cand, cd);
    case 16: return scan_words<P, 2>(q, nq, codes, m, thr, cand, cd);
    case 32: return scan_words<P, 4>(q, nq, codes, m, thr, cand, cd);
    case 64: return scan_words<P, 8>(q, nq, codes, m, thr, cand, cd);
    default: break;
  }
  int64_t c = 0;
  for (int64_t i = 0; i < m; ++i) {
    const uint8_t* p = codes + nbytes * i;
    for (int j = 0; j < nq; ++j) {
      int s = 0;
      for (int64_t w = 0; w < nbytes; w += 8) s += P::pop(load64(q + j * nbytes + w) ^ load64(p + w));
      if (s < thr[j]) {
        cand[c] = static_cast<uint32_t>(i * kScanQueries + j);
        cd[c] = s;
        ++c;
      }
    }
  }
  return c;
}

int64_t scan_generic(const uint8_t* q, int nq, const uint8_t* codes, int64_t m, int64_t nbytes, const int32_t* thr,
                     uint32_t* cand, int32_t* cd) {
  return scan_impl<PopSwar>(q, nq, codes, m, nbytes, thr, cand, cd);
}

void range_generic(const uint8_t* q, const uint8_t* codes, int64_t n, int64_t nbytes, int32_t* out) {
  range_impl<PopSwar>(q, codes, n, nbytes, out);
}

#if defined(__x86_64__) || defined(__i386__)
#define SEMVIS_HAVE_POPCNT_TARGET 1
__attribute__((target("popcnt"))) void range_popcnt(const uint8_t* q, const uint8_t* codes, int64_t n,
                                                    int64_t nbytes, int32_t* out) {
  range_impl<PopBuiltin>(q, codes, n, nbytes, out);
}
__attribute__((target("popcnt"))) int64_t scan_popcnt(const uint8_t* q, int nq, const uint8_t* codes, int64_t m,
                                                      int64_t nbytes, const int32_t* thr, uint32_t* cand,
                                                      int32_t* cd) {
  return scan_impl<PopBuiltin>(q, nq, codes, m, nbytes, thr, cand, cd);
}
bool cpu_has_popcnt() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("popcnt");
}

// 256-bit codes on a CPU with AVX2 and POPCNT: the block's queries 0 and 1 go through scalar
// POPCNT (integer pipes), queries 2 and 3 through the AVX2 nibble-table popcount (vector pipes),
// so both kinds of execution units work on every code at once.
__attribute__((target("popcnt,avx2"))) int64_t scan32_hybrid(const uint8_t* q, int nq, const uint8_t* codes,
                                                             int64_t m, const int32_t* thr, uint32_t* cand,
                                                             int32_t* cd) {
  auto qrow = [&](int j) { return q + 32 * (j < nq ? j : nq - 1); };
  const uint64_t a0 = load64(qrow(0)), a1 = load64(qrow(0) + 8), a2 = load64(qrow(0) + 16), a3 = load64(qrow(0) + 24);
  const uint64_t b0 = load64(qrow(1)), b1 = load64(qrow(1) + 8), b2 = load64(qrow(1) + 16), b3 = load64(qrow(1) + 24);
  const __m256i Q2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qrow(2)));
  const __m256i Q3 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qrow(3)));
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2,
                                       2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f), zero = _mm256_setzero_si256();
  int32_t t[4];
  for (int j = 0; j < 4; ++j) t[j] = j < nq ? thr[j] : 0;  // a padded query never passes
  int64_t c = 0;
  for (int64_t i = 0; i < m; ++i) {
    const uint8_t* p = codes + 32 * i;
    const uint64_t c0 = load64(p), c1 = load64(p + 8), c2 = load64(p + 16), c3 = load64(p + 24);
    const __m256i cv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    const int32_t d0 = __builtin_popcountll(a0 ^ c0) + __builtin_popcountll(a1 ^ c1) + __builtin_popcountll(a2 ^ c2) +
                       __builtin_popcountll(a3 ^ c3);
    const int32_t d1 = __builtin_popcountll(b0 ^ c0) + __builtin_popcountll(b1 ^ c1) + __builtin_popcountll(b2 ^ c2) +
                       __builtin_popcountll(b3 ^ c3);
    const __m256i x2 = _mm256_xor_si256(cv, Q2), x3 = _mm256_xor_si256(cv, Q3);
    const __m256i p2 = _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(x2, low)),
                                       _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(x2, 4), low)));
    const __m256i p3 = _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(x3, low)),
                                       _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(x3, 4), low)));
    const __m256i s2 = _mm256_sad_epu8(p2, zero), s3 = _mm256_sad_epu8(p3, zero);  // 4 x u64 each
    const __m256i v = _mm256_add_epi64(_mm256_unpacklo_epi64(s2, s3), _mm256_unpackhi_epi64(s2, s3));
    const __m128i w = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    const int32_t d2 = static_cast<int32_t>(_mm_cvtsi128_si64(w)), d3 = static_cast<int32_t>(_mm_extract_epi64(w, 1));
    if (((d0 - t[0]) | (d1 - t[1]) | (d2 - t[2]) | (d3 - t[3])) < 0) {
      const int32_t d[4] = {d0, d1, d2, d3};
      for (int j = 0; j < 4; ++j) {
        if (d[j] < t[j]) {
          cand[c] = static_cast<uint32_t>(i * kScanQueries + j);
          cd[c] = d[j];
          ++c;
        }
      }
    }
  }
  return c;
}
__attribute__((target("popcnt"))) int64_t scan_popcnt_hybrid(const uint8_t* q, int nq, const uint8_t* codes,
                                                             int64_t m, int64_t nbytes, const int32_t* thr,
                                                             uint32_t* cand, int32_t* cd) {
  if (nbytes == 32) return scan32_hybrid(q, nq, codes, m, thr, cand, cd);
  return scan_impl<PopBuiltin>(q, nq, codes, m, nbytes, thr, cand, cd);
}
bool cpu_has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2");
}

// ---- vertical layout (see hamming_simd.h) ----
__attribute__((target("avx2"))) void transpose32_avx2(const uint8_t* codes, int64_t m, uint32_t* out) {
  const int64_t full = m / 8;
  for (int64_t g = 0; g < full; ++g) {
    const uint8_t* p = codes + 256 * g;
    __m256i r[8];
    for (int l = 0; l < 8; ++l) r[l] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32 * l));
    // 8 x 8 transpose of 32-bit words: rows = codes, columns = words.
    const __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    const __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    const __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]), t5 = _mm256_unpackhi_epi32(r[4], r[5]);
    const __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]), t7 = _mm256_unpackhi_epi32(r[6], r[7]);
    const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    const __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
    const __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
    __m256i* o = reinterpret_cast<__m256i*>(out + 64 * g);
    _mm256_storeu_si256(o + 0, _mm256_permute2x128_si256(u0, u4, 0x20));
    _mm256_storeu_si256(o + 1, _mm256_permute2x128_si256(u1, u5, 0x20));
    _mm256_storeu_si256(o + 2, _mm256_permute2x128_si256(u2, u6, 0x20));
    _mm256_storeu_si256(o + 3, _mm256_permute2x128_si256(u3, u7, 0x20));
    _mm256_storeu_si256(o + 4, _mm256_permute2x128_si256(u0, u4, 0x31));
    _mm256_storeu_si256(o + 5, _mm256_permute2x128_si256(u1, u5, 0x31));
    _mm256_storeu_si256(o + 6, _mm256_permute2x128_si256(u2, u6, 0x31));
    _mm256_storeu_si256(o + 7, _mm256_permute2x128_si256(u3, u7, 0x31));
  }
  if (full * 8 < m) {
    uint32_t* o = out + 64 * full;
    for (int i = 0; i < 64; ++i) o[i] = 0;
    for (int64_t i = full * 8; i < m; ++i)
      for (int w = 0; w < 8; ++w) std::memcpy(&o[8 * w + (i - full * 8)], codes + 32 * i + 4 * w, 4);
  }
}

__attribute__((target("avx2"))) int64_t scan32v_avx2(const uint32_t* tcodes, int64_t m, const uint8_t* q, int nq,
                                                     const int32_t* thr, uint32_t* cand, int32_t* cd) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2,
                                       2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f), ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
  uint32_t qw[kVerticalQueries * 8];  // 8 words per query
  std::memcpy(qw, q, static_cast<size_t>(nq) * 32);
  int64_t c = 0;
  const int64_t ng = (m + 7) / 8;
  for (int64_t g = 0; g < ng; ++g) {
    const __m256i* W = reinterpret_cast<const __m256i*>(tcodes + 64 * g);
    const __m256i w0 = _mm256_loadu_si256(W), w1 = _mm256_loadu_si256(W + 1), w2 = _mm256_loadu_si256(W + 2),
                  w3 = _mm256_loadu_si256(W + 3), w4 = _mm256_loadu_si256(W + 4), w5 = _mm256_loadu_si256(W + 5),
                  w6 = _mm256_loadu_si256(W + 6), w7 = _mm256_loadu_si256(W + 7);
    const int lanes = static_cast<int>(std::min<int64_t>(8, m - 8 * g));
    const unsigned valid = (1u << lanes) - 1u;
    for (int j = 0; j < nq; ++j) {
      const uint32_t* qj = qw + 8 * j;
      __m256i acc;
#define SEMVIS_NIB(x) \
  _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(x, low)), \
                  _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi32(x, 4), low)))
#define SEMVIS_WORD(wv, i) _mm256_xor_si256(wv, _mm256_set1_epi32(static_cast<int>(qj[i])))
      {
        const __m256i x0 = SEMVIS_WORD(w0, 0), x1 = SEMVIS_WORD(w1, 1), x2 = SEMVIS_WORD(w2, 2),
                      x3 = SEMVIS_WORD(w3, 3);
        const __m256i a = _mm256_add_epi8(SEMVIS_NIB(x0), SEMVIS_NIB(x1));
        const __m256i b = _mm256_add_epi8(SEMVIS_NIB(x2), SEMVIS_NIB(x3));
        acc = _mm256_add_epi8(a, b);
      }
      {
        const __m256i x4 = SEMVIS_WORD(w4, 4), x5 = SEMVIS_WORD(w5, 5), x6 = SEMVIS_WORD(w6, 6),
                      x7 = SEMVIS_WORD(w7, 7);
        const __m256i a = _mm256_add_epi8(SEMVIS_NIB(x4), SEMVIS_NIB(x5));
        const __m256i b = _mm256_add_epi8(SEMVIS_NIB(x6), SEMVIS_NIB(x7));
        acc = _mm256_add_epi8(acc, _mm256_add_epi8(a, b));
      }
#undef SEMVIS_NIB
#undef SEMVIS_WORD
      // bytes (<= 64 each) -> 32-bit lanes: the distances to the 8 codes
      const __m256i d = _mm256_madd_epi16(_mm256_maddubs_epi16(acc, ones8), ones16);
      const __m256i t = _mm256_set1_epi32(thr[j]);
      unsigned mask = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(t, d))));
      mask &= valid;
      if (mask) {
        alignas(32) int32_t dv[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(dv), d);
        while (mask) {
          const int l = __builtin_ctz(mask);
          mask &= mask - 1;
          cand[c] = static_cast<uint32_t>((8 * g + l) * kVerticalQueries + j);
          cd[c] = dv[l];
          ++c;
        }
      }
    }
  }
  return c;
}
#else
// Other architectures (aarch64: CNT is baseline) compile the builtin to the native instruction.
void range_popcnt(const uint8_t* q, const uint8_t* codes, int64_t n, int64_t nbytes, int32_t* out) {
  range_impl<PopBuiltin>(q, codes, n, nbytes, out);
}
int64_t scan_popcnt(const uint8_t* q, int nq, const uint8_t* codes, int64_t m, int64_t nbytes, const int32_t* thr,
                    uint32_t* cand, int32_t* cd) {
  return scan_impl<PopBuiltin>(q, nq, codes, m, nbytes, thr, cand, cd);
}
bool cpu_has_popcnt() { return true; }
#endif

const Kernels kGeneric{"generic", &range_generic, &scan_generic, nullptr, nullptr};
#if defined(__x86_64__) || defined(__i386__)
const Kernels kPopcnt{"popcnt", &range_popcnt, &scan_popcnt, nullptr, nullptr};
// POPCNT and AVX2 (the same name: the popcount is still the hardware one): hybrid filtered scan,
// and the vertical scan for 256-bit top-k.
const Kernels kPopcntAvx2{"popcnt", &range_popcnt, &scan_popcnt_hybrid, &transpose32_avx2, &scan32v_avx2};
const Kernels* popcnt_kernels() {
  static const bool env_off = std::getenv("SEMVIS_HAMMING_NO_AVX2") != nullptr;  // for measurements
  return cpu_has_avx2() && !env_off ? &kPopcntAvx2 : &kPopcnt;
}
#else
const Kernels kPopcnt{"popcnt", &range_popcnt, &scan_popcnt, nullptr, nullptr};
const Kernels* popcnt_kernels() { return &kPopcnt; }
#endif

const Kernels* choose(const std::string& name) {
  if (name == "generic") return &kGeneric;
  if (name == "popcnt-scalar") {
    if (!cpu_has_popcnt()) failf("hamming: this CPU has no POPCNT instruction; use 'generic' or 'auto'");
    return &kPopcnt;
  }
  if (name == "popcnt") {
    if (!cpu_has_popcnt()) failf("hamming: this CPU has no POPCNT instruction; use 'generic' or 'auto'");
    return popcnt_kernels();
  }
  if (name == "auto" || name.empty()) return cpu_has_popcnt() ? popcnt_kernels() : &kGeneric;
  failf("hamming: unknown implementation '", name, "'; expected one of auto, generic, popcnt, popcnt-scalar");
}

const Kernels*& current() {
  static const Kernels* k = [] {
    const char* env = std::getenv("SEMVIS_HAMMING_IMPL");
    return choose(env ? env : "auto");
  }();
  return k;
}

}  // namespace

const Kernels& kernels() { return *current(); }

void set_kernels(const char* name) { current() = choose(name ? name : "auto"); }

}  // namespace hamming
}  // namespace semvis
