// Algorithm 2 (SEARCH-TREE) with FIFO backtracking, and its best-bin-first variant; batch of
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
  std::vector<int64_t> fifo;
  // (bits where the path left the query, -depth, insertion number, node): a min-heap
  using Entry = std::tuple<int64_t, int64_t, int64_t, int64_t>;
  std::vector<Entry> pq;
  std::vector<int32_t> buf = std::vector<int32_t>(kScoreChunk);
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

inline bool query_bit(const uint8_t* q, int64_t dim) { return (q[dim >> 3] >> (7 - (dim & 7))) & 1; }

int64_t search_one(const TreeRef& t, const uint8_t* q, const SearchParams& p, hamming::RangeFn range, Scratch& s) {
  const int64_t* N = t.nodes;
  int64_t scored = 0;
  int64_t budget = p.backtracks < 0 ? std::numeric_limits<int64_t>::max() : p.backtracks;
  s.top.reset(p.k);
  if (p.order == Order::kFifo) {
    s.fifo.clear();
    s.fifo.push_back(0);
    size_t head = 0;
    while (budget > 0 && head < s.fifo.size()) {
      int64_t node = s.fifo[head++];
      while (N[node * kNodeFields + kDim] >= 0) {
        const int64_t* nd = N + node * kNodeFields;
        if (query_bit(q, nd[kDim])) {
          s.fifo.push_back(nd[kRight]);
          node = nd[kLeft];
        } else {
          s.fifo.push_back(nd[kLeft]);
          node = nd[kRight];
        }
      }
      scored += score(q, t.codes, t.ids, N[node * kNodeFields + kBegin], N[node * kNodeFields + kEnd], t.nbytes,
                      range, s);
      --budget;
    }
  } else {
    using Entry = Scratch::Entry;
    auto cmp = std::greater<Entry>();
    int64_t seq = 0;
    s.pq.clear();
    s.pq.emplace_back(0, 0, seq++, 0);
    while (budget > 0 && !s.pq.empty()) {
      std::pop_heap(s.pq.begin(), s.pq.end(), cmp);
      auto [miss, neg_depth, order, node] = s.pq.back();
      (void)order;
      s.pq.pop_back();
      int64_t depth = -neg_depth;
      while (N[node * kNodeFields + kDim] >= 0) {
        const int64_t* nd = N + node * kNodeFields;
        const bool one = query_bit(q, nd[kDim]);
        ++depth;
        s.pq.emplace_back(miss + 1, -depth, seq++, one ? nd[kRight] : nd[kLeft]);
        std::push_heap(s.pq.begin(), s.pq.end(), cmp);
        node = one ? nd[kLeft] : nd[kRight];
      }
      scored += score(q, t.codes, t.ids, N[node * kNodeFields + kBegin], N[node * kNodeFields + kEnd], t.nbytes,
                      range, s);
      --budget;
    }
  }
  if (t.n_buf > 0) scored += score(q, t.buf_codes, t.buf_ids, 0, t.n_buf, t.nbytes, range, s);
  return scored;
}

}  // namespace

void search_cpu(const TreeRef& t, const uint8_t* queries, int64_t nq, const SearchParams& p, int32_t* dist,
                int64_t* out_ids, int64_t* counts) {
  const hamming::RangeFn range = hamming::kernels().range;
  const int64_t grain = std::max<int64_t>(1, std::min<int64_t>(64, nq / (8 * get_num_threads())));
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
