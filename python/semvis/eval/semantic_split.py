"""NDCG@R / PCC@R of a score matrix on a split of a :class:`~semvis.data.semantic.SemanticData`,
with the tf-idf surrogate as ground truth (spec 000.10)."""
from __future__ import annotations

import math
from typing import Dict

import numpy as np
import torch
from torch import Tensor

from ..text.tfidf import surrogate_similarity
from .semantic import auc, ndcg_curve, pcc_curve

__all__ = ["evaluate_scores"]


def evaluate_scores(scores: Tensor, data, ids: np.ndarray, qsel: np.ndarray, r_max: int
                    ) -> Dict[str, object]:
    """NDCG / PCC curves and AUCs of ``scores`` [Q, N] (queries ``ids[qsel]`` against ``ids``)
    with the tf-idf ground truth; the query itself is excluded."""
    scores = scores.double().clone()
    rel = surrogate_similarity(data.t.rows(ids[qsel]), data.t.rows(ids)).double()
    rows = torch.arange(len(qsel))
    scores[rows, torch.from_numpy(qsel)] = -math.inf
    rel[rows, torch.from_numpy(qsel)] = 0.0
    nd = ndcg_curve(scores, rel, r_max)
    pc = pcc_curve(scores, rel, r_max)
    return {"ndcg_auc": auc(nd.curve), "pcc_auc": auc(pc.curve), "ndcg": nd.curve, "pcc": pc.curve,
            "ndcg_at_r": float(nd.curve[min(r_max, scores.shape[1]) - 1])}
