// CPU kernels of the landmarks evaluation (raw pointers; the host entries in landmarks.cpp
// validate their arguments first).
#pragma once

#include <cstdint>

namespace semvis {
namespace landmarks {

// scores[n * sn + q * sq], n < N, q < Q; see positions_from_scores in landmarks.h.
template <typename T>
void positions_from_scores_cpu(const T* scores, int64_t N, int64_t Q, int64_t sn, int64_t sq,
                               const int64_t* indptr, const int64_t* ids, int64_t* out);

void positions_from_ranks_cpu(const int64_t* ranks, int64_t K, int64_t Q, int64_t sk, int64_t sq, int64_t db_size,
                              const int64_t* indptr, const int64_t* ids, int64_t* out);

void average_precision_cpu(int64_t Q, const int64_t* pos_indptr, const int64_t* pos, const int64_t* nres,
                           const int64_t* junk_indptr, const int64_t* junk, int64_t K, const int64_t* kappas,
                           double* aps, double* prs);

}  // namespace landmarks
}  // namespace semvis
