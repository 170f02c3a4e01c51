"""Text-conditioned heatmaps of BEAN / DSVE-loc (spec seeds-003-004 A.9.1 / K6, seeds-000-002
002.7 / G21) and their argmax points.

``H = Σ_{u ∈ K(v)} |v_u| · (A G)_u``: G is the un-pooled map after the 1×1 conv (D' channels),
A the linear part of the image projection (d × D'), K(v) the k largest *signed* entries of the
text embedding v (DSVE-loc ``misc/localization.py``, k = 180 of 2400). The fast form never builds
A·G: ``a = A_Kᵀ |v_K|`` (D' values), then ``H = aᵀ G`` per cell; cost O(k·D' + D'·h·w) per phrase
instead of O(d·D'·h·w). :func:`dense_text_heatmap` is the direct definition (the test oracle).
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = ["text_heatmap", "dense_text_heatmap", "heatmap_points", "top_k_weights"]


def _shapes(G: Tensor, A: Tensor, v: Tensor, k: int):
    for name, t in (("G", G), ("A", A), ("v", v)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point Tensor, got {getattr(t, 'dtype', type(t).__name__)}")
    if G.dim() == 3:
        G = G.unsqueeze(0)
        v = v.view(1, -1, v.shape[-1]) if v.dim() <= 2 else v
    elif G.dim() == 4:
        if v.dim() == 2:
            v = v.unsqueeze(1)  # one phrase per image
    else:
        raise ValueError(f"G must be [D', h, w] or [B, D', h, w], got {tuple(G.shape)}")
    if v.dim() == 1:
        v = v.view(1, 1, -1)
    if A.dim() != 2 or A.shape[1] != G.shape[1]:
        raise ValueError(f"A must be [d, D'={G.shape[1]}], got {tuple(A.shape)}")
    if v.dim() != 3 or v.shape[0] != G.shape[0] or v.shape[2] != A.shape[0]:
        raise ValueError(f"v must be [d], [P, d] (one image), [B, d] or [B, P, d] with d = {A.shape[0]} and "
                         f"B = {G.shape[0]}, got {tuple(v.shape)}")
    d = A.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not (1 <= k <= d):
        raise ValueError(f"k must be an int in [1, d={d}], got {k!r}")
    return G, A, v


def top_k_weights(v: Tensor, k: int) -> Tensor:
    """``w[..., u] = |v[..., u]|`` for the k largest signed entries u of each v, 0 elsewhere
    (ties: torch.topk's choice, the lowest index on CPU). Tensor[..., d] → Tensor[..., d]."""
    idx = v.topk(k, dim=-1, largest=True, sorted=False).indices
    return torch.zeros_like(v).scatter_(-1, idx, v.gather(-1, idx).abs())


def text_heatmap(G: Tensor, A: Tensor, v: Tensor, k: int = 180) -> Tensor:
    """Heatmaps of phrases over images (the fast form).

    Args:
        G (Tensor[B, D', h, w] or Tensor[D', h, w]): activation maps after the 1×1 conv.
        A (Tensor[d, D']): the weight of the image projection (``nn.Linear(D', d).weight``).
        v (Tensor[B, P, d], Tensor[B, d], Tensor[P, d] for one image, or Tensor[d]): phrase embeddings.
        k (int): dimensions kept (180 in the paper; k = d gives ``Σ_u |v_u| (A G)_u``).

    Returns:
        Tensor[B, P, h, w] (Tensor[P, h, w] for an unbatched G).
    """
    unbatched = G.dim() == 3
    G, A, v = _shapes(G, A, v, k)
    B, C, h, w = G.shape
    a = top_k_weights(v, k) @ A  # [B, P, D']: A_Kᵀ |v_K| without gathering A's rows
    H = torch.bmm(a.to(G.dtype), G.reshape(B, C, h * w)).view(B, -1, h, w)
    return H[0] if unbatched else H


def dense_text_heatmap(G: Tensor, A: Tensor, v: Tensor, k: int = 180) -> Tensor:
    """The definition, materializing G' = A·G for all d channels (oracle of :func:`text_heatmap`)."""
    unbatched = G.dim() == 3
    G, A, v = _shapes(G, A, v, k)
    Gp = torch.einsum("uc,bchw->buhw", A, G)  # [B, d, h, w]
    Hs = []
    for b in range(G.shape[0]):
        rows = []
        for p in range(v.shape[1]):
            K = v[b, p].topk(k).indices
            rows.append((v[b, p, K].abs().view(-1, 1, 1) * Gp[b, K]).sum(0))
        Hs.append(torch.stack(rows))
    H = torch.stack(Hs)
    return H[0] if unbatched else H


def heatmap_points(H: Tensor, image_size: Union[Tuple[float, float], Sequence[float]]) -> Tensor:
    """The argmax cell of each heatmap mapped to image pixels (its cell centre).

    Args:
        H (Tensor[..., h, w]): heatmaps.
        image_size ((W, H)): the image size in pixels the map covers.

    The argmax is the first maximum in row-major order; cell (i, j) maps to
    ``((j + 0.5) · W / w, (i + 0.5) · H / h)`` (spec 002.7 [D]).

    Returns:
        Tensor[..., 2] float64: (x, y) points.
    """
    if not isinstance(H, Tensor) or H.dim() < 2:
        raise ValueError(f"H must be a Tensor[..., h, w], got {getattr(H, 'shape', type(H).__name__)}")
    if len(image_size) != 2 or min(float(s) for s in image_size) <= 0:
        raise ValueError(f"image_size must be a positive (W, H) pair, got {image_size!r}")
    h, w = H.shape[-2:]
    if h == 0 or w == 0:
        raise ValueError("H has an empty spatial size")
    flat = H.reshape(-1, h * w)
    idx = flat.argmax(1)
    i, j = (idx // w).double(), (idx % w).double()
    W_img, H_img = float(image_size[0]), float(image_size[1])
    pts = torch.stack([(j + 0.5) * W_img / w, (i + 0.5) * H_img / h], 1)
    return pts.view(*H.shape[:-2], 2)
