// The k smallest (distance, id) pairs, compared lexicographically so that ties go to the lowest
// id: the Hamming instance of the shared CPU selection template (common/select_cpu.h), used by
// the brute-force top-k and the kd-tree search.
#pragma once

#include <cstdint>
#include <limits>

#include "common/select_cpu.h"

namespace semvis {
namespace hamming {

struct DistId {
  int32_t d;
  int64_t id;
};
struct Closer {
  bool operator()(const DistId& a, const DistId& b) const { return a.d != b.d ? a.d < b.d : a.id < b.id; }
};

class TopK {
 public:
  void reset(int64_t k) { h_.reset(k); }
  // Distance a candidate must beat (ties are then settled by id); INT32_MAX while not full.
  int32_t threshold() const {
    return full() && h_.capacity() > 0 ? h_.worst().d : std::numeric_limits<int32_t>::max();
  }
  bool full() const { return h_.full(); }
  int64_t size() const { return h_.size(); }
  void push(int32_t d, int64_t id) { h_.push(DistId{d, id}); }
  // Writes the pairs nearest first, padding with (-1, -1) up to k slots.
  void write_sorted(int32_t* dist, int64_t* ids) {
    const int64_t n = h_.size();
    h_.write_sorted([&](size_t i, const DistId& e) {
      dist[i] = e.d;
      ids[i] = e.id;
    });
    for (int64_t i = n; i < h_.capacity(); ++i) {
      dist[i] = -1;
      ids[i] = -1;
    }
  }

 private:
  select::BoundedTopK<DistId, Closer> h_;
};

}  // namespace hamming
}  // namespace semvis
