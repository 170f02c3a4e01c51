"""Listwise training with the AP loss (Revaud et al., ICCV 2019): :class:`ListwiseTrainer` and the
multi-stage backward for large batches (Sec. 4).

``ListwiseTrainer`` fine-tunes a small image embedding (:class:`~semvis.models.small.SmallMACNet`:
conv x3, MAC, projection, l2) on :class:`~semvis.data.synthetic_patterns.SyntheticPatterns`: each
step draws ``num_classes x per_class`` images and minimizes ``APLoss`` over the batch's score
matrix (every image ranks the other ones); the test mAP is the exact mean AP on a held-out set,
every image querying all the others (``semvis listwise train``; measured: 0.12 -> 0.60 in 100 steps).

Multi-stage backward:

A listwise loss needs the embeddings of the whole batch at once (the paper uses 4,096 images), but
the activations of 4,096 high-resolution images do not fit in memory. The loss only depends on the
network through the embeddings, so the step is split:

1. embed every image without a graph, chunk by chunk;
2. compute the loss on the (leaf) embeddings and back-propagate to them: dL/d embeddings, [B, D];
3. re-embed each chunk with a graph and back-propagate ``dL/d embedding`` of its images.

The parameter gradients are those of a single full-batch backward as long as the network is
deterministic between the two passes: no dropout, BatchNorm in eval mode (frozen statistics, as the
R-MAC recipe uses), same inputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..data.synthetic_patterns import SyntheticPatterns
from ..eval.retrieval import mean_average_precision
from ..losses import APLoss, TripletLoss
from ..losses.sodeep import MAPRankLoss
from ..models.sodeep import HandcraftedSorter
from ..distributed import all_gather_with_grad, loss_scale, shard
from ..models.small import SmallMACNet
from .base import TrainConfig, Trainer

__all__ = ["multistage_backward", "ListwiseConfig", "ListwiseTrainer", "train", "LISTWISE_LOSSES",
           "build_listwise_loss"]


def multistage_backward(net: nn.Module, images: Tensor, loss_fn: Callable[[Tensor], Tensor],
                        chunk_size: int = 64) -> Tensor:
    """Accumulates ``d loss_fn(net(images)) / d params`` into the parameters' ``.grad``, in chunks.

    Args:
        net (nn.Module): images [b, ...] -> embeddings [b, D]; must be deterministic (see module doc).
        images (Tensor[B, ...]): the batch.
        loss_fn (callable): embeddings [B, D] -> scalar loss (e.g. ``lambda e: APLoss()(e, labels)``).
        chunk_size (int): images embedded per forward pass, >= 1.

    Returns:
        Tensor[]: the loss, detached. Peak activation memory is that of ``chunk_size`` images.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"multistage_backward: chunk_size must be an int >= 1, got {chunk_size!r}")
    if images.shape[0] == 0:
        raise ValueError("multistage_backward: images must hold at least one image")
    chunks = images.split(chunk_size)
    with torch.no_grad():
        emb = torch.cat([net(c) for c in chunks])
    emb.requires_grad_(True)
    loss = loss_fn(emb)
    if loss.dim() != 0:
        raise ValueError(f"multistage_backward: loss_fn must return a scalar, got shape {tuple(loss.shape)}")
    (grad,) = torch.autograd.grad(loss, emb)
    for c, g in zip(chunks, grad.split(chunk_size)):
        net(c).backward(g)
    return loss.detach()


def _off_diagonal(emb: Tensor, labels: Tensor) -> Tuple[Tensor, Tensor]:
    """Every image queries the others: scores Tensor[B, B-1] (cosine, the query's own column removed)
    and relevance Tensor[B, B-1] (same label)."""
    B = emb.shape[0]
    keep = ~torch.eye(B, dtype=torch.bool, device=emb.device)
    S = (emb @ emb.t())[keep].view(B, B - 1)
    rel = (labels[:, None] == labels[None, :])[keep].view(B, B - 1)
    return S, rel


class _BatchAllTriplet(nn.Module):
    """Triplet loss (margin) over every (anchor, positive, negative) triplet of the batch ("batch
    all": the hardest-negative variant collapses from scratch on this example), mean over the
    triplets (:class:`semvis.losses.TripletLoss` on the kernel)."""

    def __init__(self, margin: float):
        super().__init__()
        self.loss = TripletLoss(margin=margin, scale=1.0)

    def forward(self, emb: Tensor, labels: Tensor) -> Tensor:
        B = emb.shape[0]
        with torch.no_grad():
            same = labels[:, None] == labels[None, :]
            eye = torch.eye(B, dtype=torch.bool, device=emb.device)
            a, p, n = ((same & ~eye)[:, :, None] & ~same[:, None, :]).nonzero(as_tuple=True)
        return self.loss(emb[a], emb[p], emb[n])


class _SoDeepMAP(nn.Module):
    """Eq. 5.9 per query: the sorter ranks each query's B-1 scores; the mean normalised rank of its
    positives is minimised (:class:`semvis.losses.sodeep.MAPRankLoss`, ``reduction="mean"``)."""

    def __init__(self, sorter: nn.Module):
        super().__init__()
        self.loss = MAPRankLoss(sorter, reduction="mean")

    def forward(self, emb: Tensor, labels: Tensor) -> Tensor:
        S, rel = _off_diagonal(emb, labels)
        return self.loss(S.t(), rel.t())


class _SoDeepRecall(nn.Module):
    """Eqs. 5.11-5.12 with several positives per query (the rank-space hard-negative recall loss):
    the sorter ranks each query's B-1 scores; every positive must rank one step (``margin``, default
    ``1 / (B - 1)`` as the official code) above the query's best-ranked negative:
    ``mean_q sum_{p in P(q)} max(0, rank_p + margin - min_{n in N(q)} rank_n)``."""

    def __init__(self, sorter: nn.Module, margin: Optional[float] = None):
        super().__init__()
        self.sorter, self.margin = sorter, margin

    def forward(self, emb: Tensor, labels: Tensor) -> Tensor:
        S, rel = _off_diagonal(emb, labels)
        rank = self.sorter(S)
        hard_neg = rank.masked_fill(rel, float("inf")).min(1, keepdim=True).values
        margin = 1.0 / S.shape[1] if self.margin is None else self.margin
        viol = torch.clamp(rank + margin - hard_neg, min=0) * rel.to(rank.dtype)
        return viol.sum(1).mean()


#: the losses ``ListwiseConfig.loss`` names; each builds ``fn(embeddings [B, D], labels [B]) -> scalar``
LISTWISE_LOSSES = ("ap", "triplet", "sodeep-map", "sodeep-recall")


def build_listwise_loss(config: "ListwiseConfig") -> nn.Module:
    """The loss ``config.loss`` names (``bins`` for ap, ``margin`` for triplet, ``sorter`` /
    ``sorter_lam`` for the SoDeep losses): a module ``(embeddings Tensor[B, D], labels Tensor[B]) ->
    Tensor[]``. A learned sorter must have been trained for length B - 1 (the other images of a
    batch); another length is refused with the length it was trained for."""
    c = config
    if c.loss not in LISTWISE_LOSSES:
        raise ValueError(f"config.loss: unknown loss {c.loss!r}; known: {list(LISTWISE_LOSSES)}")
    if c.loss == "ap":
        return APLoss(bins=c.bins)
    if c.loss == "triplet":
        return _BatchAllTriplet(c.margin)
    if c.sorter == "handcrafted":
        sorter = HandcraftedSorter(c.sorter_lam)
    else:
        from .sodeep import load_pretrained_sorter

        sorter = load_pretrained_sorter(c.sorter)
        n = c.num_classes * c.per_class - 1
        if sorter.seq_len != n:
            raise ValueError(f"config.sorter: the sorter in {c.sorter} was trained for sequences of length "
                             f"{sorter.seq_len}, but loss={c.loss} ranks {n} scores per query "
                             f"(num_classes x per_class - 1); pretrain one with --set seq_len={n}")
    return _SoDeepMAP(sorter) if c.loss == "sodeep-map" else _SoDeepRecall(sorter)


@dataclass
class ListwiseConfig(TrainConfig):
    """The listwise (AP loss) example run: ``steps``, ``per_class`` (images per class in a batch),
    ``num_classes``, ``bins`` (AP histogram bins), ``lr`` (Adam), ``eval_every`` (steps between
    test-mAP evaluations), ``test_per_class``, ``chunk_size`` (> 0: the multi-stage backward,
    images per chunk), ``dim`` / ``width`` (the network), ``loss`` (one of
    :data:`LISTWISE_LOSSES`: "ap" the AP loss, "triplet" every triplet of the batch, ``margin``,
    "sodeep-map" / "sodeep-recall" the SoDeep rank losses), ``sorter`` (SoDeep losses:
    "handcrafted", the fused kernel with steepness ``sorter_lam``, or the path of a
    ``semvis sodeep pretrain`` checkpoint of length ``num_classes * per_class - 1``), and the
    :class:`~semvis.train.base.TrainConfig` fields. Preset ``"example"`` = the defaults."""

    PRESETS = {"example": {}}

    steps: int = 100
    per_class: int = 5
    num_classes: int = 12
    bins: int = 20
    lr: float = 3e-3
    eval_every: int = 20
    test_per_class: int = 10
    chunk_size: int = 0
    dim: int = 32
    width: int = 16
    loss: str = "ap"
    margin: float = 0.1
    sorter: str = "handcrafted"
    sorter_lam: float = 10.0

    def validate(self) -> "ListwiseConfig":
        super().validate()
        self.check_choice("loss", LISTWISE_LOSSES)
        self.check_float("margin", lo=0)
        self.check_float("sorter_lam", lo=0, lo_open=True)
        if not isinstance(self.sorter, str) or not self.sorter:
            self.fail("sorter", "must be 'handcrafted' or the path of a `semvis sodeep pretrain` checkpoint")
        if self.sorter != "handcrafted":
            self.check_path("sorter", "file", optional=False)
        for name, lo in (("steps", 0), ("per_class", 2), ("num_classes", 2), ("bins", 2), ("eval_every", 1),
                         ("test_per_class", 2), ("chunk_size", 0), ("dim", 1), ("width", 1)):
            self.check_int(name, lo=lo)
        self.check_float("lr", lo=0, lo_open=True)
        return self


class ListwiseTrainer(Trainer):
    """Trains :class:`SmallMACNet` with the loss ``config.loss`` names (the AP loss by default; see
    :func:`build_listwise_loss` and the module docstring). ``evaluate()``
    gives the test mAP; history records carry ``test_map`` every ``eval_every`` steps and at the
    last one."""

    KIND = "listwise"
    CONFIG = ListwiseConfig
    UNIT = "step"

    def __init__(self, config: Optional[ListwiseConfig] = None):
        super().__init__(config if config is not None else ListwiseConfig())
        c = self.config
        self.seed_torch()
        self.data = SyntheticPatterns(num_classes=c.num_classes, seed=c.seed)
        self.test_x, self.test_y = self.data.dataset(per_class=c.test_per_class, seed=c.seed + 1000)
        self.model = SmallMACNet(dim=c.dim, width=c.width).to(self.device)
        if self.world > 1 and c.chunk_size > 0:
            raise ValueError("config.chunk_size: the multi-stage backward is not supported under torch.distributed "
                             "(each rank already embeds only its share of the batch); set chunk_size=0")
        self.net = self.wrap_ddp(self.model)
        self.loss_fn = build_listwise_loss(c).to(self.device)
        self.build_optimizer([{"params": list(self.model.parameters()), "lr": c.lr}])
        self.gen = torch.Generator().manual_seed(c.seed + 1)
        self.batch_labels = torch.arange(c.num_classes).repeat_interleave(c.per_class)

    @torch.no_grad()
    def evaluate(self) -> float:
        """Exact test mAP of the current network (eval mode)."""
        return self.evaluate_metrics()["map"]

    @torch.no_grad()
    def evaluate_metrics(self) -> Dict[str, float]:
        """``{"map", "r1"}`` on the test set, every image querying all the others: the exact mean
        AP and the recall at 1 (%: the share of queries whose nearest other image has their label)."""
        self.model.eval()
        emb = self.model(self.test_x.to(self.device)).cpu()
        self.model.train()
        S = emb @ emb.t()
        S.fill_diagonal_(float("-inf"))
        r1 = 100.0 * float((self.test_y[S.argmax(1)] == self.test_y).float().mean())
        return {"map": mean_average_precision(emb, self.test_y), "r1": r1}

    def budget(self) -> int:
        return self.config.steps

    def next_batch(self) -> Tensor:
        return self.data.sample(self.batch_labels, self.gen)

    def train_step(self, x: Tensor) -> Dict[str, Any]:
        c = self.config
        x, labels = x.to(self.device), self.batch_labels.to(self.device)
        if c.chunk_size > 0:
            self.optimizer.zero_grad(set_to_none=True)
            loss = multistage_backward(self.model, x, lambda e: self.loss_fn(e, labels), c.chunk_size)
            self.optimizer.step()
        elif self.world > 1:
            # the global batch: every rank draws the same batch, embeds its rows, and the AP loss sees
            # all ranks' embeddings (every rank computes the same loss: scale 1, DDP averages)
            emb = all_gather_with_grad(self.net(x[shard(x.shape[0])]))
            loss = self.loss_fn(emb, labels) * loss_scale("mean", local_queries=False)
            self.update(loss)
        else:
            loss = self.loss_fn(self.model(x), labels)
            self.update(loss)
        rec: Dict[str, Any] = {"loss": loss.item()}
        if self.step % c.eval_every == 0 or self.step == c.steps:
            rec["test_map"] = self.evaluate()
        return rec

    def extra_state(self) -> Dict[str, Any]:
        return {"model": self.model.state_dict(), "generator": self.gen.get_state()}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.gen.set_state(state["generator"])


def train(steps: int = 100, per_class: int = 5, bins: int = 20, lr: float = 3e-3, seed: int = 0,
          eval_every: int = 20, chunk_size: int = 0, log=print) -> List[Tuple[int, float, float]]:
    """Runs the listwise example; returns [(step, loss, test mAP)] at step 0 (loss NaN) and every
    ``eval_every`` steps (and the last). ``chunk_size > 0`` trains with the multi-stage backward."""
    tr = ListwiseTrainer(ListwiseConfig(steps=steps, per_class=per_class, bins=bins, lr=lr, seed=seed,
                                        eval_every=eval_every, chunk_size=chunk_size, progress=False))
    hist = [(0, float("nan"), tr.evaluate())]
    log(f"step {0:4d}  loss {hist[0][1]:.4f}  test mAP {hist[0][2]:.4f}")

    def on_record(rec):
        if "test_map" in rec:
            hist.append((rec["step"], rec["loss"], rec["test_map"]))
            log(f"step {rec['step']:4d}  loss {rec['loss']:.4f}  test mAP {rec['test_map']:.4f}")

    tr.fit(log=on_record)
    return hist
