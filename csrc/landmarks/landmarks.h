// The revisited Oxford/Paris evaluation (Radenović et al., CVPR 2018; spec 001.6, G18 of
// spec/seeds-000-002.md): where the positives and junk images of each query fall in its ranking,
// and the average precision / precision@k of revisitop's python/evaluate.py from those positions.
//
// The positions come either from an explicit ranking (ranks[K, Q], 0-based database ids) or
// straight from a score matrix (scores[N, Q]) without sorting it: the position of item i in
// query q's ranking is #{j : s_j > s_i} + #{j < i : s_j == s_i} (a stable descending sort, i.e.
// np.argsort(-s, kind="stable")), so one pass over the scores with a binary search per score
// among the query's few sorted items gives every position. CPU only (see semvis_ext/ops/landmarks.py).
#pragma once

#include <cstdint>

#include "common/tensor.h"

namespace semvis {
namespace landmarks {

// Host entry points: validate, then run.
//   scores [N, Q] float32 or float64 (any strides, e.g. a transposed [Q, N] buffer), finite or
//     +-inf (NaN is refused);
//   indptr [Q + 1] int64 (indptr[0] = 0, non-decreasing, indptr[Q] = T), ids [T] int64: the items
//     of query q are ids[indptr[q]:indptr[q + 1]], distinct, in [0, N);
//   out [T] int64 (written): the 0-based position of each item in its query's ranking.
void positions_from_scores(const TensorView& scores, const TensorView& indptr, const TensorView& ids,
                           const TensorView& out);

//   ranks [K, Q] int64 (any strides): column q is query q's ranking, distinct ids in [0, db_size)
//     (K <= db_size: a truncated ranking is allowed);
//   indptr, ids as above (ids in [0, db_size));
//   out [T] int64 (written): the position of each item in column q, -1 when it is not ranked.
void positions_from_ranks(const TensorView& ranks, int64_t db_size, const TensorView& indptr, const TensorView& ids,
                          const TensorView& out);

// revisitop's compute_ap + the per-query part of compute_map, for all queries at once.
//   pos_indptr [Q + 1], pos [P] int64: positions of the ranked positives of query q (any order;
//     -1 entries are ignored: positives that the ranking does not hold);
//   nres [Q] int64: number of positives of query q (len(gnd[q]["ok"])); 0 gives NaN;
//   junk_indptr [Q + 1], junk [J] int64: positions of the junk images (-1 ignored);
//   kappas [K] int64, each >= 1;
//   aps [Q] float64, prs [Q, K] float64 (written).
// Sums run in the reference's order, so the results are the reference's to the last bit.
void average_precision(const TensorView& pos_indptr, const TensorView& pos, const TensorView& nres,
                       const TensorView& junk_indptr, const TensorView& junk, const TensorView& kappas,
                       const TensorView& aps, const TensorView& prs);

}  // namespace landmarks
}  // namespace semvis
