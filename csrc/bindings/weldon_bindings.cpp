#include "dlpack_view.h"
#include "weldon/weldon.h"

namespace semvis {
namespace {

weldon::Params make_params(int64_t kmax, double kmax_frac, int64_t kmin, double kmin_frac, double alpha, bool wildcat,
                           bool ordered = true) {
  weldon::Params p;
  p.kmax_count = kmax;
  p.kmax_frac = kmax_frac;
  p.kmin_count = kmin;
  p.kmin_frac = kmin_frac;
  p.alpha = alpha;
  p.wildcat = wildcat;
  p.ordered = ordered;
  return p;
}

void bind(py::module_& m) {
  m.def(
      "weldon_forward",
      [](py::handle x, py::handle vhw_host, py::handle vhw_dev, int64_t kmax, double kmax_frac, int64_t kmin,
         double kmin_frac, double alpha, bool wildcat, bool ordered, py::handle y, py::handle idx,
         std::uintptr_t stream) {
        std::vector<py::object> keep;
        TensorView xv = as_view(x, "input", keep), yv = as_view(y, "output", keep), iv = as_view(idx, "indices", keep);
        TensorView hv, dv;
        const bool has_h = as_optional_view(vhw_host, "valid_hw", keep, &hv);
        const bool has_d = as_optional_view(vhw_dev, "valid_hw", keep, &dv);
        const auto p = make_params(kmax, kmax_frac, kmin, kmin_frac, alpha, wildcat, ordered);
        py::gil_scoped_release nogil;
        weldon::forward(xv, has_h ? &hv : nullptr, has_d ? &dv : nullptr, p, yv, iv, stream);
      },
      py::arg("x"), py::arg("valid_hw_host"), py::arg("valid_hw_dev"), py::arg("kmax"), py::arg("kmax_frac"),
      py::arg("kmin"), py::arg("kmin_frac"), py::arg("alpha"), py::arg("wildcat"), py::arg("ordered"), py::arg("y"),
      py::arg("indices"),
      py::arg("stream"));
  m.def(
      "weldon_backward",
      [](py::handle gy, py::handle idx, py::handle vhw_host, py::handle vhw_dev, int64_t kmax, double kmax_frac,
         int64_t kmin, double kmin_frac, double alpha, bool wildcat, py::handle gx, std::uintptr_t stream) {
        std::vector<py::object> keep;
        TensorView gv = as_view(gy, "grad_output", keep), iv = as_view(idx, "indices", keep),
                   xv = as_view(gx, "grad_input", keep);
        TensorView hv, dv;
        const bool has_h = as_optional_view(vhw_host, "valid_hw", keep, &hv);
        const bool has_d = as_optional_view(vhw_dev, "valid_hw", keep, &dv);
        const auto p = make_params(kmax, kmax_frac, kmin, kmin_frac, alpha, wildcat);
        py::gil_scoped_release nogil;
        weldon::backward(gv, iv, has_h ? &hv : nullptr, has_d ? &dv : nullptr, p, xv, stream);
      },
      py::arg("grad_output"), py::arg("indices"), py::arg("valid_hw_host"), py::arg("valid_hw_dev"), py::arg("kmax"),
      py::arg("kmax_frac"), py::arg("kmin"), py::arg("kmin_frac"), py::arg("alpha"), py::arg("wildcat"),
      py::arg("grad_input"), py::arg("stream"));
}

}  // namespace
SEMVIS_REGISTER_BINDINGS(weldon, bind);
}  // namespace semvis
