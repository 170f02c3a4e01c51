#include "dlpack_view.h"
#include "landmarks/landmarks.h"

namespace semvis {
namespace {

void bind(py::module_& m) {
  m.def(
      "landmarks_positions_from_scores",
      [](py::handle scores, py::handle indptr, py::handle ids, py::handle out) {
        std::vector<py::object> keep;
        TensorView sv = as_view(scores, "scores", keep), pv = as_view(indptr, "indptr", keep),
                   iv = as_view(ids, "ids", keep), ov = as_view(out, "out", keep);
        py::gil_scoped_release nogil;
        landmarks::positions_from_scores(sv, pv, iv, ov);
      },
      py::arg("scores"), py::arg("indptr"), py::arg("ids"), py::arg("out"));
  m.def(
      "landmarks_positions_from_ranks",
      [](py::handle ranks, int64_t db_size, py::handle indptr, py::handle ids, py::handle out) {
        std::vector<py::object> keep;
        TensorView rv = as_view(ranks, "ranks", keep), pv = as_view(indptr, "indptr", keep),
                   iv = as_view(ids, "ids", keep), ov = as_view(out, "out", keep);
        py::gil_scoped_release nogil;
        landmarks::positions_from_ranks(rv, db_size, pv, iv, ov);
      },
      py::arg("ranks"), py::arg("db_size"), py::arg("indptr"), py::arg("ids"), py::arg("out"));
  m.def(
      "landmarks_average_precision",
      [](py::handle pos_indptr, py::handle pos, py::handle nres, py::handle junk_indptr, py::handle junk,
         py::handle kappas, py::handle aps, py::handle prs) {
        std::vector<py::object> keep;
        TensorView a = as_view(pos_indptr, "pos_indptr", keep), b = as_view(pos, "pos", keep),
                   c = as_view(nres, "nres", keep), d = as_view(junk_indptr, "junk_indptr", keep),
                   e = as_view(junk, "junk", keep), f = as_view(kappas, "kappas", keep),
                   g = as_view(aps, "aps", keep), h = as_view(prs, "prs", keep);
        py::gil_scoped_release nogil;
        landmarks::average_precision(a, b, c, d, e, f, g, h);
      },
      py::arg("pos_indptr"), py::arg("pos"), py::arg("nres"), py::arg("junk_indptr"), py::arg("junk"),
      py::arg("kappas"), py::arg("aps"), py::arg("prs"));
}

}  // namespace
SEMVIS_REGISTER_BINDINGS(landmarks, bind);
}  // namespace semvis
