"""Image-to-video search with temporal aggregation of binary features (spec B.3, Table 5.1).

Indexing (per video): ORB/BRIEF features of every (sampled) frame -> bidirectional tracking ->
shots (a cut where consecutive frames share no track) -> one bit-majority key feature per track
of >= 8 frames -> a binary kd-tree over all key features, each tagged with its shot.
Query: ORB features of the photo -> kd-tree search per descriptor (FIFO backtracking, B = 50)
-> each nearest key votes for its shot -> the most-voted shots -> inside each, a linear Hamming
search over the shot's features picks the frame.

Frame store (how the in-shot frame search works without keeping every frame's descriptors): a
key feature stands for a track, and a track covers a run of consecutive frames, so the index keeps
the run ``[first, last]`` of every key (two int32, 8 bytes per key). Inside the chosen shot every
query descriptor is matched to its nearest key of that shot by linear Hamming search; a match
(distance < ``match_threshold``) votes for all frames of its key's run, and the frame returned is
the middle of the best-voted run of frames. Memory per key: 32 B (descriptor) + 8 B (run) + the
kd-tree's copy of the descriptor and its id (see :meth:`VideoIndex.memory`); per shot 20 B; per
sampled frame 4 B (its frame number).

Baselines of the paper (``method=``): ``"all"`` indexes all features of all frames (Bi-KdTree, and
Bi-BruteForce with ``search(..., exact=True)``); ``"keyframes"`` indexes the features of key frames
only (Bi-KeyFrame-KdTree; a new key frame starts when fewer than ``keyframe_overlap`` of the last
key frame's stable tracks are still alive, a track-based form of Sun et al.'s distance curve). For
these the in-shot search votes per frame: each query descriptor's nearest feature in the shot votes
for the frame it came from.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
import warnings
import zipfile
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from .features import FrameFeatures, OrbExtractor
from .io import FrameSource, VideoReadError

__all__ = ["VideoIndex", "VideoHit", "METHODS"]

METHODS = ("aggregation", "all", "keyframes")
_FORMAT = "semvis-video-index"
_VERSION = 1


class VideoHit(NamedTuple):
    """One search result: ``frame`` numbered from 0 in decoding order; ``shot`` from 0 within the
    video; ``score`` = fraction of the query's descriptors that voted for the shot."""

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


class _Video:
    """What add() commits for one video (all arrays local to the video)."""

    __slots__ = ("video_id", "frame_numbers", "shot_start", "codes", "span", "item_shot")

    def __init__(self, video_id, frame_numbers, shot_start, codes, span, item_shot):
        self.video_id = video_id
        self.frame_numbers = frame_numbers  # int32[T]: decoding-order number of each sampled frame
        self.shot_start = shot_start        # int64[S + 1]: first sampled frame of each shot, then T
        self.codes = codes                  # uint8[n, nb]: key features (or raw features for the baselines)
        self.span = span                    # int32[n, 2] (aggregation) or int32[n] (baselines): sampled frames
        self.item_shot = item_shot          # int64[n]: shot of each item (non-decreasing)


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
        match_threshold (int): in-shot frame search: a query descriptor votes for frames only if its
            nearest feature in the shot is closer than this (Hamming).
        vote_max_distance (int, optional): shot voting: ignore nearest neighbours at this distance
            or more (None: every query descriptor votes, as in the paper).
        keyframe_overlap (float): ``"keyframes"`` only (see the module docstring).
        progress (bool): tqdm progress bars while indexing.
        threads (int, optional): ORB extraction threads.
    """

    def __init__(self, method: str = "aggregation", n_features: int = 500, width: int = 720, max_hamming: int = 20,
                 max_distance: float = 100.0, min_track_len: int = 8, leaf_size: int = 100, backtracks: int = 50,
                 order: str = "fifo", step: int = 1, match_threshold: int = 64,
                 vote_max_distance: Optional[int] = None, keyframe_overlap: float = 0.5, progress: bool = True,
                 threads: Optional[int] = None):
        if method not in METHODS:
            raise ValueError(f"VideoIndex: unknown method {method!r}; expected one of {METHODS}")
        if order not in ("fifo", "best_bin"):
            raise ValueError(f"VideoIndex: order must be 'fifo' or 'best_bin', got {order!r}")
        for name, v, lo in (("max_hamming", max_hamming, 0), ("min_track_len", min_track_len, 1),
                            ("leaf_size", leaf_size, 1), ("backtracks", backtracks, 1), ("step", step, 1),
                            ("match_threshold", match_threshold, 0)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"VideoIndex: {name} must be an int >= {lo}, got {v!r}")
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
        self.vote_max_distance = vote_max_distance
        self.keyframe_overlap = float(keyframe_overlap)
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
                "vote_max_distance": self.vote_max_distance, "keyframe_overlap": self.keyframe_overlap}

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
        first = frame_of_row[np.flatnonzero(~has_pred)]  # tracks are numbered in order of their first row
        length = np.bincount(tr.track, minlength=tr.n_tracks)
        last = first + length - 1
        if self.method == "aggregation":
            keys, kt = ext.majority_keys(desc, tr.track, min_len=self.min_track_len, n_tracks=tr.n_tracks)
            codes = keys
            span = np.stack([first[kt], last[kt]], axis=1).astype(np.int32)
            item_shot = shot[first[kt]]
        else:
            if self.method == "all":
                rows = np.arange(N)
            else:
                kf = self._keyframes(shot_start, first, last, length)
                rows = np.flatnonzero(np.isin(frame_of_row, kf))
            codes = np.ascontiguousarray(desc[rows])
            span = frame_of_row[rows].astype(np.int32)
            item_shot = shot[frame_of_row[rows]]
        return _Video(video_id, numbers.astype(np.int32), shot_start, codes, span, item_shot.astype(np.int64))

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
        nb = 32
        vids = self._videos
        if vids:
            nb = vids[0].codes.shape[1]
        codes = np.ascontiguousarray(np.concatenate([v.codes for v in vids])) if vids else np.zeros((0, nb), np.uint8)
        self._codes = codes
        self._span = np.concatenate([v.span for v in vids]) if vids else np.zeros(
            (0, 2) if self.method == "aggregation" else (0,), np.int32)
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
        self._tree = None
        if codes.shape[0] > 0:
            self._tree = _kdtree_cls()(codes, ids=np.arange(codes.shape[0], dtype=np.int64), leaf_size=self.leaf_size)
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
            _, q = self.extractor(image)
        else:
            q = features[1]
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
        votes = np.bincount(shots, minlength=S)
        order = np.lexsort((np.arange(S), -votes))[:top]  # most votes first, ties to the lowest shot
        hits = []
        for s in order:
            if votes[s] == 0:
                break
            v = self._videos[int(self._shot_video[s])]
            f = self._refine(q, int(s))
            hits.append(VideoHit(v.video_id, int(self._shot_local[s]), int(v.frame_numbers[f]), float(votes[s]) / len(q)))
        return hits

    def _refine(self, q: np.ndarray, s: int) -> int:
        """Sampled-frame index (within its video) of the best frame of global shot s."""
        lo, hi = int(self._shot_offsets[s]), int(self._shot_offsets[s + 1])
        a, b = int(self._shot_first[s]), int(self._shot_last[s])
        D, I = _ext().hamming_topk(q, self._codes[lo:hi], 1)
        d, i = np.asarray(D)[:, 0], np.asarray(I)[:, 0]
        m = (i >= 0) & (d < self.match_threshold)
        if not m.any():
            return (a + b) // 2
        rows = lo + i[m]
        score = np.zeros(b - a + 2, np.int64)
        if self._span.ndim == 2:
            sp = self._span[rows]
            np.add.at(score, sp[:, 0] - a, 1)
            np.add.at(score, sp[:, 1] - a + 1, -1)
            score = np.cumsum(score)[:-1]
        else:
            score = np.bincount(self._span[rows] - a, minlength=b - a + 1)
        best = score.max()
        # the middle of the first run of best-voted frames
        at = np.flatnonzero(score == best)
        run_end = at[0]
        while run_end + 1 < len(score) and score[run_end + 1] == best:
            run_end += 1
        return a + (int(at[0]) + int(run_end)) // 2

    # ------------------------------------------------------------------ memory
    def memory(self) -> Dict[str, int]:
        """Bytes held by the index: ``descriptors`` (the paper's "Mem": 32 B per indexed feature),
        ``tree`` (the kd-tree: its own copy of the codes, ids and nodes), ``frame_store`` (runs or
        frame ids of the items), ``tables`` (shots and frame numbers) and ``total``."""
        self._ensure_built()
        tables = sum(a.nbytes for a in (self._shot_offsets, self._shot_video, self._shot_local, self._shot_first,
                                        self._shot_last)) + sum(v.frame_numbers.nbytes for v in self._videos)
        out = {"descriptors": int(self._codes.nbytes), "tree": self._tree_nbytes(),
               "frame_store": int(self._span.nbytes), "tables": int(tables)}
        out["total"] = sum(out.values())
        return out

    def _tree_nbytes(self) -> int:
        if self._tree is None:
            return 0
        for attr in ("nbytes", "memory_usage"):
            v = getattr(self._tree, attr, None)
            if v is not None:
                return int(v() if callable(v) else v)
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "tree.bin")
            self._tree.save(p)
            return os.path.getsize(p)

    # ------------------------------------------------------------------ persistence
    def save(self, path: Union[str, os.PathLike]) -> None:
        """Writes the whole index (config, videos, shot table, frame store, kd-tree) to one file
        (a zip of arrays with a JSON header holding a SHA-256 of every array). Atomic: the file
        is written next to ``path`` and renamed."""
        self._ensure_built()
        arrays = {"codes": self._codes, "span": self._span, "shot_offsets": self._shot_offsets,
                  "shot_video": self._shot_video, "shot_local": self._shot_local, "shot_first": self._shot_first,
                  "shot_last": self._shot_last}
        fo = np.zeros(len(self._videos) + 1, np.int64)
        np.cumsum([len(v.frame_numbers) for v in self._videos], out=fo[1:])
        arrays["frame_offsets"] = fo
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
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Union[str, os.PathLike], progress: bool = True) -> "VideoIndex":
        """Reads an index written by :meth:`save`; a truncated, corrupt or foreign file raises
        ValueError naming what is wrong."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"VideoIndex.load: {path}: no such file")
        bad = lambda why: ValueError(f"VideoIndex.load: {path}: {why}")  # noqa: E731
        try:
            with np.load(path, allow_pickle=False) as z:
                names = set(z.files)
                if "meta" not in names:
                    raise bad("not a semvis video index (no header)")
                arrays = {k: z[k] for k in z.files}
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise bad(f"not a semvis video index, or a truncated/corrupt one ({e})") from e
        except ValueError as e:
            if str(e).startswith("VideoIndex.load"):
                raise
            raise bad(f"corrupt array data ({e})") from e
        try:
            meta = json.loads(arrays.pop("meta").tobytes().decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise bad("corrupt header") from e
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise bad(f"not a semvis video index (format {meta.get('format') if isinstance(meta, dict) else None!r})")
        if meta.get("version") != _VERSION:
            raise bad(f"unsupported version {meta.get('version')!r} (this semvis reads version {_VERSION})")
        spec = meta.get("arrays", {})
        required = {"codes", "span", "shot_offsets", "shot_video", "shot_local", "shot_first", "shot_last",
                    "frame_offsets", "frame_numbers", "video_shot_offsets"}
        missing = (required | set(spec)) - set(arrays)
        if missing:
            raise bad(f"missing arrays {sorted(missing)}")
        for k, a in arrays.items():
            s = spec.get(k)
            if s is None:
                raise bad(f"unexpected array {k!r}")
            if a.dtype.str != s["dtype"] or list(a.shape) != s["shape"] or _sha(a) != s["sha256"]:
                raise bad(f"array {k!r} does not match its checksum (corrupt file)")
        cfg = dict(meta["config"])
        idx = cls(progress=progress, **cfg)
        vids = meta["videos"]
        V = len(vids)
        fo, so = arrays["frame_offsets"], arrays["video_shot_offsets"]
        off = arrays["shot_offsets"]
        S = len(arrays["shot_local"])
        K = arrays["codes"].shape[0]
        consistent = (fo.shape == (V + 1,) and so.shape == (V + 1,) and off.shape == (S + 1,) and
                      (V == 0 or (fo[0] == 0 and so[0] == 0 and so[-1] == S and fo[-1] == len(arrays["frame_numbers"])))
                      and np.all(np.diff(off) >= 0) and (S == 0 or (off[0] == 0 and off[-1] == K))
                      and arrays["span"].shape[0] == K)
        if not consistent:
            raise bad("inconsistent tables (offsets do not add up)")
        codes, span = arrays["codes"], arrays["span"]
        for vi, vid in enumerate(vids):
            s0, s1 = int(so[vi]), int(so[vi + 1])
            k0, k1 = int(off[s0]), int(off[s1])
            nums = arrays["frame_numbers"][fo[vi]:fo[vi + 1]]
            first, last = arrays["shot_first"][s0:s1], arrays["shot_last"][s0:s1]
            shot_start = np.append(first.astype(np.int64), int(last[-1]) + 1 if s1 > s0 else 0)
            item_shot = np.repeat(np.arange(s1 - s0, dtype=np.int64), np.diff(off[s0:s1 + 1]))
            if s1 > s0 and (shot_start[0] != 0 or shot_start[-1] != len(nums)):
                raise bad(f"inconsistent shot table for video {vid!r}")
            rec = _Video(vid, nums, shot_start, codes[k0:k1], span[k0:k1], item_shot)
            idx._videos.append(rec)
            idx._ids[vid] = vi
        idx.stats.update(meta.get("stats", {}))
        idx._codes = codes
        idx._span = span
        idx._shot_offsets, idx._shot_video, idx._shot_local = off, arrays["shot_video"], arrays["shot_local"]
        idx._shot_first, idx._shot_last = arrays["shot_first"], arrays["shot_last"]
        idx._tree = None
        if K > 0:
            if "tree" not in arrays:
                raise bad("missing kd-tree")
            with tempfile.TemporaryDirectory() as d:
                p = os.path.join(d, "tree.bin")
                arrays["tree"].tofile(p)
                idx._tree = _kdtree_cls().load(p)
        idx._built = True
        return idx
