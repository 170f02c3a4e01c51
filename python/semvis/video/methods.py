"""The indexing methods: what a video's features become in the store, and how a shot is verified
and its frame found. One class per method of the paper (spec B.3, Table 5.1):

- :class:`TrackKeys` (``method="aggregation"``, ours): one bit-majority key feature per track of
  >= ``min_track_len`` frames, with its track's run of frames and straight path (``frame_store=
  "tracks"``) or, instead, a per-frame sketch of the strongest features (``frame_store="sketch"``).
- :class:`AllFeatures` (``"all"``): every feature of every frame (Bi-KdTree; Bi-BruteForce with
  ``search(..., exact=True)``), each with its keypoint.
- :class:`KeyFrames` (``"keyframes"``): the features of key frames only (Bi-KeyFrame-KdTree; a new
  key frame starts when fewer than ``keyframe_overlap`` of the last key frame's stable tracks are
  still alive, a track-based form of Sun et al.'s distance curve).
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from .config import VideoIndexConfig
from .features import FrameFeatures
from .framesearch import TrackGeometry, track_scores
from .geometry import POS_SCALE, FrameGeometry, ShotGeometry, table_scores
from .store import CODES, FRAME, ITEM, OFFSETS, ROWS, Block, Column, ShotView

__all__ = ["IndexMethod", "TrackKeys", "AllFeatures", "KeyFrames", "method_for", "linear_paths", "build_key_index",
           "key_neighbours"]


def _ext():
    import semvis_ext

    return semvis_ext


def pack_pos(xy: np.ndarray) -> np.ndarray:
    """Keypoint positions (float, px) -> int16 in 1/4 px (frames up to 8191 px)."""
    return np.clip(np.rint(np.asarray(xy, np.float64) * POS_SCALE), -32768, 32767).astype(np.int16)


def linear_paths(xy: np.ndarray, t: np.ndarray, track: np.ndarray, n_tracks: int, first: np.ndarray,
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


class Tracks:
    """A video's features after tracking and shot splitting (what every method selects from)."""

    def __init__(self, cfg: VideoIndexConfig, ff: FrameFeatures):
        ext = _ext()
        self.ff = ff
        off, N = ff.frame_offsets, ff.descriptors.shape[0]
        self.T = T = len(off) - 1
        self.tr = tr = ext.track(ff.keypoints, ff.descriptors, off, max_hamming=cfg.max_hamming,
                                 max_distance=cfg.max_distance)
        self.shot = ext.split_shots(tr.next, off)
        S = int(self.shot[-1]) + 1 if T else 0
        self.shot_start = np.searchsorted(self.shot, np.arange(S + 1)).astype(np.int64)
        self.frame_of_row = np.repeat(np.arange(T, dtype=np.int64), np.diff(off))
        has_pred = np.zeros(N, dtype=bool)
        has_pred[tr.next[tr.next >= 0]] = True
        self.first = self.frame_of_row[np.flatnonzero(~has_pred)]  # tracks are numbered by their first row
        self.length = np.bincount(tr.track, minlength=tr.n_tracks)
        self.last = self.first + self.length - 1
        self.kp = np.asarray(ff.keypoints, np.float32).reshape(-1, 2)


class IndexMethod:
    """Base: :meth:`layout` (the method's store columns), :meth:`select` (a video's items),
    :meth:`geometry` (verification and frame search of one shot) and :meth:`frame_scores` (the
    paper's Hamming frame search, used without verification)."""

    def __init__(self, cfg: VideoIndexConfig):
        self.cfg = cfg

    def layout(self) -> Dict[str, Column]:
        raise NotImplementedError

    def select(self, t: Tracks):
        """(codes uint8[n, nb], item_shot int64[n] non-decreasing, {column: array}) of a video."""
        raise NotImplementedError

    def geometry(self, view: ShotView, q: np.ndarray, qkp: np.ndarray) -> ShotGeometry:
        raise NotImplementedError

    def frame_scores(self, view: ShotView, q: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def aggregate(self, video_id: str, ff: FrameFeatures, numbers: np.ndarray) -> Block:
        """One video as a block of the store."""
        t = Tracks(self.cfg, ff)
        codes, item_shot, cols = self.select(t)
        return Block.one_video(video_id, numbers, t.shot_start, codes, item_shot.astype(np.int64), cols)


def _frame_csr(frame_of_row: np.ndarray, rows: np.ndarray, T: int) -> np.ndarray:
    off = np.zeros(T + 1, np.int64)
    np.cumsum(np.bincount(frame_of_row[rows], minlength=T), out=off[1:])
    return off


class TrackKeys(IndexMethod):
    def layout(self):
        out = {"span": Column(ITEM, "int32", 2, shot_frames=True), "pos": Column(ITEM, "int16", 4),
               "frame_shift": Column(FRAME, "int16", 2, optional=True)}
        if self.cfg.frame_store == "sketch":
            out.update(sketch=Column(ROWS, "uint8", CODES, table="sketch"),
                       sketch_offsets=Column(OFFSETS, "int64", table="sketch"),
                       sketch_pos=Column(ROWS, "int16", 2, table="sketch"))
        return out

    def select(self, t: Tracks):
        tr, ff = t.tr, t.ff
        keys, kt = _ext().majority_keys(ff.descriptors, tr.track, min_len=self.cfg.min_track_len, n_tracks=tr.n_tracks)
        kt = np.asarray(kt, np.int64)
        paths, shift = self.paths(t)
        cols = {"span": np.stack([t.first[kt], t.last[kt]], axis=1).astype(np.int32), "pos": pack_pos(paths[kt]),
                "frame_shift": pack_pos(shift)}
        if self.cfg.frame_store == "sketch":
            # the frame_features strongest features (detector response) of every frame
            N = ff.descriptors.shape[0]
            resp = ff.responses if ff.responses is not None else -np.arange(N, dtype=np.float32)
            order = np.lexsort((-resp, t.frame_of_row))
            rank = np.arange(N) - ff.frame_offsets[t.frame_of_row[order]]
            rows = np.sort(order[rank < self.cfg.frame_features])
            cols.update(sketch=np.ascontiguousarray(ff.descriptors[rows]), sketch_pos=pack_pos(t.kp[rows]),
                        sketch_offsets=_frame_csr(t.frame_of_row, rows, t.T))
        return keys, t.shot[t.first[kt]], cols

    def paths(self, t: Tracks):
        """(float64[n_tracks, 4] straight paths, float64[T, 2] frame shifts): every track's
        straight path, and every frame's shift from the paths (the median offset of the positions
        of the frame's key tracks from their paths: a handheld camera's shake, which no straight
        path follows), the paths fitted to the positions with the shift taken out."""
        track = np.asarray(t.tr.track, np.int64)
        n, f = t.tr.n_tracks, t.frame_of_row
        keyrow = (t.length >= self.cfg.min_track_len)[track]
        shift = np.zeros((t.T, 2))
        for _ in range(2):
            paths = linear_paths(t.kp - shift[f], f, track, n, t.first, t.last)
            a = ((f - t.first[track]) / np.maximum(t.last - t.first, 1)[track])[:, None]
            res = t.kp - shift[f] - ((1 - a) * paths[track, :2] + a * paths[track, 2:])
            for c in (0, 1):  # the median residual of every frame's key rows
                r, fr = res[keyrow, c], f[keyrow]
                order = np.lexsort((r, fr))
                cnt = np.bincount(fr, minlength=t.T)
                start = np.concatenate([[0], np.cumsum(cnt)[:-1]])
                ok = cnt > 0
                med = np.zeros(t.T)
                med[ok] = 0.5 * (r[order][start[ok] + (cnt[ok] - 1) // 2] + r[order][start[ok] + cnt[ok] // 2])
                shift[:, c] += med
        paths = linear_paths(t.kp - shift[f], f, track, n, t.first, t.last)
        return paths, shift

    def geometry(self, view, q, qkp):
        if self.cfg.frame_store == "tracks":
            return TrackGeometry(self.cfg, view, q, qkp)
        return FrameGeometry(self.cfg, view, q, qkp, "sketch_offsets", "sketch", "sketch_pos")

    def frame_scores(self, view, q):
        if self.cfg.frame_store == "tracks":
            return track_scores(q, view.codes, view.col("span"), view.F, self.cfg.match_threshold)
        off, rows = view.table("sketch_offsets")
        return table_scores(q, off, rows["sketch"], self.cfg.match_threshold)


class AllFeatures(IndexMethod):
    def layout(self):
        return {"pos": Column(ITEM, "int16", 2), "item_offsets": Column(OFFSETS, "int64", table="items")}

    def rows(self, t: Tracks) -> np.ndarray:
        return np.arange(t.ff.descriptors.shape[0])

    def select(self, t: Tracks):
        rows = self.rows(t)
        cols = {"pos": pack_pos(t.kp[rows]), "item_offsets": _frame_csr(t.frame_of_row, rows, t.T)}
        return np.ascontiguousarray(t.ff.descriptors[rows]), t.shot[t.frame_of_row[rows]], cols

    def geometry(self, view, q, qkp):
        return FrameGeometry(self.cfg, view, q, qkp, "item_offsets", "codes", "pos")

    def frame_scores(self, view, q):
        off, rows = view.table("item_offsets")
        return table_scores(q, off, rows["codes"], self.cfg.match_threshold)


class KeyFrames(AllFeatures):
    def rows(self, t: Tracks) -> np.ndarray:
        return np.flatnonzero(np.isin(t.frame_of_row, self.keyframes(t)))

    def keyframes(self, t: Tracks) -> np.ndarray:
        stable = t.length >= self.cfg.min_track_len
        f, l = t.first[stable], t.last[stable]  # sorted by first
        out = []
        for s in range(len(t.shot_start) - 1):
            a, b = int(t.shot_start[s]), int(t.shot_start[s + 1]) - 1
            k = a
            while k <= b:
                out.append(k)
                alive = l[(f <= k) & (l >= k)]
                if alive.size == 0:
                    k += 1
                    continue
                alive.sort()
                # alive(t) = #(last >= t); the next key frame is the first t whose alive(t) < overlap * n
                need = self.cfg.keyframe_overlap * alive.size
                u = k + 1
                while u <= b and alive.size - np.searchsorted(alive, u, "left") >= need:
                    u += 1
                k = u
        return np.asarray(out, dtype=np.int64)


def method_for(cfg: VideoIndexConfig) -> IndexMethod:
    """The method object of a configuration."""
    if cfg.method == "global":  # spatio-temporal global aggregation (semvis.video.global_method)
        from .global_method import GlobalShots

        return GlobalShots(cfg)
    return {"aggregation": TrackKeys, "all": AllFeatures, "keyframes": KeyFrames}[cfg.method](cfg)


def build_key_index(cfg: VideoIndexConfig, codes: np.ndarray):
    """The nearest-neighbour index of ``cfg.index`` over the store's codes (ids: the item rows):
    a :class:`semvis_ext.BinaryKDTree` (one tree for ``"kdtree"``, ``cfg.trees`` for
    ``"forest"``) or a :class:`semvis_ext.MultiIndexHash` (``"mih"``)."""
    ext = _ext()
    if cfg.index == "mih":
        return ext.MultiIndexHash(codes)
    return ext.BinaryKDTree(codes, ids=np.arange(codes.shape[0], dtype=np.int64), leaf_size=cfg.leaf_size,
                            trees=cfg.trees if cfg.index == "forest" else 1)


def key_neighbours(cfg: VideoIndexConfig, key_index, codes: np.ndarray, q: np.ndarray, k: int, backtracks: int,
                   exact: bool = False):
    """FAISS-style ``(D int32[nq, k], I int64[nq, k])``: the ``k`` nearest items (rows of ``codes``)
    of every query descriptor, nearest first, padded with -1: by brute force when ``exact``, else
    by ``key_index`` (:func:`build_key_index`; ``backtracks`` leaves per descriptor for a kd-tree
    or forest, exact for multi-index hashing)."""
    ext = _ext()
    if exact:
        return ext.hamming_topk(q, codes, k)
    if isinstance(key_index, ext.MultiIndexHash):
        return key_index.search(q, k)
    return key_index.search(q, k=k, backtracks=int(backtracks), order=cfg.order)
