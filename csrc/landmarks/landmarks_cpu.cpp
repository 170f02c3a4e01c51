// CPU kernels of the landmarks evaluation: positions without a sort, and revisitop's AP.
#include "landmarks_cpu.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "common/parallel.h"
#include "common/tensor.h"

namespace semvis {
namespace landmarks {

template <typename T>
void positions_from_scores_cpu(const T* s, int64_t N, int64_t Q, int64_t sn, int64_t sq, const int64_t* indptr,
                               const int64_t* ids, int64_t* out) {
  constexpr const char* op = "landmarks_positions";
  const int64_t total = indptr[Q];
  // Per query, its items as keys sorted in ranking order: score descending, then id ascending.
  std::vector<T> key_s(total);
  std::vector<int64_t> key_id(total), key_slot(total);
  parallel_for(0, Q, 1, [&](int64_t q0, int64_t q1) {
    std::vector<int64_t> order;
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t a = indptr[q], b = indptr[q + 1];
      order.resize(b - a);
      std::iota(order.begin(), order.end(), a);
      for (int64_t t = a; t < b; ++t) {
        const T v = s[ids[t] * sn + q * sq];
        if (v != v) failf(op, ": scores must not contain NaN (query ", q, ", database item ", ids[t], ")");
      }
      std::sort(order.begin(), order.end(), [&](int64_t x, int64_t y) {
        const T vx = s[ids[x] * sn + q * sq], vy = s[ids[y] * sn + q * sq];
        return vx > vy || (vx == vy && ids[x] < ids[y]);
      });
      for (int64_t t = a; t < b; ++t) {
        const int64_t o = order[t - a];
        key_s[t] = s[ids[o] * sn + q * sq];
        key_id[t] = ids[o];
        key_slot[t] = o;
        if (t > a && key_id[t] == key_id[t - 1])
          failf(op, ": the ids of query ", q, " must be distinct, got ", key_id[t], " twice");
      }
    }
  });

  // Per query, a bucket table over [lowest key, highest key] (8 buckets per key): the bucket of a
  // score bounds where it falls among the keys, so most scores need one multiply, one lookup and
  // a compare instead of a binary search. The bounds are exact whatever the rounding, because the
  // same monotone function buckets the keys and the scores. Keys are laid out with one sentinel
  // (-inf, id max) after each query's, and each query's histogram has a dummy slot for scores
  // ranked after all its items, so the hot loop has no branch on the score's range.
  std::vector<T> hi_s(Q), scale(Q), nbm1(Q);
  std::vector<int64_t> koff(Q + 1), toff(Q + 1), nb(Q);
  for (int64_t q = 0; q < Q; ++q) {
    const int64_t a = indptr[q], len = indptr[q + 1] - a;
    koff[q + 1] = koff[q] + len + 1;
    nb[q] = len == 0 ? 1 : 8 * len;
    if (len > 0) {
      hi_s[q] = key_s[a];
      const T range = key_s[a] - key_s[a + len - 1];
      // an infinite or zero range: one bucket (the in-bucket search covers every key)
      scale[q] = (range > T(0) && range <= std::numeric_limits<T>::max()) ? T(nb[q]) / range : T(0);
    }
    if (scale[q] == T(0)) {
      nb[q] = 1;
      hi_s[q] = T(0);
    }
    nbm1[q] = T(nb[q] - 1);
    toff[q + 1] = toff[q] + nb[q] + 1;
  }
  std::vector<T> ks_all(koff[Q]);
  std::vector<int64_t> kid_all(koff[Q]);
  for (int64_t q = 0; q < Q; ++q) {
    const int64_t a = indptr[q], len = indptr[q + 1] - a;
    std::copy(key_s.begin() + a, key_s.begin() + a + len, ks_all.begin() + koff[q]);
    std::copy(key_id.begin() + a, key_id.begin() + a + len, kid_all.begin() + koff[q]);
    ks_all[koff[q] + len] = -std::numeric_limits<T>::infinity();
    kid_all[koff[q] + len] = std::numeric_limits<int64_t>::max();
  }
  // written so that NaN (rejected afterwards) and +-inf scores give a valid bucket
  auto bucket = [&](int64_t q, T v) -> int64_t {
    if (scale[q] == T(0)) return 0;
    T u = (hi_s[q] - v) * scale[q];
    u = u >= T(0) ? u : T(0);
    u = u < nbm1[q] ? u : nbm1[q];
    return static_cast<int64_t>(u);
  };
  std::vector<int32_t> table(static_cast<size_t>(toff[Q]));
  for (int64_t q = 0; q < Q; ++q) {
    const int64_t len = indptr[q + 1] - indptr[q];
    int32_t* tb = table.data() + toff[q];  // tb[b] = number of keys whose bucket is < b
    int64_t i = 0;
    for (int64_t b = 0; b <= nb[q]; ++b) {
      while (i < len && bucket(q, ks_all[koff[q] + i]) < b) ++i;
      tb[b] = static_cast<int32_t>(i);
    }
    tb[nb[q]] = static_cast<int32_t>(len);
  }

  // hist[c][koff[q] + t]: how many scores of chunk c rank before key t of query q but not before
  // key t - 1 (t = len: after every item, ignored). One pass over the scores in memory order.
  const int64_t nthreads = std::max(1, get_num_threads());
  const int64_t nchunks = std::max<int64_t>(1, std::min<int64_t>(N, 4 * nthreads));
  const int64_t hsize = koff[Q];
  std::vector<int64_t> hist(static_cast<size_t>(nchunks * hsize), 0);
  std::atomic<bool> saw_nan{false};
  parallel_for(0, nchunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t n0 = N * c / nchunks, n1 = N * (c + 1) / nchunks;
      int64_t* __restrict h = hist.data() + c * hsize;
      const T* __restrict ksa = ks_all.data();
      const int64_t* __restrict kida = kid_all.data();
      const int32_t* __restrict tba = table.data();
      bool nan = false;
      // one query over `count` contiguous scores of rows n0.. (its table and keys stay in L1)
      auto run = [&](int64_t q, const T* __restrict vals, int64_t n0, int64_t count) {
        const T* ks = ksa + koff[q];
        const int32_t* tq = tba + toff[q];
        const int64_t* kid = kida + koff[q];
        int64_t* hq = h + koff[q];
        for (int64_t i = 0; i < count; ++i) {
          const T v = vals[i];
          nan |= (v != v);
          const int32_t* tb = tq + bucket(q, v);
          int64_t lo = tb[0], hi = tb[1];  // the first key with ks <= v lies in [lo, hi]
          if (hi - lo > 1) {  // rare with 8 buckets per key: only where keys crowd
            while (hi - lo > 8) {
              const int64_t mid = lo + (hi - lo) / 2;
              if (ks[mid] > v) lo = mid + 1; else hi = mid;
            }
            while (lo < hi && ks[lo] > v) ++lo;
          } else {
            lo += static_cast<int64_t>(lo < hi) & static_cast<int64_t>(ks[lo] > v);  // no branch
          }
          // ties: a stable sort puts row n0 + i after the tied items with a smaller (or equal) id
          if (ks[lo] == v) {
            while (ks[lo] == v && kid[lo] <= n0 + i) ++lo;
          }
          ++hq[lo];
        }
      };
      if (sn == 1) {
        for (int64_t q = 0; q < Q; ++q) run(q, s + q * sq + n0, n0, n1 - n0);
      } else {
        // transpose a block of rows so that each query's scores are contiguous
        constexpr int64_t B = 512;
        std::vector<T> buf(static_cast<size_t>(B * Q));
        for (int64_t b0 = n0; b0 < n1; b0 += B) {
          const int64_t cnt = std::min(B, n1 - b0);
          for (int64_t i = 0; i < cnt; ++i) {
            const T* row = s + (b0 + i) * sn;
            for (int64_t q = 0; q < Q; ++q) buf[q * B + i] = row[q * sq];
          }
          for (int64_t q = 0; q < Q; ++q) run(q, buf.data() + q * B, b0, cnt);
        }
      }
      if (nan) saw_nan = true;
    }
  });
  if (saw_nan) failf(op, ": scores must not contain NaN");
  parallel_for(0, Q, 1, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      int64_t run = 0;
      for (int64_t t = 0; t < indptr[q + 1] - indptr[q]; ++t) {
        for (int64_t c = 0; c < nchunks; ++c) run += hist[c * hsize + koff[q] + t];
        out[key_slot[indptr[q] + t]] = run;
      }
    }
  });
}

template void positions_from_scores_cpu<float>(const float*, int64_t, int64_t, int64_t, int64_t, const int64_t*,
                                               const int64_t*, int64_t*);
template void positions_from_scores_cpu<double>(const double*, int64_t, int64_t, int64_t, int64_t, const int64_t*,
                                                const int64_t*, int64_t*);

void positions_from_ranks_cpu(const int64_t* ranks, int64_t K, int64_t Q, int64_t sk, int64_t sq, int64_t db_size,
                              const int64_t* indptr, const int64_t* ids, int64_t* out) {
  constexpr const char* op = "landmarks_positions";
  parallel_for(0, Q, 1, [&](int64_t q0, int64_t q1) {
    // where[id] is valid when stamp[id] == q + 1: no O(db_size) reset per query
    std::vector<int64_t> where(db_size), stamp(db_size, 0);
    for (int64_t q = q0; q < q1; ++q) {
      for (int64_t r = 0; r < K; ++r) {
        const int64_t id = ranks[r * sk + q * sq];
        if (!(id >= 0 && id < db_size))
          failf(op, ": ranks must hold database ids in [0, ", db_size, "), got ", id, " in column ", q);
        if (stamp[id] == q + 1)
          failf(op, ": ranks column ", q, " holds id ", id, " twice (at positions ", where[id], " and ", r, ")");
        stamp[id] = q + 1;
        where[id] = r;
      }
      for (int64_t t = indptr[q]; t < indptr[q + 1]; ++t) out[t] = stamp[ids[t]] == q + 1 ? where[ids[t]] : -1;
    }
  });
}

void average_precision_cpu(int64_t Q, const int64_t* pos_indptr, const int64_t* pos_all, const int64_t* nres,
                           const int64_t* junk_indptr, const int64_t* junk_all, int64_t K, const int64_t* kappas,
                           double* aps, double* prs) {
  parallel_for(0, Q, 1, [&](int64_t q0, int64_t q1) {
    std::vector<int64_t> pos, junk;
    for (int64_t q = q0; q < q1; ++q) {
      if (nres[q] == 0) {
        aps[q] = std::numeric_limits<double>::quiet_NaN();
        for (int64_t j = 0; j < K; ++j) prs[q * K + j] = std::numeric_limits<double>::quiet_NaN();
        continue;
      }
      pos.clear();
      junk.clear();
      for (int64_t t = pos_indptr[q]; t < pos_indptr[q + 1]; ++t)
        if (pos_all[t] >= 0) pos.push_back(pos_all[t]);
      for (int64_t t = junk_indptr[q]; t < junk_indptr[q + 1]; ++t)
        if (junk_all[t] >= 0) junk.push_back(junk_all[t]);
      std::sort(pos.begin(), pos.end());
      std::sort(junk.begin(), junk.end());
      // revisitop compute_map: shift each positive down by the junk ranked before it. The
      // counters run across positives, and a position that is both positive and junk counts as
      // junk only for the later positives (the reference's strict '>').
      int64_t k = 0, ij = 0;
      for (size_t ip = 0; ip < pos.size(); ++ip) {
        while (ij < static_cast<int64_t>(junk.size()) && pos[ip] > junk[ij]) {
          ++k;
          ++ij;
        }
        pos[ip] -= k;
      }
      // compute_ap: trapezoids of the precision-recall curve, summed in the reference's order
      double ap = 0.;
      const double recall_step = 1. / static_cast<double>(nres[q]);
      for (size_t j = 0; j < pos.size(); ++j) {
        const double rank = static_cast<double>(pos[j]);
        const double precision_0 = pos[j] == 0 ? 1. : static_cast<double>(j) / rank;
        const double precision_1 = static_cast<double>(j + 1) / (rank + 1.);
        ap += (precision_0 + precision_1) * recall_step / 2.;
      }
      aps[q] = ap;
      // precision@k with the reference's cut at the last ranked positive (1-based)
      const int64_t last = pos.empty() ? 0 : pos.back() + 1;
      for (int64_t j = 0; j < K; ++j) {
        if (pos.empty()) {  // the reference raises here (max of an empty array); nothing was found
          prs[q * K + j] = 0.;
          continue;
        }
        const int64_t kq = std::min(last, kappas[j]);
        int64_t hits = 0;
        for (int64_t p : pos) hits += (p + 1 <= kq);
        prs[q * K + j] = static_cast<double>(hits) / static_cast<double>(kq);
      }
    }
  });
}

}  // namespace landmarks
}  // namespace semvis
