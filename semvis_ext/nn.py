"""nn.Module wrappers around the semvis_ext ops. Each holds only its parameters; see the functional."""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor, nn

from .ops.aploss import ap_loss
from .ops.weldon import weldon_pool

__all__ = ["WeldonPool2d", "QuantizedAPLoss", "HardestTripletLoss"]


class WeldonPool2d(nn.Module):
    """See :func:`semvis_ext.weldon_pool`. ``WeldonPool2d(15)`` is DSVE-loc's ``WeldonPooling(15)``.

    ``forward(x, valid_hw=None)``: Tensor[B, C, H, W] -> Tensor[B, C].
    """

    def __init__(self, kmax: Union[int, float] = 1, kmin: Optional[Union[int, float]] = None, alpha: float = 1.0,
                 form: str = "dsve"):
        super().__init__()
        self.kmax = kmax
        self.kmin = kmax if kmin is None else kmin
        self.alpha = alpha
        self.form = form

    def forward(self, x: Tensor, valid_hw: Optional[Tensor] = None) -> Tensor:
        return weldon_pool(x, self.kmax, self.kmin, self.alpha, valid_hw, form=self.form)

    def extra_repr(self) -> str:
        return f"kmax={self.kmax}, kmin={self.kmin}, alpha={self.alpha}, form={self.form!r}"


class QuantizedAPLoss(nn.Module):
    """See :func:`semvis_ext.ap_loss`. ``QuantizedAPLoss(bins=25, score_range=(0, 1))`` is dirtorch's ``APLoss()``.

    ``forward(scores, labels)``: Tensor[Q, N], Tensor[Q, N] -> Tensor[] (or Tensor[Q] with reduction="none").
    """

    def __init__(self, bins: int = 20, score_range=(-1.0, 1.0), reduction: str = "mean"):
        super().__init__()
        self.bins = bins
        self.score_range = tuple(score_range)
        self.reduction = reduction

    def forward(self, scores: Tensor, labels: Tensor) -> Tensor:
        return ap_loss(scores, labels, self.bins, self.score_range, self.reduction)

    def extra_repr(self) -> str:
        return f"bins={self.bins}, score_range={self.score_range}, reduction={self.reduction!r}"
class HardestTripletLoss(nn.Module):
    """See :func:`semvis_ext.vse_hardest_triplet_loss`. Defaults = VSE++ ``ContrastiveLoss(0.2,
    max_violation=True)``.

    ``warmup_updates``: for that many training-mode calls the loss uses every negative (the
    VSE0 sum) before switching to the hardest ones, against the early collapse users report
    with max violation (vsepp#27, #30).

    ``forward(img, txt, labels=None)``: Tensor[B, d] x 2 -> Tensor[].
    """

    def __init__(self, margin: float = 0.2, reduction: str = "sum", both_directions: bool = True, k: int = 1,
                 warmup_updates: int = 0):
        super().__init__()
        self.margin, self.reduction, self.both_directions, self.k = margin, reduction, both_directions, k
        self.warmup_updates = warmup_updates
        self.updates = 0

    def forward(self, img: Tensor, txt: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        from .ops.triplet_losses import vse_hardest_triplet_loss

        negatives = "all" if self.training and self.updates < self.warmup_updates else "hardest"
        if self.training:
            self.updates += 1
        return vse_hardest_triplet_loss(img, txt, self.margin, self.reduction, self.both_directions,
                                        negatives=negatives, k=self.k, labels=labels)

    def extra_repr(self) -> str:
        return (f"margin={self.margin}, reduction={self.reduction!r}, both_directions={self.both_directions}, "
                f"k={self.k}, warmup_updates={self.warmup_updates}")
