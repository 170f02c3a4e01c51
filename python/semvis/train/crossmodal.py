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
* DDP-ready: under ``torch.distributed`` each rank trains on its shard of every epoch's batches
  (the negatives are those of the local batch) and only rank 0 writes checkpoints and progress.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.crossmodal import CaptionedImages
from ..eval.pointing import centre_points, pointing_game
from ..eval.retrieval import crossmodal_retrieval_metrics
from ..losses import hardest_negative_triplet_loss
from ..models.bean import BEAN, set_batchnorm_eval
from ..models.localization import heatmap_points, text_heatmap
from ..models.text_encoder import pad_captions
from ..text import Vocabulary, tokenize

__all__ = ["CrossModalConfig", "CrossModalTrainer", "build_vocabulary", "tokenize_captions", "prepare_images",
           "encode_images", "encode_captions", "evaluate_crossmodal", "load_crossmodal_checkpoint"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHECKPOINT_FORMAT = "semvis.crossmodal/1"


# ---- text ------------------------------------------------------------------------------------

def build_vocabulary(captions: Sequence[str], min_count: int = 1, max_size: Optional[int] = None) -> Vocabulary:
    """Word vocabulary of training captions: ``<pad>`` = 0, ``<unk>`` = 1, then words by count."""
    docs = [tokenize(c) for c in captions]
    return Vocabulary.build(docs, min_count=min_count, count="token", specials=("<pad>", "<unk>"), unk="<unk>",
                            max_size=max_size)


def tokenize_captions(vocab: Vocabulary, captions: Sequence[str], max_len: Optional[int] = None
                      ) -> Tuple[Tensor, Tensor]:
    """Captions → (ids Tensor[B, T] int64, lengths Tensor[B]); unknown words → ``<unk>``.

    Raises ValueError for a caption without any word (empty, or only digits/punctuation).
    """
    if vocab.unk is None or vocab.get("<pad>") != 0:
        raise ValueError("the vocabulary must have '<pad>' at index 0 and an unk token (see build_vocabulary)")
    seqs = []
    for i, c in enumerate(captions):
        if not isinstance(c, str):
            raise TypeError(f"caption {i} must be a str, got {type(c).__name__}")
        toks = tokenize(c)
        if not toks:
            raise ValueError(f"caption {i} is empty (no word): {c!r}")
        ids = vocab.encode(toks, oov="unk")
        seqs.append(ids[:max_len] if max_len else ids)
    return pad_captions(seqs, pad_index=0)


# ---- images ----------------------------------------------------------------------------------

def _to_float(img: np.ndarray) -> Tensor:
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"images must be uint8 [H, W, 3] arrays, got {getattr(img, 'dtype', type(img).__name__)} "
                         f"{getattr(img, 'shape', '')}")
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255)


def _normalize(x: Tensor) -> Tensor:
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(3, 1, 1)
    return (x - mean) / std


def _resize(x: Tensor, size: Tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x.unsqueeze(0), size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def prepare_images(images: Sequence[np.ndarray], size: Optional[int] = 400) -> Tensor:
    """uint8 [H, W, 3] arrays → normalized Tensor[B, 3, size, size] (resized regardless of aspect
    ratio, as BEAN tests; ``size=None`` keeps the sizes, which must then agree)."""
    out = []
    for img in images:
        x = _to_float(img)
        out.append(_normalize(_resize(x, (size, size)) if size else x))
    shapes = {tuple(t.shape) for t in out}
    if len(shapes) > 1:
        raise ValueError(f"images of different sizes {sorted(shapes)[:3]}: give a size to resize them")
    return torch.stack(out)


def _random_crop(img: np.ndarray, size: int, scale: Tuple[float, float], ratio: Tuple[float, float],
                 rng: np.random.Generator) -> Tensor:
    """VSE++-style random rectangular crop resized to size × size (torchvision RandomResizedCrop)."""
    x = _to_float(img)
    H, W = x.shape[1:]
    area = H * W
    for _ in range(10):
        a = area * rng.uniform(*scale)
        r = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = int(round(math.sqrt(a * r))), int(round(math.sqrt(a / r)))
        if 0 < w <= W and 0 < h <= H:
            y0, x0 = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
            x = x[:, y0:y0 + h, x0:x0 + w]
            break
    return _normalize(_resize(x, (size, size)))


# ---- encoding --------------------------------------------------------------------------------

@torch.no_grad()
def encode_images(model: BEAN, data: CaptionedImages, size: Optional[int], batch_size: int = 64,
                  device: str = "cpu", maps: bool = False):
    """Image embeddings Tensor[M, d] (and, with ``maps``, the activation maps Tensor[M, D', h, w])
    in eval mode."""
    was = model.training
    model.eval()
    embs, Gs = [], []
    try:
        for i0 in range(0, len(data), batch_size):
            x = prepare_images([data.image(i) for i in range(i0, min(i0 + batch_size, len(data)))], size).to(device)
            G = model.image.activation_maps(x)
            embs.append(model.image.embed_maps(G).float().cpu())
            if maps:
                Gs.append(G.float().cpu())
    finally:
        model.train(was)
    e = torch.cat(embs)
    return (e, torch.cat(Gs)) if maps else e


@torch.no_grad()
def encode_captions(model: BEAN, vocab: Vocabulary, captions: Sequence[str], batch_size: int = 256,
                    device: str = "cpu") -> Tensor:
    """Caption (or phrase) embeddings Tensor[N, d] in eval mode."""
    was = model.training
    model.eval()
    out = []
    try:
        for c0 in range(0, len(captions), batch_size):
            ids, lengths = tokenize_captions(vocab, captions[c0:c0 + batch_size])
            out.append(model.text(ids.to(device), lengths.to(device)).float().cpu())
    finally:
        model.train(was)
    return torch.cat(out) if out else torch.zeros(0, model.dim)


def default_heatmap_k(d: int) -> int:
    """The paper's k = 180 of d = 2400, scaled to other widths: max(1, round(0.075 d))."""
    return max(1, int(round(d * 180 / 2400)))


def evaluate_crossmodal(model: BEAN, vocab: Vocabulary, data: CaptionedImages, size: Optional[int] = 400,
                        folds: int = 1, heatmap_k: Optional[int] = None, device: str = "cpu", batch_size: int = 64
                        ) -> Dict[str, Any]:
    """R@1/5/10, MedR both ways with and without re-ranking, and the pointing game (when the data
    have grounded phrases) against the centre baseline.

    ``heatmap_k`` defaults to the paper's share of the dimensions, 180 / 2400 of d (180 at d = 2400).

    Returns:
        ``{"retrieval": {"i2t": ..., "t2i": ...}, "retrieval_rerank": {...}, "pointing": {"accuracy",
        "centre_baseline", "phrases"}}`` (recalls and accuracies in %).
    """
    caps, owner = data.flat_captions()
    img, G = encode_images(model, data, size, batch_size, device, maps=True)
    txt = encode_captions(model, vocab, caps, device=device)
    owner_t = torch.as_tensor(owner, dtype=torch.int64)
    out: Dict[str, Any] = {
        "retrieval": crossmodal_retrieval_metrics(img, txt, owner_t, folds=folds),
        "retrieval_rerank": crossmodal_retrieval_metrics(img, txt, owner_t, folds=folds, rerank=True),
    }
    if data.phrases is not None and any(data.phrases):
        A = model.image.fc.weight.detach().float().cpu()
        k = default_heatmap_k(A.shape[0]) if heatmap_k is None else min(heatmap_k, A.shape[0])
        points, boxes, sizes = [], [], []
        for i, ph in enumerate(data.phrases):
            if not ph:
                continue
            H_img, W_img = data.image(i).shape[:2]
            v = encode_captions(model, vocab, [p.text for p in ph], device=device)
            H = text_heatmap(G[i], A, v, k)  # [P, h, w]
            points.append(heatmap_points(H, (W_img, H_img)))
            boxes.extend(p.box for p in ph)
            sizes.extend([(W_img, H_img)] * len(ph))
        pts = torch.cat(points)
        _, acc = pointing_game(pts, boxes)
        _, base = pointing_game(centre_points(sizes), boxes)
        out["pointing"] = {"accuracy": acc, "centre_baseline": base, "phrases": len(boxes), "k": k}
    return out


# ---- training --------------------------------------------------------------------------------

@dataclass
class CrossModalConfig:
    """Training knobs (defaults: the paper / public code; see the module docstring)."""

    epochs: int = 10
    batch_size: int = 160
    lr: float = 1e-3
    lr_decay: float = 0.5
    lr_decay_epochs: int = 6
    margin: float = 0.2
    reduction: str = "sum"
    negatives: str = "hardest"
    k: int = 1
    warmup_epochs: int = 0
    freeze_trunk_epochs: int = 0
    bn: str = "auto"
    crop_size: int = 256
    crop_scale: Tuple[float, float] = (0.5, 1.0)
    crop_ratio: Tuple[float, float] = (3 / 4, 4 / 3)
    test_size: Optional[int] = 400
    grad_clip: Optional[float] = 2.0
    max_caption_len: Optional[int] = None
    seed: int = 0
    device: str = "cpu"
    checkpoint_dir: Optional[str] = None
    progress: bool = True

    def __post_init__(self):
        if self.bn not in ("auto", "frozen", "train"):
            raise ValueError(f"bn must be 'auto', 'frozen' or 'train', got {self.bn!r}")
        for name in ("epochs", "batch_size", "k"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2 (the negatives come from the batch)")
        if not (self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.negatives not in ("hardest", "all"):
            raise ValueError(f"negatives must be 'hardest' or 'all', got {self.negatives!r}")
        if self.reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {self.reduction!r}")


def _dist():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class CrossModalTrainer:
    """Trains a :class:`BEAN` on a :class:`CaptionedImages` set.

    ``fit()`` runs ``config.epochs`` epochs (resuming from ``resume(path)`` if called) and returns
    the per-epoch history (loss, lr, seconds, images/s). Checkpoints (``checkpoint_dir``) hold the
    model configuration, weights, optimizer, epoch, config and vocabulary:
    :func:`load_crossmodal_checkpoint` rebuilds the model from one.
    """

    def __init__(self, model: BEAN, vocab: Vocabulary, train: CaptionedImages, config: Optional[CrossModalConfig] = None,
                 val: Optional[CaptionedImages] = None):
        self.config = config or CrossModalConfig()
        self.model = model.to(self.config.device)
        self.vocab = vocab
        self.train_set, self.val_set = train, val
        if len(vocab) != model.text.num_words:
            raise ValueError(f"the vocabulary has {len(vocab)} words but the model {model.text.num_words}")
        if len(train) < 2:
            raise ValueError("the training set needs at least 2 images")
        self.optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=self.config.lr)
        self.epoch = 0
        self.history: List[Dict[str, float]] = []
        self.rng = np.random.default_rng(self.config.seed)
        # pre-tokenize every caption once
        self._cap_ids: List[List[Tuple[Tensor, int]]] = []
        for caps in train.captions:
            ids, lengths = tokenize_captions(vocab, caps, self.config.max_caption_len)
            self._cap_ids.append([(ids[j, : lengths[j]], int(lengths[j])) for j in range(len(caps))])
        rank, world = _dist()
        self.rank, self.world = rank, world
        self.ddp_model = model
        if world > 1:
            self.ddp_model = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)

    # -- schedule / staging
    def lr_at(self, epoch: int) -> float:
        """Learning rate of 0-based ``epoch``: lr · decay^min(epoch, lr_decay_epochs)."""
        return self.config.lr * self.config.lr_decay ** min(epoch, self.config.lr_decay_epochs)

    def _set_stage(self, epoch: int) -> None:
        frozen = epoch < self.config.freeze_trunk_epochs
        for p in list(self.model.image.trunk.parameters()) + list(self.model.image.conv.parameters()):
            p.requires_grad_(not frozen)
        self.model.train()
        if self.config.bn == "frozen" or (self.config.bn == "auto" and frozen):
            set_batchnorm_eval(self.model.image.trunk)

    # -- batches
    def _batches(self) -> List[np.ndarray]:
        perm = self.rng.permutation(len(self.train_set))
        bs = self.config.batch_size
        batches = [perm[i:i + bs] for i in range(0, len(perm), bs)]
        if len(batches) > 1 and len(batches[-1]) < 2:
            batches = batches[:-1]  # a single-pair batch has no negative
        return batches[self.rank::self.world]

    def _make_batch(self, idx: np.ndarray):
        c = self.config
        imgs = torch.stack([_random_crop(self.train_set.image(int(i)), c.crop_size, c.crop_scale, c.crop_ratio, self.rng)
                            for i in idx])
        seqs = []
        for i in idx:
            opts = self._cap_ids[int(i)]
            seqs.append(opts[int(self.rng.integers(len(opts)))][0].tolist())
        ids, lengths = pad_captions(seqs)
        return imgs.to(c.device), ids.to(c.device), lengths.to(c.device)

    def train_epoch(self) -> Dict[str, float]:
        c = self.config
        epoch = self.epoch
        lr = self.lr_at(epoch)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self._set_stage(epoch)
        negatives = "all" if epoch < c.warmup_epochs else c.negatives
        batches = self._batches()
        bar = None
        if c.progress and self.rank == 0:
            try:
                from tqdm.auto import tqdm

                bar = tqdm(total=len(batches), desc=f"epoch {epoch + 1}/{c.epochs}", leave=False)
            except ImportError:
                bar = None
        t0 = time.perf_counter()
        total, n_img = 0.0, 0
        for idx in batches:
            imgs, ids, lengths = self._make_batch(idx)
            x, v = self.ddp_model(imgs, ids, lengths)
            loss = hardest_negative_triplet_loss(x, v, c.margin, c.reduction, negatives=negatives, k=c.k)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if c.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
            self.optimizer.step()
            total += float(loss.detach()) * len(idx)
            n_img += len(idx)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        if bar is not None:
            bar.close()
        dt = time.perf_counter() - t0
        self.epoch += 1
        rec = {"epoch": self.epoch, "loss": total / max(n_img, 1), "lr": lr, "negatives": negatives,
               "loss_backend": "semvis_ext",
               "seconds": dt, "images_per_s": n_img / dt if dt > 0 else float("nan")}
        self.history.append(rec)
        if c.checkpoint_dir and self.rank == 0:
            self.save(os.path.join(c.checkpoint_dir, "last.pt"))
        return rec

    def fit(self) -> List[Dict[str, float]]:
        while self.epoch < self.config.epochs:
            self.train_epoch()
        self.model.eval()
        return self.history

    # -- checkpoints
    def save(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        state = {
            "format": CHECKPOINT_FORMAT,
            "model_config": self.model.config,
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "config": dataclasses.asdict(self.config),
            "vocab": {"terms": self.vocab.terms, "counts": self.vocab.counts, "unk": self.vocab.unk},
            "history": self.history,
            "rng": self.rng.bit_generator.state,
        }
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)  # never leave a half-written checkpoint behind

    def resume(self, path: str) -> None:
        ck = _read_checkpoint(path)
        self.model.load_state_dict(ck["state_dict"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.epoch = int(ck["epoch"])
        self.history = list(ck.get("history", []))
        if "rng" in ck:
            self.rng.bit_generator.state = ck["rng"]


def _read_checkpoint(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a corrupt file
        raise ValueError(f"could not read checkpoint {path}: {e}") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a semvis cross-modal checkpoint (format tag {CHECKPOINT_FORMAT!r} missing)")
    return ck


def load_crossmodal_checkpoint(path: str) -> Tuple[BEAN, Vocabulary, Dict[str, Any]]:
    """(model in eval mode, vocabulary, the raw checkpoint dict) from a trainer checkpoint."""
    ck = _read_checkpoint(path)
    model = BEAN(**ck["model_config"])
    model.load_state_dict(ck["state_dict"])
    model.eval()
    v = ck["vocab"]
    return model, Vocabulary(v["terms"], v["counts"], unk=v["unk"]), ck
