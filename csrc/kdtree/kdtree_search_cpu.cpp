// Algorithm 2 (SEARCH-TREE) with FIFO backtracking, and its best-bin-first variant, over one tree
// or a forest of randomized trees sharing one queue, one leaf budget and one visited set; batch of
// queries in parallel, one query per task step, scratch reused within a task.
#include <algorithm>
#include <functional>
#include <limits>
#include <queue>
#include <tuple>
#include <vector>

#include "common/parallel.h"
#include "hamming/hamming_simd.h"
#include "hamming/topk_heap.h"
#include "kdtree.h"

namespace semvis {
namespace kdtree {
namespace {

constexpr int64_t kScoreChunk = 1024;

struct Scratch {
  std::vector<std::pair<int64_t, int64_t>> fifo;  // (tree, node)
  // (bits where the path left the query, -depth, insertion number, tree, node): a min-heap
  using Entry = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>;
  std::vector<Entry> pq;
  std::vector<int32_t> buf = std::vector<int32_t>(kScoreChunk);
  // forests only: visited positions (a bitset cleared through `touched`), gathered codes
  std::vector<uint64_t> visited;
  std::vector<int64_t> touched;
  std::vector<uint8_t> gather;
  std::vector<int64_t> gather_pos;
  hamming::TopK top;
};

// Scores keys [lo, hi) of (codes, ids) against q into the heap; returns hi - lo.
int64_t score(const uint8_t* q, const uint8_t* codes, const int64_t* ids, int64_t lo, int64_t hi, int64_t nbytes,
              hamming::RangeFn range, Scratch& s) {
  for (int64_t c0 = lo; c0 < hi; c0 += kScoreChunk) {
    const int64_t m = std::min(kScoreChunk, hi - c0);
    range(q, codes + c0 * nbytes, m, nbytes, s.buf.data());
    int32_t th = s.top.threshold();
    for (int64_t i = 0; i < m; ++i) {
      if (s.buf[i] <= th) {  // equal distances may still win on a lower id
        s.top.push(s.buf[i], ids[c0 + i]);
        th = s.top.threshold();
      }
    }
  }
  return hi - lo;
}

inline bool test_and_set(std::vector<uint64_t>& bits, int64_t pos) {
  uint64_t& w = bits[pos >> 6];
  const uint64_t b = uint64_t{1} << (pos & 63);
  const bool was = w & b;
  w |= b;
  return was;
}

// Forest, tree 0: positions [lo, hi) are contiguous codes; skip the visited ones.
int64_t score_visited(const uint8_t* q, const TreeRef& t, int64_t lo, int64_t hi, hamming::RangeFn range,
                      Scratch& s) {
  int64_t scored = 0;
  for (int64_t c0 = lo; c0 < hi; c0 += kScoreChunk) {
    const int64_t m = std::min(kScoreChunk, hi - c0);
    range(q, t.codes + c0 * t.nbytes, m, t.nbytes, s.buf.data());
    int32_t th = s.top.threshold();
    for (int64_t i = 0; i < m; ++i) {
      const int64_t pos = c0 + i;
      if (test_and_set(s.visited, pos)) continue;
      s.touched.push_back(pos);
      ++scored;
      if (s.buf[i] <= th) {
        s.top.push(s.buf[i], t.ids[pos]);
        th = s.top.threshold();
      }
    }
  }
  return scored;
}

// Forest, tree >= 1: positions perm[lo, hi) of the shared codes, gathered (unvisited ones only)
// into a contiguous block for the popcount kernel.
int64_t score_perm(const uint8_t* q, const TreeRef& t, const int32_t* perm, int64_t lo, int64_t hi,
                   hamming::RangeFn range, Scratch& s) {
  const int64_t nb = t.nbytes;
  if (static_cast<int64_t>(s.gather.size()) < kScoreChunk * nb) s.gather.resize(kScoreChunk * nb);
  s.gather_pos.resize(kScoreChunk);
  // the keys of a leaf are scattered over the store: ask for all their cache lines first
  for (int64_t j = lo; j < hi; ++j) __builtin_prefetch(t.codes + static_cast<int64_t>(perm[j]) * nb);
  int64_t scored = 0, i = lo;
  while (i < hi) {
    int64_t m = 0;
    for (; i < hi && m < kScoreChunk; ++i) {
      const int64_t pos = perm[i];
      if (test_and_set(s.visited, pos)) continue;
      s.touched.push_back(pos);
      std::copy(t.codes + pos * nb, t.codes + (pos + 1) * nb, s.gather.data() + m * nb);
      s.gather_pos[m++] = pos;
    }
    if (m == 0) break;
    range(q, s.gather.data(), m, nb, s.buf.data());
    int32_t th = s.top.threshold();
    for (int64_t j = 0; j < m; ++j) {
      if (s.buf[j] <= th) {
        s.top.push(s.buf[j], t.ids[s.gather_pos[j]]);
        th = s.top.threshold();
      }
    }
    scored += m;
  }
  return scored;
}

inline bool query_bit(const uint8_t* q, int64_t dim) { return (q[dim >> 3] >> (7 - (dim & 7))) & 1; }

int64_t search_one(const TreeRef& t, const uint8_t* q, const SearchParams& p, hamming::RangeFn range, Scratch& s) {
  // exact search needs one tree only (every leaf of tree 0 covers every key once)
  const int64_t T = p.backtracks < 0 ? 1 : 1 + static_cast<int64_t>(t.forest_nodes.size());
  const bool forest = T > 1;
  auto nodes_of = [&](int64_t tree) { return tree == 0 ? t.nodes : t.forest_nodes[tree - 1]; };
  auto score_leaf = [&](int64_t tree, const int64_t* nd) -> int64_t {
    const int64_t lo = nd[kBegin], hi = nd[kEnd];
    if (!forest) return score(q, t.codes, t.ids, lo, hi, t.nbytes, range, s);
    if (tree == 0) return score_visited(q, t, lo, hi, range, s);
    return score_perm(q, t, t.forest_perms[tree - 1], lo, hi, range, s);
  };
  int64_t scored = 0;
  int64_t budget = p.backtracks < 0 ? std::numeric_limits<int64_t>::max() : p.backtracks;
  s.top.reset(p.k);
  if (forest && static_cast<int64_t>(s.visited.size()) < (t.n + 63) / 64) s.visited.assign((t.n + 63) / 64, 0);
  if (p.order == Order::kFifo) {
    s.fifo.clear();
    for (int64_t tree = 0; tree < T; ++tree) s.fifo.emplace_back(tree, 0);
    size_t head = 0;
    while (budget > 0 && head < s.fifo.size()) {
      auto [tree, node] = s.fifo[head++];
      const int64_t* N = nodes_of(tree);
      while (N[node * kNodeFields + kDim] >= 0) {
        const int64_t* nd = N + node * kNodeFields;
        if (query_bit(q, nd[kDim])) {
          s.fifo.emplace_back(tree, nd[kRight]);
          node = nd[kLeft];
        } else {
          s.fifo.emplace_back(tree, nd[kLeft]);
          node = nd[kRight];
        }
      }
      scored += score_leaf(tree, N + node * kNodeFields);
      --budget;
    }
  } else {
    using Entry = Scratch::Entry;
    auto cmp = std::greater<Entry>();
    int64_t seq = 0;
    s.pq.clear();
    for (int64_t tree = 0; tree < T; ++tree) {
      s.pq.emplace_back(0, 0, seq++, tree, 0);
      std::push_heap(s.pq.begin(), s.pq.end(), cmp);
    }
    while (budget > 0 && !s.pq.empty()) {
      std::pop_heap(s.pq.begin(), s.pq.end(), cmp);
      auto [miss, neg_depth, order, tree, node] = s.pq.back();
      (void)order;
      s.pq.pop_back();
      const int64_t* N = nodes_of(tree);
      int64_t depth = -neg_depth;
      while (N[node * kNodeFields + kDim] >= 0) {
        const int64_t* nd = N + node * kNodeFields;
        const bool one = query_bit(q, nd[kDim]);
        ++depth;
        s.pq.emplace_back(miss + 1, -depth, seq++, tree, one ? nd[kRight] : nd[kLeft]);
        std::push_heap(s.pq.begin(), s.pq.end(), cmp);
        node = one ? nd[kLeft] : nd[kRight];
      }
      scored += score_leaf(tree, N + node * kNodeFields);
      --budget;
    }
  }
  if (forest) {
    for (int64_t pos : s.touched) s.visited[pos >> 6] = 0;  // clears whole words: they hold only touched bits
    s.touched.clear();
  }
  if (t.n_buf > 0) scored += score(q, t.buf_codes, t.buf_ids, 0, t.n_buf, t.nbytes, range, s);
  return scored;
}

// One tree (or exact search): kInFlight queries of a task advance in turn, one node (or one leaf) per
// step, each step prefetching what the next step of that query reads (the next node, or the codes of
// the leaf reached), so that the cache misses of different queries overlap. At tens of millions of
// keys the search is bound by those misses (the descent is a chain of dependent node loads, one miss
// per level below the cached top of the tree). Every query visits exactly the nodes and leaves of
// search_one, in the same order, so the results are the same.
constexpr int kInFlight = 8;

void search_interleaved(const TreeRef& t, const uint8_t* queries, int64_t lo, int64_t hi, const SearchParams& p,
                        hamming::RangeFn range, int32_t* dist, int64_t* out_ids, int64_t* counts) {
  struct Flight {
    int64_t qi = -1;  // query, -1: slot idle
    int64_t node = 0, budget = 0, scored = 0;
    int64_t miss = 0, depth = 0, seq = 0;  // best-bin: priority of the branch being descended
    size_t head = 0;                        // FIFO: next queued branch
    bool leaf = false;                      // at a leaf whose codes were prefetched: score it next
  };
  const int64_t* N = t.nodes;
  const bool fifo = p.order == Order::kFifo;
  const int64_t nb = t.nbytes;
  std::vector<Scratch> sc(kInFlight);
  std::vector<Flight> fl(kInFlight);
  auto cmp = std::greater<Scratch::Entry>();
  int64_t next = lo;
  auto start = [&](Flight& f, Scratch& s) {
    f = Flight();
    if (next >= hi) return;
    f.qi = next++;
    f.budget = p.backtracks < 0 ? std::numeric_limits<int64_t>::max() : p.backtracks;
    f.seq = 1;  // the root took sequence number 0
    s.top.reset(p.k);
    s.fifo.clear();
    s.pq.clear();
  };
  // the next queued branch into f.node; false when the query is done
  auto pop = [&](Flight& f, Scratch& s) -> bool {
    if (f.budget <= 0) return false;
    if (fifo) {
      if (f.head >= s.fifo.size()) return false;
      f.node = s.fifo[f.head++].second;
    } else {
      if (s.pq.empty()) return false;
      std::pop_heap(s.pq.begin(), s.pq.end(), cmp);
      f.miss = std::get<0>(s.pq.back());
      f.depth = -std::get<1>(s.pq.back());
      f.node = std::get<4>(s.pq.back());
      s.pq.pop_back();
    }
    __builtin_prefetch(N + f.node * kNodeFields);
    return true;
  };
  for (int g = 0; g < kInFlight; ++g) start(fl[g], sc[g]);
  for (bool any = true; any;) {
    any = false;
    for (int g = 0; g < kInFlight; ++g) {
      Flight& f = fl[g];
      if (f.qi < 0) continue;
      any = true;
      Scratch& s = sc[g];
      const uint8_t* q = queries + f.qi * nb;
      const int64_t* nd = N + f.node * kNodeFields;
      if (f.leaf) {
        f.leaf = false;
        f.scored += score(q, t.codes, t.ids, nd[kBegin], nd[kEnd], nb, range, s);
        --f.budget;
        if (!pop(f, s)) {
          if (t.n_buf > 0) f.scored += score(q, t.buf_codes, t.buf_ids, 0, t.n_buf, nb, range, s);
          s.top.write_sorted(dist + f.qi * p.k, out_ids + f.qi * p.k);
          if (counts) counts[f.qi] = f.scored;
          start(f, s);
        }
      } else if (nd[kDim] >= 0) {
        const bool one = query_bit(q, nd[kDim]);
        const int64_t take = one ? nd[kLeft] : nd[kRight], other = one ? nd[kRight] : nd[kLeft];
        if (fifo) {
          s.fifo.emplace_back(0, other);
        } else {
          ++f.depth;
          s.pq.emplace_back(f.miss + 1, -f.depth, f.seq++, 0, other);
          std::push_heap(s.pq.begin(), s.pq.end(), cmp);
        }
        f.node = take;
        __builtin_prefetch(N + take * kNodeFields);
      } else {
        const uint8_t* c0 = t.codes + nd[kBegin] * nb;
        const uint8_t* c1 = t.codes + nd[kEnd] * nb;
        for (const uint8_t* c = c0; c < c1; c += 64) __builtin_prefetch(c);
        f.leaf = true;
      }
    }
  }
}

}  // namespace

void search_cpu(const TreeRef& t, const uint8_t* queries, int64_t nq, const SearchParams& p, int32_t* dist,
                int64_t* out_ids, int64_t* counts) {
  const hamming::RangeFn range = hamming::kernels().range;
  const int64_t grain = std::max<int64_t>(1, std::min<int64_t>(64, nq / (8 * get_num_threads())));
  if (p.backtracks < 0 || t.forest_nodes.empty()) {  // one tree (exact search uses tree 0 only)
    parallel_for(0, nq, grain, [&](int64_t lo, int64_t hi) {
      search_interleaved(t, queries, lo, hi, p, range, dist, out_ids, counts);
    });
    return;
  }
  parallel_for(0, nq, grain, [&](int64_t lo, int64_t hi) {
    Scratch s;
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t scored = search_one(t, queries + i * t.nbytes, p, range, s);
      s.top.write_sorted(dist + i * p.k, out_ids + i * p.k);
      if (counts) counts[i] = scored;
    }
  });
}

}  // namespace kdtree
}  // namespace semvis
