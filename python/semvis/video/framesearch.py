"""The geometric in-shot frame search of the key-feature index (``frame_store="tracks"``).

Key features say nothing of *where* a frame's content is, and neighbouring frames share almost
all their keys, so the paper's "linear Hamming search over the shot's frames" is close to random
over a key-feature index. The index therefore keeps, for every key, the run ``[first, last]`` of
its track and a straight path fitted to the track's keypoints (its position in the first and last
frame). A key stands for a track; the key's position in frame f is its path at f, extrapolated
beyond the track's ends (a track ends where the detector loses it, not where the scene point
leaves the shot). Every query descriptor keeps its nearest key of the shot. Frame by frame,
outwards from the verified frame, the homography query -> frame is refitted by least squares on
the matches within 3 inlier_px of the previous frame's, and the frame scores its soft inliers.
What moves on its own (actors, objects) fits only where the photo shows it.

Camera motion alone does not: the refitted homography follows the camera, so a pan, a zoom or a
static shot without actors fits every frame equally well, up to the accuracy of the key paths,
which is best in the middle of the tracks: the soft inliers alone drift towards the middle of the
shot (measured on steady pans: 13 % of photos within +-3 frames, the frame 11 off at the median).
What pins the frame is its border: the photo shows the whole frame in its bezel, so under the
photographed frame's homography the photo's keypoints stop at the frame's edges (the border's own
corners lie on them, and nothing lies beyond); any other frame's edges cut into the content or
leave bezel inside (:meth:`TrackGeometry.border`). A frame's score adds its border keypoints and
its Hamming frame score (the paper's cue) to its soft inliers.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .geometry import POS_SCALE, ShotGeometry, _ext, best_frame, dlt, err2, project

BORDER_PX = 6.0  # px at the index's width

__all__ = ["TrackGeometry", "track_scores"]


def track_scores(q: np.ndarray, codes: np.ndarray, span: np.ndarray, F: int, tau: int) -> np.ndarray:
    """float64[F]: the Hamming frame scores over key features: a frame's features are the keys
    of the tracks alive in it (``span`` int[n, 2]: first/last frame of each key's track, within
    the shot); sum over query descriptors of max(0, tau - d) for the nearest alive key."""
    scores = np.zeros(F, np.float64)
    if codes.shape[0] == 0:
        return scores
    D = _ext().hamming_distances(q, codes)
    W = np.maximum(tau - D, 0)
    rows, cols = W.any(1), W.any(0)
    W = W[rows][:, cols]
    sp = span[cols]
    for f in range(F):
        alive = (sp[:, 0] <= f) & (sp[:, 1] >= f)
        if alive.any():
            scores[f] = W[:, alive].max(1).sum()
    return scores


class TrackGeometry(ShotGeometry):
    """Verification and frame search over a shot's key features and their straight paths (see
    the module docstring)."""

    def __init__(self, cfg, view, q, qkp):
        super().__init__(cfg, view, q, qkp)
        tau = self.tau
        span, pos = view.col("span"), view.col("pos")
        if view.codes.shape[0]:
            D = np.asarray(_ext().hamming_distances(q, view.codes))
            qi, ki = np.nonzero(D < tau)
            d = D[qi, ki]
        else:
            qi = ki = d = np.zeros(0, np.int64)
        span = span[ki].astype(np.int64)
        f0, f1 = span[:, 0], span[:, 1]
        pos = pos[ki].astype(np.float32) / POS_SCALE
        p0, p1 = pos[:, :2], pos[:, 2:]
        order = np.lexsort((d, qi))  # by query descriptor, nearest first
        qi, d, f0, f1, p0, p1 = qi[order], d[order].astype(np.float64), f0[order], f1[order], p0[order], p1[order]
        # all candidate matches: how many keys of each frame's tracks the query matches (seed)
        self.d, self.f0, self.f1 = d, f0, f1
        # the nearest key of every query descriptor, moving along its track's straight path
        first = np.flatnonzero(np.r_[True, qi[1:] != qi[:-1]]) if qi.size else qi
        self.fsrc, self.fd = self.qkp[qi[first]], d[first]
        self.fp0, self.ff0 = p0[first], f0[first]
        self.shift = view.frame_col("frame_shift").astype(np.float32) / POS_SCALE
        allpos = view.col("pos").astype(np.float32) / POS_SCALE
        # the frame's extent, roughly (the keys' farthest positions and ORB's margin)
        self.extent = (allpos.reshape(-1, 2).max(0) + 40.0) if len(allpos) else np.array([1e4, 1e4])
        self.fv = (p1[first] - self.fp0) / np.maximum(f1[first] - self.ff0, 1)[:, None].astype(np.float32)

    def counts(self) -> np.ndarray:
        if self.d.size < 8:
            return np.zeros(0)
        F = self.F
        w = self.tau - self.d
        cnt = np.zeros(F + 1)
        np.add.at(cnt, self.f0, w)
        np.add.at(cnt, self.f1 + 1, -w)
        return np.cumsum(cnt[:F])

    def at(self, f: int) -> np.ndarray:
        """float32[m, 2]: the position in frame f of every query descriptor's nearest key (its
        straight path, plus the frame's shift: a handheld camera's shake)."""
        return np.ascontiguousarray(self.fp0 + (f - self.ff0)[:, None] * self.fv + self.shift[f], np.float32)

    def pairs(self, f: int):
        return self.fsrc, self.at(f), self.fd

    def _follow(self, src, dst, d, H):
        """(homography, soft inliers) of a frame from the previous frame's homography: a least-squares
        refit on the matches within 3 inlier_px of it; RANSAC when fewer than 8 remain."""
        e2 = err2(src, dst, H)
        m = e2 < 9.0 * self.px2
        if m.sum() < 8:
            sc, H2 = self.ransac(src, dst, d)
            return (H2 if H2 is not None else H), sc
        H2 = dlt(src[m], dst[m])
        if self.plausible(H2):
            H = H2
            e2 = err2(src, dst, H)
        return H, float(self._soft(e2).sum())

    def frame(self, seed: Tuple[float, int, Optional[np.ndarray]]) -> int:
        score, f_seed, H_seed = seed
        if score <= 0 or H_seed is None:  # nothing verified: the Hamming frame search
            sc = track_scores(self.q, self.view.codes, self.view.col("span"), self.F, self.tau)
            return best_frame(sc)
        return self.search(f_seed, H_seed)[0]

    def search(self, f_seed: int, H_seed: np.ndarray) -> Tuple[int, np.ndarray]:
        """(frame within the shot, scores of all its frames), see the module docstring."""
        src, d = self.fsrc, self.fd
        # the verified homography is coarse (verify_px): tighten it on the seed frame first
        dst = self.at(f_seed)
        for r in (self.verify_px / 2, self.verify_px / 8, 3.0 * np.sqrt(self.px2)):
            m = err2(src, dst, H_seed) < r * r
            if m.sum() < 8:
                break
            H2 = dlt(src[m], dst[m])
            if H2 is None or not self.plausible(H2):
                break
            H_seed = H2
        score = np.full(self.F, -np.inf)
        border = np.zeros(self.F)
        hs = track_scores(self.q, self.view.codes, self.view.col("span"), self.F, self.tau) / max(self.tau, 1)
        Hs = {}

        def sweep(start, lo, hi, stride, H0):
            for step in (stride, -stride):
                H, f = H0, (start if step > 0 else start - stride)
                while lo <= f <= hi:
                    H, score[f] = self._follow(src, self.at(f), d, H)
                    border[f] = self.border(H)
                    Hs[f] = H
                    f += step
        # long shots: every stride-th frame first (at most ~48 fits), then every frame around the best
        stride = max(1, self.F // 48)
        sweep(f_seed, 0, self.F - 1, stride, H_seed)
        if stride > 1:
            fb = best_frame(self._combine(score, border, hs))
            sweep(fb, max(fb - stride + 1, 0), min(fb + stride - 1, self.F - 1), 1, Hs[fb])
        return best_frame(self._combine(score, border, hs)), score

    def border(self, H: np.ndarray) -> float:
        """How sharply the photo's content stops at frame f's left and top edges under H (query
        -> frame f): keypoints of the photo mapped just inside each edge (within BORDER_PX) minus
        those mapped just outside. The photo shows the whole frame in its bezel: at the
        photographed frame its content (and the border's own corners) lies inside the edges and
        nothing outside; moving the camera either cuts into the content (keypoints on both sides)
        or leaves the bezel inside (none)."""
        p = project(self.qkp, H) + 0.5  # OpenCV keypoints: pixel centres at integers
        e = BORDER_PX
        out = 0.0
        for c in (0, 1):
            u, v = p[:, c], p[:, 1 - c]
            along = (v > -e) & (v < self.extent[1 - c])
            out += float(((u >= -1.0) & (u < e) & along).sum() - ((u < -1.0) & (u >= -1.0 - e) & along).sum())
        return out

    @staticmethod
    def _combine(score: np.ndarray, border: np.ndarray, hs: np.ndarray) -> np.ndarray:
        """A frame's evidence, in query keypoints: its soft inliers, twice its border keypoints
        (the only absolute cue under camera motion; weights measured with
        benchmarks/video_camera_motion.py) and its Hamming frame score divided by tau (the alive
        keys the photo matches: what the paper's frame search uses)."""
        return np.where(np.isfinite(score), score, 0.0) + 2.0 * np.maximum(border, 0.0) + hs
