"""Training semantic retrieval from captions (Gordo & Larlus, CVPR 2017; spec 000.5 - 000.10).

``SemanticData`` holds the images (decoded lazily, in dataloader workers), their captions, the
split and the tf-idf surrogate fitted on the training split (relevance: the k = 32 nearest
neighbours under s). ``SemanticTrainer`` trains the R-MAC embedding with mined hard triplets:

1. every ``remine_every`` updates: draw N queries, ``positives_per_query`` relevant images each;
   the pool is their union; embed it with the current model (eval mode, no grad); keep, for every
   (q, d+), the ``per_pair`` hardest violating negatives of the pool (``semvis_ext.hard_triplets``);
2. each update: ``batch_size`` candidates drawn without replacement (reshuffled each round);
   loss L_v (visual) or L_v + L_t1 + L_t2 (joint), Adam, lr x ``lr_drop`` after ``lr_drop_at``.

Joint mining [D]: a candidate's score is the sum of its three similarities,
(phi_q, phi_q, theta_q) . (phi_d, theta_d, phi_d), with margin 3m (the hinge of the summed
objective), so the same mining kernel serves both objectives.

Checkpoints hold the model, text projection, optimiser, step, the trainer's RNG and the current
mining round, so that a resumed run continues exactly as an uninterrupted one.
"""
from __future__ import annotations

import math
import os
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.captions import choose_max_side, load_image, read_captioned_images, split_ids
from ..data.synthetic_scenes import SyntheticScenes
from ..eval.semantic import JointQuery, auc, fit_joint_query, ndcg_curve, pcc_curve
from ..models.semantic import SemanticRetrievalNet
from ..text.tfidf import TfidfModel, knn_relevance, surrogate_similarity
from . import registry
from .config import SemanticConfig

__all__ = ["SemanticData", "SemanticTrainer", "build_data", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "semvis.semantic-checkpoint/1"


# ------------------------------------------------------------------------------------------
# images and data


class _SyntheticSource:
    def __init__(self, ds: SyntheticScenes):
        self.ds = ds

    def __call__(self, i: int) -> Tensor:
        return self.ds[i].tensor()


class _FileSource:
    """Decodes image files and resizes them so that the largest side is ``max_side``."""

    def __init__(self, paths: Sequence[str], max_side: int):
        self.paths, self.max_side = list(paths), max_side

    def __call__(self, i: int) -> Tensor:
        x = torch.from_numpy(load_image(self.paths[i])).permute(2, 0, 1).contiguous()
        h, w = x.shape[1:]
        s = self.max_side / max(h, w)
        if s != 1:
            x = F.interpolate(x[None].float(), size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear",
                              antialias=s < 1, align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
        return x


class _ImageDataset(torch.utils.data.Dataset):
    def __init__(self, source, ids: Sequence[int]):
        self.source, self.ids = source, list(ids)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, k):
        return self.source(self.ids[k])


class SemanticData:
    """Images + captions + split + tf-idf surrogate.

    Args:
        source (callable int -> uint8 Tensor[3, H, W]): decodes image ``i`` (picklable, it runs in
            dataloader workers).
        captions (list of list of str): the (region) captions of every image.
        train, val, test (sequence of int): image indices of each split.
        graphs (list, optional): scene graphs (synthetic data) for the simulated user study.
        knn (int): relevant neighbours per training image (spec 000.5).
    """

    def __init__(self, source, captions: List[List[str]], train: Sequence[int], val: Sequence[int],
                 test: Sequence[int], graphs=None, knn: int = 32, workers: int = 0, cache_images: bool = False):
        self.source, self.captions, self.graphs = source, captions, graphs
        self.cache_images, self._cache = cache_images, {}
        self.train, self.val, self.test = (np.asarray(s, np.int64) for s in (train, val, test))
        if len(self.train) <= knn:
            raise ValueError(f"the training split has {len(self.train)} images, need more than knn = {knn}")
        self.workers = workers
        self.tfidf = TfidfModel().fit([captions[i] for i in self.train])
        self.t = self.tfidf.transform(captions)  # CSR [n_images, V]
        self.knn_sim, knn_local = knn_relevance(self.t.rows(self.train), k=knn)
        self.knn = knn_local  # [n_train, k] positions in self.train

    def __len__(self) -> int:
        return len(self.captions)

    def split(self, name: str) -> np.ndarray:
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {name!r}")
        return getattr(self, name)

    def load(self, ids: Sequence[int], batch: int = 64) -> List[Tensor]:
        """Decodes the images ``ids`` (in ``workers`` dataloader processes); a list of uint8
        Tensor[3, H, W]. With ``cache_images`` decoded images are kept in memory."""
        ids = [int(i) for i in ids]
        todo = sorted({i for i in ids if i not in self._cache}) if self.cache_images else ids
        if todo:
            dl = torch.utils.data.DataLoader(_ImageDataset(self.source, todo), batch_size=batch,
                                             num_workers=self.workers, collate_fn=list)
            got: List[Tensor] = []
            for b in dl:
                got.extend(b)
            if not self.cache_images:
                return got
            self._cache.update(zip(todo, got))
        return [self._cache[i] for i in ids]


def build_data(cfg: SemanticConfig) -> SemanticData:
    """The data set named by the config (synthetic scenes, Visual Genome or COCO captions)."""
    if cfg.data == "synthetic":
        ds = SyntheticScenes(cfg.n_images, image_size=cfg.image_size, seed=cfg.data_seed)
        graphs = [ds.scene_graph(i) for i in range(len(ds))]
        caps = [[r.phrase for r in g[1]] for g in graphs]
        tr, va, te = split_ids(range(len(ds)), cfg.split_sizes, seed=cfg.data_seed)
        return SemanticData(_SyntheticSource(ds), caps, tr, va, te, graphs=[g[0] for g in graphs], knn=cfg.knn,
                            workers=cfg.workers, cache_images=True)
    # as published: VG_100K(_2)/<id>.jpg (or .npy arrays); COCO captions file or folder
    ims = read_captioned_images(cfg.data, cfg.data_root)
    ids = [im.image_id for im in ims]
    pos = {iid: k for k, iid in enumerate(ids)}
    tr, va, te = (sorted(pos[i] for i in s) for s in split_ids(ids, cfg.split_sizes, seed=cfg.data_seed))
    max_side = cfg.max_side
    if not max_side:
        max_side, why = choose_max_side([(im.width, im.height) for im in ims], cfg.device)
        print(f"semvis: max_side = {max_side} ({why}; set max_side to override)", file=sys.stderr)
    return SemanticData(_FileSource([im.path for im in ims], max_side), [im.captions for im in ims], tr, va, te,
                        knn=cfg.knn, workers=cfg.workers)


def _stack(images: List[Tensor]) -> Optional[Tensor]:
    return torch.stack(images) if images and all(x.shape == images[0].shape for x in images) else None


# ------------------------------------------------------------------------------------------
# the trainer


class SemanticTrainer:
    """Trains :class:`SemanticRetrievalNet` with mined triplets (see the module docstring).

    ``SemanticTrainer(cfg)`` builds the data (or takes ``data``), the model (whitening initialised
    by PCA on training regions) and the optimiser; ``fit()`` trains ``cfg.steps`` updates;
    ``evaluate()`` gives NDCG@R / PCC@R; ``save()`` / ``SemanticTrainer.resume(path)``.
    """

    def __init__(self, cfg: SemanticConfig, data: Optional[SemanticData] = None):
        if not isinstance(cfg, SemanticConfig):
            raise TypeError(f"cfg must be a SemanticConfig, got {type(cfg).__name__}")
        cfg.validate()
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("config.device: 'cuda' requested but no CUDA device is available")
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = torch.device(cfg.device)
        self.data = data if data is not None else build_data(cfg)
        torch.manual_seed(cfg.seed)
        self.model = SemanticRetrievalNet(cfg.backbone, cfg.width, cfg.levels, cfg.scales, cfg.pooling,
                                          cfg.freeze_bn, cfg.weights, cfg.stages).to(self.device)
        self.uses_text = cfg.objective in ("joint", "wsabie")
        self.text = (registry.build_text_projection(len(self.data.tfidf.vocab), self.model.dim).to(self.device)
                     if self.uses_text else None)
        self.objective = registry.build_objective(cfg.objective, cfg.margin)
        self.miner = registry.build_miner("hard_triplets")
        self.implementations = registry.implementations()
        # PCA-whitening initialisation on (up to 256) training images
        init_ids = self.data.train[: min(256, len(self.data.train))]
        if cfg.init_whitening:  # images of mixed sizes are batched by size (they were skipped)
            self.model.init_whitening(self.data.load(init_ids))
        groups = [{"params": list(self.model.parameters()), "lr": cfg.lr}]
        if self.text is not None:
            groups.append({"params": list(self.text.parameters()), "lr": cfg.text_lr or cfg.lr})
        self.opt = torch.optim.Adam(groups, betas=(0.9, 0.999))
        self.base_lrs = [g["lr"] for g in groups]
        self.step = 0
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.round: Optional[Dict[str, Tensor]] = None
        self._round_images: Optional[List[Tensor]] = None
        self.history: List[Dict[str, float]] = []

    # ------------------------------------------------------------------ embedding
    def _forward(self, images: List[Tensor]) -> Tensor:
        x = _stack(images)
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
        """A mining round (spec 000.8): pool, embedding, hardest triplets."""
        cfg, d = self.cfg, self.data
        n_train = len(d.train)
        q = torch.randint(n_train, (cfg.mine_queries,), generator=self.gen)
        k = d.knn.shape[1]
        npos = min(cfg.positives_per_query, k)
        pick = torch.argsort(torch.rand(len(q), k, generator=self.gen), dim=1)[:, :npos]
        pos = torch.gather(d.knn[q], 1, pick)
        pool = torch.unique(torch.cat([q, pos.flatten()]))  # sorted train positions
        qpos = torch.searchsorted(pool, q)
        ids = d.train[pool.numpy()]
        images = d.load(ids)
        phi = self.embed(ids, images=images)
        # relevant pool positions of each query: its knn list restricted to the pool
        in_pool = torch.isin(d.knn[q], pool)
        relevant = [torch.searchsorted(pool, d.knn[qi][m]).tolist() for qi, m in zip(q, in_pool)]
        margin = cfg.margin
        if self.uses_text:
            theta = self.text_embed(ids).float().cpu()
            qe = torch.cat([phi[qpos], phi[qpos], theta[qpos]], 1)
            de = torch.cat([phi, theta, phi], 1)
            margin = cfg.margin * 3
        else:
            qe, de = phi[qpos], phi
        trip = self.miner(qe.contiguous(), de.contiguous(), relevant, float(margin), cfg.per_pair, query_ids=qpos)
        trip = trip.cpu()
        cand = torch.stack([qpos[trip[:, 0]], trip[:, 1], trip[:, 2]], 1) if len(trip) else trip.reshape(0, 3)
        self.round = {"pool": pool, "candidates": cand, "order": torch.randperm(len(cand), generator=self.gen),
                      "cursor": torch.tensor(0), "updates": torch.tensor(0)}
        self._round_images = images

    def _next_batch(self) -> Optional[Tensor]:
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

    # ------------------------------------------------------------------ training
    def _lr_factor(self, step: int) -> float:
        return self.cfg.lr_drop if step >= self.cfg.lr_drop_at * self.cfg.steps else 1.0

    def train_step(self) -> float:
        """One update; returns the loss (0 and no update when the round has no violating triplet)."""
        if self.round is None or int(self.round["updates"]) >= self.cfg.remine_every:
            self.mine()
        if self._round_images is None:  # resumed: re-decode the round's pool
            self._round_images = self.data.load(self.data.train[self.round["pool"].numpy()])
        batch = self._next_batch()
        self.round["updates"] += 1
        for g, lr in zip(self.opt.param_groups, self.base_lrs):
            g["lr"] = lr * self._lr_factor(self.step)
        self.step += 1
        if batch is None:
            return 0.0
        self.model.train()
        uniq, inv = torch.unique(batch.flatten(), return_inverse=True)
        inv = inv.view(-1, 3).to(self.device)
        phi = self._forward([self._round_images[int(i)] for i in uniq])
        th = [None, None, None]
        if self.uses_text:
            theta = self.text_embed(self.data.train[self.round["pool"][uniq].numpy()], grad=True)
            th = [theta[inv[:, j]] for j in range(3)]
        loss = self.objective(phi[inv[:, 0]], phi[inv[:, 1]], phi[inv[:, 2]], *th)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def fit(self, steps: Optional[int] = None, progress: Optional[bool] = None) -> List[Dict[str, float]]:
        """Trains until ``steps`` updates in total (default ``cfg.steps``), checkpointing every
        ``cfg.checkpoint_every`` updates into ``cfg.out_dir``."""
        total = self.cfg.steps if steps is None else steps
        show = self.cfg.progress if progress is None else progress
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=min(self.step, total), disable=not show, desc=f"train {self.cfg.objective}",
                   unit="step")
        t0 = time.perf_counter()
        while self.step < total:
            loss = self.train_step()
            self.history.append({"step": self.step, "loss": loss, "candidates": len(self.round["candidates"])})
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", cand=len(self.round["candidates"]))
            if self.cfg.checkpoint_every and self.cfg.out_dir and self.step % self.cfg.checkpoint_every == 0:
                self.save(os.path.join(self.cfg.out_dir, "checkpoint.pt"))
        bar.close()
        self.train_seconds = time.perf_counter() - t0
        if self.cfg.out_dir:
            self.save(os.path.join(self.cfg.out_dir, "checkpoint.pt"))
        return self.history

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
        if query_mode == "V+T":  # calibrated on training images, never worse than "V" there
            q = self.joint_query()(q, self.text_embed(ids[qsel]).float().cpu())
        return evaluate_scores(q @ phi.T, self.data, ids, qsel, r_max or self.cfg.r_max)

    def joint_query(self) -> JointQuery:
        """The (V+T) query composition (:class:`semvis.eval.semantic.JointQuery`) calibrated on
        up to 400 training images at the current step."""
        if getattr(self, "_joint", None) is None or self._joint[0] != self.step:
            ids = self.data.train[np.sort(np.random.default_rng(self.cfg.seed + 2).permutation(len(self.data.train))[:400])]
            self._joint = (self.step, fit_joint_query(self.embed(ids), self.text_embed(ids).float().cpu(),
                                                      self.data.t.rows(ids), r_max=self.cfg.r_max))
        return self._joint[1]

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> Dict[str, object]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.cfg.to_dict(),
            "implementations": self.implementations,
            "vocab_size": len(self.data.tfidf.vocab),
            "model": self.model.state_dict(),
            "text": self.text.state_dict() if self.text is not None else None,
            "optimizer": self.opt.state_dict(),
            "step": self.step,
            "generator": self.gen.get_state(),
            "round": self.round,
            "history": self.history,
        }

    def save(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".tmp"
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)  # never leave a half-written checkpoint

    def load_state_dict(self, st: Dict[str, object]) -> None:
        if st.get("vocab_size") != len(self.data.tfidf.vocab):
            raise ValueError(f"checkpoint vocabulary has {st.get('vocab_size')} terms, this data {len(self.data.tfidf.vocab)}")
        self.model.load_state_dict(st["model"])
        if self.text is not None:
            self.text.load_state_dict(st["text"])
        self.opt.load_state_dict(st["optimizer"])
        self.step = int(st["step"])
        self.gen.set_state(st["generator"])
        self.round = st["round"]
        self._round_images = None
        self.history = list(st["history"])

    @staticmethod
    def read_checkpoint(path: str) -> Dict[str, object]:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint not found: {path}")
        try:
            st = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"{path}: not a readable checkpoint ({e})") from None
        if not isinstance(st, dict) or st.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: not a semvis semantic checkpoint (format tag missing)")
        return st

    @classmethod
    def resume(cls, path: str, data: Optional[SemanticData] = None, **overrides) -> "SemanticTrainer":
        """Rebuilds the trainer from a checkpoint (its config, with ``overrides``) and restores its state."""
        st = cls.read_checkpoint(path)
        cfg = SemanticConfig.from_dict({**st["config"], **overrides})
        tr = cls(cfg, data)
        tr.load_state_dict(st)
        return tr


def evaluate_scores(scores: Tensor, data: SemanticData, ids: np.ndarray, qsel: np.ndarray, r_max: int
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
