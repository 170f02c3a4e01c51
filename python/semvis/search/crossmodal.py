"""Cross-modal search between images and captions, with the re-ranking of Engilberge's thesis
(Eqs. 3.12 / 3.13; spec seeds-003-004 A.5, K4).

With ``S[i, j] = <x_i, v_j>`` (rows = images, columns = captions):

* image retrieval (a caption query ranks the images down its column):
  ``S_IR[i, j] = S[i, j] + S[i, j] / max(S[i, :])`` (image i's best caption score);
* caption retrieval (an image query ranks the captions along its row):
  ``S_CR[i, j] = S[i, j] + S[i, j] / max(S[:, j])`` (caption j's best image score).

The two directions use different matrices by design (never symmetrized). Cosine maxima can be
<= 0: the denominators are clamped to >= ``eps`` (default 1e-6), so a row or column whose best
score is not positive is scaled by 1/eps. Searches return ``(D, I)`` like FAISS: scores first,
best first, ``-1`` / ``-inf`` padded when k exceeds the database.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = ["rerank_image_retrieval", "rerank_caption_retrieval", "CrossModalIndex", "index_captioned_images"]


def _check_matrix(name: str, S) -> Tensor:
    if not isinstance(S, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(S).__name__}")
    if S.dim() != 2 or not S.is_floating_point():
        raise ValueError(f"{name} must be a floating-point [M, N] matrix, got {S.dtype} of shape {tuple(S.shape)}")
    if S.numel() == 0:
        raise ValueError(f"{name} is empty, got shape {tuple(S.shape)}")
    return S


def _check_eps(eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (eps > 0) or eps == float("inf"):
        raise ValueError(f"eps must be a positive finite float, got {eps!r}")
    return float(eps)


def rerank_image_retrieval(S: Tensor, eps: float = 1e-6) -> Tensor:
    """S_IR = S + S / rowmax(S) (Eq. 3.12): rank the images i of column j for caption query j.

    Args:
        S (Tensor[M, N]): image-by-caption scores. eps (float): denominator guard.

    Returns:
        Tensor[M, N].
    """
    S = _check_matrix("S", S)
    return S + S / S.amax(1, keepdim=True).clamp(min=_check_eps(eps))


def rerank_caption_retrieval(S: Tensor, eps: float = 1e-6) -> Tensor:
    """S_CR = S + S / colmax(S) (Eq. 3.13): rank the captions j of row i for image query i.

    Args:
        S (Tensor[M, N]): image-by-caption scores. eps (float): denominator guard.

    Returns:
        Tensor[M, N].
    """
    S = _check_matrix("S", S)
    return S + S / S.amax(0, keepdim=True).clamp(min=_check_eps(eps))


def _topk(scores: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    n = scores.shape[1]
    kk = min(k, n)
    # stable descending sort: ties go to the lower database index, as in the metrics
    D, I = torch.sort(scores, dim=1, descending=True, stable=True)
    D, I = D[:, :kk], I[:, :kk]
    if kk < k:
        pad = k - kk
        D = torch.cat([D, D.new_full((D.shape[0], pad), float("-inf"))], 1)
        I = torch.cat([I, I.new_full((I.shape[0], pad), -1)], 1)
    return D, I


class CrossModalIndex:
    """A database of image and caption embeddings searched in both directions.

    Args:
        image_emb (Tensor[M, d]): ℓ2-normalized image embeddings (the database of text→image).
        caption_emb (Tensor[N, d], optional): ℓ2-normalized caption embeddings (the database of
            image→text). Both are needed for re-ranking, whose normalizers are the best score of
            each database image over the database captions and vice versa.

    Re-ranking a query that is not in the database: the normalizer of image i for a caption
    query q is ``max(max_j S[i, j], <x_i, q>)`` (the query joins image i's row), and the same
    for image queries; so a query that *is* in the database gets exactly the full-matrix
    S_IR / S_CR of the paper, and queries never influence each other.

    Public knobs: ``eps`` (denominator guard, 1e-6), ``query_batch_size`` (1024).
    """

    def __init__(self, image_emb: Tensor, caption_emb: Optional[Tensor] = None):
        self.eps = 1e-6
        self.query_batch_size = 1024
        self.image_emb = self._check_emb("image_emb", image_emb)
        self.caption_emb = None if caption_emb is None else self._check_emb("caption_emb", caption_emb)
        if self.caption_emb is not None and self.caption_emb.shape[1] != self.image_emb.shape[1]:
            raise ValueError(f"image_emb and caption_emb must have the same width, got "
                             f"{self.image_emb.shape[1]} and {self.caption_emb.shape[1]}")
        self._row_max: Optional[Tensor] = None  # per database image: best database caption score
        self._col_max: Optional[Tensor] = None  # per database caption: best database image score

    @staticmethod
    def _check_emb(name: str, t) -> Tensor:
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2 or t.shape[0] == 0 or t.shape[1] == 0 or not t.is_floating_point():
            raise ValueError(f"{name} must be a non-empty floating-point [n, d] Tensor, got {t.dtype} {tuple(t.shape)}")
        return t.detach()

    def _maxima(self) -> Tuple[Tensor, Tensor]:
        if self.caption_emb is None:
            raise ValueError("re-ranking needs caption_emb (the caption database)")
        if self._row_max is None:
            rm = torch.full((self.image_emb.shape[0],), float("-inf"), device=self.image_emb.device)
            cm = torch.full((self.caption_emb.shape[0],), float("-inf"), device=self.image_emb.device)
            for c0 in range(0, self.caption_emb.shape[0], self.query_batch_size):
                S = self.image_emb.float() @ self.caption_emb[c0:c0 + self.query_batch_size].float().t()
                rm = torch.maximum(rm, S.amax(1))
                cm[c0:c0 + S.shape[1]] = S.amax(0)
            self._row_max, self._col_max = rm, cm
        return self._row_max, self._col_max

    def _check_query(self, q, width: int) -> Tensor:
        if not isinstance(q, Tensor):
            raise TypeError(f"queries must be a torch.Tensor, got {type(q).__name__}")
        if q.dim() == 1:
            q = q.unsqueeze(0)
        if q.dim() != 2 or q.shape[1] != width or not q.is_floating_point():
            raise ValueError(f"queries must be a floating-point [Q, {width}] Tensor, got {q.dtype} {tuple(q.shape)}")
        return q.detach()

    @staticmethod
    def _check_k(k) -> int:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        return k

    def text_to_image(self, queries: Tensor, k: int = 10, rerank: bool = False) -> Tuple[Tensor, Tensor]:
        """Image retrieval for caption embeddings ``queries`` (Tensor[Q, d]).

        Returns:
            (D Tensor[Q, k] float32, I Tensor[Q, k] int64): scores (re-ranked scores with
            ``rerank``) and image indices, best first.
        """
        q = self._check_query(queries, self.image_emb.shape[1])
        k = self._check_k(k)
        if rerank:
            row_max, _ = self._maxima()
        Ds, Is = [], []
        for q0 in range(0, q.shape[0], self.query_batch_size):
            S = q[q0:q0 + self.query_batch_size].float() @ self.image_emb.float().t()  # [Q, M]
            if rerank:
                den = torch.maximum(row_max.view(1, -1), S).clamp(min=self.eps)
                S = S + S / den
            D, I = _topk(S, k)
            Ds.append(D)
            Is.append(I)
        return torch.cat(Ds), torch.cat(Is)

    def image_to_text(self, queries: Tensor, k: int = 10, rerank: bool = False) -> Tuple[Tensor, Tensor]:
        """Caption retrieval for image embeddings ``queries`` (Tensor[Q, d]).

        Returns:
            (D Tensor[Q, k] float32, I Tensor[Q, k] int64): scores and caption indices, best first.
        """
        if self.caption_emb is None:
            raise ValueError("image_to_text needs caption_emb (the caption database)")
        q = self._check_query(queries, self.caption_emb.shape[1])
        k = self._check_k(k)
        if rerank:
            _, col_max = self._maxima()
        Ds, Is = [], []
        for q0 in range(0, q.shape[0], self.query_batch_size):
            S = q[q0:q0 + self.query_batch_size].float() @ self.caption_emb.float().t()  # [Q, N]
            if rerank:
                den = torch.maximum(col_max.view(1, -1), S).clamp(min=self.eps)
                S = S + S / den
            D, I = _topk(S, k)
            Ds.append(D)
            Is.append(I)
        return torch.cat(Ds), torch.cat(Is)


def index_captioned_images(model, vocab, data, size: Optional[int] = 400, maps: bool = False, device: str = "cpu"):
    """A :class:`CrossModalIndex` of a captioned image set encoded by a BEAN model.

    Args:
        model (semvis.models.BEAN), vocab (Vocabulary), data (semvis.data.crossmodal.CaptionedImages).
        size (int, optional): test resize (None: native sizes). maps (bool): also return the
            images' activation maps (for text-conditioned heatmaps).

    Returns:
        (index, captions list[str], owner list[int] (image of each caption)[, maps Tensor[M, D', h, w]]).
    """
    from ..models.crossmodal import encode_captions, encode_images

    caps, owner = data.flat_captions()
    img = encode_images(model, data, size, device=device, maps=maps)
    img, G = img if maps else (img, None)
    index = CrossModalIndex(img, encode_captions(model, vocab, caps, device=device))
    return (index, caps, owner, G) if maps else (index, caps, owner)
