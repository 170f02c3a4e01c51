"""Text2Art (Garcia & Vogiatzis 2018; thesis ch. 7, spec B.5): cross-modal retrieval of paintings
by their artistic comments and titles.

* Text: the comment as a tf-idf bag over the training split's vocabulary (BOWc: words occurring
  in at least ``comment_min_df`` training comments; the thesis keeps words occurring >= 10 times)
  concatenated with the title's tf-idf bag (BOWa: every training title word), Eq. 7.4.
* Image: a ResNet trunk, global average pooling (the thesis uses the network's output vector).
* CML: each modality through FC -> tanh -> l2 into a ``dim``-D joint space (128 in the thesis),
  trained with the cosine margin loss (Eq. 7.12); AMD adds an attribute classifier on each side
  (Eqs. 7.13-7.14).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..text.tfidf import TfidfModel
from .resnet import resnet

__all__ = ["ArtTextEncoder", "Text2Art", "cml_loss", "amd_loss"]


class ArtTextEncoder:
    """The BOWc + BOWa text features (Eq. 7.4): the comment's and the title's tf-idf rows
    concatenated. Fitted on the training split only; unseen words are dropped."""

    def __init__(self, comment_min_df: int = 2, title_min_df: int = 1):
        self.comment = TfidfModel(min_df=comment_min_df)
        self.title = TfidfModel(min_df=title_min_df)

    def fit(self, comments: Sequence[str], titles: Sequence[str]) -> "ArtTextEncoder":
        if len(comments) != len(titles) or not comments:
            raise ValueError(f"ArtTextEncoder.fit: needs as many comments as titles (>= 1), got "
                             f"{len(comments)} and {len(titles)}")
        self.comment.fit([[c] for c in comments])
        self.title.fit([[t] for t in titles])
        return self

    @property
    def dim(self) -> int:
        return len(self.comment.vocab) + len(self.title.vocab)

    def transform(self, comments: Sequence[str], titles: Sequence[str]) -> Tensor:
        """Dense float32 [n, |V_C| + |V_T|] features."""
        if len(comments) != len(titles):
            raise ValueError(f"ArtTextEncoder.transform: {len(comments)} comments but {len(titles)} titles")
        c = torch.from_numpy(self.comment.transform([[x] for x in comments]).to_dense())
        t = torch.from_numpy(self.title.transform([[x] for x in titles]).to_dense())
        return torch.cat([c, t], 1).float()

    def state(self) -> Dict[str, object]:
        """A ``weights_only``-loadable description (vocabularies and idf as plain lists)."""
        def one(m: TfidfModel):
            return {"min_df": m.min_df, "terms": list(m.vocab.terms), "counts": [int(x) for x in m.vocab.counts],
                    "idf": torch.from_numpy(np.asarray(m.idf, np.float64)), "n_train": m.n_train}
        return {"comment": one(self.comment), "title": one(self.title)}

    @classmethod
    def from_state(cls, state: Dict[str, object]) -> "ArtTextEncoder":
        from ..text.vocab import Vocabulary

        enc = cls(state["comment"]["min_df"], state["title"]["min_df"])
        for m, s in ((enc.comment, state["comment"]), (enc.title, state["title"])):
            m.vocab = Vocabulary(s["terms"], s["counts"])
            m.idf = s["idf"].numpy()
            m.n_train = int(s["n_train"])
        return enc


class _Projection(nn.Sequential):
    """FC -> tanh; the l2 normalisation follows in :meth:`Text2Art.embed_*`."""

    def __init__(self, din: int, dout: int):
        super().__init__(nn.Linear(din, dout), nn.Tanh())


class Text2Art(nn.Module):
    """The CML (or AMD) model.

    Args:
        text_dim (int): size of the BOWc + BOWa features.
        dim (int): joint-space size (128 in the thesis).
        backbone (str), width (int): the ResNet trunk (``width`` 64 = the published network).
        n_classes (int, optional): attribute classes for AMD (None: plain CML).
    """

    def __init__(self, text_dim: int, dim: int = 128, backbone: str = "resnet18", width: int = 64,
                 n_classes: Optional[int] = None):
        super().__init__()
        for name, v in (("text_dim", text_dim), ("dim", dim), ("width", width)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Text2Art: {name} must be an int >= 1, got {v!r}")
        self.trunk = resnet(backbone, width=width)
        self.img_proj = _Projection(self.trunk.out_channels, dim)
        self.txt_proj = _Projection(text_dim, dim)
        self.text_dim, self.dim = text_dim, dim
        self.n_classes = n_classes
        if n_classes is not None:
            self.img_cls = nn.Linear(dim, n_classes)
            self.txt_cls = nn.Linear(dim, n_classes)

    def embed_images(self, images: Tensor) -> Tensor:
        """images (Tensor[B, 3, H, W], normalised) -> unit vectors Tensor[B, dim]."""
        f = self.trunk(images).mean((2, 3))
        return F.normalize(self.img_proj(f), dim=1)

    def embed_texts(self, text: Tensor) -> Tensor:
        """text features (Tensor[B, text_dim]) -> unit vectors Tensor[B, dim]."""
        if text.dim() != 2 or text.shape[1] != self.text_dim:
            raise ValueError(f"Text2Art: text features must be [B, {self.text_dim}], got {tuple(text.shape)}")
        return F.normalize(self.txt_proj(text), dim=1)


def cml_loss(img: Tensor, txt: Tensor, margin: float = 0.1) -> Tensor:
    """The cosine margin loss (Eq. 7.12) over every (image k, text j) pair of a batch of matched
    rows: ``1 - cos`` for k = j, ``max(0, cos - m)`` for k != j, the positives' mean plus the
    negatives' mean (the thesis does not state the ratio; this weighs both kinds equally).

    Args:
        img, txt (Tensor[B, D]): unit vectors, row k of each the same painting (B >= 2).
    """
    if img.shape != txt.shape or img.dim() != 2:
        raise ValueError(f"cml_loss: img and txt must be matched [B, D] batches, got {tuple(img.shape)} "
                         f"and {tuple(txt.shape)}")
    B = img.shape[0]
    if B < 2:
        raise ValueError("cml_loss: a batch needs at least 2 pairs (one negative per positive)")
    S = img @ txt.t()
    eye = torch.eye(B, dtype=torch.bool, device=S.device)
    pos = (1 - S.diagonal()).mean()
    neg = (S - margin).clamp(min=0).masked_fill(eye, 0).sum() / (B * (B - 1))
    return pos + neg


def amd_loss(img: Tensor, txt: Tensor, img_logits: Tensor, txt_logits: Tensor, labels: Tensor,
             margin: float = 0.1, alpha: float = 0.01) -> Tensor:
    """Eq. 7.14: ``(1 - 2a) L_CML + a CE(text logits) + a CE(image logits)``."""
    if not 0 <= alpha <= 0.5:
        raise ValueError(f"amd_loss: alpha must be in [0, 0.5], got {alpha!r}")
    return ((1 - 2 * alpha) * cml_loss(img, txt, margin) + alpha * F.cross_entropy(txt_logits, labels)
            + alpha * F.cross_entropy(img_logits, labels))
