"""R-MAC region grid and fused region pooling (MAC / GeM) as the torch op ``semvis::region_pool``."""
from __future__ import annotations

import functools
import numbers
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .._lib import FLOAT_DTYPES, _C, as_int64, capsule, check_tensor, stream_of

_OP = "region_pool"


def _check_int(op: str, name: str, v, minimum: int, maximum: Optional[int] = 2**63 - 1) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{op}: {name} must be an int, got {type(v).__name__}")
    if v < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{op}: {name} must be <= {maximum}, got {v}")
    return int(v)


@functools.lru_cache(maxsize=1024)
def _grid(H: int, W: int, levels: int, include_global: bool) -> Tensor:
    n = _C.rmac_region_count(H, W, levels, include_global)
    out = torch.empty((n, 4), dtype=torch.int64)
    _C.rmac_regions_fill(H, W, levels, include_global, capsule(out))
    return out


def rmac_regions(H: int, W: int, levels: int = 3, include_global: bool = True) -> Tensor:
    """The R-MAC region grid of Tolias et al., region for region as cirtorch computes it.

    Square regions of side ``wl = floor(2 * min(H, W) / (l + 1))`` at levels ``l = 1..levels``,
    ``l`` of them along the short side and ``l + d`` along the long side, where ``d`` in 1..6
    (``steps`` 2..7) makes neighbours overlap closest to 40 %; offsets ``floor(wl2 + i * b) - wl2``
    in float32 exactly as cirtorch's ``roipool`` (``cirtorch/layers/functional.py``). Levels whose
    side rounds to 0 contribute nothing.

    Args:
        H (int), W (int): feature-map size, >= 1.
        levels (int): number of levels L, >= 1. Default 3.
        include_global (bool): put the full map first (cirtorch; default). ``False`` gives the
            Gordo/Tolias Caffe list (grid regions only).

    Returns:
        Tensor[R, 4] int64 on the cpu: rows (y, x, height, width) in feature-map cells, the full
        map first, then level 1, 2, ... each in row-major order (H outer, W inner).
    """
    H = _check_int("rmac_regions", "H", H, 1, 2**31 - 1)  # boxes hold int32 coordinates
    W = _check_int("rmac_regions", "W", W, 1, 2**31 - 1)
    levels = _check_int("rmac_regions", "levels", levels, 1, None)
    if not isinstance(include_global, bool):
        raise TypeError(f"rmac_regions: include_global must be a bool, got {type(include_global).__name__}")
    return _grid(H, W, _last_level(H, W, levels), include_global).clone()


def _last_level(H: int, W: int, levels: int) -> int:
    """Levels past 2 * min(H, W) - 1 hold no region (side 0): any int levels is the same grid as this."""
    return min(levels, 2 * max(1, min(H, W)))


def _num_regions(x: Tensor, boxes: Optional[Tensor], valid_hw: Optional[Tensor], levels: int, include_global: bool):
    if boxes is not None:
        return boxes.shape[1]
    H, W = int(x.shape[2]), int(x.shape[3])  # specializes symbolic sizes: the grid depends on them
    return _C.rmac_region_count(H, W, levels, include_global, valid_hw is not None)


def _pair(t: Optional[Tensor], device: torch.device):
    if t is None:
        return None, None
    host = t.to("cpu", torch.int64).contiguous()  # a device sync when t lives on the GPU
    dev = host if device.type == "cpu" else t.to(device, torch.int64).contiguous()
    return host, dev


def _region_args(x, boxes, counts, valid_hw):
    bh, bd = _pair(boxes, x.device)
    ch, cd = _pair(counts, x.device)
    vh, vd = _pair(valid_hw, x.device)
    return (capsule(bh), capsule(bd), capsule(ch), capsule(cd), capsule(vh), capsule(vd)), (bh, bd, ch, cd, vh, vd)


@torch.library.custom_op("semvis::region_pool", mutates_args=())
def _region_pool(
    x: Tensor,
    boxes: Optional[Tensor],
    counts: Optional[Tensor],
    valid_hw: Optional[Tensor],
    levels: int,
    include_global: bool,
    p: Optional[Tensor],
    eps: float,
) -> Tuple[Tensor, Tensor]:
    B, C = x.shape[0], x.shape[1]
    R = _num_regions(x, boxes, valid_hw, levels, include_global)
    y = torch.empty((B, R, C), dtype=x.dtype, device=x.device)
    n = torch.empty((B,), dtype=torch.int64)
    caps, _keep = _region_args(x, boxes, counts, valid_hw)
    _C.region_pool_forward(capsule(x), *caps, levels, include_global, capsule(p), eps, capsule(y), capsule(n),
                           stream_of(x))
    mask = torch.arange(R).unsqueeze(0) < n.unsqueeze(1)
    return y, mask.to(x.device)


@_region_pool.register_fake
def _(x, boxes, counts, valid_hw, levels, include_global, p, eps):
    B, C = x.shape[0], x.shape[1]
    R = _num_regions(x, boxes, valid_hw, levels, include_global)
    return x.new_empty((B, R, C)), x.new_empty((B, R), dtype=torch.bool)


@torch.library.custom_op("semvis::region_pool_backward", mutates_args=())
def _region_pool_backward(
    grad: Tensor,
    x: Tensor,
    boxes: Optional[Tensor],
    counts: Optional[Tensor],
    valid_hw: Optional[Tensor],
    levels: int,
    include_global: bool,
    p: Optional[Tensor],
    eps: float,
) -> Tuple[Tensor, Tensor]:
    B, C = x.shape[0], x.shape[1]
    gx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    gp = torch.empty((B * C if p is not None else 0,), dtype=_acc_dtype(x.dtype), device=x.device)
    caps, _keep = _region_args(x, boxes, counts, valid_hw)
    _C.region_pool_backward(capsule(grad.contiguous()), capsule(x), *caps, levels, include_global, capsule(p), eps,
                            capsule(gx), capsule(gp if p is not None else None), stream_of(x))
    return gx, gp


@_region_pool_backward.register_fake
def _(grad, x, boxes, counts, valid_hw, levels, include_global, p, eps):
    B, C = x.shape[0], x.shape[1]
    return x.new_empty(x.shape), x.new_empty((B * C if p is not None else 0,), dtype=_acc_dtype(x.dtype))


def _setup_context(ctx, inputs, output):
    x, boxes, counts, valid_hw, levels, include_global, p, eps = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(x, boxes, counts, valid_hw, p)
    ctx.params = (levels, include_global, eps)


def _backward(ctx, grad_y, grad_mask):
    x, boxes, counts, valid_hw, p = ctx.saved_tensors
    levels, include_global, eps = ctx.params
    if grad_y is None:
        return (None,) * 8
    gx, gp_rows = _region_pool_backward(grad_y.contiguous(), x, boxes, counts, valid_hw, levels, include_global, p,
                                        eps)
    gp = None
    if p is not None and ctx.needs_input_grad[6]:
        gp = gp_rows.sum().reshape(p.shape)
    return gx, None, None, None, None, None, gp, None


torch.library.register_autograd("semvis::region_pool", _backward, setup_context=_setup_context)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


class RegionPoolResult(NamedTuple):
    """``region_pool(..., return_mask=True)``: pooled regions and which of them are real.

    ``mask[b, r]`` is True for the regions image ``b`` has (``r < count_b``; regions of an image
    always come first); the other slots of ``values`` hold 0.
    """

    values: Tensor
    mask: Tensor


def region_pool(
    x: Tensor,
    regions: Optional[Union[Tensor, Sequence[Tensor]]] = None,
    levels: int = 3,
    valid_hw: Optional[Union[Tensor, Sequence[Tuple[int, int]]]] = None,
    p: Optional[Union[Tensor, float]] = None,
    *,
    include_global: bool = True,
    eps: float = 1e-6,
    return_mask: bool = False,
) -> Union[Tensor, RegionPoolResult]:
    """Max (MAC) or GeM pooling of every region of every image in one launch (R-MAC's first step).

    ``y[b, r, c] = max`` of ``x[b, c]`` over region ``r`` of image ``b`` (``p`` None), or
    ``(mean over the region of max(x, eps)^p)^(1/p)`` (GeM, cirtorch's ``gem``; ``p = 1`` is the
    average of the clamped map). The map is read in place: no region is ever copied.

    Regions, in feature-map cells (y, x, height, width):

    * ``regions=None``: the R-MAC grid (:func:`rmac_regions` with ``levels`` and
      ``include_global``) of each image's valid size: the full ``H x W`` map, or the top-left
      ``valid_hw[b]`` window of image ``b`` in a padded batch.
    * ``regions`` a Tensor[R, 4] (the same boxes for every image), a Tensor[B, R, 4], or a list of
      B Tensor[R_b, 4] (per-image boxes, e.g. learned proposals; any integer dtype). Every box
      must be non-empty and inside the map (inside ``valid_hw[b]`` when given).

    Variable region counts are returned **padded with a validity mask**: the region dimension R is
    fixed by the shapes (explicit boxes: the largest R_b; grid with ``valid_hw``: the largest grid
    of any size up to ``H x W``, so the output shape never depends on data; grid without
    ``valid_hw``: exactly the grid of ``H x W``). Image ``b``'s regions come first, the remaining
    slots hold 0 and ``mask[b, r]`` is False (``return_mask=True``).

    Args:
        x (Tensor[B, C, H, W]): float32, float16, bfloat16 (float64 for gradcheck), any strides,
            cpu or cuda. Accumulation is in float32 (float64 for float64).
        regions: see above. Default None (grid).
        levels (int): grid levels L >= 1 (ignored with explicit regions). Default 3.
        valid_hw (Tensor[B, 2] or list of (h, w), optional): valid size of each image of a padded
            batch, ``1 <= h <= H``, ``1 <= w <= W``.
        p (Tensor or float, optional): GeM exponent, one element (a learnable Parameter is fine:
            its gradient is returned). Used in float32 (float64 for float64 input); on ``x``'s
            device. Must be > 0 (checked when it lives on the cpu). None: max pooling.
        include_global (bool): grid includes the full map first (cirtorch). Default True.
        eps (float): GeM clamp. Default 1e-6.
        return_mask (bool): also return the validity mask (see :class:`RegionPoolResult`).

    Max ties go to the lowest row-major position (the whole gradient goes there); NaN ranks above
    +inf. NaN propagates as the definition does: a NaN in a region makes that region's MAC / GeM
    output NaN (and its gradient goes to the NaN's position); other regions are unaffected. The backward pass recomputes the arg-max from ``x`` instead of storing indices, so the
    op keeps nothing but its output: extra memory is ``B * R * C`` values (+ ``B * C`` floats in
    GeM's backward). Explicit boxes and ``valid_hw`` on a GPU are copied to the host once per call
    for validation (a sync).

    Returns:
        Tensor[B, R, C] of x's dtype, or :class:`RegionPoolResult` ``(values, mask[B, R] bool)``.
    """
    check_tensor(_OP, "input", x, dtypes=FLOAT_DTYPES, ndim=4)
    if min(x.shape) == 0:
        raise ValueError(f"{_OP}: input must be non-empty in every dimension, got shape {tuple(x.shape)}")
    levels = _last_level(int(x.shape[2]), int(x.shape[3]), _check_int(_OP, "levels", levels, 1, None))
    if not isinstance(include_global, bool):
        raise TypeError(f"{_OP}: include_global must be a bool, got {type(include_global).__name__}")
    if not isinstance(return_mask, bool):
        raise TypeError(f"{_OP}: return_mask must be a bool, got {type(return_mask).__name__}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not (0 < float(eps) < float("inf")):
        raise ValueError(f"{_OP}: eps must be a finite number > 0, got {eps!r}")
    B = x.shape[0]
    if valid_hw is not None:
        valid_hw = _as_index_tensor(valid_hw, "valid_hw", x.device)
        if valid_hw.dim() != 2 or valid_hw.shape[1] != 2 or valid_hw.shape[0] != B:
            raise ValueError(f"{_OP}: valid_hw must have shape [{B}, 2], got {tuple(valid_hw.shape)}")
    boxes = counts = None
    if regions is not None:
        boxes, counts = _as_boxes(regions, B, x.device)
    if p is not None:
        p = _as_p(p, x)
    y, mask = _region_pool(x, boxes, counts, valid_hw, levels, include_global, p, float(eps))
    return RegionPoolResult(y, mask) if return_mask else y


def _as_index_tensor(t, name: str, device) -> Tensor:
    return as_int64(_OP, name, t, device, "an integer Tensor or nested lists of ints")


def _as_boxes(regions, B: int, device) -> Tuple[Tensor, Tensor]:
    if isinstance(regions, (list, tuple)) and (len(regions) == 0 or isinstance(regions[0], Tensor)):
        if len(regions) != B:
            raise ValueError(f"{_OP}: regions as a list needs one Tensor[R_b, 4] per image ({B}), got {len(regions)}")
        per = [_as_index_tensor(r, f"regions[{i}]", device) for i, r in enumerate(regions)]
        for i, r in enumerate(per):
            if r.dim() != 2 or r.shape[1] != 4:
                raise ValueError(f"{_OP}: regions[{i}] must have shape [R, 4], got {tuple(r.shape)}")
        R = max(r.shape[0] for r in per)
        boxes = torch.zeros((B, R, 4), dtype=torch.int64, device=device)
        for i, r in enumerate(per):
            boxes[i, : r.shape[0]] = r
        counts = torch.tensor([r.shape[0] for r in per], dtype=torch.int64, device=device)
        return boxes, counts
    t = _as_index_tensor(regions, "regions", device)
    if t.dim() == 2 and t.shape[1] == 4:
        t = t.unsqueeze(0).expand(B, -1, -1)
    if t.dim() != 3 or t.shape[0] != B or t.shape[2] != 4:
        raise ValueError(f"{_OP}: regions must have shape [R, 4] or [{B}, R, 4], got {tuple(t.shape)}")
    counts = torch.full((B,), t.shape[1], dtype=torch.int64, device=device)
    return t.contiguous(), counts


def _as_p(p, x: Tensor) -> Tensor:
    acc = _acc_dtype(x.dtype)
    if isinstance(p, bool):
        raise TypeError(f"{_OP}: p must be a Tensor or a float, got bool")
    if isinstance(p, numbers.Real):
        p = torch.tensor([float(p)], dtype=acc, device=x.device)
    if not isinstance(p, Tensor):
        raise TypeError(f"{_OP}: p must be a Tensor or a float, got {type(p).__name__}")
    if not p.dtype.is_floating_point:
        raise TypeError(f"{_OP}: p must be a floating Tensor, got {str(p.dtype).replace('torch.', '')}")
    if p.numel() != 1:
        raise ValueError(f"{_OP}: p must have exactly one element, got shape {tuple(p.shape)}")
    if p.device != x.device:
        raise ValueError(f"{_OP}: p must be on the device of the input ({x.device}), got {p.device}")
    if p.device.type == "cpu" and not torch.compiler.is_compiling():
        v = float(p.detach().reshape(()))
        if not (0 < v < float("inf")):
            raise ValueError(f"{_OP}: p must be a finite number > 0, got {v}")
    return p if p.dtype == acc else p.to(acc)
