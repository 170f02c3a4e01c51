// Host entry points of the Hamming kernels: argument checks in a fixed order, then dispatch.
#include "hamming.h"

namespace semvis {
namespace hamming {
namespace {

void check_codes(const TensorView& t, const char* op, const char* name) {
  check_device_supported(t, op, name);
  check_binary_codes(t, op, name);
}

}  // namespace

void distances(const TensorView& a, const TensorView& b, const TensorView& out, std::uintptr_t stream) {
  constexpr const char* op = "hamming_distances";
  check_codes(a, op, "a");
  check_codes(b, op, "b");
  check_same_device(a, "a", b, "b", op);
  if (a.size(1) != b.size(1)) failf(op, ": a and b must have the same code width, got ", a.describe(), " and ", b.describe());
  check_same_device(a, "a", out, "out", op);
  check_output(out, op, "out", DType::kInt32, {a.size(0), b.size(0)});
  if (a.size(0) == 0 || b.size(0) == 0) return;
  if (a.device == Device::kCPU) {
    distances_cpu(a.ptr<uint8_t>(), a.size(0), b.ptr<uint8_t>(), b.size(0), a.size(1), out.ptr<int32_t>());
  } else {
#ifdef SEMVIS_WITH_CUDA
    distances_cuda(a.device_id, a.ptr<uint8_t>(), a.size(0), b.ptr<uint8_t>(), b.size(0), a.size(1), out.ptr<int32_t>(), stream);
#endif
  }
}

void topk(const TensorView& queries, const TensorView& codes, int64_t k, const TensorView& dist,
          const TensorView& idx, std::uintptr_t stream) {
  constexpr const char* op = "hamming_topk";
  check_codes(queries, op, "queries");
  check_codes(codes, op, "codes");
  check_same_device(queries, "queries", codes, "codes", op);
  if (queries.size(1) != codes.size(1))
    failf(op, ": queries and codes must have the same code width, got ", queries.describe(), " and ",
          codes.describe());
  if (k < 1) failf(op, ": k must be >= 1, got ", k);
  if (k > codes.size(0)) failf(op, ": k=", k, " is larger than the number of codes (", codes.size(0), ")");
  const int64_t nq = queries.size(0);
  check_same_device(queries, "queries", dist, "distances", op);
  check_same_device(queries, "queries", idx, "indices", op);
  check_output(dist, op, "distances", DType::kInt32, {nq, k});
  check_output(idx, op, "indices", DType::kInt64, {nq, k});
  if (nq == 0) return;
  if (queries.device == Device::kCPU) {
    topk_cpu(queries.ptr<uint8_t>(), nq, codes.ptr<uint8_t>(), codes.size(0), codes.size(1), k, dist.ptr<int32_t>(),
             idx.ptr<int64_t>());
  } else {
#ifdef SEMVIS_WITH_CUDA
    topk_cuda(queries.device_id, queries.ptr<uint8_t>(), nq, codes.ptr<uint8_t>(), codes.size(0), codes.size(1), k,
              dist.ptr<int32_t>(), idx.ptr<int64_t>(), stream);
#endif
  }
}

}  // namespace hamming
}  // namespace semvis
