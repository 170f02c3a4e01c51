// Inner Hamming loops. Each variant is one function compiled for its instruction set with a
// target attribute; the loop bodies are always_inline templates so that __builtin_popcountll is
// expanded inside the target function (to POPCNT there, never in code the CPU may not run).
#include "hamming_simd.h"

#include <cstdlib>
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

const Kernels kGeneric{"generic", &range_generic, &scan_generic};
const Kernels kPopcnt{"popcnt", &range_popcnt, &scan_popcnt};

const Kernels* choose(const std::string& name) {
  if (name == "generic") return &kGeneric;
  if (name == "popcnt") {
    if (!cpu_has_popcnt()) failf("hamming: this CPU has no POPCNT instruction; use 'generic' or 'auto'");
    return &kPopcnt;
  }
  if (name == "auto" || name.empty()) return cpu_has_popcnt() ? &kPopcnt : &kGeneric;
  failf("hamming: unknown implementation '", name, "'; expected one of auto, generic, popcnt");
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
