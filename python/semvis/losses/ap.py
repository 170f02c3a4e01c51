"""Listwise average-precision losses on batches of embeddings (spec/seeds-000-002.md part 001.4).

``APLoss`` is the quantized AP of Revaud et al. (ICCV 2019): the score matrix of a batch (every
image against every other one, or queries against a database) goes through the fused
``semvis_ext.ap_loss`` op, which needs O(Q * bins) memory besides the scores, so the batch can be
as large as the score matrix allows (the paper trains with 4,096 images). ``FastAPLoss`` is the
FastAP of Cakir et al. (CVPR 2019) on the same kernel.
"""
from __future__ import annotations

from typing import Optional, Tuple

from torch import Tensor, nn

import semvis_ext


def _off_diagonal(m: Tensor) -> Tensor:
    """[B, B] -> [B, B - 1]: each row without its diagonal entry (the query itself)."""
    B = m.shape[0]
    return m.reshape(-1)[1:].reshape(B - 1, B + 1)[:, :-1].reshape(B, B - 1)


class _ListwiseLoss(nn.Module):
    """Builds (scores, relevance) from a batch, then calls :meth:`compute_loss`."""

    def __init__(self, normalize: bool = False, reduction: str = "mean"):
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"{type(self).__name__}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.normalize = bool(normalize)
        self.reduction = reduction

    def compute_loss(self, scores: Tensor, relevance: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(
        self,
        embeddings: Tensor,
        labels: Optional[Tensor] = None,
        *,
        relevance: Optional[Tensor] = None,
        db_embeddings: Optional[Tensor] = None,
        db_labels: Optional[Tensor] = None,
    ) -> Tensor:
        """Loss of a batch.

        Args:
            embeddings (Tensor[B, D]): query embeddings; similarities are dot products, so they
                should be l2-normalized (or pass ``normalize=True`` to the constructor).
            labels (Tensor[B], optional): integer class of each embedding; an item is relevant to
                a query when their classes are equal. Give either ``labels`` or ``relevance``.
            relevance (Tensor[B, B] or Tensor[B, N], optional): bool / uint8 or a graded weight in
                [0, 1] (e.g. a tf-idf caption similarity) of each item for each query.
            db_embeddings (Tensor[N, D], optional): a separate database; without it each query
                is ranked against the other embeddings of the batch (itself excluded).
            db_labels (Tensor[N], optional): classes of the database items (with ``labels``).

        Returns:
            Tensor[] (or Tensor[B] with ``reduction="none"``). Queries without any relevant item
            are left out (see :func:`semvis_ext.ap_loss`).
        """
        name = type(self).__name__
        if not isinstance(embeddings, Tensor) or embeddings.dim() != 2:
            raise ValueError(f"{name}: embeddings must be a Tensor[B, D]")
        if (labels is None) == (relevance is None):
            raise ValueError(f"{name}: give exactly one of labels and relevance")
        q = nn.functional.normalize(embeddings, dim=1) if self.normalize else embeddings
        in_batch = db_embeddings is None
        if in_batch:
            if embeddings.shape[0] < 2:
                raise ValueError(f"{name}: in-batch ranking needs at least 2 embeddings, got {embeddings.shape[0]}")
            db = q
        else:
            if not isinstance(db_embeddings, Tensor) or db_embeddings.dim() != 2:
                raise ValueError(f"{name}: db_embeddings must be a Tensor[N, D]")
            if db_embeddings.shape[1] != embeddings.shape[1]:
                raise ValueError(
                    f"{name}: db_embeddings must have {embeddings.shape[1]} columns, got {db_embeddings.shape[1]}"
                )
            db = nn.functional.normalize(db_embeddings, dim=1) if self.normalize else db_embeddings
        if labels is not None:
            other = labels if in_batch else db_labels
            if other is None:
                raise ValueError(f"{name}: db_labels is needed with labels and db_embeddings")
            if labels.dim() != 1 or labels.shape[0] != q.shape[0] or other.dim() != 1 or other.shape[0] != db.shape[0]:
                raise ValueError(f"{name}: labels must be Tensor[B] (and db_labels Tensor[N]) matching the embeddings")
            relevance = labels.view(-1, 1) == other.view(1, -1)
        elif relevance.shape != (q.shape[0], db.shape[0]):
            raise ValueError(
                f"{name}: relevance must have shape {(q.shape[0], db.shape[0])}, got {tuple(relevance.shape)}"
            )
        scores = q @ db.t()
        if in_batch:
            scores, relevance = _off_diagonal(scores), _off_diagonal(relevance)
        return self.compute_loss(scores, relevance)


class APLoss(_ListwiseLoss):
    """Quantized AP loss (Revaud et al., ICCV 2019) of a batch: ``1 - mean quantized AP``.

    Args:
        bins (int): histogram bins on ``score_range``, default 20 (the paper).
        score_range (tuple of float): range of the similarities, default (-1, 1) (cosine).
        normalize (bool): l2-normalize the embeddings first. Default False.
        reduction (str): ``"mean"``, ``"sum"`` or ``"none"`` (see :func:`semvis_ext.ap_loss`).
    """

    def __init__(self, bins: int = 20, score_range: Tuple[float, float] = (-1.0, 1.0), normalize: bool = False,
                 reduction: str = "mean"):
        super().__init__(normalize, reduction)
        self.bins = bins
        self.score_range = tuple(score_range)

    def compute_loss(self, scores: Tensor, relevance: Tensor) -> Tensor:
        return semvis_ext.ap_loss(scores, relevance, self.bins, self.score_range, self.reduction)

    def extra_repr(self) -> str:
        return f"bins={self.bins}, score_range={self.score_range}, normalize={self.normalize}, reduction={self.reduction!r}"


class FastAPLoss(_ListwiseLoss):
    """FastAP loss (Cakir et al., CVPR 2019) of a batch, on squared distances ``2 - 2 s`` of unit vectors.

    Args:
        bins (int): FastAP's ``num_bins`` (``bins + 1`` histogram bins on [0, 4]), default 10.
        normalize (bool): l2-normalize the embeddings first. Default True (FastAP assumes unit vectors).
        reduction (str): as :class:`APLoss`.
    """

    def __init__(self, bins: int = 10, normalize: bool = True, reduction: str = "mean"):
        super().__init__(normalize, reduction)
        self.bins = bins

    def compute_loss(self, scores: Tensor, relevance: Tensor) -> Tensor:
        return semvis_ext.fast_ap_loss(2 - 2 * scores, relevance, self.bins, (0.0, 4.0), self.reduction)

    def extra_repr(self) -> str:
        return f"bins={self.bins}, normalize={self.normalize}, reduction={self.reduction!r}"
