"""Geometric verification of one shot, and the geometric in-shot frame search over key paths.

Both work on a :class:`~semvis.video.store.ShotView` (one shot's items) and the query's
keypoints and descriptors. A candidate match pairs a query descriptor with an item at Hamming
distance < ``match_threshold``. Verification fits a homography query -> frame by RANSAC in the (up
to) two frames with the most candidate matches; its score is the soft inlier count
sum(1 - (e / verify_px)^2) over matches with reprojection error e < verify_px, each query
descriptor taking its nearest key (positioned on the key's path, see :class:`TrackGeometry`) or
its nearest feature of that frame (:class:`FrameGeometry`). Mirrored, collapsed or
horizon-crossing fits are rejected: they collect chance inliers otherwise.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .config import VideoIndexConfig
from .store import ShotView

__all__ = ["ShotGeometry", "FrameGeometry", "POS_SCALE", "dlt", "err2", "project", "best_frame", "table_scores"]

POS_SCALE = 4.0  # keypoint positions are stored as int16 in 1/4 px


def _ext():
    import semvis_ext

    return semvis_ext


def _cv2():
    try:
        import cv2
    except ImportError as e:  # pragma: no cover
        raise ImportError('semvis.video needs OpenCV: pip install "semvis[video]"') from e
    return cv2


def dlt(src: np.ndarray, dst: np.ndarray) -> Optional[np.ndarray]:
    """Least-squares homography src -> dst: the normalised DLT (Hartley & Zisserman, Alg. 4.2)."""
    def normaliser(p):
        c = p.mean(0)
        sc = np.sqrt(2.0) / max(float(np.sqrt(((p - c) ** 2).sum(1)).mean()), 1e-9)
        return np.array([[sc, 0.0, -sc * c[0]], [0.0, sc, -sc * c[1]], [0.0, 0.0, 1.0]])

    src, dst = src.astype(np.float64), dst.astype(np.float64)
    Ts, Td = normaliser(src), normaliser(dst)
    a = src @ Ts[:2, :2].T + Ts[:2, 2]
    b = dst @ Td[:2, :2].T + Td[:2, 2]
    A = np.zeros((2 * len(a), 9))
    A[0::2, 0:2], A[0::2, 2] = a, 1.0
    A[0::2, 6:8], A[0::2, 8] = -b[:, :1] * a, -b[:, 0]
    A[1::2, 3:5], A[1::2, 5] = a, 1.0
    A[1::2, 6:8], A[1::2, 8] = -b[:, 1:] * a, -b[:, 1]
    _, _, vt = np.linalg.svd(A.T @ A)
    H = np.linalg.inv(Td) @ vt[-1].reshape(3, 3) @ Ts
    return H / H[2, 2] if abs(H[2, 2]) > 1e-12 else None


def project(src: np.ndarray, H: np.ndarray) -> np.ndarray:
    """float32[n, 2]: H applied to the points src."""
    P = np.hstack([src, np.ones((len(src), 1))]) @ H.T
    z = np.where(np.abs(P[:, 2:3]) < 1e-12, 1e-12, P[:, 2:3])
    return (P[:, :2] / z).astype(np.float32)


def err2(src: np.ndarray, dst: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Squared reprojection error |H(src) - dst|^2 of every match."""
    return ((project(src, H) - dst) ** 2).sum(1)


def best_frame(scores: np.ndarray) -> int:
    """Index of the best score; ties (frames with the same alive keys): the middle of the first
    run of best frames (the middle frame when no frame scores)."""
    best = scores.max()
    at = int(np.argmax(scores))
    end = at
    while end + 1 < len(scores) and scores[end + 1] == best:
        end += 1
    return (at + end) // 2


class ShotGeometry:
    """Verification of one shot (see the module docstring). Subclasses give the candidate-match
    count of every frame (:meth:`counts`), a frame's matches (:meth:`pairs`) and the frame of a
    verified or unverified shot (:meth:`frame`)."""

    def __init__(self, cfg: VideoIndexConfig, view: ShotView, q: np.ndarray, qkp: np.ndarray):
        self.view, self.F, self.q = view, view.F, q
        self.qkp = np.ascontiguousarray(qkp, np.float32)
        self.px2 = cfg.inlier_px ** 2
        self.verify_px = cfg.verify_px
        self.tau = cfg.match_threshold

    def counts(self) -> np.ndarray:
        raise NotImplementedError

    def pairs(self, f: int):
        """(query points, positions in frame f, Hamming distances) of frame f's matches, or None."""
        raise NotImplementedError

    def frame(self, seed: Tuple[float, int, Optional[np.ndarray]]) -> int:
        """The best frame (within the shot) given :meth:`seed`'s result."""
        raise NotImplementedError

    def _soft(self, e2: np.ndarray) -> np.ndarray:
        return np.where(e2 < self.px2, 1.0 - e2 / self.px2, 0.0)

    def plausible(self, H) -> bool:
        """A photo of a screen maps onto the frame by a proper homography: no mirror, no collapse
        (area ratio in [1/50, 50], anisotropy <= 4) and no horizon across the query's keypoints.
        Degenerate fits (everything sent to one spot) otherwise collect chance inliers."""
        if H is None or not np.all(np.isfinite(H)) or abs(H[2, 2]) < 1e-12:
            return False
        H = H / H[2, 2]
        A = H[:2, :2] - np.outer(H[:2, 2], H[2, :2])  # the affine part at the origin
        sv = np.linalg.svd(A, compute_uv=False)
        det = np.linalg.det(A)
        if not (0.02 < det < 50.0) or sv[0] > 4.0 * sv[1]:
            return False
        w = self.qkp @ H[2, :2] + 1.0
        return bool(w.min() > 0.2)

    def ransac(self, src, dst, d, px: Optional[float] = None):
        """(soft inliers within ``px`` (default inlier_px), homography) by RANSAC (at 2 px) on the
        matches at distance < 48."""
        good = d < 48
        if good.sum() < 8:  # too few good matches to verify anything
            return 0.0, None
        cv2 = _cv2()
        px = np.sqrt(self.px2) if px is None else float(px)
        H, _ = cv2.findHomography(src[good], dst[good], cv2.RANSAC, 2.0 * px, maxIters=300, confidence=0.995)
        if not self.plausible(H):
            return 0.0, None
        e2 = err2(src, dst, H) * (self.px2 / px ** 2)  # soft inliers at radius px
        return float(self._soft(e2).sum()), H

    def seed(self) -> Tuple[float, int, Optional[np.ndarray]]:
        """Verification: RANSAC in the (up to) two frames with the most candidate matches, far
        apart; returns (best score, its frame, its homography query -> that frame); score 0:
        nothing verified."""
        F = self.F
        cnt = self.counts()
        if cnt.size == 0 or cnt.max() <= 0:
            return 0.0, 0, None
        fa = int(np.argmax(cnt))
        frames = [fa]
        far = np.abs(np.arange(F) - fa) > F // 4
        if far.any():
            fb = int(np.flatnonzero(far)[np.argmax(cnt[far])])
            if cnt[fb] > 0.5 * cnt[fa]:
                frames.append(fb)
        best = (0.0, fa, None)
        for f in frames:
            pr = self.pairs(f)
            if pr is None:
                continue
            sc, H = self.ransac(*pr, px=self.verify_px)
            if sc > best[0]:
                best = (sc, f, H)
        return best


def table_scores(q: np.ndarray, off: np.ndarray, codes: np.ndarray, tau: int) -> np.ndarray:
    """float64[F]: per frame of a frame table (``off`` int64[F + 1] into ``codes``), the sum over
    query descriptors of max(0, tau - d), d = distance to the descriptor's nearest feature of that
    frame (the paper's linear Hamming search over a shot's frames)."""
    F = len(off) - 1
    scores = np.zeros(F, np.float64)
    f = 0
    while f < F:  # chunks of frames with at most ~8k features: bounded memory at any shot length
        o0 = int(off[f])
        f2 = f + 1
        while f2 < F and off[f2 + 1] - o0 <= 8192:
            f2 += 1
        o1 = int(off[f2])
        if o1 > o0:
            D = _ext().hamming_distances(q, codes[o0:o1])
            sizes = np.diff(off[f:f2 + 1])
            nz = np.flatnonzero(sizes > 0)
            mins = np.minimum.reduceat(D, (off[f + nz] - o0).astype(np.intp), axis=1)
            scores[f + nz] = np.maximum(tau - mins, 0).sum(0)
        f = f2
    return scores


class FrameGeometry(ShotGeometry):
    """Verification over frame features (all features, key frames, or a track index's per-frame
    sketch): the Hamming frame scores pick the frames, matches are searched only in those; the
    frame is the best Hamming score's."""

    def __init__(self, cfg, view, q, qkp, offsets: str, codes: str, pos: str):
        super().__init__(cfg, view, q, qkp)
        self.foff, rows = view.table(offsets)
        self.codes, self.pos = rows[codes], rows[pos]
        self.hscores = table_scores(q, self.foff, self.codes, self.tau)

    def counts(self):
        return self.hscores

    def pairs(self, f: int):
        """Each query descriptor with its nearest feature of frame f (at distance < tau)."""
        o0, o1 = int(self.foff[f]), int(self.foff[f + 1])
        if o1 == o0:
            return None
        D = np.asarray(_ext().hamming_distances(self.q, self.codes[o0:o1]))
        j = D.argmin(1)
        d = D[np.arange(len(D)), j].astype(np.float64)
        ok = d < self.tau
        dst = self.pos[o0:o1][j[ok]].astype(np.float32) / POS_SCALE
        return self.qkp[ok], np.ascontiguousarray(dst), d[ok]

    def frame(self, seed) -> int:
        return best_frame(self.hscores)
