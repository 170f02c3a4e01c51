"""SMILE: region features + distributed self-attention (Engilberge thesis, Chapter 3; spec
seeds-003-004 A.3, A.9.2).

Image path (Eq. 3.5): regions -> 1x1 conv (a per-region linear map D -> d) -> ℓ2 per region ->
attention (Eqs. 3.6-3.8, the fused kernel :func:`semvis_ext.region_attention` held by
:class:`semvis_ext.nn.RegionAttention`) -> ℓ2 of x (the spec's decision A.11.2). Regions are:

* pre-extracted region features (the thesis' bottom-up Faster R-CNN features, 36 x 2048):
  :meth:`SMILEImageEncoder.embed_regions`;
* a detector's boxes for each image, pooled (max) from the backbone map with
  :func:`semvis_ext.region_pool`'s regions input: ``forward(images, boxes=[...])``;
* else a ``grid x grid`` partition of the backbone map (R = grid^2 regions).

The text path and the loss are BEAN's (:class:`~semvis.models.text_encoder.TextEncoder`, the
bidirectional hardest-negative triplet). Region grounding (Eq. 4.3): a phrase embedding z scores
each region ``<z, G[:, r]>``; the prediction of the pointing game is the best region's centre.
The ablations of Tables 3.4/3.5 are the ``attention`` modes ("softmax" = SMILE, "mean", "1-att",
"no-conv", "no-softmax").
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .bean import BEANImageEncoder, check_trunk_images
from .text_encoder import TextEncoder

__all__ = ["SMILE", "SMILEImageEncoder", "SMILE_PRESETS", "RegionSet", "grid_boxes"]


class RegionSet(NamedTuple):
    """The ℓ2-normalised region features of a batch and where they are.

    ``features`` Tensor[B, R, d]; ``lengths`` Tensor[B] (valid regions per image, the rest is
    padding); ``boxes`` Tensor[B, R, 4] float, ``(x0, y0, x1, y1)`` in image pixels (padding rows 0).
    """

    features: Tensor
    lengths: Tensor
    boxes: Tensor


def grid_boxes(h: int, w: int, grid: int) -> Tensor:
    """A ``g x g`` partition of an ``h x w`` map (g = min(grid, h, w) per axis) as region_pool boxes
    Tensor[R, 4] ``(y, x, height, width)`` in cells, row-major; the cells cover the map exactly."""
    gy, gx = min(grid, h), min(grid, w)
    ys = [round(i * h / gy) for i in range(gy + 1)]
    xs = [round(j * w / gx) for j in range(gx + 1)]
    return torch.tensor([[ys[i], xs[j], ys[i + 1] - ys[i], xs[j + 1] - xs[j]] for i in range(gy) for j in range(gx)],
                        dtype=torch.int64)


class SMILEImageEncoder(nn.Module):
    """The SMILE image path on a ResNet trunk (BEAN's trunk, cut after ``stages``).

    Args:
        backbone, width, stages, backbone_weights: the trunk (see :class:`BEANImageEncoder`).
        dim (int): d (2400 in the thesis).
        grid (int): regions per side when no boxes are given (R = grid^2; 6 gives the thesis' 36).
        attention (str): "softmax" (SMILE), "mean", "1-att", "no-conv", "no-softmax".
        region_dim (int, optional): D of pre-extracted region features for :meth:`embed_regions`
            (default: the trunk's channels, so image and feature inputs share the 1x1 conv).

    ``forward(images Tensor[B, 3, H, W], boxes=None) -> Tensor[B, d]`` (ℓ2-normalised); ``boxes`` a
    list of B Tensor[R_b, 4] ``(x0, y0, x1, y1)`` in image pixels (each R_b >= 1).
    """

    def __init__(self, backbone: str = "resnet152", width: int = 64, stages: int = 4, dim: int = 2400,
                 grid: int = 6, attention: str = "softmax", region_dim: Optional[int] = None, backbone_weights=None):
        super().__init__()
        from semvis_ext.nn import RegionAttention

        if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
            raise ValueError(f"grid must be an int >= 1, got {grid!r}")
        # BEAN's trunk construction (ResNet cut after `stages`), without its head
        bean = BEANImageEncoder(backbone, width, stages, feature_dim=1, dim=1, dropout=0.0,
                                backbone_weights=backbone_weights)
        self.trunk, self.stride, self.stages = bean.trunk, bean.stride, stages
        in_ch = bean.conv.in_channels
        self.region_dim = region_dim or in_ch
        self.conv = nn.Linear(self.region_dim, dim)  # the 1x1 conv on region vectors
        self.feature_proj = None if self.region_dim == in_ch else nn.Linear(in_ch, self.region_dim)
        self.attention = RegionAttention(dim, mode=attention)
        self.dim, self.grid = dim, grid

    def check_images(self, images: Tensor) -> None:
        check_trunk_images(images, self.stride)

    def _cell_boxes(self, boxes, B: int, H: int, W: int, h: int, w: int) -> Tuple[List[Tensor], List[Tensor]]:
        """Pixel boxes -> (region_pool boxes in cells, the same boxes in pixels, clipped)."""
        if not isinstance(boxes, (list, tuple)) or len(boxes) != B:
            raise ValueError(f"boxes must be a list of {B} Tensor[R_b, 4] (one per image), got "
                             f"{type(boxes).__name__} of length {len(boxes) if hasattr(boxes, '__len__') else '?'}")
        cells, pix = [], []
        for i, b in enumerate(boxes):
            b = torch.as_tensor(b, dtype=torch.float32)
            if b.dim() != 2 or b.shape[1] != 4 or b.shape[0] == 0:
                raise ValueError(f"boxes[{i}] must be a non-empty Tensor[R, 4] (x0, y0, x1, y1), got {tuple(b.shape)}")
            if not torch.isfinite(b).all() or ((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])).any():
                raise ValueError(f"boxes[{i}] must be finite with x1 > x0 and y1 > y0")
            b = torch.stack([b[:, 0].clamp(0, W), b[:, 1].clamp(0, H), b[:, 2].clamp(0, W), b[:, 3].clamp(0, H)], 1)
            x0 = (b[:, 0] / self.stride).floor().long().clamp(0, w - 1)
            y0 = (b[:, 1] / self.stride).floor().long().clamp(0, h - 1)
            x1 = torch.maximum((b[:, 2] / self.stride).ceil().long().clamp(1, w), x0 + 1)
            y1 = torch.maximum((b[:, 3] / self.stride).ceil().long().clamp(1, h), y0 + 1)
            cells.append(torch.stack([y0, x0, y1 - y0, x1 - x0], 1))
            pix.append(b)
        return cells, pix

    def regions(self, images: Tensor, boxes: Optional[Sequence[Tensor]] = None) -> RegionSet:
        """The ℓ2-normalised region features G (before attention) and their boxes."""
        from semvis_ext import region_pool

        self.check_images(images)
        fmap = self.trunk(images)
        B, _, h, w = fmap.shape
        H, W = images.shape[2:]
        if boxes is None:
            cells = grid_boxes(h, w, self.grid)
            feats = region_pool(fmap, cells.to(fmap.device))
            px = torch.stack([cells[:, 1] * W / w, cells[:, 0] * H / h, (cells[:, 1] + cells[:, 3]) * W / w,
                              (cells[:, 0] + cells[:, 2]) * H / h], 1).float()
            pix = px.unsqueeze(0).expand(B, -1, -1).to(fmap.device)
            lengths = torch.full((B,), cells.shape[0], dtype=torch.int64, device=fmap.device)
        else:
            cells, pix_list = self._cell_boxes(boxes, B, H, W, h, w)
            feats, mask = region_pool(fmap, [c.to(fmap.device) for c in cells], return_mask=True)
            lengths = mask.sum(1)
            pix = torch.zeros(B, feats.shape[1], 4, device=fmap.device)
            for i, b in enumerate(pix_list):
                pix[i, : b.shape[0]] = b.to(fmap.device)
        if self.feature_proj is not None:
            feats = self.feature_proj(feats)
        return RegionSet(*self._embed(feats, lengths), pix)

    def _embed(self, feats: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        G = F.normalize(self.conv(feats), dim=-1)
        # padding rows of G are never read by the attention; zero them for grounding scores
        valid = torch.arange(G.shape[1], device=G.device)[None, :] < lengths[:, None]
        return G * valid[..., None].to(G.dtype), lengths

    def embed_regions(self, features: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        """The image embedding from pre-extracted region features Tensor[B, R, region_dim] (the
        thesis' bottom-up features), ``lengths`` the valid regions per image (default all R)."""
        if not isinstance(features, Tensor) or features.dim() != 3 or features.shape[2] != self.region_dim:
            raise ValueError(f"features must be Tensor[B, R, {self.region_dim}], got "
                             f"{tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__}")
        if lengths is None:
            lengths = torch.full((features.shape[0],), features.shape[1], dtype=torch.int64, device=features.device)
        G, lengths = self._embed(features, torch.as_tensor(lengths, device=features.device))
        return self.attend(G, lengths)

    def attend(self, G: Tensor, lengths: Tensor) -> Tensor:
        """Attention + ℓ2 on normalised region features G Tensor[B, R, d]."""
        return F.normalize(self.attention(G, lengths), dim=1)

    def forward(self, images: Tensor, boxes: Optional[Sequence[Tensor]] = None) -> Tensor:
        G, lengths, _ = self.regions(images, boxes)
        return self.attend(G, lengths)


SMILE_PRESETS: Dict[str, Dict] = {
    "smile_paper": dict(backbone="resnet152", width=64, stages=4, dim=2400, grid=6, word_dim=620, num_layers=4,
                        text_dropout=0.25),
    "tiny": dict(backbone="resnet18", width=8, stages=3, dim=64, grid=4, word_dim=32, num_layers=1,
                 text_dropout=0.0),
}


class SMILE(nn.Module):
    """The joint model: ``forward(images, ids, lengths, boxes=None) -> (x Tensor[B, d], v Tensor[B', d])``.

    Args:
        num_words (int): vocabulary size (``<pad>`` = 0, ``<unk>`` = 1).
        attention (str): the attention mode (the ablations).
        the rest: see :class:`SMILEImageEncoder` and :class:`TextEncoder` (BEAN's text path).
    """

    def __init__(self, num_words: int, backbone: str = "resnet152", width: int = 64, stages: int = 4,
                 dim: int = 2400, grid: int = 6, attention: str = "softmax", word_dim: int = 620,
                 num_layers: int = 4, text_dropout: float = 0.25, region_dim: Optional[int] = None,
                 freeze_embeddings: bool = False, backbone_weights=None):
        super().__init__()
        self.config = dict(num_words=num_words, backbone=backbone, width=width, stages=stages, dim=dim, grid=grid,
                           attention=attention, word_dim=word_dim, num_layers=num_layers, text_dropout=text_dropout,
                           region_dim=region_dim, freeze_embeddings=freeze_embeddings)
        self.image = SMILEImageEncoder(backbone, width, stages, dim, grid, attention, region_dim, backbone_weights)
        self.text = TextEncoder(num_words, word_dim, dim, num_layers, text_dropout,
                                freeze_embeddings=freeze_embeddings)
        self.dim = dim

    @classmethod
    def from_preset(cls, name: str, num_words: int, **overrides) -> "SMILE":
        """``SMILE.from_preset("smile_paper" | "tiny", num_words, **overrides)``."""
        if name not in SMILE_PRESETS:
            raise ValueError(f"unknown SMILE preset {name!r}; known: {sorted(SMILE_PRESETS)}")
        cfg = dict(SMILE_PRESETS[name])
        cfg.update(overrides)
        return cls(num_words, **cfg)

    def forward(self, images: Optional[Tensor], ids: Optional[Tensor] = None, lengths: Optional[Tensor] = None,
                boxes: Optional[Sequence[Tensor]] = None) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        x = self.image(images, boxes) if images is not None else None
        v = self.text(ids, lengths) if ids is not None else None
        return x, v

    def embed_images(self, images: Tensor, boxes: Optional[Sequence[Tensor]] = None) -> Tensor:
        return self.image(images, boxes)

    def embed_captions(self, ids: Tensor, lengths: Tensor) -> Tensor:
        return self.text(ids, lengths)

    def region_scores(self, images: Tensor, phrases: Tensor, boxes: Optional[Sequence[Tensor]] = None
                      ) -> Tuple[Tensor, RegionSet]:
        """Eq. 4.3: ``L[b, p, r] = <z_p, G[b, :, r]>`` for phrase embeddings Tensor[B, P, d] (or
        Tensor[B, d]); padded regions score -inf. Returns (Tensor[B, P, R], the regions)."""
        rs = self.image.regions(images, boxes)
        z = phrases.unsqueeze(1) if phrases.dim() == 2 else phrases
        if z.dim() != 3 or z.shape[0] != rs.features.shape[0] or z.shape[2] != self.dim:
            raise ValueError(f"phrases must be Tensor[B, P, {self.dim}] or Tensor[B, {self.dim}] with "
                             f"B = {rs.features.shape[0]}, got {tuple(phrases.shape)}")
        scores = torch.einsum("bpd,brd->bpr", z.to(rs.features.dtype), rs.features)
        valid = torch.arange(scores.shape[2], device=scores.device)[None, None, :] < rs.lengths[:, None, None]
        return scores.masked_fill(~valid, float("-inf")), rs

    def point(self, images: Tensor, phrases: Tensor, boxes: Optional[Sequence[Tensor]] = None) -> Tensor:
        """The pointing-game prediction: the centre ``(x, y)`` in image pixels of each phrase's
        best-scoring region (ties: the first region). Tensor[B, P, 2] (feed
        :func:`semvis.eval.pointing.pointing_game` with ``.reshape(-1, 2)``)."""
        scores, rs = self.region_scores(images, phrases, boxes)
        best = scores.argmax(-1)  # [B, P]
        bx = torch.gather(rs.boxes, 1, best[..., None].expand(-1, -1, 4))
        return torch.stack([(bx[..., 0] + bx[..., 2]) / 2, (bx[..., 1] + bx[..., 3]) / 2], -1)
