// Host entry points of multi-index hashing: argument checks, then the CPU kernels.
#include "mih.h"

#include <cstdint>
#include <vector>

namespace semvis {
namespace mih {
namespace {

constexpr const char* kBuild = "MultiIndexHash";
constexpr const char* kSearch = "MultiIndexHash.search";

void check_cpu(const TensorView& t, const char* op, const char* name) {
  if (t.device != Device::kCPU) failf(op, ": ", name, " must be on cpu, got ", t.describe());
}

void check_m(const char* op, int64_t nbits, int64_t m) {
  if (m < 1 || m > nbits) failf(op, ": m must be in [1, ", nbits, "], got ", m);
  if (substring_bits(nbits, m, 0) > kMaxSubstringBits)
    failf(op, ": m = ", m, " gives substrings of ", substring_bits(nbits, m, 0), " bits; at most ",
          kMaxSubstringBits, " (m >= ", (nbits + kMaxSubstringBits - 1) / kMaxSubstringBits, ")");
}

void check_tables(const char* op, const TensorView& offsets, const TensorView& positions, int64_t n, int64_t nbits,
                  int64_t m) {
  check_cpu(offsets, op, "offsets");
  check_dtype(offsets, op, "offsets", {DType::kInt32});
  check_shape(offsets, op, "offsets", {offsets_size(nbits, m)});
  check_contiguous(offsets, op, "offsets");
  check_cpu(positions, op, "positions");
  check_dtype(positions, op, "positions", {DType::kInt32});
  check_shape(positions, op, "positions", {m, n});
  check_contiguous(positions, op, "positions");
}

}  // namespace

int64_t offsets_size(int64_t nbits, int64_t m) {
  int64_t total = 0;
  for (int64_t j = 0; j < m; ++j) total += (int64_t{1} << substring_bits(nbits, m, j)) + 1;
  return total;
}

void build(const TensorView& codes, int64_t m, const TensorView& offsets, const TensorView& positions) {
  check_cpu(codes, kBuild, "codes");
  check_binary_codes(codes, kBuild, "codes");
  const int64_t n = codes.size(0), nbits = 8 * codes.size(1);
  if (n > INT32_MAX) failf(kBuild, ": at most 2**31 - 1 keys, got ", n);
  check_m(kBuild, nbits, m);
  check_tables(kBuild, offsets, positions, n, nbits, m);
  check_writable(offsets, kBuild, "offsets");
  check_writable(positions, kBuild, "positions");
  build_cpu(codes.ptr<uint8_t>(), n, codes.size(1), m, offsets.ptr<int32_t>(), positions.ptr<int32_t>());
}

void validate(const TensorView& offsets, const TensorView& positions, int64_t n, int64_t nbits, int64_t m) {
  check_m(kBuild, nbits, m);
  check_tables(kBuild, offsets, positions, n, nbits, m);
  const int32_t* O = offsets.ptr<int32_t>();
  const int32_t* P = positions.ptr<int32_t>();
  std::vector<uint8_t> seen(n);
  for (int64_t j = 0; j < m; ++j) {
    const int64_t buckets = int64_t{1} << substring_bits(nbits, m, j);
    if (O[0] != 0 || O[buckets] != n) failf(kBuild, ": corrupt table ", j, ": offsets do not span [0, n)");
    for (int64_t v = 0; v < buckets; ++v)
      if (O[v] > O[v + 1]) failf(kBuild, ": corrupt table ", j, ": offsets decrease");
    std::fill(seen.begin(), seen.end(), 0);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t p = P[i];
      if (p < 0 || p >= n || seen[p]++) failf(kBuild, ": corrupt table ", j, ": positions are not a permutation");
    }
    O += buckets + 1;
    P += n;
  }
}

void search(const TensorView& codes, const TensorView& ids, int64_t m, const TensorView& offsets,
            const TensorView& positions, const TensorView& queries, int64_t k, const TensorView& dist,
            const TensorView& out_ids, const TensorView* counts) {
  check_cpu(codes, kSearch, "codes");
  check_binary_codes(codes, kSearch, "codes");
  const int64_t n = codes.size(0), nbytes = codes.size(1), nbits = 8 * nbytes;
  check_cpu(ids, kSearch, "ids");
  check_dtype(ids, kSearch, "ids", {DType::kInt64});
  check_shape(ids, kSearch, "ids", {n});
  check_contiguous(ids, kSearch, "ids");
  check_m(kSearch, nbits, m);
  check_tables(kSearch, offsets, positions, n, nbits, m);
  check_cpu(queries, kSearch, "queries");
  check_binary_codes(queries, kSearch, "queries");
  if (queries.size(1) != nbytes)
    failf(kSearch, ": queries must have ", nbytes, " bytes per row like the indexed codes, got ", queries.describe());
  if (k < 1) failf(kSearch, ": k must be >= 1, got ", k);
  const int64_t nq = queries.size(0);
  check_cpu(dist, kSearch, "distances");
  check_output(dist, kSearch, "distances", DType::kInt32, {nq, k});
  check_cpu(out_ids, kSearch, "ids");
  check_output(out_ids, kSearch, "ids", DType::kInt64, {nq, k});
  if (counts) {
    check_cpu(*counts, kSearch, "counts");
    check_output(*counts, kSearch, "counts", DType::kInt64, {nq});
  }
  if (nq == 0) return;
  IndexRef x{codes.ptr<uint8_t>(), ids.ptr<int64_t>(), n, nbytes, m, offsets.ptr<int32_t>(),
             positions.ptr<int32_t>()};
  search_cpu(x, queries.ptr<uint8_t>(), nq, k, dist.ptr<int32_t>(), out_ids.ptr<int64_t>(),
             counts ? counts->ptr<int64_t>() : nullptr);
}

}  // namespace mih
}  // namespace semvis
