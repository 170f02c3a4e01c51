"""Captioned image sets for cross-modal training and evaluation (BEAN / DSVE-loc).

A :class:`CaptionedImages` holds, per image, its pixels (or a loader), its captions and optionally
its grounded phrases (phrase + box) for the pointing game. Sources:

* :meth:`CaptionedImages.from_synthetic`: the seeded synthetic scenes of
  :mod:`semvis.data.synthetic_scenes` (object phrases and their boxes);
* :func:`read_karpathy_json`: the Karpathy split files ``dataset_coco.json`` /
  ``dataset_flickr30k.json`` that VSE++ and DSVE-loc use (images + 5 sentences + split);
* :func:`read_flickr30k_tokens`: Flickr30k's ``results_20130124.token`` (``name.jpg#i<TAB>caption``).

Images given as paths are decoded on access with PIL (``pip install pillow``) or ``numpy.load``
for ``.npy`` files; the synthetic set keeps rendered uint8 arrays.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["CaptionedImages", "Phrase", "read_karpathy_json", "read_flickr30k_tokens", "load_image",
           "load_crossmodal_split"]


@dataclass(frozen=True)
class Phrase:
    """A grounded phrase: its text and its box ``(x0, y0, x1, y1)`` in image pixels."""

    text: str
    box: Tuple[float, float, float, float]


def load_image(path: Union[str, os.PathLike]) -> np.ndarray:
    """Decodes an image file to a uint8 [H, W, 3] array (``.npy`` with numpy, others with PIL)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path}")
    if path.endswith(".npy"):
        arr = np.load(path, allow_pickle=False)
    else:
        try:
            from PIL import Image
        except ImportError as e:
            raise ImportError("decoding image files needs Pillow: pip install pillow") from e
        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"))
        except Exception as e:  # noqa: BLE001 - any decoder failure is a corrupt file
            raise ValueError(f"could not decode image {path}: {e}") from None
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"{path}: expected a uint8 [H, W, 3] image, got {arr.dtype} {arr.shape}")
    return arr


@dataclass
class CaptionedImages:
    """Images with their captions (and optional grounded phrases).

    Attributes:
        images (list): uint8 [H, W, 3] arrays or image paths, one per image.
        captions (list of list of str): the captions of each image (at least one each).
        phrases (list of list of Phrase, optional): grounded phrases per image.
        ids (list): an identifier per image (COCO id, file name, synthetic index).
    """

    images: List[Union[np.ndarray, str]]
    captions: List[List[str]]
    phrases: Optional[List[List[Phrase]]] = None
    ids: List = field(default_factory=list)

    def __post_init__(self):
        if len(self.images) != len(self.captions):
            raise ValueError(f"images ({len(self.images)}) and captions ({len(self.captions)}) differ in length")
        for i, caps in enumerate(self.captions):
            if len(caps) == 0:
                raise ValueError(f"image {i} has no caption")
        if self.phrases is not None and len(self.phrases) != len(self.images):
            raise ValueError("phrases must have one list per image")
        if not self.ids:
            self.ids = list(range(len(self.images)))

    def __len__(self) -> int:
        return len(self.images)

    def image(self, i: int) -> np.ndarray:
        im = self.images[i]
        return im if isinstance(im, np.ndarray) else load_image(im)

    def subset(self, indices: Sequence[int]) -> "CaptionedImages":
        idx = list(indices)
        return CaptionedImages([self.images[i] for i in idx], [self.captions[i] for i in idx],
                               None if self.phrases is None else [self.phrases[i] for i in idx],
                               [self.ids[i] for i in idx])

    def flat_captions(self) -> Tuple[List[str], List[int]]:
        """(all captions, the image index of each), image by image."""
        caps, owner = [], []
        for i, cs in enumerate(self.captions):
            caps.extend(cs)
            owner.extend([i] * len(cs))
        return caps, owner

    @classmethod
    def from_synthetic(cls, scenes, indices: Optional[Sequence[int]] = None, single_objects: bool = True
                       ) -> "CaptionedImages":
        """Renders synthetic scenes (:class:`semvis.data.synthetic_scenes.SyntheticScenes`).

        Grounded phrases are the region descriptions that name objects (``single_objects``: only
        those of one object; background regions, whose box is the whole image, are never kept).
        """
        idx = range(len(scenes)) if indices is None else indices
        images, captions, phrases, ids = [], [], [], []
        for i in idx:
            sc = scenes[i]
            images.append(sc.image)
            captions.append(list(sc.captions))
            ph = []
            for r in sc.regions:
                if not r.object_ids or (single_objects and len(r.object_ids) != 1):
                    continue
                ph.append(Phrase(r.phrase, (float(r.x), float(r.y), float(r.x + r.width), float(r.y + r.height))))
            phrases.append(ph)
            ids.append(sc.image_id)
        return cls(images, captions, phrases, ids)


def read_karpathy_json(path: Union[str, os.PathLike], image_root: Union[str, os.PathLike], split: str = "test",
                       restval_as_train: bool = True) -> CaptionedImages:
    """Reads a Karpathy split file (``dataset_coco.json``, ``dataset_flickr30k.json``).

    Args:
        path: the JSON file (``{"images": [{"filepath"?, "filename", "split", "sentences": [{"raw"}]}]}``).
        image_root: the folder holding the images (``filepath/filename`` below it).
        split (str): ``"train"``, ``"val"``, ``"test"`` (``"restval"`` images count as train when
            ``restval_as_train``: the rVal split of the paper).
    """
    if split not in ("train", "val", "test", "restval"):
        raise ValueError(f"split must be train, val, test or restval, got {split!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Karpathy split file not found: {path}")
    try:
        with open(path) as f:
            data = json.load(f)
        entries = data["images"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a Karpathy split file ({e})") from None
    images, captions, ids = [], [], []
    for n, e in enumerate(entries):
        try:
            s = e["split"]
            if restval_as_train and s == "restval":
                s = "train"
            if s != split:
                continue
            caps = [c["raw"].strip() for c in e["sentences"]]
            rel = os.path.join(e.get("filepath", ""), e["filename"])
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{path}: image entry {n} is malformed ({err})") from None
        if not caps:
            raise ValueError(f"{path}: image entry {n} ({rel}) has no sentence")
        images.append(os.path.join(os.fspath(image_root), rel))
        captions.append(caps)
        ids.append(e.get("cocoid", e.get("imgid", rel)))
    if not images:
        raise ValueError(f"{path}: no image in split {split!r}")
    return CaptionedImages(images, captions, None, ids)


def read_flickr30k_tokens(path: Union[str, os.PathLike], image_root: Union[str, os.PathLike],
                          names: Optional[Sequence[str]] = None) -> CaptionedImages:
    """Reads Flickr30k's ``results_20130124.token`` (``<name>.jpg#<i><TAB><caption>`` lines).

    Args:
        names (sequence of str, optional): keep only these images, in this order (a split list).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Flickr30k token file not found: {path}")
    caps: Dict[str, List[str]] = {}
    with open(path, encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            key, sep, text = line.partition("\t")
            name, hash_, num = key.partition("#")
            if not sep or not hash_ or not num.isdigit():
                raise ValueError(f"{path}:{ln}: expected '<image>#<n><TAB><caption>', got {line[:60]!r}")
            caps.setdefault(name, []).append(text.strip())
    order = list(caps) if names is None else list(names)
    missing = [n for n in order if n not in caps]
    if missing:
        raise ValueError(f"{path}: no caption for {len(missing)} listed images, e.g. {missing[:3]}")
    return CaptionedImages([os.path.join(os.fspath(image_root), n) for n in order], [caps[n] for n in order],
                           None, order)


def load_crossmodal_split(split: str = "train", data: str = "synthetic", karpathy_json: Optional[str] = None,
                          image_root: Optional[str] = None, n_train: int = 400, n_test: int = 100,
                          image_size: int = 64, seed: int = 0) -> CaptionedImages:
    """One split of a cross-modal data set: ``data="synthetic"`` (seeded scenes: the first
    ``n_train`` are "train", the next ``n_test`` are "val" and "test") or ``"karpathy"`` (the split
    of ``karpathy_json`` with images under ``image_root``)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    if data == "karpathy":
        if not karpathy_json or not image_root:
            raise ValueError("data='karpathy' needs karpathy_json and image_root")
        return read_karpathy_json(karpathy_json, image_root, split=split)
    if data != "synthetic":
        raise ValueError(f"data must be 'synthetic' or 'karpathy', got {data!r}")
    from .synthetic_scenes import SyntheticScenes

    ds = SyntheticScenes(n_train + n_test, image_size=image_size, seed=seed)
    idx = range(n_train) if split == "train" else range(n_train, n_train + n_test)
    return CaptionedImages.from_synthetic(ds, idx)
