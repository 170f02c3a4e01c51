#include <pybind11/numpy.h>

#include "dlpack_view.h"
#include "kdtree/kdtree.h"

namespace semvis {
namespace {

void bind(py::module_& m) {
  m.def(
      "kdtree_build",
      [](py::handle codes, py::handle ids, int64_t leaf_size, py::object progress) {
        std::vector<py::object> keep;
        TensorView cv = as_view(codes, "codes", keep), iv = as_view(ids, "ids", keep);
        kdtree::Progress cb;
        if (!progress.is_none()) {
          cb = [&progress](int64_t done, int64_t total) {
            py::gil_scoped_acquire gil;
            progress(done, total);
          };
        }
        std::vector<int64_t> nodes;
        {
          py::gil_scoped_release nogil;
          nodes = kdtree::build(cv, iv, leaf_size, cb);
        }
        auto* owner = new std::vector<int64_t>(std::move(nodes));
        py::capsule free_it(owner, [](void* p) { delete static_cast<std::vector<int64_t>*>(p); });
        const py::ssize_t rows = static_cast<py::ssize_t>(owner->size() / kdtree::kNodeFields);
        return py::array_t<int64_t>({rows, static_cast<py::ssize_t>(kdtree::kNodeFields)}, owner->data(), free_it);
      },
      py::arg("codes"), py::arg("ids"), py::arg("leaf_size"), py::arg("progress") = py::none(),
      "Builds the tree, permuting codes and ids in place; returns nodes int64 [m, 5].");
  m.def(
      "kdtree_build_random",
      [](py::handle codes, py::handle perm, int64_t leaf_size, int64_t choices, uint64_t seed, int64_t tree) {
        std::vector<py::object> keep;
        TensorView cv = as_view(codes, "codes", keep), pv = as_view(perm, "perm", keep);
        std::vector<int64_t> nodes;
        {
          py::gil_scoped_release nogil;
          nodes = kdtree::build_random(cv, pv, leaf_size, choices, seed, tree);
        }
        auto* owner = new std::vector<int64_t>(std::move(nodes));
        py::capsule free_it(owner, [](void* p) { delete static_cast<std::vector<int64_t>*>(p); });
        const py::ssize_t rows = static_cast<py::ssize_t>(owner->size() / kdtree::kNodeFields);
        return py::array_t<int64_t>({rows, static_cast<py::ssize_t>(kdtree::kNodeFields)}, owner->data(), free_it);
      },
      py::arg("codes"), py::arg("perm"), py::arg("leaf_size"), py::arg("choices"), py::arg("seed"), py::arg("tree"),
      "Builds one randomized tree of a forest, permuting perm (a permutation of [0, n)) in place.");
  m.def(
      "kdtree_validate_perm",
      [](py::handle perm, int64_t n) {
        std::vector<py::object> keep;
        TensorView pv = as_view(perm, "perm", keep);
        py::gil_scoped_release nogil;
        kdtree::validate_perm(pv, n);
      },
      py::arg("perm"), py::arg("n"));
  m.def(
      "kdtree_validate",
      [](py::handle nodes, int64_t n, int64_t nbits) {
        std::vector<py::object> keep;
        TensorView nv = as_view(nodes, "nodes", keep);
        py::gil_scoped_release nogil;
        kdtree::validate(nv, n, nbits);
      },
      py::arg("nodes"), py::arg("n"), py::arg("nbits"));
  m.def(
      "kdtree_search",
      [](py::handle nodes, py::handle codes, py::handle ids, py::handle buf_codes, py::handle buf_ids,
         py::handle queries, int64_t k, int64_t backtracks, int order, py::handle dist, py::handle out_ids,
         py::handle counts, py::sequence forest_nodes, py::sequence forest_perms) {
        std::vector<py::object> keep;
        std::vector<TensorView> fn, fp;
        for (py::handle h : forest_nodes) fn.push_back(as_view(h, "forest nodes", keep));
        for (py::handle h : forest_perms) fp.push_back(as_view(h, "forest perm", keep));
        TensorView nv = as_view(nodes, "nodes", keep), cv = as_view(codes, "codes", keep),
                   iv = as_view(ids, "ids", keep), qv = as_view(queries, "queries", keep),
                   dv = as_view(dist, "distances", keep), ov = as_view(out_ids, "ids", keep);
        TensorView bc, bi, cnt;
        const bool has_bc = as_optional_view(buf_codes, "buffer codes", keep, &bc);
        const bool has_bi = as_optional_view(buf_ids, "buffer ids", keep, &bi);
        const bool has_cnt = as_optional_view(counts, "counts", keep, &cnt);
        kdtree::SearchParams p;
        p.k = k;
        p.backtracks = backtracks;
        p.order = static_cast<kdtree::Order>(order);
        py::gil_scoped_release nogil;
        kdtree::search(nv, cv, iv, has_bc ? &bc : nullptr, has_bi ? &bi : nullptr, qv, p, dv, ov,
                       has_cnt ? &cnt : nullptr, fn, fp);
      },
      py::arg("nodes"), py::arg("codes"), py::arg("ids"), py::arg("buf_codes"), py::arg("buf_ids"),
      py::arg("queries"), py::arg("k"), py::arg("backtracks"), py::arg("order"), py::arg("distances"),
      py::arg("out_ids"), py::arg("counts"), py::arg("forest_nodes") = py::tuple(),
      py::arg("forest_perms") = py::tuple());
}

}  // namespace
SEMVIS_REGISTER_BINDINGS(kdtree, bind);
}  // namespace semvis
