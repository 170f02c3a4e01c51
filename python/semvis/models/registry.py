"""cirtorch-style registry of the poolings a retrieval network can end with.

A typo in a config name gets a ValueError listing the known names.
"""
from __future__ import annotations

from typing import Callable, Dict

__all__ = ["POOLINGS", "build_pooling"]


def _rmac(dim: int, levels: int, whitening: bool = True):
    import semvis_ext

    return semvis_ext.nn.RMAC(dim, levels=levels, whitening=whitening)


POOLINGS: Dict[str, Callable] = {"rmac": _rmac}


def build_pooling(name: str, dim: int, levels: int):
    """The pooling ``name`` (``"rmac"``: ``semvis_ext.nn.RMAC(dim, levels)`` with whitening)."""
    if name not in POOLINGS:
        raise ValueError(f"unknown pooling {name!r}; expected one of {sorted(POOLINGS)}")
    return POOLINGS[name](dim, levels)
