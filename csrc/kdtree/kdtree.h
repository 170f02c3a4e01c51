// Binary kd-tree over Hamming codes (K19/K20; Algorithms 1 and 2 of spec/seeds-003-004.md
// B.3.6-B.3.7).
//
// Layout. The tree is a flat int64 array nodes[m, 5] = (dim, left, right, begin, end) in
// breadth-first order (every child comes after its parent; node 0 is the root). A leaf has
// dim = left = right = -1. Every node covers the contiguous range [begin, end) of the permuted
// codes/ids arrays; a decision node's left child covers the keys whose bit `dim` is 1 and its
// right child those whose bit is 0. Bits are numbered as np.unpackbits does (see hamming.h).
//
// Build (Algorithm 1): a node with fewer than leaf_size keys is a leaf; otherwise it splits on
// the most balanced bit, argmin_x |0.5 - #{d[x] = 1} / |D||, lowest x on ties. When that bit
// is constant over the node (every bit is: e.g. identical keys) the node becomes a leaf instead
// (degenerate-split guard), so such a leaf may hold leaf_size keys or more. The codes and ids
// are permuted in place: the build needs no memory beyond them and O(m) for the nodes.
//
// Search (Algorithm 2, corrected reading of the spec): descend from the front of a FIFO
// queue, following the query's bit and appending the branch not taken, until a leaf; score
// the leaf's keys; repeat for `backtracks` leaves (or until the queue is empty). Note that the
// FIFO already visits branches by increasing number of path bits on which they disagree with the
// query (a lower bound of the distance to any of their keys), ties in queueing order: the
// shallowest divergence first. The best-bin variant keeps that primary key but breaks its ties
// by the deepest divergence first (the branch whose keys agree with the query on the most path
// bits), then queueing order; it visits the same first leaf. Keys of an optional append
// buffer are scored exhaustively. Results: the k nearest candidates by (distance, id), nearest
// first, padded with (-1, -1) when fewer than k keys were scored.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "common/tensor.h"

namespace semvis {
namespace kdtree {

enum NodeField : int { kDim = 0, kLeft = 1, kRight = 2, kBegin = 3, kEnd = 4, kNodeFields = 5 };

// Called from the calling thread between levels of the build with (keys placed in leaves, n).
using Progress = std::function<void(int64_t, int64_t)>;

//   codes [n, nbytes] uint8 and ids [n] int64, CPU, contiguous, writable: permuted in place
// Returns the nodes, flattened ([m * 5]).
std::vector<int64_t> build(const TensorView& codes, const TensorView& ids, int64_t leaf_size,
                           const Progress& progress);

// Throws std::invalid_argument unless nodes [m, 5] int64 is a well-formed tree over n keys of
// nbits bits (used on load: a corrupt file must never reach the search).
void validate(const TensorView& nodes, int64_t n, int64_t nbits);

enum class Order : int { kFifo = 0, kBestBin = 1 };

struct SearchParams {
  int64_t k = 1;
  int64_t backtracks = 50;  // leaves visited; < 0 visits every leaf (exact search)
  Order order = Order::kFifo;
};

//   nodes [m, 5] int64, codes [n, nbytes] uint8, ids [n] int64 (a validated tree)
//   buf_codes [nb, nbytes] uint8, buf_ids [nb] int64 (optional, may be null)
//   queries [nq, nbytes] uint8
//   dist [nq, k] int32, out_ids [nq, k] int64, counts [nq] int64 (optional: keys scored)
void search(const TensorView& nodes, const TensorView& codes, const TensorView& ids, const TensorView* buf_codes,
            const TensorView* buf_ids, const TensorView& queries, const SearchParams& p, const TensorView& dist,
            const TensorView& out_ids, const TensorView* counts);

// Kernels behind the host entries (raw pointers, arguments already checked).
std::vector<int64_t> build_cpu(uint8_t* codes, int64_t* ids, int64_t n, int64_t nbytes, int64_t leaf_size,
                               const Progress& progress);
struct TreeRef {
  const int64_t* nodes;
  const uint8_t* codes;
  const int64_t* ids;
  int64_t n;
  const uint8_t* buf_codes;
  const int64_t* buf_ids;
  int64_t n_buf;
  int64_t nbytes;
};
void search_cpu(const TreeRef& t, const uint8_t* queries, int64_t nq, const SearchParams& p, int32_t* dist,
                int64_t* out_ids, int64_t* counts);

}  // namespace kdtree
}  // namespace semvis
