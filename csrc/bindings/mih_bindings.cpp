#include "dlpack_view.h"
#include "mih/mih.h"

namespace semvis {
namespace {

void bind(py::module_& m) {
  m.def("mih_offsets_size", &mih::offsets_size, py::arg("nbits"), py::arg("m"));
  m.def(
      "mih_build",
      [](py::handle codes, int64_t mm, py::handle offsets, py::handle positions) {
        std::vector<py::object> keep;
        TensorView cv = as_view(codes, "codes", keep), ov = as_view(offsets, "offsets", keep),
                   pv = as_view(positions, "positions", keep);
        py::gil_scoped_release nogil;
        mih::build(cv, mm, ov, pv);
      },
      py::arg("codes"), py::arg("m"), py::arg("offsets"), py::arg("positions"),
      "Fills the m substring tables (offsets int32, positions int32 [m, n]) of multi-index hashing.");
  m.def(
      "mih_validate",
      [](py::handle offsets, py::handle positions, int64_t n, int64_t nbits, int64_t mm) {
        std::vector<py::object> keep;
        TensorView ov = as_view(offsets, "offsets", keep), pv = as_view(positions, "positions", keep);
        py::gil_scoped_release nogil;
        mih::validate(ov, pv, n, nbits, mm);
      },
      py::arg("offsets"), py::arg("positions"), py::arg("n"), py::arg("nbits"), py::arg("m"));
  m.def(
      "mih_search",
      [](py::handle codes, py::handle ids, int64_t mm, py::handle offsets, py::handle positions, py::handle queries,
         int64_t k, py::handle dist, py::handle out_ids, py::handle counts) {
        std::vector<py::object> keep;
        TensorView cv = as_view(codes, "codes", keep), iv = as_view(ids, "ids", keep),
                   ov = as_view(offsets, "offsets", keep), pv = as_view(positions, "positions", keep),
                   qv = as_view(queries, "queries", keep), dv = as_view(dist, "distances", keep),
                   oi = as_view(out_ids, "ids", keep);
        TensorView cnt;
        const bool has_cnt = as_optional_view(counts, "counts", keep, &cnt);
        py::gil_scoped_release nogil;
        mih::search(cv, iv, mm, ov, pv, qv, k, dv, oi, has_cnt ? &cnt : nullptr);
      },
      py::arg("codes"), py::arg("ids"), py::arg("m"), py::arg("offsets"), py::arg("positions"), py::arg("queries"),
      py::arg("k"), py::arg("distances"), py::arg("out_ids"), py::arg("counts"));
}

}  // namespace
SEMVIS_REGISTER_BINDINGS(mih, bind);
}  // namespace semvis
