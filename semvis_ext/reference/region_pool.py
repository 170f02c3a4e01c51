"""References of semvis_ext.rmac_regions and region_pool, and cirtorch's R-MAC formulation in torch."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def rmac_regions_cirtorch(H: int, W: int, levels: int = 3, include_global: bool = True) -> Tensor:
    """The region grid of cirtorch's ``roipool`` (cirtorch/layers/functional.py), transcribed with
    the same torch float32 expressions, returned as (y, x, height, width) rows: the full map first
    (when ``include_global``), then levels 1..L, H outer and W inner. Our re-statement of the
    formula, kept line for line so that its float32 rounding is the peer's.
    """
    import math

    ovr = 0.4
    steps = torch.tensor([2, 3, 4, 5, 6, 7], dtype=torch.float32)
    w = min(W, H)
    b = (max(H, W) - w) / (steps - 1)
    _, idx = torch.min(torch.abs(((w ** 2 - w * b) / w ** 2) - ovr), 0)
    Wd = Hd = 0
    if H < W:
        Wd = idx.item() + 1
    elif H > W:
        Hd = idx.item() + 1
    rows = [[0, 0, H, W]] if include_global else []
    for l in range(1, levels + 1):
        wl = math.floor(2 * w / (l + 1))
        wl2 = math.floor(wl / 2 - 1)
        b = 0 if l + Wd == 1 else (W - wl) / (l + Wd - 1)
        cenW = torch.floor(wl2 + torch.tensor(range(l - 1 + Wd + 1), dtype=torch.float32) * b).int() - wl2
        b = 0 if l + Hd == 1 else (H - wl) / (l + Hd - 1)
        cenH = torch.floor(wl2 + torch.tensor(range(l - 1 + Hd + 1), dtype=torch.float32) * b).int() - wl2
        for i_ in cenH.tolist():
            for j_ in cenW.tolist():
                if wl == 0:
                    continue
                rows.append([i_, j_, wl, wl])
    return torch.tensor(rows, dtype=torch.int64).reshape(-1, 4)


def region_pool(x: Tensor, boxes, p: Optional[Tensor] = None, eps: float = 1e-6) -> Tensor:
    """Pools every box of every image by slicing: ``boxes`` is a list (one per image) of
    (y, x, h, w) rows. Max (``p`` None) by ``amax``; GeM by ``clamp(eps).pow(p).mean().pow(1/p)``.
    Returns Tensor[B, R, C] (R = the largest box count; missing slots are 0). Differentiable
    through torch autograd (``amax`` splits the gradient evenly between tied maxima).
    """
    B, C = x.shape[:2]
    R = max((len(bx) for bx in boxes), default=0)
    out = []
    for b in range(B):
        vecs = []
        for (y0, x0, h, w) in [tuple(int(v) for v in row) for row in boxes[b]]:
            reg = x[b, :, y0:y0 + h, x0:x0 + w]
            if p is None:
                vecs.append(reg.amax(dim=(1, 2)))
            else:
                vecs.append(reg.clamp(min=eps).pow(p).mean(dim=(1, 2)).pow(1.0 / p))
        vecs += [x.new_zeros(C)] * (R - len(vecs))
        out.append(torch.stack(vecs) if vecs else x.new_zeros(0, C))
    return torch.stack(out)


def rmac_cirtorch(x: Tensor, L: int = 3, eps: float = 1e-6) -> Tensor:
    """cirtorch's ``rmac(x, L)`` formulation in torch (max-pool per region, ℓ2 with eps added to the
    norm, summed over the full map and every grid region; un-normalized): the peer baseline of the
    benchmark. Returns Tensor[B, C].
    """
    import torch.nn.functional as F

    H, W = x.shape[2], x.shape[3]
    regions = rmac_regions_cirtorch(H, W, L, include_global=True).tolist()
    v = None
    for (y0, x0, h, w) in regions:
        vt = F.max_pool2d(x.narrow(2, y0, h).narrow(3, x0, w), (h, w))
        vt = vt / (torch.norm(vt, p=2, dim=1, keepdim=True) + eps).expand_as(vt)
        v = vt if v is None else v + vt
    return v.flatten(1)
