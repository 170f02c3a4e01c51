"""A synthetic image-to-video corpus made from real photographs (scikit-image's sample images).

Each *shot* films its own *set*: a collage of photographs (a base photograph with crops of others
pasted at random scales, rotations and places), so that no two shots show the same scene. A virtual
camera moves over the set: a pan (the viewport's centre moves along a line), a zoom (its scale
changes geometrically), a small roll and a lighting change (gain and gamma drift), plus mild sensor
noise. One to three *actors* (textured crops of photographs) move across the frame on their own
straight paths, as people and objects do in a film: they are what makes neighbouring frames of a shot
distinguishable when the camera is static or slow. A *video* is a sequence of shots joined by hard
cuts.
Queries imitate a phone photo of a screen showing a frame: the frame in a dark bezel, a perspective
warp, defocus blur, a colour cast, a moire grating, noise and JPEG compression.

The photographs are the ones that ship inside the scikit-image wheel (no download): astronaut,
camera, coffee, chelsea, rocket, coins, hubble_deep_field, immunohistochemistry, moon, grass,
gravel, brick, page and the two stereo_motorcycle views (retina, cell and clock are left out: most of
their viewports are blank and give no ORB features at all). Low-texture photographs (chelsea, moon,
brick) give few features, like the dark films of the paper. Everything is deterministic given the
seed.

    corpus = make_corpus(n_videos=4, shots_per_video=(3, 5), frames_per_shot=(30, 80), seed=0)
    for v in corpus.videos: v.frames  # uint8[T, H, W, 3] BGR; v.cuts: first frame of each shot
    queries = make_queries(corpus, n=50, seed=1)  # Query(image, video_id, shot, frame)
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

__all__ = ["SyntheticVideo", "Corpus", "Query", "photographs", "make_set", "make_shot", "make_video",
           "make_corpus", "make_queries", "phone_photo", "write_video"]

_PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "hubble_deep_field",
           "immunohistochemistry", "moon", "grass", "gravel", "brick", "page")


def _cv2():
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError('the synthetic video corpus needs OpenCV: pip install "semvis[video]"') from e
    return cv2


@functools.lru_cache(maxsize=1)
def photographs() -> Tuple[np.ndarray, ...]:
    """The source photographs as uint8 BGR arrays (grey images are replicated to 3 channels)."""
    try:
        import skimage.data as data
    except ImportError as e:
        raise ImportError("the synthetic video corpus needs scikit-image (pip install scikit-image): "
                          "its sample photographs are the source images") from e
    cv2 = _cv2()
    out = []
    for name in _PHOTOS:
        img = np.asarray(getattr(data, name)())
        out.append(img)
    left, right, _ = data.stereo_motorcycle()
    out += [np.asarray(left), np.asarray(right)]
    res = []
    for img in out:
        if img.dtype != np.uint8:
            img = (255 * (img.astype(np.float64) / max(float(img.max()), 1e-9))).astype(np.uint8)
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        img = np.ascontiguousarray(img[:, :, 2::-1])  # RGB -> BGR (OpenCV order)
        # at least 1200 px on the short side, so that zoomed-in viewports stay sharp enough
        s = 1200 / min(img.shape[:2])
        if s > 1:
            img = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_CUBIC)
        res.append(img)
    return tuple(res)


@dataclass
class SyntheticVideo:
    """frames uint8[T, H, W, 3] (BGR); cuts: first frame of every shot (cuts[0] = 0); photos: the
    base photograph of every shot's set (an index into :func:`photographs`)."""

    video_id: str
    frames: np.ndarray
    cuts: List[int]
    photos: List[int] = field(default_factory=list)

    @property
    def shot_of_frame(self) -> np.ndarray:
        s = np.zeros(len(self.frames), dtype=np.int64)
        for c in self.cuts[1:]:
            s[c:] += 1
        return s


@dataclass
class Corpus:
    videos: List[SyntheticVideo]
    size: Tuple[int, int]  # (width, height)

    @property
    def n_frames(self) -> int:
        return sum(len(v.frames) for v in self.videos)


@dataclass
class Query:
    """A phone photo of frame ``frame`` (shot ``shot``) of video ``video_id``."""

    image: np.ndarray
    video_id: str
    shot: int
    frame: int


def _crop(rng: np.random.Generator, img: np.ndarray, w: int, h: int) -> np.ndarray:
    H, W = img.shape[:2]
    w, h = min(w, W), min(h, H)
    y, x = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
    out = img[y:y + h, x:x + w]
    return np.ascontiguousarray(out[:, ::-1] if rng.random() < 0.5 else out)


def _textured_crop(rng: np.random.Generator, photos, w: int, h: int, tries: int = 8) -> np.ndarray:
    """A crop of a random photograph with some texture: the first of ``tries`` random crops with
    at least 25 FAST corners (else the one with the most). A flat actor would move unseen."""
    cv2 = _cv2()
    fast = cv2.FastFeatureDetector_create(threshold=20)
    best, best_n = None, -1
    for _ in range(tries):
        c = _crop(rng, photos[int(rng.integers(len(photos)))], w, h)
        n = len(fast.detect(cv2.cvtColor(c, cv2.COLOR_BGR2GRAY)))
        if n > best_n:
            best, best_n = c, n
        if n >= 25:
            break
    return best


def make_set(rng: np.random.Generator, size: Tuple[int, int] = (1800, 1200), n_pieces: Tuple[int, int] = (4, 8),
             base: Optional[int] = None) -> np.ndarray:
    """A set for one shot: uint8[H, W, 3] BGR, a region of a base photograph (``base``: its index
    in :func:`photographs`, else random; mirrored half of the time) with ``n_pieces`` crops of
    other photographs pasted at random scales (0.5-1.3), rotations (+-40 degrees) and places."""
    cv2 = _cv2()
    photos = photographs()
    W, H = size
    src = photos[int(rng.integers(len(photos))) if base is None else base]
    scale = max(W / src.shape[1], H / src.shape[0], 1.0)
    if scale > 1:
        src = cv2.resize(src, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    canvas = _crop(rng, src, W, H).copy()
    for _ in range(int(rng.integers(n_pieces[0], n_pieces[1] + 1))):
        piece = _crop(rng, photos[int(rng.integers(len(photos)))], int(rng.integers(200, 600)),
                      int(rng.integers(200, 600)))
        ph, pw = piece.shape[:2]
        M = cv2.getRotationMatrix2D((pw / 2, ph / 2), float(rng.uniform(-40, 40)), float(rng.uniform(0.5, 1.3)))
        M[:, 2] += rng.uniform([0, 0], [W, H]) - np.array([pw / 2, ph / 2])
        warped = cv2.warpAffine(piece, M, (W, H), flags=cv2.INTER_LINEAR)
        mask = cv2.warpAffine(np.full((ph, pw), 255, np.uint8), M, (W, H), flags=cv2.INTER_NEAREST)
        np.copyto(canvas, warped, where=mask[:, :, None] > 0)
    return canvas


CAMERAS = ("mixed", "pan", "zoom", "static", "shake")


def make_shot(rng: np.random.Generator, n_frames: int, size: Tuple[int, int] = (720, 405),
              photo: Optional[np.ndarray] = None, noise: float = 1.0, static_p: float = 0.25,
              motion: float = 1.0, actors: Tuple[int, int] = (1, 3), camera: str = "mixed") -> np.ndarray:
    """One shot: uint8[n_frames, H, W, 3] from a camera moving over ``photo`` (a set from
    :func:`make_set` if None).

    ``camera="mixed"`` (the default): a pan, a zoom and a roll at once (or, with probability
    ``static_p``, a static camera), with ``actors`` (a range: how many) moving crops of
    photographs, each on a straight path across the frame at 1.5-6 px per frame. The other kinds
    have no actors (nothing moves on its own: only the camera tells frames apart):
    ``"pan"`` a steady pan at 1-2.5 px per frame in a random direction; ``"zoom"`` a steady zoom
    in or out by 20-40 % over the shot; ``"static"`` a static camera; ``"shake"`` a handheld
    camera: a slow drift (<= 0.4 px per frame) plus a smooth random shake of about 4 px and
    0.3 degrees."""
    if camera not in CAMERAS:
        raise ValueError(f"make_shot: camera must be one of {CAMERAS}, got {camera!r}")
    if camera != "mixed":
        return _camera_shot(rng, n_frames, size, photo, noise, camera)
    cv2 = _cv2()
    W, H = size
    photos = photographs()
    src = photo if photo is not None else make_set(rng)
    sh, sw = src.shape[:2]
    # viewport scale: source pixels per output pixel; it has to fit in the source with room to move
    s_max = 0.9 * min(sw / W, sh / H)
    s0 = rng.uniform(0.35, 0.8) * s_max
    static = rng.random() < static_p
    # camera motion per shot: a pan of up to ~2 output px per frame in a random direction, a zoom of
    # up to +-20 % over the shot and a roll of up to +-2 degrees (none of them for static shots)
    zoom = 1.0 if static else float(np.exp(rng.uniform(-0.2, 0.2) * motion))
    s1 = float(np.clip(s0 * zoom, 0.2 * s_max, s_max))
    scales = s0 * (s1 / s0) ** np.linspace(0, 1, n_frames)
    s_hi = scales.max()
    half = np.array([W, H]) * s_hi / 2
    lo, hi = half + 1, np.array([sw, sh]) - half - 1
    c0 = rng.uniform(lo, hi)
    speed = 0.0 if static else rng.uniform(0.3, 2.0) * motion
    ang = rng.uniform(0, 2 * np.pi)
    v = speed * s0 * np.array([np.cos(ang), np.sin(ang)])
    c1 = np.clip(c0 + v * n_frames, lo, hi)
    roll0 = rng.uniform(-3, 3)
    roll1 = roll0 if static else roll0 + rng.uniform(-2, 2) * motion
    # lighting: a slow gain and gamma drift over the shot
    g0, g1 = rng.uniform(0.85, 1.15, 2)
    gam0, gam1 = rng.uniform(0.9, 1.1, 2)
    # actors: a crop of a photograph (an ellipse or a rectangle), from p0 to p1 (its centre, in
    # output pixels) at a constant speed of 1.5-6 px per frame, staying inside the frame
    cast = []
    for _ in range(int(rng.integers(actors[0], actors[1] + 1))) if actors[1] > 0 else ():
        aw, ah = int(rng.integers(90, 200)), int(rng.integers(90, 200))
        img = _textured_crop(rng, photos, aw, ah)
        ah, aw = img.shape[:2]
        mask = np.zeros((ah, aw), np.uint8)
        if rng.random() < 0.5:
            cv2.ellipse(mask, (aw // 2, ah // 2), (aw // 2 - 1, ah // 2 - 1), 0, 0, 360, 255, -1)
        else:
            mask[:] = 255
        a_lo, a_hi = np.array([aw / 2 + 2, ah / 2 + 2]), np.array([W - aw / 2 - 2, H - ah / 2 - 2])
        p0 = rng.uniform(a_lo, a_hi)
        step = rng.uniform(1.5, 6.0) * max(motion, 0.0)
        th = rng.uniform(0, 2 * np.pi)
        p1 = np.clip(p0 + step * (n_frames - 1) * np.array([np.cos(th), np.sin(th)]), a_lo, a_hi)
        cast.append((img, mask, p0, p1))
    centres = [(1 - t / max(n_frames - 1, 1)) * c0 + t / max(n_frames - 1, 1) * c1 for t in range(n_frames)]
    rolls = [(1 - t / max(n_frames - 1, 1)) * roll0 + t / max(n_frames - 1, 1) * roll1 for t in range(n_frames)]
    return _render(rng, src, size, centres, scales, rolls, cast, (g0, g1, gam0, gam1), noise)


def _render(rng, src, size, centres, scales, rolls, cast, light, noise) -> np.ndarray:
    """The frames of a camera path over ``src``: viewport centre (source px), scale (source px
    per output px) and roll (degrees) per frame, actors pasted on top, lighting drift and noise."""
    cv2 = _cv2()
    W, H = size
    n_frames = len(centres)
    g0, g1, gam0, gam1 = light
    if noise > 0:  # one noise field per shot, sampled at a random offset per frame (cheap, uncorrelated)
        pad = 64
        cv2.setRNGSeed(int(rng.integers(2**31)))
        noise_field = np.empty((H + pad, W + pad, 3), np.int16)
        cv2.randn(noise_field, 0, noise)
    frames = np.empty((n_frames, H, W, 3), dtype=np.uint8)
    for t in range(n_frames):
        a = t / max(n_frames - 1, 1)
        c = centres[t]
        s = scales[t]
        th = np.deg2rad(rolls[t])
        # output (x, y) -> source: centre + s * R(th) * (x - W/2, y - H/2)
        R = s * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        M = np.hstack([R, (c - R @ np.array([W / 2, H / 2]))[:, None]])
        f = cv2.warpAffine(src, M, (W, H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_REFLECT)
        for img, mask, p0, p1 in cast:  # sub-pixel placement: an affine translation of the crop
            x, y = (1 - a) * p0 + a * p1 - np.array([img.shape[1], img.shape[0]]) / 2
            T = np.array([[1.0, 0.0, x], [0.0, 1.0, y]])
            warped = cv2.warpAffine(img, T, (W, H), flags=cv2.INTER_LINEAR)
            m = cv2.warpAffine(mask, T, (W, H), flags=cv2.INTER_LINEAR)
            np.copyto(f, warped, where=m[:, :, None] >= 128)
        g = (1 - a) * g0 + a * g1
        gam = (1 - a) * gam0 + a * gam1
        lut = np.clip(255 * g * (np.arange(256) / 255.0) ** gam, 0, 255).astype(np.uint8)
        f = cv2.LUT(f, lut)
        if noise > 0:  # sensor noise / film grain
            oy, ox = rng.integers(0, pad, 2)
            f = cv2.add(f, noise_field[oy:oy + H, ox:ox + W], dtype=cv2.CV_8U)
        frames[t] = f
    return frames


def _camera_shot(rng, n_frames, size, photo, noise, camera) -> np.ndarray:
    """A shot of one camera-motion kind, without actors (see :func:`make_shot`)."""
    W, H = size
    src = photo if photo is not None else make_set(rng)
    sh, sw = src.shape[:2]
    s_max = 0.9 * min(sw / W, sh / H)
    s0 = rng.uniform(0.45, 0.7) * s_max
    t = np.arange(n_frames, dtype=np.float64)
    a = t / max(n_frames - 1, 1)
    zoom = float(np.exp(rng.choice([-1, 1]) * rng.uniform(0.2, 0.4))) if camera == "zoom" else 1.0
    scales = s0 * zoom ** a
    if scales.max() > s_max:  # a zoom out that would leave the set: start smaller
        scales *= s_max / scales.max()
    half = np.array([W, H]) * scales.max() / 2
    lo, hi = half + 1, np.array([sw, sh]) - half - 1
    speed = {"pan": rng.uniform(1.0, 2.5), "shake": rng.uniform(0.0, 0.4)}.get(camera, 0.0)  # output px/frame
    ang = rng.uniform(0, 2 * np.pi)
    v = speed * s0 * np.array([np.cos(ang), np.sin(ang)])
    span = np.abs(v) * max(n_frames - 1, 1)
    c0 = rng.uniform(lo + np.where(v < 0, span, 0), np.maximum(hi - np.where(v > 0, span, 0), lo + 1))
    centres = c0 + a[:, None] * v * max(n_frames - 1, 1)
    roll = np.full(n_frames, rng.uniform(-3, 3))
    if camera == "shake":  # a smooth random shake: noise low-passed over ~4 frames
        k = np.exp(-0.5 * (np.arange(-8, 9) / 2.0) ** 2)
        smooth = lambda x: np.convolve(x, k / np.sqrt((k ** 2).sum()))[8:8 + n_frames]  # noqa: E731
        jit = np.stack([smooth(rng.normal(0, 4.0, n_frames)) for _ in range(2)], 1)
        centres = centres + jit * s0
        roll = roll + smooth(rng.normal(0, 0.3, n_frames))
    centres = np.clip(centres, lo, hi)
    light = tuple(rng.uniform(0.85, 1.15, 2)) + tuple(rng.uniform(0.9, 1.1, 2))
    return _render(rng, src, size, list(centres), scales, list(roll), [], light, noise)


def make_video(rng: np.random.Generator, video_id: str, n_shots: int, frames_per_shot: Tuple[int, int] = (30, 80),
               size: Tuple[int, int] = (720, 405), **shot_kw) -> SyntheticVideo:
    """Shots of random lengths in [lo, hi] joined by hard cuts; every shot films a new set
    (:func:`make_set`), and consecutive sets never share their base photograph."""
    photos = photographs()
    shots, cuts, used, t, prev = [], [], [], 0, None
    for _ in range(n_shots):
        n = int(rng.integers(frames_per_shot[0], frames_per_shot[1] + 1))
        p = int(rng.integers(len(photos)))
        if p == prev:
            p = (p + 1 + int(rng.integers(len(photos) - 1))) % len(photos)
        cuts.append(t)
        shots.append(make_shot(rng, n, size, photo=make_set(rng, base=p), **shot_kw))
        used.append(p)
        t += n
        prev = p
    return SyntheticVideo(video_id, np.concatenate(shots), cuts, used)


def make_corpus(n_videos: int = 4, shots_per_video: Tuple[int, int] = (3, 5),
                frames_per_shot: Tuple[int, int] = (30, 80), size: Tuple[int, int] = (720, 405),
                seed: int = 0, **shot_kw) -> Corpus:
    """``n_videos`` videos named ``video000``, ``video001``, ... (every shot on its own set)."""
    rng = np.random.default_rng(seed)
    vids = []
    for i in range(n_videos):
        n_shots = int(rng.integers(shots_per_video[0], shots_per_video[1] + 1))
        vids.append(make_video(rng, f"video{i:03d}", n_shots, frames_per_shot, size, **shot_kw))
    return Corpus(vids, size)


def phone_photo(frame: np.ndarray, rng: np.random.Generator, strength: float = 1.0,
                out_size: Tuple[int, int] = (960, 720)) -> np.ndarray:
    """A photo of ``frame`` shown on a screen: bezel, perspective, blur, colour cast, moire, noise, JPEG."""
    cv2 = _cv2()
    H, W = frame.shape[:2]
    ow, oh = out_size
    # the screen fills 75-95 % of the photo's width, in a dark bezel / room
    fill = rng.uniform(0.75, 0.95)
    sw = fill * ow
    sh = sw * H / W
    cx, cy = ow / 2 + rng.uniform(-0.04, 0.04) * ow, oh / 2 + rng.uniform(-0.04, 0.04) * oh
    dst = np.array([[cx - sw / 2, cy - sh / 2], [cx + sw / 2, cy - sh / 2], [cx + sw / 2, cy + sh / 2],
                    [cx - sw / 2, cy + sh / 2]])
    dst += rng.uniform(-1, 1, dst.shape) * 0.06 * strength * np.array([sw, sh])
    src = np.array([[0, 0], [W, 0], [W, H], [0, H]], dtype=np.float64)
    P = cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32))
    bg = np.full((oh, ow, 3), rng.integers(10, 50), dtype=np.uint8)
    img = cv2.warpPerspective(frame, P, (ow, oh), dst=bg.copy(), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_TRANSPARENT)
    img = img.astype(np.float32)
    # moire: a faint oblique grating (screen pixels beating with the camera sensor)
    yy, xx = np.mgrid[0:oh, 0:ow].astype(np.float32)
    th = rng.uniform(0, np.pi)
    period = rng.uniform(3.0, 7.0)
    img += (6.0 * strength * np.sin(2 * np.pi * (np.cos(th) * xx + np.sin(th) * yy) / period))[:, :, None]
    # colour cast and exposure
    img *= rng.uniform(1 - 0.15 * strength, 1 + 0.15 * strength, 3).astype(np.float32)
    img += rng.uniform(-15, 15) * strength
    sigma = rng.uniform(0.5, 1.0 + 0.8 * strength)
    img = cv2.GaussianBlur(img, (0, 0), sigma)
    img += rng.normal(0, 2 + 4 * strength, img.shape).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    q = int(rng.integers(int(75 - 35 * strength), 91))
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def make_queries(corpus: Corpus, n: int = 50, seed: int = 1, strength: float = 1.0) -> List[Query]:
    """``n`` queries at random (video, frame) positions, uniformly over frames."""
    rng = np.random.default_rng(seed)
    sizes = np.array([len(v.frames) for v in corpus.videos])
    picks = rng.choice(sizes.sum(), size=n, replace=n > sizes.sum())
    starts = np.concatenate([[0], np.cumsum(sizes)])
    out = []
    for p in picks:
        vi = int(np.searchsorted(starts, p, side="right") - 1)
        v = corpus.videos[vi]
        f = int(p - starts[vi])
        out.append(Query(phone_photo(v.frames[f], rng, strength), v.video_id, int(v.shot_of_frame[f]), f))
    return out


def write_video(path: str, frames: np.ndarray, fps: float = 25.0) -> str:
    """Writes BGR frames with OpenCV (codec from the extension: .avi -> MJPG, .mp4 -> mp4v)."""
    cv2 = _cv2()
    ext = os.path.splitext(path)[1].lower()
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if ext == ".avi" else "mp4v"))
    H, W = frames.shape[1:3]
    w = cv2.VideoWriter(path, fourcc, fps, (W, H))
    if not w.isOpened():
        raise OSError(f"write_video: OpenCV cannot open a writer for {path!r}")
    try:
        for f in frames:
            w.write(np.ascontiguousarray(f))
    finally:
        w.release()
    return path
