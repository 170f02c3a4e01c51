// A small persistent thread pool for the CPU kernels.
// We do not use OpenMP: the torch wheels bundle their own libgomp, and two OpenMP runtimes in
// one process oversubscribe the cores. parallel_for called from inside a worker runs inline.
#pragma once

#include <cstdint>
#include <functional>

namespace semvis {

// Number of threads the kernels use: SEMVIS_NUM_THREADS if set, else the hardware concurrency.
int get_num_threads();
void set_num_threads(int n);

// Calls f(lo, hi) on disjoint chunks covering [begin, end). Chunks have at least `grain`
// items (except the last). Exceptions thrown by f are rethrown in the caller (the first one).
void parallel_for(int64_t begin, int64_t end, int64_t grain, const std::function<void(int64_t, int64_t)>& f);

}  // namespace semvis
