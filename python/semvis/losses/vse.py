"""The bidirectional hardest-negative triplet loss of VSE++ / BEAN / DSVE-loc (Eq. 7 of
Engilberge et al. 2018, Eq. 3.11 of the thesis).

The computation is the fused op ``semvis_ext.vse_hardest_triplet_loss`` (CPU and CUDA, backward as
an op); this module adds the checks of a training-facing API and the nn.Module.
"""
from __future__ import annotations

import numbers
from typing import Optional

from torch import Tensor, nn

import semvis_ext

__all__ = ["HardestNegativeTripletLoss", "hardest_negative_triplet_loss"]

_REDUCTIONS = ("sum", "mean")
_NEGATIVES = ("hardest", "all")


def hardest_negative_triplet_loss(img: Tensor, txt: Tensor, margin: float = 0.2, reduction: str = "sum",
                                  both_directions: bool = True, *, negatives: str = "hardest", k: int = 1,
                                  labels: Optional[Tensor] = None) -> Tensor:
    """Bidirectional hinge triplet loss on the hardest in-batch negatives.

    With ``S = img @ txt.T`` and matched pairs on the diagonal, image i (row) costs
    ``sum over its k hardest captions j != i of [margin + S[i, j] - S[i, i]]_+`` and caption j
    (column) ``sum over its k hardest images i != j of [margin + S[i, j] - S[j, j]]_+``.
    ``k = 1`` with ``reduction="sum"`` is VSE++ ``ContrastiveLoss(margin=0.2, max_violation=True)``
    (fartashf/vsepp); ``k > 1`` is DSVE-loc ``HardNegativeContrastiveLoss(nmax=k)``;
    ``negatives="all"`` sums over every negative (VSE0, the usual warm-up against the early
    collapse reported with the hardest negative).

    Args:
        img (Tensor[B, d]): image embeddings (ℓ2-normalized by the model, not here).
        txt (Tensor[B, d]): caption embeddings, row i matched with ``img`` row i.
        margin (float): hinge margin α (0.2 in VSE++ and the DSVE-loc code; the paper gives none).
        reduction (str): ``"sum"`` (the public codes) or ``"mean"`` (divided by B, Eq. 7).
        both_directions (bool): both terms (default) or the image-query term only.
        negatives (str): ``"hardest"`` (k hardest per query) or ``"all"``.
        k (int): negatives per query for ``"hardest"``, clamped to B - 1.
        labels (Tensor[B] int64, optional): pairs with equal labels (two captions of one image)
            are not negatives of each other.

    Returns:
        Tensor[] (0-dim): the loss (float32; float64 for float64 inputs).
    """
    for name, t in (("img", img), ("txt", txt)):
        if not isinstance(t, Tensor):
            raise TypeError(f"hardest_negative_triplet_loss: {name} must be a Tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise ValueError(f"hardest_negative_triplet_loss: {name} must be [B, d], got shape {tuple(t.shape)}")
    if img.shape != txt.shape:
        raise ValueError(f"hardest_negative_triplet_loss: img and txt must have the same shape, got "
                         f"{tuple(img.shape)} and {tuple(txt.shape)}")
    if img.shape[0] == 0:
        raise ValueError("hardest_negative_triplet_loss: empty batch")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"hardest_negative_triplet_loss: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if negatives not in _NEGATIVES:
        raise ValueError(f"hardest_negative_triplet_loss: negatives must be one of {_NEGATIVES}, got {negatives!r}")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"hardest_negative_triplet_loss: k must be an int >= 1, got {k!r}")
    return semvis_ext.vse_hardest_triplet_loss(img, txt, margin, reduction, both_directions, negatives=negatives,
                                               k=int(k), labels=labels)


class HardestNegativeTripletLoss(nn.Module):
    """See :func:`hardest_negative_triplet_loss`. ``forward(img Tensor[B, d], txt Tensor[B, d],
    labels=None) -> Tensor[]``; the knobs are public fields."""

    def __init__(self, margin: float = 0.2, reduction: str = "sum", both_directions: bool = True,
                 negatives: str = "hardest", k: int = 1):
        super().__init__()
        self.margin, self.reduction, self.both_directions = margin, reduction, both_directions
        self.negatives, self.k = negatives, k

    def forward(self, img: Tensor, txt: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        return hardest_negative_triplet_loss(img, txt, self.margin, self.reduction, self.both_directions,
                                             negatives=self.negatives, k=self.k, labels=labels)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, reduction={self.reduction!r}, negatives={self.negatives!r}, k={self.k}"
