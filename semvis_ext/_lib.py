"""Glue between torch tensors and the compiled module: DLPack capsules, streams, checks."""
from __future__ import annotations

import numbers
from typing import Optional

import torch
from torch.utils.dlpack import to_dlpack

from . import _C  # noqa: F401  (re-exported for the ops modules)

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def capsule(t: Optional[torch.Tensor]):
    """A DLPack capsule borrowing ``t`` (None stays None)."""
    if t is None:
        return None
    return to_dlpack(t.detach())


def stream_of(t: torch.Tensor) -> int:
    """The current CUDA stream of t's device as an integer (0 on the CPU)."""
    if t.device.type == "cuda":
        return torch.cuda.current_stream(t.device).cuda_stream
    return 0


def check_tensor(op: str, name: str, t, *, dtypes=None, ndim: Optional[int] = None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{op}: {name} must be on cpu or cuda, got {t.device}")
    if dtypes is not None and t.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{op}: {name} must have dtype in ({names}), got {str(t.dtype).replace('torch.', '')}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{op}: {name} must have {ndim} dimensions, got shape {tuple(t.shape)}")


def check_matrix_pair(op: str, a_name: str, a, b_name: str, b, *, dtypes) -> None:
    """Two [*, d] matrices that meet in a product: same dtype, same device, same d."""
    check_tensor(op, a_name, a, dtypes=dtypes, ndim=2)
    check_tensor(op, b_name, b, dtypes=dtypes, ndim=2)
    if a.dtype != b.dtype:
        raise TypeError(f"{op}: {a_name} and {b_name} must have the same dtype, got {a.dtype} and {b.dtype}")
    if a.device != b.device:
        raise ValueError(f"{op}: {a_name} and {b_name} must be on the same device, got {a.device} and {b.device}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{op}: {a_name} and {b_name} must have the same dimension d, got {a_name} "
                         f"{tuple(a.shape)} and {b_name} {tuple(b.shape)}")


def as_int64(op: str, name: str, t, device, expected: str) -> torch.Tensor:
    """An integer Tensor or nested lists of ints -> an int64 Tensor on ``device``; TypeError naming
    ``name`` (as ``expected``) for what does not convert, and for float, complex or bool tensors."""
    if not isinstance(t, torch.Tensor):
        try:
            t = torch.as_tensor(t, dtype=torch.int64)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"{op}: {name} must be {expected}: {e}") from None
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"{op}: {name} must hold integers, got {str(t.dtype).replace('torch.', '')}")
    return t.to(device=device, dtype=torch.int64)


def check_count_or_fraction(op: str, name: str, k):
    """An int count >= 0 -> (k, -1.0); a float fraction in (0, 1] -> (0, f)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Real):
        raise TypeError(f"{op}: {name} must be an int count or a float fraction in (0, 1], got {type(k).__name__}")
    if isinstance(k, numbers.Integral):
        if k < 0:
            raise ValueError(f"{op}: {name} must be >= 0, got {k}")
        if k >= 2**63:
            raise ValueError(f"{op}: {name}={k} is larger than any feature map (counts are int64)")
        return int(k), -1.0
    k = float(k)
    if not (0.0 < k <= 1.0):
        raise ValueError(f"{op}: a fractional {name} must lie in (0, 1], got {k}")
    return 0, k


def check_finite_scalar(op: str, name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{op}: {name} must be a real number, got {type(v).__name__}")
    v = float(v)
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{op}: {name} must be finite, got {v}")
    return v
