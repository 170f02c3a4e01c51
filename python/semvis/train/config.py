"""The configuration of a semantic-retrieval training run (spec 000.6 - 000.10), validated with
errors that name the field, the value received and what is allowed."""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Union

__all__ = ["SemanticConfig", "ConfigError"]


class ConfigError(ValueError):
    """A bad configuration value (a ValueError naming the field)."""


_CHOICES = {
    "data": ("synthetic", "visual_genome", "coco"),
    "backbone": ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"),
    "objective": ("visual", "joint", "wsabie"),
    "pooling": ("rmac",),
    "device": ("cpu", "cuda"),
}


@dataclass
class SemanticConfig:
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
    (q, d+)), ``remine_every`` (updates between mining rounds).
    Optimisation: ``batch_size`` (triplets), ``steps``, ``lr``, ``text_lr``, ``lr_drop_at``
    (fraction of ``steps`` where lr is multiplied by ``lr_drop``).
    Evaluation: ``eval_queries``, ``r_max``.
    Run: ``seed``, ``workers`` (dataloader processes decoding images), ``threads`` (torch CPU
    threads; 0 leaves torch's default), ``device``,
    ``checkpoint_every`` (0: only at the end), ``out_dir``, ``progress``.
    """

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
    lr_drop_at: float = 0.5
    lr_drop: float = 0.1
    eval_queries: int = 1000
    r_max: int = 1000
    seed: int = 0
    workers: int = 0
    threads: int = 0
    device: str = "cpu"
    checkpoint_every: int = 0
    out_dir: Optional[str] = None
    progress: bool = True

    def __post_init__(self):
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> "SemanticConfig":
        def fail(name, msg):
            raise ConfigError(f"config.{name}: {msg}, got {getattr(self, name)!r}")

        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                fail(name, f"must be one of {choices}")
        ints = {"n_images": 4, "image_size": 32, "max_side": 0, "width": 1, "levels": 1, "knn": 1,
                "mine_queries": 1, "positives_per_query": 1, "per_pair": 1, "remine_every": 1, "batch_size": 1,
                "steps": 0, "eval_queries": 1, "r_max": 1, "seed": 0, "data_seed": 0, "workers": 0, "threads": 0,
                "checkpoint_every": 0}
        for name, lo in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                fail(name, "must be an int")
            if v < lo:
                fail(name, f"must be >= {lo}")
        for name in ("margin", "lr", "lr_drop_at", "lr_drop"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                fail(name, "must be a finite number")
        if 0 < self.max_side < 32:
            fail("max_side", "must be 0 (chosen from the images and the device) or >= 32")
        if self.lr <= 0:
            fail("lr", "must be > 0")
        if self.text_lr is not None and (not isinstance(self.text_lr, (int, float)) or not self.text_lr > 0):
            fail("text_lr", "must be a number > 0 or null")
        if not 0 <= self.lr_drop_at <= 1:
            fail("lr_drop_at", "must be in [0, 1]")
        if not 0 < self.lr_drop <= 1:
            fail("lr_drop", "must be in (0, 1]")
        if self.margin < 0:
            fail("margin", "must be >= 0")
        ss = self.split_sizes
        if (not isinstance(ss, (list, tuple)) or len(ss) != 3
                or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in ss)):
            fail("split_sizes", "must be three ints >= 1 (train, val, test)")
        self.split_sizes = tuple(ss)
        sc = self.scales
        if (not isinstance(sc, (list, tuple)) or not sc
                or any(isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s <= 4 for s in sc)):
            fail("scales", "must be a non-empty list of numbers in (0, 4]")
        self.scales = tuple(float(s) for s in sc)
        if not isinstance(self.freeze_bn, bool):
            fail("freeze_bn", "must be true or false")
        if self.stages not in (3, 4):
            fail("stages", "must be 3 (conv4, stride 16) or 4 (conv5, stride 32)")
        if not isinstance(self.init_whitening, bool):
            fail("init_whitening", "must be true or false")
        if not isinstance(self.progress, bool):
            fail("progress", "must be true or false")
        if self.data != "synthetic" and not self.data_root:
            fail("data_root", f"is required for data={self.data!r}")
        if self.data_root is not None and not os.path.exists(self.data_root):
            fail("data_root", "does not exist")
        if self.weights is not None and not os.path.isfile(self.weights):
            fail("weights", "is not a file")
        return self

    # ------------------------------------------------------------------ io
    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "SemanticConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"config must be a mapping, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"config: unknown key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_file(cls, path: Union[str, os.PathLike]) -> "SemanticConfig":
        """Reads a ``.json`` or ``.toml`` config file."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file not found: {path}")
        p = str(path)
        try:
            if p.endswith(".toml"):
                import tomllib

                with open(p, "rb") as f:
                    d = tomllib.load(f)
            else:
                with open(p) as f:
                    d = json.load(f)
        except Exception as e:  # noqa: BLE001 - any parse error is a bad file
            raise ConfigError(f"{path}: cannot parse config ({e})") from None
        return cls.from_dict(d)

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["split_sizes"] = list(self.split_sizes)
        d["scales"] = list(self.scales)
        return d

    def replace(self, **kw) -> "SemanticConfig":
        return SemanticConfig.from_dict({**self.to_dict(), **kw})

    @classmethod
    def synthetic_preset(cls, **kw) -> "SemanticConfig":
        """The paper's recipe scaled to synthetic scenes on 2 CPU cores: a narrow ResNet-18 cut
        after conv4 (64-px images would leave a 2 x 2 conv5 map), trained from scratch (no pretrained weights exist offline), BN statistics trained, lr
        3e-3 (the paper's 1e-5 assumes ImageNet weights), 8 x smaller mining pools."""
        base = dict(data="synthetic", n_images=1200, image_size=64, split_sizes=(800, 200, 200),
                    backbone="resnet18", width=16, levels=2, stages=3, freeze_bn=False, mine_queries=64,
                    positives_per_query=9, per_pair=100, remine_every=16, batch_size=32, steps=200,
                    lr=3e-3, text_lr=1e-2, eval_queries=200, r_max=100, knn=32)
        base.update(kw)
        return cls.from_dict(base)
