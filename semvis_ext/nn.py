"""nn.Module wrappers around the semvis_ext ops. Each holds only its parameters; see the functional."""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .ops.quantized_ap import ap_loss
from .ops.region_pool import region_pool
from .ops.weldon import weldon_pool

__all__ = ["WeldonPool2d", "MAC", "GeM", "RMAC", "l2n", "multiscale_embedding", "QuantizedAPLoss",
           "HardestTripletLoss", "RegionAttention"]


class WeldonPool2d(nn.Module):
    """See :func:`semvis_ext.weldon_pool`. ``WeldonPool2d(15)`` is DSVE-loc's ``WeldonPooling(15)``.

    ``forward(x, valid_hw=None)``: Tensor[B, C, H, W] -> Tensor[B, C].
    """

    def __init__(self, kmax: Union[int, float] = 1, kmin: Optional[Union[int, float]] = None, alpha: float = 1.0,
                 form: str = "dsve"):
        super().__init__()
        self.kmax = kmax
        self.kmin = kmax if kmin is None else kmin
        self.alpha = alpha
        self.form = form

    def forward(self, x: Tensor, valid_hw: Optional[Tensor] = None) -> Tensor:
        return weldon_pool(x, self.kmax, self.kmin, self.alpha, valid_hw, form=self.form)

    def extra_repr(self) -> str:
        return f"kmax={self.kmax}, kmin={self.kmin}, alpha={self.alpha}, form={self.form!r}"


class QuantizedAPLoss(nn.Module):
    """See :func:`semvis_ext.ap_loss`. ``QuantizedAPLoss(bins=25, score_range=(0, 1))`` is dirtorch's ``APLoss()``.

    ``forward(scores, labels)``: Tensor[Q, N], Tensor[Q, N] -> Tensor[] (or Tensor[Q] with reduction="none").
    """

    def __init__(self, bins: int = 20, score_range=(-1.0, 1.0), reduction: str = "mean"):
        super().__init__()
        self.bins = bins
        self.score_range = tuple(score_range)
        self.reduction = reduction

    def forward(self, scores: Tensor, labels: Tensor) -> Tensor:
        return ap_loss(scores, labels, self.bins, self.score_range, self.reduction)

    def extra_repr(self) -> str:
        return f"bins={self.bins}, score_range={self.score_range}, reduction={self.reduction!r}"
class HardestTripletLoss(nn.Module):
    """See :func:`semvis_ext.vse_hardest_triplet_loss`. Defaults = VSE++ ``ContrastiveLoss(0.2,
    max_violation=True)``.

    ``warmup_updates``: for that many training-mode calls the loss uses every negative (the
    VSE0 sum) before switching to the hardest ones, against the early collapse users report
    with max violation (vsepp#27, #30).

    ``forward(img, txt, labels=None)``: Tensor[B, d] x 2 -> Tensor[].
    """

    def __init__(self, margin: float = 0.2, reduction: str = "sum", both_directions: bool = True, k: int = 1,
                 warmup_updates: int = 0):
        super().__init__()
        self.margin, self.reduction, self.both_directions, self.k = margin, reduction, both_directions, k
        self.warmup_updates = warmup_updates
        self.updates = 0

    def forward(self, img: Tensor, txt: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        from .ops.triplet_losses import vse_hardest_triplet_loss

        negatives = "all" if self.training and self.updates < self.warmup_updates else "hardest"
        if self.training:
            self.updates += 1
        return vse_hardest_triplet_loss(img, txt, self.margin, self.reduction, self.both_directions,
                                        negatives=negatives, k=self.k, labels=labels)

    def extra_repr(self) -> str:
        return (f"margin={self.margin}, reduction={self.reduction!r}, both_directions={self.both_directions}, "
                f"k={self.k}, warmup_updates={self.warmup_updates}")
# --------------------------------------------------------------------------------------------
# Global descriptors: MAC, GeM, R-MAC (cirtorch's names; see semvis_ext.region_pool)
# --------------------------------------------------------------------------------------------

def l2n(x: Tensor, eps: float = 1e-6, dim: int = -1) -> Tensor:
    """cirtorch's ``l2n``: ``x / (||x|| + eps)`` along ``dim`` (eps added to the norm)."""
    return x / (x.norm(p=2, dim=dim, keepdim=True) + eps)


def _full_boxes(x: Tensor, valid_hw: Optional[Tensor]) -> Tensor:
    if valid_hw is None:
        return torch.tensor([[0, 0, x.shape[2], x.shape[3]]], dtype=torch.int64, device=x.device)
    vhw = torch.as_tensor(valid_hw, dtype=torch.int64, device=x.device)
    return torch.cat([torch.zeros_like(vhw), vhw], dim=1).unsqueeze(1)


class MAC(nn.Module):
    """Global max pooling (R-MAC's one-region case). See :func:`semvis_ext.region_pool`.

    ``forward(x, valid_hw=None)``: Tensor[B, C, H, W] -> Tensor[B, C] (cirtorch returns
    [B, C, 1, 1]; no normalization here). ``valid_hw`` restricts each image to its top-left window.
    """

    def forward(self, x: Tensor, valid_hw: Optional[Tensor] = None) -> Tensor:
        return region_pool(x, _full_boxes(x, valid_hw), valid_hw=valid_hw)[:, 0]


class GeM(nn.Module):
    """Generalized-mean pooling with a learnable exponent (cirtorch ``GeM(p=3, eps=1e-6)``).

    ``forward(x, valid_hw=None)``: Tensor[B, C, H, W] -> Tensor[B, C],
    ``(mean max(x, eps)^p)^(1/p)`` over the map (or each image's valid window).
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learnable: bool = True):
        super().__init__()
        self.p = nn.Parameter(torch.tensor([float(p)]), requires_grad=learnable)
        self.eps = eps

    def forward(self, x: Tensor, valid_hw: Optional[Tensor] = None) -> Tensor:
        return region_pool(x, _full_boxes(x, valid_hw), valid_hw=valid_hw, p=self.p, eps=self.eps)[:, 0]

    def extra_repr(self) -> str:
        return f"p={float(self.p.detach().reshape(())):.4f}, eps={self.eps}"


class RMAC(nn.Module):
    """R-MAC (Tolias et al. 2016; Gordo et al. 2017): region pooling over the cirtorch grid, then
    per region ℓ2 -> whitening ``P (f - mu)`` (learnable shift + linear) -> ℓ2, sum over the
    image's regions, ℓ2.

    Args:
        dim (int): channels C of the feature map (= output dimension).
        levels (int): grid levels L. Default 3.
        whitening (bool): learnable shift + linear map, identity until trained or initialised with
            :meth:`fit_pca`. Default True. Without it this is cirtorch's ``rmac`` followed by ℓ2.
        p (float, optional): pool the regions with GeM of this (learnable) exponent instead of max.
        include_global (bool): the full map counts as a region (cirtorch). Default True.
        eps (float): the ℓ2 epsilon (added to the norm, cirtorch's ``l2n``). Default 1e-6.

    ``forward(x, valid_hw=None, regions=None)``: Tensor[B, C, H, W] -> Tensor[B, dim], unit norm.
    ``valid_hw`` gives each image of a padded batch its own grid; ``regions`` explicit boxes
    (see :func:`semvis_ext.region_pool`). Padded region slots are masked out of the sum.
    """

    def __init__(self, dim: int, levels: int = 3, whitening: bool = True, p: Optional[float] = None, *,
                 include_global: bool = True, eps: float = 1e-6):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"RMAC: dim must be an int >= 1, got {dim!r}")
        self.dim, self.levels, self.include_global, self.eps = dim, levels, include_global, eps
        self.p = nn.Parameter(torch.tensor([float(p)])) if p is not None else None
        if whitening:
            self.mean = nn.Parameter(torch.zeros(dim))
            self.weight = nn.Parameter(torch.eye(dim))
        else:
            self.register_parameter("mean", None)
            self.register_parameter("weight", None)

    def region_vectors(self, x: Tensor, valid_hw: Optional[Tensor] = None, regions=None, whiten: bool = True):
        """Per-region vectors after ℓ2 (and whitening + ℓ2 when ``whiten``) and their mask:
        (Tensor[B, R, dim], Tensor[B, R] bool). ``whiten=False`` gives the input of :meth:`fit_pca`."""
        if x.dim() != 4 or x.shape[1] != self.dim:
            raise ValueError(f"RMAC: input must have shape [B, {self.dim}, H, W], got {tuple(x.shape)}")
        v, mask = region_pool(x, regions, self.levels, valid_hw, self.p, include_global=self.include_global,
                              return_mask=True)
        v = l2n(v, self.eps)
        if whiten and self.weight is not None:
            v = l2n(nn.functional.linear(v - self.mean, self.weight), self.eps)
        return v, mask

    def forward(self, x: Tensor, valid_hw: Optional[Tensor] = None, regions=None) -> Tensor:
        v, mask = self.region_vectors(x, valid_hw, regions)
        return l2n((v * mask.unsqueeze(-1).to(v.dtype)).sum(dim=1), self.eps)

    @torch.no_grad()
    def fit_pca(self, features: Tensor, eps_rel: float = 1e-6) -> "RMAC":
        """Initialises the whitening from region vectors (Gordo et al.): ``mu`` = their mean,
        ``P = diag(lambda + eps)^(-1/2) U^T`` from the eigen-decomposition of their covariance,
        eigenvalues in decreasing order, ``eps = eps_rel * lambda_max``.

        Args:
            features (Tensor[N, dim]): ℓ2-normalised region vectors, e.g. the valid rows of
                ``region_vectors(x, whiten=False)`` over training images (N >= 2).
        Returns:
            self.
        """
        if self.weight is None:
            raise ValueError("RMAC.fit_pca: this RMAC was built with whitening=False")
        if not isinstance(features, Tensor) or not features.dtype.is_floating_point:
            raise TypeError("RMAC.fit_pca: features must be a floating Tensor[N, dim]")
        if features.dim() != 2 or features.shape[1] != self.dim or features.shape[0] < 2:
            raise ValueError(f"RMAC.fit_pca: features must have shape [N >= 2, {self.dim}], got {tuple(features.shape)}")
        f = features.detach().to(torch.float64)
        if not torch.isfinite(f).all():
            raise ValueError("RMAC.fit_pca: features contain NaN or Inf")
        mu = f.mean(0)
        fc = f - mu
        cov = fc.T @ fc / f.shape[0]
        lam, U = torch.linalg.eigh(cov)
        lam, U = lam.flip(0).clamp(min=0), U.flip(1)
        P = (lam + eps_rel * lam[0].clamp(min=1e-30)).rsqrt().unsqueeze(1) * U.T
        self.mean.copy_(mu.to(self.mean))
        self.weight.copy_(P.to(self.weight))
        return self

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, levels={self.levels}, whitening={self.weight is not None}, "
                f"p={None if self.p is None else float(self.p.detach().reshape(()))}, "
                f"include_global={self.include_global}")


def multiscale_embedding(net: Callable[[Tensor], Tensor], images: Tensor,
                         scales: Sequence[float] = (1.0, 2 ** -0.5), p: float = 1.0,
                         max_size: Optional[int] = None) -> Tensor:
    """Multi-scale descriptor, cirtorch's convention (``extract_ms``): ``(mean over scales of
    net(resize(images, s))^p)^(1/p)``, then ℓ2. With ``p = 1`` (R-MAC) this is the sum of the
    per-scale descriptors re-normalized; for GeM networks pass their p.

    Args:
        net: maps Tensor[B, 3, h, w] to Tensor[B, D] descriptors.
        images (Tensor[B, 3, H, W]): one batch of same-size images.
        scales (sequence of float): resize factors (bilinear, ``align_corners=False``). Default
            (1, 1/sqrt(2)): the seed-000 two-resolution preset (576 and 407 px).
        p (float): the exponent of the average. Default 1.
        max_size (int, optional): first resize so that the larger side is ``max_size`` px (576 in
            seed 000), keeping the aspect ratio.

    Returns:
        Tensor[B, D], unit ℓ2 norm.
    """
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError("multiscale_embedding: images must be a Tensor[B, 3, H, W]")
    if len(scales) == 0 or any((not isinstance(s, (int, float))) or s <= 0 for s in scales):
        raise ValueError(f"multiscale_embedding: scales must be positive numbers, got {scales!r}")
    if max_size is not None:
        H, W = images.shape[2:]
        f = max_size / max(H, W)
        size = (max(1, round(H * f)), max(1, round(W * f)))
        images = nn.functional.interpolate(images, size=size, mode="bilinear", align_corners=False)
    acc = None
    for s in scales:
        im = images if s == 1 else nn.functional.interpolate(images, scale_factor=s, mode="bilinear",
                                                              align_corners=False)
        v = net(im).pow(p)
        acc = v if acc is None else acc + v
    v = (acc / len(scales)).pow(1.0 / p)
    return l2n(v)


class RegionAttention(nn.Module):
    """See :func:`semvis_ext.region_attention`. Holds the attention filter W of SMILE (Eq. 3.6).

    ``forward(G, lengths=None)``: Tensor[B, R, d] region features -> Tensor[B, d].

    Args:
        dim (int): d, the feature size.
        mode (str): ``"softmax"`` (SMILE: W is d x d, logits ``L = G W^T``), ``"1-att"`` (W is 1 x d:
            one logit per region), ``"no-softmax"`` (d x d, weights ``a = L`` unnormalised),
            ``"no-conv"`` and ``"mean"`` (no parameter).
        bias (bool): a bias on the logits (the 1x1 conv's). Default True.
    """

    def __init__(self, dim: int, mode: str = "softmax", bias: bool = True):
        super().__init__()
        from .ops.region_attention import MODES

        if mode not in MODES:
            raise ValueError(f"RegionAttention: mode must be one of {sorted(MODES)}, got {mode!r}")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"RegionAttention: dim must be an int >= 1, got {dim!r}")
        self.dim = dim
        self.mode = mode
        out = {"softmax": dim, "no-softmax": dim, "1-att": 1}.get(mode)
        self.W = nn.Linear(dim, out, bias=bias) if out else None

    def forward(self, G: Tensor, lengths=None) -> Tensor:
        from .ops.region_attention import region_attention

        logits = self.W(G) if self.W is not None else None
        return region_attention(G, logits, lengths, mode=self.mode)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, mode={self.mode!r}"
