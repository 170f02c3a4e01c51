#include "dlpack_view.h"
#include "region_pool/region_pool.h"

namespace semvis {
namespace {

region_pool::Params make_params(int64_t levels, bool include_global, bool gem, double eps) {
  region_pool::Params p;
  p.levels = levels;
  p.include_global = include_global;
  p.gem = gem;
  p.eps = eps;
  return p;
}

// Holds the optional views of the region sources for one call.
struct RegionViews {
  TensorView bh, bd, ch, cd, vh, vd;
  region_pool::Regions reg;
  RegionViews(py::handle boxes_host, py::handle boxes_dev, py::handle counts_host, py::handle counts_dev,
              py::handle vhw_host, py::handle vhw_dev, std::vector<py::object>& keep) {
    if (as_optional_view(boxes_host, "regions", keep, &bh)) reg.boxes_host = &bh;
    if (as_optional_view(boxes_dev, "regions", keep, &bd)) reg.boxes_dev = &bd;
    if (as_optional_view(counts_host, "region counts", keep, &ch)) reg.counts_host = &ch;
    if (as_optional_view(counts_dev, "region counts", keep, &cd)) reg.counts_dev = &cd;
    if (as_optional_view(vhw_host, "valid_hw", keep, &vh)) reg.vhw_host = &vh;
    if (as_optional_view(vhw_dev, "valid_hw", keep, &vd)) reg.vhw_dev = &vd;
  }
};

void bind(py::module_& m) {
  m.def(
      "rmac_region_count",
      [](int64_t H, int64_t W, int64_t levels, bool include_global, bool padded) {
        if (H < 1 || W < 1) failf("rmac_regions: H and W must be >= 1, got ", H, " x ", W);
        if (levels < 1) failf("rmac_regions: levels must be >= 1, got ", levels);
        return padded ? region_pool::grid_max_count(H, W, levels, include_global)
                      : region_pool::grid_count(H, W, levels, include_global);
      },
      py::arg("H"), py::arg("W"), py::arg("levels"), py::arg("include_global"), py::arg("padded") = false);
  m.def(
      "rmac_regions_fill",
      [](int64_t H, int64_t W, int64_t levels, bool include_global, py::handle out) {
        std::vector<py::object> keep;
        TensorView o = as_view(out, "out", keep);
        if (H < 1 || W < 1) failf("rmac_regions: H and W must be >= 1, got ", H, " x ", W);
        if (levels < 1) failf("rmac_regions: levels must be >= 1, got ", levels);
        const int64_t n = region_pool::grid_count(H, W, levels, include_global);
        if (o.device != Device::kCPU) failf("rmac_regions: out must be on cpu");
        check_dtype(o, "rmac_regions", "out", {DType::kInt64});
        check_shape(o, "rmac_regions", "out", {n, 4});
        check_contiguous(o, "rmac_regions", "out");
        check_writable(o, "rmac_regions", "out");
        int64_t* q = o.ptr<int64_t>();
        for (int64_t r = 0; r < n; ++r) {
          const region_pool::Box b = region_pool::grid_box(H, W, levels, include_global, r);
          q[4 * r] = b.y;
          q[4 * r + 1] = b.x;
          q[4 * r + 2] = b.h;
          q[4 * r + 3] = b.w;
        }
      },
      py::arg("H"), py::arg("W"), py::arg("levels"), py::arg("include_global"), py::arg("out"));
  m.def(
      "region_pool_forward",
      [](py::handle x, py::handle boxes_host, py::handle boxes_dev, py::handle counts_host, py::handle counts_dev,
         py::handle vhw_host, py::handle vhw_dev, int64_t levels, bool include_global, py::handle p, double eps,
         py::handle y, py::handle counts, std::uintptr_t stream) {
        std::vector<py::object> keep;
        TensorView xv = as_view(x, "input", keep), yv = as_view(y, "output", keep),
                   cv = as_view(counts, "counts", keep);
        RegionViews rv(boxes_host, boxes_dev, counts_host, counts_dev, vhw_host, vhw_dev, keep);
        TensorView pv;
        const bool gem = as_optional_view(p, "p", keep, &pv);
        const auto prm = make_params(levels, include_global, gem, eps);
        py::gil_scoped_release nogil;
        region_pool::forward(xv, rv.reg, prm, gem ? &pv : nullptr, yv, cv, stream);
      },
      py::arg("x"), py::arg("boxes_host"), py::arg("boxes_dev"), py::arg("counts_host"), py::arg("counts_dev"),
      py::arg("valid_hw_host"), py::arg("valid_hw_dev"), py::arg("levels"), py::arg("include_global"), py::arg("p"),
      py::arg("eps"), py::arg("y"), py::arg("counts"), py::arg("stream"));
  m.def(
      "region_pool_backward",
      [](py::handle gy, py::handle x, py::handle boxes_host, py::handle boxes_dev, py::handle counts_host,
         py::handle counts_dev, py::handle vhw_host, py::handle vhw_dev, int64_t levels, bool include_global,
         py::handle p, double eps, py::handle gx, py::handle gp, std::uintptr_t stream) {
        std::vector<py::object> keep;
        TensorView gv = as_view(gy, "grad_output", keep), xv = as_view(x, "input", keep),
                   gxv = as_view(gx, "grad_input", keep);
        RegionViews rv(boxes_host, boxes_dev, counts_host, counts_dev, vhw_host, vhw_dev, keep);
        TensorView pv, gpv;
        const bool gem = as_optional_view(p, "p", keep, &pv);
        const bool has_gp = as_optional_view(gp, "grad_p", keep, &gpv);
        const auto prm = make_params(levels, include_global, gem, eps);
        py::gil_scoped_release nogil;
        region_pool::backward(gv, xv, rv.reg, prm, gem ? &pv : nullptr, gxv, has_gp ? &gpv : nullptr, stream);
      },
      py::arg("grad_output"), py::arg("x"), py::arg("boxes_host"), py::arg("boxes_dev"), py::arg("counts_host"),
      py::arg("counts_dev"), py::arg("valid_hw_host"), py::arg("valid_hw_dev"), py::arg("levels"),
      py::arg("include_global"), py::arg("p"), py::arg("eps"), py::arg("grad_input"), py::arg("grad_p"),
      py::arg("stream"));
}

}  // namespace
SEMVIS_REGISTER_BINDINGS(region_pool, bind);
}  // namespace semvis
