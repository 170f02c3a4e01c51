"""Image preparation for the networks: uint8 [H, W, 3] arrays -> normalized float tensors
(ImageNet mean / std), test-time resizing and the VSE++-style random training crop."""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "to_float", "normalize", "resize", "prepare_images", "random_crop"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_float(img: np.ndarray) -> Tensor:
    """uint8 [H, W, 3] array -> float Tensor[3, H, W] in [0, 1]."""
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"images must be uint8 [H, W, 3] arrays, got {getattr(img, 'dtype', type(img).__name__)} "
                         f"{getattr(img, 'shape', '')}")
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255)


def normalize(x: Tensor) -> Tensor:
    """(x - ImageNet mean) / ImageNet std over the channels of x [3, H, W]."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(3, 1, 1)
    return (x - mean) / std


def resize(x: Tensor, size: Tuple[int, int]) -> Tensor:
    """Bilinear (antialiased) resize of x [C, H, W] to ``size`` (h, w); x itself if already that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x.unsqueeze(0), size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def prepare_images(images: Sequence[np.ndarray], size: Optional[int] = 400) -> Tensor:
    """uint8 [H, W, 3] arrays → normalized Tensor[B, 3, size, size] (resized regardless of aspect
    ratio, as BEAN tests; ``size=None`` keeps the sizes, which must then agree)."""
    out = []
    for img in images:
        x = to_float(img)
        out.append(normalize(resize(x, (size, size)) if size else x))
    shapes = {tuple(t.shape) for t in out}
    if len(shapes) > 1:
        raise ValueError(f"images of different sizes {sorted(shapes)[:3]}: give a size to resize them")
    return torch.stack(out)


def random_crop(img: np.ndarray, size: int, scale: Tuple[float, float], ratio: Tuple[float, float],
                rng: np.random.Generator) -> Tensor:
    """VSE++-style random rectangular crop resized to size × size (torchvision RandomResizedCrop),
    normalized; draws from ``rng``."""
    x = to_float(img)
    H, W = x.shape[1:]
    area = H * W
    for _ in range(10):
        a = area * rng.uniform(*scale)
        r = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = int(round(math.sqrt(a * r))), int(round(math.sqrt(a / r)))
        if 0 < w <= W and 0 < h <= H:
            y0, x0 = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
            x = x[:, y0:y0 + h, x0:x0 + w]
            break
    return normalize(resize(x, (size, size)))
