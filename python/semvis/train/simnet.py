"""Training SimNet (thesis ch. 3, spec B.1.4) on labelled image descriptors: :class:`SimNetTrainer`.

The recipe, in ``steps`` SGD updates (lr 1e-3, momentum 0.9, weight decay 5e-4, batch 100):

1. **warm-up** (``warmup_steps``): random vector pairs with Δ = 0, so that the network first
   imitates the cosine similarity;
2. **supervised**: balanced batches of matching / non-matching training pairs, loss Eq. 3.2 with
   the margin Δ (``delta``);
3. **difficult pairs** (SimNet*, from ``mine_at`` of the supervised steps on): candidates are each
   training descriptor's ``mine_k`` most cosine-similar non-matching items (``topk_similar`` with a
   label mask: memory O(N·k)) and every matching pair; those where the network is worse than the
   metric (s < cos for a match, s > cos for a non-match) join the pair pool, half of each batch.

Evaluation (:meth:`SimNetTrainer.evaluate`): every test descriptor queries the others; mAP of the
cosine ranking and of its top-``shortlist`` re-ranked by SimNet (the thesis' use).

The descriptors come from a ``.npz`` file (``x`` [N, K] float, ``labels`` [N] int, optional
``split`` [N] with 0 = train, 1 = test), with ``data = "landmarks"`` from R-MAC descriptors of a
synthetic landmark set (:func:`landmark_descriptors`: photographs of textured scenes under
perspective, crop, light and occlusion, the revisitop set's generator), or with
``data = "synthetic"`` from :func:`synthetic_descriptors` (vectors, no images).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..models.simnet import SimNet, mine_pairs, random_pairs, simnet_loss
from .base import TrainConfig, Trainer

__all__ = ["SimNetConfig", "SimNetTrainer", "synthetic_descriptors", "landmark_descriptors", "average_precision_rows",
           "load_descriptors"]


@dataclass
class SimNetConfig(TrainConfig):
    """Every knob of ``semvis simnet train``: ``data`` ("synthetic", "landmarks" or a ``.npz`` path),
    ``synthetic_classes`` / ``synthetic_per_class`` / ``dim`` (the synthetic descriptors),
    ``hidden`` (layer widths, the thesis' (4096, 4096)), ``delta`` (Δ of Eq. 3.2, 0.8 best in the
    thesis), ``steps``, ``warmup_steps``, ``batch_size``, ``lr`` / ``momentum`` / ``weight_decay``
    (SGD), ``mine_at`` (fraction of the supervised steps after which difficult pairs are mined;
    1: never), ``mine_k``, ``shortlist`` (cosine top-N re-ranked at evaluation)."""

    PRESETS = {
        "paper": {"hidden": [4096, 4096], "delta": 0.8, "batch_size": 100, "lr": 1e-3, "steps": 20000,
                  "warmup_steps": 5000},
        "synthetic": {"hidden": [512, 512], "delta": 0.8, "steps": 3000, "warmup_steps": 300, "lr": 3e-2},
    }

    data: str = "synthetic"
    synthetic_classes: int = 40
    synthetic_per_class: int = 12
    dim: int = 64
    hidden: Tuple[int, ...] = (512, 512)
    delta: float = 0.8
    steps: int = 3000
    warmup_steps: int = 300
    batch_size: int = 100
    lr: float = 3e-2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    mine_at: float = 0.5
    mine_k: int = 10
    shortlist: int = 100

    def validate(self):
        super().validate()
        if self.data not in ("synthetic", "landmarks") and not (isinstance(self.data, str) and os.path.isfile(self.data)):
            self.fail("data", "must be 'synthetic', 'landmarks' or an existing .npz file")
        for name, lo in (("synthetic_classes", 2), ("synthetic_per_class", 2), ("dim", 2), ("steps", 0),
                         ("warmup_steps", 0), ("batch_size", 2), ("mine_k", 1), ("shortlist", 1)):
            self.check_int(name, lo=lo)
        h = self.hidden
        if (not isinstance(h, (list, tuple)) or not h
                or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in h)):
            self.fail("hidden", "must be a non-empty list of ints >= 1")
        self.hidden = tuple(h)
        self.check_float("delta", lo=0, hi=2)
        self.check_float("lr", lo=0, lo_open=True)
        self.check_float("momentum", lo=0, hi=1)
        self.check_float("weight_decay", lo=0)
        self.check_float("mine_at", lo=0, hi=1)
        return self


def synthetic_descriptors(classes: int, per_class: int, dim: int, seed: int = 0) -> Tuple[Tensor, Tensor, Tensor]:
    """Unit descriptors of ``classes`` landmarks seen ``per_class`` times, with the structure that
    makes a learned similarity useful: a class prototype, plus a few nuisance directions shared by
    all classes (lighting, viewpoint: large, common to unrelated images) plus view noise; the cosine
    is fooled by shared nuisances, a learned g can discount them. Half the views of each class go to
    the test split. Returns (x [N, dim], labels [N], split [N]: 0 train, 1 test)."""
    g = torch.Generator().manual_seed(seed)
    proto = F.normalize(torch.randn(classes, dim, generator=g), dim=1)
    nuis = F.normalize(torch.randn(4, dim, generator=g), dim=1)
    labels = torch.arange(classes).repeat_interleave(per_class)
    n = labels.numel()
    coef = torch.randn(n, 4, generator=g) * 0.9
    x = proto[labels] + coef @ nuis + 0.35 * torch.randn(n, dim, generator=g) / math.sqrt(dim) * math.sqrt(8)
    split = (torch.arange(n) % per_class >= per_class // 2).long()
    return F.normalize(x, dim=1), labels, split


def landmark_descriptors(classes: int, per_class: int, seed: int = 0, root: Optional[str] = None,
                         width: int = 32) -> Tuple[Tensor, Tensor, Tensor]:
    """R-MAC descriptors (a random-init ResNet-18 trunk cut after conv4: no weights offline) of
    ``per_class`` photographs of each of ``classes`` synthetic landmarks
    (:func:`semvis.data.landmarks.write_synthetic_landmarks`, written under ``root`` or a
    temporary folder); label = landmark; even views train, odd views test."""
    import tempfile

    from ..data.landmarks import RevisitopDataset, write_synthetic_landmarks
    from ..eval.landmarks import _embedder, embed_images

    root = root or tempfile.mkdtemp(prefix="simnet_landmarks_")
    d = write_synthetic_landmarks(root, name="simnet", n_landmarks=classes, views=per_class, queries=1,
                                  distractors=0, seed=seed)
    ds = RevisitopDataset(os.path.dirname(d), "simnet")
    trunk, head, _ = _embedder("resnet18", width, 3, 3, seed)
    x = embed_images([ds.image(i) for i in range(len(ds.imlist))], trunk, head)
    labels = torch.arange(classes).repeat_interleave(per_class)
    split = (torch.arange(classes * per_class) % 2).long()
    return x.float(), labels, split


def load_descriptors(path: str) -> Tuple[Tensor, Tensor, Tensor]:
    """Reads ``x``, ``labels`` and optional ``split`` from a ``.npz`` (no pickled objects)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z or "labels" not in z:
                raise ValueError(f"{path}: a descriptor file needs arrays 'x' [N, K] and 'labels' [N], has {sorted(z)}")
            x, labels = z["x"], z["labels"]
            split = z["split"] if "split" in z else None
    except (OSError, ValueError, EOFError) as e:
        if isinstance(e, ValueError) and str(e).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not a readable .npz descriptor file ({type(e).__name__})") from None
    if x.ndim != 2 or labels.shape != (x.shape[0],) or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{path}: x must be float [N, K] and labels [N], got {x.dtype} {x.shape} and {labels.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{path}: x holds NaN or Inf")
    if split is None:
        split = (np.arange(x.shape[0]) % 2 == 1).astype(np.int64)
    return torch.from_numpy(x).float(), torch.from_numpy(labels.astype(np.int64)), torch.from_numpy(split.astype(np.int64))


def average_precision_rows(order: Tensor, rel: Tensor) -> Tensor:
    """AP of each row: ``order`` [Q, L] ranked item ids, ``rel`` [Q, N] bool relevance (the
    normaliser counts every relevant item, also those outside the list)."""
    hit = rel.gather(1, order).double()
    ranks = torch.arange(1, order.shape[1] + 1, dtype=torch.float64)
    return (hit * hit.cumsum(1) / ranks).sum(1) / rel.sum(1).clamp(min=1).double()


class SimNetTrainer(Trainer):
    """See the module docstring."""

    KIND = "simnet"
    CONFIG = SimNetConfig
    UNIT = "step"

    def __init__(self, config: SimNetConfig):
        super().__init__(config)
        c = config
        if c.data == "synthetic":
            x, labels, split = synthetic_descriptors(c.synthetic_classes, c.synthetic_per_class, c.dim, c.seed)
        elif c.data == "landmarks":
            x, labels, split = landmark_descriptors(c.synthetic_classes, c.synthetic_per_class, c.seed,
                                                    root=os.path.join(c.out_dir, "landmarks") if c.out_dir else None)
        else:
            x, labels, split = load_descriptors(c.data)
        self.x, self.labels, self.split = x, labels, split
        self.train_idx = torch.nonzero(split == 0).flatten()
        self.test_idx = torch.nonzero(split == 1).flatten()
        if self.train_idx.numel() < 2 or self.test_idx.numel() < 2:
            raise ValueError(f"data: needs >= 2 train and >= 2 test descriptors, got {self.train_idx.numel()} "
                             f"and {self.test_idx.numel()}")
        self.seed_torch()
        self.model = SimNet(x.shape[1], hidden=c.hidden).to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=c.lr, momentum=c.momentum,
                                         weight_decay=c.weight_decay)
        self.base_lrs = [c.lr]
        self.gen = torch.Generator().manual_seed(c.seed + 1)
        lt = self.labels[self.train_idx]
        same = lt[:, None] == lt[None, :]
        same.fill_diagonal_(False)
        self.pos_pairs = torch.nonzero(same)  # every matching training pair, local ids
        if self.pos_pairs.shape[0] == 0:
            raise ValueError("data: no class has two training descriptors (no matching pair)")
        self.hard: Optional[Tensor] = None  # [P, 3] (i, j, match) difficult pairs, local ids

    def budget(self) -> int:
        return self.config.steps

    def _supervised_batch(self, n: int) -> Tuple[Tensor, Tensor, Tensor]:
        xt, lt = self.x[self.train_idx], self.labels[self.train_idx]
        half = n // 2
        p = self.pos_pairs[torch.randint(self.pos_pairs.shape[0], (half,), generator=self.gen)]
        a = torch.randint(xt.shape[0], (n - half,), generator=self.gen)
        b = torch.randint(xt.shape[0], (n - half,), generator=self.gen)
        i = torch.cat([p[:, 0], a])
        j = torch.cat([p[:, 1], b])
        return i, j, lt[i] == lt[j]

    def next_batch(self):
        c = self.config
        if self.step < c.warmup_steps:
            xi, xj, cos = random_pairs(c.batch_size, self.x.shape[1], generator=self.gen)
            return xi, xj, cos, torch.zeros(c.batch_size, dtype=torch.bool), 0.0
        sup = self.step - c.warmup_steps
        if self.hard is None and c.mine_at < 1 and sup >= c.mine_at * (c.steps - c.warmup_steps):
            self.mine()
        xt = self.x[self.train_idx]
        if self.hard is not None and self.hard.shape[0]:
            n_h = c.batch_size // 2
            h = self.hard[torch.randint(self.hard.shape[0], (n_h,), generator=self.gen)]
            i, j, m = self._supervised_batch(c.batch_size - n_h)
            i, j, m = torch.cat([i, h[:, 0]]), torch.cat([j, h[:, 1]]), torch.cat([m, h[:, 2].bool()])
        else:
            i, j, m = self._supervised_batch(c.batch_size)
        xi, xj = xt[i], xt[j]
        return xi, xj, (F.normalize(xi, dim=1) * F.normalize(xj, dim=1)).sum(1), m, c.delta

    def mine(self) -> int:
        """Adds the difficult training pairs to the pool; returns how many."""
        xt, lt = self.x[self.train_idx], self.labels[self.train_idx]
        self.model.eval()
        i, j, m = mine_pairs(self.model, xt.to(self.device), lt.to(self.device), k=self.config.mine_k)
        self.model.train()
        self.hard = torch.stack([i.cpu(), j.cpu(), m.cpu().long()], 1)
        return int(self.hard.shape[0])

    def train_step(self, batch) -> Dict[str, Any]:
        xi, xj, cos, m, delta = batch
        self.model.train()
        s = self.model.score(xi.to(self.device), xj.to(self.device))
        loss = simnet_loss(s, cos.to(self.device), m.to(self.device), delta=delta)
        self.update(loss)
        return {"loss": float(loss.detach()), "phase": "warmup" if delta == 0.0 and self.step <= self.config.warmup_steps
                else ("difficult" if self.hard is not None else "supervised")}

    @torch.no_grad()
    def evaluate(self) -> Dict[str, float]:
        """mAP of the cosine ranking and of its top-``shortlist`` re-ranked by SimNet, every test
        descriptor querying all the others."""
        self.model.eval()
        x = self.x[self.test_idx].to(self.device)
        lab = self.labels[self.test_idx].to(self.device)
        n = x.shape[0]
        xn = F.normalize(x, dim=1)
        S = xn @ xn.t()
        S.fill_diagonal_(-math.inf)
        rel = lab[:, None] == lab[None, :]
        rel.fill_diagonal_(False)
        order = torch.sort(S, dim=1, descending=True, stable=True).indices[:, : n - 1]
        keep = rel.any(1)
        ap_cos = average_precision_rows(order, rel)
        L = min(self.config.shortlist, n - 1)
        short = order[:, :L]
        s = self.model.score(x.repeat_interleave(L, 0), x[short.flatten()]).view(n, L)
        rer = short.gather(1, torch.sort(s, dim=1, descending=True, stable=True).indices)
        ap_sim = average_precision_rows(torch.cat([rer, order[:, L:]], 1), rel)
        return {"map_cosine": float(ap_cos[keep].mean()), "map_simnet": float(ap_sim[keep].mean()),
                "queries": int(keep.sum()), "shortlist": L}

    def extra_state(self) -> Dict[str, Any]:
        return {"model": self.model.state_dict(), "generator": self.gen.get_state(),
                "hard": self.hard if self.hard is not None else torch.empty(0, 3, dtype=torch.int64),
                "mined": self.hard is not None}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.gen.set_state(state["generator"])
        self.hard = state["hard"] if state.get("mined") else None
