"""The configuration of a :class:`~semvis.video.VideoIndex` (one validated object, saved in the index)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..config import Config, ConfigError

__all__ = ["VideoIndexConfig", "METHODS", "INDEXES", "ConfigError"]

METHODS = ("aggregation", "all", "keyframes", "global")
INDEXES = ("kdtree", "forest", "mih")


@dataclass
class VideoIndexConfig(Config):
    """How a video index is built and searched.

    Args:
        method (str): ``"aggregation"`` (key features of tracks; the paper's method), ``"all"``
            (all features of all frames) or ``"keyframes"`` (features of key frames).
        n_features (int): ORB features per frame and per query (at most).
        width (int): frames and queries are resized to this width (720 in the paper).
        max_hamming (int), max_distance (float): tracking thresholds (strict; 20 and 100 px).
        min_track_len (int): tracks with at least this many frames give a key feature (8: "longer than 7").
        index (str): the nearest-neighbour index over the indexed descriptors: ``"kdtree"`` (the
            paper's binary kd-tree, approximate: ``backtracks`` leaves per query descriptor),
            ``"forest"`` (``trees`` randomized kd-trees searched with one shared budget of
            ``backtracks`` leaves, :class:`semvis_ext.BinaryKDTree` with ``trees > 1``) or ``"mih"``
            (multi-index hashing, :class:`semvis_ext.MultiIndexHash`: exact nearest neighbours,
            ``backtracks``, ``leaf_size`` and ``order`` unused; the same results as ``exact=True``).
            Files written before this field existed load as ``"kdtree"``.
        trees (int): ``index="forest"`` only: the number of trees T (>= 1; 1 is the kd-tree).
        leaf_size (int): kd-tree leaf size SL (100).
        backtracks (int): leaves visited per query descriptor, B (50).
        order (str): kd-tree backtracking order, ``"fifo"`` (the paper) or ``"best_bin"``.
        step (int): index one frame in ``step`` (frame numbers stay those of the decoding order).
        match_threshold (int): tau, the Hamming distance beyond which a match counts for nothing:
            soft votes and frame scores weigh a match at distance d by max(0, tau - d).
        vote (str): ``"soft"`` (default): each query descriptor votes for the shot of its nearest
            key with weight max(0, tau - d), so that the many far, chance neighbours of
            background/bezel descriptors weigh little; ``"count"``: one vote each (the paper).
        shot_norm (float): >= 0: a shot's votes and verified score are divided by its number of
            indexed items to this power before ranking (scaled by the smallest shot's so that
            scores stay in [0, 1]). Shots with many keys (long, textured, repetitive) collect
            chance matches in proportion to their size, as frequent words do in text retrieval;
            0 ranks by raw votes and inliers (the paper; files written before this field load
            with 0). Shot R@1 on the 20,563-frame synthetic corpus (374 shots, 300 queries,
            tracks > 7): 0.933 at 0, 0.973 at 0.5, 0.983 at 0.75, 0.96 at 1 (benchmarks/RESULTS.md).
        vote_max_distance (int, optional): shot voting: ignore nearest neighbours at this distance
            or more (None: every query descriptor votes, as in the paper).
        keyframe_overlap (float): ``"keyframes"`` only: a new key frame starts when fewer than this
            fraction of the last key frame's stable tracks are still alive.
        frame_store (str): ``"aggregation"`` only: ``"tracks"`` (default: each key's run of frames and
            straight path, 16 B per key) or ``"sketch"`` (the ``frame_features`` strongest
            descriptors of every frame and their keypoints, 36 B each; frames by Hamming score).
        frame_features (int): ``frame_store="sketch"`` only.
        verify (int): geometric verification of the ``verify`` most-voted shots, which are
            re-ranked by their verified matches; their frames are found by the geometric in-shot
            search. 0: the paper's procedure (votes only; frames by Hamming score).
        verify_px (float): verification tolerance (px, at ``width``), in (0, 1e4): a shot scores
            its soft inliers sum(1 - (e / verify_px)^2) over matches at reprojection error
            e < verify_px, the homography fitted by RANSAC at 2 verify_px. Coarse on purpose: a
            key's position in a given frame is its track's straight path extrapolated there. Shot
            R@1 on a synthetic corpus of 40 videos (160 queries): 0.91 at 3 px, 0.95 at 12, 0.975
            at 30, 0.988 at 48, 0.994 at 64 and 75 (votes only: 0.963; all features: 1.000).
        inlier_px (float): the frame search's inlier error (px, at ``width``), in (0, 1e4).
        global_aggregator (str): ``method="global"`` only (:mod:`~semvis.video.global_method`):
            shot embedding by ``"mean"`` pooling or the ``"recurrent"`` temporal encoder.
        global_model (str, optional): a ``semvis video train-global`` checkpoint (trunk, whitening,
            encoder; required for ``"recurrent"``); its weights are copied into the index file.
            None: the random-init trunk of ``global_seed`` with identity whitening.
        global_width (int), global_image_width (int), global_seed (int), global_fps (float): the
            frame embedder (trunk width: dim = 8 x width; input width; init seed; sampling rate).
        global_threshold (float): shot boundary where consecutive samples' cosine < this (0.5).
    """

    PRESETS = {"paper": {"verify": 0, "vote": "count", "shot_norm": 0.0}, "all": {"method": "all"},
               "keyframes": {"method": "keyframes"}}

    method: str = "aggregation"
    n_features: int = 500
    width: int = 720
    max_hamming: int = 20
    max_distance: float = 100.0
    min_track_len: int = 8
    index: str = "kdtree"
    trees: int = 4
    leaf_size: int = 100
    backtracks: int = 50
    order: str = "fifo"
    step: int = 1
    match_threshold: int = 64
    vote: str = "soft"
    vote_max_distance: Optional[int] = None
    shot_norm: float = 0.75
    keyframe_overlap: float = 0.5
    frame_store: str = "tracks"
    frame_features: int = 32
    verify: int = 5
    verify_px: float = 64.0
    inlier_px: float = 3.0
    global_aggregator: str = "mean"
    global_model: Optional[str] = None
    global_width: int = 16
    global_image_width: int = 320
    global_seed: int = 0
    global_fps: float = 3.0
    global_threshold: float = 0.5

    def validate(self) -> "VideoIndexConfig":
        for name in self.field_names():  # numpy scalars (e.g. from an argparse type or a sweep) -> Python
            v = getattr(self, name)
            if isinstance(v, np.generic) and not isinstance(v, np.bool_):
                object.__setattr__(self, name, v.item())
        self.check_choice("method", METHODS)
        self.check_choice("order", ("fifo", "best_bin"))
        self.check_choice("index", INDEXES)
        self.check_choice("vote", ("soft", "count"))
        self.check_choice("frame_store", ("tracks", "sketch"))
        self.check_choice("global_aggregator", ("mean", "recurrent"))
        for name, lo in (("global_width", 1), ("global_image_width", 32), ("global_seed", 0)):
            self.check_int(name, lo=lo)
        self.check_float("global_fps", lo=0.0, lo_open=True)
        self.check_float("global_threshold", lo=-1.0, hi=1.0)
        if self.global_model is not None and not isinstance(self.global_model, str):
            self.fail("global_model", "must be a checkpoint path or null")
        if self.method == "global" and self.global_aggregator == "recurrent" and self.global_model is None:
            self.fail("global_model", "global_aggregator='recurrent' needs a trained encoder (a "
                                      "`semvis video train-global` checkpoint)")
        for name, lo in (("n_features", 1), ("width", 32), ("max_hamming", 0), ("min_track_len", 1),
                         ("leaf_size", 1), ("backtracks", 1), ("trees", 1), ("step", 1), ("match_threshold", 0),
                         ("frame_features", 1), ("verify", 0)):
            self.check_int(name, lo=lo)
        self.check_int("vote_max_distance", lo=0, optional=True)
        self.check_float("max_distance", lo=0.0, lo_open=True)
        self.check_float("shot_norm", lo=0.0, hi=4.0)
        for name in ("verify_px", "inlier_px"):
            self.check_float(name, lo=0.0, lo_open=True, hi=1e4)
        self.check_float("keyframe_overlap", lo=0.0, lo_open=True)
        if self.keyframe_overlap >= 1.0:
            self.fail("keyframe_overlap", "must lie in (0, 1)")
        return self

    @property
    def tracks(self) -> bool:
        """Key features with the track store (the geometric frame search over key paths)."""
        return self.method == "aggregation" and self.frame_store == "tracks"
