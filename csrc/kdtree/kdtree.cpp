// Host entry points of the binary kd-tree: argument checks in a fixed order, then the CPU
// kernels (the tree is a CPU structure; the GPU path for brute force lives in hamming/).
#include "kdtree.h"

#include <cstdint>
#include <vector>

namespace semvis {
namespace kdtree {
namespace {

constexpr const char* kBuild = "BinaryKDTree";
constexpr const char* kSearch = "BinaryKDTree.search";

void check_cpu(const TensorView& t, const char* op, const char* name) {
  if (t.device != Device::kCPU) failf(op, ": ", name, " must be on cpu, got ", t.describe());
}

void check_codes(const TensorView& t, const char* op, const char* name) {
  check_cpu(t, op, name);
  check_binary_codes(t, op, name);
}

void check_ids(const TensorView& t, const char* op, const char* name, int64_t n) {
  check_cpu(t, op, name);
  check_dtype(t, op, name, {DType::kInt64});
  check_shape(t, op, name, {n});
  check_contiguous(t, op, name);
}

}  // namespace

std::vector<int64_t> build(const TensorView& codes, const TensorView& ids, int64_t leaf_size,
                           const Progress& progress) {
  check_codes(codes, kBuild, "codes");
  check_writable(codes, kBuild, "codes");
  check_ids(ids, kBuild, "ids", codes.size(0));
  check_writable(ids, kBuild, "ids");
  if (leaf_size < 1) failf(kBuild, ": leaf_size must be >= 1, got ", leaf_size);
  return build_cpu(codes.ptr<uint8_t>(), ids.ptr<int64_t>(), codes.size(0), codes.size(1), leaf_size, progress);
}

std::vector<int64_t> build_random(const TensorView& codes, const TensorView& perm, int64_t leaf_size,
                                  int64_t choices, uint64_t seed, int64_t tree) {
  check_codes(codes, kBuild, "codes");
  const int64_t n = codes.size(0);
  if (n > INT32_MAX) failf(kBuild, ": a forest (trees > 1) holds at most 2**31 - 1 keys, got ", n);
  check_cpu(perm, kBuild, "perm");
  check_dtype(perm, kBuild, "perm", {DType::kInt32});
  check_shape(perm, kBuild, "perm", {n});
  check_contiguous(perm, kBuild, "perm");
  check_writable(perm, kBuild, "perm");
  if (leaf_size < 1) failf(kBuild, ": leaf_size must be >= 1, got ", leaf_size);
  if (choices < 1) failf(kBuild, ": split_choices must be >= 1, got ", choices);
  validate_perm(perm, n);
  return build_random_cpu(codes.ptr<uint8_t>(), perm.ptr<int32_t>(), n, codes.size(1), leaf_size, choices, seed,
                          tree);
}

void validate_perm(const TensorView& perm, int64_t n) {
  constexpr const char* op = "BinaryKDTree";
  check_cpu(perm, op, "perm");
  check_dtype(perm, op, "perm", {DType::kInt32});
  check_shape(perm, op, "perm", {n});
  check_contiguous(perm, op, "perm");
  const int32_t* P = perm.ptr<int32_t>();
  std::vector<uint8_t> seen(n, 0);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = P[i];
    if (v < 0 || v >= n) failf(op, ": corrupt forest: position ", v, " out of range [0, ", n, ")");
    if (seen[v]++) failf(op, ": corrupt forest: position ", v, " appears twice in a tree");
  }
}

void validate(const TensorView& nodes, int64_t n, int64_t nbits) {
  constexpr const char* op = "BinaryKDTree";
  check_cpu(nodes, op, "nodes");
  check_dtype(nodes, op, "nodes", {DType::kInt64});
  check_shape(nodes, op, "nodes", {-1, kNodeFields});
  check_contiguous(nodes, op, "nodes");
  const int64_t m = nodes.size(0);
  if (m < 1) failf(op, ": corrupt tree: no root node");
  const int64_t* N = nodes.ptr<int64_t>();
  if (N[kBegin] != 0 || N[kEnd] != n)
    failf(op, ": corrupt tree: the root covers [", N[kBegin], ", ", N[kEnd], ") instead of [0, ", n, ")");
  std::vector<uint8_t> parents(m, 0);
  for (int64_t i = 0; i < m; ++i) {
    const int64_t* nd = N + i * kNodeFields;
    if (!(nd[kBegin] >= 0 && nd[kBegin] <= nd[kEnd] && nd[kEnd] <= n))
      failf(op, ": corrupt tree: node ", i, " has an invalid range [", nd[kBegin], ", ", nd[kEnd], ")");
    if (nd[kDim] == -1) {
      if (nd[kLeft] != -1 || nd[kRight] != -1) failf(op, ": corrupt tree: leaf ", i, " has children");
      continue;
    }
    if (!(nd[kDim] >= 0 && nd[kDim] < nbits)) failf(op, ": corrupt tree: node ", i, " splits on bit ", nd[kDim]);
    // children after their parent (no cycles), each with exactly one parent (a tree), and
    // nested ranges: the leaves partition [0, n).
    for (int side : {kLeft, kRight}) {
      const int64_t c = nd[side];
      if (!(c > i && c < m)) failf(op, ": corrupt tree: node ", i, " has child ", c);
      if (parents[c]++) failf(op, ": corrupt tree: node ", c, " has two parents");
    }
    const int64_t* l = N + nd[kLeft] * kNodeFields;
    const int64_t* r = N + nd[kRight] * kNodeFields;
    if (l[kBegin] != nd[kBegin] || l[kEnd] != r[kBegin] || r[kEnd] != nd[kEnd])
      failf(op, ": corrupt tree: the children of node ", i, " do not split its range");
  }
  for (int64_t i = 1; i < m; ++i)
    if (!parents[i]) failf(op, ": corrupt tree: node ", i, " is unreachable");
}

void search(const TensorView& nodes, const TensorView& codes, const TensorView& ids, const TensorView* buf_codes,
            const TensorView* buf_ids, const TensorView& queries, const SearchParams& p, const TensorView& dist,
            const TensorView& out_ids, const TensorView* counts, const std::vector<TensorView>& forest_nodes,
            const std::vector<TensorView>& forest_perms) {
  check_codes(codes, kSearch, "codes");
  const int64_t n = codes.size(0), nbytes = codes.size(1);
  check_ids(ids, kSearch, "ids", n);
  check_cpu(nodes, kSearch, "nodes");
  check_dtype(nodes, kSearch, "nodes", {DType::kInt64});
  check_shape(nodes, kSearch, "nodes", {-1, kNodeFields});
  check_contiguous(nodes, kSearch, "nodes");
  if (nodes.size(0) < 1) failf(kSearch, ": nodes must hold at least the root");
  int64_t nbuf = 0;
  if ((buf_codes == nullptr) != (buf_ids == nullptr)) failf(kSearch, ": buffer codes and ids go together");
  if (buf_codes) {
    check_codes(*buf_codes, kSearch, "buffer codes");
    if (buf_codes->size(1) != nbytes) failf(kSearch, ": buffer codes must have ", nbytes, " bytes per row");
    nbuf = buf_codes->size(0);
    check_ids(*buf_ids, kSearch, "buffer ids", nbuf);
  }
  check_codes(queries, kSearch, "queries");
  if (queries.size(1) != nbytes)
    failf(kSearch, ": queries must have ", nbytes, " bytes per row like the indexed codes, got ", queries.describe());
  if (p.k < 1) failf(kSearch, ": k must be >= 1, got ", p.k);
  if (p.order != Order::kFifo && p.order != Order::kBestBin) failf(kSearch, ": unknown order");
  const int64_t nq = queries.size(0);
  check_cpu(dist, kSearch, "distances");
  check_output(dist, kSearch, "distances", DType::kInt32, {nq, p.k});
  check_cpu(out_ids, kSearch, "ids");
  check_output(out_ids, kSearch, "ids", DType::kInt64, {nq, p.k});
  if (counts) {
    check_ids(*counts, kSearch, "counts", nq);
    check_writable(*counts, kSearch, "counts");
  }
  if (forest_nodes.size() != forest_perms.size()) failf(kSearch, ": one permutation per extra tree");
  for (size_t t = 0; t < forest_nodes.size(); ++t) {
    const TensorView& fn = forest_nodes[t];
    check_cpu(fn, kSearch, "forest nodes");
    check_dtype(fn, kSearch, "forest nodes", {DType::kInt64});
    check_shape(fn, kSearch, "forest nodes", {-1, kNodeFields});
    check_contiguous(fn, kSearch, "forest nodes");
    if (fn.size(0) < 1) failf(kSearch, ": forest nodes must hold at least the root");
    check_cpu(forest_perms[t], kSearch, "forest perm");
    check_dtype(forest_perms[t], kSearch, "forest perm", {DType::kInt32});
    check_shape(forest_perms[t], kSearch, "forest perm", {n});
    check_contiguous(forest_perms[t], kSearch, "forest perm");
  }
  if (nq == 0) return;
  TreeRef t;
  t.nodes = nodes.ptr<int64_t>();
  for (size_t i = 0; i < forest_nodes.size(); ++i) {
    t.forest_nodes.push_back(forest_nodes[i].ptr<int64_t>());
    t.forest_perms.push_back(forest_perms[i].ptr<int32_t>());
  }
  t.codes = codes.ptr<uint8_t>();
  t.ids = ids.ptr<int64_t>();
  t.n = n;
  t.buf_codes = buf_codes ? buf_codes->ptr<uint8_t>() : nullptr;
  t.buf_ids = buf_ids ? buf_ids->ptr<int64_t>() : nullptr;
  t.n_buf = nbuf;
  t.nbytes = nbytes;
  search_cpu(t, queries.ptr<uint8_t>(), nq, p, dist.ptr<int32_t>(), out_ids.ptr<int64_t>(),
             counts ? counts->ptr<int64_t>() : nullptr);
}

}  // namespace kdtree
}  // namespace semvis
