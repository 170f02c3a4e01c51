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
//
// Forests (FLANN's randomized kd-trees, Muja & Lowe). Tree 0 is the tree above. Trees 1..T-1
// share its code store (no copy of the codes): each is a permutation perm_t [n] int32 of the
// positions of the stored codes plus its own nodes, whose ranges index perm_t. They are built by
// the same level-by-level algorithm, except that a node splits on a bit drawn uniformly among
// its `choices` most balanced non-constant bits (ranked by |2 c_x - m|, lowest x on ties), with a
// generator seeded by (seed, tree, node): the build is deterministic. A forest search descends
// every tree from one shared queue (FIFO: the T roots first, in tree order; best-bin: the roots
// at priority 0, in tree order), scores at most `backtracks` leaves in all, and scores every key
// at most once (a visited set of positions), so T = 1 is the single tree search unchanged.
// Exact search (backtracks < 0) visits every leaf of tree 0 only.
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

// One randomized tree of a forest over codes [n, nbytes] (read only): perm [n] int32 (writable)
// must hold a permutation of [0, n) on entry (permuted in place). Returns the nodes.
std::vector<int64_t> build_random(const TensorView& codes, const TensorView& perm, int64_t leaf_size,
                                  int64_t choices, uint64_t seed, int64_t tree);

// Throws std::invalid_argument unless perm [n] int32 is a permutation of [0, n).
void validate_perm(const TensorView& perm, int64_t n);

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
//   forest_nodes / forest_perms: the trees 1..T-1 (validated), empty for a single tree
void search(const TensorView& nodes, const TensorView& codes, const TensorView& ids, const TensorView* buf_codes,
            const TensorView* buf_ids, const TensorView& queries, const SearchParams& p, const TensorView& dist,
            const TensorView& out_ids, const TensorView* counts, const std::vector<TensorView>& forest_nodes = {},
            const std::vector<TensorView>& forest_perms = {});

// Kernels behind the host entries (raw pointers, arguments already checked).
std::vector<int64_t> build_cpu(uint8_t* codes, int64_t* ids, int64_t n, int64_t nbytes, int64_t leaf_size,
                               const Progress& progress);
std::vector<int64_t> build_random_cpu(const uint8_t* codes, int32_t* perm, int64_t n, int64_t nbytes,
                                      int64_t leaf_size, int64_t choices, uint64_t seed, int64_t tree);
struct TreeRef {
  const int64_t* nodes = nullptr;
  std::vector<const int64_t*> forest_nodes;  // trees 1..T-1
  std::vector<const int32_t*> forest_perms;
  const uint8_t* codes = nullptr;
  const int64_t* ids = nullptr;
  int64_t n = 0;
  const uint8_t* buf_codes = nullptr;
  const int64_t* buf_ids = nullptr;
  int64_t n_buf = 0;
  int64_t nbytes = 0;
};
void search_cpu(const TreeRef& t, const uint8_t* queries, int64_t nq, const SearchParams& p, int32_t* dist,
                int64_t* out_ids, int64_t* counts);

}  // namespace kdtree
}  // namespace semvis
