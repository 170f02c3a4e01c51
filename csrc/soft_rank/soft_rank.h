// SoDeep's handcrafted differentiable sorter (Engilberge thesis, Eqs. 5.2-5.3):
//
//   rank[b, i] = sum_{j != i} sigmoid(lam * (s[b, j] - s[b, i]))          (0-based descending rank)
//
// and, when normalised as the official SoDeep code does, (1 + rank) / n in (0, 1] (the highest
// score gets about 1/n). Forward and backward in O(B n) memory: the n^2 pairwise terms are
// recomputed, never stored. Backward:
//   grad_s[k] = c * lam * sum_{i != k} (g[i] - g[k]) * p_ik (1 - p_ik),   p_ik = sigmoid(lam (s_i - s_k))
// with c = 1/n when normalised, else 1.
#pragma once

#include <cstdint>

#include "common/numeric.h"
#include "common/tensor.h"

namespace semvis {
namespace soft_rank {

struct Params {
  double lam = 10.0;
  bool normalize = true;
};

// Host entry points: validate (finite scores on the CPU; the caller checks on CUDA), then run.
//   s [B, n] float32/float16/bfloat16/float64, contiguous, n >= 1
//   rank [B, n] dtype of s (written)
void forward(const TensorView& s, const Params& p, const TensorView& rank, std::uintptr_t stream);
//   g [B, n] (grad of rank), s from forward, gs [B, n] (written)
void backward(const TensorView& g, const TensorView& s, const Params& p, const TensorView& gs, std::uintptr_t stream);

void forward_cpu(const TensorView& s, const Params& p, const TensorView& rank);
void backward_cpu(const TensorView& g, const TensorView& s, const Params& p, const TensorView& gs);
#ifdef SEMVIS_WITH_CUDA
void forward_cuda(const TensorView& s, const Params& p, const TensorView& rank, std::uintptr_t stream);
void backward_cuda(const TensorView& g, const TensorView& s, const Params& p, const TensorView& gs,
                   std::uintptr_t stream);
#endif

}  // namespace soft_rank
}  // namespace semvis
