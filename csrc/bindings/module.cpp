// semvis_ext._C: build information and the thread pool; every op adds itself through
// SEMVIS_REGISTER_BINDINGS in its own csrc/bindings/<op>_bindings.cpp.
#include <pybind11/pybind11.h>

#include "common/parallel.h"
#include "dlpack_view.h"

#ifdef SEMVIS_WITH_CUDA
#include <cuda_runtime.h>
#endif

#ifndef SEMVIS_VERSION
#define SEMVIS_VERSION "0.0.0"
#endif
#ifndef SEMVIS_CUDA_ARCHS
#define SEMVIS_CUDA_ARCHS ""
#endif

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "semvis compiled kernels (CPU and, when built with it, CUDA)";
  m.attr("__version__") = SEMVIS_VERSION;
  m.def("cuda_built", [] { return semvis::cuda_available_at_build(); });
  m.def("cuda_archs", [] { return std::string(SEMVIS_CUDA_ARCHS); });
  m.def("cuda_device_count", [] {
#ifdef SEMVIS_WITH_CUDA
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();  // no driver or no device: clear the sticky error
      return 0;
    }
    return n;
#else
    return 0;
#endif
  });
  m.def("get_num_threads", &semvis::get_num_threads, "Threads used by the CPU kernels.");
  m.def("set_num_threads", &semvis::set_num_threads, py::arg("n"),
        "Sets the threads used by the CPU kernels (<= 0: SEMVIS_NUM_THREADS or all cores).");
  semvis::bind_all(m);
}
