"""Evaluation of a BEAN / DSVE-loc model: R@K / MedR both ways (with and without re-ranking) and
the pointing game against the centre baseline."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from ..data.transforms import prepare_images
from ..models.crossmodal import default_heatmap_k, encode_captions, encode_images, is_region_model
from ..models.localization import heatmap_points, text_heatmap
from .pointing import centre_points, pointing_game
from .retrieval import crossmodal_retrieval_metrics

__all__ = ["evaluate_crossmodal"]


def evaluate_crossmodal(model, vocab, data, size: Optional[int] = 400, folds: int = 1,
                        heatmap_k: Optional[int] = None, device: str = "cpu", batch_size: int = 64
                        ) -> Dict[str, Any]:
    """R@1/5/10, MedR both ways with and without re-ranking, and the pointing game (when the data
    have grounded phrases) against the centre baseline.

    Args:
        model (BEAN or SMILE), vocab (Vocabulary), data (CaptionedImages). A SMILE model's pointing
            game scores its regions (the best region's centre; ``heatmap_k`` unused).
        size (int, optional): test resize (None: native sizes). folds (int): 5 for COCO 5-fold 1k.
        heatmap_k (int, optional): heatmap dimensions, default the paper's share of the
            dimensions, 180 / 2400 of d (180 at d = 2400).

    Returns:
        ``{"retrieval": {"i2t": ..., "t2i": ...}, "retrieval_rerank": {...}, "pointing": {"accuracy",
        "centre_baseline", "phrases", "k"}}`` (recalls and accuracies in %).
    """
    caps, owner = data.flat_captions()
    region = is_region_model(model)
    img, G = (encode_images(model, data, size, batch_size, device), None) if region else \
        encode_images(model, data, size, batch_size, device, maps=True)
    txt = encode_captions(model, vocab, caps, device=device)
    owner_t = torch.as_tensor(owner, dtype=torch.int64)
    out: Dict[str, Any] = {
        "retrieval": crossmodal_retrieval_metrics(img, txt, owner_t, folds=folds),
        "retrieval_rerank": crossmodal_retrieval_metrics(img, txt, owner_t, folds=folds, rerank=True),
    }
    if data.phrases is not None and any(data.phrases) and region:
        out["pointing"] = _region_pointing(model, vocab, data, size, device)
    elif data.phrases is not None and any(data.phrases):
        A = model.image.fc.weight.detach().float().cpu()
        k = default_heatmap_k(A.shape[0]) if heatmap_k is None else min(heatmap_k, A.shape[0])
        points, boxes, sizes = [], [], []
        for i, ph in enumerate(data.phrases):
            if not ph:
                continue
            H_img, W_img = data.image(i).shape[:2]
            v = encode_captions(model, vocab, [p.text for p in ph], device=device)
            H = text_heatmap(G[i], A, v, k)  # [P, h, w]
            points.append(heatmap_points(H, (W_img, H_img)))
            boxes.extend(p.box for p in ph)
            sizes.extend([(W_img, H_img)] * len(ph))
        pts = torch.cat(points)
        _, acc = pointing_game(pts, boxes)
        _, base = pointing_game(centre_points(sizes), boxes)
        out["pointing"] = {"accuracy": acc, "centre_baseline": base, "phrases": len(boxes), "k": k}
    return out


@torch.no_grad()
def _region_pointing(model, vocab, data, size: Optional[int], device: str) -> Dict[str, Any]:
    """The pointing game of a region model (SMILE): each phrase points at the centre of its
    best-scoring region (Eq. 4.3), mapped back to the image's own pixels."""
    was = model.training
    model.eval()
    points, boxes, sizes = [], [], []
    try:
        for i, ph in enumerate(data.phrases):
            if not ph:
                continue
            im = data.image(i)
            H_img, W_img = im.shape[:2]
            x = prepare_images([im], size).to(device)
            v = encode_captions(model, vocab, [p.text for p in ph], device=device).to(device)
            pt = model.point(x, v.unsqueeze(0))[0].float().cpu()  # [P, 2] in the resized image's pixels
            pt = pt * torch.tensor([W_img / x.shape[3], H_img / x.shape[2]])
            points.append(pt)
            boxes.extend(p.box for p in ph)
            sizes.extend([(W_img, H_img)] * len(ph))
    finally:
        model.train(was)
    _, acc = pointing_game(torch.cat(points), boxes)
    _, base = pointing_game(centre_points(sizes), boxes)
    return {"accuracy": acc, "centre_baseline": base, "phrases": len(boxes), "grounding": "regions"}
