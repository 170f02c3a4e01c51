"""WELDON / WILDCAT max+min spatial pooling as the torch op ``semvis::weldon_pool``."""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .._lib import (
    FLOAT_DTYPES,
    _C,
    as_int64,
    capsule,
    check_count_or_fraction,
    check_finite_scalar,
    check_tensor,
    stream_of,
)

_OP = "weldon_pool"
_FORMS = ("dsve", "wildcat")


def resolve_k(count: int, frac: float, n, wildcat: bool):
    """Positions selected on one side of a map of ``n`` cells (mirrors csrc/weldon/weldon.h)."""
    if frac >= 0:
        v = frac * n
        if isinstance(v, (int, float)):
            k = int(round(v)) if wildcat else math.floor(v)  # Python's round is half-to-even, like nearbyint
        else:  # symbolic sizes under torch.compile
            k = torch.sym_int(round(v)) if wildcat else math.floor(v)
        k = torch.sym_max(k, 1) if not isinstance(k, int) else max(k, 1)
    else:
        k = count
    if wildcat:
        k = min(k, n) if isinstance(k, int) and isinstance(n, int) else torch.sym_min(k, n)
    return k


def _valid_hw_pair(valid_hw: Optional[Tensor], device: torch.device):
    if valid_hw is None:
        return None, None
    host = valid_hw.to("cpu", torch.int64).contiguous()  # a device sync when valid_hw lives on the GPU
    dev = host if device.type == "cpu" else valid_hw.to(device, torch.int64).contiguous()
    return host, dev


@torch.library.custom_op("semvis::weldon_pool", mutates_args=())
def _weldon_pool(
    x: Tensor,
    valid_hw: Optional[Tensor],
    kmax: int,
    kmax_frac: float,
    kmin: int,
    kmin_frac: float,
    alpha: float,
    wildcat: bool,
    ordered: bool,
) -> Tuple[Tensor, Tensor]:
    B, C, H, W = x.shape
    kt = resolve_k(kmax, kmax_frac, H * W, wildcat)
    kb = resolve_k(kmin, kmin_frac, H * W, wildcat)
    y = torch.empty((B, C), dtype=x.dtype, device=x.device)
    # a count beyond the map (up to 2**63 - 1) is refused by the kernel's checks, before it looks at
    # idx: allocate no more than the map so that the error is ours, not an allocation overflow.
    # Saved for backward as int32 (half the memory of int64).
    idx = torch.empty((B, C, min(kt, H * W) + min(kb, H * W)), dtype=torch.int32, device=x.device)
    host, dev = _valid_hw_pair(valid_hw, x.device)
    _C.weldon_forward(
        capsule(x), capsule(host), capsule(dev), kmax, kmax_frac, kmin, kmin_frac, alpha, wildcat, ordered,
        capsule(y), capsule(idx), stream_of(x),
    )
    return y, idx


@_weldon_pool.register_fake
def _(x, valid_hw, kmax, kmax_frac, kmin, kmin_frac, alpha, wildcat, ordered):
    B, C, H, W = x.shape
    kt = resolve_k(kmax, kmax_frac, H * W, wildcat)
    kb = resolve_k(kmin, kmin_frac, H * W, wildcat)
    return x.new_empty((B, C)), x.new_empty((B, C, kt + kb), dtype=torch.int32)


@torch.library.custom_op("semvis::weldon_pool_backward", mutates_args=())
def _weldon_pool_backward(
    grad: Tensor,
    indices: Tensor,
    valid_hw: Optional[Tensor],
    height: int,
    width: int,
    kmax: int,
    kmax_frac: float,
    kmin: int,
    kmin_frac: float,
    alpha: float,
    wildcat: bool,
) -> Tensor:
    """Gradient of ``semvis::weldon_pool`` w.r.t. its input, for given positions.

    ``indices`` (int32 [B, C, KT + KB], the forward's second output or the caller's own): the KT
    max-side slots, then the KB min-side slots, flat positions in the ``height x width`` map, -1
    for an unused slot; any other value outside ``[-1, height * width)`` is refused (ValueError
    naming the first bad slot). Each occurrence of a position adds its side's share of ``grad``,
    so a position listed twice (or on both sides, as when kmax + kmin > n) gets both shares.
    """
    B, C = grad.shape
    gx = torch.empty((B, C, height, width), dtype=grad.dtype, device=grad.device)
    host, dev = _valid_hw_pair(valid_hw, grad.device)
    _C.weldon_backward(
        capsule(grad.contiguous()), capsule(indices.contiguous()), capsule(host), capsule(dev),
        kmax, kmax_frac, kmin, kmin_frac, alpha, wildcat, capsule(gx), stream_of(grad),
    )
    return gx


@_weldon_pool_backward.register_fake
def _(grad, indices, valid_hw, height, width, kmax, kmax_frac, kmin, kmin_frac, alpha, wildcat):
    B, C = grad.shape
    return grad.new_empty((B, C, height, width))


def _setup_context(ctx, inputs, output):
    x, valid_hw, kmax, kmax_frac, kmin, kmin_frac, alpha, wildcat, ordered = inputs
    _, idx = output
    ctx.mark_non_differentiable(idx)
    ctx.save_for_backward(idx, valid_hw)
    ctx.hw = (x.shape[2], x.shape[3])
    ctx.params = (kmax, kmax_frac, kmin, kmin_frac, alpha, wildcat)


def _backward(ctx, grad_y, grad_idx):
    idx, valid_hw = ctx.saved_tensors
    if grad_y is None:
        return (None,) * 9
    gx = _weldon_pool_backward(grad_y.contiguous(), idx, valid_hw, ctx.hw[0], ctx.hw[1], *ctx.params)
    return gx, None, None, None, None, None, None, None, None


torch.library.register_autograd("semvis::weldon_pool", _backward, setup_context=_setup_context)


class WeldonResult(NamedTuple):
    """``weldon_pool(..., return_indices=True)``: pooled values and the selected positions.

    ``argmax[b, c]`` lists the positions (flat ``y * W + x`` in the full H x W map) of the kmax
    largest values, largest first; ``argmin`` those of the kmin smallest, smallest first. Slots an
    image does not use (a smaller valid size with fractional k) hold -1.
    """

    values: Tensor
    argmax: Tensor
    argmin: Tensor


def weldon_pool(
    x: Tensor,
    kmax: Union[int, float] = 1,
    kmin: Union[int, float] = 1,
    alpha: float = 1.0,
    valid_hw: Optional[Union[Tensor, Sequence[Tuple[int, int]]]] = None,
    return_indices: bool = False,
    *,
    form: str = "dsve",
) -> Union[Tensor, WeldonResult]:
    """WELDON max+min spatial pooling (Durand et al.; the BEAN / DSVE-loc image head).

    ``y[b, c] = mean of the kmax largest + alpha * mean of the kmin smallest`` values of channel
    ``c``'s map, restricted to the top-left ``valid_hw[b]`` window when given.

    Args:
        x (Tensor[B, C, H, W]): float32, float16, bfloat16 (float64 on either backend for
            gradcheck); any strides. Accumulation is in float32 (float64 for float64).
        kmax (int or float): positions averaged on the max side. An int is a count (0 disables
            the side); a float in (0, 1] is a fraction of the (valid) map size, rounded as ``form``
            says. Default 1 (BEAN).
        kmin (int or float): the same for the min side ("negative evidence"). Default 1.
        alpha (float): weight of the min side. Default 1.
        valid_hw (Tensor[B, 2] or list of (h, w), optional): valid size of each image of a
            padded batch, ``1 <= h <= H``, ``1 <= w <= W``. Fractional k resolve per image.
        return_indices (bool): also return the selected positions (see :class:`WeldonResult`).
        form (str): ``"dsve"`` (default): DSVE-loc / original WELDON, ``mean top + alpha * mean
            bottom``, fractions ``max(1, floor(k * n))``, a count larger than the map is an
            error. ``"wildcat"``: WILDCAT, ``(mean top + alpha * mean bottom) / 2`` when kmin > 0
            and alpha != 0 (else mean top), fractions ``max(1, round(k * n))``, counts clamped
            to the map size.

    Ordering follows ``torch.sort``: NaN ranks above +inf (a NaN in a map is selected by the max
    side and makes that output NaN), ``-0.0 == 0.0``, and ties go to the lowest row-major index.
    Sums are in float64. Results are deterministic; with ``return_indices=True`` they are
    bit-identical on CPU and CUDA (without it the CPU sums the winners in row-major order, which
    skips a sort, and the two backends agree to rounding). The backward pass sends
    ``grad / k`` (times alpha, and 1/2 in the WILDCAT form) to each selected position.

    Returns:
        Tensor[B, C] of x's dtype, or :class:`WeldonResult` when ``return_indices``.
    """
    check_tensor(_OP, "input", x, dtypes=FLOAT_DTYPES, ndim=4)
    kmax_c, kmax_f = check_count_or_fraction(_OP, "kmax", kmax)
    kmin_c, kmin_f = check_count_or_fraction(_OP, "kmin", kmin)
    alpha = check_finite_scalar(_OP, "alpha", alpha)
    if form not in _FORMS:
        raise ValueError(f"{_OP}: form must be one of {_FORMS}, got {form!r}")
    if not isinstance(return_indices, bool):
        raise TypeError(f"{_OP}: return_indices must be a bool, got {type(return_indices).__name__}")
    if valid_hw is not None:
        valid_hw = _as_valid_hw(valid_hw, x)
    # Only callers who see the indices pay for ordering them (the backward needs the sets only).
    y, idx = _weldon_pool(x, valid_hw, kmax_c, kmax_f, kmin_c, kmin_f, alpha, form == "wildcat", return_indices)
    if not return_indices:
        return y
    kt = resolve_k(kmax_c, kmax_f, x.shape[2] * x.shape[3], form == "wildcat")
    idx = idx.long()  # the op saves int32 positions; the public result keeps torch.topk's int64
    return WeldonResult(y, idx[..., :kt], idx[..., kt:])


def _split(k):
    """(kmax, kmin) user values -> the op's (kmax, kmax_frac, kmin, kmin_frac)."""
    a, b = check_count_or_fraction(_OP, "kmax", k[0]), check_count_or_fraction(_OP, "kmin", k[1])
    return a + b


def _as_valid_hw(valid_hw, x: Tensor) -> Tensor:
    valid_hw = as_int64(_OP, "valid_hw", valid_hw, x.device, "a Tensor[B, 2] or a list of (h, w) pairs")
    if valid_hw.dim() != 2 or valid_hw.shape[1] != 2 or valid_hw.shape[0] != x.shape[0]:
        raise ValueError(f"{_OP}: valid_hw must have shape [{x.shape[0]}, 2], got {tuple(valid_hw.shape)}")
    return valid_hw
