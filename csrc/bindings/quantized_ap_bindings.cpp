#include "quantized_ap/quantized_ap.h"
#include "dlpack_view.h"

namespace semvis {
namespace {

quantized_ap::Params make_params(int64_t bins, double lo, double hi) {
  quantized_ap::Params p;
  p.bins = bins;
  p.lo = lo;
  p.hi = hi;
  return p;
}

void bind(py::module_& m) {
  m.def(
      "quantized_ap_forward",
      [](py::handle scores, py::handle labels, int64_t bins, double lo, double hi, py::handle ap, py::handle npos,
         py::handle hist, std::uintptr_t stream) {
        std::vector<py::object> keep;
        TensorView sv = as_view(scores, "scores", keep), lv = as_view(labels, "labels", keep),
                   av = as_view(ap, "ap", keep), nv = as_view(npos, "npos", keep), hv = as_view(hist, "hist", keep);
        const auto p = make_params(bins, lo, hi);
        py::gil_scoped_release nogil;
        quantized_ap::forward(sv, lv, p, av, nv, hv, stream);
      },
      py::arg("scores"), py::arg("labels"), py::arg("bins"), py::arg("lo"), py::arg("hi"), py::arg("ap"),
      py::arg("npos"), py::arg("hist"), py::arg("stream"));
  m.def(
      "quantized_ap_backward",
      [](py::handle grad_ap, py::handle scores, py::handle labels, py::handle hist, int64_t bins, double lo,
         double hi, py::handle grad_scores, std::uintptr_t stream) {
        std::vector<py::object> keep;
        TensorView gv = as_view(grad_ap, "grad_ap", keep), sv = as_view(scores, "scores", keep),
                   lv = as_view(labels, "labels", keep), hv = as_view(hist, "hist", keep),
                   ov = as_view(grad_scores, "grad_scores", keep);
        const auto p = make_params(bins, lo, hi);
        py::gil_scoped_release nogil;
        quantized_ap::backward(gv, sv, lv, hv, p, ov, stream);
      },
      py::arg("grad_ap"), py::arg("scores"), py::arg("labels"), py::arg("hist"), py::arg("bins"), py::arg("lo"),
      py::arg("hi"), py::arg("grad_scores"), py::arg("stream"));
}

}  // namespace
SEMVIS_REGISTER_BINDINGS(quantized_ap, bind);
}  // namespace semvis
