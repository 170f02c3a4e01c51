"""The Trainer base on its own: a toy trainer (dropout + a linear layer) shows the contract every
system's trainer relies on: the lr hook, the step / epoch loops, history, checkpoints every N units
and at the end, rank gating, and a resume that equals an uninterrupted run (RNG states included)."""
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from semvis.config import ConfigError
from semvis.train import TrainConfig, Trainer
from semvis.train import base as base_mod


@dataclass
class ToyConfig(TrainConfig):
    PRESETS = {"tiny": {"steps": 3}}
    steps: int = 6
    lr: float = 0.1
    drop_at: int = 3

    def validate(self):
        super().validate()
        self.check_int("steps", lo=0)
        self.check_float("lr", lo=0, lo_open=True)
        return self


class ToyTrainer(Trainer):
    KIND = "toy"
    CONFIG = ToyConfig
    UNIT = "step"

    def __init__(self, config):
        super().__init__(config)
        self.seed_torch()
        self.model = nn.Sequential(nn.Dropout(0.5), nn.Linear(4, 1))
        self.build_optimizer([{"params": self.model.parameters(), "lr": config.lr}])
        self.gen = torch.Generator().manual_seed(config.seed)
        self.lrs = []

    def budget(self):
        return self.config.steps

    def lr_factor(self):
        return 0.1 if self.step >= self.config.drop_at else 1.0

    def next_batch(self):
        return torch.randn(8, 4, generator=self.gen)

    def train_step(self, x):
        self.lrs.append(self.optimizer.param_groups[0]["lr"])
        loss = (self.model(x) - x.sum(1, keepdim=True)).pow(2).mean()  # dropout draws from torch's RNG
        self.update(loss, clip=1.0)
        return {"loss": float(loss.detach())}

    def extra_state(self):
        return {"model": self.model.state_dict(), "gen": self.gen.get_state()}

    def load_extra_state(self, st):
        self.model.load_state_dict(st["model"])
        self.gen.set_state(st["gen"])


class ToyEpochTrainer(ToyTrainer):
    KIND = "toy-epoch"
    UNIT = "epoch"

    def epoch_batches(self):
        return [self.next_batch() for _ in range(3)]

    def on_epoch_start(self):
        return {"phase": "warm" if self.epoch == 0 else "main"}


def test_step_loop_lr_hook_history_and_checkpoints(tmp_path):
    cfg = ToyConfig(out_dir=str(tmp_path), checkpoint_every=2, progress=False)
    tr = ToyTrainer(cfg)
    hist = tr.fit()
    assert [h["step"] for h in hist] == [1, 2, 3, 4, 5, 6] and tr.step == 6
    assert tr.lrs == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.01, 0.01])
    ck = tr.read_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert ck["format"] == "semvis.toy-checkpoint/1" and ck["step"] == 6 and ck["config"]["drop_at"] == 3
    assert set(ck["rng_states"]) >= {"torch"}


def test_resume_equals_uninterrupted_with_dropout(tmp_path):
    a = ToyTrainer(ToyConfig(progress=False))
    a.fit()
    b = ToyTrainer(ToyConfig(progress=False, out_dir=str(tmp_path)))
    b.fit(until=4)
    torch.manual_seed(99)  # the global RNG moves on; the checkpoint restores it
    c = ToyTrainer.resume(str(tmp_path / "checkpoint.pt"))
    assert c.step == 4
    c.fit()
    assert [h["loss"] for h in a.history] == [h["loss"] for h in c.history]
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, c.model.state_dict()[k])
    # c kept b's out_dir and saved its end (step 6) over it; overrides change the resumed config
    d = ToyTrainer.resume(str(tmp_path / "checkpoint.pt"), steps=8, lr=0.5)
    assert d.config.steps == 8 and d.config.lr == 0.5 and d.step == 6


def test_epoch_loop_records():
    tr = ToyEpochTrainer(ToyConfig(steps=2, progress=False))
    hist = tr.fit()
    assert [h["epoch"] for h in hist] == [1, 2] and [h["phase"] for h in hist] == ["warm", "main"]
    assert tr.step == 6 and set(hist[0]) >= {"loss", "lr", "seconds", "images_per_s"}


def test_rank_gating(tmp_path, monkeypatch):
    monkeypatch.setattr(base_mod, "dist_info", lambda: (1, 2))
    tr = ToyTrainer(ToyConfig(steps=2, out_dir=str(tmp_path), progress=True))
    assert tr.rank == 1 and not tr.is_main
    assert isinstance(tr.progress_bar(3, "x"), base_mod._NoBar)  # only rank 0 shows bars
    tr.fit()
    assert not (tmp_path / "checkpoint.pt").exists()  # only rank 0 writes


def test_config_and_type_errors(tmp_path):
    with pytest.raises(TypeError, match="ToyConfig"):
        ToyTrainer({"steps": 1})
    with pytest.raises(ConfigError, match="config.device"):
        ToyConfig(device="tpu")
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="config.out_dir: exists and is not a folder"):
        ToyConfig(out_dir=str(tmp_path / "f"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            ToyTrainer(ToyConfig(device="cuda"))
    assert ToyConfig.preset("tiny").steps == 3
