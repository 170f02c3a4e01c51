#include "dlpack_view.h"
#include "soft_rank/soft_rank.h"

namespace semvis {
namespace {

void bind(py::module_& m) {
  m.def(
      "soft_rank_forward",
      [](py::handle s, double lam, bool normalize, py::handle rank, std::uintptr_t stream) {
        std::vector<py::object> keep;
        TensorView sv = as_view(s, "scores", keep), rv = as_view(rank, "output", keep);
        soft_rank::Params p;
        p.lam = lam;
        p.normalize = normalize;
        py::gil_scoped_release nogil;
        soft_rank::forward(sv, p, rv, stream);
      },
      py::arg("scores"), py::arg("lam"), py::arg("normalize"), py::arg("rank"), py::arg("stream"));
  m.def(
      "soft_rank_backward",
      [](py::handle g, py::handle s, double lam, bool normalize, py::handle gs, std::uintptr_t stream) {
        std::vector<py::object> keep;
        TensorView gv = as_view(g, "grad_output", keep), sv = as_view(s, "scores", keep),
                   gsv = as_view(gs, "grad_scores", keep);
        soft_rank::Params p;
        p.lam = lam;
        p.normalize = normalize;
        py::gil_scoped_release nogil;
        soft_rank::backward(gv, sv, p, gsv, stream);
      },
      py::arg("grad_output"), py::arg("scores"), py::arg("lam"), py::arg("normalize"), py::arg("grad_scores"),
      py::arg("stream"));
}

}  // namespace
SEMVIS_REGISTER_BINDINGS(soft_rank, bind);
}  // namespace semvis
