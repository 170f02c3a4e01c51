#include "dlpack_view.h"
#include "hamming/hamming.h"
#include "hamming/hamming_simd.h"

namespace semvis {
namespace {

void bind(py::module_& m) {
  m.def(
      "hamming_distances",
      [](py::handle a, py::handle b, py::handle out, std::uintptr_t stream) {
        std::vector<py::object> keep;
        TensorView av = as_view(a, "a", keep), bv = as_view(b, "b", keep), ov = as_view(out, "out", keep);
        py::gil_scoped_release nogil;
        hamming::distances(av, bv, ov, stream);
      },
      py::arg("a"), py::arg("b"), py::arg("out"), py::arg("stream") = 0);
  m.def(
      "hamming_topk",
      [](py::handle q, py::handle codes, int64_t k, py::handle dist, py::handle idx, std::uintptr_t stream) {
        std::vector<py::object> keep;
        TensorView qv = as_view(q, "queries", keep), cv = as_view(codes, "codes", keep),
                   dv = as_view(dist, "distances", keep), iv = as_view(idx, "indices", keep);
        py::gil_scoped_release nogil;
        hamming::topk(qv, cv, k, dv, iv, stream);
      },
      py::arg("queries"), py::arg("codes"), py::arg("k"), py::arg("distances"), py::arg("indices"),
      py::arg("stream") = 0);
  m.def("hamming_cpu_impl", [] { return std::string(hamming::kernels().name); },
        "The popcount variant the CPU kernels use (\"popcnt\" or \"generic\").");
  m.def("hamming_set_cpu_impl", [](const std::string& name) { hamming::set_kernels(name.c_str()); },
        py::arg("name"), "Selects the CPU popcount variant: auto, generic, popcnt or popcnt-scalar (tests, benchmarks).");
}

}  // namespace
SEMVIS_REGISTER_BINDINGS(hamming, bind);
}  // namespace semvis
