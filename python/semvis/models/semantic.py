"""The semantic retrieval network of Gordo & Larlus (spec 000.6): ResNet trunk -> R-MAC with
learnable PCA-whitening -> l2, multi-scale (sum over input scales, then l2)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .resnet import resnet

__all__ = ["SemanticRetrievalNet", "IMAGENET_MEAN", "IMAGENET_STD", "normalize_images", "compose_query"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_images(x: Tensor) -> Tensor:
    """uint8 [B, 3, H, W] -> float32, ImageNet mean/std normalised."""
    if x.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 [B, 3, H, W], got {x.dtype}")
    m = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x.float() / 255.0 - m) / s


class SemanticRetrievalNet(nn.Module):
    """phi(image) in R^C, ||phi|| = 1.

    Args:
        backbone (str): resnet18/34/50/101/152.
        width (int): channels of the first ResNet stage (64 in the paper; small for CPU runs).
        levels (int): R-MAC grid levels (2 in the paper's reading, spec 000.6).
        scales (sequence of float): input scales; the embeddings are summed, then l2 (the paper:
            largest side 576 and 576/sqrt(2) with ``scales=(1, 1/sqrt(2))``).
        pooling (str): registry name of the pooling (``"rmac"``).
        freeze_bn (bool): BatchNorm in eval mode during training (the paper, with pretrained
            weights); False trains its statistics (from-scratch runs).
        weights (path or dict, optional): torchvision-format ResNet weights.
        stages (int): 4 (conv5 output, stride 32: the paper) or 3 (conv4, stride 16: for the
            64-px synthetic images, whose conv5 map would be 2 x 2).
    """

    def __init__(self, backbone: str = "resnet101", width: int = 64, levels: int = 2,
                 scales: Sequence[float] = (1.0,), pooling: str = "rmac", freeze_bn: bool = True,
                 weights=None, stages: int = 4):
        super().__init__()
        from .registry import build_pooling

        if stages not in (3, 4):
            raise ValueError(f"stages must be 3 or 4, got {stages!r}")
        self.trunk = resnet(backbone, width=width, weights=weights)
        self.stages = stages
        if stages == 3:  # stop at conv4 (stride 16): small images keep a usable map
            self.trunk.layer4 = nn.Identity()
            blk = self.trunk.layer3[-1]
            self.trunk.out_channels = (blk.conv3 if hasattr(blk, "conv3") else blk.conv2).out_channels
        self.dim = self.trunk.out_channels
        self.pool = build_pooling(pooling, self.dim, levels)
        self.scales = tuple(float(s) for s in scales)
        if not self.scales or any(not (0 < s <= 4) for s in self.scales):
            raise ValueError(f"scales must be a non-empty list of floats in (0, 4], got {scales}")
        self.freeze_bn = freeze_bn

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def features(self, x: Tensor) -> Tensor:
        return self.trunk(x)

    def forward(self, x: Tensor) -> Tensor:
        """x: float [B, 3, H, W] (normalised) or uint8 (normalised here) -> [B, C] unit rows."""
        if x.dtype == torch.uint8:
            x = normalize_images(x)
        out = None
        for s in self.scales:
            xs = x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False,
                                                  antialias=s < 1)
            e = self.pool(self.trunk(xs))
            out = e if out is None else out + e
        return F.normalize(out, dim=1)

    def forward_list(self, images: Sequence[Tensor], batch: int = 64) -> Tensor:
        """phi of a list of images [3, H_i, W_i] of any sizes (uint8 or normalised float): images of
        one size are batched together (data sets with portrait and landscape photographs), rows in
        the order given. Returns [len(images), C] (on the device of the model)."""
        dev = next(self.parameters()).device
        if not len(images):
            return torch.zeros(0, self.dim, device=dev)
        groups: dict = {}
        for k, im in enumerate(images):
            groups.setdefault(tuple(im.shape), []).append(k)
        out = None
        for ks in groups.values():
            for i in range(0, len(ks), batch):
                part = ks[i:i + batch]
                e = self(torch.stack([images[k] for k in part]).to(dev))
                if out is None:
                    out = e.new_empty(len(images), e.shape[1])
                out[torch.as_tensor(part, device=e.device)] = e
        return out

    @torch.no_grad()
    def init_whitening(self, images, batch: int = 64) -> None:
        """PCA-whitening initialisation (spec 000.6) from the regional vectors of ``images``: a
        Tensor [B, 3, H, W] or a list of [3, H_i, W_i] of any sizes (batched by size)."""
        was = self.training
        self.eval()
        feats = []
        if isinstance(images, Tensor):
            chunks = [images[i:i + batch] for i in range(0, len(images), batch)]
        else:
            groups: dict = {}
            for im in images:
                groups.setdefault(tuple(im.shape), []).append(im)
            chunks = [torch.stack(g[i:i + batch]) for g in groups.values() for i in range(0, len(g), batch)]
        dev = next(self.parameters()).device
        for x in chunks:
            x = x.to(dev)
            if x.dtype == torch.uint8:
                x = normalize_images(x)
            v, mask = self.pool.region_vectors(self.trunk(x), whiten=False)
            feats.append(v[mask])
        f = torch.cat(feats)
        if f.shape[0] < 2:
            raise ValueError("init_whitening: need at least 2 region vectors")
        self.pool.fit_pca(f)
        self.train(was)


# ------------------------------------------------------------------------------------------
# the (V+T) query: image and its own text


def compose_query(phi: Tensor, theta: Tensor, weight=1.0, text_mean: Optional[Tensor] = None) -> Tensor:
    """The joint query q = l2(phi + w (theta - mu)) (spec 000.7 [D]: l2(phi + theta) is w = 1,
    mu = 0).

    Args:
        phi (Tensor[Q, D]): image embeddings of the queries.
        theta (Tensor[Q, D]): text embeddings of their captions (zero rows: no known word).
        weight (float or Tensor[Q]): the text's weight per query (0: the image alone).
        text_mean (Tensor[D], optional): mu, subtracted from non-zero theta rows.

    Returns:
        Tensor[Q, D], unit rows (a row stays zero only if phi is).
    """
    if phi.dim() != 2 or phi.shape != theta.shape:
        raise ValueError(f"compose_query: phi and theta must be [Q, D] of one shape, got {tuple(phi.shape)} "
                         f"and {tuple(theta.shape)}")
    t = theta.to(phi.dtype)
    if text_mean is not None:
        known = (t.abs().sum(1, keepdim=True) > 0).to(t.dtype)  # a text with no word stays zero
        t = t - known * text_mean.to(phi.dtype)
    w = torch.as_tensor(weight, dtype=phi.dtype, device=phi.device)
    w = w.view(-1, 1) if w.dim() else w
    return F.normalize(phi + w * t, dim=1)
