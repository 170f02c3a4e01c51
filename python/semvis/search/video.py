"""Image-to-video search: the shots (and frames) a photo shows, over a ``semvis.video.VideoIndex``.

A thin layer over :meth:`VideoIndex.search` with the search layer's contract: per query, a typed
hit list (``VideoHit(video, shot, frame, score)``) best first, ties to the lowest shot, at most
``top`` hits (fewer when fewer shots got votes; never padded, a hit list has no placeholder).
Query paths are checked here so that a folder or a missing file gets a message that says so.
"""
from __future__ import annotations

import os
from typing import Iterable, List, Optional, Union

import numpy as np

__all__ = ["search", "check_image_path"]

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
