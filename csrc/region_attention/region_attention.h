// SMILE distributed region self-attention (Engilberge thesis, Eqs. 3.6-3.8):
//
//   x[b, k] = sum_{r < n_b} a[b, r, k] * G[b, r, k],   a[b, :, k] = softmax_r(L[b, :n_b, k])
//
// over the n_b valid regions of image b (the rest of the R slots are padding: exactly zero weight
// and zero gradient). The ablations of Tables 3.4/3.5 are modes:
//   kSoftmax   L [B, R, d] given (L = W G, the 1x1 conv done by the caller)
//   kOneAtt    L [B, R, 1]: one logit per region, the same weights for every channel ("1-Att")
//   kNoConv    L = G ("SMILE w/o Conv")
//   kNoSoftmax a = L, no normalisation ("SMILE w/o Softmax")
//   kMean      a = 1 / n_b ("Mean")
// No [B, R, d] attention tensor is kept: the forward writes per-(b, k) softmax statistics
// (max m and sum s of exp(L - m)) and the backward recomputes a = exp(L - m) / s.
#pragma once

#include <cstdint>

#include "common/numeric.h"
#include "common/tensor.h"

namespace semvis {
namespace region_attention {

enum Mode : int { kSoftmax = 0, kMean = 1, kOneAtt = 2, kNoConv = 3, kNoSoftmax = 4 };

inline bool has_logits(int mode) { return mode == kSoftmax || mode == kOneAtt || mode == kNoSoftmax; }
inline bool has_stats(int mode) { return mode == kSoftmax || mode == kOneAtt || mode == kNoConv; }

// Sizes resolved by the host entry.
struct Shape {
  int64_t B = 0, R = 0, d = 0;
  int64_t K = 0;  // logit channels: d (softmax, no-softmax, no-conv), 1 (1-att), 0 (mean)
};

// Host entry points: validate, then run on the device of G.
//   G        [B, R, d] float32/float16/bfloat16/float64, contiguous
//   L        [B, R, K] same dtype and device, contiguous (null for mean / no-conv)
//   len_host [B] int64 on the CPU (or null: every image has R regions); values in [1, R]
//   len_dev  the same values on G's device (or null)
//   x        [B, d] dtype of G                                         (written)
//   m, s     [B, K] float32 (float64 for float64 G); [B, 0] without stats (written)
void forward(const TensorView& G, const TensorView* L, const TensorView* len_host, const TensorView* len_dev, int mode,
             const TensorView& x, const TensorView& m, const TensorView& s, std::uintptr_t stream);

//   gx [B, d], m / s from forward, gG [B, R, d] and gL [B, R, K] (when L) fully written.
// The output x is recomputed in the accumulation type (not read back from a 16-bit copy).
void backward(const TensorView& gx, const TensorView& G, const TensorView* L, const TensorView* len_host,
              const TensorView* len_dev, int mode, const TensorView& m, const TensorView& s, const TensorView& gG,
              const TensorView* gL, std::uintptr_t stream);

// Backend implementations (arguments validated; len null = all R valid; L null as above).
void forward_cpu(const TensorView& G, const TensorView* L, const int64_t* len, int mode, const Shape& sh,
                 const TensorView& x, const TensorView& m, const TensorView& s);
void backward_cpu(const TensorView& gx, const TensorView& G, const TensorView* L, const int64_t* len, int mode,
                  const Shape& sh, const TensorView& m, const TensorView& s, const TensorView& gG,
                  const TensorView* gL);
#ifdef SEMVIS_WITH_CUDA
void forward_cuda(const TensorView& G, const TensorView* L, const int64_t* len, int mode, const Shape& sh,
                  const TensorView& x, const TensorView& m, const TensorView& s, std::uintptr_t stream);
void backward_cuda(const TensorView& gx, const TensorView& G, const TensorView* L, const int64_t* len, int mode,
                   const Shape& sh, const TensorView& m, const TensorView& s, const TensorView& gG,
                   const TensorView* gL, std::uintptr_t stream);
#endif

}  // namespace region_attention
}  // namespace semvis
