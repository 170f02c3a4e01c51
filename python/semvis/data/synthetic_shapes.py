"""A second, independent family of synthetic captioned scenes, written as real data sets are laid out.

:mod:`semvis.data.synthetic_scenes` is the family the semantic recipe was developed on (square
64-96 px images, shapes with textures on smooth backgrounds, lower-case VG-like phrases). This
module is a different generator, kept apart on purpose so that a recipe tuned on one family can
be checked on the other:

* other objects: rings, bars, arrows, hearts, crescents, hexagons and ellipses, filled solid,
  hollow (outline only) or speckled, in three sizes (tiny, medium, big);
* another palette (crimson, teal, navy, lime, magenta, gold, black) and **textured** backgrounds
  (wood grain, grass, brick, sand, water, tiles);
* other relations (on top of, underneath, beside, near, far from, in the corner);
* **non-square images of several sizes** (default: landscape or portrait 427 x 336, 480 x 360,
  400 x 300 per image, as photographs are);
* other caption styles: sentence-case COCO-like captions with punctuation ("There is a big teal
  ring on top of a hollow crimson heart.") and terse VG-like region descriptions ("teal ring",
  "heart is crimson", "ring above heart", "wooden floor").

Scenes cluster by a *setting* (each prefers two objects, two colours and a background), so that
caption similarity says something that the pixels show.

:meth:`SyntheticShapes.write_visual_genome` writes ``image_data.json``,
``region_descriptions.json`` and JPEG files ``VG_100K/<image_id>.jpg`` / ``VG_100K_2/<image_id>.jpg``
(non-contiguous ids, each image's ``url`` naming its folder, as in Visual Genome v1.2);
:meth:`SyntheticShapes.write_coco` writes ``annotations/captions_<split>.json`` and
``<split>/<file_name>.jpg`` (COCO 2017 names ``000000xxxxxx.jpg`` or 2014 names
``COCO_train2014_000000xxxxxx.jpg``), as COCO is distributed.

Everything is a pure function of ``(seed, index)``.

Example::

    >>> from semvis.data.synthetic_shapes import SyntheticShapes
    >>> ds = SyntheticShapes(10, seed=1)
    >>> s = ds[0]
    >>> s.image.shape[2], s.image.dtype, len(s.captions)
    (3, dtype('uint8'), 5)
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .synthetic_scenes import _check_int, _pick

__all__ = ["OBJECTS", "PALETTE", "FILLS", "SCALES", "GROUNDS", "IMAGE_SIZES", "ShapeItem", "ShapeRegion",
           "ShapeScene", "SyntheticShapes", "render_shapes", "save_jpeg"]

OBJECTS: Tuple[str, ...] = ("ring", "bar", "arrow", "heart", "crescent", "hexagon", "ellipse")
FILLS: Tuple[str, ...] = ("solid", "hollow", "speckled")
SCALES: Tuple[str, ...] = ("tiny", "medium", "big")
PALETTE: Dict[str, Tuple[float, float, float]] = {
    "crimson": (0.75, 0.05, 0.20),
    "teal": (0.00, 0.55, 0.55),
    "navy": (0.05, 0.10, 0.45),
    "lime": (0.60, 0.90, 0.10),
    "magenta": (0.90, 0.10, 0.75),
    "gold": (0.95, 0.75, 0.15),
    "black": (0.05, 0.05, 0.05),
}
GROUNDS: Tuple[str, ...] = ("wood", "grass", "brick", "sand", "water", "tiles")
#: (width, height) of the images when ``image_size`` is not fixed: photograph-like, non-square
IMAGE_SIZES: Tuple[Tuple[int, int], ...] = ((427, 336), (336, 427), (480, 360), (400, 300))

_OBJECT_WORDS = {
    "ring": ("ring", "ring", "hoop", "donut"),
    "bar": ("bar", "bar", "rod", "stick"),
    "arrow": ("arrow", "arrow", "pointer"),
    "heart": ("heart", "heart", "love heart"),
    "crescent": ("crescent", "crescent", "moon"),
    "hexagon": ("hexagon", "hexagon", "honeycomb cell"),
    "ellipse": ("ellipse", "oval", "egg"),
}
_OBJECT_PLURAL = {"ring": "rings", "bar": "bars", "arrow": "arrows", "heart": "hearts", "crescent": "crescents",
                  "hexagon": "hexagons", "ellipse": "ovals"}
_FILL_WORDS = {"solid": ("solid", "filled", ""), "hollow": ("hollow", "outlined", "empty"),
               "speckled": ("speckled", "spotty", "freckled")}
_SCALE_WORDS = {"tiny": ("tiny", "little", "small"), "medium": ("", "medium", "mid-sized"),
                "big": ("big", "huge", "giant")}
_GROUND_WORDS = {
    "wood": ("wooden floor", "wood planks", "wooden table"),
    "grass": ("grass", "lawn", "green grass"),
    "brick": ("brick wall", "bricks", "red brick wall"),
    "sand": ("sand", "sandy beach", "beach sand"),
    "water": ("water", "rippled water", "pond"),
    "tiles": ("tiles", "tiled floor", "bathroom tiles"),
}
_GROUND_COLOURS = {
    "wood": ((0.55, 0.36, 0.18), (0.38, 0.22, 0.10)),
    "grass": ((0.22, 0.55, 0.15), (0.10, 0.35, 0.08)),
    "brick": ((0.62, 0.25, 0.18), (0.80, 0.78, 0.72)),
    "sand": ((0.88, 0.80, 0.58), (0.70, 0.62, 0.42)),
    "water": ((0.20, 0.45, 0.75), (0.55, 0.75, 0.92)),
    "tiles": ((0.85, 0.88, 0.90), (0.45, 0.50, 0.55)),
}
_RELATION_WORDS = {
    "above": ("on top of", "above", "over"),
    "below": ("underneath", "below", "under"),
    "beside": ("beside", "next to", "alongside"),
    "near": ("near", "close to", "by"),
    "far": ("far from", "away from", "distant from"),
}
_COUNT = ("no", "one", "two", "three", "four", "five")


@dataclass(frozen=True)
class ShapeItem:
    """One object: kind, colour, fill, scale and box (x0, y0, x1, y1), x1/y1 exclusive."""

    item_id: int
    kind: str
    colour: str
    fill: str
    scale: str
    box: Tuple[int, int, int, int]


@dataclass(frozen=True)
class ShapeRegion:
    """A region description: phrase and box (x, y, width, height) in pixels."""

    region_id: int
    phrase: str
    x: int
    y: int
    width: int
    height: int


@dataclass
class ShapeScene:
    """A rendered scene: ``image`` uint8 [H, W, 3], items, region descriptions, captions,
    ground (background) and setting index."""

    index: int
    image: np.ndarray
    items: List[ShapeItem]
    regions: List[ShapeRegion]
    captions: List[str]
    ground: str
    setting: int


# ------------------------------------------------------------------------------------------
# rendering


def _mask(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership of (u, v) in [-1, 1]^2 (v down) of each object outline."""
    if kind == "ring":
        r2 = u * u + v * v
        return (r2 <= 0.95) & (r2 >= 0.35)
    if kind == "bar":
        return (np.abs(u) <= 0.95) & (np.abs(v) <= 0.32)
    if kind == "arrow":
        shaft = (u <= 0.15) & (u >= -0.95) & (np.abs(v) <= 0.22)
        head = (u > 0.15) & (u <= 0.95) & (np.abs(v) <= (0.95 - u) * 1.1)
        return shaft | head
    if kind == "heart":
        x, y = u * 1.15, -v * 1.15 + 0.15
        return (x * x + y * y - 1) ** 3 - x * x * y ** 3 <= 0
    if kind == "crescent":
        return (u * u + v * v <= 0.92) & ((u - 0.45) ** 2 + (v + 0.1) ** 2 >= 0.5)
    if kind == "hexagon":
        au, av = np.abs(u), np.abs(v)
        return (av <= 0.82) & (au * 0.866 + av * 0.5 <= 0.82)
    if kind == "ellipse":
        return u * u / 0.92 + v * v / 0.42 <= 1
    raise ValueError(f"unknown object {kind!r}; expected one of {OBJECTS}")


def _ground(rng: np.random.Generator, h: int, w: int, ground: str) -> np.ndarray:
    """A textured background (wood grain, grass, brick, sand, water, tiles), float32 [H, W, 3]."""
    a, b = (np.asarray(c, np.float32) for c in _GROUND_COLOURS[ground])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ph = float(rng.uniform(0, 2 * np.pi))
    if ground == "wood":
        t = 0.5 + 0.5 * np.sin(yy * 0.21 + 2.5 * np.sin(xx * 0.013 + ph) + ph)
    elif ground == "grass":
        t = rng.random((h, w), dtype=np.float32)
        t = np.clip(t * 0.6 + 0.4 * (0.5 + 0.5 * np.sin(xx * 0.9 + yy * 0.05)), 0, 1)
    elif ground == "brick":
        row = np.floor(yy / 22.0)
        off = (row % 2) * 24.0
        mortar = (np.mod(yy, 22.0) < 3) | (np.mod(xx + off, 48.0) < 3)
        t = mortar.astype(np.float32)
    elif ground == "sand":
        t = (rng.random((h, w), dtype=np.float32) < 0.25).astype(np.float32) * 0.8
    elif ground == "water":
        t = 0.5 + 0.5 * np.sin(xx * 0.08 + 3.0 * np.sin(yy * 0.05 + ph))
    elif ground == "tiles":
        t = ((np.mod(xx, 40.0) < 2) | (np.mod(yy, 40.0) < 2)).astype(np.float32)
    else:
        raise ValueError(f"unknown ground {ground!r}; expected one of {GROUNDS}")
    img = a * (1 - t[..., None]) + b * t[..., None]
    img += rng.normal(0.0, 0.025, (h, w, 3)).astype(np.float32)
    return img


def render_shapes(items: Sequence[ShapeItem], height: int, width: int, ground: str,
                  rng: np.random.Generator, supersample: int = 2) -> np.ndarray:
    """Renders the items (later on top) over a textured ground; uint8 [H, W, 3]."""
    img = _ground(rng, height, width, ground)
    s = supersample
    for o in items:
        x0, y0, x1, y1 = o.box
        bw, bh = x1 - x0, y1 - y0
        if bw <= 0 or bh <= 0:
            continue
        xs = (np.arange(bw * s, dtype=np.float32) + 0.5) / (bw * s) * 2 - 1
        ys = (np.arange(bh * s, dtype=np.float32) + 0.5) / (bh * s) * 2 - 1
        v, u = np.meshgrid(ys, xs, indexing="ij")
        inside = _mask(o.kind, u, v)
        if o.fill == "hollow":  # keep a band along the outline only
            shrink = _mask(o.kind, u / 0.72, v / 0.72)
            inside = inside & ~shrink
        inside = inside.astype(np.float32)
        col = np.broadcast_to(np.asarray(PALETTE[o.colour], np.float32), inside.shape + (3,)).copy()
        if o.fill == "speckled":
            dots = rng.random(inside.shape, dtype=np.float32) < 0.18
            col[dots] = 1.0 - col[dots] * 0.5
        alpha = inside.reshape(bh, s, bw, s).mean(axis=(1, 3))
        rgb = (col * inside[..., None]).reshape(bh, s, bw, s, 3).sum(axis=(1, 3))
        rgb = rgb / np.maximum(alpha * s * s, 1e-6)[..., None]
        al = alpha[..., None]
        img[y0:y1, x0:x1] = al * rgb + (1 - al) * img[y0:y1, x0:x1]
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_jpeg(image: np.ndarray, path: Union[str, os.PathLike], quality: int = 90) -> None:
    """Writes a uint8 [H, W, 3] RGB array as a JPEG (Pillow, else OpenCV)."""
    try:
        from PIL import Image

        Image.fromarray(image, "RGB").save(path, format="JPEG", quality=quality)
        return
    except ImportError:
        pass
    try:
        import cv2
    except ImportError:
        raise ImportError("writing JPEG files needs Pillow or opencv-python-headless") from None
    if not cv2.imwrite(str(path), np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality]):
        raise OSError(f"could not write {path}")


# ------------------------------------------------------------------------------------------
# language


def _noun_phrase(rng: random.Random, o: ShapeItem) -> str:
    """A noun phrase with a random subset of the item's attributes (no article)."""
    words = []
    if rng.random() < 0.45:
        words.append(_pick(rng, _SCALE_WORDS[o.scale]))
    if rng.random() < 0.5:
        words.append(_pick(rng, _FILL_WORDS[o.fill]))
    if rng.random() < 0.85:
        words.append(o.colour)
    words.append(_pick(rng, _OBJECT_WORDS[o.kind]))
    return " ".join(w for w in words if w)


def _with_article(np_: str) -> str:
    return ("an " if np_[0] in "aeiou" else "a ") + np_


def _relation(a: ShapeItem, b: ShapeItem, w: int, h: int) -> str:
    ax, ay = (a.box[0] + a.box[2]) / 2, (a.box[1] + a.box[3]) / 2
    bx, by = (b.box[0] + b.box[2]) / 2, (b.box[1] + b.box[3]) / 2
    dx, dy = (ax - bx) / w, (ay - by) / h
    d = (dx * dx + dy * dy) ** 0.5
    if d > 0.6:
        return "far"
    if abs(dy) > abs(dx) * 1.3:
        return "above" if dy < 0 else "below"
    return "beside" if d > 0.3 else "near"


def _corner(o: ShapeItem, w: int, h: int) -> Optional[str]:
    cx, cy = (o.box[0] + o.box[2]) / 2 / w, (o.box[1] + o.box[3]) / 2 / h
    if 0.3 < cx < 0.7 or 0.3 < cy < 0.7:
        return None
    return ("top" if cy < 0.5 else "bottom") + " " + ("left" if cx < 0.5 else "right")


# ------------------------------------------------------------------------------------------
# the data set


class SyntheticShapes:
    """A seeded, lazily rendered set of captioned scenes of the second family (module docstring).

    Args:
        n (int): number of images.
        image_size ((width, height), optional): one size for every image (each side >= 32);
            default: every image draws one of :data:`IMAGE_SIZES` (non-square, 300-480 px).
        seed (int): everything is a function of (seed, index).
        min_items, max_items (int): objects per image (inclusive, 1..6).
        captions_per_image (int): sentence captions per image (COCO-like, default 5).
        regions_per_image ((int, int)): inclusive range of region descriptions per image (VG-like).
        settings (int): number of scene settings (0: attributes uniform).
        setting_strength (float in [0, 1]): probability that an attribute follows the setting.
        name_ground (bool): captions and region descriptions name the background (default); with
            False the texture is a distractor that no text mentions and no setting chooses, so
            that what two captions share is only what the objects show.
    """

    def __init__(self, n: int, image_size: Optional[Tuple[int, int]] = None, seed: int = 0,
                 min_items: int = 1, max_items: int = 3, captions_per_image: int = 5,
                 regions_per_image: Tuple[int, int] = (3, 5), settings: int = 5, setting_strength: float = 0.75,
                 name_ground: bool = True):
        self.n = _check_int("n", n, 0)
        if image_size is not None:
            if not (isinstance(image_size, (tuple, list)) and len(image_size) == 2):
                raise TypeError(f"image_size must be (width, height) or None, got {image_size!r}")
            image_size = (_check_int("image_size[0]", image_size[0], 32), _check_int("image_size[1]", image_size[1], 32))
        self.image_size = image_size
        self.seed = _check_int("seed", seed, 0)
        self.min_items = _check_int("min_items", min_items, 1)
        self.max_items = _check_int("max_items", max_items, self.min_items)
        if self.max_items > 6:
            raise ValueError(f"max_items must be <= 6, got {max_items}")
        self.captions_per_image = _check_int("captions_per_image", captions_per_image, 0)
        if not (isinstance(regions_per_image, (tuple, list)) and len(regions_per_image) == 2):
            raise TypeError(f"regions_per_image must be (min, max), got {regions_per_image!r}")
        lo = _check_int("regions_per_image[0]", regions_per_image[0], 0)
        hi = _check_int("regions_per_image[1]", regions_per_image[1], lo)
        self.regions_per_image = (lo, hi)
        self.settings = _check_int("settings", settings, 0)
        if isinstance(setting_strength, bool) or not (0.0 <= float(setting_strength) <= 1.0):
            raise ValueError(f"setting_strength must be in [0, 1], got {setting_strength!r}")
        self.setting_strength = float(setting_strength)
        if not isinstance(name_ground, bool):
            raise TypeError(f"name_ground must be a bool, got {type(name_ground).__name__}")
        self.name_ground = name_ground
        trng = np.random.default_rng([self.seed, 0x5A9E])
        self._settings = [
            {"kind": [OBJECTS[int(i)] for i in trng.choice(len(OBJECTS), 2, replace=False)],
             "colour": [tuple(PALETTE)[int(i)] for i in trng.choice(len(PALETTE), 2, replace=False)],
             "ground": [GROUNDS[int(trng.integers(len(GROUNDS)))]],
             "fill": [FILLS[int(trng.integers(len(FILLS)))]]}
            for _ in range(self.settings)
        ]

    def __len__(self) -> int:
        return self.n

    def _check_index(self, index) -> int:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        if index < 0:
            index += self.n
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} scenes")
        return int(index)

    def _attr(self, rng: random.Random, setting: Optional[dict], key: str, values: Sequence[str]) -> str:
        if setting is not None and rng.random() < self.setting_strength:
            return _pick(rng, setting[key])
        return _pick(rng, tuple(values))

    def size(self, index: int) -> Tuple[int, int]:
        """(width, height) of image ``index``."""
        index = self._check_index(index)
        if self.image_size is not None:
            return self.image_size
        return IMAGE_SIZES[random.Random(f"semvis.shapes.size/{self.seed}/{index}").randrange(len(IMAGE_SIZES))]

    def _graph(self, index: int):
        w, h = self.size(index)
        rng = random.Random(f"semvis.shapes/{self.seed}/{index}")
        sid = rng.randrange(self.settings) if self.settings else -1
        setting = self._settings[sid] if self.settings else None
        ground = self._attr(rng, setting if self.name_ground else None, "ground", GROUNDS)
        items: List[ShapeItem] = []
        for _ in range(rng.randint(self.min_items, self.max_items)):
            scale = _pick(rng, SCALES)
            frac = {"tiny": (0.14, 0.2), "medium": (0.24, 0.32), "big": (0.36, 0.46)}[scale]
            for _attempt in range(40):
                side = int(round(rng.uniform(*frac) * min(w, h)))
                aspect = rng.uniform(0.85, 1.3)
                bw, bh = max(8, int(side * aspect)), max(8, side)
                x0, y0 = rng.randint(0, w - bw), rng.randint(0, h - bh)
                box = (x0, y0, x0 + bw, y0 + bh)
                if all(_iou_small(box, o.box) < 0.1 for o in items):
                    break
            else:
                continue
            items.append(ShapeItem(len(items), self._attr(rng, setting, "kind", OBJECTS),
                                   self._attr(rng, setting, "colour", PALETTE), self._attr(rng, setting, "fill", FILLS),
                                   scale, box))
        captions = [self._caption(rng, items, ground, w, h) for _ in range(self.captions_per_image)]
        n_reg = rng.randint(*self.regions_per_image)
        regions = [self._region(rng, items, ground, w, h, index * 100 + j) for j in range(n_reg)]
        return w, h, sid, ground, items, regions, captions

    def _caption(self, rng: random.Random, items: List[ShapeItem], ground: str, w: int, h: int) -> str:
        g = _pick(rng, _GROUND_WORDS[ground])
        k = len(items)
        first = items[rng.randrange(k)]
        t = rng.randrange(5)
        if t == 0 and k > 1:
            other = _pick(rng, [o for o in items if o is not first])
            rel = _pick(rng, _RELATION_WORDS[_relation(first, other, w, h)])
            s = f"There is {_with_article(_noun_phrase(rng, first))} {rel} {_with_article(_noun_phrase(rng, other))}."
        elif t == 1:
            nps = [_with_article(_noun_phrase(rng, o)) for o in items]
            body = nps[0] if k == 1 else ", ".join(nps[:-1]) + " and " + nps[-1]
            s = f"{body} lying on {_pick(rng, ('a', 'the'))} {g}." if self.name_ground else f"{body} in one picture."
        elif t == 2:
            kinds = sorted({o.kind for o in items})
            what = " and ".join(_OBJECT_PLURAL[x] if sum(o.kind == x for o in items) > 1 else _OBJECT_WORDS[x][0]
                                for x in kinds)
            where = f" on {g}" if self.name_ground else ""
            s = f"{_COUNT[min(k, 5)].capitalize()} object{'s' if k != 1 else ''}{where}: {what}."
        elif t == 3:
            corner = _corner(first, w, h)
            where = f" in the {corner} corner" if corner else ""
            s = f"This photo shows {_with_article(_noun_phrase(rng, first))}{where}."
        elif self.name_ground:
            s = f"Close-up of {_with_article(_noun_phrase(rng, first))} against {_pick(rng, ('a', 'the'))} {g}."
        else:
            s = f"Close-up of {_with_article(_noun_phrase(rng, first))}."
        return s[0].upper() + s[1:]

    def _region(self, rng: random.Random, items: List[ShapeItem], ground: str, w: int, h: int, rid: int
                ) -> ShapeRegion:
        o = items[rng.randrange(len(items))]
        t = rng.randrange(4)
        box = o.box
        if t == 0:
            phrase = _noun_phrase(rng, o)
        elif t == 1:
            phrase = f"{_pick(rng, _OBJECT_WORDS[o.kind])} is {o.colour}"
        elif t == 2 and len(items) > 1:
            b = _pick(rng, [x for x in items if x is not o])
            phrase = f"{_OBJECT_WORDS[o.kind][0]} {_pick(rng, _RELATION_WORDS[_relation(o, b, w, h)])} " \
                     f"{_OBJECT_WORDS[b.kind][0]}"
            box = (min(o.box[0], b.box[0]), min(o.box[1], b.box[1]), max(o.box[2], b.box[2]), max(o.box[3], b.box[3]))
        elif self.name_ground:
            phrase = _pick(rng, _GROUND_WORDS[ground])
            box = (0, 0, w, h)
        else:
            phrase = f"{o.colour} {_pick(rng, _OBJECT_WORDS[o.kind])}"
        return ShapeRegion(rid, phrase, int(box[0]), int(box[1]), int(box[2] - box[0]), int(box[3] - box[1]))

    def __getitem__(self, index: int) -> ShapeScene:
        index = self._check_index(index)
        w, h, sid, ground, items, regions, captions = self._graph(index)
        image = render_shapes(items, h, w, ground, np.random.default_rng([self.seed, 3, index]))
        return ShapeScene(index, image, items, regions, captions, ground, sid)

    def annotations(self, index: int) -> Tuple[List[ShapeItem], List[ShapeRegion], List[str]]:
        """(items, regions, captions) of image ``index`` without rendering it."""
        _, _, _, _, items, regions, captions = self._graph(self._check_index(index))
        return items, regions, captions

    def setting(self, index: int) -> int:
        return self._graph(self._check_index(index))[2]

    # ------------------------------------------------------------------ export
    def image_id(self, index: int) -> int:
        """The data-set id of image ``index``: non-contiguous, as in real data sets."""
        return 1 + 3 * int(index) + (int(index) * 7919 + self.seed) % 3

    def write_visual_genome(self, root: Union[str, os.PathLike], indices: Optional[Sequence[int]] = None,
                            captions_as_regions: bool = True, second_folder_every: int = 3,
                            quality: int = 90) -> None:
        """Writes a Visual Genome v1.2 layout under ``root``: ``image_data.json`` (``image_id``,
        ``url``, ``width``, ``height``, ``coco_id``, ``flickr_id``), ``region_descriptions.json``
        (``[{"regions": [{"region_id", "width", "height", "image_id", "phrase", "y", "x"}], "id"}]``)
        and the JPEGs ``VG_100K/<image_id>.jpg``, every ``second_folder_every``-th image in
        ``VG_100K_2`` as VG splits its images over two folders (0: one folder). The image's
        ``url`` names its folder. With ``captions_as_regions`` the sentence captions are written as
        whole-image regions after the region descriptions."""
        root = os.fspath(root)
        idx = range(self.n) if indices is None else [self._check_index(i) for i in indices]
        meta, regs = [], []
        for i in idx:
            sc = self[i]
            iid = self.image_id(i)
            folder = "VG_100K_2" if second_folder_every and i % second_folder_every == second_folder_every - 1 \
                else "VG_100K"
            os.makedirs(os.path.join(root, folder), exist_ok=True)
            save_jpeg(sc.image, os.path.join(root, folder, f"{iid}.jpg"), quality)
            h, w = sc.image.shape[:2]
            meta.append({"width": w, "url": f"https://cs.stanford.edu/people/rak248/{folder}/{iid}.jpg", "height": h,
                         "image_id": iid, "coco_id": None, "flickr_id": None})
            rl = [{"region_id": iid * 1000 + j, "width": r.width, "height": r.height, "image_id": iid,
                   "phrase": r.phrase, "y": r.y, "x": r.x} for j, r in enumerate(sc.regions)]
            if captions_as_regions:
                rl += [{"region_id": iid * 1000 + len(rl) + j, "width": w, "height": h, "image_id": iid,
                        "phrase": c, "y": 0, "x": 0} for j, c in enumerate(sc.captions)]
            regs.append({"regions": rl, "id": iid})
        with open(os.path.join(root, "image_data.json"), "w") as f:
            json.dump(meta, f)
        with open(os.path.join(root, "region_descriptions.json"), "w") as f:
            json.dump(regs, f)

    def write_coco(self, root: Union[str, os.PathLike], indices: Optional[Sequence[int]] = None,
                   year: int = 2017, val_every: int = 6, quality: int = 90) -> List[str]:
        """Writes a COCO captions layout under ``root``: ``annotations/captions_{train,val}<year>.json``
        and ``train<year>/``, ``val<year>/`` JPEGs (2017 names ``000000xxxxxx.jpg``, 2014 names
        ``COCO_train2014_000000xxxxxx.jpg``); every ``val_every``-th image goes to val (0: none).
        Returns the paths of the captions files written."""
        if year not in (2014, 2017):
            raise ValueError(f"year must be 2014 or 2017, got {year!r}")
        root = os.fspath(root)
        idx = range(self.n) if indices is None else [self._check_index(i) for i in indices]
        splits: Dict[str, Tuple[list, list]] = {}
        for i in idx:
            sc = self[i]
            iid = self.image_id(i)
            split = f"val{year}" if val_every and i % val_every == val_every - 1 else f"train{year}"
            name = f"{iid:012d}.jpg" if year == 2017 else f"COCO_{split}_{iid:012d}.jpg"
            os.makedirs(os.path.join(root, split), exist_ok=True)
            save_jpeg(sc.image, os.path.join(root, split, name), quality)
            h, w = sc.image.shape[:2]
            ims, anns = splits.setdefault(split, ([], []))
            ims.append({"license": 1, "file_name": name, "coco_url": f"http://images.cocodataset.org/{split}/{name}",
                        "height": h, "width": w, "date_captured": "2013-11-14 16:28:13",
                        "flickr_url": "", "id": iid})
            anns.extend({"image_id": iid, "id": iid * 10 + j, "caption": c} for j, c in enumerate(sc.captions))
        os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
        out = []
        for split, (ims, anns) in sorted(splits.items()):
            p = os.path.join(root, "annotations", f"captions_{split}.json")
            with open(p, "w") as f:
                json.dump({"info": {"description": "semvis synthetic shapes", "year": year, "seed": self.seed},
                           "licenses": [{"id": 1, "name": "CC0", "url": ""}], "images": ims, "annotations": anns}, f)
            out.append(p)
        return out


def _iou_small(a, b) -> float:
    """Intersection over the smaller box's area."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy / max(small, 1)
