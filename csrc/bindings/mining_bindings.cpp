#include "dlpack_view.h"
#include "mining/mining.h"

namespace semvis {
namespace {

void bind(py::module_& m) {
  m.def(
      "mining_merge_tile",
      [](py::handle S, int64_t row0, int64_t col0, int64_t n, int64_t mm, py::handle q_labels, py::handle db_labels,
         py::handle indptr, py::handle indices, py::handle dense, bool exclude_self, bool largest, py::handle keys,
         std::uintptr_t stream) {
        std::vector<py::object> keep;
        TensorView sv = as_view(S, "similarities", keep), kv = as_view(keys, "state", keep);
        TensorView ql, dl, ip, ix, dn;
        const bool has_ql = as_optional_view(q_labels, "q_labels", keep, &ql);
        const bool has_dl = as_optional_view(db_labels, "db_labels", keep, &dl);
        const bool has_ip = as_optional_view(indptr, "indptr", keep, &ip);
        const bool has_ix = as_optional_view(indices, "indices", keep, &ix);
        const bool has_dn = as_optional_view(dense, "exclude", keep, &dn);
        py::gil_scoped_release nogil;
        mining::merge_tile(sv, row0, col0, n, mm, has_ql ? &ql : nullptr, has_dl ? &dl : nullptr,
                           has_ip ? &ip : nullptr, has_ix ? &ix : nullptr, has_dn ? &dn : nullptr, exclude_self,
                           largest, kv, stream);
      },
      py::arg("similarities"), py::arg("row0"), py::arg("col0"), py::arg("n"), py::arg("m"), py::arg("q_labels"),
      py::arg("db_labels"), py::arg("indptr"), py::arg("indices"), py::arg("exclude"), py::arg("exclude_self"),
      py::arg("largest"), py::arg("state"), py::arg("stream"));
  m.def(
      "mining_finalize",
      [](py::handle keys, bool largest, py::handle scores, py::handle idx, std::uintptr_t stream) {
        std::vector<py::object> keep;
        TensorView kv = as_view(keys, "state", keep), sv = as_view(scores, "scores", keep),
                   iv = as_view(idx, "indices", keep);
        py::gil_scoped_release nogil;
        mining::finalize(kv, largest, sv, iv, stream);
      },
      py::arg("state"), py::arg("largest"), py::arg("scores"), py::arg("indices"), py::arg("stream"));
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
        mining::VseParams p;
        p.margin = margin;
        p.k = k;
        p.both = both;
        p.scale = scale;
        py::gil_scoped_release nogil;
        mining::vse_forward(sv, has_lab ? &lab : nullptr, p, lv, iv, jv, wv, stream);
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
        mining::TripletParams p;
        p.margin = margin;
        p.scale = scale;
        p.mean = mean;
        py::gil_scoped_release nogil;
        mining::triplet_forward(av, bv, tv, p, lv, iv, jv, wv, stream);
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
        mining::pair_backward(gv, av, bv, iv, jv, wv, gav, gbv, stream);
      },
      py::arg("grad_output"), py::arg("anchors"), py::arg("candidates"), py::arg("ei"), py::arg("ej"), py::arg("ew"),
      py::arg("grad_anchors"), py::arg("grad_candidates"), py::arg("stream"));
}

}  // namespace
SEMVIS_REGISTER_BINDINGS(mining, bind);
}  // namespace semvis
