"""BEAN / DSVE-loc: the joint image-sentence embedding with localization (Engilberge et al.,
CVPR 2018; spec seeds-000-002 part 002, seeds-003-004 A.1, A.2, A.9).

Image path (Eq. 1): ResNet conv5 → 1×1 conv to D' maps (bias, no activation) → WELDON max+min
pooling → dropout (0.5, on the pooled vector: the natural reading of the paper, and the DSVE-loc
code) → affine D' → d → ℓ2. Text path: word embeddings → SRU → ℓ2 (:class:`TextEncoder`).

Presets (``BEAN.from_preset``):

* ``"dsve_paper"``: ResNet-152, D' = d = 2400, WELDON k = 1 (Eq. 2), 620-D words, 4-layer SRU.
* ``"dsve_code"``: the same with ``WeldonPooling(15)`` (the public code) to load released weights.
* ``"tiny"``: a narrow ResNet-18 cut after stage 3 (stride 16), small widths: the synthetic demo
  and the tests on 2 CPU cores.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple, Union

import torch.nn.functional as F
from torch import Tensor, nn

from .localization import heatmap_points, text_heatmap
from .resnet import resnet
from .text_encoder import TextEncoder

__all__ = ["BEANImageEncoder", "BEAN", "PRESETS", "set_batchnorm_eval"]


def check_trunk_images(images: Tensor, stride: int) -> None:
    """A normalized image batch [B, 3, H, W] (B >= 1) at least ``stride`` pixels on each side
    (the trunk's output stride), or a TypeError / ValueError naming ``images``."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point (normalized), got {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError("images: empty batch")
    H, W = images.shape[2:]
    if H < stride or W < stride:
        raise ValueError(f"images must be at least {stride}x{stride} pixels (the trunk stride), got {H}x{W}")


def set_batchnorm_eval(module: nn.Module) -> int:
    """Puts every BatchNorm layer of ``module`` in eval mode (running statistics, no update) and
    returns how many there were. Call it after ``model.train()`` when the trunk is frozen or the
    batches are too small for batch statistics (the VSE++ reproduction pitfall, vsepp#30)."""
    n = 0
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            n += 1
    return n


class BEANImageEncoder(nn.Module):
    """The BEAN image path.

    Args:
        backbone (str): ``resnet18`` … ``resnet152``.
        width (int): ResNet first-stage width (64 in the papers).
        stages (int): 4 (conv5, stride 32, the paper), 3 (stop after conv4, stride 16) or 2 (after
            conv3, stride 8): finer maps for small images.
        feature_dim (int): D', maps after the 1×1 conv (2400).
        dim (int): d, the joint embedding size (2400).
        kmax, kmin, alpha: WELDON parameters (1, 1, 1 in the paper; 15 in the code).
        dropout (float): dropout on the pooled vector before the projection (0.5).
        backbone_weights: a torchvision-format ResNet state dict or path (optional).

    ``forward(images Tensor[B, 3, H, W]) -> Tensor[B, d]`` (ℓ2-normalized). Images are any size
    with ``H, W >= stride`` (fully convolutional); a WELDON count larger than the map is an error.
    """

    def __init__(self, backbone: str = "resnet152", width: int = 64, stages: int = 4, feature_dim: int = 2400,
                 dim: int = 2400, kmax: Union[int, float] = 1, kmin: Optional[Union[int, float]] = None,
                 alpha: float = 1.0, dropout: float = 0.5, backbone_weights=None):
        super().__init__()
        from semvis_ext.nn import WeldonPool2d

        if stages not in (2, 3, 4):
            raise ValueError(f"stages must be 2, 3 or 4, got {stages!r}")
        self.trunk = resnet(backbone, width=width, weights=backbone_weights)
        # cut the trunk after conv{stages+1}: the later stages become identities (weights of a
        # full torchvision state dict still load before the cut)
        for name in ("layer4", "layer3")[: 4 - stages]:
            setattr(self.trunk, name, nn.Identity())
        last = getattr(self.trunk, f"layer{stages}")[-1]
        in_ch = (last.conv3 if hasattr(last, "conv3") else last.conv2).out_channels
        self.stages = stages
        self.stride = 2 ** (stages + 1)
        self.conv = nn.Conv2d(in_ch, feature_dim, kernel_size=1, bias=True)
        self.pool = WeldonPool2d(kmax, kmin, alpha)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(feature_dim, dim, bias=True)
        self.feature_dim, self.dim = feature_dim, dim

    def check_images(self, images: Tensor) -> None:
        check_trunk_images(images, self.stride)
        H, W = images.shape[2:]
        h, w = -(-H // self.stride), -(-W // self.stride)
        for name, k in (("kmax", self.pool.kmax), ("kmin", self.pool.kmin)):
            if isinstance(k, int) and k > h * w:
                raise ValueError(f"images of {H}x{W} give a {h}x{w} map ({h * w} cells), fewer than WELDON "
                                 f"{name}={k}: use larger images or a smaller {name}")

    def activation_maps(self, images: Tensor) -> Tensor:
        """G: Tensor[B, D', h, w], the maps after the 1×1 conv (before pooling)."""
        self.check_images(images)
        return self.conv(self.trunk(images))

    def embed_maps(self, G: Tensor) -> Tensor:
        """Pooling + dropout + projection + ℓ2 of activation maps G (Tensor[B, D', h, w])."""
        return F.normalize(self.fc(self.dropout(self.pool(G))), dim=1)

    def forward(self, images: Tensor) -> Tensor:
        return self.embed_maps(self.activation_maps(images))


PRESETS: Dict[str, Dict] = {
    "dsve_paper": dict(backbone="resnet152", width=64, stages=4, feature_dim=2400, dim=2400, kmax=1,
                       word_dim=620, num_layers=4, text_dropout=0.25, image_dropout=0.5),
    "dsve_code": dict(backbone="resnet152", width=64, stages=4, feature_dim=2400, dim=2400, kmax=15,
                      word_dim=620, num_layers=4, text_dropout=0.25, image_dropout=0.5, use_tanh=True,
                      peephole=False),
    "tiny": dict(backbone="resnet18", width=8, stages=3, feature_dim=128, dim=64, kmax=1,
                 word_dim=32, num_layers=1, text_dropout=0.0, image_dropout=0.0),
}


class BEAN(nn.Module):
    """The joint model: ``forward(images, ids, lengths) -> (x Tensor[B, d], v Tensor[B', d])``.

    Args:
        num_words (int): vocabulary size (with ``<pad>`` = 0 and ``<unk>`` = 1).
        the rest: see :class:`BEANImageEncoder` and :class:`TextEncoder`.
    """

    def __init__(self, num_words: int, backbone: str = "resnet152", width: int = 64, stages: int = 4,
                 feature_dim: int = 2400, dim: int = 2400, kmax: Union[int, float] = 1,
                 kmin: Optional[Union[int, float]] = None, alpha: float = 1.0, image_dropout: float = 0.5,
                 word_dim: int = 620, num_layers: int = 4, text_dropout: float = 0.25,
                 freeze_embeddings: bool = False, use_tanh: bool = False, peephole: bool = True,
                 backbone_weights=None):
        super().__init__()
        self.config = dict(num_words=num_words, backbone=backbone, width=width, stages=stages,
                           feature_dim=feature_dim, dim=dim, kmax=kmax, kmin=kmin, alpha=alpha,
                           image_dropout=image_dropout, word_dim=word_dim, num_layers=num_layers,
                           text_dropout=text_dropout, freeze_embeddings=freeze_embeddings, use_tanh=use_tanh,
                           peephole=peephole)
        self.image = BEANImageEncoder(backbone, width, stages, feature_dim, dim, kmax, kmin, alpha, image_dropout,
                                      backbone_weights)
        self.text = TextEncoder(num_words, word_dim, dim, num_layers, text_dropout,
                                freeze_embeddings=freeze_embeddings, use_tanh=use_tanh, peephole=peephole)
        self.dim = dim

    @classmethod
    def from_preset(cls, name: str, num_words: int, **overrides) -> "BEAN":
        """``BEAN.from_preset("dsve_paper" | "dsve_code" | "tiny", num_words, **overrides)``."""
        if name not in PRESETS:
            raise ValueError(f"unknown BEAN preset {name!r}; known: {sorted(PRESETS)}")
        cfg = dict(PRESETS[name])
        cfg.update(overrides)
        return cls(num_words, **cfg)

    def forward(self, images: Optional[Tensor], ids: Optional[Tensor] = None, lengths: Optional[Tensor] = None
                ) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        x = self.image(images) if images is not None else None
        v = self.text(ids, lengths) if ids is not None else None
        return x, v

    def embed_images(self, images: Tensor) -> Tensor:
        return self.image(images)

    def embed_captions(self, ids: Tensor, lengths: Tensor) -> Tensor:
        return self.text(ids, lengths)

    def heatmaps(self, images: Tensor, phrases: Tensor, k: int = 180) -> Tensor:
        """Text-conditioned heatmaps (Eq. 9): images Tensor[B, 3, H, W], phrase embeddings
        Tensor[B, P, d] (or Tensor[B, d]) → Tensor[B, P, h, w]. ``k`` is clamped to d."""
        G = self.image.activation_maps(images)
        return text_heatmap(G, self.image.fc.weight, phrases, min(k, self.dim))

    def point(self, images: Tensor, phrases: Tensor, k: int = 180) -> Tensor:
        """The heatmaps' argmax points in the images' pixels: Tensor[B, P, 2] (x, y)."""
        H = self.heatmaps(images, phrases, k)
        return heatmap_points(H, (images.shape[3], images.shape[2]))
