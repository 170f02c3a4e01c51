"""Heatmap overlays (BEAN text-conditioned maps) as PNG files.

Uses matplotlib's colormaps when matplotlib is installed and a built-in jet-like ramp otherwise;
PNG files are written by a small zlib encoder (8-bit RGB), so neither Pillow nor matplotlib is
required.
"""
from __future__ import annotations

import os
import struct
import zlib
from typing import Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["upsample_heatmap", "colorize", "heatmap_overlay", "write_png", "read_png"]


def upsample_heatmap(heat: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling (cell centres, clamped borders) of a [h, w] map to ``size = (H, W)``."""
    heat = np.asarray(heat, dtype=np.float64)
    if heat.ndim != 2 or heat.size == 0:
        raise ValueError(f"heat must be a non-empty [h, w] array, got shape {heat.shape}")
    H, W = int(size[0]), int(size[1])
    if H < 1 or W < 1:
        raise ValueError(f"size must be positive (H, W), got {size}")
    h, w = heat.shape
    ys = np.clip((np.arange(H) + 0.5) * h / H - 0.5, 0, h - 1)
    xs = np.clip((np.arange(W) + 0.5) * w / W - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = heat[y0][:, x0] * (1 - fx) + heat[y0][:, x1] * fx
    bot = heat[y1][:, x0] * (1 - fx) + heat[y1][:, x1] * fx
    return top * (1 - fy) + bot * fy


def _jet(t: np.ndarray) -> np.ndarray:
    r = np.clip(1.5 - np.abs(4 * t - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * t - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * t - 1), 0, 1)
    return np.stack([r, g, b], -1)


def colorize(heat: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """Min-max normalizes a map and colours it: float [H, W] → uint8 [H, W, 3]. A constant map
    is mid-scale. ``cmap`` is a matplotlib colormap name when matplotlib is installed ("jet"
    works without it)."""
    heat = np.asarray(heat, dtype=np.float64)
    if not np.isfinite(heat).all():
        raise ValueError("heat contains NaN or Inf")
    lo, hi = heat.min(), heat.max()
    t = (heat - lo) / (hi - lo) if hi > lo else np.full_like(heat, 0.5)
    try:
        import matplotlib

        rgb = matplotlib.colormaps[cmap](t)[..., :3]
    except ImportError:
        if cmap != "jet":
            raise ValueError(f"colormap {cmap!r} needs matplotlib; without it only 'jet' exists") from None
        rgb = _jet(t)
    return (rgb * 255 + 0.5).astype(np.uint8)


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5, point: Optional[Sequence[float]] = None,
                    box: Optional[Sequence[float]] = None, cmap: str = "jet") -> np.ndarray:
    """Blends a coloured heatmap over an image.

    Args:
        image (uint8 [H, W, 3]): the image.
        heat (float [h, w]): the heatmap (upsampled bilinearly to the image).
        alpha (float in [0, 1]): heatmap weight.
        point ((x, y), optional): drawn as a white cross (the predicted location).
        box ((x0, y0, x1, y1), optional): drawn as a green rectangle (the ground truth).

    Returns:
        uint8 [H, W, 3].
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    if not (0.0 <= alpha <= 1.0):
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    H, W = image.shape[:2]
    col = colorize(upsample_heatmap(heat, (H, W)), cmap).astype(np.float64)
    out = (1 - alpha) * image.astype(np.float64) + alpha * col
    out = (out + 0.5).clip(0, 255).astype(np.uint8)
    if box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        x0, x1 = np.clip([x0, x1 - 1], 0, W - 1)
        y0, y1 = np.clip([y0, y1 - 1], 0, H - 1)
        out[y0, x0:x1 + 1] = out[y1, x0:x1 + 1] = (0, 255, 0)
        out[y0:y1 + 1, x0] = out[y0:y1 + 1, x1] = (0, 255, 0)
    if point is not None:
        x, y = int(min(max(point[0], 0), W - 1)), int(min(max(point[1], 0), H - 1))
        r = max(2, min(H, W) // 40)
        out[y, max(0, x - r):x + r + 1] = 255
        out[max(0, y - r):y + r + 1, x] = 255
    return out


def write_png(path: Union[str, os.PathLike], rgb: np.ndarray) -> None:
    """Writes a uint8 [H, W, 3] (or [H, W] grey) array as an 8-bit PNG."""
    a = np.asarray(rgb)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3) or a.size == 0:
        raise ValueError(f"write_png expects a non-empty uint8 [H, W, 3] or [H, W] array, got {a.dtype} {a.shape}")
    H, W = a.shape[:2]
    colour_type = 2 if a.ndim == 3 else 0
    raw = np.concatenate([np.zeros((H, 1), np.uint8), a.reshape(H, -1)], 1).tobytes()  # filter 0 per row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 8, colour_type, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(png)


def read_png(path: Union[str, os.PathLike]) -> np.ndarray:
    """Reads back the PNGs :func:`write_png` writes (8-bit RGB or grey, unfiltered rows)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG file")
    pos, idat, hdr = 8, b"", None
    while pos < len(data):
        if pos + 8 > len(data):
            raise ValueError(f"{path}: truncated PNG")
        n, tag = struct.unpack(">I", data[pos:pos + 4])[0], data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + n]
        if len(body) != n or zlib.crc32(tag + body) & 0xFFFFFFFF != struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0]:
            raise ValueError(f"{path}: corrupt PNG chunk {tag!r}")
        if tag == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat += body
        pos += 12 + n
    if hdr is None or hdr[2] != 8 or hdr[3] not in (0, 2):
        raise ValueError(f"{path}: only 8-bit RGB/grey PNGs are supported")
    W, H, ch = hdr[0], hdr[1], 3 if hdr[3] == 2 else 1
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(H, 1 + W * ch)
    if rows[:, 0].any():
        raise ValueError(f"{path}: filtered PNG rows are not supported by this reader")
    img = rows[:, 1:].reshape(H, W, ch)
    return img if ch == 3 else img[..., 0]
