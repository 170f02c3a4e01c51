// Temporal aggregation of binary local features for image-to-video search
// (spec/seeds-003-004.md B.3.3-B.3.5, kernels K16-K18).
//
// A video's features are given frame by frame in one concatenated array (CSR layout):
//   keypoints float32[N, 2]   (x, y) in pixels of the frame they were detected in
//   descriptors uint8[N, nb]  binary descriptors, nb bytes (a multiple of 8; 32 = 256-bit ORB/BRIEF)
//   frame_offsets int64[T+1]  the features of frame t are rows frame_offsets[t] .. frame_offsets[t+1]
//
// track (K16): between frames t and t+1, feature a (frame t) and b (frame t+1) are matched iff
//   b is a's best candidate in frame t+1 and a is b's best candidate in frame t (mutual / cross-check),
//   where the candidates of a feature are the features of the other frame with
//   Hamming distance < max_hamming AND Euclidean keypoint distance < max_distance (both strict),
//   and "best" = lowest Hamming distance, ties to the lowest feature index.
//   Each feature thus has at most one successor and one predecessor; chaining them gives tracks.
//   The spatial radius is searched with a grid of max_distance-sized cells (3 x 3 cells per feature),
//   so a frame pair costs O(n log n + matches in the neighbourhood), not O(n_t * n_{t+1}).
// split_shots (K17): a shot boundary lies between frames t and t+1 when no feature of frame t has a
//   successor (the two frames share no track).
// majority_keys (K18): one key per selected track, bit b = 1 iff more than half of the track's
//   descriptors have bit b set (a tie gives 0).
#pragma once

#include <cstdint>

#include "common/tensor.h"

namespace semvis {
namespace video {

struct TrackParams {
  int64_t max_hamming = 20;     // strict: a candidate needs Hamming distance < max_hamming
  double max_distance = 100.0;  // strict: keypoint distance < max_distance (pixels)
};

// Host entries: validate every argument, then run (CPU only: see video_cpu.cpp for why).
//   keypoints float32[N, 2], descriptors uint8[N, nb], frame_offsets int64[T+1] (0 = first, non-decreasing,
//   last = N), next int64[N] (written: index of the successor in frame t+1, or -1),
//   track int64[N] (written: track id, numbered 0.. in order of each track's first feature).
// Returns the number of tracks. Extra memory: O(features of the largest frame) per thread, plus N int64.
int64_t track(const TensorView& keypoints, const TensorView& descriptors, const TensorView& frame_offsets,
              const TrackParams& p, const TensorView& next, const TensorView& track);

//   next int64[N] from track (each value -1 or a row of the following frame), frame_offsets int64[T+1],
//   shot int64[T] (written: shot id of each frame, 0..S-1 in frame order). Returns S (0 when T = 0).
int64_t split_shots(const TensorView& next, const TensorView& frame_offsets, const TensorView& shot);

//   descriptors uint8[N, nb], track int64[N] with values in [0, n_tracks), selected int64[K] strictly
//   increasing track ids, keys uint8[K, nb] (written: the bit-majority of each selected track).
// Extra memory: N + K + 1 int64 (a counting sort of the selected tracks' features) + n_tracks int64.
void majority_keys(const TensorView& descriptors, const TensorView& track, int64_t n_tracks,
                   const TensorView& selected, const TensorView& keys);

// Backend implementations (arguments already validated).
void match_frames_cpu(const float* kps, const uint8_t* desc, int64_t nbytes, const int64_t* offsets, int64_t T,
                      const TrackParams& p, int64_t* next);
void majority_keys_cpu(const uint8_t* desc, int64_t nbytes, const int64_t* track, int64_t N, int64_t n_tracks,
                       const int64_t* selected, int64_t K, uint8_t* keys);

}  // namespace video
}  // namespace semvis
