#include "dlpack_view.h"
#include "region_attention/region_attention.h"

namespace semvis {
namespace {

void bind(py::module_& m) {
  m.def(
      "region_attention_forward",
      [](py::handle G, py::handle L, py::handle len_host, py::handle len_dev, int mode, py::handle x, py::handle mx,
         py::handle sm, std::uintptr_t stream) {
        std::vector<py::object> keep;
        TensorView gv = as_view(G, "G", keep), xv = as_view(x, "output", keep), mv = as_view(mx, "stats_max", keep),
                   sv = as_view(sm, "stats_sum", keep);
        TensorView lv, hv, dv;
        const bool has_l = as_optional_view(L, "logits", keep, &lv);
        const bool has_h = as_optional_view(len_host, "lengths", keep, &hv);
        const bool has_d = as_optional_view(len_dev, "lengths", keep, &dv);
        py::gil_scoped_release nogil;
        region_attention::forward(gv, has_l ? &lv : nullptr, has_h ? &hv : nullptr, has_d ? &dv : nullptr, mode, xv,
                                  mv, sv, stream);
      },
      py::arg("G"), py::arg("logits"), py::arg("lengths_host"), py::arg("lengths_dev"), py::arg("mode"),
      py::arg("x"), py::arg("stats_max"), py::arg("stats_sum"), py::arg("stream"));
  m.def(
      "region_attention_backward",
      [](py::handle gx, py::handle G, py::handle L, py::handle len_host, py::handle len_dev, int mode, py::handle mx,
         py::handle sm, py::handle gG, py::handle gL, std::uintptr_t stream) {
        std::vector<py::object> keep;
        TensorView gxv = as_view(gx, "grad_output", keep), gv = as_view(G, "G", keep),
                   mv = as_view(mx, "stats_max", keep), sv = as_view(sm, "stats_sum", keep),
                   ggv = as_view(gG, "grad_G", keep);
        TensorView lv, hv, dv, glv;
        const bool has_l = as_optional_view(L, "logits", keep, &lv);
        const bool has_h = as_optional_view(len_host, "lengths", keep, &hv);
        const bool has_d = as_optional_view(len_dev, "lengths", keep, &dv);
        const bool has_gl = as_optional_view(gL, "grad_logits", keep, &glv);
        py::gil_scoped_release nogil;
        region_attention::backward(gxv, gv, has_l ? &lv : nullptr, has_h ? &hv : nullptr, has_d ? &dv : nullptr,
                                   mode, mv, sv, ggv, has_gl ? &glv : nullptr, stream);
      },
      py::arg("grad_output"), py::arg("G"), py::arg("logits"), py::arg("lengths_host"), py::arg("lengths_dev"),
      py::arg("mode"), py::arg("stats_max"), py::arg("stats_sum"), py::arg("grad_G"), py::arg("grad_logits"),
      py::arg("stream"));
}

}  // namespace
SEMVIS_REGISTER_BINDINGS(region_attention, bind);
}  // namespace semvis
