"""Training the thesis' temporal encoder (spec B.4.3): :class:`GlobalVideoTrainer`.

Data: shots as sequences of frozen R-MAC frame embeddings (:class:`semvis.video.embed.FrameEmbedder`,
frames sampled at 3 fps). By default a synthetic training corpus
(:func:`semvis.data.synthetic_video.make_corpus`, seed ``seed + 1000``: never the evaluation
corpus) is generated and embedded, the whitening fitted on its frames; ``shots`` / ``embedder``
may be passed instead. Each step: ``shots_per_batch`` shots are encoded (a random window of up to
``max_frames`` samples of each), and ``pairs`` (frame, shot) pairs drawn, ``pos_frac`` (20 %) of
them a frame of that shot (y = 1), the others a frame of another shot of the batch (y = 0); the
loss is Eq. 6.4 with ``delta`` (0.1); Adam at ``lr`` (1e-4). Only the temporal encoder learns.

The checkpoint (``out_dir/checkpoint.pt``) holds the encoder, the frame embedder's configuration,
trunk and whitening: ``VideoIndex(method="global", global_model=path)`` indexes with them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..models.temporal import TemporalEncoder, shot_pair_loss
from .base import Trainer, TrainConfig

__all__ = ["GlobalVideoConfig", "GlobalVideoTrainer", "synthetic_shots"]


@dataclass
class GlobalVideoConfig(TrainConfig):
    """``videos`` / ``shots_per_video`` / ``frames_per_shot`` / ``frame_width`` / ``frame_height``:
    the synthetic training corpus; ``embed_width`` / ``image_width`` / ``fps``: the frame embedder
    (trunk width, input width, sampling rate); ``cell`` (lstm | gru), ``hidden`` (512),
    ``max_frames`` (50): the encoder; ``steps``, ``lr``, ``pairs``, ``shots_per_batch``,
    ``pos_frac``, ``delta``: the optimisation."""

    videos: int = 4
    shots_per_video: int = 5
    frames_per_shot: int = 60
    frame_width: int = 720
    frame_height: int = 405
    embed_width: int = 16
    image_width: int = 320
    fps: float = 3.0
    cell: str = "lstm"
    hidden: int = 512
    max_frames: int = 50
    steps: int = 300
    lr: float = 1e-4
    pairs: int = 512
    shots_per_batch: int = 32
    pos_frac: float = 0.2
    delta: float = 0.1

    def validate(self):
        super().validate()
        for name, lo in (("videos", 1), ("shots_per_video", 1), ("frames_per_shot", 1), ("frame_width", 64),
                         ("frame_height", 64), ("embed_width", 1), ("image_width", 32), ("hidden", 1),
                         ("max_frames", 1), ("steps", 0), ("pairs", 1), ("shots_per_batch", 2)):
            self.check_int(name, lo=lo)
        self.check_choice("cell", ("lstm", "gru"))
        self.check_float("fps", lo=0.0, lo_open=True)
        self.check_float("lr", lo=0.0, lo_open=True)
        self.check_float("pos_frac", lo=0.0, hi=1.0)
        self.check_float("delta", lo=-1.0, hi=1.0)
        return self


def synthetic_shots(cfg: GlobalVideoConfig, embedder, progress: bool = False) -> List[np.ndarray]:
    """Frame embeddings of every shot of a synthetic training corpus (whitening fitted on it)."""
    from ..data.synthetic_video import make_corpus

    corpus = make_corpus(n_videos=cfg.videos, shots_per_video=(cfg.shots_per_video, cfg.shots_per_video),
                         frames_per_shot=(cfg.frames_per_shot, cfg.frames_per_shot),
                         size=(cfg.frame_width, cfg.frame_height), seed=cfg.seed + 1000)
    embedder.fit_whitening([f for v in corpus.videos for f in v.frames[::4]])
    shots = []
    for v in corpus.videos:
        E, nums = embedder.embed_video(v.frames, source_fps=25.0, progress=progress, desc=v.video_id)
        shot = v.shot_of_frame[nums]
        shots += [E[shot == s] for s in range(len(v.cuts)) if np.any(shot == s)]
    return shots


class GlobalVideoTrainer(Trainer):
    """See the module docstring. ``shots``: a list of float32[n_i >= 1, dim] (>= 2 shots)."""

    KIND = "global_video"
    CONFIG = GlobalVideoConfig
    UNIT = "step"

    def __init__(self, config: GlobalVideoConfig, shots: Optional[Sequence[np.ndarray]] = None, embedder=None):
        super().__init__(config)
        from ..video.embed import FrameEmbedder

        c = config
        self.embedder = embedder if embedder is not None else FrameEmbedder(
            width=c.embed_width, image_width=c.image_width, seed=c.seed, fps=c.fps)
        if shots is None:
            shots = synthetic_shots(c, self.embedder, progress=c.progress)
        shots = [np.asarray(s, np.float32) for s in shots]
        if len(shots) < 2 or any(s.ndim != 2 or s.shape[0] < 1 or s.shape[1] != self.embedder.dim for s in shots):
            raise ValueError(f"shots: needs >= 2 shots, each float32[n >= 1, {self.embedder.dim}]")
        self.shots = [torch.from_numpy(s) for s in shots]
        self.seed_torch()
        self.model = TemporalEncoder(self.embedder.dim, hidden=c.hidden, cell=c.cell,
                                     max_frames=c.max_frames).to(self.device)
        self.build_optimizer([{"params": self.model.parameters(), "lr": c.lr}])
        self.gen = torch.Generator().manual_seed(c.seed + 1)

    def budget(self) -> int:
        return self.config.steps

    def next_batch(self):
        c, g = self.config, self.gen
        n = len(self.shots)
        ids = torch.randperm(n, generator=g)[:min(c.shots_per_batch, n)]
        seqs = []
        for i in ids.tolist():
            s = self.shots[i]
            L = s.shape[0]
            w = int(torch.randint(1, min(L, c.max_frames) + 1, (1,), generator=g))  # a random window
            a = int(torch.randint(0, L - w + 1, (1,), generator=g))
            seqs.append(s[a:a + w])
        B = len(ids)
        j = torch.randint(0, B, (c.pairs,), generator=g)  # the shot of each pair (in the batch)
        y = (torch.rand(c.pairs, generator=g) < c.pos_frac).long()
        other = (j + torch.randint(1, B, (c.pairs,), generator=g)) % B
        src = torch.where(y == 1, j, other)
        u = torch.stack([self.shots[int(ids[k])][int(torch.randint(0, self.shots[int(ids[k])].shape[0], (1,),
                                                                        generator=g))] for k in src.tolist()])
        return seqs, j, u, y

    def train_step(self, batch) -> Dict[str, Any]:
        seqs, j, u, y = batch
        self.model.train()
        v = self.model([s.to(self.device) for s in seqs])
        loss = shot_pair_loss(u.to(self.device), v[j.to(self.device)], y.to(self.device), self.config.delta)
        self.update(loss)
        return {"loss": float(loss.detach())}

    def extra_state(self) -> Dict[str, Any]:
        return {"model": self.model.state_dict(), "generator": self.gen.get_state(),
                "embedder": self.embedder.config(), "trunk": self.embedder.trunk.state_dict(),
                "head": self.embedder.head.state_dict(),
                "encoder": {"dim": self.embedder.dim, "hidden": self.config.hidden, "cell": self.config.cell,
                            "max_frames": self.config.max_frames}}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.gen.set_state(state["generator"])
        self.embedder.trunk.load_state_dict(state["trunk"])
        self.embedder.head.load_state_dict(state["head"])

    @classmethod
    def from_checkpoint(cls, checkpoint: Dict[str, Any], shots=None, embedder=None, **kwargs) -> "GlobalVideoTrainer":
        """A trainer for ``checkpoint``: its config (``kwargs`` override fields); ``shots`` /
        ``embedder`` as for the constructor (default: the synthetic corpus again)."""
        return cls(cls.CONFIG.from_dict({**checkpoint["config"], **kwargs}), shots=shots, embedder=embedder)
