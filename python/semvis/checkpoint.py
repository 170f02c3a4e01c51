"""Checkpoint files of every semvis system: one format tag scheme, one atomic write, one safe read.

A checkpoint is a ``dict`` written by :func:`torch.save` whose ``"format"`` entry is the tag
``"semvis.<kind>-checkpoint/<version>"`` (:func:`format_tag`), e.g.
``"semvis.semantic-checkpoint/1"``. It holds tensors and plain data only (numbers, strings, lists,
tuples, dicts), so that :func:`read_checkpoint` loads it with ``torch.load(weights_only=True)``:
semvis never unpickles arbitrary objects, and a file that needs more is refused with our own
message (never a hint to load it unsafely).

This module sits below ``train`` and ``search`` (both read checkpoints; only ``train`` writes them).
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterable, Union

__all__ = ["format_tag", "atomic_save", "load_tensors", "read_checkpoint"]

PathLike = Union[str, os.PathLike]


def format_tag(kind: str, version: int) -> str:
    """The format tag of a ``kind`` checkpoint: ``"semvis.<kind>-checkpoint/<version>"``."""
    return f"semvis.{kind}-checkpoint/{int(version)}"


def atomic_save(obj: Any, path: PathLike) -> None:
    """``torch.save(obj, path)`` without ever leaving a half-written file: the object is written
    to ``<path>.tmp`` next to it and renamed over ``path`` (the folder is created if needed)."""
    import torch

    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_tensors(path: PathLike, what: str = "checkpoint") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with our own errors: a
    FileNotFoundError when there is no file, a ValueError naming ``what`` and the path for a file
    that is not a torch file, is truncated or corrupt, or holds Python objects beyond tensors and
    plain data (never torch's hint to load it with ``weights_only=False``)."""
    import pickle

    import torch

    p = os.fspath(path)
    if os.path.isdir(p):
        raise FileNotFoundError(f"{p}: is a directory, not a {what} file")
    if not os.path.isfile(p):
        raise FileNotFoundError(f"{what} not found: {p}")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message for a refused global suggests weights_only=False: never repeat it
        if "unsupported global" in str(e).lower():
            raise ValueError(f"{p}: not a readable {what} (it holds Python objects beyond tensors and "
                             f"plain data, which semvis does not load)") from None
        raise ValueError(f"{p}: not a readable {what} (not a torch file, or a truncated or corrupt one)") from None
    except Exception:  # noqa: BLE001 - zip errors, EOF, bad magic: all a corrupt or foreign file
        raise ValueError(f"{p}: not a readable {what} (not a torch file, or a truncated or corrupt one)") from None


def read_checkpoint(path: PathLike, formats: Iterable[str], what: str = "semvis") -> Dict[str, Any]:
    """Reads a checkpoint written by :func:`atomic_save` and checks its format tag.

    Args:
        path: the file.
        formats: the tags accepted (the current one first; older ones that still load).
        what: the kind of checkpoint named in error messages (e.g. ``"semantic"``).

    Returns:
        the checkpoint dict (tensors on the CPU).

    Raises:
        FileNotFoundError: no such file (or ``path`` is a folder).
        ValueError: not a torch checkpoint, a truncated or corrupt one, one holding Python objects
            beyond tensors and plain data, or one without an accepted format tag.
    """
    p = os.fspath(path)
    formats = tuple(formats)
    ck = load_tensors(p, "checkpoint")
    if not isinstance(ck, dict) or ck.get("format") not in formats:
        got = ck.get("format") if isinstance(ck, dict) else None
        raise ValueError(f"{p}: not a semvis {what} checkpoint (format tag {formats[0]!r} missing"
                         + (f"; found {got!r})" if isinstance(got, str) else ")"))
    return ck
