"""Training semantic retrieval from captions (Gordo & Larlus, CVPR 2017; spec 000.5 - 000.10).

The data (:class:`~semvis.data.semantic.SemanticData`: images, captions, split, tf-idf surrogate)
live in :mod:`semvis.data.semantic`. ``SemanticTrainer`` (a :class:`~semvis.train.base.Trainer`)
trains the R-MAC embedding with mined hard triplets:

1. every ``remine_every`` updates (the mining-round hook, :meth:`SemanticTrainer.mine`): draw N
   queries, ``positives_per_query`` relevant images each; the pool is their union; embed it with
   the current model (eval mode, no grad); keep, for every (q, d+), the ``per_pair`` hardest
   violating negatives of the pool (``semvis_ext.hard_triplets``); with ``negatives =
   "semihard"`` (the synthetic preset) only those ranked below d+ (FaceNet's semi-hard negatives:
   trained from scratch, the hardest ones collapse the embedding; issue 23);
2. each update: ``batch_size`` candidates drawn without replacement (reshuffled each round);
   loss L_v (visual) or L_v + L_t1 + L_t2 (joint), Adam, lr x ``lr_drop`` after ``lr_drop_at``.

Joint mining [D]: with ``mine_by = "objective"`` (the paper preset) a candidate's score is the sum
of its three similarities, (phi_q, phi_q, theta_q) . (phi_d, theta_d, phi_d), with margin 3m (the
hinge of the summed objective), so the same mining kernel serves both objectives. With
``mine_by = "visual"`` (the synthetic preset) the joint model mines the (V, V) model's triplets
(phi . phi, margin m) and adds the text terms on them: mined by the sum, the visual term got
triplets chosen for the text terms' violations, and (V+T, V) fell below (V, V) on two of three
sets where mining by phi alone put it above (issue 23, ``benchmarks/RESULTS.md``).

Checkpoints hold the model, text projection, optimiser, step, the trainer's RNG and the current
mining round, so that a resumed run continues exactly as an uninterrupted one.

Under ``torch.distributed`` (``torchrun``), every rank draws the same queries, pools and batches
(the trainer's generator is seeded identically and advanced identically on every rank):

* a mining round: each rank embeds its share of the pool (no grad), the embeddings are gathered
  (:func:`semvis.distributed.all_gather_no_grad`), each rank mines its share of the queries against
  the whole pool, and the triplets are gathered in rank order: the candidates of a one-process
  round (the miner orders its output by query);
* an update: each rank embeds its share of the batch's distinct images and takes its share of the
  triplets; the embeddings are gathered with :func:`semvis.distributed.all_gather_with_grad`, so the
  rank's triplets (its queries) see every rank's embeddings; each term of the loss is a mean over
  triplets, so the rank's loss is scaled by ``W * n_r / N`` (:func:`semvis.distributed.loss_scale`)
  and the gradients are averaged over the ranks (:meth:`~semvis.train.base.Trainer.replicate`):
  the update is the one-process update on the whole batch. Exactly so with BatchNorm frozen
  (``freeze_bn``, the paper's setting); with BatchNorm trained, each rank normalises its share with
  its own batch statistics (as DDP does without SyncBatchNorm) and rank 0's running statistics are
  kept on every rank.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .. import distributed
from ..data.semantic import SemanticData, build_data, stack_images
from ..eval.semantic_split import evaluate_scores
from ..eval.semantic import JointQuery, fit_joint_query
from ..models.semantic import SemanticRetrievalNet
from . import registry
from .base import Trainer
from .config import SemanticConfig

__all__ = ["SemanticData", "SemanticTrainer", "build_data", "evaluate_scores", "CHECKPOINT_FORMAT"]


def calibration_split(n_train: int, fraction: float, seed: int, min_size: int = 32):
    """(held-out, fitted) sorted positions in a training split of ``n_train`` images: a seeded
    ``fraction`` of it (at most 200 images) is held out of every update to calibrate the (V+T)
    query; none when that would be fewer than ``min_size`` images."""
    n_cal = min(200, int(round(fraction * n_train)))
    if n_cal < min_size or n_train - n_cal < 2:
        return np.zeros(0, np.int64), np.arange(n_train, dtype=np.int64)
    perm = np.random.default_rng(seed + 3).permutation(n_train)
    return np.sort(perm[:n_cal]).astype(np.int64), np.sort(perm[n_cal:]).astype(np.int64)


class SemanticTrainer(Trainer):
    """Trains :class:`SemanticRetrievalNet` with mined triplets (see the module docstring).

    ``SemanticTrainer(cfg)`` builds the data (or takes ``data``), the model (whitening initialised
    by PCA on training regions) and the optimiser; ``fit()`` trains ``cfg.steps`` updates;
    ``evaluate()`` gives NDCG@R / PCC@R; ``save()`` / ``SemanticTrainer.resume(path, data=None)``.
    """

    KIND = "semantic"
    CONFIG = SemanticConfig
    UNIT = "step"

    def __init__(self, cfg: SemanticConfig, data: Optional[SemanticData] = None):
        super().__init__(cfg)
        self.data = data if data is not None else build_data(cfg)
        self.seed_torch()
        self.model = SemanticRetrievalNet(cfg.backbone, cfg.width, cfg.levels, cfg.scales, cfg.pooling,
                                          cfg.freeze_bn, cfg.weights, cfg.stages).to(self.device)
        self.uses_text = cfg.objective in ("joint", "wsabie")
        self.text = (registry.build_text_projection(len(self.data.tfidf.vocab), self.model.dim).to(self.device)
                     if self.uses_text else None)
        self.objective = registry.build_objective(cfg.objective, cfg.margin)
        self.miner = registry.build_miner("hard_triplets")
        self.implementations = registry.implementations()
        # training images held out of every update to calibrate the (V+T) query (issue 23)
        self.calib_pos, self.fit_pos = calibration_split(len(self.data.train), cfg.calib_fraction, cfg.seed)
        self._is_calib = torch.zeros(len(self.data.train), dtype=torch.bool)
        self._is_calib[torch.from_numpy(self.calib_pos)] = True
        # PCA-whitening initialisation on (up to 256) training images
        init_ids = self.data.train[self.fit_pos[: min(256, len(self.fit_pos))]]
        if cfg.init_whitening:  # images of mixed sizes are batched by size
            self.model.init_whitening(self.data.load(init_ids))
        if self.text is not None and cfg.text_init == "images":
            self.init_text_from_images()
        groups = [{"params": list(self.model.parameters()), "lr": cfg.lr}]
        if self.text is not None:
            groups.append({"params": list(self.text.parameters()), "lr": cfg.text_lr or cfg.lr})
        self.build_optimizer(groups, betas=(0.9, 0.999))
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.round: Optional[Dict[str, Tensor]] = None
        self._round_images: Dict[int, Tensor] = {}  # pool position -> decoded image (this round)
        self.replicate(*([self.model] + ([self.text] if self.text is not None else [])))

    # ------------------------------------------------------------------ embedding
    def _forward(self, images: List[Tensor]) -> Tensor:
        x = stack_images(images)
        if x is not None:
            return self.model(x.to(self.device))
        return self.model.forward_list(images)  # mixed sizes: batched by size

    @torch.no_grad()
    def embed(self, ids: Sequence[int], batch: int = 128, images: Optional[List[Tensor]] = None) -> Tensor:
        """phi of the images ``ids`` (eval mode), float32 [n, C] on the CPU."""
        was = self.model.training
        self.model.eval()
        imgs = images if images is not None else self.data.load(ids)
        out = torch.cat([self._forward(imgs[i:i + batch]).float().cpu() for i in range(0, len(imgs), batch)]) \
            if len(imgs) else torch.zeros(0, self.model.dim)
        self.model.train(was)
        return out

    @torch.no_grad()
    def init_text_from_images(self, max_images: int = 1024) -> None:
        """``text_init = "images"``: word w's row of W starts as l2(sum_i t_iw phi_i) over (up to
        ``max_images``) training images i, the tf-idf-weighted mean embedding of the images whose
        captions use w, so that from the first update theta(t) points where images with those words
        are, instead of a random direction that the text terms would pull phi towards while W is
        still noise. Words absent from these images keep their random rows."""
        ids = self.data.train[self.fit_pos[:max_images]]
        phi = self.embed(ids).to(self.text.weight.device, self.text.weight.dtype)
        t = self.data.t.rows(ids).to_torch().to(phi.device).to_dense().to(phi.dtype)
        w = t.T @ phi
        norm = w.norm(dim=1, keepdim=True)
        used = norm[:, 0] > 0
        self.text.weight[used] = (w / norm.clamp(min=1e-30))[used]

    def text_embed(self, ids: Sequence[int], grad: bool = False) -> Tensor:
        """theta of the captions of images ``ids``: l2(W^T t)."""
        if self.text is None:
            raise RuntimeError("this model has no text projection (objective='visual')")
        t = self.data.t.rows(np.asarray(ids, np.int64)).to_torch().to(self.device)
        with torch.set_grad_enabled(grad):
            return self.text(t)

    # ------------------------------------------------------------------ mining
    @torch.no_grad()
    def mine(self) -> None:
        """A mining round (spec 000.8): pool, embedding, hardest triplets (sharded over the ranks
        under ``torch.distributed``; see the module docstring)."""
        cfg, d = self.cfg, self.data
        fit = torch.from_numpy(self.fit_pos)
        q = fit[torch.randint(len(fit), (cfg.mine_queries,), generator=self.gen)]
        k = d.knn.shape[1]
        npos = min(cfg.positives_per_query, k)
        # positives: random relevant neighbours, never a held-out calibration image
        keys = torch.rand(len(q), k, generator=self.gen).masked_fill_(self._is_calib[d.knn[q]], 2.0)
        pick = torch.argsort(keys, dim=1)[:, :npos]
        pos = torch.gather(d.knn[q], 1, pick)
        pos = pos[~self._is_calib[pos]]
        pool = torch.unique(torch.cat([q, pos.flatten()]))  # sorted train positions
        qpos = torch.searchsorted(pool, q)
        # this rank's share of the pool (all of it in one process), embedded, then gathered
        mine_rows = torch.arange(len(pool))[distributed.shard(len(pool))]
        self._round_images = {}
        images = self._pool_images(pool, mine_rows.tolist())
        ids = d.train[pool[mine_rows].numpy()]
        phi = distributed.all_gather_no_grad(self.embed(ids, images=images))
        margin = cfg.margin
        by_text = self.uses_text and cfg.mine_by == "objective"
        if by_text:
            theta = self.text_embed(ids).float().cpu() if len(ids) else torch.zeros(0, self.model.dim)
            theta = distributed.all_gather_no_grad(theta)
            de = torch.cat([phi, theta, phi], 1)
            margin = cfg.margin * 3
        else:
            de = phi
        # this rank's queries against the whole pool
        qs = distributed.shard(len(q))
        q_l, qpos_l = q[qs], qpos[qs]
        qe = torch.cat([phi[qpos_l], phi[qpos_l], theta[qpos_l]], 1) if by_text else phi[qpos_l]
        # relevant pool positions of each query: its knn list restricted to the pool
        in_pool = torch.isin(d.knn[q_l], pool)
        relevant = [torch.searchsorted(pool, d.knn[qi][m]).tolist() for qi, m in zip(q_l, in_pool)]
        if len(q_l):
            trip = self.miner(qe.contiguous(), de.contiguous(), relevant, float(margin), cfg.per_pair,
                              query_ids=qpos_l, semihard=cfg.negatives == "semihard").cpu()
        else:
            trip = torch.zeros(0, 3, dtype=torch.int64)
        cand = torch.stack([qpos_l[trip[:, 0]], trip[:, 1], trip[:, 2]], 1) if len(trip) else trip.reshape(0, 3)
        cand = distributed.all_gather_no_grad(cand.to(torch.int64))  # every rank's, in query order
        self.round = {"pool": pool, "candidates": cand, "order": torch.randperm(len(cand), generator=self.gen),
                      "cursor": torch.tensor(0), "updates": torch.tensor(0)}

    def _pool_images(self, pool: Tensor, positions: Sequence[int]) -> List[Tensor]:
        """The decoded images of positions of the round's ``pool`` (each decoded once a round, when
        first needed: under torch.distributed a rank decodes only the images it embeds)."""
        todo = sorted({int(p) for p in positions if int(p) not in self._round_images})
        if todo:
            ids = self.data.train[pool[torch.as_tensor(todo, dtype=torch.int64)].numpy()]
            self._round_images.update(zip(todo, self.data.load(ids)))
        return [self._round_images[int(p)] for p in positions]

    def _round_batch(self) -> Optional[Tensor]:
        r = self.round
        n = len(r["candidates"])
        if n == 0:
            return None
        b = min(self.cfg.batch_size, n)
        c = int(r["cursor"])
        if c + b > n:  # used up: reshuffle
            r["order"] = torch.randperm(n, generator=self.gen)
            c = 0
        r["cursor"] = torch.tensor(c + b)
        return r["candidates"][r["order"][c:c + b]]

    # ------------------------------------------------------------------ Trainer hooks
    def budget(self) -> int:
        return self.cfg.steps

    def lr_factor(self) -> float:
        """``lr_drop`` from update ``lr_drop_at * steps`` on (the paper's drop at half the run)."""
        return self.cfg.lr_drop if self.step >= self.cfg.lr_drop_at * self.cfg.steps else 1.0

    def next_batch(self) -> Optional[Tensor]:
        """The next [b, 3] (query, positive, negative) pool positions of the mining round, running
        a new round (:meth:`mine`) every ``remine_every`` updates; None when the round found no
        violating triplet. The global batch: the same on every rank."""
        if self.round is None or int(self.round["updates"]) >= self.cfg.remine_every:
            self.mine()
        batch = self._round_batch()
        self.round["updates"] += 1
        return batch

    def train_step(self, batch: Optional[Tensor]) -> Dict[str, Any]:
        """One update on a (global) batch of triplets; loss 0 and no update when the round has
        none. Under torch.distributed each rank embeds its share of the batch's distinct images and
        computes the loss of its share of the triplets on the gathered embeddings (module docstring);
        the reported loss is the global batch's."""
        n_cand = len(self.round["candidates"])
        if batch is None:
            return {"loss": 0.0, "candidates": n_cand}
        self.model.train()
        pool = self.round["pool"]
        uniq, inv = torch.unique(batch.flatten(), return_inverse=True)
        inv = inv.view(-1, 3).to(self.device)
        mine = uniq[distributed.shard(len(uniq))]  # this rank's images
        if len(mine):
            emb = self._forward(self._pool_images(pool, mine.tolist()))
            if self.uses_text:
                emb = torch.cat([emb, self.text_embed(self.data.train[pool[mine].numpy()], grad=True)], 1)
        else:  # more ranks than images: an empty share, which still joins the gather's backward
            emb = torch.zeros(0, self.model.dim * (2 if self.uses_text else 1), device=self.device,
                              requires_grad=True)
        # one gather (one collective in the backward, in the same place on every rank)
        emb = distributed.all_gather_with_grad(emb)
        phi, theta = (emb[:, :self.model.dim], emb[:, self.model.dim:]) if self.uses_text else (emb, None)
        loc = inv[distributed.shard(len(batch))]  # this rank's triplets (its queries)
        th = [theta[loc[:, j]] for j in range(3)] if self.uses_text else [None, None, None]
        if len(loc):
            loss = self.objective(phi[loc[:, 0]], phi[loc[:, 1]], phi[loc[:, 2]], *th)
        else:  # no triplet on this rank: zero, but through the gather (its backward is collective)
            loss = emb.sum() * 0
        if self.world > 1:
            local = float(loss.detach())
            self.update(loss * distributed.loss_scale("mean", local_count=len(loc), global_count=len(batch)))
            # the global batch's loss: the triplet-weighted mean of the ranks' losses
            tot = distributed.all_gather_no_grad(torch.tensor([local * len(loc)], dtype=torch.float64))
            return {"loss": float(tot.sum()) / len(batch), "candidates": n_cand}
        self.update(loss)
        return {"loss": float(loss.detach()), "candidates": n_cand}

    def postfix(self, record: Dict[str, Any]) -> Dict[str, str]:
        return {"loss": f"{record['loss']:.4f}", "cand": str(record["candidates"])}

    # ------------------------------------------------------------------ evaluation
    def query_split(self, split: str = "val") -> np.ndarray:
        """The fixed query subset (positions in the split) used for evaluation."""
        n = len(self.data.split(split))
        perm = np.random.default_rng(self.cfg.seed + 1).permutation(n)
        return np.sort(perm[: min(self.cfg.eval_queries, n)])

    def evaluate(self, split: str = "val", query_mode: str = "V", r_max: Optional[int] = None,
                 phi: Optional[Tensor] = None) -> Dict[str, object]:
        """NDCG@R / PCC@R of this model on a held-out split (spec 000.10).

        ``query_mode``: ``"V"`` (query by image) or ``"V+T"`` (image and its captions:
        l2(phi_q + theta_q)). The database is always visual.
        """
        if query_mode not in ("V", "V+T"):
            raise ValueError(f"query_mode must be 'V' or 'V+T', got {query_mode!r}")
        ids = self.data.split(split)
        qsel = self.query_split(split)
        phi = self.embed(ids) if phi is None else phi
        q = phi[qsel]
        if query_mode == "V+T":  # calibrated on held-out training images, never worse than "V" there
            q = self.joint_query()(q, self.text_embed(ids[qsel]).float().cpu())
        return evaluate_scores(q @ phi.T, self.data, ids, qsel, r_max or self.cfg.r_max)

    def joint_query(self) -> JointQuery:
        """The (V+T) query composition (:class:`semvis.eval.semantic.JointQuery`) calibrated at the
        current step.

        Queries: the training images held out of every update (``calib_fraction``, at most 200),
        whose captions the text projection has not been fitted to, so that the choice of the text's
        weight is not flattered by over-fitting (issue 23); the database: those images and up to
        400 training images. Without a held-out part (``calib_fraction = 0`` or a small training
        split) up to 400 training images serve as both, as before."""
        if getattr(self, "_joint", None) is None or self._joint[0] != self.step:
            rng = np.random.default_rng(self.cfg.seed + 2)
            cal = self.calib_pos[:200]
            n_db = max(0, 400 - len(cal)) if len(cal) else 400
            fit = np.sort(rng.permutation(self.fit_pos)[:n_db])
            ids = self.data.train[np.concatenate([cal, fit])]
            self._joint = (self.step, fit_joint_query(self.embed(ids), self.text_embed(ids).float().cpu(),
                                                      self.data.t.rows(ids), max_queries=len(cal) or 200,
                                                      r_max=self.cfg.r_max))
        return self._joint[1]

    # ------------------------------------------------------------------ checkpoints
    def extra_state(self) -> Dict[str, Any]:
        return {"implementations": self.implementations, "vocab_size": len(self.data.tfidf.vocab),
                "model": self.model.state_dict(), "text": self.text.state_dict() if self.text is not None else None,
                "generator": self.gen.get_state(), "round": self.round}

    def load_extra_state(self, st: Dict[str, Any]) -> None:
        if st.get("vocab_size") != len(self.data.tfidf.vocab):
            raise ValueError(f"checkpoint vocabulary has {st.get('vocab_size')} terms, this data {len(self.data.tfidf.vocab)}")
        self.model.load_state_dict(st["model"])
        if self.text is not None:
            self.text.load_state_dict(st["text"])
        self.gen.set_state(st["generator"])
        self.round = st["round"]
        self._round_images = {}

    @classmethod
    def from_checkpoint(cls, checkpoint: Dict[str, Any], data: Optional[SemanticData] = None,
                        **overrides) -> "SemanticTrainer":
        """The trainer of ``checkpoint``'s config (with ``overrides``) on ``data`` (default: built
        from the config)."""
        # checkpoints written before issue 23 trained on the whole training split
        base = {"calib_fraction": 0.0, **checkpoint["config"]}
        return cls(SemanticConfig.from_dict({**base, **overrides}), data)


CHECKPOINT_FORMAT = SemanticTrainer.format_tag()
