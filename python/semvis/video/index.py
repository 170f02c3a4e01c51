"""Image-to-video search with temporal aggregation of binary features (spec B.3, Table 5.1).

Indexing (per video): ORB/BRIEF features of every (sampled) frame -> bidirectional tracking ->
shots (a cut where consecutive frames share no track) -> one bit-majority key feature per track
of >= 8 frames -> a binary kd-tree over all key features, each tagged with its shot.
Query: ORB features of the photo -> kd-tree search per descriptor (FIFO backtracking, B = 50)
-> each nearest key votes for its shot -> the most-voted shots -> the frame inside the shot.

Geometric verification (``verify=5``, the default; ``verify=0`` is the paper's procedure as
published) re-ranks the 5 most-voted shots by a RANSAC homography query -> frame
(:mod:`~semvis.video.geometry`); votes alone confuse shots of repetitive texture (bricks, gravel,
star fields) whose descriptors match anywhere; geometry does not. The frame inside a key-feature
shot is found by following that homography along every key's straight path
(:mod:`~semvis.video.framesearch`). The indexing methods (key features of tracks, all features,
key frames) are :mod:`~semvis.video.methods`; the arrays live in :mod:`~semvis.video.store`; the
file format is :mod:`~semvis.video.persist`.

Memory per key (track keys): 32 B (descriptor) + 16 B (frame store: its track's run, two int32, and
straight path, four int16 in 1/4 px) + the kd-tree's copy of the descriptor and its id (see
:meth:`VideoIndex.memory`); per shot 20 B; per sampled frame 4 B (its frame number).
"""
from __future__ import annotations

import os
import time
from typing import Dict, List, NamedTuple, Optional, Tuple, Union

import numpy as np

from . import persist
from .config import METHODS, VideoIndexConfig
from .features import FrameFeatures, OrbExtractor
from .io import FrameSource
from .methods import method_for
from .store import Block

__all__ = ["VideoIndex", "VideoHit", "METHODS", "VideoIndexConfig"]


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


class VideoIndex:
    """Index of videos for image-to-video search.

    Args:
        config (VideoIndexConfig or dict, optional): the configuration (see
            :class:`~semvis.video.config.VideoIndexConfig`); ``**fields`` override its fields,
            e.g. ``VideoIndex(method="all", verify=0)``. Invalid values raise ``ConfigError``
            (a ValueError naming the field).
        progress (bool): tqdm progress bars while indexing.
        threads (int, optional): ORB extraction threads.
    """

    def __init__(self, config: Union[VideoIndexConfig, dict, None] = None, *, progress: bool = True,
                 threads: Optional[int] = None, **fields):
        if not isinstance(progress, bool):
            raise TypeError(f"VideoIndex: progress must be True or False, got {progress!r}")
        if isinstance(config, VideoIndexConfig):
            cfg = config.replace(**fields) if fields else config
        elif config is None or isinstance(config, dict):
            cfg = VideoIndexConfig.from_dict({**(config or {}), **fields})
        else:
            raise TypeError(f"VideoIndex: config must be a VideoIndexConfig or a dict, got {type(config).__name__}")
        self.cfg = cfg
        self.method = method_for(cfg)
        self.layout = self.method.layout()
        self.extractor = OrbExtractor(n_features=cfg.n_features, width=cfg.width, threads=threads)
        self.progress = progress
        self.batch_size = 64  # frames extracted per batch
        self._store = Block.empty(self.layout)
        self._pending: List[Block] = []
        self._tree = None
        self.stats: Dict[str, float] = {"frames": 0, "features": 0, "extract_s": 0.0, "aggregate_s": 0.0}

    # ------------------------------------------------------------------ configuration
    def config(self) -> dict:
        """The configuration as a dict (what :meth:`save` stores)."""
        return self.cfg.to_dict()

    @property
    def verify(self) -> int:
        return self.cfg.verify

    @verify.setter
    def verify(self, value: int) -> None:
        self.cfg = self.cfg.replace(verify=value)
        self.method.cfg = self.cfg

    @property
    def video_ids(self) -> List[str]:
        return self._store.video_ids + [b.video_ids[0] for b in self._pending]

    def __len__(self) -> int:
        return len(self.video_ids)

    @property
    def n_items(self) -> int:
        """Indexed items: key features, or frame features for the baselines."""
        return self._store.n_items + sum(b.n_items for b in self._pending)

    def frame_numbers(self, video_id: str) -> np.ndarray:
        """int32[T]: decoding-order numbers of the video's sampled frames."""
        self._ensure_built()
        if video_id not in self._store.video_ids:
            raise KeyError(f"frame_numbers: no video {video_id!r} in the index")
        v = self._store.video_ids.index(video_id)
        fb = self._store.frame_base
        return self._store.frame_numbers[fb[v]:fb[v + 1]]

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
        self._check_id("add", video_id)
        block, info, stats = self.process(video_or_frames, video_id, step)
        self._append(block, stats)
        return info

    def process(self, video_or_frames, video_id: str, step: Optional[int] = None) -> Tuple[Block, dict, dict]:
        """One video through the whole per-video path (decode, ORB, tracking, shots, aggregation;
        or the global method's embeddings) without adding it: what :meth:`add` commits, and what a
        Ray task of :mod:`semvis.video.shards` runs. The index is not changed.

        Returns:
            (Block, info, stats): the video's arrays (see :mod:`~semvis.video.store`), ``info`` as
            :meth:`add` returns it, and the increments of :attr:`stats` (``frames``, ``features``,
            ``extract_s``, ``aggregate_s``).
        """
        if not isinstance(video_id, str) or not video_id:
            raise TypeError(f"process: video_id must be a non-empty str, got {video_id!r}")
        if getattr(self.method, "global_method", False):  # frames -> R-MAC embeddings (global_method.py)
            t0 = time.perf_counter()
            block, info = self.method.index_video(video_id, video_or_frames, self.progress)
            return block, info, {"frames": info["frames"], "features": info["features"],
                                 "extract_s": time.perf_counter() - t0, "aggregate_s": 0.0}
        src = FrameSource(video_or_frames, step=self.cfg.step if step is None else step)
        t0 = time.perf_counter()
        ff, numbers = self.extractor.extract_video(src, self.batch_size, self.progress, f"index {video_id}")
        extract_s = time.perf_counter() - t0
        block, info, stats = self._aggregate(video_id, ff, numbers)
        stats["extract_s"] = extract_s
        return block, info, stats

    def add_features(self, features: FrameFeatures, video_id: str, frame_numbers: Optional[np.ndarray] = None) -> dict:
        """Indexes precomputed features of one video (e.g. to build several methods from one
        extraction); ``frame_numbers`` (default 0..T-1): increasing decoding-order numbers >= 0."""
        self._check_id("add_features", video_id)
        T = features.n_frames
        if T < 1:
            raise ValueError("add_features: features has no frames")
        nums = np.arange(T, dtype=np.int64) if frame_numbers is None else np.asarray(frame_numbers)
        if nums.shape != (T,) or nums.dtype.kind not in "iu":
            raise ValueError(f"add_features: frame_numbers must be integers of shape ({T},), got {nums.dtype} "
                             f"{nums.shape}")
        if nums.min() < 0 or nums.max() >= 2**31 or np.any(np.diff(nums) <= 0):
            raise ValueError("add_features: frame_numbers must increase, within [0, 2**31)")
        block, info, stats = self._aggregate(video_id, features, nums.astype(np.int64))
        self._append(block, stats)
        return info

    def _check_id(self, op: str, video_id) -> None:
        if not isinstance(video_id, str) or not video_id:
            raise TypeError(f"{op}: video_id must be a non-empty str, got {video_id!r}")
        if video_id in self.video_ids:
            raise ValueError(f"{op}: video_id {video_id!r} is already in the index")

    def _aggregate(self, video_id: str, ff: FrameFeatures, numbers: np.ndarray) -> Tuple[Block, dict, dict]:
        t0 = time.perf_counter()
        block = self.method.aggregate(video_id, ff, numbers)
        stats = {"frames": len(numbers), "features": int(ff.descriptors.shape[0]), "extract_s": 0.0,
                 "aggregate_s": time.perf_counter() - t0}
        return block, {"frames": len(numbers), "shots": block.n_shots, "features": int(ff.descriptors.shape[0]),
                       "items": block.n_items}, stats

    def _append(self, block: Block, stats: dict) -> None:
        self._pending.append(block)
        for k in ("frames", "features", "extract_s", "aggregate_s"):
            self.stats[k] += stats.get(k, 0)

    @classmethod
    def from_blocks(cls, config: Union[VideoIndexConfig, dict], blocks, stats: Optional[dict] = None,
                    progress: bool = False) -> "VideoIndex":
        """An index over videos already processed by :meth:`process` (in the order given: items,
        shots and videos are numbered as if they had been added one by one); built. ``stats``:
        the summed statistics (default zeros). Used for the shards of :mod:`~semvis.video.shards`."""
        idx = cls(config, progress=progress)
        seen = set()
        for b in blocks:
            if not isinstance(b, Block) or len(b.video_ids) != 1:
                raise TypeError("from_blocks: blocks must be one-video Blocks from VideoIndex.process")
            if b.video_ids[0] in seen:
                raise ValueError(f"from_blocks: video_id {b.video_ids[0]!r} is given twice")
            seen.add(b.video_ids[0])
            idx._pending.append(b)
        for k, v in (stats or {}).items():
            if k in idx.stats:
                idx.stats[k] += v
        return idx.build()

    def build(self) -> "VideoIndex":
        """Folds the added videos into the store and builds the kd-tree over all items."""
        if not self._pending and (self._tree is not None or self._store.n_items == 0):
            return self
        self._store = Block.merge([self._store] + self._pending, self.layout)
        self._pending = []
        codes = self._store.codes
        self._tree = None
        if codes.shape[0] > 0:
            from semvis_ext import BinaryKDTree

            self._tree = BinaryKDTree(codes, ids=np.arange(codes.shape[0], dtype=np.int64),
                                      leaf_size=self.cfg.leaf_size)
        return self

    def _ensure_built(self):
        if self._pending:
            self.build()

    # ------------------------------------------------------------------ search
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
            list of VideoHit ``(video, shot, frame, score)``, best first; empty when the query has
            no features or the index no items. Raises ValueError on an index without videos.
        """
        from .search import search

        return search(self, image, top, backtracks, exact, features)

    # ------------------------------------------------------------------ memory
    def memory(self) -> Dict[str, int]:
        """Bytes held by the index.

        Returns:
            dict: ``descriptors`` (the indexed key features or features: the paper's "Mem", 32 B
            each), ``tree`` (the kd-tree: its own copy of the codes, their int64 ids and its
            nodes), ``frame_store`` (track runs and paths, per-frame item offsets or per-frame
            descriptors), ``tables`` (shot table and frame numbers), ``search_index``
            (descriptors + tree + tables: what shot retrieval needs) and ``total``.
        """
        self._ensure_built()
        b = self._store
        out = {"descriptors": int(b.codes.nbytes), "tree": 0 if self._tree is None else int(self._tree.memory_bytes()),
               "frame_store": b.nbytes(self.layout),
               "tables": b.nbytes(("shot_offsets", "shot_video", "shot_local", "shot_first", "shot_last",
                                   "frame_base", "frame_numbers"))}
        out["search_index"] = out["descriptors"] + out["tree"] + out["tables"]
        out["total"] = out["search_index"] + out["frame_store"]
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, path: Union[str, os.PathLike]) -> None:
        """Writes the whole index (config, videos, shot table, frame store, kd-tree) to one file
        (a zip of arrays with a JSON header holding a SHA-256 of every array; see
        :mod:`~semvis.video.persist`). Atomic: the file is written next to ``path`` and renamed."""
        self._ensure_built()
        extra = self.method.model_arrays() if hasattr(self.method, "model_arrays") else None
        persist.write(path, self.cfg, self._store, self._tree, self.stats, extra=extra)

    @classmethod
    def load(cls, path: Union[str, os.PathLike], progress: bool = True, mmap: bool = False) -> "VideoIndex":
        """Reads an index written by :meth:`save`. A truncated, corrupt, foreign or inconsistent
        file raises ValueError naming the file and what is wrong (FileNotFoundError if there is
        no file); every array is range-checked (see :meth:`~semvis.video.store.Block.check`).
        ``mmap``: the arrays and the kd-tree are read-only memory maps of the file (same checks;
        see :func:`semvis.video.persist.read`); adding videos to such an index is allowed (the
        merge copies)."""
        if not isinstance(progress, bool):
            raise TypeError(f"VideoIndex.load: progress must be True or False, got {progress!r}")
        if not isinstance(mmap, bool):
            raise TypeError(f"VideoIndex.load: mmap must be True or False, got {mmap!r}")
        cfg, block, tree, stats, extra = persist.read(path, with_model=True, mmap=mmap)
        idx = cls(cfg, progress=progress)
        if hasattr(idx.method, "load_model_arrays"):
            try:
                idx.method.load_model_arrays(extra)
            except (ValueError, TypeError, RuntimeError) as e:
                raise ValueError(f"VideoIndex.load: {os.fspath(path)}: {e}") from None
        elif extra:
            raise ValueError(f"VideoIndex.load: {os.fspath(path)}: unexpected arrays {sorted(extra)}")
        idx._store, idx._tree = block, tree
        idx.stats.update(stats)
        return idx
