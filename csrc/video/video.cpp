// Host entries of the video kernels: argument checks in a fixed order, then the CPU kernels.
#include "video.h"

#include <cmath>

namespace semvis {
namespace video {
namespace {

// frame_offsets int64[T+1]: starts at 0, non-decreasing, ends at N. Returns T.
int64_t check_offsets(const TensorView& off, const char* op, int64_t N) {
  check_device_supported(off, op, "frame_offsets");
  if (off.device != Device::kCPU) failf(op, ": frame_offsets must be on cpu, got ", off.describe());
  check_dtype(off, op, "frame_offsets", {DType::kInt64});
  check_rank(off, op, "frame_offsets", 1);
  check_contiguous(off, op, "frame_offsets");
  const int64_t n = off.size(0);
  if (n < 1) failf(op, ": frame_offsets must have T + 1 >= 1 elements (it starts with 0), got ", off.describe());
  const int64_t* o = off.ptr<int64_t>();
  if (o[0] != 0) failf(op, ": frame_offsets[0] must be 0, got ", o[0]);
  for (int64_t t = 0; t + 1 < n; ++t)
    if (o[t + 1] < o[t])
      failf(op, ": frame_offsets must be non-decreasing, got frame_offsets[", t, "] = ", o[t], " > frame_offsets[",
            t + 1, "] = ", o[t + 1]);
  if (o[n - 1] != N)
    failf(op, ": frame_offsets[-1] must equal the number of features (", N, "), got ", o[n - 1]);
  return n - 1;
}

void check_cpu_input(const TensorView& t, const char* op, const char* name, DType dt) {
  check_device_supported(t, op, name);
  if (t.device != Device::kCPU) failf(op, ": ", name, " must be on cpu (the video kernels run on the CPU), got ", t.describe());
  check_dtype(t, op, name, {dt});
}

void check_cpu_output(const TensorView& t, const char* op, const char* name, DType dt,
                      std::initializer_list<int64_t> shape) {
  check_cpu_input(t, op, name, dt);
  check_output(t, op, name, dt, shape);
}

// descriptors uint8[N, nb] with nb a positive multiple of 8.
void check_descriptors(const TensorView& d, const char* op) {
  check_cpu_input(d, op, "descriptors", DType::kUInt8);
  check_rank(d, op, "descriptors", 2);
  check_contiguous(d, op, "descriptors");
  const int64_t nb = d.size(1);
  if (nb <= 0 || nb % 8 != 0)
    failf(op, ": descriptors must have a positive multiple of 8 bytes per row (64-bit words; 32 for 256-bit ORB), got ",
          d.describe());
}

}  // namespace

int64_t track(const TensorView& keypoints, const TensorView& descriptors, const TensorView& frame_offsets,
              const TrackParams& p, const TensorView& next, const TensorView& track_id) {
  constexpr const char* kOp = "track";
  check_cpu_input(keypoints, kOp, "keypoints", DType::kFloat32);
  check_rank(keypoints, kOp, "keypoints", 2);
  check_contiguous(keypoints, kOp, "keypoints");
  const int64_t N = keypoints.size(0);
  check_shape(keypoints, kOp, "keypoints", {N, 2});
  check_descriptors(descriptors, kOp);
  check_shape(descriptors, kOp, "descriptors", {N, -1});
  const int64_t nb = descriptors.size(1);
  const int64_t T = check_offsets(frame_offsets, kOp, N);
  if (p.max_hamming < 0 || p.max_hamming > 8 * nb + 1)
    failf(kOp, ": max_hamming must lie in [0, ", 8 * nb + 1, "] for ", 8 * nb, "-bit descriptors, got ", p.max_hamming);
  if (!(std::isfinite(p.max_distance) && p.max_distance > 0))
    failf(kOp, ": max_distance must be a finite number > 0, got ", p.max_distance);
  const float* k = keypoints.ptr<float>();
  // Any finite coordinate works with any max_distance (grid cells saturate, video_cpu.cpp).
  for (int64_t i = 0; i < 2 * N; ++i)
    if (!std::isfinite(k[i]))
      failf(kOp, ": keypoints must be finite, got keypoints[", i / 2, ", ", i % 2, "] = ", k[i]);
  check_cpu_output(next, kOp, "next", DType::kInt64, {N});
  check_cpu_output(track_id, kOp, "track", DType::kInt64, {N});
  if (N == 0) return 0;

  int64_t* nx = next.ptr<int64_t>();
  match_frames_cpu(k, descriptors.ptr<uint8_t>(), nb, frame_offsets.ptr<int64_t>(), T, p, nx);

  // Chain the matches: a feature without a predecessor starts a new track. Rows of frame t+1 come
  // after those of frame t, so one pass in row order sees every predecessor before its successor.
  int64_t* tr = track_id.ptr<int64_t>();
  for (int64_t i = 0; i < N; ++i) tr[i] = -1;
  int64_t n_tracks = 0;
  for (int64_t i = 0; i < N; ++i) {
    if (tr[i] < 0) tr[i] = n_tracks++;
    if (nx[i] >= 0) tr[nx[i]] = tr[i];
  }
  return n_tracks;
}

int64_t split_shots(const TensorView& next, const TensorView& frame_offsets, const TensorView& shot) {
  constexpr const char* kOp = "split_shots";
  check_cpu_input(next, kOp, "next", DType::kInt64);
  check_rank(next, kOp, "next", 1);
  check_contiguous(next, kOp, "next");
  const int64_t N = next.size(0);
  const int64_t T = check_offsets(frame_offsets, kOp, N);
  check_cpu_output(shot, kOp, "shot", DType::kInt64, {T});
  const int64_t* o = frame_offsets.ptr<int64_t>();
  const int64_t* nx = next.ptr<int64_t>();
  // Validate every link first (a successor lies in the following frame), then split.
  for (int64_t t = 0; t < T; ++t) {
    const int64_t lo = t + 1 < T ? o[t + 1] : 0, hi = t + 1 < T ? o[t + 2] : 0;
    for (int64_t i = o[t]; i < o[t + 1]; ++i)
      if (nx[i] != -1 && !(nx[i] >= lo && nx[i] < hi))
        failf(kOp, ": next[", i, "] = ", nx[i], " (a feature of frame ", t, ") must be -1 or a row of frame ", t + 1,
              " ([", lo, ", ", hi, "))");
  }
  if (T == 0) return 0;
  int64_t* s = shot.ptr<int64_t>();
  int64_t cur = 0;
  s[0] = 0;
  for (int64_t t = 0; t + 1 < T; ++t) {
    bool linked = false;
    for (int64_t i = o[t]; i < o[t + 1] && !linked; ++i) linked = nx[i] >= 0;
    if (!linked) ++cur;  // frames t and t+1 share no track: a cut
    s[t + 1] = cur;
  }
  return cur + 1;
}

void majority_keys(const TensorView& descriptors, const TensorView& track_id, int64_t n_tracks,
                   const TensorView& selected, const TensorView& keys) {
  constexpr const char* kOp = "majority_keys";
  check_descriptors(descriptors, kOp);
  const int64_t N = descriptors.size(0), nb = descriptors.size(1);
  check_cpu_input(track_id, kOp, "track", DType::kInt64);
  check_shape(track_id, kOp, "track", {N});
  check_contiguous(track_id, kOp, "track");
  if (n_tracks < 0) failf(kOp, ": n_tracks must be >= 0, got ", n_tracks);
  const int64_t* tr = track_id.ptr<int64_t>();
  for (int64_t i = 0; i < N; ++i)
    if (tr[i] < 0 || tr[i] >= n_tracks)
      failf(kOp, ": track[", i, "] = ", tr[i], " must lie in [0, n_tracks = ", n_tracks, ")");
  check_cpu_input(selected, kOp, "selected", DType::kInt64);
  check_rank(selected, kOp, "selected", 1);
  check_contiguous(selected, kOp, "selected");
  const int64_t K = selected.size(0);
  const int64_t* sel = selected.ptr<int64_t>();
  for (int64_t j = 0; j < K; ++j) {
    if (sel[j] < 0 || sel[j] >= n_tracks)
      failf(kOp, ": selected[", j, "] = ", sel[j], " must lie in [0, n_tracks = ", n_tracks, ")");
    if (j > 0 && sel[j] <= sel[j - 1]) failf(kOp, ": selected must be strictly increasing, got ", sel[j - 1], " then ", sel[j]);
  }
  check_cpu_output(keys, kOp, "keys", DType::kUInt8, {K, nb});
  if (K == 0) return;
  majority_keys_cpu(descriptors.ptr<uint8_t>(), nb, tr, N, n_tracks, sel, K, keys.ptr<uint8_t>());
}

}  // namespace video
}  // namespace semvis
