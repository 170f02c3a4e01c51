"""Frame embeddings for global (spatio-temporal) video aggregation (spec B.4.1, the thesis' chapter 6).

Frames sampled at ``fps`` (3 in the thesis) go through a ResNet trunk and the fused R-MAC head
(:class:`semvis_ext.nn.RMAC`: :func:`semvis_ext.region_pool` over the cirtorch grid, per-region
l2 -> PCA-whitening -> l2, sum, l2), ``batch_size`` frames at a time: a video is read and embedded
as a stream, never held in memory as frames (only its embeddings, ``dim`` floats per sample).

Offline there are no ImageNet weights: the trunk is **randomly initialised** from ``seed`` (the
thesis uses a frozen ImageNet VGG16). The whitening (the thesis fits it on one training movie)
is fitted with :meth:`FrameEmbedder.fit_whitening` on frames of training videos; until then it is
the identity. Queries go through the same encoder (:meth:`FrameEmbedder.embed_images`).
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = ["FrameEmbedder", "sample_step"]

_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)


def sample_step(source_fps: float, fps: float) -> int:
    """Frames kept one in ``step`` to sample a ``source_fps`` video at about ``fps`` (>= 1)."""
    if not (isinstance(source_fps, (int, float)) and np.isfinite(source_fps) and source_fps > 0):
        raise ValueError(f"source_fps must be a finite number > 0, got {source_fps!r}")
    if not (isinstance(fps, (int, float)) and np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a finite number > 0, got {fps!r}")
    return max(1, int(round(source_fps / fps)))


class FrameEmbedder:
    """R-MAC embeddings of frames and query images.

    Args:
        backbone (str): ResNet of :func:`semvis.models.resnet.resnet` (``resnet18`` ...).
        width (int): channels of the trunk's first stage (64 in the papers; 16 by default: a CPU
            budget); the embedding dimension is ``dim = 8 * width`` (x4 for bottleneck ResNets).
        image_width (int): frames and queries are resized to this width (aspect kept) before
            the trunk (>= 32).
        levels (int): R-MAC grid levels (3).
        seed (int): the trunk's random initialisation (weights are a function of the seed).
        fps (float): sampling rate of :meth:`embed_video` (3, the thesis').
        batch_size (int): frames per trunk call.
    """

    def __init__(self, backbone: str = "resnet18", width: int = 16, image_width: int = 320, levels: int = 3,
                 seed: int = 0, fps: float = 3.0, batch_size: int = 16):
        from semvis_ext.nn import RMAC

        from ..models.resnet import resnet

        for name, v, lo in (("width", width, 1), ("image_width", image_width, 32), ("levels", levels, 1),
                            ("seed", seed, 0), ("batch_size", batch_size, 1)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"FrameEmbedder: {name} must be an int >= {lo}, got {v!r}")
        sample_step(1.0, fps)  # validates fps
        self.backbone, self.width, self.image_width, self.levels = backbone, int(width), int(image_width), int(levels)
        self.seed, self.fps, self.batch_size = int(seed), float(fps), int(batch_size)
        g = torch.random.fork_rng(devices=[])
        with g:
            torch.manual_seed(self.seed)
            self.trunk = resnet(backbone, width=self.width).eval()
        self.dim = self.trunk.out_channels
        self.head = RMAC(self.dim, levels=self.levels, whitening=True).eval()
        for p in list(self.trunk.parameters()) + list(self.head.parameters()):
            p.requires_grad_(False)

    # ------------------------------------------------------------------ preprocessing
    def _prep(self, img: np.ndarray) -> np.ndarray:
        """BGR uint8 [H, W(, 3)] -> normalised RGB float32 [3, h, image_width]."""
        from .features import _cv2

        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim not in (2, 3):
            raise TypeError(f"images must be uint8 arrays [H, W] or [H, W, 3], got "
                            f"{getattr(img, 'dtype', type(img).__name__)} {getattr(img, 'shape', '')}")
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        if img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
            raise ValueError(f"images must be [H, W, 3] with H, W >= 1, got {img.shape}")
        cv2 = _cv2()
        H, W = img.shape[:2]
        h = max(32, int(round(H * self.image_width / W)))
        img = cv2.resize(img, (self.image_width, h), interpolation=cv2.INTER_AREA if W > self.image_width
                         else cv2.INTER_LINEAR)
        x = (img[:, :, ::-1].astype(np.float32) / 255.0 - _MEAN) / _STD
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    @torch.no_grad()
    def _forward(self, batch: List[np.ndarray]) -> np.ndarray:
        x = torch.from_numpy(np.stack(batch))
        return self.head(self.trunk(x)).numpy().astype(np.float32)

    # ------------------------------------------------------------------ embedding
    def embed_images(self, images: Iterable[np.ndarray]) -> np.ndarray:
        """float32[n, dim], unit rows: R-MAC of each image (BGR uint8), ``batch_size`` at a time
        (consecutive images of one size share a batch). n = 0 gives [0, dim]."""
        out, batch, shape = [], [], None
        for img in images:
            x = self._prep(img)
            if batch and (x.shape != shape or len(batch) == self.batch_size):
                out.append(self._forward(batch))
                batch = []
            batch.append(x)
            shape = x.shape
        if batch:
            out.append(self._forward(batch))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def embed_image(self, image: np.ndarray) -> np.ndarray:
        """float32[dim]: one image (a query)."""
        return self.embed_images([image])[0]

    def embed_video(self, source, source_fps: Optional[float] = None, progress: bool = False,
                    desc: str = "embed") -> Tuple[np.ndarray, np.ndarray]:
        """(float32[T, dim] embeddings, int64[T] decoding-order frame numbers) of the frames
        sampled at ``fps`` from ``source`` (a video file, a folder of frames, a uint8 array
        [N, H, W, 3] or a list of images), read as a stream.

        ``source_fps``: the source's frame rate (default: the container's for files, 25 for
        frames and folders). Frame 0 is always sampled, so a clip shorter than one sampling
        period gives one sample. Raises ValueError (``VideoReadError`` for unreadable files)
        when the source has no frame.
        """
        from .io import FrameSource

        src0 = FrameSource(source)  # validates the source
        if source_fps is None:
            source_fps = self._container_fps(src0) if src0.kind == "file" else 25.0
        src = FrameSource(source, step=sample_step(source_fps, self.fps))
        numbers: List[int] = []

        def frames():
            for i, f in src:
                numbers.append(i)
                yield f

        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(src), desc=desc, unit="frame", leave=False)
        out, batch, shape = [], [], None
        for f in frames():
            x = self._prep(f)
            if batch and (x.shape != shape or len(batch) == self.batch_size):
                out.append(self._forward(batch))
                if bar is not None:
                    bar.update(len(batch))
                batch = []
            batch.append(x)
            shape = x.shape
        if batch:
            out.append(self._forward(batch))
        if bar is not None:
            bar.close()
        if not out:
            raise ValueError(f"embed_video: {src.name}: the video has no frames")
        return np.concatenate(out), np.asarray(numbers, np.int64)

    @staticmethod
    def _container_fps(src) -> float:
        from .features import _cv2

        cv2 = _cv2()
        cap = cv2.VideoCapture(src.name)
        fps = float(cap.get(cv2.CAP_PROP_FPS)) if cap.isOpened() else 0.0
        cap.release()
        return fps if np.isfinite(fps) and 0 < fps < 1000 else 25.0

    # ------------------------------------------------------------------ whitening
    @torch.no_grad()
    def fit_whitening(self, images: Sequence[np.ndarray], max_regions: int = 200_000, eps_rel: float = 0.1) -> "FrameEmbedder":
        """PCA-whitening of the R-MAC head from the region vectors of ``images`` (training
        frames, >= 2 regions in all); ``eps_rel`` regularises the small eigenvalues (a
        fraction of the largest: a random trunk has many near-null directions); returns self."""
        regs = []
        n = 0
        for a in range(0, len(images), self.batch_size):
            batch = [self._prep(im) for im in images[a:a + self.batch_size]]
            shapes = {b.shape for b in batch}
            for s in shapes:
                x = torch.from_numpy(np.stack([b for b in batch if b.shape == s]))
                v, m = self.head.region_vectors(self.trunk(x), whiten=False)
                regs.append(v[m])
                n += int(m.sum())
            if n >= max_regions:
                break
        feats = torch.cat(regs) if regs else torch.zeros(0, self.dim)
        if feats.shape[0] < 2:
            raise ValueError("fit_whitening: needs images giving at least 2 region vectors")
        self.head.fit_pca(feats[:max_regions], eps_rel=eps_rel)
        return self

    # ------------------------------------------------------------------ state
    def config(self) -> Dict[str, object]:
        return {"backbone": self.backbone, "width": self.width, "image_width": self.image_width,
                "levels": self.levels, "seed": self.seed, "fps": self.fps, "batch_size": self.batch_size}

    def head_arrays(self) -> Dict[str, np.ndarray]:
        """The R-MAC head's state (the whitening) as float32 arrays."""
        return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in self.head.state_dict().items()}

    def load_head_arrays(self, arrays: Dict[str, np.ndarray]) -> None:
        sd = self.head.state_dict()
        if set(arrays) != set(sd):
            raise ValueError(f"R-MAC head state: expected arrays {sorted(sd)}, got {sorted(arrays)}")
        new = {}
        for k, v in sd.items():
            a = np.asarray(arrays[k])
            if a.shape != tuple(v.shape) or not np.all(np.isfinite(a)):
                raise ValueError(f"R-MAC head state: {k} must be finite of shape {tuple(v.shape)}, got {a.shape}")
            new[k] = torch.from_numpy(a.astype(np.float32)).to(v.dtype)
        self.head.load_state_dict(new)
