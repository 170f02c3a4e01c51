"""The ``global`` indexing method: spatio-temporal global aggregation (spec B.4, the thesis'
chapter 6), next to the local binary methods of :mod:`semvis.video.methods`.

Indexing a video: frames sampled at ``global_fps`` (3) -> R-MAC embeddings, streamed
(:class:`~semvis.video.embed.FrameEmbedder`) -> shots where the cosine of consecutive samples is
below ``global_threshold`` (Algorithm 3, :func:`~semvis.video.shots.embedding_shots`) -> one
embedding per shot: the mean of its frames (``global_aggregator="mean"``, the baseline) or the
temporal encoder (``"recurrent"``, :class:`semvis.models.temporal.TemporalEncoder`, trained by
``semvis video train-global``). Search: the query photo's R-MAC embedding, cosine with every shot
embedding (Eq. 6.1); a video's score is the max over its shots (Eq. 6.2, :meth:`video_scores`).

Store (per shot, one item): ``emb`` float32[dim] (the shot embedding, 4 dim bytes), ``frame``
int32 (the shot's sample nearest its embedding: the frame a hit reports) and ``codes``, the
sign bits of the embedding's first 256 dimensions (32 B, zero-padded; the store's binary key,
not used for ranking). The trunk, whitening and encoder weights travel in the index file
(``model.*`` arrays), so a loaded index embeds queries exactly as it embedded frames.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch

from .config import VideoIndexConfig
from .store import ITEM, Block, Column

__all__ = ["GlobalShots", "load_global_model"]

CODE_BYTES = 32
_TAG = "global_video"


def load_global_model(path: str) -> Dict[str, object]:
    """The parts of a ``semvis video train-global`` checkpoint the index uses (format-checked)."""
    from ..checkpoint import format_tag, read_checkpoint

    ck = read_checkpoint(path, (format_tag(_TAG, 1),), what=_TAG)
    return {k: ck[k] for k in ("embedder", "trunk", "head", "model", "encoder")}


def sign_codes(emb: np.ndarray) -> np.ndarray:
    """uint8[n, 32]: the sign bits of the first 256 dimensions (zero-padded)."""
    bits = np.zeros((emb.shape[0], 8 * CODE_BYTES), bool)
    d = min(emb.shape[1], 8 * CODE_BYTES)
    bits[:, :d] = emb[:, :d] > 0
    return np.packbits(bits, axis=1)


class GlobalShots:
    """The ``global`` method (see the module docstring); the VideoIndex calls :meth:`index_video`
    instead of ORB extraction + :meth:`aggregate`, and :meth:`search` instead of the kd-tree vote."""

    global_method = True

    def __init__(self, cfg: VideoIndexConfig):
        from ..models.temporal import TemporalEncoder
        from .embed import FrameEmbedder

        self.cfg = cfg
        self.embedder = FrameEmbedder(width=cfg.global_width, image_width=cfg.global_image_width,
                                      seed=cfg.global_seed, fps=cfg.global_fps)
        self.encoder: Optional[TemporalEncoder] = None
        self._ready = cfg.global_model is None  # the checkpoint is read when the first video is indexed

    def _ensure_model(self) -> None:
        if not self._ready:
            self.load_model(load_global_model(self.cfg.global_model))
            self._ready = True

    @property
    def dim(self) -> int:
        return self.embedder.dim

    # ------------------------------------------------------------------ model
    def load_model(self, m: Dict[str, object]) -> None:
        from ..models.temporal import TemporalEncoder

        e = m["embedder"]
        if int(e["width"]) != self.cfg.global_width or int(e["image_width"]) != self.cfg.global_image_width:
            raise ValueError(f"global_model: the checkpoint's embedder (width {e['width']}, image_width "
                             f"{e['image_width']}) differs from the index's (global_width {self.cfg.global_width}, "
                             f"global_image_width {self.cfg.global_image_width})")
        self.embedder.trunk.load_state_dict(m["trunk"])
        self.embedder.head.load_state_dict(m["head"])
        enc = m["encoder"]
        if self.cfg.global_aggregator == "recurrent":
            self.encoder = TemporalEncoder(int(enc["dim"]), hidden=int(enc["hidden"]), cell=str(enc["cell"]),
                                           max_frames=int(enc["max_frames"])).eval()
            self.encoder.load_state_dict(m["model"])

    def model_arrays(self) -> Dict[str, np.ndarray]:
        """The weights the index file carries (``model.*``)."""
        out = {f"model.trunk.{k}": v.numpy() for k, v in self.embedder.trunk.state_dict().items()}
        out.update({f"model.head.{k}": v.numpy() for k, v in self.embedder.head.state_dict().items()})
        if self.encoder is not None:
            out.update({f"model.encoder.{k}": v.numpy() for k, v in self.encoder.state_dict().items()})
            e = self.encoder
            out["model.encoder_meta"] = np.array([e.dim, e.hidden, 0 if e.cell == "lstm" else 1, e.max_frames], np.int64)
        return {k: np.array(v, order="C") for k, v in out.items()}  # (ascontiguousarray makes 0-d arrays 1-d)

    def load_model_arrays(self, arrays: Dict[str, np.ndarray]) -> None:
        """Restores :meth:`model_arrays` (ValueError on anything missing or mis-shaped)."""
        from ..models.temporal import TemporalEncoder

        def part(prefix, module):
            sd = module.state_dict()
            got = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
            if set(got) != set(sd):
                raise ValueError(f"model arrays {prefix}*: expected {len(sd)} tensors, got {len(got)}")
            new = {}
            for k, v in sd.items():
                a = got[k]
                if tuple(a.shape) != tuple(v.shape) or a.dtype != v.numpy().dtype:
                    raise ValueError(f"model array {prefix}{k}: expected {v.numpy().dtype}{tuple(v.shape)}, "
                                     f"got {a.dtype}{a.shape}")
                if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
                    raise ValueError(f"model array {prefix}{k}: not finite")
                new[k] = torch.from_numpy(np.array(a))
            module.load_state_dict(new)

        self._ready = True
        part("model.trunk.", self.embedder.trunk)
        part("model.head.", self.embedder.head)
        if self.cfg.global_aggregator == "recurrent":
            meta = arrays.get("model.encoder_meta")
            if meta is None or meta.shape != (4,) or meta[0] != self.dim or meta[2] not in (0, 1) or meta[1] < 1 \
                    or meta[3] < 1 or meta[1] > 1 << 16 or meta[3] > 1 << 16:
                raise ValueError("model.encoder_meta: missing or invalid")
            self.encoder = TemporalEncoder(self.dim, hidden=int(meta[1]), cell="lstm" if meta[2] == 0 else "gru",
                                           max_frames=int(meta[3])).eval()
            part("model.encoder.", self.encoder)
        elif any(k.startswith("model.encoder") for k in arrays):
            raise ValueError("model arrays: an encoder in a mean-pooling index")

    # ------------------------------------------------------------------ the IndexMethod interface
    def layout(self) -> Dict[str, Column]:
        return {"emb": Column(ITEM, "float32", self.dim), "frame": Column(ITEM, "int32", None, shot_frames=True)}

    @torch.no_grad()
    def shot_embeddings(self, E: np.ndarray, shot: np.ndarray) -> np.ndarray:
        """float32[S, dim], unit rows: the embedding of every shot of samples ``E`` [T, dim]."""
        from ..models.temporal import mean_pool

        S = int(shot[-1]) + 1
        seqs = [torch.from_numpy(np.ascontiguousarray(E[shot == s])) for s in range(S)]
        if self.cfg.global_aggregator == "recurrent":
            return torch.cat([self.encoder(seqs[a:a + 256]) for a in range(0, S, 256)]).numpy().astype(np.float32)
        return torch.stack([mean_pool(x) for x in seqs]).numpy().astype(np.float32)

    def index_video(self, video_id: str, source, progress: bool = False):
        """(one-video Block, {"frames", "shots", "features", "items"}) of a video source."""
        from .shots import embedding_shots, shot_starts

        self._ensure_model()
        E, nums = self.embedder.embed_video(source, progress=progress, desc=f"index {video_id}")
        shot = embedding_shots(E, self.cfg.global_threshold)
        V = self.shot_embeddings(E, shot)
        frame = np.array([np.flatnonzero(shot == s)[np.argmax(E[shot == s] @ V[s])] for s in range(len(V))], np.int32)
        starts = np.concatenate([shot_starts(shot), [len(shot)]]).astype(np.int64)
        block = Block.one_video(video_id, nums, starts, sign_codes(V), np.arange(len(V), dtype=np.int64),
                                {"emb": V, "frame": frame})
        return block, {"frames": len(nums), "shots": len(V), "features": len(nums), "items": len(V)}

    def query_embedding(self, image, features=None) -> np.ndarray:
        if features is not None:
            q = np.asarray(features, np.float32).reshape(-1)
            if q.shape != (self.dim,) or not np.all(np.isfinite(q)):
                raise ValueError(f"search: features must be a finite query embedding float32[{self.dim}] "
                                 "for a global index")
            return q
        if isinstance(image, str):
            from .io import read_image

            image = read_image(image)
        return self.embedder.embed_image(image)

    def search(self, index, image, top: int, features=None) -> list:
        """The ``top`` shots by cosine with the query (ties to the lowest shot), each with its frame."""
        from .index import VideoHit

        q = self.query_embedding(image, features)
        store = index._store
        sims = self.scores(store, q)
        order = np.lexsort((np.arange(len(sims)), -sims))[:top]
        out = []
        for s in order:
            s = int(s)
            out.append(VideoHit(store.video_ids[int(store.shot_video[s])], int(store.shot_local[s]),
                                store.frame_number(s, int(store.cols["frame"][s])), float(sims[s])))
        return out

    @staticmethod
    def scores(store, q: np.ndarray) -> np.ndarray:
        qn = q / max(float(np.linalg.norm(q)), 1e-12)
        return store.cols["emb"] @ qn.astype(np.float32)

    def video_scores(self, index, image, features=None) -> Dict[str, float]:
        """{video: max over its shots of the cosine with the query} (Eq. 6.2)."""
        index._ensure_built()
        store = index._store
        sims = self.scores(store, self.query_embedding(image, features))
        best = np.full(len(store.video_ids), -np.inf)
        np.maximum.at(best, store.shot_video.astype(np.int64), sims)
        return {v: float(b) for v, b in zip(store.video_ids, best)}
