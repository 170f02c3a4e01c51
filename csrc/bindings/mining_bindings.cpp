#include "dlpack_view.h"
#include "mining/mining.h"

namespace semvis {
namespace {

// The optional exclusion arguments of topk_similar's two entries as views; each pointer is nullptr where the argument
// is None. Holds the views it points to, so it is neither copied nor moved.
struct ExclusionViews {
  TensorView ql, dl, ip, ix, dn;
  const TensorView *q_labels = nullptr, *db_labels = nullptr, *indptr = nullptr, *indices = nullptr, *dense = nullptr;
  ExclusionViews(py::handle q_labels_, py::handle db_labels_, py::handle indptr_, py::handle indices_,
                 py::handle dense_, std::vector<py::object>& keep) {
    if (as_optional_view(q_labels_, "q_labels", keep, &ql)) q_labels = &ql;
    if (as_optional_view(db_labels_, "db_labels", keep, &dl)) db_labels = &dl;
    if (as_optional_view(indptr_, "indptr", keep, &ip)) indptr = &ip;
    if (as_optional_view(indices_, "indices", keep, &ix)) indices = &ix;
    if (as_optional_view(dense_, "exclude", keep, &dn)) dense = &dn;
  }
  ExclusionViews(const ExclusionViews&) = delete;
  ExclusionViews& operator=(const ExclusionViews&) = delete;
};

void bind(py::module_& m) {
  m.def(
      "mining_merge_tile",
      [](py::handle S, int64_t row0, int64_t col0, int64_t n, int64_t mm, py::handle q_labels, py::handle db_labels,
         py::handle indptr, py::handle indices, py::handle dense, bool exclude_self, bool largest, py::handle keys,
         std::uintptr_t stream) {
        std::vector<py::object> keep;
        TensorView sv = as_view(S, "similarities", keep), kv = as_view(keys, "state", keep);
        ExclusionViews ex(q_labels, db_labels, indptr, indices, dense, keep);
        py::gil_scoped_release nogil;
        mining::merge_tile(sv, row0, col0, n, mm, ex.q_labels, ex.db_labels, ex.indptr, ex.indices, ex.dense,
                           exclude_self, largest, kv, stream);
      },
      py::arg("similarities"), py::arg("row0"), py::arg("col0"), py::arg("n"), py::arg("m"), py::arg("q_labels"),
      py::arg("db_labels"), py::arg("indptr"), py::arg("indices"), py::arg("exclude"), py::arg("exclude_self"),
      py::arg("largest"), py::arg("state"), py::arg("stream"));
  m.def(
      "mining_topk_fused",
      [](py::handle q, py::handle db, py::handle q_labels, py::handle db_labels, py::handle indptr,
         py::handle indices, py::handle dense, bool exclude_self, bool largest, py::handle keys, int64_t block_rows,
         int64_t block_cols) {
        std::vector<py::object> keep;
        TensorView qv = as_view(q, "q", keep), dv = as_view(db, "db", keep), kv = as_view(keys, "state", keep);
        ExclusionViews ex(q_labels, db_labels, indptr, indices, dense, keep);
        py::gil_scoped_release nogil;
        mining::topk_fused(qv, dv, ex.q_labels, ex.db_labels, ex.indptr, ex.indices, ex.dense, exclude_self, largest,
                           kv, block_rows, block_cols);
      },
      py::arg("q"), py::arg("db"), py::arg("q_labels"), py::arg("db_labels"), py::arg("indptr"), py::arg("indices"),
      py::arg("exclude"), py::arg("exclude_self"), py::arg("largest"), py::arg("state"), py::arg("block_rows"),
      py::arg("block_cols"));
  m.def("mining_fused_available", [] { return mining::fused_available(); });
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
}

}  // namespace
SEMVIS_REGISTER_BINDINGS(mining, bind);
}  // namespace semvis
