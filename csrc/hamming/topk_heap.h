// A bounded max-heap keeping the k smallest (distance, id) pairs, compared lexicographically,
// so that ties go to the lowest id. Shared by the brute-force top-k and the kd-tree search.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

namespace semvis {
namespace hamming {

class TopK {
 public:
  void reset(int64_t k) {
    k_ = k;
    d_.clear();
    id_.clear();
    d_.reserve(k);
    id_.reserve(k);
  }
  // Distance a candidate must beat (ties are then settled by id); INT32_MAX while not full.
  int32_t threshold() const { return full() ? d_[0] : std::numeric_limits<int32_t>::max(); }
  bool full() const { return static_cast<int64_t>(d_.size()) == k_; }
  int64_t size() const { return static_cast<int64_t>(d_.size()); }

  void push(int32_t d, int64_t id) {
    if (!full()) {
      d_.push_back(d);
      id_.push_back(id);
      sift_up(d_.size() - 1);
      return;
    }
    if (!less(d, id, d_[0], id_[0])) return;
    d_[0] = d;
    id_[0] = id;
    sift_down(0, d_.size());
  }

  // Writes the pairs nearest first, padding with (-1, -1) up to k slots.
  void write_sorted(int32_t* dist, int64_t* ids) {
    size_t n = d_.size();
    while (n > 1) {  // heap sort in place: the largest goes to the end
      --n;
      swap_at(0, n);
      sift_down(0, n);
    }
    for (size_t i = 0; i < d_.size(); ++i) {
      dist[i] = d_[i];
      ids[i] = id_[i];
    }
    for (int64_t i = static_cast<int64_t>(d_.size()); i < k_; ++i) {
      dist[i] = -1;
      ids[i] = -1;
    }
  }

 private:
  static bool less(int32_t da, int64_t ia, int32_t db, int64_t ib) { return da != db ? da < db : ia < ib; }
  void swap_at(size_t a, size_t b) {
    std::swap(d_[a], d_[b]);
    std::swap(id_[a], id_[b]);
  }
  void sift_up(size_t i) {
    while (i > 0) {
      size_t p = (i - 1) / 2;
      if (!less(d_[p], id_[p], d_[i], id_[i])) return;
      swap_at(p, i);
      i = p;
    }
  }
  void sift_down(size_t i, size_t n) {
    for (;;) {
      size_t l = 2 * i + 1, r = l + 1, m = i;
      if (l < n && less(d_[m], id_[m], d_[l], id_[l])) m = l;
      if (r < n && less(d_[m], id_[m], d_[r], id_[r])) m = r;
      if (m == i) return;
      swap_at(i, m);
      i = m;
    }
  }

  int64_t k_ = 0;
  std::vector<int32_t> d_;
  std::vector<int64_t> id_;
};

}  // namespace hamming
}  // namespace semvis
