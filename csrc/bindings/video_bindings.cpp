#include "dlpack_view.h"
#include "video/video.h"

namespace semvis {
namespace {

void bind(py::module_& m) {
  m.def(
      "video_track",
      [](py::handle kps, py::handle desc, py::handle offsets, int64_t max_hamming, double max_distance, py::handle next,
         py::handle track) {
        std::vector<py::object> keep;
        TensorView kv = as_view(kps, "keypoints", keep), dv = as_view(desc, "descriptors", keep),
                   ov = as_view(offsets, "frame_offsets", keep), nv = as_view(next, "next", keep),
                   tv = as_view(track, "track", keep);
        video::TrackParams p;
        p.max_hamming = max_hamming;
        p.max_distance = max_distance;
        py::gil_scoped_release nogil;
        return video::track(kv, dv, ov, p, nv, tv);
      },
      py::arg("keypoints"), py::arg("descriptors"), py::arg("frame_offsets"), py::arg("max_hamming"),
      py::arg("max_distance"), py::arg("next"), py::arg("track"));
  m.def(
      "video_split_shots",
      [](py::handle next, py::handle offsets, py::handle shot) {
        std::vector<py::object> keep;
        TensorView nv = as_view(next, "next", keep), ov = as_view(offsets, "frame_offsets", keep),
                   sv = as_view(shot, "shot", keep);
        py::gil_scoped_release nogil;
        return video::split_shots(nv, ov, sv);
      },
      py::arg("next"), py::arg("frame_offsets"), py::arg("shot"));
  m.def(
      "video_majority_keys",
      [](py::handle desc, py::handle track, int64_t n_tracks, py::handle selected, py::handle keys) {
        std::vector<py::object> keep;
        TensorView dv = as_view(desc, "descriptors", keep), tv = as_view(track, "track", keep),
                   sv = as_view(selected, "selected", keep), kv = as_view(keys, "keys", keep);
        py::gil_scoped_release nogil;
        video::majority_keys(dv, tv, n_tracks, sv, kv);
      },
      py::arg("descriptors"), py::arg("track"), py::arg("n_tracks"), py::arg("selected"), py::arg("keys"));
}

}  // namespace
SEMVIS_REGISTER_BINDINGS(video, bind);
}  // namespace semvis
