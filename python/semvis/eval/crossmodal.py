"""Evaluation of a BEAN / DSVE-loc model: R@K / MedR both ways (with and without re-ranking) and
the pointing game against the centre baseline."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from ..models.crossmodal import default_heatmap_k, encode_captions, encode_images
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
        model (BEAN), vocab (Vocabulary), data (CaptionedImages).
        size (int, optional): test resize (None: native sizes). folds (int): 5 for COCO 5-fold 1k.
        heatmap_k (int, optional): heatmap dimensions, default the paper's share of the
            dimensions, 180 / 2400 of d (180 at d = 2400).

    Returns:
        ``{"retrieval": {"i2t": ..., "t2i": ...}, "retrieval_rerank": {...}, "pointing": {"accuracy",
        "centre_baseline", "phrases", "k"}}`` (recalls and accuracies in %).
    """
    caps, owner = data.flat_captions()
    img, G = encode_images(model, data, size, batch_size, device, maps=True)
    txt = encode_captions(model, vocab, caps, device=device)
    owner_t = torch.as_tensor(owner, dtype=torch.int64)
    out: Dict[str, Any] = {
        "retrieval": crossmodal_retrieval_metrics(img, txt, owner_t, folds=folds),
        "retrieval_rerank": crossmodal_retrieval_metrics(img, txt, owner_t, folds=folds, rerank=True),
    }
    if data.phrases is not None and any(data.phrases):
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
