"""Image-to-video search: the shots (and frames) a photo shows, over a ``semvis.video.VideoIndex``.

A thin layer over :meth:`VideoIndex.search` with the search layer's contract: per query, a typed
hit list (``VideoHit(video, shot, frame, score)``) best first, ties to the lowest shot, at most
``top`` hits (fewer when fewer shots got votes; never padded, a hit list has no placeholder).
Query paths are checked here so that a folder or a missing file gets a message that says so.

:func:`knn` is the descriptor level: FAISS-style ``(D, I)`` nearest indexed items (key features,
or frame features for the baselines) of query descriptors, through the index's nearest-neighbour
index (``config.index``: kd-tree, forest or exact multi-index hashing); :func:`item_shots` maps
items to their video and shot.
"""
from __future__ import annotations

import os
from typing import Iterable, List, Optional, Union

import numpy as np

__all__ = ["search", "knn", "item_shots", "check_image_path"]

ImageLike = Union[str, os.PathLike, np.ndarray]


def check_image_path(path: Union[str, os.PathLike]) -> str:
    """``path`` as a str if it is an existing file; ValueError / FileNotFoundError naming it otherwise."""
    p = os.fspath(path)
    if os.path.isdir(p):
        raise ValueError(f"{p}: is a directory, not an image file")
    if not os.path.exists(p):
        raise FileNotFoundError(f"{p}: no such file")
    if not os.path.isfile(p):
        raise ValueError(f"{p}: not a regular file")
    return p


def search(index, images: Union[ImageLike, Iterable[ImageLike]], top: int = 5, backtracks: Optional[int] = None,
           exact: bool = False) -> List[list]:
    """The ``top`` best shots of each query image.

    Args:
        index (semvis.video.VideoIndex): a built (or loaded) index.
        images: one query (a path, or a uint8 [H, W(, 3)] BGR array) or a list of them.
        top (int): hits per query. backtracks (int, optional): kd-tree budget (default: the index's).
        exact (bool): brute-force nearest neighbours instead of the kd-tree.

    Returns:
        one list of ``VideoHit`` per query, best first.
    """
    single = isinstance(images, (str, os.PathLike, np.ndarray))
    queries = [images] if single else list(images)
    out = []
    for q in queries:
        if isinstance(q, (str, os.PathLike)):
            q = check_image_path(q)
        out.append(index.search(q, top=top, backtracks=backtracks, exact=exact))
    return out


def knn(index, descriptors: np.ndarray, k: int = 1, backtracks: Optional[int] = None, exact: bool = False):
    """The ``k`` nearest indexed items of every query descriptor, FAISS-style.

    Args:
        index (semvis.video.VideoIndex): an index of a descriptor method (not ``method="global"``).
        descriptors (ndarray[nq, nbytes] uint8): query descriptors (e.g. ORB), C-contiguous.
        k (int): neighbours per descriptor (>= 1; may exceed the items).
        backtracks (int, optional): leaves per descriptor for ``index="kdtree"``/``"forest"``
            (default: the index's B); multi-index hashing is exact and ignores it.
        exact (bool): brute-force Hamming search instead of the index.

    Returns:
        (D, I): ``D`` ndarray[nq, k] int32 Hamming distances and ``I`` ndarray[nq, k] int64 item
        rows, nearest first (ties to the lowest row when exact or ``index="mih"``), padded with
        -1 in both where fewer than k items exist (or were reached by a budgeted tree search).
    """
    from semvis.video.methods import key_neighbours

    if getattr(index.method, "global_method", False):
        raise ValueError("knn: a method='global' index holds shot embeddings, not descriptors")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"knn: k must be an int >= 1, got {k!r}")
    B = index.cfg.backtracks if backtracks is None else backtracks
    if isinstance(B, bool) or not isinstance(B, (int, np.integer)) or B < 1:
        raise ValueError(f"knn: backtracks must be an int >= 1, got {B!r}")
    index._ensure_built()
    codes = index._store.codes
    if not isinstance(descriptors, np.ndarray) or descriptors.dtype != np.uint8 or descriptors.ndim != 2 \
            or descriptors.shape[1] != codes.shape[1]:
        raise TypeError(f"knn: descriptors must be a uint8 ndarray [n, {codes.shape[1]}], got "
                        f"{getattr(descriptors, 'dtype', type(descriptors).__name__)} "
                        f"{list(getattr(descriptors, 'shape', []))}")
    q = np.ascontiguousarray(descriptors)
    if index._tree is None:  # no items: all padding
        return np.full((len(q), k), -1, np.int32), np.full((len(q), k), -1, np.int64)
    return key_neighbours(index.cfg, index._tree, codes, q, int(k), int(B), exact)


def item_shots(index, I: np.ndarray):
    """``(video, shot)``: int64 arrays shaped like ``I`` (item rows from :func:`knn`), the position of
    each item's video in ``index.video_ids`` and its shot within that video; -1 where ``I`` is -1."""
    index._ensure_built()
    b = index._store
    I = np.asarray(I)
    if I.dtype.kind not in "iu":
        raise TypeError(f"item_shots: I must hold integers, got {I.dtype}")
    ok = I >= 0
    if ok.any() and int(I[ok].max()) >= b.n_items:
        raise ValueError(f"item_shots: item {int(I[ok].max())} out of range [0, {b.n_items})")
    s = b.shot_of_item(np.where(ok, I, 0))
    video = np.where(ok, b.shot_video[s].astype(np.int64), -1)
    shot = np.where(ok, b.shot_local[s].astype(np.int64), -1)
    return video, shot
