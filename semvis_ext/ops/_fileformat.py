"""What the checksummed index files of :class:`~semvis_ext.BinaryKDTree` and
:class:`~semvis_ext.MultiIndexHash` share: section checksums, the atomic write of a header and
aligned sections, the same layout as bytes, and the check of a bytes-like input.

A layout is ``(head, sections, total)``: the header bytes, a list of ``(offset, [arrays])``
(each section's arrays written back to back from its offset, zero padding between sections)
and the file size.
"""
from __future__ import annotations

import os
import zlib
from typing import List, Sequence, Tuple, Union

import numpy as np

Sections = List[Tuple[int, Sequence[np.ndarray]]]


def crc(a: np.ndarray, value: int = 0) -> int:
    """CRC-32 of ``a``'s bytes (C order), continuing from ``value``; read in 64 MiB steps so that a
    memory-mapped array is never copied whole."""
    flat = a.reshape(-1).view(np.uint8)
    step = 1 << 26
    for s in range(0, flat.size, step):
        value = zlib.crc32(flat[s:s + step], value)
    return value & 0xFFFFFFFF


def write_atomic(path: Union[str, os.PathLike], head: bytes, sections: Sections, total: int) -> None:
    """Writes the layout next to ``path`` and renames it into place: a crash never leaves a
    half-written file under ``path``."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(head)
            for o, parts in sections:
                f.write(b"\0" * (o - f.tell()))
                for a in parts:
                    if a.nbytes:
                        np.ascontiguousarray(a).tofile(f)
            f.write(b"\0" * (total - f.tell()))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def to_bytes(head: bytes, sections: Sections, total: int) -> bytes:
    """The bytes :func:`write_atomic` writes."""
    out = bytearray(total)
    out[:len(head)] = head
    for o, parts in sections:
        for a in parts:
            b = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
            out[o:o + b.size] = b.data
            o += b.size
    return bytes(out)


def byte_view(op: str, buf) -> np.ndarray:
    """``buf`` (any contiguous bytes-like object, or a 1-D uint8 ndarray) as a uint8 array that
    shares its memory; TypeError naming ``buf`` otherwise."""
    if isinstance(buf, np.ndarray) and (buf.dtype != np.uint8 or buf.ndim != 1):
        raise TypeError(f"{op}: an ndarray must be 1-D uint8, got {buf.dtype}{list(buf.shape)}")
    try:
        mv = memoryview(buf)
    except TypeError:
        raise TypeError(f"{op}: buf must be a bytes-like object, got {type(buf).__name__}") from None
    if mv.itemsize != 1 or not mv.c_contiguous:
        raise TypeError(f"{op}: buf must be contiguous bytes (items of 1 byte), got items of {mv.itemsize} "
                        f"bytes in a {type(buf).__name__}")
    return np.frombuffer(mv.cast("B"), dtype=np.uint8)


def section_reader(flat: np.ndarray):
    """``section(offset, shape, dtype, mapped)`` reading read-only views of ``flat``."""
    def section(off, shape, dt, mapped):
        count = int(np.prod(shape, dtype=np.int64))
        return np.frombuffer(flat, dtype=dt, count=count, offset=off).reshape(shape)
    return section


def check_section(op: str, name: str, label: str, off: int, length: int, want: int, expect: int, size: int,
                  last: bool, section, align: int) -> int:
    """Checks where section ``label`` of a file (``name``, ``size`` bytes) lies: at offset ``expect``
    with ``want`` bytes, inside the file, followed by zero padding up to the next ``align``-byte
    boundary (unless it is the ``last`` section). ValueError naming the file otherwise. Returns the
    offset where the next section must start."""
    if length != want or off != expect:
        raise ValueError(f"{op}: {name} is corrupt (section {label!r} has offset {off}, "
                         f"length {length}; expected {expect}, {want})")
    if off + length > size:
        raise ValueError(f"{op}: {name} is truncated ({size} bytes, section {label!r} ends at {off + length})")
    next_off = (off + length + align - 1) // align * align
    if not last and next_off > off + length:  # alignment padding: zeros
        pad = min(next_off, size) - (off + length)
        if pad > 0 and section(off + length, (pad,), np.uint8, False).any():
            raise ValueError(f"{op}: {name} is corrupt (non-zero padding after section {label!r})")
    return next_off


def check_end(op: str, name: str, end: int, size: int) -> None:
    """A file of ``size`` bytes whose last section ends at ``end`` has no trailing bytes."""
    if size > end:
        raise ValueError(f"{op}: {name} has {size - end} unexpected trailing bytes")
