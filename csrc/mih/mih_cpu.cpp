// Multi-index hashing on the CPU: tables built in parallel (one per task), queries searched in
// parallel (one per task step), scratch reused within a task.
#include <algorithm>
#include <cmath>
#include <vector>

#include "common/parallel.h"
#include "hamming/hamming_simd.h"
#include "hamming/topk_heap.h"
#include "mih.h"

namespace semvis {
namespace mih {
namespace {

// Value of the s-bit substring starting at bit b of a code (first bit most significant).
inline uint32_t substring(const uint8_t* code, int64_t nbytes, int64_t b, int64_t s) {
  const int64_t byte = b >> 3, off = b & 7;
  uint64_t w = 0;
  for (int64_t i = 0; i < 5; ++i) w = (w << 8) | (byte + i < nbytes ? code[byte + i] : 0);
  return static_cast<uint32_t>((w >> (40 - off - s)) & ((uint64_t{1} << s) - 1));
}

struct Layout {
  std::vector<int64_t> begin, bits, offset;  // per table: first bit, bits, start in the offsets array
  Layout(int64_t nbits, int64_t m) {
    int64_t b = 0, o = 0;
    for (int64_t j = 0; j < m; ++j) {
      const int64_t s = substring_bits(nbits, m, j);
      begin.push_back(b);
      bits.push_back(s);
      offset.push_back(o);
      b += s;
      o += (int64_t{1} << s) + 1;
    }
  }
};

constexpr int64_t kChunk = 256;
constexpr int kGroup = 16;

struct Scratch {
  std::vector<uint64_t> visited;
  std::vector<int64_t> touched;  // positions scored (to clear visited)
  std::vector<int64_t> pending;  // positions waiting to be scored
  std::vector<uint8_t> gather;
  std::vector<int32_t> buf = std::vector<int32_t>(1024);
  std::vector<uint32_t> qv;
  hamming::TopK top;
};

inline bool test_and_set(std::vector<uint64_t>& bits, int64_t pos) {
  uint64_t& w = bits[pos >> 6];
  const uint64_t b = uint64_t{1} << (pos & 63);
  const bool was = w & b;
  w |= b;
  return was;
}

void flush(const IndexRef& x, const uint8_t* q, hamming::RangeFn range, Scratch& s) {
  const int64_t nb = x.nbytes;
  const int64_t np = static_cast<int64_t>(s.pending.size());
  for (int64_t c0 = 0; c0 < np; c0 += kChunk) {
    const int64_t m = std::min(kChunk, np - c0);
    for (int64_t i = 0; i < m; ++i) {
      const int64_t pos = s.pending[c0 + i];
      std::copy(x.codes + pos * nb, x.codes + (pos + 1) * nb, s.gather.data() + i * nb);
    }
    range(q, s.gather.data(), m, nb, s.buf.data());
    int32_t th = s.top.threshold();
    for (int64_t i = 0; i < m; ++i) {
      if (s.buf[i] <= th) {
        s.top.push(s.buf[i], x.ids[s.pending[c0 + i]]);
        th = s.top.threshold();
      }
    }
  }
  s.pending.clear();
}

// Scores every key not yet visited by a linear scan (exact completion).
void scan_rest(const IndexRef& x, const uint8_t* q, hamming::RangeFn range, Scratch& s, bool any_visited) {
  const int64_t nb = x.nbytes;
  for (int64_t c0 = 0; c0 < x.n; c0 += 1024) {
    const int64_t m = std::min<int64_t>(1024, x.n - c0);
    range(q, x.codes + c0 * nb, m, nb, s.buf.data());
    int32_t th = s.top.threshold();
    for (int64_t i = 0; i < m; ++i) {
      const int64_t pos = c0 + i;
      if (any_visited && ((s.visited[pos >> 6] >> (pos & 63)) & 1)) continue;
      if (s.buf[i] <= th) {
        s.top.push(s.buf[i], x.ids[pos]);
        th = s.top.threshold();
      }
    }
  }
}

double binomial(int64_t s, int64_t r) {
  if (r < 0 || r > s) return 0.0;
  double c = 1.0;
  for (int64_t i = 1; i <= r; ++i) c = c * static_cast<double>(s - r + i) / static_cast<double>(i);
  return c;
}

// Returns the number of keys scored.
int64_t search_one(const IndexRef& x, const Layout& L, const uint8_t* q, int64_t k, hamming::RangeFn range,
                   Scratch& s) {
  s.top.reset(k);
  const int64_t m = x.m;
  if (k >= x.n || x.n <= 1024) {
    scan_rest(x, q, range, s, false);
    return x.n;
  }
  for (int64_t j = 0; j < m; ++j) s.qv[j] = substring(q, x.nbytes, L.begin[j], L.bits[j]);
  const int64_t min_bits = *std::min_element(L.bits.begin(), L.bits.end());
  // A probe or a scored key is a cache miss (tens of ns); the linear scan streams about one key
  // per ns. Past these budgets the scan is the cheaper way to finish, so the worst case (far
  // neighbours, large k) costs at most about twice the brute force.
  const double max_lookups = static_cast<double>(x.n) / 128.0;
  const int64_t max_scored = x.n / 64;
  double lookups = 0.0;
  bool done = false, scanned = false;
  for (int64_t r = 0; r <= min_bits && !done; ++r) {
    double next = 0.0;
    for (int64_t j = 0; j < m; ++j) next += binomial(L.bits[j], r);
    if (r > 0 && lookups + next > max_lookups) {
      scanned = true;
      break;
    }
    lookups += next;
    for (int64_t j = 0; j < m && !done; ++j) {
      const int64_t sb = L.bits[j];
      const int32_t* O = x.offsets + L.offset[j];
      const int32_t* P = x.positions + j * x.n;
      const uint32_t qv = s.qv[j];
      // every mask of sb bits with exactly r ones (Gosper's hack), in increasing order; the
      // buckets are looked up in groups whose offsets are prefetched first (each is a cache miss)
      uint64_t mask = (uint64_t{1} << r) - 1;
      const uint64_t limit = uint64_t{1} << sb;
      bool more = true;
      while (more) {
        uint32_t group[kGroup];
        int g = 0;
        for (; g < kGroup && more; ++g) {
          group[g] = qv ^ static_cast<uint32_t>(mask);
          __builtin_prefetch(O + group[g]);
          if (r == 0) {
            more = false;
          } else {
            const uint64_t c = mask & (~mask + 1), rr = mask + c;
            mask = (((rr ^ mask) >> 2) / c) | rr;
            more = mask < limit;
          }
        }
        for (int gi = 0; gi < g; ++gi) {
          const uint32_t v = group[gi];
          for (int32_t i = O[v], e = O[v + 1]; i < e; ++i) {
            const int64_t pos = P[i];
            if (test_and_set(s.visited, pos)) continue;
            s.touched.push_back(pos);
            s.pending.push_back(pos);
            __builtin_prefetch(x.codes + pos * x.nbytes);
            if (static_cast<int64_t>(s.pending.size()) >= kChunk) flush(x, q, range, s);
          }
        }
      }
      flush(x, q, range, s);
      const int64_t bound = m * r + j + 1;  // every unseen key is at least this far
      if (s.top.full() && s.top.threshold() < bound) done = true;
      else if (static_cast<int64_t>(s.touched.size()) > max_scored) {
        scanned = true;
        break;
      }
    }
    if (scanned) break;
  }
  int64_t scored = static_cast<int64_t>(s.touched.size());
  if (!done) {  // the budget ran out (or every radius was searched): finish exactly by a scan
    (void)scanned;
    scan_rest(x, q, range, s, true);
    scored = x.n;
  }
  for (int64_t pos : s.touched) s.visited[pos >> 6] = 0;
  s.touched.clear();
  return scored;
}

}  // namespace

void build_cpu(const uint8_t* codes, int64_t n, int64_t nbytes, int64_t m, int32_t* offsets, int32_t* positions) {
  const Layout L(8 * nbytes, m);
  parallel_for(0, m, 1, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t sb = L.bits[j], buckets = int64_t{1} << sb;
      int32_t* O = offsets + L.offset[j];
      int32_t* P = positions + j * n;
      std::fill(O, O + buckets + 1, 0);
      for (int64_t i = 0; i < n; ++i) ++O[substring(codes + i * nbytes, nbytes, L.begin[j], sb) + 1];
      for (int64_t v = 0; v < buckets; ++v) O[v + 1] += O[v];
      std::vector<int32_t> cursor(O, O + buckets);
      for (int64_t i = 0; i < n; ++i)
        P[cursor[substring(codes + i * nbytes, nbytes, L.begin[j], sb)]++] = static_cast<int32_t>(i);
    }
  });
}

void search_cpu(const IndexRef& x, const uint8_t* queries, int64_t nq, int64_t k, int32_t* dist, int64_t* out_ids,
                int64_t* counts) {
  const hamming::RangeFn range = hamming::kernels().range;
  const Layout L(8 * x.nbytes, x.m);
  const int64_t grain = std::max<int64_t>(1, std::min<int64_t>(64, nq / (8 * get_num_threads())));
  parallel_for(0, nq, grain, [&](int64_t lo, int64_t hi) {
    Scratch s;
    s.visited.assign((x.n + 63) / 64, 0);
    s.gather.resize(kChunk * x.nbytes);
    s.qv.resize(x.m);
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t scored = search_one(x, L, queries + i * x.nbytes, k, range, s);
      s.top.write_sorted(dist + i * k, out_ids + i * k);
      if (counts) counts[i] = scored;
    }
  });
}

}  // namespace mih
}  // namespace semvis
