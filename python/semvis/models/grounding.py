"""Grounding and steering a semantic embedding (spec 000.11, 000.12).

* :func:`grad_cam_pair` -- Grad-CAM maps of a pair of images for the 5 embedding dimensions that
  contribute most to their similarity (the same image lights up differently with another partner).
* :func:`compose_query` -- text modifiers: q' = l2(phi_q + beta sum theta(+w) - beta sum theta(-w)).
* :func:`heatmap_overlay`, :func:`write_png` -- heatmap images without an imaging library.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .semantic import SemanticRetrievalNet, normalize_images

__all__ = ["grad_cam_pair", "compose_query"]


def _cam(acts: Tensor, target: Tensor, size: Tuple[int, int]) -> Tensor:
    (g,) = torch.autograd.grad(target, acts, retain_graph=True)
    alpha = g.mean(dim=(2, 3), keepdim=True)  # alpha_ch = mean of dy/dA over positions
    m = F.relu((alpha * acts).sum(1, keepdim=True))
    m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)[0, 0]
    lo, hi = m.min(), m.max()
    return ((m - lo) / (hi - lo)).detach() if hi > lo else torch.zeros_like(m).detach()


def grad_cam_pair(model: SemanticRetrievalNet, image_a: Tensor, image_b: Tensor, k: int = 5
                  ) -> Tuple[Tensor, Tensor, Tensor]:
    """Grad-CAM of a pair on the last conv layer (spec 000.11, single scale).

    c = phi_a * phi_b; K = the k largest c_j; y_a = sum_K phi_a[j] stopgrad(phi_b[j]) (and
    symmetrically); M = ReLU(sum_ch alpha_ch A_ch), bilinearly upsampled, min-max scaled.

    Args:
        image_a, image_b (Tensor[3, H, W] uint8 or normalised float).
    Returns:
        (map_a [H_a, W_a], map_b [H_b, W_b], dims [k] int64).
    """
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= model.dim:
        raise ValueError(f"k must be an int in [1, {model.dim}], got {k!r}")
    was = model.training
    model.eval()
    xs = []
    for im in (image_a, image_b):
        if not isinstance(im, Tensor) or im.dim() != 3 or im.shape[0] != 3:
            raise ValueError("images must be Tensor[3, H, W]")
        x = im[None]
        xs.append(normalize_images(x) if x.dtype == torch.uint8 else x.float())
    with torch.enable_grad():
        acts = [model.trunk(x).detach().requires_grad_(True) for x in xs]
        phi = [F.normalize(model.pool(a), dim=1)[0] for a in acts]
        dims = torch.topk((phi[0] * phi[1]).detach(), k).indices
        ya = (phi[0][dims] * phi[1][dims].detach()).sum()
        yb = (phi[1][dims] * phi[0][dims].detach()).sum()
        ma = _cam(acts[0], ya, tuple(xs[0].shape[2:]))
        mb = _cam(acts[1], yb, tuple(xs[1].shape[2:]))
    model.train(was)
    return ma, mb, dims


def compose_query(phi_q: Tensor, text_projection, tfidf, plus: Sequence[str] = (), minus: Sequence[str] = (),
                  beta: float = 1.0) -> Tensor:
    """Text modifiers (spec 000.12): l2(phi_q + beta sum_{w in plus} theta(e_w) - beta sum_{w in minus} theta(e_w)),
    e_w the one-hot tf-idf vector of stem(w). An out-of-vocabulary word raises a ValueError naming it."""
    q = phi_q.float().reshape(1, -1)
    for sign, words in ((1.0, plus), (-1.0, minus)):
        for w in words:
            t = tfidf.vector(w)
            if t.nnz == 0:
                raise ValueError(f"modifier word {w!r} is not in the tf-idf vocabulary")
            with torch.no_grad():
                q = q + sign * beta * text_projection(t.to_torch().to(q.device)).float()
    return F.normalize(q, dim=1)[0]
