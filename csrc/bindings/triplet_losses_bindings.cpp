#include "dlpack_view.h"
#include "triplet_losses/triplet_losses.h"

namespace semvis {
namespace {

void bind(py::module_& m) {
  m.def(
      "vse_forward",
      [](py::handle S, py::handle labels, double margin, int64_t k, bool both, double scale, py::handle loss,
         py::handle ei, py::handle ej, py::handle ew, std::uintptr_t stream) {
        std::vector<py::object> keep;
        TensorView sv = as_view(S, "similarities", keep), lv = as_view(loss, "loss", keep),
                   iv = as_view(ei, "entries", keep), jv = as_view(ej, "entries", keep),
                   wv = as_view(ew, "entries", keep);
        TensorView lab;
        const bool has_lab = as_optional_view(labels, "labels", keep, &lab);
        triplet_losses::VseParams p;
        p.margin = margin;
        p.k = k;
        p.both = both;
        p.scale = scale;
        py::gil_scoped_release nogil;
        triplet_losses::vse_forward(sv, has_lab ? &lab : nullptr, p, lv, iv, jv, wv, stream);
      },
      py::arg("similarities"), py::arg("labels"), py::arg("margin"), py::arg("k"), py::arg("both"), py::arg("scale"),
      py::arg("loss"), py::arg("ei"), py::arg("ej"), py::arg("ew"), py::arg("stream"));
  m.def(
      "triplet_forward",
      [](py::handle A, py::handle Bt, py::handle trip, double margin, double scale, bool mean, py::handle loss,
         py::handle ei, py::handle ej, py::handle ew, std::uintptr_t stream) {
        std::vector<py::object> keep;
        TensorView av = as_view(A, "anchors", keep), bv = as_view(Bt, "candidates", keep),
                   tv = as_view(trip, "triplets", keep), lv = as_view(loss, "loss", keep),
                   iv = as_view(ei, "entries", keep), jv = as_view(ej, "entries", keep),
                   wv = as_view(ew, "entries", keep);
        triplet_losses::TripletParams p;
        p.margin = margin;
        p.scale = scale;
        p.mean = mean;
        py::gil_scoped_release nogil;
        triplet_losses::triplet_forward(av, bv, tv, p, lv, iv, jv, wv, stream);
      },
      py::arg("anchors"), py::arg("candidates"), py::arg("triplets"), py::arg("margin"), py::arg("scale"),
      py::arg("mean"), py::arg("loss"), py::arg("ei"), py::arg("ej"), py::arg("ew"), py::arg("stream"));
  m.def(
      "pair_backward",
      [](py::handle g, py::handle A, py::handle Bt, py::handle ei, py::handle ej, py::handle ew, py::handle gA,
         py::handle gB, std::uintptr_t stream) {
        std::vector<py::object> keep;
        TensorView gv = as_view(g, "grad_output", keep), av = as_view(A, "anchors", keep),
                   bv = as_view(Bt, "candidates", keep), iv = as_view(ei, "entries", keep),
                   jv = as_view(ej, "entries", keep), wv = as_view(ew, "entries", keep),
                   gav = as_view(gA, "grad_anchors", keep), gbv = as_view(gB, "grad_candidates", keep);
        py::gil_scoped_release nogil;
        triplet_losses::pair_backward(gv, av, bv, iv, jv, wv, gav, gbv, stream);
      },
      py::arg("grad_output"), py::arg("anchors"), py::arg("candidates"), py::arg("ei"), py::arg("ej"), py::arg("ew"),
      py::arg("grad_anchors"), py::arg("grad_candidates"), py::arg("stream"));
}

}  // namespace
SEMVIS_REGISTER_BINDINGS(triplet_losses, bind);
}  // namespace semvis
