"""The training skeleton every semvis trainer subclasses.

:class:`TrainConfig` holds the run knobs every training config shares (``seed``, ``threads``,
``device``, ``out_dir``, ``checkpoint_every``, ``progress``); each system's config subclasses it
(``SemanticConfig``, ``CrossModalConfig``, ``ListwiseConfig``).

:class:`Trainer` owns what does not depend on the system:

* the run: torch threads and device from the config (:meth:`Trainer.__init__`), seeding
  (:meth:`seed_torch`, called by the subclass where its model is built), rank / world size
  under ``torch.distributed`` (rank gating: only rank 0 shows progress bars and writes
  checkpoints), the DDP wrapper (:meth:`wrap_ddp`) or, for trainers whose models are not wrapped,
  replicas kept in step by hand (:meth:`replicate`: rank 0's weights broadcast once, gradients
  averaged over the ranks in :meth:`update`, buffers broadcast after each update);
* the optimizer (:meth:`build_optimizer`: Adam over named parameter groups, each with its base
  learning rate) and the learning-rate schedule hook (:meth:`lr_factor`, applied to every group
  by :meth:`apply_lr` before each update or epoch);
* the loop (:meth:`fit`): ``UNIT = "step"`` trainers run :meth:`train_one_step` (one update on
  :meth:`next_batch`) until ``budget()`` updates; ``UNIT = "epoch"`` trainers run
  :meth:`train_epoch` (one update per batch of :meth:`epoch_batches`) until ``budget()`` epochs;
  the subclass implements :meth:`train_step` (forward, loss, :meth:`update`); progress bars
  (tqdm, off with ``progress=False``); ``history`` (one record per unit);
* checkpoints: :meth:`save` writes :meth:`state_dict` atomically (rank 0 only) every
  ``checkpoint_every`` units and at the end of :meth:`fit` into ``out_dir/checkpoint.pt``;
  the state holds the config, the optimizer, the counters, the history and every RNG state
  (torch's global CPU / CUDA generators plus the subclass's own); :meth:`Trainer.resume`
  (a classmethod, the same for every trainer) reads a checkpoint with ``weights_only=True``,
  rebuilds the trainer (:meth:`from_checkpoint`) and restores its state, so that a resumed run
  continues exactly as an uninterrupted one. Under ``torch.distributed`` :meth:`save` is a
  collective (every rank calls it; :meth:`fit` does): rank 0 writes, the checkpoint also holds
  every rank's torch generator states (restored per rank when the world size is the same), and
  no rank returns before the file is complete; every rank resumes from the same file.

A subclass sets ``KIND`` (its checkpoint tag is ``semvis.<KIND>-checkpoint/<VERSION>``),
``CONFIG``, ``UNIT`` and implements ``budget``, ``train_step`` and ``next_batch`` or
``epoch_batches``; ``extra_state`` / ``load_extra_state`` carry what it adds to checkpoints.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, Iterable, List, Optional, Sequence, Tuple, Type

import torch
from torch import Tensor, nn

from .. import distributed
from ..checkpoint import atomic_save, format_tag, read_checkpoint
from ..config import Config, ConfigError

__all__ = ["TrainConfig", "Trainer", "dist_info", "CHECKPOINT_NAME"]

#: file name of a run's checkpoint inside its ``out_dir``.
CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class TrainConfig(Config):
    """The run knobs of every training config.

    ``seed`` (torch's generator and the trainer's own), ``threads`` (torch CPU threads; 0 leaves
    torch's default), ``device`` ("cpu" or "cuda"), ``out_dir`` (folder of ``checkpoint.pt``;
    None: no checkpoint), ``checkpoint_every`` (units between checkpoints, 0: only at the end),
    ``progress`` (tqdm bars).
    """

    seed: int = 0
    threads: int = 0
    device: str = "cpu"
    out_dir: Optional[str] = None
    checkpoint_every: int = 0
    progress: bool = True

    def validate(self):
        self.check_int("seed", lo=0)
        self.check_int("threads", lo=0)
        self.check_choice("device", ("cpu", "cuda"))
        self.check_int("checkpoint_every", lo=0)
        self.check_bool("progress")
        if self.out_dir is not None and not isinstance(self.out_dir, (str, os.PathLike)):
            self.fail("out_dir", "must be a folder path or null")
        if self.out_dir is not None and os.path.exists(self.out_dir) and not os.path.isdir(self.out_dir):
            self.fail("out_dir", "exists and is not a folder")
        return self


def dist_info() -> Tuple[int, int]:
    """(rank, world size) under an initialised ``torch.distributed``, else (0, 1)."""
    return distributed.rank(), distributed.world_size()


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kw) -> None:
        pass

    def close(self) -> None:
        pass


class Trainer:
    """Base of the semvis trainers (see the module docstring)."""

    KIND: ClassVar[str] = "base"
    VERSION: ClassVar[int] = 1
    #: older format tags this trainer still resumes from
    LEGACY_FORMATS: ClassVar[Tuple[str, ...]] = ()
    CONFIG: ClassVar[Type[TrainConfig]] = TrainConfig
    UNIT: ClassVar[str] = "step"

    def __init__(self, config: TrainConfig):
        if not isinstance(config, self.CONFIG):
            raise TypeError(f"config must be a {self.CONFIG.__name__}, got {type(config).__name__}")
        config.validate()
        if config.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("config.device: 'cuda' requested but no CUDA device is available")
        self.config = config
        if config.threads:
            torch.set_num_threads(config.threads)
        self.device = torch.device(config.device)
        self.rank, self.world = dist_info()
        self.step = 0  # optimizer updates done
        self.epoch = 0  # epochs done (epoch trainers)
        self.history: List[Dict[str, Any]] = []
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.base_lrs: List[float] = []
        self._saved_at: Optional[int] = None
        self._replicas: List[nn.Module] = []

    @property
    def cfg(self) -> TrainConfig:
        """Alias of ``config``."""
        return self.config

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the rank that logs and writes)."""
        return self.rank == 0

    # ------------------------------------------------------------------ run setup
    def seed_torch(self) -> None:
        """Seeds torch's global generator with ``config.seed`` (call it just before the model is built)."""
        torch.manual_seed(self.config.seed)

    def wrap_ddp(self, model: nn.Module, **kw) -> nn.Module:
        """``model`` wrapped in DistributedDataParallel when ``world > 1``, else ``model``."""
        if self.world > 1:
            return nn.parallel.DistributedDataParallel(model, **kw)
        return model

    def replicate(self, *modules: nn.Module) -> None:
        """Keeps ``modules`` identical on every rank without DDP: rank 0's parameters and buffers
        are broadcast now, :meth:`update` averages their gradients over the ranks (as DDP does)
        and broadcasts rank 0's buffers (e.g. BatchNorm running statistics) after each step.
        For models that DDP cannot wrap (several forward passes per step, mixed image sizes).
        No-op with one process."""
        if self.world == 1:
            return
        for m in modules:
            distributed.broadcast_module(m)
            self._replicas.append(m)

    def build_optimizer(self, groups: Sequence[Dict[str, Any]], **kw) -> torch.optim.Optimizer:
        """Adam over parameter ``groups`` (dicts with ``params`` and ``lr``; other keys are kept);
        their ``lr`` are the base rates that :meth:`lr_factor` scales."""
        groups = [dict(g) for g in groups]
        self.optimizer = torch.optim.Adam(groups, **kw)
        self.base_lrs = [float(g["lr"]) for g in groups]
        return self.optimizer

    def lr_factor(self) -> float:
        """Multiplier of every group's base rate at the current step / epoch (schedule hook)."""
        return 1.0

    def apply_lr(self) -> float:
        """Sets every group's rate to base x :meth:`lr_factor`; returns the first group's."""
        f = self.lr_factor()
        for g, lr in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = lr * f
        return self.base_lrs[0] * f if self.base_lrs else 0.0

    def update(self, loss: Tensor, clip: Optional[float] = None, parameters: Optional[Iterable[Tensor]] = None) -> None:
        """zero_grad, backward, optional gradient-norm clipping of ``parameters`` (default: every
        parameter the optimizer updates), optimizer step."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self._replicas:
            distributed.all_reduce_gradients([p for m in self._replicas for p in m.parameters()])
        if clip:
            if parameters is None:
                parameters = [p for g in self.optimizer.param_groups for p in g["params"]]
            nn.utils.clip_grad_norm_(list(parameters), clip)
        self.optimizer.step()
        for m in self._replicas:
            distributed.broadcast_buffers(m)

    def progress_bar(self, total: int, desc: str, initial: int = 0, leave: bool = True, unit: str = "it",
                     show: Optional[bool] = None):
        """A tqdm bar on rank 0 when progress is on (``show``, default ``config.progress``), else a no-op."""
        show = self.config.progress if show is None else show
        if not show or not self.is_main:
            return _NoBar()
        try:
            from tqdm.auto import tqdm
        except ImportError:  # tqdm is a dependency; a broken install only loses the bar
            return _NoBar()
        return tqdm(total=total, initial=initial, desc=desc, leave=leave, unit=unit)

    # ------------------------------------------------------------------ subclass hooks
    def budget(self) -> int:
        """Units (steps or epochs) of a full run."""
        raise NotImplementedError

    def next_batch(self) -> Any:
        """The next batch (``UNIT = "step"``)."""
        raise NotImplementedError

    def epoch_batches(self) -> Sequence[Any]:
        """The batches of the current epoch (``UNIT = "epoch"``)."""
        raise NotImplementedError

    def train_step(self, batch: Any) -> Dict[str, Any]:
        """One update on ``batch``; returns at least ``{"loss": float}`` (epoch trainers may add
        ``"n"``, the items in the batch, to weight the epoch's mean loss)."""
        raise NotImplementedError

    def on_epoch_start(self) -> Dict[str, Any]:
        """Called at the start of each epoch after the learning rate is set; returns fields added
        to the epoch's history record."""
        return {}

    def on_fit_end(self) -> None:
        """Called when :meth:`fit` returns."""

    def postfix(self, record: Dict[str, Any]) -> Dict[str, str]:
        return {"loss": f"{record['loss']:.4f}"}

    def checkpoint_path(self) -> Optional[str]:
        """Where :meth:`fit` writes checkpoints (``out_dir/checkpoint.pt``), or None."""
        d = self.config.out_dir
        return os.path.join(d, CHECKPOINT_NAME) if d else None

    # ------------------------------------------------------------------ the loop
    @property
    def position(self) -> int:
        """Units done: ``step`` or ``epoch``."""
        return self.epoch if self.UNIT == "epoch" else self.step

    def train_one_step(self) -> Dict[str, Any]:
        """One update (``UNIT = "step"``): next batch, learning rate, :meth:`train_step`, history."""
        batch = self.next_batch()
        self.apply_lr()
        self.step += 1
        rec = {"step": self.step, **self.train_step(batch)}
        self.history.append(rec)
        return rec

    def train_epoch(self) -> Dict[str, Any]:
        """One epoch (``UNIT = "epoch"``): learning rate, :meth:`on_epoch_start`, an update per batch."""
        lr = self.apply_lr()
        extra = self.on_epoch_start()
        batches = self.epoch_batches()
        bar = self.progress_bar(len(batches), desc=f"epoch {self.epoch + 1}/{self.budget()}", leave=False)
        t0 = time.perf_counter()
        total, n_items = 0.0, 0
        for batch in batches:
            out = self.train_step(batch)
            self.step += 1
            n = int(out.get("n", 1))
            total += float(out["loss"]) * n
            n_items += n
            bar.update(1)
            bar.set_postfix(loss=f"{float(out['loss']):.3f}")
        bar.close()
        dt = time.perf_counter() - t0
        self.epoch += 1
        rec = {"epoch": self.epoch, "loss": total / max(n_items, 1), "lr": lr, **extra, "seconds": dt,
               "images_per_s": n_items / dt if dt > 0 else float("nan")}
        self.history.append(rec)
        return rec

    def fit(self, until: Optional[int] = None, progress: Optional[bool] = None,
            log: Optional[Callable[[Dict[str, Any]], None]] = None) -> List[Dict[str, Any]]:
        """Trains until ``until`` units in total (default: :meth:`budget`); checkpoints every
        ``checkpoint_every`` units and at the end (when ``out_dir`` is set); calls ``log`` with each
        unit's history record (on rank 0 only under torch.distributed); returns the history."""
        total = self.budget() if until is None else int(until)
        unit = self.UNIT
        path = self.checkpoint_path()
        every = self.config.checkpoint_every
        if self.world > 1 and len(set(distributed.all_gather_objects((path is not None, every)))) > 1:
            # saving is a collective: a rank that saved alone would wait for the others forever
            raise ValueError("under torch.distributed every rank needs an out_dir (or none) and the same "
                             "checkpoint_every")
        bar = self.progress_bar(total, desc=f"train {self.KIND}", initial=min(self.position, total), unit=unit,
                                show=progress, leave=unit == "step")
        while self.position < total:
            rec = self.train_epoch() if unit == "epoch" else self.train_one_step()
            bar.update(1)
            bar.set_postfix(**self.postfix(rec))
            if log is not None and self.is_main:
                log(rec)
            if path and every and self.position % every == 0:
                self.save(path)
        bar.close()
        if path and self._saved_at != self.position:
            self.save(path)
        self.on_fit_end()
        return self.history

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def format_tag(cls) -> str:
        return format_tag(cls.KIND, cls.VERSION)

    def extra_state(self) -> Dict[str, Any]:
        """What the subclass adds to :meth:`state_dict` (model weights, its generators...)."""
        return {}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        """Restores what :meth:`extra_state` saved."""

    @staticmethod
    def _rng_states() -> Dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return rng

    def state_dict(self) -> Dict[str, Any]:
        rng = self._rng_states()
        return {"format": self.format_tag(), "config": self.config.to_dict(),
                "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
                "step": self.step, "epoch": self.epoch, "history": self.history, "rng_states": rng,
                **self.extra_state()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.load_extra_state(state)
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state.get("step", 0))
        self.epoch = int(state.get("epoch", 0))
        self.history = list(state.get("history", []))
        rng = state.get("rng_states") or {}
        per_rank = state.get("rng_states_by_rank")
        if isinstance(per_rank, list) and len(per_rank) == self.world:  # a run on as many ranks
            rng = per_rank[self.rank] or rng
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self._saved_at = self.position

    def save(self, path: str) -> None:
        """Writes :meth:`state_dict` atomically (rank 0 only). Under ``torch.distributed`` it is a
        collective: every rank must call it; rank 0 also stores every rank's generator states
        (``rng_states_by_rank``) and no rank returns before the file is written."""
        if self.world > 1:
            per_rank = distributed.all_gather_objects(self._rng_states())
            if self.is_main:
                atomic_save({**self.state_dict(), "rng_states_by_rank": per_rank}, path)
            distributed.barrier()
        elif self.is_main:
            atomic_save(self.state_dict(), path)
        self._saved_at = self.position

    @classmethod
    def read_checkpoint(cls, path: str) -> Dict[str, Any]:
        """The checkpoint dict at ``path`` (``weights_only=True``; format tag checked)."""
        return read_checkpoint(path, (cls.format_tag(),) + tuple(cls.LEGACY_FORMATS), what=cls.KIND)

    @classmethod
    def from_checkpoint(cls, checkpoint: Dict[str, Any], *args, **kwargs) -> "Trainer":
        """A fresh trainer for ``checkpoint`` (before its state is loaded). Default: the
        checkpoint's config with ``kwargs`` overriding config fields."""
        return cls(cls.CONFIG.from_dict({**checkpoint["config"], **kwargs}))

    @classmethod
    def resume(cls, path: str, *args, **kwargs) -> "Trainer":
        """Rebuilds the trainer saved at ``path`` and restores its state. ``args`` / ``kwargs`` go
        to :meth:`from_checkpoint` (what a checkpoint does not hold, e.g. data, and config overrides)."""
        ck = cls.read_checkpoint(path)
        tr = cls.from_checkpoint(ck, *args, **kwargs)
        tr.load_state_dict(ck)
        return tr
