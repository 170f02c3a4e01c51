"""The pointing game (Xiao et al. 2017; spec seeds-000-002 002.7, K8 / G22).

A phrase is a hit when the predicted point lies inside its ground-truth box. Default: edges
inclusive (spec decision [D]); ``inclusive=False`` gives DSVE-loc's strict ``is_in_region``.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

__all__ = ["pointing_game", "centre_points"]

_FORMATS = ("xyxy", "xywh")


def _as_float(name: str, t, last: int) -> Tensor:
    if not isinstance(t, Tensor):
        try:
            t = torch.as_tensor(t, dtype=torch.float64)
        except Exception:  # noqa: BLE001
            raise TypeError(f"{name} must be a Tensor or nested sequence of numbers, got {type(t).__name__}") from None
    if t.dim() != 2 or t.shape[1] != last:
        raise ValueError(f"{name} must have shape [P, {last}], got {tuple(t.shape)}")
    t = t.to(torch.float64)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite")
    return t


def pointing_game(points, boxes, box_format: str = "xyxy", inclusive: bool = True) -> Tuple[Tensor, float]:
    """Hits and accuracy of the pointing game.

    Args:
        points (Tensor[P, 2]): predicted points ``(x, y)`` in image pixels.
        boxes (Tensor[P, 4]): ground-truth boxes, ``(x0, y0, x1, y1)`` (``"xyxy"``) or
            ``(x, y, width, height)`` (``"xywh"``, Visual Genome regions), in the same pixels.
        box_format (str): ``"xyxy"`` or ``"xywh"``.
        inclusive (bool): a point on the box edge is a hit (default) or not (DSVE-loc code).

    Returns:
        (hits Tensor[P] bool, accuracy float in %).
    """
    pts = _as_float("points", points, 2)
    bx = _as_float("boxes", boxes, 4)
    if pts.shape[0] != bx.shape[0]:
        raise ValueError(f"points and boxes must have the same length, got {pts.shape[0]} and {bx.shape[0]}")
    if pts.shape[0] == 0:
        raise ValueError("pointing_game: no phrases")
    if box_format not in _FORMATS:
        raise ValueError(f"box_format must be one of {_FORMATS}, got {box_format!r}")
    if box_format == "xywh":
        bx = torch.stack([bx[:, 0], bx[:, 1], bx[:, 0] + bx[:, 2], bx[:, 1] + bx[:, 3]], 1)
    if ((bx[:, 2] < bx[:, 0]) | (bx[:, 3] < bx[:, 1])).any():
        raise ValueError("boxes must have x1 >= x0 and y1 >= y0 (non-negative width and height)")
    x, y = pts[:, 0], pts[:, 1]
    if inclusive:
        hits = (x >= bx[:, 0]) & (x <= bx[:, 2]) & (y >= bx[:, 1]) & (y <= bx[:, 3])
    else:
        hits = (x > bx[:, 0]) & (x < bx[:, 2]) & (y > bx[:, 1]) & (y < bx[:, 3])
    return hits, 100.0 * float(hits.double().mean())


def centre_points(image_sizes) -> Tensor:
    """The centre baseline's predictions: ``(W / 2, H / 2)`` for every ``(W, H)`` in
    ``image_sizes`` (Tensor[P, 2]). Returns Tensor[P, 2] float64."""
    s = _as_float("image_sizes", image_sizes, 2)
    if (s <= 0).any():
        raise ValueError("image_sizes must be positive (W, H) pairs")
    return s / 2
