"""Exact Hamming distances and top-k between packed binary codes (NumPy in, NumPy out).

Codes are rows of ``nbytes`` uint8 (``nbytes`` a multiple of 8: any multiple of 64 bits; 256
bits is the fast path), e.g. ORB/BRIEF descriptors as OpenCV returns them. Bit ``i`` of a code
is bit ``7 - i % 8`` of byte ``i // 8``, the order of ``np.unpackbits``. The CPU kernels are
multithreaded (``semvis_ext.set_num_threads``) and use the hardware POPCNT instruction when the
CPU has it (checked at run time). torch tensors on cuda are accepted too and run the CUDA
kernels; torch is imported only then.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from .._numpy import capsule, check_codes, check_int, is_torch

__all__ = ["hamming_distances", "hamming_topk"]


def _C():
    from .. import _C

    return _C


def _check_torch_codes(op, name, t, nbytes=None):
    import torch

    if t.dtype != torch.uint8:
        raise TypeError(f"{op}: {name} must have dtype uint8 (packed bits), got {t.dtype}")
    if t.dim() != 2:
        raise ValueError(f"{op}: {name} must have 2 dimensions [n, nbytes], got shape {tuple(t.shape)}")
    if t.shape[1] == 0 or t.shape[1] % 8 != 0:
        raise ValueError(f"{op}: {name} rows must have a positive multiple of 8 bytes (64 bits), got {t.shape[1]}")
    if nbytes is not None and t.shape[1] != nbytes:
        raise ValueError(f"{op}: {name} must have {nbytes} bytes per row, got {t.shape[1]}")
    if not t.is_contiguous():
        raise ValueError(f"{op}: {name} must be contiguous; call .contiguous() first")


def _torch_call(op, a, b, name_a, name_b):
    import torch

    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        raise TypeError(f"{op}: {name_a} and {name_b} must both be numpy arrays or both torch tensors")
    _check_torch_codes(op, name_a, a)
    _check_torch_codes(op, name_b, b, a.shape[1])
    if a.device != b.device:
        raise ValueError(f"{op}: {name_a} and {name_b} must be on the same device, got {a.device} and {b.device}")
    if a.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{op}: {name_a} and {name_b} must be cpu or cuda tensors (tensors with data), got {a.device}")
    stream = torch.cuda.current_stream(a.device).cuda_stream if a.device.type == "cuda" else 0
    return torch, stream


def hamming_distances(a, b):
    """All pairwise Hamming distances between two sets of codes.

    Args:
        a (ndarray[na, nbytes] uint8): codes, C-contiguous, nbytes a multiple of 8.
        b (ndarray[nb, nbytes] uint8): codes of the same width.

    Returns:
        ndarray[na, nb] int32: ``popcount(a[i] XOR b[j])``. Memory: the output only.
        torch tensors (cpu or cuda, same device) give a torch tensor on that device.
    """
    op = "hamming_distances"
    if is_torch(a) or is_torch(b):
        torch, stream = _torch_call(op, a, b, "a", "b")
        out = torch.empty((a.shape[0], b.shape[0]), dtype=torch.int32, device=a.device)
        _C().hamming_distances(a.detach(), b.detach(), out, stream)
        return out
    check_codes(op, "a", a)
    check_codes(op, "b", b, a.shape[1])
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.int32)
    _C().hamming_distances(capsule(a), capsule(b), capsule(out), 0)
    return out


def hamming_topk(queries, codes, k: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """Exact k nearest codes of each query by Hamming distance (brute force).

    Args:
        queries (ndarray[nq, nbytes] uint8): query codes, C-contiguous, nbytes a multiple of 8.
        codes (ndarray[n, nbytes] uint8): database codes of the same width.
        k (int): neighbours per query, ``1 <= k <= n``.

    Returns:
        (distances, indices): ``distances`` (ndarray[nq, k] int32) and ``indices``
        (ndarray[nq, k] int64, rows of ``codes``), nearest first, ties by the lowest index.
        Memory: the outputs plus O(k) per thread, at any n. torch tensors (cpu or cuda, same
        device) give torch outputs on that device.
    """
    op = "hamming_topk"
    k = check_int(op, "k", k, 1)
    if is_torch(queries) or is_torch(codes):
        torch, stream = _torch_call(op, queries, codes, "queries", "codes")
        if k > codes.shape[0]:
            raise ValueError(f"{op}: k={k} is larger than the number of codes ({codes.shape[0]})")
        d = torch.empty((queries.shape[0], k), dtype=torch.int32, device=queries.device)
        i = torch.empty((queries.shape[0], k), dtype=torch.int64, device=queries.device)
        _C().hamming_topk(queries.detach(), codes.detach(), k, d, i, stream)
        return d, i
    check_codes(op, "queries", queries)
    check_codes(op, "codes", codes, queries.shape[1])
    if k > codes.shape[0]:
        raise ValueError(f"{op}: k={k} is larger than the number of codes ({codes.shape[0]})")
    d = np.empty((queries.shape[0], k), dtype=np.int32)
    i = np.empty((queries.shape[0], k), dtype=np.int64)
    _C().hamming_topk(capsule(queries), capsule(codes), k, capsule(d), capsule(i), 0)
    return d, i
