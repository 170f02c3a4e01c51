"""Search of a :class:`~semvis.video.VideoIndex`: nearest keys -> shot votes -> verification of
the most-voted shots -> the frame inside each shot (see :mod:`semvis.video.index`)."""
from __future__ import annotations

import os
from typing import List, Optional, Tuple

import numpy as np

from .geometry import best_frame

__all__ = ["search", "rank_shots", "nearest", "check_budget", "ShotAccess"]


def _query(index, image, features) -> Tuple[np.ndarray, np.ndarray]:
    if features is None:
        if isinstance(image, (str, os.PathLike)):
            from .io import read_image

            image = read_image(os.fspath(image))
        return index.extractor(image)
    if not isinstance(features, (tuple, list)) or len(features) != 2:
        raise TypeError("search: features must be a (keypoints float32[n, 2], descriptors uint8[n, 32]) pair")
    qkp, q = np.asarray(features[0], np.float32).reshape(-1, 2), features[1]
    if not isinstance(q, np.ndarray) or q.dtype != np.uint8 or q.ndim != 2:
        raise TypeError("search: features[1] (descriptors) must be a uint8 ndarray [n, nbytes]")
    if len(qkp) != len(q):
        raise ValueError(f"search: features has {len(qkp)} keypoints but {len(q)} descriptors")
    if not np.all(np.isfinite(qkp)):
        raise ValueError("search: features[0] (keypoints) must be finite")
    return qkp, np.ascontiguousarray(q)


def check_budget(cfg, top, backtracks) -> int:
    """Checks ``top`` and ``backtracks``; the kd-tree budget B (default: the index's)."""
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ValueError(f"search: top must be an int >= 1, got {top!r}")
    B = cfg.backtracks if backtracks is None else backtracks
    if isinstance(B, bool) or not isinstance(B, (int, np.integer)) or B < 1:
        raise ValueError(f"search: backtracks must be an int >= 1, got {B!r}")
    return int(B)


def nearest(index, q: np.ndarray, B: int, exact: bool) -> Tuple[np.ndarray, np.ndarray]:
    """(distance int[n], item int64[n] or -1) of each query descriptor's nearest indexed item in a
    built index with items: ties by the lowest item."""
    import semvis_ext

    cfg, store = index.cfg, index._store
    if exact:
        D, I = semvis_ext.hamming_topk(q, store.codes, 1)
    else:
        D, I = index._tree.search(q, k=1, backtracks=int(B), order=cfg.order)
    return np.asarray(D)[:, 0], np.asarray(I)[:, 0]


def rank_shots(cfg, d: np.ndarray, shot: np.ndarray, n_shots: int, nq: int, top: int, verify, unverified) -> list:
    """Shot votes -> the ``top`` hits (shared by :func:`search` and the sharded search of
    :mod:`semvis.video.shards`, so that both give the same answer from the same neighbours).

    Args:
        d (int[n]), shot (int64[n]): each query descriptor's nearest distance and the shot of its
            nearest item (-1: none).
        n_shots (int): shots of the index; nq (int): query descriptors.
        verify: ``verify(shots) -> [(inliers, make_hit(score) -> VideoHit)]``, the geometric
            verification of the candidate shots (in the order given).
        unverified: ``unverified(shot, score) -> VideoHit`` (the frame by the method's scores).
    """
    ok = shot >= 0
    if cfg.vote_max_distance is not None:
        ok &= d < cfg.vote_max_distance
    S = n_shots
    shots = shot[ok]
    if cfg.vote == "soft":
        w = np.maximum(cfg.match_threshold - d[ok], 0).astype(np.float64)
        votes = np.bincount(shots, weights=w, minlength=S) / (nq * max(cfg.match_threshold, 1))
    else:
        votes = np.bincount(shots, minlength=S) / nq
    order = np.lexsort((np.arange(S), -votes))  # most votes first, ties to the lowest shot
    order = order[votes[order] > 0]
    if cfg.verify == 0:
        return [unverified(int(s), votes[s]) for s in order[:top]]
    # geometric verification of the most-voted shots: re-ranked by their verified matches
    cand = order[:cfg.verify]
    ver = verify([int(s) for s in cand])
    rank = sorted(range(len(cand)), key=lambda j: (-ver[j][0], j))
    hits: List = [ver[j][1](ver[j][0] / nq) for j in rank[:top]]
    # shots beyond the verified ones follow them (in vote order), only when more are asked for
    hits += [unverified(int(s), 0.0) for s in order[len(cand):len(cand) + top - len(hits)]]
    return hits


class ShotAccess:
    """Hits of the shots of one built index for one query (``verify`` and ``unverified`` of
    :func:`rank_shots`, shot numbers of ``index``'s store)."""

    def __init__(self, index, q: np.ndarray, qkp: np.ndarray):
        self.index, self.q, self.qkp = index, q, qkp

    def hit(self, view, f: int, score: float):
        from .index import VideoHit

        store = self.index._store
        return VideoHit(store.video_ids[view.video], int(store.shot_local[view.shot]),
                        int(store.frame_number(view.shot, view.first + f)), float(score))

    def unverified(self, s: int, score: float):
        view = self.index._store.view(int(s), self.index.layout)
        return self.hit(view, best_frame(self.index.method.frame_scores(view, self.q)), score)

    def verify(self, shots):
        out = []
        for s in shots:
            g = self.index.method.geometry(self.index._store.view(int(s), self.index.layout), self.q, self.qkp)
            seed = g.seed()
            out.append((seed[0], lambda score, g=g, seed=seed: self.hit(g.view, g.frame(seed), score)))
        return out


def search(index, image, top: int = 5, backtracks: Optional[int] = None, exact: bool = False,
           features=None) -> list:
    """See :meth:`VideoIndex.search`."""
    cfg = index.cfg
    B = check_budget(cfg, top, backtracks)
    if getattr(index.method, "global_method", False):  # cosine over shot embeddings (global_method.py)
        if len(index) == 0:
            raise ValueError("search: the index is empty (add videos with add() first)")
        index._ensure_built()
        return index.method.search(index, image, int(top), features)
    qkp, q = _query(index, image, features)
    if len(index) == 0:
        raise ValueError("search: the index is empty (add videos with add() first)")
    index._ensure_built()
    store = index._store
    if q.shape[0] == 0 or store.n_items == 0:
        return []
    if q.shape[1] != store.codes.shape[1]:
        raise ValueError(f"search: query descriptors have {q.shape[1]} bytes, the index {store.codes.shape[1]}")
    d, i = nearest(index, q, B, exact)
    shot = np.full(len(i), -1, np.int64)
    shot[i >= 0] = store.shot_of_item(i[i >= 0])
    access = ShotAccess(index, q, qkp)
    return rank_shots(cfg, d, shot, store.n_shots, len(q), int(top), access.verify, access.unverified)
