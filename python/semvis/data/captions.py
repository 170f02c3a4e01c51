"""Readers for captioned-image data sets in their published formats, and the paper-like splits.

* Visual Genome (v1.2): ``image_data.json`` (a list of ``{"image_id" | "id", "url", "width",
  "height", "coco_id", "flickr_id"}``) and ``region_descriptions.json`` (a list of
  ``{"id": image_id, "regions": [{"region_id", "image_id", "phrase", "x", "y", "width",
  "height"}, ...]}``).
* COCO captions (``captions_train2014.json`` ...): ``{"images": [{"id", "file_name", "width",
  "height", ...}], "annotations": [{"id", "image_id", "caption"}]}``.

Both give a list of :class:`CaptionedImage`. :func:`split_ids` builds the 80k / 10k / 10k split of
Gordo & Larlus (spec 000.0 [D]: sorted ids, fixed-seed permutation; scaled proportionally when the
set is smaller than 100k images).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["CaptionedImage", "read_visual_genome", "read_coco_captions", "read_captioned_images",
           "coco_images_dir", "find_coco_captions", "choose_max_side", "AUTO_MAX_SIDE", "split_ids", "load_image",
           "PAPER_SPLIT"]

PathLike = Union[str, os.PathLike]
#: (train, val, test) sizes of Gordo & Larlus on Visual Genome
PAPER_SPLIT: Tuple[int, int, int] = (80_000, 10_000, 10_000)


@dataclass
class CaptionedImage:
    """One image with its captions. ``boxes`` [n_captions, 4] (x, y, width, height) in pixels for
    region captions (Visual Genome), ``None`` for whole-image captions (COCO)."""

    image_id: int
    width: int
    height: int
    path: Optional[str]
    captions: List[str] = field(default_factory=list)
    boxes: Optional[np.ndarray] = None


def _load_json(path: PathLike, what: str):
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: {what} is not valid JSON ({e})") from None


def _field(entry, key: str, path: PathLike, i: int, types=(int,)):
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: entry {i} is a {type(entry).__name__}, expected an object")
    if key not in entry:
        raise ValueError(f"{path}: entry {i} has no {key!r} field")
    v = entry[key]
    if isinstance(v, bool) or not isinstance(v, types):
        raise ValueError(f"{path}: entry {i} field {key!r} must be {'/'.join(t.__name__ for t in types)}, "
                         f"got {type(v).__name__}")
    return v


def read_visual_genome(root: Optional[PathLike] = None, image_data: Optional[PathLike] = None,
                       region_descriptions: Optional[PathLike] = None, images_dir: Optional[PathLike] = None,
                       drop_empty: bool = True, image_ext: Optional[str] = None) -> List[CaptionedImage]:
    """Reads Visual Genome image metadata and region descriptions.

    Args:
        root (path, optional): folder holding ``image_data.json`` and ``region_descriptions.json``.
        image_data, region_descriptions (path, optional): explicit file paths (override ``root``).
        images_dir (path, optional): where ``<image_id><image_ext>`` live. Default: as Visual
            Genome is distributed, ``root/VG_100K`` *and* ``root/VG_100K_2`` (the folder named
            in the image's ``url`` first, then the other one: the first file that exists).
            Recorded in ``CaptionedImage.path``, not opened.
        drop_empty (bool): skip images without any region description.
        image_ext (str, optional): file extension; default ``.jpg``, or ``.npy`` where only
            the ``.npy`` file exists (arrays written by ``SyntheticScenes.to_visual_genome``).

    Returns:
        list of CaptionedImage sorted by image id, captions = region phrases (stripped), boxes =
        their (x, y, width, height).
    """
    if image_data is None or region_descriptions is None:
        if root is None:
            raise ValueError("read_visual_genome: give root or both image_data and region_descriptions")
        image_data = image_data or os.path.join(root, "image_data.json")
        region_descriptions = region_descriptions or os.path.join(root, "region_descriptions.json")
    folders: List[str] = []
    if images_dir is not None:
        folders = [os.fspath(images_dir)]
    elif root is not None:
        folders = [os.path.join(root, d) for d in _VG_FOLDERS]
    meta = _load_json(image_data, "Visual Genome image_data.json")
    regs = _load_json(region_descriptions, "Visual Genome region_descriptions.json")
    if not isinstance(meta, list):
        raise ValueError(f"{image_data}: expected a JSON list of images, got {type(meta).__name__}")
    if not isinstance(regs, list):
        raise ValueError(f"{region_descriptions}: expected a JSON list, got {type(regs).__name__}")
    images: Dict[int, CaptionedImage] = {}
    for i, m in enumerate(meta):
        iid = _field(m, "image_id" if isinstance(m, dict) and "image_id" in m else "id", image_data, i)
        w = _field(m, "width", image_data, i)
        h = _field(m, "height", image_data, i)
        if iid in images:
            raise ValueError(f"{image_data}: duplicate image id {iid} (entry {i})")
        path = _vg_image_path(folders, iid, m.get("url"), image_ext, images_dir is None) if folders else None
        images[iid] = CaptionedImage(iid, w, h, path)
    boxes: Dict[int, List[Tuple[int, int, int, int]]] = {}
    for i, e in enumerate(regs):
        iid = _field(e, "id" if isinstance(e, dict) and "id" in e else "image_id", region_descriptions, i)
        rl = _field(e, "regions", region_descriptions, i, (list,))
        if iid not in images:
            raise ValueError(f"{region_descriptions}: entry {i} refers to image {iid}, absent from {image_data}")
        im = images[iid]
        bl = boxes.setdefault(iid, [])
        for j, r in enumerate(rl):
            where = f"{i}.regions[{j}]"
            if not isinstance(r, dict) or "phrase" not in r:
                raise ValueError(f"{region_descriptions}: region {where} has no 'phrase' field")
            if not isinstance(r["phrase"], str):
                raise ValueError(f"{region_descriptions}: region {where} phrase must be a string")
            try:
                box = tuple(int(r[k]) for k in ("x", "y", "width", "height"))
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{region_descriptions}: region {where} needs integer x, y, width, height") from None
            im.captions.append(r["phrase"].strip())
            bl.append(box)
    out = []
    for iid in sorted(images):
        im = images[iid]
        im.boxes = np.asarray(boxes.get(iid, []), dtype=np.int64).reshape(-1, 4)
        if drop_empty and not im.captions:
            continue
        out.append(im)
    return out


_VG_FOLDERS = ("VG_100K", "VG_100K_2")


def _vg_image_path(folders: List[str], iid: int, url, image_ext: Optional[str], by_url: bool) -> str:
    """The file of VG image ``iid``: the folder named by its url first (``.../VG_100K_2/1.jpg``),
    then the others; the first existing ``<iid><ext>`` (ext ``.jpg`` then ``.npy`` unless given),
    else the path in the first candidate folder."""
    order = list(folders)
    if by_url and isinstance(url, str):
        named = url.rstrip("/").split("/")[-2:-1]
        for f in folders:
            if named and os.path.basename(f) == named[0]:
                order.remove(f)
                order.insert(0, f)
    exts = (image_ext,) if image_ext else (".jpg", ".npy")
    for ext in exts:
        for f in order:
            p = os.path.join(f, f"{iid}{ext}")
            if os.path.exists(p):
                return p
    return os.path.join(order[0], f"{iid}{exts[0]}")


def coco_images_dir(captions_path: PathLike) -> Optional[str]:
    """Where the images of a COCO captions file live, as COCO is distributed:
    ``<root>/annotations/captions_<split>.json`` -> ``<root>/<split>`` (``train2014``,
    ``val2017``, ...); otherwise the captions file's own folder if it holds image files; else
    None (file names are kept as written)."""
    path = os.path.abspath(os.fspath(captions_path))
    folder, name = os.path.split(path)
    stem = os.path.splitext(name)[0]
    if stem.startswith("captions_"):
        split = stem[len("captions_"):]
        for base in (os.path.dirname(folder), folder):
            if os.path.isdir(os.path.join(base, split)):
                return os.path.join(base, split)
    return folder if os.path.isdir(folder) else None


def find_coco_captions(root: PathLike) -> List[str]:
    """The COCO captions files of a COCO folder: ``root/annotations/captions_*.json`` (or
    ``root/captions_*.json``), sorted; a file path is returned as is."""
    root = os.fspath(root)
    if os.path.isfile(root):
        return [root]
    for d in (os.path.join(root, "annotations"), root):
        if os.path.isdir(d):
            found = sorted(os.path.join(d, f) for f in os.listdir(d) if f.startswith("captions_") and f.endswith(".json"))
            if found:
                return found
    raise FileNotFoundError(f"{root}: no COCO captions file (annotations/captions_*.json) found")


def read_captioned_images(data: str, root: PathLike) -> List[CaptionedImage]:
    """A captioned-image data set laid out as published, by kind:

    * ``"visual_genome"``: ``root`` holds ``image_data.json``, ``region_descriptions.json`` and
      the image folders ``VG_100K`` / ``VG_100K_2`` (``<image_id>.jpg``);
    * ``"coco"``: ``root`` is a captions file (``.../annotations/captions_val2014.json``) or the
      COCO folder (every ``annotations/captions_*.json`` is read and merged; images in
      ``<root>/<split>/``).

    Returns the images sorted by id; a ValueError when ids repeat across COCO files or nothing
    is captioned.
    """
    if data == "visual_genome":
        ims = read_visual_genome(root)
    elif data == "coco":
        ims, seen = [], set()
        for f in find_coco_captions(root):
            part = read_coco_captions(f, images_dir=coco_images_dir(f))
            dup = seen.intersection(im.image_id for im in part)
            if dup:
                raise ValueError(f"{f}: image id {min(dup)} also appears in another captions file")
            seen.update(im.image_id for im in part)
            ims.extend(part)
        ims.sort(key=lambda im: im.image_id)
    else:
        raise ValueError(f"data must be 'visual_genome' or 'coco', got {data!r}")
    if not ims:
        raise ValueError(f"{root}: no captioned image found")
    return ims


def read_coco_captions(path: PathLike, images_dir: Optional[PathLike] = None,
                       drop_empty: bool = True) -> List[CaptionedImage]:
    """Reads a COCO captions file (``captions_train2014.json`` format).

    Args:
        path: the captions file.
        images_dir (path, optional): joined to each ``file_name`` (see :func:`coco_images_dir`
            for the folder of the published layout); None keeps the bare file names.

    Returns:
        list of CaptionedImage sorted by image id, captions in annotation-id order, boxes None.
    """
    d = _load_json(path, "COCO captions file")
    if not isinstance(d, dict) or "images" not in d or "annotations" not in d:
        raise ValueError(f"{path}: a COCO captions file needs 'images' and 'annotations' lists")
    if not isinstance(d["images"], list) or not isinstance(d["annotations"], list):
        raise ValueError(f"{path}: 'images' and 'annotations' must be lists")
    images: Dict[int, CaptionedImage] = {}
    for i, m in enumerate(d["images"]):
        iid = _field(m, "id", path, i)
        fn = _field(m, "file_name", path, i, (str,))
        if iid in images:
            raise ValueError(f"{path}: duplicate image id {iid} (images[{i}])")
        images[iid] = CaptionedImage(iid, _field(m, "width", path, i), _field(m, "height", path, i),
                                     os.path.join(images_dir, fn) if images_dir is not None else fn)
    anns = []
    for i, a in enumerate(d["annotations"]):
        iid = _field(a, "image_id", path, i)
        cap = _field(a, "caption", path, i, (str,))
        aid = _field(a, "id", path, i)
        if iid not in images:
            raise ValueError(f"{path}: annotation {i} refers to image {iid}, absent from 'images'")
        anns.append((aid, iid, cap.strip()))
    for aid, iid, cap in sorted(anns):
        images[iid].captions.append(cap)
    return [images[k] for k in sorted(images) if images[k].captions or not drop_empty]


def split_ids(ids: Sequence[int], sizes: Tuple[int, int, int] = PAPER_SPLIT, seed: int = 0
              ) -> Tuple[List[int], List[int], List[int]]:
    """(train, val, test) id lists: the sorted ids permuted with ``seed``, then cut in ``sizes``.

    With fewer ids than ``sum(sizes)`` the sizes are scaled proportionally (80/10/10 %), rounding
    val and test down; ids beyond the sizes are unused (as the ~8k VG images of the paper).
    """
    ids = sorted(int(i) for i in ids)
    if len(set(ids)) != len(ids):
        raise ValueError("split_ids: ids contain duplicates")
    if len(sizes) != 3 or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in sizes):
        raise ValueError(f"split_ids: sizes must be three non-negative ints, got {sizes!r}")
    total = sum(sizes)
    if total == 0:
        raise ValueError("split_ids: sizes sum to 0")
    if len(ids) < total:
        f = len(ids) / total
        val, test = int(sizes[1] * f), int(sizes[2] * f)
        sizes = (len(ids) - val - test, val, test)
    perm = np.random.default_rng(seed).permutation(len(ids))
    shuffled = [ids[i] for i in perm]
    a, b, c = sizes
    return sorted(shuffled[:a]), sorted(shuffled[a:a + b]), sorted(shuffled[a + b:a + b + c])


def load_image(path: PathLike) -> np.ndarray:
    """Reads an image file as uint8 [H, W, 3]: ``.npy`` arrays with numpy, anything else with
    Pillow (optional dependency; a clear ImportError names it)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"image not found: {path}")
    if str(path).endswith(".npy"):
        a = np.load(path)
    else:
        try:
            from PIL import Image
        except ImportError:
            raise ImportError(f"reading {path} needs Pillow (pip install pillow); .npy images need nothing") from None
        with Image.open(path) as im:
            a = np.array(im.convert("RGB"))  # a writable copy (torch.from_numpy warns on read-only arrays)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"{path}: expected a uint8 [H, W, 3] image, got {a.dtype} {a.shape}")
    return a


#: largest image side used when ``max_side`` is left to the data: the paper's 576 px on a GPU, 128 px
#: on CPUs (a 2-core machine trains the synthetic recipe in minutes at that size)
AUTO_MAX_SIDE = {"cuda": 576, "cpu": 128}


def choose_max_side(sizes: Sequence[Tuple[int, int]], device: str = "cpu") -> Tuple[int, str]:
    """The resize target (largest image side) for a data set, from its image sizes and the device.

    Args:
        sizes: (width, height) of the images (e.g. ``[(im.width, im.height) for im in ims]``).
        device (str): ``"cpu"`` or ``"cuda"``; the cap is :data:`AUTO_MAX_SIDE` of it.

    Returns:
        (max_side, reason): the median largest side of the images, capped by the device and
        rounded down to a multiple of 16 (never below 32, never above the images' own size, so
        small images are not upscaled); ``reason`` says how it was chosen, for printing.
    """
    if device not in AUTO_MAX_SIDE:
        raise ValueError(f"choose_max_side: device must be one of {sorted(AUTO_MAX_SIDE)}, got {device!r}")
    sides = [max(int(w), int(h)) for w, h in sizes if int(w) > 0 and int(h) > 0]
    if not sides:
        raise ValueError("choose_max_side: no image size given")
    med = int(np.median(sides))
    cap = AUTO_MAX_SIDE[device]
    side = max(32, (min(med, cap) // 16) * 16)
    why = (f"median largest image side {med} px, capped at {cap} px on {device}" if med > cap
           else f"median largest image side {med} px (no upscaling)")
    return side, why
