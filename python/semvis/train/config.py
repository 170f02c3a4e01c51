"""The configuration of a semantic-retrieval training run (spec 000.6 - 000.10), validated with
errors that name the field, the value received and what is allowed."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Tuple

from ..config import ConfigError
from .base import TrainConfig

__all__ = ["SemanticConfig", "ConfigError"]


_CHOICES = {
    "data": ("synthetic", "visual_genome", "coco"),
    "backbone": ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"),
    "objective": ("visual", "joint", "wsabie"),
    "pooling": ("rmac",),
    "text_init": ("random", "images"),
    "negatives": ("hardest", "semihard"),
    "mine_by": ("objective", "visual"),
}

#: the paper's recipe scaled to synthetic scenes on 2 CPU cores (see SemanticConfig.synthetic_preset)
_SYNTHETIC = dict(data="synthetic", n_images=1200, image_size=64, split_sizes=(800, 200, 200), backbone="resnet18",
                  width=16, levels=2, stages=3, freeze_bn=False, mine_queries=64, positives_per_query=9, per_pair=100,
                  remine_every=16, batch_size=32, steps=600, lr=3e-3, text_lr=1e-2, text_init="images", negatives="semihard",
                  mine_by="visual",
                  eval_queries=200, r_max=100, knn=32)


@dataclass
class SemanticConfig(TrainConfig):
    """Every knob of ``semvis train-semantic``. Defaults are the paper's (spec 000.6-000.9) where
    it states them; :meth:`synthetic_preset` scales them to a 2-core CPU run.

    Data: ``data`` (synthetic | visual_genome | coco), ``data_root`` (folder with the JSON files,
    or the COCO captions file), ``n_images`` / ``image_size`` / ``data_seed`` (synthetic),
    ``split_sizes`` (train, val, test; scaled down proportionally when the set is smaller),
    ``max_side`` (real images are resized so that their largest side is this; 0: chosen from the
    images' sizes and the device by ``semvis.data.captions.choose_max_side``, and printed).
    Model: ``backbone``, ``width``, ``levels``, ``scales``, ``pooling``, ``freeze_bn``, ``weights``,
    ``stages`` (4: conv5 as in the paper; 3: conv4, stride 16, for tiny images),
    ``init_whitening`` (PCA-whitening from training regions; False keeps the identity).
    Objective: ``objective`` (visual = L_v, joint = L_v + L_t1 + L_t2, wsabie = L_t1), ``margin``,
    ``knn`` (relevant neighbours under the tf-idf similarity).
    Mining: ``mine_queries`` (N), ``positives_per_query``, ``per_pair`` (hardest triplets kept per
    (q, d+)), ``remine_every`` (updates between mining rounds), ``negatives`` (hardest: the
    paper's largest losses; semihard: only negatives ranked below the positive, loss in
    (0, margin), which keeps a network trained from scratch from collapsing to one embedding),
    ``mine_by`` (objective: a joint candidate is scored by the sum of its three similarities,
    margin 3 m; visual: by phi . phi alone, margin m, the (V, V) model's triplets, the text
    terms then added on them).
    Text projection: ``text_init`` (random: N(0, 0.01^2) as in the paper; images: each word's
    row starts at the mean embedding of the training images whose captions use it).
    Optimisation: ``batch_size`` (triplets), ``steps``, ``lr``, ``text_lr``, ``lr_drop_at``
    (fraction of ``steps`` where lr is multiplied by ``lr_drop``).
    Evaluation: ``eval_queries``, ``r_max``, ``calib_fraction`` (share of the training split, at
    most 200 images, held out of every update to calibrate the (V+T) query on captions the text
    projection was not fitted to; 0, or fewer than 32 images, calibrates on training images).
    Run: ``workers`` (dataloader processes decoding images) and the fields of
    :class:`~semvis.train.base.TrainConfig` (``seed``, ``threads``, ``device``, ``out_dir``,
    ``checkpoint_every`` in updates, ``progress``).

    Presets: ``"paper"`` (the defaults) and ``"synthetic"`` (:meth:`synthetic_preset`).
    """

    PRESETS = {"paper": {}, "synthetic": _SYNTHETIC}

    data: str = "synthetic"
    data_root: Optional[str] = None
    n_images: int = 1200
    image_size: int = 64
    data_seed: int = 0
    split_sizes: Tuple[int, int, int] = (80_000, 10_000, 10_000)
    max_side: int = 0
    backbone: str = "resnet101"
    width: int = 64
    levels: int = 2
    stages: int = 4
    scales: Tuple[float, ...] = (1.0,)
    pooling: str = "rmac"
    freeze_bn: bool = True
    init_whitening: bool = True
    weights: Optional[str] = None
    objective: str = "visual"
    margin: float = 0.1
    knn: int = 32
    mine_queries: int = 500
    positives_per_query: int = 9
    per_pair: int = 100
    remine_every: int = 64
    batch_size: int = 64
    steps: int = 16_000
    lr: float = 1e-5
    text_lr: Optional[float] = None
    text_init: str = "random"
    negatives: str = "hardest"
    mine_by: str = "objective"
    lr_drop_at: float = 0.5
    lr_drop: float = 0.1
    eval_queries: int = 1000
    r_max: int = 1000
    calib_fraction: float = 0.1
    workers: int = 0

    def validate(self) -> "SemanticConfig":
        super().validate()
        for name, choices in _CHOICES.items():
            self.check_choice(name, choices)
        ints = {"n_images": 4, "image_size": 32, "max_side": 0, "width": 1, "levels": 1, "knn": 1,
                "mine_queries": 1, "positives_per_query": 1, "per_pair": 1, "remine_every": 1, "batch_size": 1,
                "steps": 0, "eval_queries": 1, "r_max": 1, "data_seed": 0, "workers": 0}
        for name, lo in ints.items():
            self.check_int(name, lo=lo)
        for name in ("margin", "lr", "lr_drop_at", "lr_drop"):
            self.check_float(name)
        self.check_float("lr", lo=0, lo_open=True)
        if 0 < self.max_side < 32:
            self.fail("max_side", "must be 0 (chosen from the images and the device) or >= 32")
        if self.text_lr is not None and (isinstance(self.text_lr, bool) or not isinstance(self.text_lr, (int, float))
                                         or not self.text_lr > 0):
            self.fail("text_lr", "must be a number > 0 or null")
        self.check_float("calib_fraction", lo=0, hi=0.5)
        if not 0 <= self.lr_drop_at <= 1:
            self.fail("lr_drop_at", "must be in [0, 1]")
        if not 0 < self.lr_drop <= 1:
            self.fail("lr_drop", "must be in (0, 1]")
        self.check_float("margin", lo=0)
        ss = self.split_sizes
        if (not isinstance(ss, (list, tuple)) or len(ss) != 3
                or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in ss)):
            self.fail("split_sizes", "must be three ints >= 1 (train, val, test)")
        self.split_sizes = tuple(ss)
        sc = self.scales
        if (not isinstance(sc, (list, tuple)) or not sc
                or any(isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s <= 4 for s in sc)):
            self.fail("scales", "must be a non-empty list of numbers in (0, 4]")
        self.scales = tuple(float(s) for s in sc)
        self.check_bool("freeze_bn")
        if self.stages not in (3, 4):
            self.fail("stages", "must be 3 (conv4, stride 16) or 4 (conv5, stride 32)")
        self.check_bool("init_whitening")
        if self.data != "synthetic" and not self.data_root:
            self.fail("data_root", f"is required for data={self.data!r}")
        if self.data_root is not None and not os.path.exists(self.data_root):
            self.fail("data_root", "does not exist")
        if self.weights is not None and not os.path.isfile(self.weights):
            self.fail("weights", "is not a file")
        return self

    @classmethod
    def synthetic_preset(cls, **kw) -> "SemanticConfig":
        """The paper's recipe scaled to synthetic scenes on 2 CPU cores: a narrow ResNet-18 cut
        after conv4 (64-px images would leave a 2 x 2 conv5 map), trained from scratch (no
        pretrained weights exist offline), BN statistics trained, lr 3e-3 (the paper's 1e-5
        assumes ImageNet weights), 8 x smaller mining pools, the text projection started from the
        training images' embeddings (``text_init="images"``: in a 200-update run the paper's random
        start spends the first updates pulling phi towards random text directions; issue 23). Same as ``preset("synthetic", **kw)``."""
        return cls.preset("synthetic", **kw)
