"""Temporal aggregation of binary local features (spec B.3.3-B.3.5): tracking, shots, key features.

NumPy in, NumPy out; torch is not needed. A video's features are passed frame by frame in one
concatenated array with ``frame_offsets`` (CSR): the features of frame ``t`` are rows
``frame_offsets[t]:frame_offsets[t + 1]``.

Example::

    import numpy as np, semvis_ext
    tr = semvis_ext.track(keypoints, descriptors, frame_offsets)        # mutual matches -> tracks
    shot = semvis_ext.split_shots(tr.next, frame_offsets)               # shot id of every frame
    keys, key_track = semvis_ext.majority_keys(descriptors, tr.track)   # one key per track of >= 8 frames
"""
from __future__ import annotations

import numbers
from typing import NamedTuple, Tuple

import numpy as np

__all__ = ["Tracks", "track", "split_shots", "majority_keys"]


class Tracks(NamedTuple):
    """Result of :func:`track`.

    Attributes:
        next (ndarray int64[N]): row of each feature's match in the next frame, or -1.
        track (ndarray int64[N]): track id of each feature, numbered 0.. in order of first appearance.
        n_tracks (int): number of tracks (single features count as tracks of length 1).
    """

    next: np.ndarray
    track: np.ndarray
    n_tracks: int


def _C():
    from .. import _C as lib

    return lib


from .._numpy import capsule as _capsule  # versioned DLPack: read-only inputs pass without a copy


def _check_array(op: str, name: str, a, dtype, ndim: int) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{op}: {name} must have dtype {np.dtype(dtype).name}, got {a.dtype.name} "
                        f"(convert it explicitly; nothing is cast silently)")
    if a.ndim != ndim:
        raise ValueError(f"{op}: {name} must have {ndim} dimensions, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{op}: {name} must be C-contiguous (use np.ascontiguousarray), got strides {a.strides}")
    return a


def _check_int(op: str, name: str, v, lo=None) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{op}: {name} must be an int, got {type(v).__name__}")
    v = int(v)
    if lo is not None and v < lo:
        raise ValueError(f"{op}: {name} must be >= {lo}, got {v}")
    return v


def track(keypoints: np.ndarray, descriptors: np.ndarray, frame_offsets: np.ndarray, max_hamming: int = 20,
          max_distance: float = 100.0) -> Tracks:
    """Bidirectional tracking of binary features between consecutive frames (K16).

    Features ``a`` of frame t and ``b`` of frame t+1 are matched iff each is the other's best
    candidate, where a candidate is a feature of the other frame with Hamming distance
    ``< max_hamming`` and keypoint (Euclidean) distance ``< max_distance`` pixels; best = lowest
    Hamming distance, ties to the lowest row. Each feature has at most one successor and one
    predecessor, so chaining the matches gives tracks. The radius is searched on a grid of
    ``max_distance``-sized cells (not all pairs). Multithreaded over frame pairs, GIL released.

    Args:
        keypoints (ndarray float32[N, 2]): (x, y) of every feature, in pixels. Any finite values
            work with any ``max_distance`` (the grid saturates); NaN or ±inf raise ``ValueError``.
        descriptors (ndarray uint8[N, nb]): binary descriptors; nb a multiple of 8 (32 for ORB).
        frame_offsets (ndarray int64[T + 1]): 0, then non-decreasing, ending at N.
        max_hamming (int): strict Hamming threshold (paper: 20).
        max_distance (float): strict keypoint distance threshold in pixels (paper: 100).

    Returns:
        Tracks: ``next`` int64[N], ``track`` int64[N] and ``n_tracks``.
    """
    op = "track"
    k = _check_array(op, "keypoints", keypoints, np.float32, 2)
    if k.shape[1] != 2:
        raise ValueError(f"{op}: keypoints must have shape [N, 2], got {k.shape}")
    d = _check_array(op, "descriptors", descriptors, np.uint8, 2)
    if d.shape[0] != k.shape[0]:
        raise ValueError(f"{op}: descriptors must have one row per keypoint ({k.shape[0]}), got shape {d.shape}")
    o = _check_array(op, "frame_offsets", frame_offsets, np.int64, 1)
    mh = _check_int(op, "max_hamming", max_hamming, lo=0)
    if isinstance(max_distance, bool) or not isinstance(max_distance, numbers.Real):
        raise TypeError(f"{op}: max_distance must be a real number, got {type(max_distance).__name__}")
    nxt = np.empty(k.shape[0], dtype=np.int64)
    tr = np.empty(k.shape[0], dtype=np.int64)
    n = _C().video_track(_capsule(k), _capsule(d), _capsule(o), mh, float(max_distance), _capsule(nxt), _capsule(tr))
    return Tracks(nxt, tr, int(n))


def split_shots(next: np.ndarray, frame_offsets: np.ndarray) -> np.ndarray:
    """Shot id of every frame (K17): a boundary lies between frames that share no track.

    Args:
        next (ndarray int64[N]): ``track(...).next`` (each value -1 or a row of the following frame).
        frame_offsets (ndarray int64[T + 1]): as for :func:`track`.

    Returns:
        ndarray int64[T]: shot ids 0..S-1, non-decreasing; frame t+1 starts a new shot iff no
        feature of frame t has a successor (a frame without features is therefore its own shot).
    """
    op = "split_shots"
    nx = _check_array(op, "next", next, np.int64, 1)
    o = _check_array(op, "frame_offsets", frame_offsets, np.int64, 1)
    if o.shape[0] < 1:
        raise ValueError(f"{op}: frame_offsets must have T + 1 >= 1 elements, got shape {o.shape}")
    shot = np.empty(o.shape[0] - 1, dtype=np.int64)
    _C().video_split_shots(_capsule(nx), _capsule(o), _capsule(shot))
    return shot


def majority_keys(descriptors: np.ndarray, track: np.ndarray, min_len: int = 8,
                  n_tracks: int = None) -> Tuple[np.ndarray, np.ndarray]:
    """Bit-majority key feature of every track with at least ``min_len`` features (K18).

    Bit b of a key is 1 iff more than half of its track's descriptors have bit b set (a tie gives 0,
    the printed rule of Grana et al.). The paper keeps tracks longer than 7 frames: ``min_len=8``.

    Args:
        descriptors (ndarray uint8[N, nb]): nb a multiple of 8.
        track (ndarray int64[N]): track id of each descriptor, in ``[0, n_tracks)``.
        min_len (int): keep tracks with at least this many descriptors (>= 1).
        n_tracks (int, optional): number of track ids (default ``track.max() + 1``).

    Returns:
        (keys, key_track): ``keys`` uint8[K, nb], the keys in increasing track id, and
        ``key_track`` int64[K], the track of each key. Extra memory: N + K int64 and n_tracks int64.
    """
    op = "majority_keys"
    d = _check_array(op, "descriptors", descriptors, np.uint8, 2)
    t = _check_array(op, "track", track, np.int64, 1)
    if t.shape[0] != d.shape[0]:
        raise ValueError(f"{op}: track must have one entry per descriptor ({d.shape[0]}), got shape {t.shape}")
    m = _check_int(op, "min_len", min_len, lo=1)
    if t.size and t.min() < 0:
        raise ValueError(f"{op}: track ids must be >= 0, got {int(t.min())}")
    if n_tracks is None:
        n_tracks = int(t.max()) + 1 if t.size else 0
    n_tracks = _check_int(op, "n_tracks", n_tracks, lo=0)
    if t.size and int(t.max()) >= n_tracks:
        raise ValueError(f"{op}: track ids must be < n_tracks = {n_tracks}, got {int(t.max())}")
    lengths = np.bincount(t, minlength=n_tracks)
    sel = np.flatnonzero(lengths >= m).astype(np.int64)
    keys = np.empty((sel.shape[0], d.shape[1]), dtype=np.uint8)
    _C().video_majority_keys(_capsule(d), _capsule(t), n_tracks, _capsule(sel), _capsule(keys))
    return keys, sel
