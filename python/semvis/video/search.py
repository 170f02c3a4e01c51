"""Search of a :class:`~semvis.video.VideoIndex`: nearest keys -> shot votes -> verification of
the most-voted shots -> the frame inside each shot (see :mod:`semvis.video.index`)."""
from __future__ import annotations

import os
from typing import List, Optional, Tuple

import numpy as np

from .geometry import best_frame
from .methods import key_neighbours

__all__ = ["search"]


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


def search(index, image, top: int = 5, backtracks: Optional[int] = None, exact: bool = False,
           features=None) -> list:
    """See :meth:`VideoIndex.search`."""
    from .index import VideoHit

    cfg = index.cfg
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ValueError(f"search: top must be an int >= 1, got {top!r}")
    B = cfg.backtracks if backtracks is None else backtracks
    if isinstance(B, bool) or not isinstance(B, (int, np.integer)) or B < 1:
        raise ValueError(f"search: backtracks must be an int >= 1, got {B!r}")
    if getattr(index.method, "global_method", False):  # cosine over shot embeddings (global_method.py)
        if len(index) == 0:
            raise ValueError("search: the index is empty (add videos with add() first)")
        index._ensure_built()
        return index.method.search(index, image, int(top), features)
    qkp, q = _query(index, image, features)
    if len(index) == 0:
        raise ValueError("search: the index is empty (add videos with add() first)")
    index._ensure_built()
    store, method = index._store, index.method
    if q.shape[0] == 0 or store.n_items == 0:
        return []
    if q.shape[1] != store.codes.shape[1]:
        raise ValueError(f"search: query descriptors have {q.shape[1]} bytes, the index {store.codes.shape[1]}")
    D, I = key_neighbours(cfg, index._tree, store.codes, q, 1, int(B), exact)
    d, i = np.asarray(D)[:, 0], np.asarray(I)[:, 0]
    ok = i >= 0
    if cfg.vote_max_distance is not None:
        ok &= d < cfg.vote_max_distance
    S = store.n_shots
    shots = store.shot_of_item(i[ok])
    if cfg.vote == "soft":
        w = np.maximum(cfg.match_threshold - d[ok], 0).astype(np.float64)
        votes = np.bincount(shots, weights=w, minlength=S) / (len(q) * max(cfg.match_threshold, 1))
    else:
        votes = np.bincount(shots, minlength=S) / len(q)
    # per-shot normalisation (cfg.shot_norm): (smallest shot's items / shot's items)^p <= 1
    n_items = np.diff(store.shot_offsets).astype(np.float64)
    scale = np.ones(S)
    if cfg.shot_norm > 0 and (n_items > 0).any():
        scale = (n_items[n_items > 0].min() / np.maximum(n_items, 1.0)) ** cfg.shot_norm
        votes = votes * scale
    order = np.lexsort((np.arange(S), -votes))  # most votes first, ties to the lowest shot
    order = order[votes[order] > 0]

    def hit(view, f: int, score: float):
        return VideoHit(store.video_ids[view.video], int(store.shot_local[view.shot]),
                        int(store.frame_number(view.shot, view.first + f)), float(score))

    def unverified(s: int, score: float):
        view = store.view(int(s), index.layout)
        return hit(view, best_frame(method.frame_scores(view, q)), score)

    if cfg.verify == 0:
        return [unverified(s, votes[s]) for s in order[:top]]
    # geometric verification of the most-voted shots: re-ranked by their verified matches
    cand = order[:cfg.verify]
    geos = [method.geometry(store.view(int(s), index.layout), q, qkp) for s in cand]
    seeds = [g.seed() for g in geos]
    score = [seeds[j][0] * scale[s] / len(q) for j, s in enumerate(cand)]
    rank = sorted(range(len(cand)), key=lambda j: (-score[j], j))
    hits: List = [hit(geos[j].view, geos[j].frame(seeds[j]), score[j]) for j in rank[:top]]
    # shots beyond the verified ones follow them (in vote order), only when more are asked for
    hits += [unverified(s, 0.0) for s in order[len(cand):len(cand) + top - len(hits)]]
    return hits
