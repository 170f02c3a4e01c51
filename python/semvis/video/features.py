"""ORB keypoints + 256-bit BRIEF descriptors with OpenCV (spec B.3.2).

Frames and queries are resized to 720 px width before detection; keypoint coordinates are in the
resized frame (so the tracking radius of 100 px means the same thing for every video).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["OrbExtractor", "FrameFeatures"]


def _cv2():
    try:
        import cv2
    except ImportError as e:
        raise ImportError('semvis.video needs OpenCV: pip install "semvis[video]" '
                          "(opencv-python-headless)") from e
    return cv2


@dataclass
class FrameFeatures:
    """Features of T frames in CSR layout (the input of semvis_ext.track).

    keypoints float32[N, 2], descriptors uint8[N, 32], frame_offsets int64[T + 1], and
    responses float32[N] (the detector's corner score; None when unknown).
    """

    keypoints: np.ndarray
    descriptors: np.ndarray
    frame_offsets: np.ndarray
    responses: Optional[np.ndarray] = None

    @property
    def n_frames(self) -> int:
        return len(self.frame_offsets) - 1

    @staticmethod
    def concat(parts: Sequence[Tuple[np.ndarray, ...]], nbytes: int = 32) -> "FrameFeatures":
        """From per-frame ``(keypoints, descriptors[, responses])`` tuples."""
        sizes = np.array([len(p[0]) for p in parts], dtype=np.int64)
        off = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum(sizes, out=off[1:])
        resp = None
        if parts:
            kp = np.ascontiguousarray(np.concatenate([p[0] for p in parts]), dtype=np.float32)
            d = np.ascontiguousarray(np.concatenate([p[1] for p in parts]))
            if all(len(p) > 2 for p in parts):
                resp = np.concatenate([p[2] for p in parts]).astype(np.float32)
        else:
            kp, d = np.zeros((0, 2), np.float32), np.zeros((0, nbytes), np.uint8)
        return FrameFeatures(kp, d, off, resp)


class OrbExtractor:
    """ORB detector + rotated BRIEF descriptor (256 bits) on images resized to ``width`` px.

    Args:
        n_features (int): at most this many keypoints per image (ORB's ``nfeatures``; the paper's
            movies average ~430 per frame).
        width (int): images are resized to this width (aspect kept) before detection; 720 in the paper.
        threads (int): frames extracted in parallel by :meth:`extract_many` (OpenCV releases the GIL).
        **orb_kwargs: passed to ``cv2.ORB_create`` (scaleFactor, nlevels, fastThreshold, ...).
    """

    def __init__(self, n_features: int = 500, width: int = 720, threads: Optional[int] = None, **orb_kwargs):
        if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 1:
            raise ValueError(f"OrbExtractor: n_features must be an int >= 1, got {n_features!r}")
        if isinstance(width, bool) or not isinstance(width, int) or width < 32:
            raise ValueError(f"OrbExtractor: width must be an int >= 32, got {width!r}")
        self.n_features = n_features
        self.width = width
        self.threads = threads or min(4, os.cpu_count() or 1)
        self.orb_kwargs = dict(orb_kwargs)
        self._orb = None

    def config(self) -> dict:
        return {"n_features": self.n_features, "width": self.width, **self.orb_kwargs}

    def _detector(self):
        # cv2.ORB objects are not documented as thread-safe: one per call is cheap (a few µs).
        cv2 = _cv2()
        return cv2.ORB_create(nfeatures=self.n_features, **self.orb_kwargs)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """uint8 grey image resized to ``width`` (accepts grey, BGR or BGRA uint8 arrays)."""
        cv2 = _cv2()
        if not isinstance(image, np.ndarray):
            raise TypeError(f"image must be a numpy.ndarray (uint8, H x W or H x W x 3), got {type(image).__name__}")
        if image.dtype != np.uint8:
            raise TypeError(f"image must have dtype uint8, got {image.dtype}")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if image.ndim == 3 and image.shape[2] in (3, 4):
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
        elif image.ndim != 2:
            raise ValueError(f"image must be H x W, H x W x 1, x 3 or x 4, got shape {image.shape}")
        h, w = image.shape
        if h < 8 or w < 8:
            raise ValueError(f"image is too small for ORB ({w} x {h} px)")
        if w != self.width:
            nh = max(1, int(round(h * self.width / w)))
            interp = cv2.INTER_AREA if w > self.width else cv2.INTER_LINEAR
            image = cv2.resize(image, (self.width, nh), interpolation=interp)
        return np.ascontiguousarray(image)

    def __call__(self, image: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(keypoints float32[n, 2], descriptors uint8[n, 32]) of one image (n may be 0)."""
        return self.detect(image)[:2]

    def detect(self, image: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keypoints float32[n, 2], descriptors uint8[n, 32], responses float32[n]) of one image."""
        grey = self.prepare(image)
        kps, desc = self._detector().detectAndCompute(grey, None)
        if desc is None or len(kps) == 0:
            return np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8), np.zeros(0, np.float32)
        xy = np.array([k.pt for k in kps], dtype=np.float32).reshape(-1, 2)
        resp = np.array([k.response for k in kps], dtype=np.float32)
        return xy, np.ascontiguousarray(desc, dtype=np.uint8), resp

    def extract_many(self, images: Iterable[np.ndarray]) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """:meth:`detect` of several images, in order, on ``threads`` threads."""
        images = list(images)
        if self.threads <= 1 or len(images) < 2:
            return [self.detect(im) for im in images]
        with ThreadPoolExecutor(self.threads) as ex:
            return list(ex.map(self.detect, images))

    def extract_video(self, src, batch_size: int = 64, progress: bool = False,
                      desc: str = "") -> Tuple[FrameFeatures, np.ndarray]:
        """(features of every frame, int64 decoding-order numbers) of a :class:`~semvis.video.io.FrameSource`,
        ``batch_size`` frames at a time. Raises ``VideoReadError`` (naming the source and the
        frame) for a frame that cannot be read or featurised, or a source without frames."""
        from tqdm.auto import tqdm

        from .io import VideoReadError

        numbers: List[int] = []
        parts: list = []

        def run(batch):
            try:
                parts.extend(self.extract_many(batch))
            except (TypeError, ValueError) as e:
                raise VideoReadError(f"{src.name}: frame {numbers[-len(batch)]}..: {e}") from e
            except Exception as e:  # cv2.error on a malformed frame
                raise VideoReadError(f"{src.name}: feature extraction failed near frame {numbers[-len(batch)]}: "
                                     f"{e}") from e
            bar.update(len(batch))

        with tqdm(total=len(src) or None, desc=desc, unit="frame", disable=not progress, leave=False) as bar:
            batch: List[np.ndarray] = []
            for i, frame in src:
                numbers.append(i)
                batch.append(frame)
                if len(batch) == batch_size:
                    run(batch)
                    batch = []
            if batch:
                run(batch)
        if not numbers:
            raise VideoReadError(f"{src.name}: no frames")
        return FrameFeatures.concat(parts), np.asarray(numbers, dtype=np.int64)
