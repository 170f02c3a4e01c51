// Algorithm 1 (BUILD-TREE), level by level. Per node: count the ones of every bit, pick the
// most balanced bit, partition the node's range in place (bit 1 first). Large nodes count in
// parallel chunks; the many small nodes of a level are processed in parallel, one per task.
#include <algorithm>
#include <array>
#include <cstdlib>
#include <vector>

#include "common/parallel.h"
#include "kdtree.h"

namespace semvis {
namespace kdtree {
namespace {

// kSpread[v]: byte j (little-endian) holds bit j of v in np.unpackbits order, i.e. (v >> (7 - j)) & 1.
// Adding kSpread[row[b]] to a uint64 accumulates eight byte-wide counters at once.
const std::array<uint64_t, 256>& spread_table() {
  static const std::array<uint64_t, 256> t = [] {
    std::array<uint64_t, 256> r{};
    for (int v = 0; v < 256; ++v)
      for (int j = 0; j < 8; ++j) r[v] |= static_cast<uint64_t>((v >> (7 - j)) & 1) << (8 * j);
    return r;
  }();
  return t;
}

// counts[x] += #{i in [lo, hi) : bit x of row i is 1}; rows.row(i) is the code of position i.
template <class Rows>
void count_bits(const Rows& rows, int64_t lo, int64_t hi, int64_t nbytes, int64_t* counts) {
  const auto& T = spread_table();
  std::vector<uint64_t> acc(nbytes, 0);
  auto flush = [&] {
    for (int64_t b = 0; b < nbytes; ++b) {
      const uint64_t a = acc[b];
      for (int j = 0; j < 8; ++j) counts[8 * b + j] += static_cast<int64_t>((a >> (8 * j)) & 0xff);
      acc[b] = 0;
    }
  };
  int pending = 0;
  for (int64_t i = lo; i < hi; ++i) {
    const uint8_t* row = rows.row(i);
    for (int64_t b = 0; b < nbytes; ++b) acc[b] += T[row[b]];
    if (++pending == 255) {  // byte counters would overflow at 256
      flush();
      pending = 0;
    }
  }
  if (pending) flush();
}

// Tree 0: the codes and ids themselves are permuted.
struct OwnRows {
  uint8_t* codes;
  int64_t* ids;
  int64_t nbytes;
  const uint8_t* row(int64_t i) const { return codes + i * nbytes; }
  void swap(int64_t i, int64_t j) const {
    std::swap_ranges(codes + i * nbytes, codes + (i + 1) * nbytes, codes + j * nbytes);
    std::swap(ids[i], ids[j]);
  }
};

// Trees 1..T-1: only a permutation of positions into the shared codes.
struct PermRows {
  const uint8_t* codes;
  int32_t* perm;
  int64_t nbytes;
  const uint8_t* row(int64_t i) const { return codes + static_cast<int64_t>(perm[i]) * nbytes; }
  void swap(int64_t i, int64_t j) const { std::swap(perm[i], perm[j]); }
};

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// A bit drawn uniformly among the `choices` most balanced non-constant bits (ranked by
// |2 c_x - m|, lowest x on ties), from a generator seeded by (seed, tree, node); -1 when every
// bit is constant.
int64_t choose_random_dim(const int64_t* counts, int64_t nbits, int64_t m, int64_t choices, uint64_t seed,
                          int64_t tree, int64_t node) {
  std::vector<std::pair<int64_t, int64_t>> gaps;
  gaps.reserve(nbits);
  for (int64_t x = 0; x < nbits; ++x)
    if (counts[x] != 0 && counts[x] != m) gaps.emplace_back(std::llabs(2 * counts[x] - m), x);
  if (gaps.empty()) return -1;
  const int64_t c = std::min<int64_t>(choices, static_cast<int64_t>(gaps.size()));
  std::partial_sort(gaps.begin(), gaps.begin() + c, gaps.end());
  const uint64_t r = splitmix64(splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(tree)) ^
                                static_cast<uint64_t>(node));
  return gaps[r % static_cast<uint64_t>(c)].second;
}

// Line 6 of Algorithm 1: argmin_x |0.5 - c_x / m| = argmin_x |2 c_x - m| (exact in integers),
// lowest x on ties; -1 when the best bit is constant (then every bit is: degenerate guard).
int64_t choose_dim(const int64_t* counts, int64_t nbits, int64_t m) {
  int64_t best = 0, best_gap = std::llabs(2 * counts[0] - m);
  for (int64_t x = 1; x < nbits; ++x) {
    const int64_t gap = std::llabs(2 * counts[x] - m);
    if (gap < best_gap) {
      best_gap = gap;
      best = x;
    }
  }
  return (counts[best] == 0 || counts[best] == m) ? -1 : best;
}

// Lines 7-8: keys with bit dim = 1 move to the front. Returns the end of that part.
template <class Rows>
int64_t partition(const Rows& rows, int64_t lo, int64_t hi, int64_t dim) {
  const int64_t byte = dim >> 3;
  const uint8_t mask = static_cast<uint8_t>(0x80u >> (dim & 7));
  int64_t i = lo, j = hi;
  while (i < j) {
    if (rows.row(i)[byte] & mask) {
      ++i;
    } else {
      --j;
      rows.swap(i, j);
    }
  }
  return i;
}

constexpr int64_t kBigNode = 1 << 16;

// Algorithm 1 over any row store; choose(counts, m, node) picks the split bit (-1: leaf).
template <class Rows, class Choose>
std::vector<int64_t> build_generic(const Rows& rows, int64_t n, int64_t nbytes, int64_t leaf_size, const Choose& choose,
                                   const Progress& progress) {
  const int64_t nbits = nbytes * 8;
  std::vector<int64_t> nodes = {-1, -1, -1, 0, n};
  std::vector<int64_t> level = {0};
  int64_t placed = 0;
  if (progress) progress(0, n);
  while (!level.empty()) {
    const int64_t L = static_cast<int64_t>(level.size());
    std::vector<int64_t> dim(L, -1), mid(L, 0), small;
    for (int64_t t = 0; t < L; ++t) {
      const int64_t* nd = &nodes[level[t] * kNodeFields];
      const int64_t lo = nd[kBegin], hi = nd[kEnd], m = hi - lo;
      if (m < leaf_size) continue;  // line 3: leaf
      if (m < kBigNode) {
        small.push_back(t);
        continue;
      }
      const int64_t chunks = std::min<int64_t>(4 * get_num_threads(), (m + 4095) / 4096);
      std::vector<std::vector<int64_t>> partial(chunks, std::vector<int64_t>(nbits, 0));
      const int64_t step = (m + chunks - 1) / chunks;
      parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c)
          count_bits(rows, lo + c * step, std::min(hi, lo + (c + 1) * step), nbytes, partial[c].data());
      });
      std::vector<int64_t> counts(nbits, 0);
      for (const auto& p : partial)
        for (int64_t x = 0; x < nbits; ++x) counts[x] += p[x];
      dim[t] = choose(counts.data(), m, level[t]);
      if (dim[t] >= 0) mid[t] = partition(rows, lo, hi, dim[t]);
    }
    parallel_for(0, static_cast<int64_t>(small.size()), 1, [&](int64_t s0, int64_t s1) {
      std::vector<int64_t> counts(nbits);
      for (int64_t s = s0; s < s1; ++s) {
        const int64_t t = small[s];
        const int64_t* nd = &nodes[level[t] * kNodeFields];
        const int64_t lo = nd[kBegin], hi = nd[kEnd];
        std::fill(counts.begin(), counts.end(), 0);
        count_bits(rows, lo, hi, nbytes, counts.data());
        dim[t] = choose(counts.data(), hi - lo, level[t]);
        if (dim[t] >= 0) mid[t] = partition(rows, lo, hi, dim[t]);
      }
    });
    std::vector<int64_t> next;
    for (int64_t t = 0; t < L; ++t) {
      const int64_t id = level[t];
      const int64_t lo = nodes[id * kNodeFields + kBegin], hi = nodes[id * kNodeFields + kEnd];
      if (dim[t] < 0) {
        placed += hi - lo;
        continue;
      }
      const int64_t left = static_cast<int64_t>(nodes.size()) / kNodeFields;
      nodes.insert(nodes.end(), {-1, -1, -1, lo, mid[t]});
      nodes.insert(nodes.end(), {-1, -1, -1, mid[t], hi});
      nodes[id * kNodeFields + kDim] = dim[t];
      nodes[id * kNodeFields + kLeft] = left;
      nodes[id * kNodeFields + kRight] = left + 1;
      next.push_back(left);
      next.push_back(left + 1);
    }
    level.swap(next);
    if (progress) progress(placed, n);
  }
  return nodes;
}

}  // namespace

std::vector<int64_t> build_cpu(uint8_t* codes, int64_t* ids, int64_t n, int64_t nbytes, int64_t leaf_size,
                               const Progress& progress) {
  const int64_t nbits = nbytes * 8;
  auto choose = [nbits](const int64_t* counts, int64_t m, int64_t) { return choose_dim(counts, nbits, m); };
  return build_generic(OwnRows{codes, ids, nbytes}, n, nbytes, leaf_size, choose, progress);
}

std::vector<int64_t> build_random_cpu(const uint8_t* codes, int32_t* perm, int64_t n, int64_t nbytes,
                                      int64_t leaf_size, int64_t choices, uint64_t seed, int64_t tree) {
  const int64_t nbits = nbytes * 8;
  auto choose = [=](const int64_t* counts, int64_t m, int64_t node) {
    return choose_random_dim(counts, nbits, m, choices, seed, tree, node);
  };
  return build_generic(PermRows{codes, perm, nbytes}, n, nbytes, leaf_size, choose, Progress());
}

}  // namespace kdtree
}  // namespace semvis
