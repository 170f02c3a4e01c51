"""Pretraining a learned SoDeep sorter (Engilberge et al., CVPR 2019; thesis Chapter 5, Table 5.1):
:class:`SoDeepTrainer`, the trainer behind ``semvis sodeep pretrain | eval``.

A learned sorter (:class:`~semvis.models.sodeep.LSTMSorter` or :class:`~semvis.models.sodeep.CNNSorter`)
is trained on the synthetic score sequences of A.10.1
(:func:`~semvis.models.sodeep.synthetic_sequences`, drawn on the fly from the trainer's own
generator) with the L1 rank loss (Eq. 5.1) against the exact ranks
(:func:`~semvis.models.sodeep.rank_targets`). Adam, lr halved every ``halve_every`` steps (the
thesis halves every 100 epochs of 196 batches). :meth:`SoDeepTrainer.evaluate` gives Table 5.1's
measure, the mean L1 on a fixed synthetic test set (``eval_num`` sequences, seed ``eval_seed``,
independent of the training seed), and :meth:`SoDeepTrainer.evaluate_handcrafted` the handcrafted
sorter's on the same set.

The checkpoint (``out_dir/checkpoint.pt``) is a trainer checkpoint (resume) that also holds the
sorter as :func:`~semvis.models.sodeep.sorter_state` under ``"sorter"``:
:func:`load_pretrained_sorter` rebuilds it (frozen, eval mode) for the SoDeep losses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import format_tag, read_checkpoint
from ..models.sodeep import (CNNSorter, HandcraftedSorter, LSTMSorter, evaluate_sorter, load_sorter, rank_targets,
                             sorter_state, synthetic_sequences)
from .base import TrainConfig, Trainer

__all__ = ["SoDeepConfig", "SoDeepTrainer", "load_pretrained_sorter", "LEARNED_SORTERS"]

#: the learned sorters ``SoDeepConfig.sorter`` names
LEARNED_SORTERS = ("lstm", "cnn")

#: sized to finish in ~10 minutes on one thread of a loaded 2-core CPU (benchmarks/RESULTS.md,
#: SoDeep section): the thesis' length 100, an LSTM of 64 hidden units, batches of 64
_CPU = dict(threads=1, seq_len=100, hidden=64, steps=800, batch_size=64, halve_every=100000, eval_num=2000,
            eval_every=200, checkpoint_every=100)


@dataclass
class SoDeepConfig(TrainConfig):
    """A sorter pretraining run.

    Sorter: ``sorter`` ("lstm": the official "lstmla" BiLSTM + dense affine map; "cnn": 8 conv/BN/ReLU
    blocks + affine + sigmoid), ``seq_len`` (the one length the sorter sorts), ``hidden`` and
    ``layers`` (lstm; the thesis' 512 and 2), ``widths`` (cnn, 8 block widths).
    Optimisation: ``steps`` (updates), ``batch_size`` (sequences per update; 512 in the thesis),
    ``lr`` (Adam), ``halve_every`` (steps between halvings of the lr).
    Evaluation: ``eval_num`` (test sequences; 10,000 in the thesis), ``eval_seed``, ``eval_every``
    (steps between test-L1 evaluations recorded in the history; 0: only at the end), ``lam`` (the
    handcrafted sorter's steepness, the reference of ``semvis sodeep eval``).
    Run: the :class:`~semvis.train.base.TrainConfig` fields (``checkpoint_every`` in steps).

    Presets: ``"paper"`` (the defaults: the thesis' sizes, lr 1e-3, batch 512) and ``"cpu"``
    (a 2-core CPU run, see RESULTS.md).
    """

    PRESETS = {"paper": {}, "cpu": _CPU}

    sorter: str = "lstm"
    seq_len: int = 100
    hidden: int = 512
    layers: int = 2
    widths: tuple = (8, 16, 32, 64, 64, 64, 32, 16)
    steps: int = 19600
    batch_size: int = 512
    lr: float = 1e-3
    halve_every: int = 19600
    eval_num: int = 10000
    eval_seed: int = 1234
    eval_every: int = 0
    lam: float = 10.0

    def validate(self) -> "SoDeepConfig":
        super().validate()
        self.check_choice("sorter", LEARNED_SORTERS)
        for name, lo in (("seq_len", 2), ("hidden", 1), ("layers", 1), ("steps", 0), ("batch_size", 1),
                         ("halve_every", 1), ("eval_num", 1), ("eval_seed", 0), ("eval_every", 0)):
            self.check_int(name, lo=lo)
        w = self.widths
        if (not isinstance(w, (list, tuple)) or len(w) != 8
                or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in w)):
            self.fail("widths", "must be 8 ints >= 1 (the CNN sorter's block widths)")
        self.widths = tuple(w)
        self.check_float("lr", lo=0, lo_open=True)
        self.check_float("lam", lo=0, lo_open=True)
        return self


def build_learned_sorter(c: SoDeepConfig) -> nn.Module:
    if c.sorter == "lstm":
        return LSTMSorter(c.seq_len, hidden=c.hidden, layers=c.layers)
    return CNNSorter(c.seq_len, widths=c.widths)


class SoDeepTrainer(Trainer):
    """Pretrains the sorter a :class:`SoDeepConfig` names (see the module docstring). One unit =
    one update on ``batch_size`` fresh synthetic sequences; history records hold ``loss`` (the
    batch's L1) and ``test_l1`` every ``eval_every`` steps and at the last step."""

    KIND = "sodeep"
    CONFIG = SoDeepConfig
    UNIT = "step"

    def __init__(self, config: Optional[SoDeepConfig] = None):
        super().__init__(config if config is not None else SoDeepConfig())
        c = self.config
        self.seed_torch()
        self.sorter = build_learned_sorter(c).to(self.device)
        self.net = self.wrap_ddp(self.sorter)
        self.build_optimizer([{"params": list(self.sorter.parameters()), "lr": c.lr}])
        self.gen = torch.Generator().manual_seed(c.seed + 1)

    # -- schedule / data
    def budget(self) -> int:
        return self.config.steps

    def lr_factor(self) -> float:
        return 0.5 ** (self.step // self.config.halve_every)

    def next_batch(self) -> Tensor:
        return synthetic_sequences(self.config.batch_size, self.config.seq_len, generator=self.gen)

    def train_step(self, y: Tensor) -> Dict[str, Any]:
        c = self.config
        self.sorter.train()
        y = y.to(self.device)
        loss = F.l1_loss(self.net(y), rank_targets(y))
        self.update(loss)
        v = float(loss.detach())
        if not v == v or v in (float("inf"), float("-inf")):
            raise FloatingPointError(f"sodeep pretrain: the loss diverged at step {self.step} ({v}); lower lr")
        rec: Dict[str, Any] = {"loss": v}
        if (c.eval_every and self.step % c.eval_every == 0) or self.step == c.steps:
            rec["test_l1"] = self.evaluate()
        return rec

    def postfix(self, record: Dict[str, Any]) -> Dict[str, str]:
        out = {"l1": f"{record['loss']:.4f}"}
        if "test_l1" in record:
            out["test_l1"] = f"{record['test_l1']:.4f}"
        return out

    # -- evaluation
    def evaluate(self, num: Optional[int] = None) -> float:
        """Mean L1 of the sorter on the fixed synthetic test set (Table 5.1's measure)."""
        return evaluate_sorter(self.sorter, num=num or self.config.eval_num, seed=self.config.eval_seed)

    def evaluate_handcrafted(self, num: Optional[int] = None) -> float:
        """The handcrafted sorter's L1 (``lam``) on the same test set."""
        return evaluate_sorter(HandcraftedSorter(self.config.lam), num=num or self.config.eval_num,
                               seq_len=self.config.seq_len, seed=self.config.eval_seed)

    def on_fit_end(self) -> None:
        self.sorter.eval()

    # -- checkpoints
    def extra_state(self) -> Dict[str, Any]:
        return {"sorter": sorter_state(self.sorter, self.config.sorter if self.config.sorter == "cnn" else "lstmla"),
                "generator": self.gen.get_state()}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        self.sorter.load_state_dict(state["sorter"]["state_dict"])
        self.gen.set_state(state["generator"])


def load_pretrained_sorter(path: str) -> nn.Module:
    """The sorter of a ``semvis sodeep pretrain`` checkpoint (or of a :func:`sorter_state` file),
    frozen (no parameter requires grad) and in eval mode, for the SoDeep losses.

    Raises:
        FileNotFoundError: no such file. ValueError: neither kind of sorter checkpoint.
    """
    ck = torch.load(path, map_location="cpu", weights_only=True) if _is_state_file(path) else None
    if ck is None:
        ck = read_checkpoint(path, (format_tag(SoDeepTrainer.KIND, SoDeepTrainer.VERSION),), what="sodeep")
        ck = ck.get("sorter")
        if not isinstance(ck, dict):
            raise ValueError(f"{path}: a sodeep checkpoint without its sorter")
    sorter = load_sorter(ck)
    sorter.eval()
    for p in sorter.parameters():
        p.requires_grad_(False)
    return sorter


def _is_state_file(path: str) -> bool:
    """True when ``path`` holds a bare :func:`sorter_state` dict (not a trainer checkpoint)."""
    import os

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not a torch file: read_checkpoint reports it
        return False
    return isinstance(d, dict) and "format" not in d and {"kind", "seq_len", "state_dict"} <= set(d)
