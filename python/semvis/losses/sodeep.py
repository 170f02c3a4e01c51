"""Rank losses built on a SoDeep sorter (Engilberge et al., CVPR 2019; spec seeds-003-004 A.10.3).

Every loss takes any sorter of :mod:`semvis.models.sodeep` (handcrafted, LSTM, CNN): a module mapping
scores ``Tensor[B, n]`` to soft ranks ``(1 + descending rank) / n``. A learned sorter is usually
frozen (``requires_grad_(False)``) and only passes gradients to the scores; it accepts one length,
so the group / batch size must equal the length it was trained for (it refuses others).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semvis_ext.reference.soft_rank import exact_rank

__all__ = ["SpearmanLoss", "MAPRankLoss", "RankHardLoss"]


def _check_sorter(name: str, sorter) -> nn.Module:
    if not callable(sorter):
        raise TypeError(f"{name}: sorter must be a module mapping Tensor[B, n] scores to ranks, got "
                        f"{type(sorter).__name__}")
    return sorter


class SpearmanLoss(nn.Module):
    """Eq. 5.6 with the L1 warm-up: ``MSE(sorter(pred), rank(target)) + l1_weight * L1(pred, target)``.

    Maximising Spearman's correlation is minimising the squared rank differences (Eq. 5.5); the
    mean over the elements is taken (the official code's MSELoss). The L1 term aligns the score
    distribution with the targets at the start ("combined with an L1 loss for the first epoch"):
    keep ``l1_weight = 1`` for the warm-up, then call :meth:`end_warmup` (sets it to 0).

    ``forward(pred Tensor[n] or [B, n], target same shape) -> scalar``. Each row is one group.
    """

    def __init__(self, sorter: nn.Module, l1_weight: float = 1.0):
        super().__init__()
        self.sorter = _check_sorter("SpearmanLoss", sorter)
        self.l1_weight = float(l1_weight)

    def end_warmup(self) -> None:
        self.l1_weight = 0.0

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        if not isinstance(pred, Tensor) or not isinstance(target, Tensor):
            raise TypeError("SpearmanLoss: pred and target must be tensors")
        if pred.shape != target.shape or pred.dim() not in (1, 2):
            raise ValueError(f"SpearmanLoss: pred and target must have the same [n] or [B, n] shape, got "
                             f"{tuple(pred.shape)} and {tuple(target.shape)}")
        p2 = pred if pred.dim() == 2 else pred.unsqueeze(0)
        t2 = target if target.dim() == 2 else target.unsqueeze(0)
        rank_pred = self.sorter(p2)
        # exact targets in the sorters' convention, (1 + descending rank) / n
        loss = F.mse_loss(rank_pred, exact_rank(t2.detach()).to(rank_pred.dtype))
        if self.l1_weight:
            loss = loss + self.l1_weight * F.l1_loss(p2, t2)
        return loss


class MAPRankLoss(nn.Module):
    """Eq. 5.9: ``sum_c <sorter(y_c), y*_c>``, the predicted (normalised) ranks of the positives of
    each class, summed; minimising it pushes the positives to the top (a mean-AP surrogate).

    ``forward(scores Tensor[N, C], labels Tensor[N, C] in {0, 1}) -> scalar``: the sorter ranks
    each class's N scores (so N must be its length); classes without a positive are skipped (as the
    official code). ``reduction="sum"`` (Eq. 5.9, default) or ``"mean"`` (divided by the number of
    positives).
    """

    def __init__(self, sorter: nn.Module, reduction: str = "sum"):
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError(f"MAPRankLoss: reduction must be 'sum' or 'mean', got {reduction!r}")
        self.sorter = _check_sorter("MAPRankLoss", sorter)
        self.reduction = reduction

    def forward(self, scores: Tensor, labels: Tensor) -> Tensor:
        if not isinstance(scores, Tensor) or not isinstance(labels, Tensor):
            raise TypeError("MAPRankLoss: scores and labels must be tensors")
        if scores.dim() != 2 or labels.shape != scores.shape:
            raise ValueError(f"MAPRankLoss: scores and labels must both be [N, C], got {tuple(scores.shape)} and "
                             f"{tuple(labels.shape)}")
        lab = labels.to(scores.dtype)
        if ((lab != 0) & (lab != 1)).any():
            raise ValueError("MAPRankLoss: labels must be 0 or 1")
        has_pos = lab.sum(0) > 0
        if not bool(has_pos.any()):
            return scores.sum() * 0  # no positive anywhere: a zero that keeps the graph
        ranks = self.sorter(scores.t()[has_pos])  # [C', N]
        total = (ranks * lab.t()[has_pos]).sum()
        return total if self.reduction == "sum" else total / lab.sum()


class RankHardLoss(nn.Module):
    """Eqs. 5.11-5.12, the rank-space hard-negative triplet loss, as the official ``RankHardLoss``.

    For a score matrix ``S Tensor[d, d]`` whose diagonal holds the positive pairs: the sorter ranks
    each row; the hardest negative is the smallest rank off the diagonal; the loss is
    ``sum_i max(0, rank_ii + margin - min_{c != i} rank_ic)``, computed on S (caption retrieval)
    and on S^T (image retrieval) and summed. The margin is one normalised rank step ``1/d`` by
    default (the official code ignores its ``margin`` argument and uses 1/d).

    ``forward(scores Tensor[d, d]) -> scalar``; d must be the sorter's length (the batch size).
    """

    def __init__(self, sorter: nn.Module, margin: Optional[float] = None):
        super().__init__()
        self.sorter = _check_sorter("RankHardLoss", sorter)
        self.margin = margin

    def _one_way(self, S: Tensor) -> Tensor:
        d = S.shape[0]
        rank = self.sorter(S)
        pos = rank.diagonal()
        eye = torch.eye(d, dtype=torch.bool, device=S.device)
        hard_neg = rank.masked_fill(eye, float("inf")).min(1).values
        margin = 1.0 / d if self.margin is None else self.margin
        return torch.clamp(pos + margin - hard_neg, min=0).sum()

    def forward(self, scores: Tensor) -> Tensor:
        if not isinstance(scores, Tensor):
            raise TypeError(f"RankHardLoss: scores must be a torch.Tensor, got {type(scores).__name__}")
        if scores.dim() != 2 or scores.shape[0] != scores.shape[1] or scores.shape[0] < 2:
            raise ValueError(f"RankHardLoss: scores must be a square [d, d] matrix with d >= 2 (positives on the "
                             f"diagonal), got {tuple(scores.shape)}")
        return self._one_way(scores) + self._one_way(scores.t())
