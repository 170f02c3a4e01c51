// Video kernels on the CPU.
//
// Tracking: one task per frame pair (parallel over pairs). The features of each frame are bucketed
// into a sorted list of max_distance-sized grid cells; a feature looks only at the 3 x 3 cells around
// its own in the other frame, so a pair costs O(n log n) plus the candidates within the radius. There
// is no CUDA path: a frame pair has a few hundred features and a handful of candidates each, so the
// work is dominated by decoding and ORB extraction, and a transfer would cost more than the matching.
//
// Majority: features of the selected tracks are grouped by a counting sort, then each key's bit
// counts are accumulated 8 bits at a time (a table spreads a byte into 8 one-byte lanes of a 64-bit
// word; lanes are flushed to 32-bit counters before they can overflow).
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "common/parallel.h"
#include "video.h"

#if defined(__x86_64__) || defined(__i386__)
#define SEMVIS_VIDEO_X86 1
#endif

namespace semvis {
namespace video {
namespace {

struct Cell {
  int64_t cx, cy;
  int64_t idx;  // row of the feature
  bool operator<(const Cell& o) const {
    if (cx != o.cx) return cx < o.cx;
    if (cy != o.cy) return cy < o.cy;
    return idx < o.idx;
  }
};

struct PairScratch {
  std::vector<Cell> cells_a, cells_b;
  std::vector<int64_t> best_ab, best_ba;
};

// floor(v / cell) saturated to [-2^62, 2^62], so that the neighbours (+-1) never overflow. Saturation
// loses no candidate: once |v / cell| passes 2^25, two distinct float32 coordinates are more than
// `cell` apart, so features within the radius have equal coordinates and land in the same cell.
inline int64_t cell_of(double v, double cell) {
  const double q = std::floor(v / cell);
  return static_cast<int64_t>(std::min(std::max(q, -0x1p62), 0x1p62));
}

inline void bucket(const float* kps, int64_t lo, int64_t hi, double cell, std::vector<Cell>& out) {
  out.resize(static_cast<size_t>(hi - lo));
  for (int64_t i = lo; i < hi; ++i) out[i - lo] = Cell{cell_of(kps[2 * i], cell), cell_of(kps[2 * i + 1], cell), i};
  std::sort(out.begin(), out.end());
}

template <bool kPopcnt>
__attribute__((always_inline)) inline int hamming(const uint8_t* a, const uint8_t* b, int64_t words) {
  int d = 0;
  for (int64_t w = 0; w < words; ++w) {
    uint64_t x, y;
    std::memcpy(&x, a + 8 * w, 8);
    std::memcpy(&y, b + 8 * w, 8);
    d += __builtin_popcountll(x ^ y);
  }
  return d;
}

// For every feature i of [lo_a, hi_a), the best candidate among the features bucketed in `cells`
// (lowest Hamming distance, ties to the lowest row; -1 when none passes both thresholds).
template <bool kPopcnt>
__attribute__((always_inline)) inline void best_candidates(const float* kps, const uint8_t* desc, int64_t nbytes,
                                                          const std::vector<Cell>& src, const std::vector<Cell>& cells,
                                                          const TrackParams& p, int64_t lo_src, int64_t* best) {
  const int64_t words = nbytes / 8;
  // max_distance^2 underflows to 0 below ~1e-162; the smallest positive double keeps "distance 0 <
  // max_distance" true, and no two distinct float32 points are that close (their d^2 is >= 1e-90).
  const double r2 = std::max(p.max_distance * p.max_distance, std::numeric_limits<double>::denorm_min());
  for (const Cell& c : src) {
    const int64_t i = c.idx;
    const double xi = kps[2 * i], yi = kps[2 * i + 1];
    int best_d = static_cast<int>(p.max_hamming);  // candidates need d < max_hamming
    int64_t best_j = -1;
    for (int64_t dx = -1; dx <= 1; ++dx) {
      const Cell first{c.cx + dx, c.cy - 1, INT64_MIN}, last{c.cx + dx, c.cy + 1, INT64_MAX};
      auto it = std::lower_bound(cells.begin(), cells.end(), first);
      const auto end = std::upper_bound(it, cells.end(), last);
      for (; it != end; ++it) {
        const int64_t j = it->idx;
        const double ex = xi - static_cast<double>(kps[2 * j]), ey = yi - static_cast<double>(kps[2 * j + 1]);
        if (!(ex * ex + ey * ey < r2)) continue;
        const int d = hamming<kPopcnt>(desc + i * nbytes, desc + j * nbytes, words);
        if (d < best_d || (d == best_d && best_j >= 0 && j < best_j)) {
          best_d = d;
          best_j = j;
        }
      }  // candidates of one cell column
    }  // dx
    best[i - lo_src] = best_j;
  }  // i
}

template <bool kPopcnt>
__attribute__((always_inline)) inline void match_pair(const float* kps, const uint8_t* desc, int64_t nbytes,
                                                     int64_t a0, int64_t a1, int64_t b0, int64_t b1,
                                                     const TrackParams& p, int64_t* next, PairScratch& s) {
  for (int64_t i = a0; i < a1; ++i) next[i] = -1;
  if (a0 == a1 || b0 == b1) return;
  bucket(kps, a0, a1, p.max_distance, s.cells_a);
  bucket(kps, b0, b1, p.max_distance, s.cells_b);
  s.best_ab.assign(static_cast<size_t>(a1 - a0), -1);
  s.best_ba.assign(static_cast<size_t>(b1 - b0), -1);
  best_candidates<kPopcnt>(kps, desc, nbytes, s.cells_a, s.cells_b, p, a0, s.best_ab.data());
  best_candidates<kPopcnt>(kps, desc, nbytes, s.cells_b, s.cells_a, p, b0, s.best_ba.data());
  for (int64_t i = a0; i < a1; ++i) {
    const int64_t j = s.best_ab[i - a0];
    if (j >= 0 && s.best_ba[j - b0] == i) next[i] = j;  // mutual best match
  }
}

template <bool kPopcnt>
__attribute__((always_inline)) inline void match_range(const float* kps, const uint8_t* desc, int64_t nbytes,
                                                      const int64_t* off, int64_t T, const TrackParams& p,
                                                      int64_t* next, int64_t t0, int64_t t1) {
  PairScratch s;
  for (int64_t t = t0; t < t1; ++t) {
    if (t + 1 < T) {
      match_pair<kPopcnt>(kps, desc, nbytes, off[t], off[t + 1], off[t + 1], off[t + 2], p, next, s);
    } else {
      for (int64_t i = off[t]; i < off[t + 1]; ++i) next[i] = -1;  // the last frame has no successor
    }
  }
}

void match_range_generic(const float* kps, const uint8_t* desc, int64_t nbytes, const int64_t* off, int64_t T,
                         const TrackParams& p, int64_t* next, int64_t t0, int64_t t1) {
  match_range<false>(kps, desc, nbytes, off, T, p, next, t0, t1);
}

#ifdef SEMVIS_VIDEO_X86
// Same code compiled with the popcnt instruction (selected at run time).
__attribute__((target("popcnt"))) void match_range_popcnt(const float* kps, const uint8_t* desc, int64_t nbytes,
                                                           const int64_t* off, int64_t T, const TrackParams& p,
                                                           int64_t* next, int64_t t0, int64_t t1) {
  match_range<true>(kps, desc, nbytes, off, T, p, next, t0, t1);
}

bool has_popcnt() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("popcnt") != 0;
  }();
  return ok;
}
#endif

// spread[v] has byte lane k = bit k of v.
struct SpreadTable {
  uint64_t v[256];
  SpreadTable() {
    for (int b = 0; b < 256; ++b) {
      uint64_t w = 0;
      for (int k = 0; k < 8; ++k) w |= static_cast<uint64_t>((b >> k) & 1) << (8 * k);
      v[b] = w;
    }
  }
};

}  // namespace

void match_frames_cpu(const float* kps, const uint8_t* desc, int64_t nbytes, const int64_t* offsets, int64_t T,
                      const TrackParams& p, int64_t* next) {
  auto fn = match_range_generic;
#ifdef SEMVIS_VIDEO_X86
  if (has_popcnt()) fn = match_range_popcnt;
#endif
  parallel_for(0, T, 4, [&](int64_t t0, int64_t t1) { fn(kps, desc, nbytes, offsets, T, p, next, t0, t1); });
}

void majority_keys_cpu(const uint8_t* desc, int64_t nbytes, const int64_t* track, int64_t N, int64_t n_tracks,
                       const int64_t* selected, int64_t K, uint8_t* keys) {
  static const SpreadTable table;
  // row_of[track] = output row or -1; then a counting sort of the selected features by row
  // (stable, so each key sees its features in row order).
  std::vector<int64_t> row_of(static_cast<size_t>(n_tracks), -1);
  for (int64_t j = 0; j < K; ++j) row_of[selected[j]] = j;
  std::vector<int64_t> start(static_cast<size_t>(K + 1), 0);
  for (int64_t i = 0; i < N; ++i) {
    const int64_t r = row_of[track[i]];
    if (r >= 0) ++start[r + 1];
  }
  for (int64_t j = 0; j < K; ++j) start[j + 1] += start[j];
  std::vector<int64_t> members(static_cast<size_t>(start[K]));
  {
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t i = 0; i < N; ++i) {
      const int64_t r = row_of[track[i]];
      if (r >= 0) members[fill[r]++] = i;
    }
  }
  parallel_for(0, K, 64, [&](int64_t k0, int64_t k1) {
    std::vector<uint64_t> lanes(static_cast<size_t>(nbytes));
    std::vector<int64_t> counts(static_cast<size_t>(nbytes * 8));
    for (int64_t k = k0; k < k1; ++k) {
      std::fill(counts.begin(), counts.end(), 0);
      std::fill(lanes.begin(), lanes.end(), 0);
      const int64_t m0 = start[k], m1 = start[k + 1];
      int pending = 0;
      auto flush = [&] {
        for (int64_t b = 0; b < nbytes; ++b) {
          for (int l = 0; l < 8; ++l) counts[8 * b + l] += (lanes[b] >> (8 * l)) & 0xff;
          lanes[b] = 0;
        }
        pending = 0;
      };
      for (int64_t m = m0; m < m1; ++m) {
        const uint8_t* d = desc + members[m] * nbytes;
        for (int64_t b = 0; b < nbytes; ++b) lanes[b] += table.v[d[b]];
        if (++pending == 255) flush();  // a lane holds at most 255
      }
      flush();
      const int64_t n = m1 - m0;
      uint8_t* out = keys + k * nbytes;
      for (int64_t b = 0; b < nbytes; ++b) {
        uint8_t v = 0;
        for (int l = 0; l < 8; ++l)
          if (2 * counts[8 * b + l] > n) v |= static_cast<uint8_t>(1u << l);  // strict majority; a tie gives 0
        out[b] = v;
      }
    }  // k
  });
}

}  // namespace video
}  // namespace semvis
