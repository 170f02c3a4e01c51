"""Frame sources: video files (cv2.VideoCapture: mp4, avi, mkv, ...), folders of frames, arrays.

Frames are numbered from 0 in decoding order; with ``step > 1`` only frames 0, step, 2*step, ...
are returned, still with their decoding-order numbers.
"""
from __future__ import annotations

import os
import re
import warnings
from typing import Iterator, Sequence, Tuple, Union

import numpy as np

__all__ = ["VideoReadError", "FrameSource", "open_frames", "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "read_image"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".wmv", ".flv")


class VideoReadError(ValueError):
    """A video or image file that cannot be opened or decoded (names the file and the reason)."""


def _cv2():
    from .features import _cv2 as f

    return f()


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def read_image(path: str) -> np.ndarray:
    """BGR uint8 image from a file; VideoReadError if it is missing or not a decodable image."""
    cv2 = _cv2()
    if os.path.isdir(path):
        raise VideoReadError(f"{path}: is a directory, not an image")
    if not os.path.isfile(path):
        raise VideoReadError(f"{path}: no such file")
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise VideoReadError(f"{path}: not a readable image (corrupt or unsupported format)")
    return img


class FrameSource:
    """Iterates ``(frame_number, image)`` over a video file, a folder of images or an array.

    Args:
        source: a path to a video file, a path to a folder of images (sorted in natural order:
            ``frame2.png`` before ``frame10.png``), a uint8 array [T, H, W(, 3)] or a sequence of images.
        step (int): keep one frame in ``step`` (frame subsampling).
    """

    def __init__(self, source: Union[str, os.PathLike, np.ndarray, Sequence[np.ndarray]], step: int = 1):
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise ValueError(f"step must be an int >= 1, got {step!r}")
        self.step = step
        self.source = source
        self.kind: str
        self.files = None
        if isinstance(source, (str, os.PathLike)):
            path = os.fspath(source)
            if os.path.isdir(path):
                self.kind = "folder"
                self.files = sorted((f for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS)),
                                    key=_natural_key)
                if not self.files:
                    raise VideoReadError(f"{path}: folder has no image files ({', '.join(IMAGE_EXTENSIONS)})")
                self.files = [os.path.join(path, f) for f in self.files]
            elif os.path.isfile(path):
                self.kind = "file"
            else:
                raise VideoReadError(f"{path}: no such file or folder")
            self.name = path
        elif isinstance(source, np.ndarray):
            if source.dtype != np.uint8 or source.ndim not in (3, 4):
                raise TypeError(f"frames array must be uint8 [T, H, W] or [T, H, W, C], got {source.dtype} {source.shape}")
            self.kind = "array"
            self.name = "<array>"
        elif isinstance(source, (list, tuple)):
            self.kind = "array"
            self.name = "<frames>"
        else:
            raise TypeError("source must be a video path, a folder of frames, a uint8 array [T, H, W, C] or a list "
                            f"of images, got {type(source).__name__}")

    def __len__(self) -> int:
        """Number of frames that iteration yields (for files: the container's estimate)."""
        if self.kind == "folder":
            n = len(self.files)
        elif self.kind == "array":
            n = len(self.source)
        else:
            cv2 = _cv2()
            cap = cv2.VideoCapture(self.name)
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
            cap.release()
            n = max(n, 0)
        return (n + self.step - 1) // self.step

    def __iter__(self) -> Iterator[Tuple[int, np.ndarray]]:
        if self.kind == "array":
            for i in range(0, len(self.source), self.step):
                f = self.source[i]
                if not isinstance(f, np.ndarray) or f.dtype != np.uint8:
                    raise TypeError(f"frame {i} must be a uint8 numpy array, got {type(f).__name__}")
                yield i, f
        elif self.kind == "folder":
            for i in range(0, len(self.files), self.step):
                yield i, read_image(self.files[i])
        else:
            yield from self._iter_video()

    def _iter_video(self):
        cv2 = _cv2()
        cap = cv2.VideoCapture(self.name)
        if not cap.isOpened():
            raise VideoReadError(f"{self.name}: cannot open as a video (missing codec, corrupt or not a video file)")
        expected = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        i = 0
        try:
            while True:
                if i % self.step == 0:
                    ok, frame = cap.read()
                    if not ok:
                        break
                    yield i, frame
                else:
                    if not cap.grab():  # skip without decoding to an image
                        break
                i += 1
        finally:
            cap.release()
        if i == 0:
            raise VideoReadError(f"{self.name}: no frame could be decoded (corrupt or unsupported video)")
        if expected > 0 and i < 0.9 * expected:
            warnings.warn(f"{self.name}: decoded {i} of the {expected} frames the container announces "
                          f"(truncated or corrupt file?); indexing what was decoded", RuntimeWarning)


def open_frames(source, step: int = 1) -> FrameSource:
    """Shorthand for :class:`FrameSource`."""
    return FrameSource(source, step=step)
