"""Seeded synthetic captioned scenes: the stand-in for Visual Genome / COCO on 2 CPU cores.

Every image holds a few objects (shape, colour, texture, size, position) on a textured background.
From that scene graph the generator writes

* region descriptions like Visual Genome's (``"a red circle left of a blue square"``,
  ``"a large striped triangle"``, ``"two dotted shapes"``), each with its box, and
* image-level captions like COCO's (``"a red circle and a striped blue square on a grey
  background"``),

and keeps every object box for localization (pointing game, grounding).

Textures are **procedural** (plain, striped, dotted, checkered, wavy): no photograph package is
installed in the reference environment and nothing is downloaded, so no real photographs are
used. Backgrounds are low-frequency colour noise.

Scenes are a pure function of ``(seed, index)``: ``SyntheticScenes(n, seed=s)[i]`` is the same
on every machine and in every dataloader worker, and scenes are rendered lazily on access, so a
``torch.utils.data.DataLoader`` renders ("decodes") the images in its workers.

Scene *themes* make captions cluster like real photographs do (kitchens hold pans, beaches hold
boats): each image draws one of ``themes`` themes, and each theme prefers two shapes, two colours
and one texture (with probability ``theme_strength`` per attribute). Caption similarity is then
informative of the theme, but only through the rendered objects, which a visual model must learn
to read.

Example::

    >>> from semvis.data.synthetic_scenes import SyntheticScenes
    >>> ds = SyntheticScenes(100, image_size=96, seed=0)
    >>> s = ds[3]
    >>> s.image.shape, s.image.dtype
    ((96, 96, 3), dtype('uint8'))
    >>> s.regions[0].phrase   # doctest: +SKIP
    'a large striped red triangle'
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "SHAPES", "COLOURS", "TEXTURES", "SIZES", "BACKGROUNDS",
    "SceneObject", "Region", "Scene", "SyntheticScenes", "render_scene",
]

SHAPES: Tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "star")
TEXTURES: Tuple[str, ...] = ("plain", "striped", "dotted", "checkered", "wavy")
SIZES: Tuple[str, ...] = ("small", "large")
# name -> RGB in [0, 1]
COLOURS: Dict[str, Tuple[float, float, float]] = {
    "red": (0.86, 0.12, 0.12),
    "green": (0.15, 0.70, 0.20),
    "blue": (0.15, 0.30, 0.90),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.55, 0.20, 0.70),
    "orange": (0.98, 0.55, 0.10),
    "white": (0.97, 0.97, 0.97),
}
BACKGROUNDS: Dict[str, Tuple[float, float, float]] = {
    "grey": (0.45, 0.45, 0.45),
    "brown": (0.42, 0.30, 0.20),
    "dark": (0.12, 0.12, 0.14),
    "beige": (0.78, 0.72, 0.58),
}
# words a caption may use for an attribute value (annotators do not agree on words)
_SHAPE_WORDS = {
    "circle": ("circle", "circle", "disc", "round shape"),
    "square": ("square", "square", "box", "block"),
    "triangle": ("triangle", "triangle", "triangular shape"),
    "diamond": ("diamond", "diamond", "rhombus"),
    "cross": ("cross", "cross", "plus sign"),
    "star": ("star", "star", "flower shape"),
}
_PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "diamond": "diamonds",
           "cross": "crosses", "star": "stars", "shape": "shapes"}
_TEXTURE_WORDS = {
    "plain": ("plain", "solid", ""),
    "striped": ("striped", "stripy", "with stripes"),
    "dotted": ("dotted", "spotted", "with dots"),
    "checkered": ("checkered", "chequered", "with a checkerboard pattern"),
    "wavy": ("wavy", "wavy", "with wavy lines"),
}
_RELATIONS = {
    "left": ("left of", "to the left of", "beside"),
    "right": ("right of", "to the right of", "next to"),
    "above": ("above", "on top of", "over"),
    "below": ("below", "under", "beneath"),
}
_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight")


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene. ``box`` is (x0, y0, x1, y1) in pixels, x1/y1 exclusive."""

    object_id: int
    shape: str
    colour: str
    texture: str
    size: str
    box: Tuple[int, int, int, int]


@dataclass(frozen=True)
class Region:
    """A region description as in Visual Genome: a phrase and its box ``(x, y, width, height)``
    in pixels; ``object_ids`` are the scene objects the phrase talks about."""

    region_id: int
    phrase: str
    x: int
    y: int
    width: int
    height: int
    object_ids: Tuple[int, ...]


@dataclass
class Scene:
    """A rendered scene: ``image`` (uint8 [H, W, 3]), its objects, region descriptions
    (VG-like), image captions (COCO-like), background name and theme index."""

    image_id: int
    image: np.ndarray
    objects: List[SceneObject]
    regions: List[Region]
    captions: List[str]
    background: str
    theme: int

    @property
    def region_phrases(self) -> List[str]:
        return [r.phrase for r in self.regions]

    def object_boxes(self) -> np.ndarray:
        """Object boxes as an int64 array [n_objects, 4] (x0, y0, x1, y1)."""
        return np.asarray([o.box for o in self.objects], dtype=np.int64).reshape(-1, 4)

    def tensor(self):
        """The image as a uint8 torch tensor [3, H, W]."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(self.image.transpose(2, 0, 1)))


# ------------------------------------------------------------------------------------------
# rendering


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership of points (u, v) in [-1, 1]^2 (v pointing down) for each shape."""
    if shape == "circle":
        return u * u + v * v <= 0.96
    if shape == "square":
        return (np.abs(u) <= 0.85) & (np.abs(v) <= 0.85)
    if shape == "triangle":  # apex up
        return (v <= 0.85) & (np.abs(u) <= (v + 0.95) * 0.5)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 0.98
    if shape == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95))
    if shape == "star":
        r = np.sqrt(u * u + v * v)
        t = np.arctan2(v, u) + np.pi / 2
        return r <= 0.42 + 0.53 * np.abs(np.cos(2.5 * t)) ** 1.5
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _pattern(texture: str, u: np.ndarray, v: np.ndarray, freq: float, phase: float) -> np.ndarray:
    """1 where the object's colour shows, 0 where the darker second tone shows."""
    if texture == "plain":
        return np.ones_like(u)
    if texture == "striped":
        return (np.sin(freq * (u + v) + phase) > 0).astype(u.dtype)
    if texture == "dotted":
        fu = np.mod(u * freq / np.pi + phase, 1.0) - 0.5
        fv = np.mod(v * freq / np.pi + phase, 1.0) - 0.5
        return (fu * fu + fv * fv > 0.06).astype(u.dtype)
    if texture == "checkered":
        return ((np.floor(u * freq / np.pi + phase) + np.floor(v * freq / np.pi + phase)) % 2 == 0).astype(u.dtype)
    if texture == "wavy":
        return (np.sin(freq * v + 1.6 * np.sin(freq * 0.6 * u) + phase) > 0).astype(u.dtype)
    raise ValueError(f"unknown texture {texture!r}; expected one of {TEXTURES}")


def _background(rng: np.random.Generator, h: int, w: int, base: Tuple[float, float, float]) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[:] = np.asarray(base, np.float32)
    for _ in range(3):  # low-frequency colour noise
        fx, fy = rng.uniform(0.5, 3.0, 2) * 2 * np.pi / max(h, w)
        ph = rng.uniform(0, 2 * np.pi)
        amp = rng.uniform(-0.06, 0.06, 3).astype(np.float32)
        img += np.sin(fx * xx + fy * yy + ph)[..., None] * amp
    img += rng.normal(0.0, 0.02, (h, w, 3)).astype(np.float32)
    return img


def render_scene(objects: Sequence[SceneObject], height: int, width: int, background: str,
                 rng: np.random.Generator, supersample: int = 3) -> np.ndarray:
    """Renders objects (in order: later ones on top) over a background; returns uint8 [H, W, 3].

    Edges are anti-aliased by ``supersample`` x ``supersample`` sampling inside each box.
    """
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; expected one of {tuple(BACKGROUNDS)}")
    img = _background(rng, height, width, BACKGROUNDS[background])
    s = supersample
    for o in objects:
        x0, y0, x1, y1 = o.box
        bw, bh = x1 - x0, y1 - y0
        if bw <= 0 or bh <= 0:
            continue
        # sample centres of the s x s sub-pixels, mapped to [-1, 1]
        xs = (np.arange(bw * s, dtype=np.float32) + 0.5) / (bw * s) * 2 - 1
        ys = (np.arange(bh * s, dtype=np.float32) + 0.5) / (bh * s) * 2 - 1
        v, u = np.meshgrid(ys, xs, indexing="ij")
        inside = _inside(o.shape, u, v).astype(np.float32)
        freq = float(rng.uniform(9.0, 13.0))
        pat = _pattern(o.texture, u, v, freq, float(rng.uniform(0, 2 * np.pi)))
        col = np.asarray(COLOURS[o.colour], np.float32)
        second = col * 0.3 if o.colour != "white" else np.asarray((0.25, 0.25, 0.25), np.float32)
        rgb = pat[..., None] * col + (1 - pat[..., None]) * second
        # box-filter the sub-pixels
        alpha = inside.reshape(bh, s, bw, s).mean(axis=(1, 3))
        rgb = (rgb * inside[..., None]).reshape(bh, s, bw, s, 3).sum(axis=(1, 3))
        rgb = rgb / np.maximum(alpha * s * s, 1e-6)[..., None]
        a = alpha[..., None]
        img[y0:y1, x0:x1] = a * rgb + (1 - a) * img[y0:y1, x0:x1]
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ------------------------------------------------------------------------------------------
# captions from the scene graph


def _pick(rng: random.Random, seq):
    return seq[rng.randrange(len(seq))]


def _object_phrase(rng: random.Random, o: SceneObject, article: bool = True) -> str:
    """A noun phrase for one object with a random subset of its attributes (annotators differ)."""
    words: List[str] = []
    if rng.random() < 0.4:
        words.append(o.size)
    tex = _pick(rng, _TEXTURE_WORDS[o.texture])
    tex_after = tex.startswith("with ")
    use_tex = rng.random() < 0.6 and tex != ""
    if use_tex and not tex_after:
        words.append(tex)
    if rng.random() < 0.85:
        words.append(o.colour)
    words.append(_pick(rng, _SHAPE_WORDS[o.shape]))
    if use_tex and tex_after:
        words.append(tex)
    np_ = " ".join(words)
    if not article:
        return np_
    det = _pick(rng, ("a", "a", "the", "one")) if np_[0] not in "aeiou" else _pick(rng, ("an", "the"))
    return f"{det} {np_}"


def _relation(a: SceneObject, b: SceneObject) -> str:
    """Spatial relation of a with respect to b from the box centres."""
    ax, ay = (a.box[0] + a.box[2]) / 2, (a.box[1] + a.box[3]) / 2
    bx, by = (b.box[0] + b.box[2]) / 2, (b.box[1] + b.box[3]) / 2
    dx, dy = ax - bx, ay - by
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "above" if dy < 0 else "below"


def _union(boxes: Sequence[Tuple[int, int, int, int]]) -> Tuple[int, int, int, int]:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def _regions(rng: random.Random, objects: List[SceneObject], background: str, h: int, w: int,
             n_regions: int, first_id: int) -> List[Region]:
    """VG-like region descriptions: one per object first, then pairs, groups and the background."""
    out: List[Region] = []

    def add(phrase: str, box, ids):
        x0, y0, x1, y1 = box
        out.append(Region(first_id + len(out), phrase, int(x0), int(y0), int(x1 - x0), int(y1 - y0), tuple(ids)))

    kinds = ["object", "pair", "group", "background"]
    p = [0.45, 0.4 if len(objects) > 1 else 0.0, 0.08, 0.07]
    order = list(range(len(objects)))
    rng.shuffle(order)
    while len(out) < n_regions:
        if order:  # every object is described at least once, as in VG
            o = objects[order.pop()]
            add(_object_phrase(rng, o), o.box, [o.object_id])
            continue
        kind = rng.choices(kinds, weights=p)[0]
        if kind == "object":
            o = objects[rng.randrange(len(objects))]
            add(_object_phrase(rng, o), o.box, [o.object_id])
        elif kind == "pair":
            i, j = rng.sample(range(len(objects)), 2)
            a, b = objects[i], objects[j]
            rel = _pick(rng, _RELATIONS[_relation(a, b)])
            add(f"{_object_phrase(rng, a)} {rel} {_object_phrase(rng, b)}", _union([a.box, b.box]),
                [a.object_id, b.object_id])
        elif kind == "group":
            by_shape: Dict[str, List[SceneObject]] = {}
            for o in objects:
                by_shape.setdefault(o.shape, []).append(o)
            shape, group = max(by_shape.items(), key=lambda kv: (len(kv[1]), kv[0]))
            if len(group) > 1:
                phrase = f"{_NUMBERS[len(group)]} {_PLURAL[shape]}"
            else:
                group = objects
                phrase = f"{_NUMBERS[len(group)]} {_pick(rng, ('shapes', 'objects', 'things'))}"
            add(phrase, _union([o.box for o in group]), [o.object_id for o in group])
        else:
            add(_pick(rng, (f"a {background} background", f"the background is {background}",
                            f"{background} wall behind the shapes")), (0, 0, w, h), [])
    return out


def _captions(rng: random.Random, objects: List[SceneObject], background: str, n: int) -> List[str]:
    """COCO-like whole-image captions."""
    caps = []
    for _ in range(n):
        k = len(objects)
        sel = [objects[i] for i in sorted(rng.sample(range(k), min(k, rng.randrange(1, 4))))]
        nps = [_object_phrase(rng, o) for o in sel]
        body = nps[0] if len(nps) == 1 else ", ".join(nps[:-1]) + " and " + nps[-1]
        tmpl = rng.randrange(4)
        if tmpl == 0:
            caps.append(f"{body} on a {background} background")
        elif tmpl == 1:
            caps.append(f"a picture of {body}")
        elif tmpl == 2:
            caps.append(f"{_NUMBERS[k]} shapes including {body}")
        else:
            if k > 1:
                a, b = sel[0], [o for o in objects if o is not sel[0]][0]
                caps.append(f"{_object_phrase(rng, a)} {_pick(rng, _RELATIONS[_relation(a, b)])} "
                            f"{_object_phrase(rng, b)}")
            else:
                caps.append(f"{body} alone on a {background} background")
    return caps


# ------------------------------------------------------------------------------------------
# the data set


def _check_int(name: str, v, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    return int(v)


class SyntheticScenes:
    """A seeded, lazily rendered set of captioned scenes.

    Args:
        n (int): number of images.
        image_size (int or (int, int)): output size, square or (height, width); >= 32.
        seed (int): everything is a function of (seed, index).
        min_objects, max_objects (int): objects per image (inclusive range, 1..8).
        regions_per_image (int, int): inclusive range of region descriptions per image
            (at least one per object is always written).
        captions_per_image (int): COCO-like whole-image captions per image.
        themes (int): number of scene themes (0: attributes drawn uniformly).
        theme_strength (float in [0, 1]): probability that an attribute follows the theme.

    ``ds[i]`` returns a :class:`Scene`; ``ds.image(i)``, ``ds.captions(i)`` give parts of it.
    """

    def __init__(self, n: int, image_size: Union[int, Tuple[int, int]] = 96, seed: int = 0,
                 min_objects: int = 2, max_objects: int = 4, regions_per_image: Tuple[int, int] = (6, 10),
                 captions_per_image: int = 5, themes: int = 6, theme_strength: float = 0.7):
        self.n = _check_int("n", n, 0)
        if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
            hw = (int(image_size), int(image_size))
        elif isinstance(image_size, (tuple, list)) and len(image_size) == 2:
            hw = (int(image_size[0]), int(image_size[1]))
        else:
            raise TypeError(f"image_size must be an int or (height, width), got {image_size!r}")
        if min(hw) < 32:
            raise ValueError(f"image_size must be >= 32 pixels per side, got {hw}")
        self.height, self.width = hw
        self.seed = _check_int("seed", seed, 0)
        self.min_objects = _check_int("min_objects", min_objects, 1)
        self.max_objects = _check_int("max_objects", max_objects, self.min_objects)
        if self.max_objects > 8:
            raise ValueError(f"max_objects must be <= 8, got {max_objects}")
        if not (isinstance(regions_per_image, (tuple, list)) and len(regions_per_image) == 2):
            raise TypeError(f"regions_per_image must be (min, max), got {regions_per_image!r}")
        self.regions_per_image = (_check_int("regions_per_image[0]", regions_per_image[0], 1),
                                  _check_int("regions_per_image[1]", regions_per_image[1], 1))
        if self.regions_per_image[1] < self.regions_per_image[0]:
            raise ValueError(f"regions_per_image must be (min, max) with min <= max, got {regions_per_image}")
        self.captions_per_image = _check_int("captions_per_image", captions_per_image, 0)
        self.themes = _check_int("themes", themes, 0)
        if not (0.0 <= float(theme_strength) <= 1.0):
            raise ValueError(f"theme_strength must be in [0, 1], got {theme_strength}")
        self.theme_strength = float(theme_strength)
        trng = np.random.default_rng([self.seed, 0x7E3E])
        self._theme_table = [
            {
                "shape": list(trng.choice(len(SHAPES), 2, replace=False)),
                "colour": list(trng.choice(len(COLOURS), 2, replace=False)),
                "texture": [int(trng.integers(len(TEXTURES)))],
            }
            for _ in range(self.themes)
        ]

    def __len__(self) -> int:
        return self.n

    def _rng(self, index: int) -> random.Random:
        # the scene graph uses Python's Random (fast scalar draws); str seeds hash with sha512,
        # so they do not depend on PYTHONHASHSEED
        return random.Random(f"semvis.synthetic/{self.seed}/{index}")

    def _attr(self, rng, theme: Optional[dict], key: str, values: Sequence[str]) -> str:
        if theme is not None and rng.random() < self.theme_strength:
            return values[int(_pick(rng, theme[key]))]
        return values[rng.randrange(len(values))]

    def _layout(self, rng: random.Random, theme: Optional[dict]) -> List[SceneObject]:
        h, w = self.height, self.width
        k = rng.randint(self.min_objects, self.max_objects)
        objs: List[SceneObject] = []
        colours = tuple(COLOURS)
        for _ in range(k):
            size = SIZES[int(rng.random() < 0.45)]
            lo, hi = (0.2, 0.3) if size == "small" else (0.34, 0.46)
            for _attempt in range(40):
                side = int(round(rng.uniform(lo, hi) * min(h, w)))
                bw = max(6, int(round(side * rng.uniform(0.9, 1.1))))
                bh = max(6, side)
                x0 = rng.randint(0, w - bw)
                y0 = rng.randint(0, h - bh)
                box = (x0, y0, x0 + bw, y0 + bh)
                if all(_overlap(box, o.box) < 0.15 for o in objs):
                    break
            else:
                continue  # no room: fewer objects
            objs.append(SceneObject(len(objs), self._attr(rng, theme, "shape", SHAPES),
                                    self._attr(rng, theme, "colour", colours),
                                    self._attr(rng, theme, "texture", TEXTURES), size, box))
        return objs

    def _check_index(self, index) -> int:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        if index < 0:
            index += self.n
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} scenes")
        return int(index)

    def _graph(self, index: int):
        rng = self._rng(index)
        theme_id = rng.randrange(self.themes) if self.themes else -1
        theme = self._theme_table[theme_id] if self.themes else None
        background = _pick(rng, tuple(BACKGROUNDS))
        objects = self._layout(rng, theme)
        n_reg = max(rng.randint(*self.regions_per_image), len(objects))
        regions = _regions(rng, objects, background, self.height, self.width, n_reg, first_id=index * 1000)
        captions = _captions(rng, objects, background, self.captions_per_image)
        return rng, theme_id, background, objects, regions, captions

    def __getitem__(self, index: int) -> Scene:
        index = self._check_index(index)
        # the scene graph first, the pixels last: scene_graph() draws the same numbers without rendering
        rng, theme_id, background, objects, regions, captions = self._graph(index)
        image = render_scene(objects, self.height, self.width, background,
                             np.random.default_rng([self.seed, 2, index]))
        return Scene(index, image, objects, regions, captions, background, theme_id)

    def image(self, index: int) -> np.ndarray:
        """The uint8 [H, W, 3] image of scene ``index``."""
        return self[index].image

    def scene_graph(self, index: int) -> Tuple[List[SceneObject], List[Region], List[str]]:
        """(objects, regions, captions) of an image, without rendering its pixels."""
        _, _, _, objects, regions, captions = self._graph(self._check_index(index))
        return objects, regions, captions

    def region_phrases(self, index: int) -> List[str]:
        """The region descriptions of image ``index`` (no rendering)."""
        return [r.phrase for r in self.scene_graph(index)[1]]

    def all_region_phrases(self) -> List[List[str]]:
        """Region phrases of every image (renders nothing: captions only)."""
        return [self.region_phrases(i) for i in range(self.n)]

    def all_captions(self) -> List[List[str]]:
        """COCO-like captions of every image (no rendering)."""
        return [self.scene_graph(i)[2] for i in range(self.n)]

    # --- export in the real formats (so that the readers and the synthetic path share code) ----

    def to_visual_genome(self, directory: Union[str, os.PathLike], indices: Optional[Sequence[int]] = None,
                         write_images: bool = False) -> None:
        """Writes ``image_data.json`` and ``region_descriptions.json`` (Visual Genome v1.2
        layout) for the given images; with ``write_images`` also ``VG_100K/<id>.npy`` (the VG
        image folder, numpy arrays instead of JPEGs)."""
        os.makedirs(directory, exist_ok=True)
        idx = range(self.n) if indices is None else indices
        img_data, regs = [], []
        for i in idx:
            if write_images:
                sc = self[i]
                regions = sc.regions
                os.makedirs(os.path.join(directory, "VG_100K"), exist_ok=True)
                np.save(os.path.join(directory, "VG_100K", f"{i + 1}.npy"), sc.image)
            else:
                regions = self.scene_graph(i)[1]
            img_data.append({"image_id": i + 1, "url": f"synthetic://{self.seed}/{i}", "width": self.width,
                             "height": self.height, "coco_id": None, "flickr_id": None})
            regs.append({"id": i + 1, "regions": [
                {"region_id": r.region_id, "image_id": i + 1, "phrase": r.phrase, "x": r.x, "y": r.y,
                 "width": r.width, "height": r.height} for r in regions]})
        with open(os.path.join(directory, "image_data.json"), "w") as f:
            json.dump(img_data, f)
        with open(os.path.join(directory, "region_descriptions.json"), "w") as f:
            json.dump(regs, f)

    def to_coco_captions(self, path: Union[str, os.PathLike], indices: Optional[Sequence[int]] = None) -> None:
        """Writes a COCO ``captions_*.json`` file (``images`` + ``annotations``)."""
        idx = range(self.n) if indices is None else indices
        images, anns = [], []
        for i in idx:
            _, _, caps = self.scene_graph(i)
            images.append({"id": i + 1, "file_name": f"{i + 1:012d}.npy", "width": self.width, "height": self.height})
            for j, c in enumerate(caps):
                anns.append({"id": (i + 1) * 100 + j, "image_id": i + 1, "caption": c})
        with open(path, "w") as f:
            json.dump({"info": {"description": "semvis synthetic scenes", "seed": self.seed},
                       "images": images, "annotations": anns}, f)


def _overlap(a, b) -> float:
    """Intersection over the smaller box's area."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return inter / max(small, 1)
