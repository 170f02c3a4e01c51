"""Glue between NumPy arrays and the compiled module for the NumPy-first APIs (no torch import)."""
from __future__ import annotations

import numbers

import numpy as np


def capsule(a):
    """A DLPack capsule borrowing ``a`` (a NumPy array or any DLPack producer; None stays None).

    NumPy arrays are exported with DLPack >= 1.0 so that read-only arrays (np.memmap in mode
    'r', np.frombuffer) are passed without a copy and flagged read-only.
    """
    if a is None:
        return None
    if isinstance(a, np.ndarray):
        try:
            return a.__dlpack__(max_version=(1, 0))
        except TypeError:  # NumPy < 2.1 has no versioned export
            return a.__dlpack__()
    return a


def is_torch(x) -> bool:
    return type(x).__module__.split(".", 1)[0] == "torch"


def check_codes(op: str, name: str, x, nbytes=None) -> None:
    """x must be a C-contiguous uint8 array [n, nbytes] with nbytes a positive multiple of 8."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{op}: {name} must be a numpy.ndarray of uint8, got {type(x).__name__}")
    if x.dtype != np.uint8:
        raise TypeError(f"{op}: {name} must have dtype uint8 (packed bits), got {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{op}: {name} must have 2 dimensions [n, nbytes], got shape {x.shape}")
    if x.shape[1] == 0 or x.shape[1] % 8 != 0:
        raise ValueError(
            f"{op}: {name} rows must have a positive multiple of 8 bytes (64 bits), got {x.shape[1]} bytes"
        )
    if nbytes is not None and x.shape[1] != nbytes:
        raise ValueError(f"{op}: {name} must have {nbytes} bytes per row ({8 * nbytes} bits), got {x.shape[1]}")
    if not x.flags.c_contiguous:
        raise ValueError(f"{op}: {name} must be C-contiguous; pass np.ascontiguousarray({name})")


def check_int(op: str, name: str, v, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{op}: {name} must be an int, got {type(v).__name__}")
    v = int(v)
    if v < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {v}")
    return v
