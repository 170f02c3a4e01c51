"""Image-to-video search with temporal aggregation of binary features (spec B.3, Table 5.1).

Indexing (per video): ORB/BRIEF features of every (sampled) frame -> bidirectional tracking ->
shots (a cut where consecutive frames share no track) -> one bit-majority key feature per track
of >= 8 frames -> a binary kd-tree over all key features, each tagged with its shot.
Query: ORB features of the photo -> kd-tree search per descriptor (FIFO backtracking, B = 50)
-> each nearest key votes for its shot -> the most-voted shots -> the frame inside the shot.

Geometric verification (``verify=5``, the default; ``verify=0`` is the paper's procedure as
published): the 5 most-voted shots are re-ranked by a RANSAC homography query -> frame (soft
inlier count within ``verify_px`` = 64 px: coarse, because a key's position in a given frame is an
extrapolation; mirrored, collapsed or horizon-crossing fits are rejected, they collect chance
inliers otherwise). Votes alone confuse shots of repetitive texture (bricks, gravel, star fields)
whose descriptors match anywhere; geometry does not.

Frame search. Key features say nothing of *where* a frame's content is, and neighbouring frames
share almost all their keys, so the paper's "linear Hamming search over the shot's frames" is
close to random over a key-feature index (measured: 0.17-0.30 within +-2 frames on the synthetic
corpus). The index therefore keeps, for every key, the run ``[first, last]`` of its track (two
int32) and a straight path fitted to the track's keypoints (its position in the first and last
frame, four int16 in 1/4 px): 16 bytes per key. The frame search (see :class:`_ShotGeometry`)
follows the verified homography through the shot with every key extrapolated along its path: the
background fits everywhere, what moves on its own fits only in the photographed frame. Memory per
key: 32 B (descriptor) + 16 B (frame store) + the kd-tree's copy of the descriptor and its id (see
:meth:`VideoIndex.memory`); per shot 20 B; per sampled frame 4 B (its frame number).

Baselines of the paper (``method=``): ``"all"`` indexes all features of all frames (Bi-KdTree, and
Bi-BruteForce with ``search(..., exact=True)``); ``"keyframes"`` indexes the features of key frames
only (Bi-KeyFrame-KdTree; a new key frame starts when fewer than ``keyframe_overlap`` of the last
key frame's stable tracks are still alive, a track-based form of Sun et al.'s distance curve). They
keep each feature's keypoint (int16, 4 B) for verification, and their frame search is the paper's:
every query descriptor's nearest feature in each frame, scored sum(max(0, tau - d)) per frame.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import zipfile
from typing import Dict, List, NamedTuple, Optional, Tuple, Union

import numpy as np

from .features import FrameFeatures, OrbExtractor
from .io import FrameSource, VideoReadError

__all__ = ["VideoIndex", "VideoHit", "METHODS"]

METHODS = ("aggregation", "all", "keyframes")
_FORMAT = "semvis-video-index"
_VERSION = 2
_POS_SCALE = 4.0  # keypoint positions are stored as int16 in 1/4 px


class VideoHit(NamedTuple):
    """One search result: ``frame`` numbered from 0 in decoding order; ``shot`` from 0 within the
    video (as the index segmented it); ``score`` in [0, 1]: with verification, the verified soft
    inliers divided by the query's descriptors (0 for a shot that did not verify: it comes after
    the verified ones, in vote order); with ``verify=0``, the shot's votes divided by the most it
    could get (every query descriptor at distance 0 for soft votes, or voting for it)."""

    video: str
    shot: int
    frame: int
    score: float


def _ext():
    import semvis_ext

    return semvis_ext


def _kdtree_cls():
    ext = _ext()
    try:
        return ext.BinaryKDTree
    except AttributeError as e:
        raise ImportError("semvis.video needs semvis_ext.BinaryKDTree (the binary kd-tree op); this build of "
                          "semvis_ext does not have it") from e


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).view(np.uint8).reshape(-1).data).hexdigest()


def _pack_pos(xy: np.ndarray) -> np.ndarray:
    """Keypoint positions (float, px) -> int16 in 1/4 px (frames up to 8191 px)."""
    return np.clip(np.rint(np.asarray(xy, np.float64) * _POS_SCALE), -32768, 32767).astype(np.int16)


def _concat_csr(parts: List[np.ndarray]) -> np.ndarray:
    """Concatenates per-video CSR offsets into one (each part shifted by the items before it)."""
    out = [np.zeros(1, np.int64)]
    base = 0
    for o in parts:
        out.append(o[1:] + base)
        base += int(o[-1])
    return np.concatenate(out)


class _Video:
    """What add() commits for one video (all frame indices local to the video's sampled frames)."""

    __slots__ = ("video_id", "frame_numbers", "shot_start", "codes", "span", "item_offsets", "item_shot",
                 "sketch", "sketch_offsets", "pos", "sketch_pos")

    def __init__(self, video_id, frame_numbers, shot_start, codes, span, item_offsets, item_shot, sketch=None,
                 sketch_offsets=None, pos=None, sketch_pos=None):
        self.video_id = video_id
        self.frame_numbers = frame_numbers  # int32[T]: decoding-order number of each sampled frame
        self.shot_start = shot_start        # int64[S + 1]: first sampled frame of each shot, then T
        self.codes = codes                  # uint8[n, nb]: key features (aggregation) or frame features
        self.span = span                    # aggregation: int32[n, 2] first/last frame of each key's track
        self.item_offsets = item_offsets    # baselines: int64[T + 1], items of frame t (CSR)
        self.item_shot = item_shot          # int64[n]: shot of each item (non-decreasing)
        self.sketch = sketch                # frame_store="sketch": uint8[m, nb] per-frame descriptors
        self.sketch_offsets = sketch_offsets  # int64[T + 1] (CSR)
        self.pos = pos                      # int16 keypoint positions in 1/4 px: aggregation [n, 4] (a straight
        #                                     path fitted to the track: x, y in its first and last frame),
        #                                     baselines [n, 2]
        self.sketch_pos = sketch_pos        # int16[m, 2]


class _ShotGeometry:
    """The candidate matches between a query and one shot, with their positions: geometric
    verification of the shot, and the geometric in-shot frame search of the key-feature index.

    A candidate match pairs a query descriptor with an item at Hamming distance < ``match_threshold``.
    Items are key features (aggregation, ``frame_store="tracks"``) or frame features (the other
    stores). Verification fits a homography query -> frame by RANSAC in the (up to) two frames with
    the most candidate matches; its score is the soft inlier count sum(1 - (e / verify_px)^2) over
    matches with reprojection error e < verify_px, each query descriptor taking its nearest key
    (positioned on the key's path, see below) or its nearest feature of that frame.

    Frame search over key features (:meth:`frame`): a key stands for a track, which the index keeps
    as a straight path (a least-squares fit of its positions, stored at its first and last frame).
    Every query descriptor keeps its nearest key of the shot, and the key's position in frame f is
    its path at f, extrapolated beyond the track's ends (a track ends where the detector loses it,
    not where the scene point leaves the shot). Frame by frame, outwards from the verified frame,
    the homography query -> frame is refitted by least squares on the matches within 3 inlier_px
    of the previous frame's, and the frame scores its soft inliers. The background fits in every
    frame; what moves on its own (actors, objects) fits only where the photo shows it, so the score
    peaks at the photographed frame.
    """

    def __init__(self, index: "VideoIndex", q: np.ndarray, qkp: np.ndarray, s: int):
        ext = _ext()
        self.qkp = np.ascontiguousarray(qkp, np.float32)
        self.px2 = index.inlier_px ** 2
        self.verify_px = index.verify_px
        a = int(index._shot_first[s])
        self.F = F = int(index._shot_last[s]) - a + 1
        tau = index.match_threshold
        self.tracks = index.method == "aggregation" and index.frame_store == "tracks"
        if self.tracks:
            lo, hi = int(index._shot_offsets[s]), int(index._shot_offsets[s + 1])
            if hi > lo:
                D = np.asarray(ext.hamming_distances(q, index._codes[lo:hi]))
                qi, ki = np.nonzero(D < tau)
                d = D[qi, ki]
            else:
                qi = ki = d = np.zeros(0, np.int64)
            span = index._span[lo:hi][ki].astype(np.int64) - a
            f0, f1 = span[:, 0], span[:, 1]
            pos = index._pos[lo:hi][ki].astype(np.float32) / _POS_SCALE
            p0, p1 = pos[:, :2], pos[:, 2:]
            order = np.lexsort((d, qi))  # by query descriptor, nearest first
            qi, d, f0, f1, p0, p1 = qi[order], d[order].astype(np.float64), f0[order], f1[order], p0[order], p1[order]
            # all candidate matches: how many keys of each frame's tracks the query matches (seed)
            self.d, self.f0, self.f1 = d, f0, f1
            # the nearest key of every query descriptor, moving along its track's straight path
            first = np.flatnonzero(np.r_[True, qi[1:] != qi[:-1]]) if qi.size else qi
            self.fsrc, self.fd = self.qkp[qi[first]], d[first]
            self.fp0, self.ff0 = p0[first], f0[first]
            self.fv = (p1[first] - self.fp0) / np.maximum(f1[first] - self.ff0, 1)[:, None].astype(np.float32)
        else:  # frame features: the Hamming frame scores pick the frames; matches only in those
            sk = index.method == "aggregation"
            self.codes, off, self.pos_all = ((index._sketch, index._sketch_offsets, index._sketch_pos) if sk
                                             else (index._codes, index._item_offsets, index._pos))
            g0 = int(index._frame_base[int(index._shot_video[s])]) + a
            self.foff = off[g0:g0 + F + 1]
            self.q = q
            self.hscores = index.frame_scores(q, s)
        self.tau = tau

    # ---------------------------------------------------------------- verification
    def fixed_pairs(self, f: int):
        """Key features: (query points, positions in frame f, distances) of every query
        descriptor's nearest key, extrapolated along its path beyond the track's ends (a track ends
        where the detector loses it, not where the scene point leaves the shot)."""
        dst = np.ascontiguousarray(self.fp0 + (f - self.ff0)[:, None] * self.fv, np.float32)
        return self.fsrc, dst, self.fd

    def frame_pairs(self, f: int):
        """Frame features: (query points, frame points, distances) of frame f, each query
        descriptor with its nearest feature of that frame (None for a frame without features)."""
        o0, o1 = int(self.foff[f]), int(self.foff[f + 1])
        if o1 == o0:
            return None
        D = np.asarray(_ext().hamming_distances(self.q, self.codes[o0:o1]))
        j = D.argmin(1)
        d = D[np.arange(len(D)), j].astype(np.float64)
        ok = d < self.tau
        dst = self.pos_all[o0:o1][j[ok]].astype(np.float32) / _POS_SCALE
        return self.qkp[ok], np.ascontiguousarray(dst), d[ok]

    def _soft(self, e2: np.ndarray) -> np.ndarray:
        return np.where(e2 < self.px2, 1.0 - e2 / self.px2, 0.0)

    def _plausible(self, H) -> bool:
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

    def _ransac(self, src, dst, d, px: Optional[float] = None):
        """(soft inliers within ``px`` (default inlier_px), homography) by RANSAC (at 2 px) on the
        matches at distance < 48."""
        good = d < 48
        if good.sum() < 8:  # too few good matches to verify anything
            return 0.0, None
        cv2 = _cv2()
        px = np.sqrt(self.px2) if px is None else float(px)
        H, _ = cv2.findHomography(src[good], dst[good], cv2.RANSAC, 2.0 * px, maxIters=300, confidence=0.995)
        if not self._plausible(H):
            return 0.0, None
        e2 = _err2(src, dst, H) * (self.px2 / px ** 2)  # soft inliers at radius px
        return float(self._soft(e2).sum()), H

    def seed(self) -> Tuple[float, int, Optional[np.ndarray]]:
        """Verification: RANSAC in the (up to) two frames with the most candidate matches, far
        apart; returns (best score, its frame, its homography query -> that frame)."""
        F = self.F
        if self.tracks:
            if self.d.size < 8:
                return 0.0, 0, None
            w = self.tau - self.d
            cnt = np.zeros(F + 1)
            np.add.at(cnt, self.f0, w)
            np.add.at(cnt, self.f1 + 1, -w)
            cnt = np.cumsum(cnt[:F])
        else:
            cnt = self.hscores
            if cnt.max() <= 0:
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
            pr = self.fixed_pairs(f) if self.tracks else self.frame_pairs(f)
            if pr is None:
                continue
            sc, H = self._ransac(*pr, px=self.verify_px)
            if sc > best[0]:
                best = (sc, f, H)
        return best

    # ---------------------------------------------------------------- frame search (key features)
    def _follow(self, src, dst, d, H):
        """(homography, soft inliers) of a frame from the previous frame's homography: a least-squares
        refit on the matches within 3 inlier_px of it; RANSAC when fewer than 8 remain."""
        e2 = _err2(src, dst, H)
        m = e2 < 9.0 * self.px2
        if m.sum() < 8:
            sc, H2 = self._ransac(src, dst, d)
            return (H2 if H2 is not None else H), sc
        H2 = _dlt(src[m], dst[m])
        if self._plausible(H2):
            H = H2
            e2 = _err2(src, dst, H)
        return H, float(self._soft(e2).sum())

    def frame(self, f_seed: int, H_seed: np.ndarray) -> Tuple[int, np.ndarray]:
        """(frame within the shot, scores of all its frames), see the class docstring; ties go to
        the middle of the first run of best frames."""
        src, d, p0, f0, v = self.fsrc, self.fd, self.fp0, self.ff0, self.fv
        # the verified homography is coarse (verify_px): tighten it on the seed frame first
        dst = np.ascontiguousarray(p0 + (f_seed - f0)[:, None] * v, np.float32)
        for r in (self.verify_px / 2, self.verify_px / 8, 3.0 * np.sqrt(self.px2)):
            m = _err2(src, dst, H_seed) < r * r
            if m.sum() < 8:
                break
            H2 = _dlt(src[m], dst[m])
            if H2 is None or not self._plausible(H2):
                break
            H_seed = H2
        score = np.full(self.F, -np.inf)
        Hs = {}

        def sweep(start, lo, hi, stride, H0):
            for step in (stride, -stride):
                H, f = H0, (start if step > 0 else start - stride)
                while lo <= f <= hi:
                    dst = np.ascontiguousarray(p0 + (f - f0)[:, None] * v, np.float32)
                    H, score[f] = self._follow(src, dst, d, H)
                    Hs[f] = H
                    f += step
        # long shots: every stride-th frame first (at most ~48 fits), then every frame around the best
        stride = max(1, self.F // 48)
        sweep(f_seed, 0, self.F - 1, stride, H_seed)
        if stride > 1:
            fb = int(np.argmax(score))
            sweep(fb, max(fb - stride + 1, 0), min(fb + stride - 1, self.F - 1), 1, Hs[fb])
        score[~np.isfinite(score)] = 0.0
        best = score.max()
        at = int(np.argmax(score))
        end = at
        while end + 1 < self.F and score[end + 1] == best:
            end += 1
        return (at + end) // 2, score


def _dlt(src: np.ndarray, dst: np.ndarray) -> Optional[np.ndarray]:
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


def _err2(src: np.ndarray, dst: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Squared reprojection error |H(src) - dst|^2 of every match."""
    P = np.hstack([src, np.ones((len(src), 1))]) @ H.T
    z = np.where(np.abs(P[:, 2:3]) < 1e-12, 1e-12, P[:, 2:3])
    return (((P[:, :2] / z).astype(np.float32) - dst) ** 2).sum(1)


def _linear_paths(xy: np.ndarray, t: np.ndarray, track: np.ndarray, n_tracks: int, first: np.ndarray,
                  last: np.ndarray) -> np.ndarray:
    """float64[n_tracks, 4]: the least-squares straight path x(t) = x_mid + v (t - t_mid) of every
    track (positions ``xy`` of its rows at frames ``t``), evaluated at its first and last frame."""
    n = np.maximum(np.bincount(track, minlength=n_tracks), 1).astype(np.float64)
    t = t.astype(np.float64)
    tm = np.bincount(track, weights=t, minlength=n_tracks) / n
    dt = t - tm[track]
    stt = np.bincount(track, weights=dt * dt, minlength=n_tracks)
    out = np.empty((n_tracks, 4), np.float64)
    for c in (0, 1):
        xm = np.bincount(track, weights=xy[:, c], minlength=n_tracks) / n
        v = np.bincount(track, weights=dt * xy[:, c], minlength=n_tracks) / np.maximum(stt, 1e-9)
        v[stt <= 0] = 0.0
        out[:, c] = xm + v * (first - tm)
        out[:, 2 + c] = xm + v * (last - tm)
    return out


def _cv2():
    try:
        import cv2
    except ImportError as e:  # pragma: no cover
        raise ImportError('semvis.video needs OpenCV: pip install "semvis[video]"') from e
    return cv2


class VideoIndex:
    """Index of videos for image-to-video search.

    Args:
        method (str): ``"aggregation"`` (key features of tracks; the paper's method), ``"all"``
            (all features of all frames) or ``"keyframes"`` (features of key frames).
        n_features (int): ORB features per frame and per query (at most).
        width (int): frames and queries are resized to this width (720 in the paper).
        max_hamming (int), max_distance (float): tracking thresholds (strict; 20 and 100 px).
        min_track_len (int): tracks with at least this many frames give a key feature (8: "longer than 7").
        leaf_size (int): kd-tree leaf size SL (100).
        backtracks (int): leaves visited per query descriptor, B (50).
        order (str): kd-tree backtracking order, ``"fifo"`` (the paper) or ``"best_bin"``.
        step (int): index one frame in ``step`` (frame numbers stay those of the decoding order).
        match_threshold (int): tau, the Hamming distance beyond which a match counts for nothing:
            soft votes and frame scores weigh a match at distance d by max(0, tau - d).
        vote (str): ``"soft"`` (default): each query descriptor votes for the shot of its nearest
            key with weight max(0, tau - d), so that the many far, chance neighbours of
            background/bezel descriptors weigh little; ``"count"``: one vote each (the paper).
        vote_max_distance (int, optional): shot voting: ignore nearest neighbours at this distance
            or more (None: every query descriptor votes, as in the paper).
        keyframe_overlap (float): ``"keyframes"`` only (see the module docstring).
        frame_store (str): ``"aggregation"`` only: ``"tracks"`` (default: each key's run of frames and
            straight path, 16 B per key) or ``"sketch"`` (the ``frame_features`` strongest
            descriptors of every frame and their keypoints, 36 B each; frames by Hamming score).
        frame_features (int): ``frame_store="sketch"`` only.
        verify (int): geometric verification (see the module docstring) of the ``verify`` most-voted
            shots, which are re-ranked by their verified matches; their frames are found by the
            geometric in-shot search. 0: the paper's procedure (votes only; frames by Hamming score).
        verify_px (float): verification tolerance (px, at ``width``): a shot scores its soft inliers
            sum(1 - (e / verify_px)^2) over matches at reprojection error e < verify_px, the
            homography fitted by RANSAC at 2 verify_px. Coarse on purpose: a key's position in a
            given frame is its track's straight path extrapolated there, accurate to tens of pixels
            over a long shot; what verification rejects is matches with no common geometry
            (repetitive textures, a piece of a photograph that appears elsewhere). Shot R@1 on a
            synthetic corpus of 40 videos (160 queries): 0.91 at 3 px, 0.95 at 12, 0.975 at 30,
            0.988 at 48, 0.994 at 64 and 75 (votes only: 0.963; all features: 1.000).
        inlier_px (float): the frame search's inlier error (px, at ``width``).
        progress (bool): tqdm progress bars while indexing.
        threads (int, optional): ORB extraction threads.
    """

    def __init__(self, method: str = "aggregation", n_features: int = 500, width: int = 720, max_hamming: int = 20,
                 max_distance: float = 100.0, min_track_len: int = 8, leaf_size: int = 100, backtracks: int = 50,
                 order: str = "fifo", step: int = 1, match_threshold: int = 64, vote: str = "soft",
                 vote_max_distance: Optional[int] = None, keyframe_overlap: float = 0.5,
                 frame_store: str = "tracks", frame_features: int = 32, verify: int = 5, verify_px: float = 64.0,
                 inlier_px: float = 3.0, progress: bool = True, threads: Optional[int] = None):
        if method not in METHODS:
            raise ValueError(f"VideoIndex: unknown method {method!r}; expected one of {METHODS}")
        if vote not in ("soft", "count"):
            raise ValueError(f"VideoIndex: vote must be 'soft' or 'count', got {vote!r}")
        if frame_store not in ("tracks", "sketch"):
            raise ValueError(f"VideoIndex: frame_store must be 'tracks' or 'sketch', got {frame_store!r}")
        if order not in ("fifo", "best_bin"):
            raise ValueError(f"VideoIndex: order must be 'fifo' or 'best_bin', got {order!r}")
        for name, v, lo in (("max_hamming", max_hamming, 0), ("min_track_len", min_track_len, 1),
                            ("leaf_size", leaf_size, 1), ("backtracks", backtracks, 1), ("step", step, 1),
                            ("match_threshold", match_threshold, 0), ("frame_features", frame_features, 1),
                            ("verify", verify, 0)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"VideoIndex: {name} must be an int >= {lo}, got {v!r}")
        for name, v in (("inlier_px", inlier_px), ("verify_px", verify_px)):
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not (0.0 < float(v) < 1e4):
                raise ValueError(f"VideoIndex: {name} must be a positive number of pixels, got {v!r}")
        if not (0.0 < float(keyframe_overlap) < 1.0):
            raise ValueError(f"VideoIndex: keyframe_overlap must lie in (0, 1), got {keyframe_overlap!r}")
        self.method = method
        self.extractor = OrbExtractor(n_features=n_features, width=width, threads=threads)
        self.max_hamming = int(max_hamming)
        self.max_distance = float(max_distance)
        self.min_track_len = int(min_track_len)
        self.leaf_size = int(leaf_size)
        self.backtracks = int(backtracks)
        self.order = order
        self.step = int(step)
        self.match_threshold = int(match_threshold)
        self.vote = vote
        self.vote_max_distance = vote_max_distance
        self.keyframe_overlap = float(keyframe_overlap)
        self.frame_store = frame_store
        self.frame_features = int(frame_features)
        self.verify = int(verify)
        self.inlier_px = float(inlier_px)
        self.verify_px = float(verify_px)
        self.progress = progress
        self.batch_size = 64  # frames extracted per batch
        self._videos: List[_Video] = []
        self._ids: Dict[str, int] = {}
        self._built = False
        self._tree = None
        self.stats: Dict[str, float] = {"frames": 0, "features": 0, "extract_s": 0.0, "aggregate_s": 0.0}

    # ------------------------------------------------------------------ configuration
    def config(self) -> dict:
        return {"method": self.method, "n_features": self.extractor.n_features, "width": self.extractor.width,
                "max_hamming": self.max_hamming, "max_distance": self.max_distance,
                "min_track_len": self.min_track_len, "leaf_size": self.leaf_size, "backtracks": self.backtracks,
                "order": self.order, "step": self.step, "match_threshold": self.match_threshold,
                "vote": self.vote, "vote_max_distance": self.vote_max_distance, "keyframe_overlap": self.keyframe_overlap,
                "frame_store": self.frame_store, "frame_features": self.frame_features, "verify": self.verify,
                "verify_px": self.verify_px, "inlier_px": self.inlier_px}

    @property
    def video_ids(self) -> List[str]:
        return [v.video_id for v in self._videos]

    def __len__(self) -> int:
        return len(self._videos)

    # ------------------------------------------------------------------ indexing
    def add(self, video_or_frames, video_id: str, step: Optional[int] = None) -> dict:
        """Indexes one video: a file path (mp4/avi/mkv...), a folder of frames, or frames (uint8
        array [T, H, W, 3] BGR, or a list of images).

        The video is processed completely before anything is committed: if it cannot be read
        (``VideoReadError``, a ValueError naming the file), the index keeps exactly what it had.
        Call :meth:`build` (or just :meth:`search`) afterwards.

        Returns:
            dict: ``frames`` (sampled), ``shots``, ``features`` (extracted), ``items`` (indexed).
        """
        if not isinstance(video_id, str) or not video_id:
            raise TypeError(f"add: video_id must be a non-empty str, got {video_id!r}")
        if video_id in self._ids:
            raise ValueError(f"add: video_id {video_id!r} is already in the index")
        step = self.step if step is None else step
        src = FrameSource(video_or_frames, step=step)
        numbers: List[int] = []
        parts: List[Tuple[np.ndarray, np.ndarray]] = []
        batch: List[np.ndarray] = []
        t0 = time.perf_counter()
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover
            tqdm = None
        bar = tqdm(total=len(src) or None, desc=f"index {video_id}", unit="frame", disable=not self.progress,
                   leave=False) if tqdm else None
        try:
            for i, frame in src:
                numbers.append(i)
                batch.append(frame)
                if len(batch) == self.batch_size:
                    parts += self._extract(batch, src.name, numbers[-len(batch)])
                    if bar is not None:
                        bar.update(len(batch))
                    batch = []
            if batch:
                parts += self._extract(batch, src.name, numbers[-len(batch)])
                if bar is not None:
                    bar.update(len(batch))
        finally:
            if bar is not None:
                bar.close()
        if not numbers:
            raise VideoReadError(f"{src.name}: no frames")
        t1 = time.perf_counter()
        ff = FrameFeatures.concat(parts)
        rec = self._aggregate(video_id, ff, np.asarray(numbers, dtype=np.int64))
        t2 = time.perf_counter()
        self._videos.append(rec)
        self._ids[video_id] = len(self._videos) - 1
        self._built = False
        self.stats["frames"] += len(numbers)
        self.stats["features"] += int(ff.descriptors.shape[0])
        self.stats["extract_s"] += t1 - t0
        self.stats["aggregate_s"] += t2 - t1
        return {"frames": len(numbers), "shots": len(rec.shot_start) - 1, "features": int(ff.descriptors.shape[0]),
                "items": int(rec.codes.shape[0])}

    def add_features(self, features: FrameFeatures, video_id: str, frame_numbers: Optional[np.ndarray] = None) -> dict:
        """Indexes precomputed features of one video (e.g. to build several methods from one extraction)."""
        if video_id in self._ids:
            raise ValueError(f"add_features: video_id {video_id!r} is already in the index")
        T = features.n_frames
        nums = np.arange(T, dtype=np.int64) if frame_numbers is None else np.asarray(frame_numbers, np.int64)
        if nums.shape != (T,):
            raise ValueError(f"add_features: frame_numbers must have shape ({T},), got {nums.shape}")
        t0 = time.perf_counter()
        rec = self._aggregate(video_id, features, nums)
        self._videos.append(rec)
        self._ids[video_id] = len(self._videos) - 1
        self._built = False
        self.stats["frames"] += T
        self.stats["features"] += int(features.descriptors.shape[0])
        self.stats["aggregate_s"] += time.perf_counter() - t0
        return {"frames": T, "shots": len(rec.shot_start) - 1, "features": int(features.descriptors.shape[0]),
                "items": int(rec.codes.shape[0])}

    def _extract(self, frames, name, first_number):
        try:
            return self.extractor.extract_many(frames)
        except (TypeError, ValueError) as e:
            raise VideoReadError(f"{name}: frame {first_number}..: {e}") from e
        except Exception as e:  # cv2.error on a malformed frame
            raise VideoReadError(f"{name}: feature extraction failed near frame {first_number}: {e}") from e

    def _aggregate(self, video_id: str, ff: FrameFeatures, numbers: np.ndarray) -> _Video:
        ext = _ext()
        kp, desc, off = ff.keypoints, ff.descriptors, ff.frame_offsets
        T, N = len(off) - 1, desc.shape[0]
        tr = ext.track(kp, desc, off, max_hamming=self.max_hamming, max_distance=self.max_distance)
        shot = ext.split_shots(tr.next, off)
        S = int(shot[-1]) + 1 if T else 0
        shot_start = np.searchsorted(shot, np.arange(S + 1)).astype(np.int64)
        frame_of_row = np.repeat(np.arange(T, dtype=np.int64), np.diff(off))
        has_pred = np.zeros(N, dtype=bool)
        has_pred[tr.next[tr.next >= 0]] = True
        first_row = np.flatnonzero(~has_pred)  # tracks are numbered in order of their first row
        first = frame_of_row[first_row]
        length = np.bincount(tr.track, minlength=tr.n_tracks)
        last = first + length - 1
        sketch = sketch_off = span = item_off = sketch_pos = None
        kp = np.asarray(kp, np.float32).reshape(-1, 2)
        if self.method == "aggregation":
            keys, kt = ext.majority_keys(desc, tr.track, min_len=self.min_track_len, n_tracks=tr.n_tracks)
            codes = keys
            span = np.stack([first[kt], last[kt]], axis=1).astype(np.int32)
            ends = np.flatnonzero(tr.next < 0)
            last_row = np.empty(tr.n_tracks, np.int64)
            last_row[tr.track[ends]] = ends
            kt = np.asarray(kt, np.int64)
            pos = _pack_pos(_linear_paths(kp, frame_of_row, np.asarray(tr.track, np.int64), tr.n_tracks, first,
                                          last)[kt])
            item_shot = shot[first[kt]]
            if self.frame_store == "sketch":
                # the frame_features strongest features (detector response) of every frame
                resp = ff.responses if ff.responses is not None else -np.arange(N, dtype=np.float32)
                order = np.lexsort((-resp, frame_of_row))
                rank = np.arange(N) - off[frame_of_row[order]]
                rows = np.sort(order[rank < self.frame_features])
                sketch = np.ascontiguousarray(desc[rows])
                sketch_pos = _pack_pos(kp[rows])
                sketch_off = np.zeros(T + 1, np.int64)
                np.cumsum(np.bincount(frame_of_row[rows], minlength=T), out=sketch_off[1:])
        else:
            if self.method == "all":
                rows = np.arange(N)
            else:
                kf = self._keyframes(shot_start, first, last, length)
                rows = np.flatnonzero(np.isin(frame_of_row, kf))
            codes = np.ascontiguousarray(desc[rows])
            pos = _pack_pos(kp[rows])
            item_off = np.zeros(T + 1, np.int64)
            np.cumsum(np.bincount(frame_of_row[rows], minlength=T), out=item_off[1:])
            item_shot = shot[frame_of_row[rows]]
        return _Video(video_id, numbers.astype(np.int32), shot_start, codes, span, item_off,
                      item_shot.astype(np.int64), sketch, sketch_off, pos, sketch_pos)

    def _keyframes(self, shot_start, first, last, length) -> np.ndarray:
        stable = length >= self.min_track_len
        f, l = first[stable], last[stable]  # sorted by first
        out = []
        for s in range(len(shot_start) - 1):
            a, b = int(shot_start[s]), int(shot_start[s + 1]) - 1
            k = a
            while k <= b:
                out.append(k)
                alive = l[(f <= k) & (l >= k)]
                if alive.size == 0:
                    k += 1
                    continue
                alive.sort()
                # alive(t) = #(last >= t); the next key frame is the first t whose alive(t) < overlap * n
                need = self.keyframe_overlap * alive.size
                t = k + 1
                while t <= b and alive.size - np.searchsorted(alive, t, "left") >= need:
                    t += 1
                k = t
        return np.asarray(out, dtype=np.int64)

    def build(self) -> "VideoIndex":
        """Concatenates the videos and builds the kd-tree over all items (key features)."""
        vids = self._videos
        nb = vids[0].codes.shape[1] if vids else 32
        agg = self.method == "aggregation"
        self._codes = np.ascontiguousarray(np.concatenate([v.codes for v in vids])) if vids else np.zeros((0, nb), np.uint8)
        self._frame_base = np.zeros(len(vids) + 1, np.int64)
        np.cumsum([len(v.frame_numbers) for v in vids], out=self._frame_base[1:])
        self._span = (np.concatenate([v.span for v in vids]) if vids else np.zeros((0, 2), np.int32)) if agg else None
        self._item_offsets = None if agg else _concat_csr([v.item_offsets for v in vids])
        sk = agg and self.frame_store == "sketch"
        self._sketch = (np.ascontiguousarray(np.concatenate([v.sketch for v in vids])) if vids
                        else np.zeros((0, nb), np.uint8)) if sk else None
        self._sketch_offsets = _concat_csr([v.sketch_offsets for v in vids]) if sk else None
        self._sketch_pos = (np.concatenate([v.sketch_pos for v in vids]) if vids
                            else np.zeros((0, 2), np.int16)) if sk else None
        self._pos = (np.concatenate([v.pos for v in vids]) if vids
                     else np.zeros((0, 4 if agg else 2), np.int16))
        counts, shot_video, shot_local, shot_first, shot_last = [], [], [], [], []
        for vi, v in enumerate(vids):
            S = len(v.shot_start) - 1
            counts.append(np.bincount(v.item_shot, minlength=S))
            shot_video.append(np.full(S, vi, np.int32))
            shot_local.append(np.arange(S, dtype=np.int32))
            shot_first.append(v.shot_start[:-1].astype(np.int32))
            shot_last.append((v.shot_start[1:] - 1).astype(np.int32))
        cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)  # noqa: E731
        cnt = cat(counts, np.int64)
        self._shot_offsets = np.zeros(len(cnt) + 1, np.int64)
        np.cumsum(cnt, out=self._shot_offsets[1:])
        self._shot_video = cat(shot_video, np.int32)
        self._shot_local = cat(shot_local, np.int32)
        self._shot_first = cat(shot_first, np.int32)
        self._shot_last = cat(shot_last, np.int32)
        k = 0
        for v in vids:  # the videos now share the concatenated arrays (no second copy)
            n = v.codes.shape[0]
            v.codes = self._codes[k:k + n]
            v.pos = self._pos[k:k + n]
            if agg:
                v.span = self._span[k:k + n]
            k += n
        self._tree = None
        if self._codes.shape[0] > 0:
            self._tree = _kdtree_cls()(self._codes, ids=np.arange(self._codes.shape[0], dtype=np.int64),
                                       leaf_size=self.leaf_size)
        self._built = True
        return self

    # ------------------------------------------------------------------ search
    def _ensure_built(self):
        if not self._built:
            self.build()

    def search(self, image, top: int = 5, backtracks: Optional[int] = None, exact: bool = False,
               features: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> List[VideoHit]:
        """The ``top`` best shots for a query image, each with its best frame.

        Args:
            image (ndarray uint8 [H, W(, 3)] BGR, or a path): the query photo.
            top (int): number of shots returned (fewer if fewer shots got votes).
            backtracks (int, optional): leaves visited per query descriptor (default: the index's B).
            exact (bool): exact nearest neighbours by brute-force Hamming search instead of the kd-tree.
            features: precomputed ``(keypoints, descriptors)`` of the query (then image is ignored).

        Returns:
            list of VideoHit ``(video, shot, frame, score)``, best first.
        """
        if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
            raise ValueError(f"search: top must be an int >= 1, got {top!r}")
        B = self.backtracks if backtracks is None else backtracks
        if isinstance(B, bool) or not isinstance(B, (int, np.integer)) or B < 1:
            raise ValueError(f"search: backtracks must be an int >= 1, got {B!r}")
        if features is None:
            if isinstance(image, (str, os.PathLike)):
                from .io import read_image

                image = read_image(os.fspath(image))
            qkp, q = self.extractor(image)
        else:
            if not isinstance(features, (tuple, list)) or len(features) != 2:
                raise TypeError("search: features must be a (keypoints float32[n, 2], descriptors uint8[n, 32]) pair")
            qkp, q = np.asarray(features[0], np.float32).reshape(-1, 2), features[1]
            if len(qkp) != len(q):
                raise ValueError(f"search: features has {len(qkp)} keypoints but {len(q)} descriptors")
        self._ensure_built()
        if q.shape[0] == 0 or self._codes.shape[0] == 0:
            return []
        ext = _ext()
        if exact:
            D, I = ext.hamming_topk(q, self._codes, 1)
        else:
            D, I = self._tree.search(q, k=1, backtracks=int(B), order=self.order)
        d, i = np.asarray(D)[:, 0], np.asarray(I)[:, 0]
        ok = i >= 0
        if self.vote_max_distance is not None:
            ok &= d < self.vote_max_distance
        S = len(self._shot_local)
        shots = np.searchsorted(self._shot_offsets, i[ok], side="right") - 1
        if self.vote == "soft":
            w = np.maximum(self.match_threshold - d[ok], 0).astype(np.float64)
            votes = np.bincount(shots, weights=w, minlength=S) / (len(q) * max(self.match_threshold, 1))
        else:
            votes = np.bincount(shots, minlength=S) / len(q)
        order = np.lexsort((np.arange(S), -votes))  # most votes first, ties to the lowest shot
        order = order[votes[order] > 0]
        if self.verify == 0:
            return [self._hit(int(s), self._refine(q, int(s)), float(votes[s])) for s in order[:top]]
        # geometric verification of the most-voted shots: re-ranked by their verified matches
        cand = order[:max(self.verify, 1)]
        geos = [_ShotGeometry(self, q, qkp, int(s)) for s in cand]
        seeds = [g.seed() for g in geos]
        rank = sorted(range(len(cand)), key=lambda j: (-seeds[j][0], j))
        hits = []
        for j in rank[:top]:
            s, g = int(cand[j]), geos[j]
            score, f0, H0 = seeds[j]  # score 0: nothing verified
            if score > 0 and g.tracks:
                f = int(self._shot_first[s]) + g.frame(f0, H0)[0]
            else:  # frame features, or nothing verified: the Hamming frame search
                f = self._refine(q, s, None if g.tracks else g.hscores)
            hits.append(self._hit(s, f, score / len(q)))
        # shots beyond the verified ones follow them (in vote order), only when more are asked for
        for s in order[len(cand):len(cand) + top - len(hits)]:
            hits.append(self._hit(int(s), self._refine(q, int(s)), 0.0))
        return hits

    def _hit(self, s: int, f: int, score: float) -> VideoHit:
        v = self._videos[int(self._shot_video[s])]
        return VideoHit(v.video_id, int(self._shot_local[s]), int(v.frame_numbers[f]), float(score))

    def _refine(self, q: np.ndarray, s: int, scores: Optional[np.ndarray] = None) -> int:
        """Sampled-frame index (within its video) of the best frame of global shot s: linear
        Hamming search of the query's descriptors over the shot's frames."""
        a, b = int(self._shot_first[s]), int(self._shot_last[s])
        scores = self.frame_scores(q, s) if scores is None else scores
        best = scores.max()
        if best <= 0:
            return (a + b) // 2
        # ties (frames with the same alive keys): the middle of the first run of best frames
        at = int(np.flatnonzero(scores == best)[0])
        end = at
        while end + 1 < len(scores) and scores[end + 1] == best:
            end += 1
        return a + (at + end) // 2

    def frame_scores(self, q: np.ndarray, s: int) -> np.ndarray:
        """float64[frames of shot s]: sum over query descriptors of max(0, match_threshold - d),
        d = distance to the descriptor's nearest feature of that frame."""
        ext = _ext()
        tau = self.match_threshold
        v = int(self._shot_video[s])
        a, b = int(self._shot_first[s]), int(self._shot_last[s])
        F = b - a + 1
        scores = np.zeros(F, np.float64)
        if self.method == "aggregation" and self.frame_store == "tracks":
            # a frame's features are the keys of the tracks alive in it
            lo, hi = int(self._shot_offsets[s]), int(self._shot_offsets[s + 1])
            if hi == lo:
                return scores
            D = ext.hamming_distances(q, self._codes[lo:hi])
            W = np.maximum(tau - D, 0)
            rows, cols = W.any(1), W.any(0)
            W = W[rows][:, cols]
            sp = self._span[lo:hi][cols] - a
            for f in range(F):
                alive = (sp[:, 0] <= f) & (sp[:, 1] >= f)
                if alive.any():
                    scores[f] = W[:, alive].max(1).sum()
            return scores
        codes, off = ((self._sketch, self._sketch_offsets) if self.method == "aggregation"
                      else (self._codes, self._item_offsets))
        g0 = int(self._frame_base[v]) + a
        f = 0
        while f < F:  # chunks of frames with at most ~8k features: bounded memory at any shot length
            o0 = int(off[g0 + f])
            f2 = f + 1
            while f2 < F and off[g0 + f2 + 1] - o0 <= 8192:
                f2 += 1
            o1 = int(off[g0 + f2])
            if o1 > o0:
                D = ext.hamming_distances(q, codes[o0:o1])
                sizes = np.diff(off[g0 + f:g0 + f2 + 1])
                nz = np.flatnonzero(sizes > 0)
                mins = np.minimum.reduceat(D, (off[g0 + f + nz] - o0).astype(np.intp), axis=1)
                scores[f + nz] = np.maximum(tau - mins, 0).sum(0)
            f = f2
        return scores

    # ------------------------------------------------------------------ memory
    def _frame_store_arrays(self) -> Dict[str, np.ndarray]:
        out = {}
        for k in ("_span", "_pos", "_item_offsets", "_sketch", "_sketch_offsets", "_sketch_pos"):
            a = getattr(self, k)
            if a is not None:
                out[k[1:]] = a
        return out

    def memory(self) -> Dict[str, int]:
        """Bytes held by the index.

        Returns:
            dict: ``descriptors`` (the indexed key features or features: the paper's "Mem", 32 B
            each), ``tree`` (the kd-tree: its own copy of the codes, their int64 ids and its
            nodes), ``frame_store`` (track runs, per-frame item offsets or per-frame descriptors),
            ``tables`` (shot table and frame numbers), ``search_index`` (descriptors + tree +
            tables: what shot retrieval needs) and ``total``.
        """
        self._ensure_built()
        tables = sum(a.nbytes for a in (self._shot_offsets, self._shot_video, self._shot_local, self._shot_first,
                                        self._shot_last, self._frame_base)) + sum(v.frame_numbers.nbytes
                                                                                  for v in self._videos)
        out = {"descriptors": int(self._codes.nbytes), "tree": self._tree_nbytes(),
               "frame_store": int(sum(a.nbytes for a in self._frame_store_arrays().values())),
               "tables": int(tables)}
        out["search_index"] = out["descriptors"] + out["tree"] + out["tables"]
        out["total"] = out["search_index"] + out["frame_store"]
        return out

    def _tree_nbytes(self) -> int:
        return 0 if self._tree is None else int(self._tree.memory_bytes())

    # ------------------------------------------------------------------ persistence
    def save(self, path: Union[str, os.PathLike]) -> None:
        """Writes the whole index (config, videos, shot table, frame store, kd-tree) to one file
        (a zip of arrays with a JSON header holding a SHA-256 of every array). Atomic: the file
        is written next to ``path`` and renamed."""
        self._ensure_built()
        arrays = {"codes": self._codes, "shot_offsets": self._shot_offsets, "shot_video": self._shot_video,
                  "shot_local": self._shot_local, "shot_first": self._shot_first, "shot_last": self._shot_last,
                  "frame_base": self._frame_base}
        arrays.update(self._frame_store_arrays())
        arrays["frame_numbers"] = (np.concatenate([v.frame_numbers for v in self._videos])
                                   if self._videos else np.zeros(0, np.int32))
        so = np.zeros(len(self._videos) + 1, np.int64)
        np.cumsum([len(v.shot_start) - 1 for v in self._videos], out=so[1:])
        arrays["video_shot_offsets"] = so
        if self._tree is not None:
            with tempfile.TemporaryDirectory() as d:
                p = os.path.join(d, "tree.bin")
                self._tree.save(p)
                with open(p, "rb") as f:
                    arrays["tree"] = np.frombuffer(f.read(), dtype=np.uint8)
        meta = {"format": _FORMAT, "version": _VERSION, "config": self.config(), "videos": self.video_ids,
                "stats": self.stats, "arrays": {k: {"dtype": a.dtype.str, "shape": list(a.shape), "sha256": _sha(a)}
                                                for k, a in arrays.items()}}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        path = os.fspath(path)
        tmp = path + ".tmp"
        try:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    @classmethod
    def load(cls, path: Union[str, os.PathLike], progress: bool = True) -> "VideoIndex":
        """Reads an index written by :meth:`save`; a truncated, corrupt or foreign file raises
        ValueError naming what is wrong (FileNotFoundError if there is no file)."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"VideoIndex.load: {path}: no such file")

        def bad(why):
            return ValueError(f"VideoIndex.load: {path}: {why}")

        try:
            with np.load(path, allow_pickle=False) as z:
                if not isinstance(z, np.lib.npyio.NpzFile) or "meta" not in z.files:
                    raise bad("not a semvis video index (no header)")
                arrays = {k: z[k] for k in z.files}
        except (zipfile.BadZipFile, OSError, EOFError, KeyError) as e:
            raise bad(f"not a semvis video index, or a truncated/corrupt one ({type(e).__name__}: {e})") from e
        except ValueError as e:
            if str(e).startswith("VideoIndex.load"):
                raise
            raise bad(f"not a semvis video index, or corrupt array data ({e})") from e
        try:
            meta = json.loads(arrays.pop("meta").tobytes().decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise bad("corrupt header") from e
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise bad("not a semvis video index (wrong format tag)")
        if meta.get("version") != _VERSION:
            raise bad(f"unsupported version {meta.get('version')!r} (this semvis reads version {_VERSION})")
        spec = meta.get("arrays", {})
        missing = set(spec) - set(arrays)
        if missing:
            raise bad(f"missing arrays {sorted(missing)}")
        for k, a in arrays.items():
            sp = spec.get(k)
            if sp is None:
                raise bad(f"unexpected array {k!r}")
            if a.dtype.str != sp["dtype"] or list(a.shape) != sp["shape"] or _sha(a) != sp["sha256"]:
                raise bad(f"array {k!r} does not match its checksum (corrupt file)")
        try:
            idx = cls(progress=progress, **meta["config"])
        except (TypeError, ValueError) as e:
            raise bad(f"invalid configuration in the header ({e})") from e
        agg = idx.method == "aggregation"
        need = {"codes", "pos", "shot_offsets", "shot_video", "shot_local", "shot_first", "shot_last", "frame_base",
                "frame_numbers", "video_shot_offsets"}
        need |= ({"span"} | ({"sketch", "sketch_offsets", "sketch_pos"} if idx.frame_store == "sketch" else set())) \
            if agg else {"item_offsets"}
        if need - set(arrays):
            raise bad(f"missing arrays {sorted(need - set(arrays))}")
        vids = meta["videos"]
        V, K = len(vids), arrays["codes"].shape[0]
        fb, so, off = arrays["frame_base"], arrays["video_shot_offsets"], arrays["shot_offsets"]
        S = len(arrays["shot_local"])
        Tn = len(arrays["frame_numbers"])
        ok = (fb.shape == (V + 1,) and so.shape == (V + 1,) and off.shape == (S + 1,) and fb[0] == 0
              and fb[-1] == Tn and so[0] == 0 and so[-1] == S and off[0] == 0 and off[-1] == K
              and bool(np.all(np.diff(off) >= 0)) and bool(np.all(np.diff(fb) >= 0)))
        ok = ok and all(len(arrays[k]) == S for k in ("shot_video", "shot_local", "shot_first", "shot_last"))
        ok = ok and arrays["pos"].shape == (K, 4 if agg else 2) and arrays["pos"].dtype == np.int16
        if agg:
            ok = ok and arrays["span"].shape == (K, 2)
            if idx.frame_store == "sketch":
                so_ = arrays["sketch_offsets"]
                ok = ok and so_.shape == (Tn + 1,) and so_[-1] == len(arrays["sketch"])
                ok = ok and arrays["sketch_pos"].shape == (len(arrays["sketch"]), 2)
        else:
            io_ = arrays["item_offsets"]
            ok = ok and io_.shape == (Tn + 1,) and io_[-1] == K
        if not ok:
            raise bad("inconsistent tables (offsets do not add up)")
        codes = arrays["codes"]
        for vi, vid in enumerate(vids):
            s0, s1 = int(so[vi]), int(so[vi + 1])
            k0, k1 = int(off[s0]), int(off[s1])
            f0, f1 = int(fb[vi]), int(fb[vi + 1])
            first, last = arrays["shot_first"][s0:s1], arrays["shot_last"][s0:s1]
            shot_start = np.append(first.astype(np.int64), f1 - f0)
            if s1 > s0 and (first[0] != 0 or last[-1] != f1 - f0 - 1):
                raise bad(f"inconsistent shot table for video {vid!r}")
            item_shot = np.repeat(np.arange(s1 - s0, dtype=np.int64), np.diff(off[s0:s1 + 1]))
            rec = _Video(vid, arrays["frame_numbers"][f0:f1], shot_start, codes[k0:k1],
                         arrays["span"][k0:k1] if agg else None,
                         None if agg else arrays["item_offsets"][f0:f1 + 1] - arrays["item_offsets"][f0],
                         item_shot, pos=arrays["pos"][k0:k1])
            if agg and idx.frame_store == "sketch":
                sko = arrays["sketch_offsets"]
                rec.sketch = arrays["sketch"][sko[f0]:sko[f1]]
                rec.sketch_pos = arrays["sketch_pos"][sko[f0]:sko[f1]]
                rec.sketch_offsets = sko[f0:f1 + 1] - sko[f0]
            idx._videos.append(rec)
            idx._ids[vid] = vi
        idx.stats.update(meta.get("stats", {}))
        idx._codes, idx._frame_base = codes, fb
        idx._span = arrays["span"] if agg else None
        idx._item_offsets = None if agg else arrays["item_offsets"]
        idx._sketch = arrays.get("sketch") if agg and idx.frame_store == "sketch" else None
        idx._sketch_offsets = arrays.get("sketch_offsets") if agg and idx.frame_store == "sketch" else None
        idx._sketch_pos = arrays.get("sketch_pos") if agg and idx.frame_store == "sketch" else None
        idx._pos = arrays["pos"]
        idx._shot_offsets, idx._shot_video, idx._shot_local = off, arrays["shot_video"], arrays["shot_local"]
        idx._shot_first, idx._shot_last = arrays["shot_first"], arrays["shot_last"]
        idx._tree = None
        if K > 0:
            if "tree" not in arrays:
                raise bad("missing kd-tree")
            with tempfile.TemporaryDirectory() as d:
                p = os.path.join(d, "tree.bin")
                arrays["tree"].tofile(p)
                try:
                    idx._tree = _kdtree_cls().load(p, mmap=False)
                except ValueError as e:
                    raise bad(f"corrupt kd-tree ({e})") from e
            if len(idx._tree) != K:
                raise bad(f"the kd-tree holds {len(idx._tree)} keys, the index {K}")
        idx._built = True
        return idx
