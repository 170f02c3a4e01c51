"""Training and evaluating Text2Art (thesis ch. 7) on a SemArt-format set: :class:`Text2ArtTrainer`.

The text features (BOWc + BOWa, :class:`~semvis.models.text2art.ArtTextEncoder`) are fitted on the
training split; the images are decoded per batch (SemArt holds 21k paintings: never all in memory),
resized to ``image_size`` squared (with a random crop and flip for training, as the thesis' 256 ->
224 augmentation); each epoch shuffles the training split into batches of ``batch_size`` matched
(painting, text) pairs and minimises the cosine margin loss over every pair of the batch (CML), or
AMD with an attribute classifier on each side.

Evaluation follows the SemArt protocol: each test text ranks every test painting and vice versa
(one ground truth per query), R@1/5/10 as fractions and the median rank (1-based), ranks counted
(how many items score higher than the ground truth), never an argsort per query.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..data.captions import load_image
from ..data.semart import ATTRIBUTES, SemArtItem, read_semart, semart_split_path, write_synthetic_semart
from ..data.transforms import normalize, resize, to_float
from ..eval.retrieval import first_relevant_rank, median_rank
from ..models.text2art import ArtTextEncoder, Text2Art, amd_loss, cml_loss
from .base import TrainConfig, Trainer

__all__ = ["Text2ArtConfig", "Text2ArtTrainer", "text2art_metrics"]


@dataclass
class Text2ArtConfig(TrainConfig):
    """Every knob of ``semvis text2art train``.

    Data: ``data_root`` (a SemArt folder: ``semart_{train,val,test}.csv`` + ``Images/``; None: a
    synthetic set of ``synthetic_n`` paintings is written to ``out_dir`` or a temporary folder).
    Model: ``backbone``, ``width``, ``dim`` (joint space, 128), ``comment_min_df`` (BOWc
    vocabulary: words in at least this many training comments; the thesis uses 10 on 19k
    paintings), ``image_size``. Loss: ``margin`` (0.1), ``attribute`` (None: CML; one of AUTHOR,
    TYPE, SCHOOL, TIMEFRAME: AMD on it), ``alpha`` (0.01). Optimisation: Adam ``lr`` (1e-4),
    ``batch_size`` (32), ``epochs``. Presets: ``paper`` (the thesis' settings), ``synthetic``
    (the synthetic set on 2 CPU cores).
    """

    PRESETS = {
        "paper": {"backbone": "resnet50", "width": 64, "dim": 128, "comment_min_df": 10, "image_size": 224,
                  "lr": 1e-4, "batch_size": 32, "epochs": 30},
        "synthetic": {"synthetic_n": 400, "backbone": "resnet18", "width": 16, "dim": 64, "comment_min_df": 2,
                      "image_size": 64, "lr": 1e-3, "batch_size": 32, "epochs": 12},
    }

    data_root: Optional[str] = None
    synthetic_n: int = 400
    backbone: str = "resnet18"
    width: int = 16
    dim: int = 128
    comment_min_df: int = 2
    image_size: int = 64
    margin: float = 0.1
    attribute: Optional[str] = None
    alpha: float = 0.01
    lr: float = 1e-3
    batch_size: int = 32
    epochs: int = 12

    def validate(self):
        super().validate()
        self.check_path("data_root", "dir")
        for name, lo in (("synthetic_n", 10), ("width", 1), ("dim", 1), ("comment_min_df", 1), ("image_size", 32),
                         ("batch_size", 2), ("epochs", 0)):
            self.check_int(name, lo=lo)
        self.check_choice("backbone", ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"))
        self.check_float("margin", lo=-1, hi=1)
        self.check_float("alpha", lo=0, hi=0.5)
        self.check_float("lr", lo=0, lo_open=True)
        if self.attribute is not None:
            self.check_choice("attribute", ATTRIBUTES)
        return self


def _load(item: SemArtItem, size: int, rng: Optional[np.random.Generator]) -> Tensor:
    x = to_float(np.array(load_image(item.path)))  # a writable copy (Pillow hands out read-only arrays)
    if rng is not None:  # the thesis' augmentation: scale to 256, random 224 crop, random flip (scaled to size)
        big = int(round(size * 256 / 224))
        x = resize(x, (big, big))
        y0, x0 = (int(v) for v in rng.integers(0, big - size + 1, 2))
        x = x[:, y0:y0 + size, x0:x0 + size]
        if rng.random() < 0.5:
            x = x.flip(2)
        return normalize(x)
    return normalize(resize(x, (size, size)))


def text2art_metrics(img_emb: Tensor, txt_emb: Tensor, ks: Sequence[int] = (1, 5, 10)) -> Dict[str, Dict[str, float]]:
    """R@K (fractions) and median rank both ways for matched rows (row k of each = painting k)."""
    if img_emb.shape != txt_emb.shape or img_emb.dim() != 2 or img_emb.shape[0] == 0:
        raise ValueError(f"text2art_metrics: img_emb and txt_emb must be matched non-empty [N, D], got "
                         f"{tuple(img_emb.shape)} and {tuple(txt_emb.shape)}")
    gt = torch.arange(img_emb.shape[0])
    out = {}
    for name, S in (("t2i", txt_emb @ img_emb.t()), ("i2t", img_emb @ txt_emb.t())):
        r = first_relevant_rank(S.float(), gt)
        out[name] = {**{f"r{k}": float((r < k).double().mean()) for k in ks}, "medr": median_rank(r)}
    return out


class Text2ArtTrainer(Trainer):
    """See the module docstring. ``Text2ArtTrainer(config)`` reads (or writes, for the synthetic
    set) the data and builds the model; :meth:`fit` trains; :meth:`evaluate` gives the metrics."""

    KIND = "text2art"
    CONFIG = Text2ArtConfig
    UNIT = "epoch"

    def __init__(self, config: Text2ArtConfig, encoder_state: Optional[Dict[str, Any]] = None):
        super().__init__(config)
        c = config
        root = c.data_root
        if root is None:
            root = os.path.join(c.out_dir, "semart_synthetic") if c.out_dir else tempfile.mkdtemp(prefix="semart_")
            if not os.path.isfile(semart_split_path(root, "test")):
                write_synthetic_semart(root, n=c.synthetic_n, seed=c.seed)
        self.root = root
        self.splits = {s: read_semart(semart_split_path(root, s)) for s in ("train", "test")}
        val = semart_split_path(root, "val")
        self.splits["val"] = read_semart(val) if os.path.isfile(val) else []
        train = self.splits["train"]
        if len(train) < c.batch_size:
            raise ValueError(f"{semart_split_path(root, 'train')}: {len(train)} training paintings, fewer than "
                             f"batch_size={c.batch_size}")
        if encoder_state is not None:
            self.text_encoder = ArtTextEncoder.from_state(encoder_state)
        else:
            self.text_encoder = ArtTextEncoder(comment_min_df=c.comment_min_df).fit(
                [it.description for it in train], [it.title for it in train])
        self.classes: List[str] = []
        if c.attribute:
            self.classes = sorted({it.attribute(c.attribute) for it in train})
        self.seed_torch()
        self.model = Text2Art(self.text_encoder.dim, dim=c.dim, backbone=c.backbone, width=c.width,
                              n_classes=len(self.classes) or None).to(self.device)
        self.build_optimizer([{"params": list(self.model.parameters()), "lr": c.lr}])
        self.rng = np.random.default_rng(c.seed)
        self._text_cache: Dict[str, Tensor] = {}

    # ------------------------------------------------------------------ data
    def text_features(self, split: str) -> Tensor:
        if split not in self._text_cache:
            items = self.splits[split]
            self._text_cache[split] = self.text_encoder.transform([it.description for it in items],
                                                                  [it.title for it in items])
        return self._text_cache[split]

    def budget(self) -> int:
        return self.config.epochs

    def epoch_batches(self):
        n = len(self.splits["train"])
        order = self.rng.permutation(n)
        b = self.config.batch_size
        return [order[i:i + b] for i in range(0, n - b + 1, b)]  # full batches: every pair has negatives

    def train_step(self, idx) -> Dict[str, Any]:
        c = self.config
        self.model.train()
        items = [self.splits["train"][i] for i in idx]
        images = torch.stack([_load(it, c.image_size, self.rng) for it in items]).to(self.device)
        text = self.text_features("train")[torch.as_tensor(idx)].to(self.device)
        img, txt = self.model.embed_images(images), self.model.embed_texts(text)
        if self.classes:
            lab = torch.tensor([self.classes.index(it.attribute(c.attribute)) for it in items], device=self.device)
            loss = amd_loss(img, txt, self.model.img_cls(img), self.model.txt_cls(txt), lab, c.margin, c.alpha)
        else:
            loss = cml_loss(img, txt, c.margin)
        self.update(loss)
        return {"loss": float(loss.detach()), "n": len(idx)}

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def embed(self, split: str = "test", batch: int = 64):
        """(image embeddings, text embeddings) of a split, row k = painting k."""
        items = self.splits[split]
        if not items:
            raise ValueError(f"split {split!r} is empty")
        self.model.eval()
        imgs = []
        for i in range(0, len(items), batch):
            x = torch.stack([_load(it, self.config.image_size, None) for it in items[i:i + batch]])
            imgs.append(self.model.embed_images(x.to(self.device)).cpu())
        txt = self.model.embed_texts(self.text_features(split).to(self.device)).cpu()
        return torch.cat(imgs), txt

    def evaluate(self, split: str = "test") -> Dict[str, Dict[str, float]]:
        img, txt = self.embed(split)
        return text2art_metrics(img, txt)

    # ------------------------------------------------------------------ checkpoints
    def extra_state(self) -> Dict[str, Any]:
        return {"model": self.model.state_dict(), "text_encoder": self.text_encoder.state(),
                "classes": list(self.classes), "data_root": self.root,
                "numpy_rng": self.rng.bit_generator.state}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.rng.bit_generator.state = state["numpy_rng"]

    @classmethod
    def from_checkpoint(cls, checkpoint: Dict[str, Any], **overrides) -> "Text2ArtTrainer":
        cfg = {**checkpoint["config"], **overrides}
        if cfg.get("data_root") is None:
            cfg["data_root"] = checkpoint["data_root"]
        return cls(Text2ArtConfig.from_dict(cfg), encoder_state=checkpoint["text_encoder"])
