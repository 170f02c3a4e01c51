"""A simulated user study on synthetic scenes (spec 000.1): the scene graphs play the users.

Triplets are built as in the paper: a random query, and two candidates drawn from its 50 nearest
neighbours under a *visual baseline* embedding, so that both are plausible. Each simulated
annotator compares a scene-graph similarity of the candidates to the query, with personal noise,
and answers "neither" when the difference is below a threshold. The scene-graph similarity is a
METEOR-like match kernel (spec 000.3) between the two object sets, with per-object similarity
0.5 [same shape] + 0.3 [same colour] + 0.2 [same texture] (a documented choice).
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import torch

__all__ = ["object_similarity", "scene_graph_similarity", "make_study_triplets", "simulate_annotators"]


def object_similarity(a, b) -> float:
    return 0.5 * (a.shape == b.shape) + 0.3 * (a.colour == b.colour) + 0.2 * (a.texture == b.texture)


def scene_graph_similarity(objs_a: Sequence, objs_b: Sequence) -> float:
    """K(X, Y) = (sum_x max_y k(x, y) + sum_y max_x k(x, y)) / (|X| + |Y|), in [0, 1]."""
    if not objs_a or not objs_b:
        return 0.0
    k = np.asarray([[object_similarity(x, y) for y in objs_b] for x in objs_a])
    return float((k.max(1).sum() + k.max(0).sum()) / (len(objs_a) + len(objs_b)))


def make_study_triplets(baseline_emb: torch.Tensor, n_triplets: int, neighbours: int = 50, seed: int = 0
                        ) -> np.ndarray:
    """(query, A, B) index triplets [T, 3]: random queries, A != B drawn from the query's
    ``neighbours`` nearest neighbours under ``baseline_emb`` (cosine on l2-normalised rows)."""
    e = torch.nn.functional.normalize(baseline_emb.double(), dim=1)
    n = e.shape[0]
    if n < 3:
        raise ValueError("make_study_triplets: need at least 3 images")
    k = min(neighbours, n - 1)
    s = e @ e.T
    s.fill_diagonal_(-float("inf"))
    nn_idx = torch.topk(s, k, dim=1).indices.numpy()
    rng = np.random.default_rng(seed)
    q = rng.integers(0, n, n_triplets)
    out = np.empty((n_triplets, 3), np.int64)
    for t, qi in enumerate(q):
        a, b = rng.choice(k, 2, replace=False)
        out[t] = (qi, nn_idx[qi, a], nn_idx[qi, b])
    return out


def simulate_annotators(triplets: np.ndarray, graphs: Sequence[Sequence], n_users: int = 5,
                        per_triplet: int = 3, noise: float = 0.05, neither: float = 0.03, seed: int = 0
                        ) -> Tuple[np.ndarray, List[Tuple[int, int, int]]]:
    """Simulated answers. Each triplet is answered by ``per_triplet`` of ``n_users`` users; a user
    adds Gaussian noise (std ``noise``) to the scene-graph
    similarities; |difference| < ``neither`` gives "neither".

    Returns:
        (counts [T, 3] int64, answers [(user, triplet, choice)]).
    """
    rng = np.random.default_rng(seed)
    counts = np.zeros((len(triplets), 3), np.int64)
    answers: List[Tuple[int, int, int]] = []
    for t, (q, a, b) in enumerate(triplets):
        sa = scene_graph_similarity(graphs[q], graphs[a])
        sb = scene_graph_similarity(graphs[q], graphs[b])
        for u in rng.choice(n_users, min(per_triplet, n_users), replace=False):
            d = sa - sb + rng.normal(0, noise)
            ch = 2 if abs(d) < neither else (0 if d > 0 else 1)
            counts[t, ch] += 1
            answers.append((int(u), t, ch))
    return counts, answers
