"""Landmark retrieval data in the revisitop layout (Radenović et al., CVPR 2018):

    <root>/<name>/jpg/<imlist[i]>.jpg          database images
    <root>/<name>/jpg/<qimlist[q]>.jpg         query images (cropped to gnd[q]['bbx'] before use)
    <root>/<name>/gnd_<name>.pkl               {'imlist': [...], 'qimlist': [...],
                                                'gnd': [{'easy', 'hard', 'junk', 'bbx'}, ...]}

:func:`read_gnd` reads and validates the pickle (real ROxford5k / RParis6k files load as they
are); :class:`RevisitopDataset` adds the image paths; :func:`write_synthetic_landmarks` writes an
offline stand-in in exactly that layout: each landmark is a textured scene (a collage of
scikit-image's sample photographs, ``semvis.data.synthetic_video.make_set``), photographed under
a perspective warp, a crop, a lighting change and an occluder. A database view is labelled for
the queries of its landmark by the fraction of the landmark region it shows unoccluded
(``visible``): easy if >= ``easy_min`` (0.6), hard if >= ``hard_min`` (0.25), else junk (some but
too little of it: "unclear"); views of other landmarks and distractor scenes are negatives.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

__all__ = ["read_gnd", "RevisitopDataset", "write_synthetic_landmarks", "crop_query"]

_LISTS = ("easy", "hard", "junk")


def _ids(where: str, v, n: int) -> np.ndarray:
    a = np.asarray(v)
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
        a = a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{where} must hold integer image ids, got dtype {a.dtype}")
    a = a.astype(np.int64).reshape(-1)
    bad = a[(a < 0) | (a >= n)]
    if bad.size:
        raise ValueError(f"{where}: id {int(bad[0])} is out of range [0, {n}) (the database has {n} images)")
    u, c = np.unique(a, return_counts=True)
    if (c > 1).any():
        raise ValueError(f"{where}: id {int(u[c > 1][0])} appears more than once")
    return a


def read_gnd(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Reads and validates a revisitop ground-truth pickle (``gnd_roxford5k.pkl`` layout).

    Returns:
        dict with ``imlist`` (list of N str), ``qimlist`` (list of Q str) and ``gnd`` (list of Q
        dicts: ``easy``, ``hard``, ``junk`` int64 arrays of database ids, ``bbx`` float array [4]
        ``(x1, y1, x2, y2)`` or None when absent), plus any other top-level keys unchanged.

    Raises:
        FileNotFoundError; ValueError for a file that is not such a pickle: a missing key, a gnd
        list whose length differs from qimlist, ids out of range, an id twice in one list or in
        two lists of one query, a malformed bbx.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"read_gnd: no such file: {path}")
    try:
        with open(path, "rb") as f:
            cfg = pickle.load(f)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ValueError(f"read_gnd: {path} is not a readable pickle ({type(e).__name__}: {e})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"read_gnd: {path} must hold a dict, got {type(cfg).__name__}")
    for k in ("imlist", "qimlist", "gnd"):
        if k not in cfg:
            raise ValueError(f"read_gnd: {path} has no {k!r} key (it has {sorted(map(str, cfg))})")
    imlist, qimlist, gnd = list(cfg["imlist"]), list(cfg["qimlist"]), cfg["gnd"]
    if not isinstance(gnd, (list, tuple)) or len(gnd) != len(qimlist):
        raise ValueError(f"read_gnd: 'gnd' must be a list with one dict per query ({len(qimlist)}), "
                         f"got {type(gnd).__name__} of length {len(gnd) if hasattr(gnd, '__len__') else '?'}")
    n = len(imlist)
    out = []
    for q, g in enumerate(gnd):
        if not isinstance(g, dict):
            raise ValueError(f"read_gnd: gnd[{q}] must be a dict, got {type(g).__name__}")
        e = {}
        for k in _LISTS:
            if k not in g:
                raise ValueError(f"read_gnd: gnd[{q}] has no {k!r} key (it has {sorted(map(str, g))})")
            e[k] = _ids(f"read_gnd: gnd[{q}][{k!r}]", g[k], n)
        allids = np.concatenate([e[k] for k in _LISTS])
        u, c = np.unique(allids, return_counts=True)
        if (c > 1).any():
            raise ValueError(f"read_gnd: gnd[{q}]: id {int(u[c > 1][0])} is in more than one of easy/hard/junk")
        bbx = g.get("bbx")
        if bbx is not None:
            b = np.asarray(bbx, dtype=np.float64).reshape(-1)
            if b.size != 4 or not np.isfinite(b).all() or b[2] < b[0] or b[3] < b[1]:
                raise ValueError(f"read_gnd: gnd[{q}]['bbx'] must be 4 finite numbers x1 <= x2, y1 <= y2, got {bbx!r}")
            bbx = b
        e["bbx"] = bbx
        out.append(e)
    res = dict(cfg)
    res.update(imlist=imlist, qimlist=qimlist, gnd=out)
    return res


def crop_query(img: np.ndarray, bbx: Optional[np.ndarray]) -> np.ndarray:
    """revisitop's query crop: ``img[y1:y2, x1:x2]`` of the bbx rounded to pixels (None: whole)."""
    if bbx is None:
        return img
    x1, y1, x2, y2 = (int(round(v)) for v in bbx)
    h, w = img.shape[:2]
    x1, y1 = max(0, min(x1, w - 1)), max(0, min(y1, h - 1))
    x2, y2 = max(x1 + 1, min(x2, w)), max(y1 + 1, min(y2, h))
    return img[y1:y2, x1:x2]


@dataclass
class RevisitopDataset:
    """A dataset in the revisitop layout: ``RevisitopDataset(root, name)`` reads
    ``<root>/<name>/gnd_<name>.pkl`` (:func:`read_gnd`); images under ``<root>/<name>/jpg``."""

    root: str
    name: str

    def __post_init__(self):
        self.dir = os.path.join(os.fspath(self.root), self.name)
        cfg = read_gnd(os.path.join(self.dir, f"gnd_{self.name}.pkl"))
        self.imlist: List[str] = cfg["imlist"]
        self.qimlist: List[str] = cfg["qimlist"]
        self.gnd: List[Dict[str, Any]] = cfg["gnd"]

    def image_path(self, i: int) -> str:
        return os.path.join(self.dir, "jpg", self.imlist[i] + ".jpg")

    def query_path(self, q: int) -> str:
        return os.path.join(self.dir, "jpg", self.qimlist[q] + ".jpg")

    def load(self, path: str) -> np.ndarray:
        """uint8 [H, W, 3] RGB."""
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))

    def image(self, i: int) -> np.ndarray:
        return self.load(self.image_path(i))

    def query(self, q: int, crop: bool = True) -> np.ndarray:
        img = self.load(self.query_path(q))
        return crop_query(img, self.gnd[q]["bbx"]) if crop else img


# ---- synthetic set ----------------------------------------------------------------------------

def _view(rng, canvas, region, size, kind, photos):
    """One photograph of a scene: (image uint8 [h, w, 3] BGR, visible fraction of ``region``,
    bbx of the region in the image). ``kind``: 'query', 'near' or 'far' (how wild the viewpoint)."""
    from .synthetic_video import _crop, _cv2

    cv2 = _cv2()
    W, H = size
    CH, CW = canvas.shape[:2]
    x1, y1, x2, y2 = region
    rw, rh = x2 - x1, y2 - y1
    # viewport: centre and extent in canvas pixels, then a perspective jitter of its corners
    if kind == "query":
        c = np.array([(x1 + x2) / 2, (y1 + y2) / 2]) + rng.uniform(-0.05, 0.05, 2) * [rw, rh]
        ext = rng.uniform(1.05, 1.3) * max(rw / W, rh / H)
        jit = 0.04
    elif kind == "near":
        c = np.array([(x1 + x2) / 2, (y1 + y2) / 2]) + rng.uniform(-0.25, 0.25, 2) * [rw, rh]
        ext = rng.uniform(0.7, 1.4) * max(rw / W, rh / H)
        jit = 0.12
    else:
        c = np.array([(x1 + x2) / 2, (y1 + y2) / 2]) + rng.uniform(-0.7, 0.7, 2) * [rw, rh]
        ext = rng.uniform(0.35, 1.6) * max(rw / W, rh / H)
        jit = 0.22
    half = np.array([W, H]) * ext / 2
    src = np.array([c - half, [c[0] + half[0], c[1] - half[1]], c + half, [c[0] - half[0], c[1] + half[1]]])
    src = src + rng.uniform(-jit, jit, (4, 2)) * half * 2
    ang = np.deg2rad(rng.uniform(-8, 8) if kind != "query" else rng.uniform(-2, 2))
    R = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    src = (src - c) @ R.T + c
    dst = np.array([[0, 0], [W, 0], [W, H], [0, H]], dtype=np.float64)
    Hm = cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32))
    img = cv2.warpPerspective(canvas, Hm, (W, H), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
    # lighting: gain and gamma
    g, gam = rng.uniform(0.7, 1.3) if kind != "query" else 1.0, rng.uniform(0.75, 1.3) if kind != "query" else 1.0
    img = np.clip(255.0 * (g * img / 255.0) ** gam, 0, 255).astype(np.uint8)
    # occluder: a crop of another photograph over part of the view
    occ = None
    if kind != "query" and rng.random() < 0.6:
        ow, oh = int(W * rng.uniform(0.2, 0.6)), int(H * rng.uniform(0.2, 0.6))
        ox, oy = int(rng.integers(0, W - ow + 1)), int(rng.integers(0, H - oh + 1))
        piece = _crop(rng, photos[int(rng.integers(len(photos)))], ow * 3, oh * 3)
        img[oy:oy + oh, ox:ox + ow] = cv2.resize(piece, (ow, oh), interpolation=cv2.INTER_AREA)
        occ = (ox, oy, ox + ow, oy + oh)
    # visible fraction of the landmark region: a grid of its points projected into the view
    gx, gy = np.meshgrid(np.linspace(x1, x2, 24), np.linspace(y1, y2, 24))
    pts = cv2.perspectiveTransform(np.stack([gx.ravel(), gy.ravel()], 1)[None].astype(np.float64), Hm)[0]
    inside = (pts[:, 0] >= 0) & (pts[:, 0] < W) & (pts[:, 1] >= 0) & (pts[:, 1] < H)
    if occ is not None:
        inside &= ~((pts[:, 0] >= occ[0]) & (pts[:, 0] < occ[2]) & (pts[:, 1] >= occ[1]) & (pts[:, 1] < occ[3]))
    corners = cv2.perspectiveTransform(np.array([[[x1, y1], [x2, y1], [x2, y2], [x1, y2]]], np.float64), Hm)[0]
    bbx = np.array([max(corners[:, 0].min(), 0), max(corners[:, 1].min(), 0),
                    min(corners[:, 0].max(), W), min(corners[:, 1].max(), H)])
    return img, float(inside.mean()), bbx


def write_synthetic_landmarks(root: Union[str, os.PathLike], name: str = "rsynth", n_landmarks: int = 6,
                              views: int = 16, queries: int = 2, distractors: int = 24,
                              size: Tuple[int, int] = (128, 96), easy_min: float = 0.6, hard_min: float = 0.25,
                              seed: int = 0) -> str:
    """Writes a synthetic landmark set in the revisitop layout under ``<root>/<name>``.

    Args:
        n_landmarks (int): scenes with queries. views (int): database photographs per landmark
            (half near, half far viewpoints). queries (int): query photographs per landmark (not
            in the database, bbx = the landmark region). distractors (int): photographs of other
            scenes (negatives for every query).
        size (w, h): image size in pixels. easy_min, hard_min: visible-fraction thresholds of the
            labels (a view with 0 < visible < hard_min is junk; visible == 0 is a negative).
        seed (int): everything is deterministic given it.

    Returns:
        The dataset directory. The pickle also holds ``landmark`` (scene of each database image,
        -1 for distractors), ``visible`` (its visible fraction) and ``qlandmark``.
    """
    from .synthetic_video import _cv2, make_set, photographs

    for nm, v, lo in (("n_landmarks", n_landmarks, 1), ("views", views, 1), ("queries", queries, 1),
                      ("distractors", distractors, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"write_synthetic_landmarks: {nm} must be an int >= {lo}, got {v!r}")
    if not 0 < hard_min <= easy_min <= 1:
        raise ValueError(f"write_synthetic_landmarks: need 0 < hard_min <= easy_min <= 1, got {hard_min}, {easy_min}")
    cv2 = _cv2()
    rng = np.random.default_rng(seed)
    photos = photographs()
    out = os.path.join(os.fspath(root), name)
    os.makedirs(os.path.join(out, "jpg"), exist_ok=True)
    cw, ch = 4 * size[0], 4 * size[1]
    imlist, landmark, visible, qimlist, qlm, qbbx = [], [], [], [], [], []

    def save(img, stem):
        cv2.imwrite(os.path.join(out, "jpg", stem + ".jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])

    for L in range(n_landmarks):
        canvas = make_set(rng, size=(cw, ch), n_pieces=(3, 6))
        region = (cw * 0.3, ch * 0.3, cw * 0.7, ch * 0.7)
        for v in range(views):
            img, f, _ = _view(rng, canvas, region, size, "near" if v % 2 == 0 else "far", photos)
            stem = f"lm{L:02d}_v{v:03d}"
            save(img, stem)
            imlist.append(stem), landmark.append(L), visible.append(f)
        for q in range(queries):
            img, _, bbx = _view(rng, canvas, region, size, "query", photos)
            stem = f"lm{L:02d}_q{q:02d}"
            save(img, stem)
            qimlist.append(stem), qlm.append(L), qbbx.append(bbx)
    for d in range(distractors):
        canvas = make_set(rng, size=(cw, ch), n_pieces=(3, 6))
        img, _, _ = _view(rng, canvas, (cw * 0.3, ch * 0.3, cw * 0.7, ch * 0.7), size,
                          "near" if d % 2 == 0 else "far", photos)
        stem = f"distractor_{d:04d}"
        save(img, stem)
        imlist.append(stem), landmark.append(-1), visible.append(0.0)
    landmark_a, visible_a = np.array(landmark), np.array(visible)
    gnd = []
    for q, L in enumerate(qlm):
        same = landmark_a == L
        gnd.append({"easy": np.flatnonzero(same & (visible_a >= easy_min)),
                    "hard": np.flatnonzero(same & (visible_a >= hard_min) & (visible_a < easy_min)),
                    "junk": np.flatnonzero(same & (visible_a > 0) & (visible_a < hard_min)),
                    "bbx": qbbx[q]})
    cfg = {"imlist": imlist, "qimlist": qimlist, "gnd": gnd, "landmark": landmark_a, "visible": visible_a,
           "qlandmark": np.array(qlm)}
    with open(os.path.join(out, f"gnd_{name}.pkl"), "wb") as f:
        pickle.dump(cfg, f)
    return out
