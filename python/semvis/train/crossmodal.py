"""Training and evaluation of BEAN / DSVE-loc (spec seeds-000-002 002.3–002.7, seeds-003-004 A.4–A.7).

Defaults follow the paper where it speaks and the public codes where it does not (each one is a
``CrossModalConfig`` field):

* loss: bidirectional hardest-negative triplet loss, margin 0.2, summed (VSE++ / DSVE-loc code;
  ``reduction="mean"`` is Eq. 7's 1/|B|); ``k`` > 1 is DSVE-loc's ``nmax``; ``warmup_epochs``
  first epochs use the sum over all negatives (against the early collapse of vsepp#27/#41);
* Adam, lr 1e-3 halved after each of the first 6 epochs, then constant (002.4, decision 11);
* batch 160, one caption per image per batch (a random one of its captions each epoch);
* training crops: random rectangular crops resized to ``crop_size`` (256); evaluation resizes to
  ``test_size`` × ``test_size`` (400) regardless of aspect ratio; no horizontal flip (it would
  swap "left of" and "right of");
* ``freeze_trunk_epochs``: epochs during which only the SRU, the embeddings and the last linear
  layer learn (8 in the paper, which starts from an ImageNet trunk); ``bn="auto"`` keeps the
  trunk's BatchNorm layers in eval mode while the trunk is frozen (vsepp#30), ``"frozen"``
  always, ``"train"`` never;
* evaluation always runs the model in eval mode (dropout off, BatchNorm running statistics);
* the global batch under ``torch.distributed`` (torchrun): the epoch's batches come from a
  :class:`semvis.distributed.GlobalBatchSampler` (one permutation per epoch from the seed and the
  epoch, the same for any number of ranks); every rank embeds its share of each batch and the
  hardest negatives are mined over the embeddings of all ranks
  (:func:`semvis.distributed.all_gather_with_grad`); an item's crop and caption draw from a
  generator seeded by (seed, epoch, item), so they do not depend on which rank embeds it: a run on
  W ranks equals the one-process run (with no dropout and BatchNorm frozen: dropout masks come from
  each rank's torch generator, BatchNorm statistics from each rank's share); only rank 0 writes
  checkpoints and progress.

The encoders live in :mod:`semvis.models.crossmodal`, the image preparation in
:mod:`semvis.data.transforms`, the tokenisation in :mod:`semvis.text.captions` and the evaluation
in :mod:`semvis.eval.crossmodal` (re-exported here).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ..data.crossmodal import CaptionedImages, load_crossmodal_split
from ..data.transforms import prepare_images, random_crop
from ..distributed import GlobalBatchSampler, all_gather_with_grad
from ..eval.crossmodal import evaluate_crossmodal
from ..losses import hardest_negative_triplet_loss
from ..models.bean import BEAN, set_batchnorm_eval
from ..models.crossmodal import (CHECKPOINT_FORMATS, CROSSMODAL_MODELS, SMILE_MODELS, build_crossmodal_model,
                                 default_heatmap_k, encode_captions, encode_images, load_crossmodal_checkpoint,
                                 model_from_config)
from ..text import Vocabulary
from ..text.captions import build_vocabulary, pad_captions, tokenize_captions
from .base import TrainConfig, Trainer

__all__ = ["CrossModalConfig", "CrossModalTrainer", "build_vocabulary", "tokenize_captions", "prepare_images",
           "encode_images", "encode_captions", "evaluate_crossmodal", "load_crossmodal_checkpoint",
           "default_heatmap_k", "crossmodal_data"]

#: the 2-core CPU recipe on synthetic scenes (benchmarks/RESULTS.md)
_SYNTHETIC = dict(data="synthetic", epochs=15, batch_size=32, crop_size=None, crop_scale=(0.8, 1.0), test_size=None,
                  lr=2e-3, lr_decay_epochs=0, warmup_epochs=None, model="tiny",
                  model_args={"stages": 2, "dim": 128, "feature_dim": 256})


@dataclass
class CrossModalConfig(TrainConfig):
    """Every knob of a BEAN / DSVE-loc training run (defaults: the paper / public code; see the
    module docstring).

    Data: ``data`` ("synthetic" | "karpathy"), ``karpathy_json`` + ``image_root`` (karpathy),
    ``n_train`` / ``n_test`` / ``image_size`` (synthetic scenes, seeded by ``seed``).
    Model: ``model`` (a ``semvis.models.BEAN_PRESETS`` name, or SMILE: "smile" (its tiny preset),
    "smile_paper"), ``model_args`` (overrides of it; BEAN-only keys such as ``feature_dim`` are
    ignored for SMILE) and ``attention`` (SMILE only: "softmax" = SMILE, or the ablations "mean",
    "1-att", "no-conv", "no-softmax"; None: the model's default).
    Optimisation: ``epochs``, ``batch_size``, ``lr``, ``lr_decay`` applied after each of the first
    ``lr_decay_epochs`` epochs, ``grad_clip`` (None: off).
    Loss: ``margin``, ``reduction`` ("sum" | "mean"), ``negatives`` ("hardest" | "all"), ``k``,
    ``warmup_epochs`` (first epochs with the sum over all negatives; None: every epoch).
    Trunk: ``freeze_trunk_epochs``, ``bn`` ("auto" | "frozen" | "train").
    Images: ``crop_size`` (None: the synthetic ``image_size``), ``crop_scale``, ``crop_ratio``,
    ``test_size`` (evaluation resize; None: native sizes), ``max_caption_len``.
    Run: the :class:`~semvis.train.base.TrainConfig` fields (``checkpoint_every`` in epochs, 1 by default).

    Presets: ``"paper"`` (the defaults) and ``"synthetic"`` (the 2-core recipe of RESULTS.md).
    """

    PRESETS = {"paper": {}, "synthetic": _SYNTHETIC}

    checkpoint_every: int = 1
    data: str = "synthetic"
    karpathy_json: Optional[str] = None
    image_root: Optional[str] = None
    n_train: int = 400
    n_test: int = 100
    image_size: int = 64
    model: str = "dsve_paper"
    model_args: Dict[str, Any] = field(default_factory=dict)
    attention: Optional[str] = None
    epochs: int = 10
    batch_size: int = 160
    lr: float = 1e-3
    lr_decay: float = 0.5
    lr_decay_epochs: int = 6
    margin: float = 0.2
    reduction: str = "sum"
    negatives: str = "hardest"
    k: int = 1
    warmup_epochs: Optional[int] = 0
    freeze_trunk_epochs: int = 0
    bn: str = "auto"
    crop_size: Optional[int] = 256
    crop_scale: Tuple[float, float] = (0.5, 1.0)
    crop_ratio: Tuple[float, float] = (3 / 4, 4 / 3)
    test_size: Optional[int] = 400
    grad_clip: Optional[float] = 2.0
    max_caption_len: Optional[int] = None

    def validate(self) -> "CrossModalConfig":
        super().validate()
        self.check_choice("data", ("synthetic", "karpathy"))
        if self.data == "karpathy":
            self.check_path("karpathy_json", "file", optional=False)
            self.check_path("image_root", "dir", optional=False)
        for name in ("n_train", "n_test", "epochs", "batch_size", "k"):
            self.check_int(name, lo=1)
        self.check_int("image_size", lo=8)
        if self.batch_size < 2:
            self.fail("batch_size", "must be >= 2 (the negatives come from the batch)")
        self.check_choice("model", CROSSMODAL_MODELS)
        if not isinstance(self.model_args, dict):
            self.fail("model_args", "must be a mapping of model arguments")
        if self.attention is not None:
            if self.model not in SMILE_MODELS:
                self.fail("attention", f"applies to the SMILE models {list(SMILE_MODELS)} only, not to "
                                       f"model={self.model!r}")
            self.check_choice("attention", ("softmax", "mean", "1-att", "no-conv", "no-softmax"))
        self.check_float("lr", lo=0, lo_open=True)
        self.check_float("lr_decay", lo=0, lo_open=True, hi=1)
        self.check_int("lr_decay_epochs", lo=0)
        self.check_float("margin", lo=0)
        self.check_choice("reduction", ("sum", "mean"))
        self.check_choice("negatives", ("hardest", "all"))
        self.check_int("warmup_epochs", lo=0, optional=True)
        self.check_int("freeze_trunk_epochs", lo=0)
        self.check_choice("bn", ("auto", "frozen", "train"))
        self.check_int("crop_size", lo=1, optional=True)
        if self.crop_size is None and self.data != "synthetic":
            self.fail("crop_size", "may be null (the image size) only for synthetic data")
        for name, lo, hi in (("crop_scale", 0.0, 1.0), ("crop_ratio", 0.0, 100.0)):
            v = getattr(self, name)
            if (not isinstance(v, (list, tuple)) or len(v) != 2
                    or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not lo < x <= hi for x in v)
                    or v[0] > v[1]):
                self.fail(name, f"must be two increasing numbers in ({lo}, {hi}]")
            setattr(self, name, tuple(float(x) for x in v))
        self.check_int("test_size", lo=1, optional=True)
        self.check_float("grad_clip", lo=0, lo_open=True, optional=True)
        self.check_int("max_caption_len", lo=1, optional=True)
        return self


def crossmodal_data(config, split: str) -> CaptionedImages:
    """The ``split`` of the data set a :class:`CrossModalConfig` (or its dict) names."""
    get = config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    return load_crossmodal_split(split, data=get("data", "synthetic"), karpathy_json=get("karpathy_json"),
                                 image_root=get("image_root"), n_train=get("n_train", 400), n_test=get("n_test", 100),
                                 image_size=get("image_size", 64), seed=get("seed", 0))


class CrossModalTrainer(Trainer):
    """Trains a :class:`BEAN` (or a :class:`~semvis.models.smile.SMILE`: same text path, loss and
    loop) on a :class:`CaptionedImages` set, one epoch per unit.

    ``CrossModalTrainer(model, vocab, train, config)`` trains a given model;
    :meth:`from_config` builds the data, vocabulary and model a config names. ``fit()`` runs
    ``config.epochs`` epochs and returns the per-epoch history (loss, lr, negatives, seconds,
    images/s). Checkpoints (``out_dir/checkpoint.pt``, every ``checkpoint_every`` epochs) hold the
    model configuration, weights, optimizer, counters, config, vocabulary and RNG states:
    ``CrossModalTrainer.resume(path)`` continues a run, :func:`load_crossmodal_checkpoint`
    rebuilds the model for search and evaluation.
    """

    KIND = "crossmodal"
    CONFIG = CrossModalConfig
    UNIT = "epoch"
    LEGACY_FORMATS = CHECKPOINT_FORMATS[1:]

    def __init__(self, model: BEAN, vocab: Vocabulary, train: CaptionedImages,
                 config: Optional[CrossModalConfig] = None, val: Optional[CaptionedImages] = None):
        super().__init__(config if config is not None else CrossModalConfig())
        self.model = model.to(self.device)
        self.vocab = vocab
        self.train_set, self.val_set = train, val
        if len(vocab) != model.text.num_words:
            raise ValueError(f"the vocabulary has {len(vocab)} words but the model {model.text.num_words}")
        if len(train) < 2:
            raise ValueError("the training set needs at least 2 images")
        self.build_optimizer([{"params": [p for p in model.parameters() if p.requires_grad], "lr": self.config.lr}])
        # the epoch's global batches; an item's crop and caption draw from (seed, epoch, item)
        self.sampler = GlobalBatchSampler(len(train), self.config.batch_size, self.config.seed, min_last=2,
                                          rank=self.rank, world=self.world)
        if self.world > 1 and self.rank > 0:  # dropout: a torch stream of its own on each rank
            torch.manual_seed(int(np.random.SeedSequence([self.config.seed, self.rank, 2]).generate_state(1)[0]))
        self._negatives = self.config.negatives
        # pre-tokenize every caption once
        self._cap_ids: List[List[Tuple[Tensor, int]]] = []
        for caps in train.captions:
            ids, lengths = tokenize_captions(vocab, caps, self.config.max_caption_len)
            self._cap_ids.append([(ids[j, : lengths[j]], int(lengths[j])) for j in range(len(caps))])
        self.ddp_model = self.wrap_ddp(model, find_unused_parameters=True)

    @classmethod
    def from_config(cls, config: CrossModalConfig, train: Optional[CaptionedImages] = None,
                    val: Optional[CaptionedImages] = None) -> "CrossModalTrainer":
        """The data (unless given), vocabulary of the training captions and model that ``config``
        names (torch seeded with ``config.seed`` first, so that a run is reproducible)."""
        if not isinstance(config, CrossModalConfig):
            raise TypeError(f"config must be a CrossModalConfig, got {type(config).__name__}")
        torch.manual_seed(config.seed)
        train = train if train is not None else crossmodal_data(config, "train")
        vocab = build_vocabulary([c for cs in train.captions for c in cs])
        model = build_crossmodal_model(config.model, len(vocab), config.attention, **config.model_args)
        return cls(model, vocab, train, config, val)

    # -- schedule / staging
    def budget(self) -> int:
        return self.config.epochs

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 0-based ``epoch``: lr · decay^min(epoch, lr_decay_epochs)."""
        return self.config.lr * self.config.lr_decay ** min(epoch, self.config.lr_decay_epochs)

    def lr_factor(self) -> float:
        return self.config.lr_decay ** min(self.epoch, self.config.lr_decay_epochs)

    def _set_stage(self, epoch: int) -> None:
        frozen = epoch < self.config.freeze_trunk_epochs
        for p in list(self.model.image.trunk.parameters()) + list(self.model.image.conv.parameters()):
            p.requires_grad_(not frozen)
        self.model.train()
        if self.config.bn == "frozen" or (self.config.bn == "auto" and frozen):
            set_batchnorm_eval(self.model.image.trunk)

    def on_epoch_start(self) -> Dict[str, Any]:
        c = self.config
        self._set_stage(self.epoch)
        warm = c.warmup_epochs is None or self.epoch < c.warmup_epochs
        self._negatives = "all" if warm else c.negatives
        return {"negatives": self._negatives, "loss_backend": "semvis_ext"}

    # -- batches
    def epoch_batches(self) -> List[np.ndarray]:
        """The epoch's global batches (:class:`GlobalBatchSampler`; a last batch of one pair, which
        has no negative, is dropped); every rank iterates them and embeds its share."""
        self.sampler.set_epoch(self.epoch)
        return self.sampler.global_batches()

    def _item_rng(self, i: int) -> np.random.Generator:
        """The generator of item ``i``'s crop and caption this epoch (independent of the ranks)."""
        return np.random.default_rng([self.config.seed, self.epoch, int(i), 1])

    def _crop_size(self) -> int:
        return self.config.crop_size if self.config.crop_size is not None else self.config.image_size

    def _make_batch(self, idx: np.ndarray):
        c = self.config
        size = self._crop_size()
        imgs, seqs = [], []
        for i in idx:
            rng = self._item_rng(i)
            imgs.append(random_crop(self.train_set.image(int(i)), size, c.crop_scale, c.crop_ratio, rng))
            opts = self._cap_ids[int(i)]
            seqs.append(opts[int(rng.integers(len(opts)))][0].tolist())
        imgs = torch.stack(imgs)
        ids, lengths = pad_captions(seqs)
        return imgs.to(self.device), ids.to(self.device), lengths.to(self.device)

    def train_step(self, idx: np.ndarray) -> Dict[str, Any]:
        c = self.config
        if self.world > 1:
            # the global batch: the loss (hardest negatives over every rank's pairs) on the gathered
            # embeddings; every rank computes the same loss, so the scale is 1 (DDP averages).
            # One gather of [x | v]: one collective in the backward.
            imgs, ids, lengths = self._make_batch(self.sampler.local(idx))
            x, v = self.ddp_model(imgs, ids, lengths)
            xv = all_gather_with_grad(torch.cat([x, v], 1))
            x, v = xv[:, :x.shape[1]], xv[:, x.shape[1]:]
        else:
            imgs, ids, lengths = self._make_batch(idx)
            x, v = self.ddp_model(imgs, ids, lengths)
        loss = hardest_negative_triplet_loss(x, v, c.margin, c.reduction, negatives=self._negatives, k=c.k)
        self.update(loss, clip=c.grad_clip, parameters=self.model.parameters())
        return {"loss": float(loss.detach()), "n": len(idx)}

    def on_fit_end(self) -> None:
        self.model.eval()

    # -- checkpoints
    def extra_state(self) -> Dict[str, Any]:
        return {"model_config": self.model.config, "model": self.model.state_dict(),
                "vocab": {"terms": self.vocab.terms, "counts": self.vocab.counts, "unk": self.vocab.unk}}

    def load_extra_state(self, ck: Dict[str, Any]) -> None:
        # (older checkpoints also hold a numpy generator state: crops now draw from (seed, epoch, item))
        self.model.load_state_dict(ck["model"] if "model" in ck else ck["state_dict"])

    @classmethod
    def from_checkpoint(cls, checkpoint: Dict[str, Any], train: Optional[CaptionedImages] = None,
                        val: Optional[CaptionedImages] = None, **overrides) -> "CrossModalTrainer":
        """The trainer of ``checkpoint``: its model and vocabulary, its config with ``overrides``,
        the training data ``train`` (default: the split the config names)."""
        cfg = dict(checkpoint["config"])
        if "checkpoint_dir" in cfg:  # "semvis.crossmodal/1" checkpoints
            cfg["out_dir"] = cfg.pop("checkpoint_dir")
        config = CrossModalConfig.from_dict({**cfg, **overrides})
        model = model_from_config(checkpoint["model_config"])
        v = checkpoint["vocab"]
        vocab = Vocabulary(v["terms"], v["counts"], unk=v["unk"])
        train = train if train is not None else crossmodal_data(config, "train")
        return cls(model, vocab, train, config, val)
