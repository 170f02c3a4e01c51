"""The data of semantic retrieval (Gordo & Larlus; spec 000.5): images (decoded lazily, in
dataloader workers), their captions, the train/val/test split and the tf-idf surrogate fitted on the
training split (relevance: the k = 32 nearest neighbours under s)."""
from __future__ import annotations

import os
import sys
from typing import List, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..text.tfidf import TfidfModel, knn_relevance
from .captions import choose_max_side, load_image, read_captioned_images, split_ids
from .synthetic_scenes import SyntheticScenes

__all__ = ["SemanticData", "DATA_FIELDS", "build_semantic_data", "build_data", "stack_images"]


class _SyntheticSource:
    def __init__(self, ds: SyntheticScenes):
        self.ds = ds

    def __call__(self, i: int) -> Tensor:
        return self.ds[i].tensor()


class _FileSource:
    """Decodes image files and resizes them so that the largest side is ``max_side``."""

    def __init__(self, paths: Sequence[str], max_side: int):
        self.paths, self.max_side = list(paths), max_side

    def __call__(self, i: int) -> Tensor:
        x = torch.from_numpy(load_image(self.paths[i])).permute(2, 0, 1).contiguous()
        h, w = x.shape[1:]
        s = self.max_side / max(h, w)
        if s != 1:
            x = F.interpolate(x[None].float(), size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear",
                              antialias=s < 1, align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
        return x


class _ImageDataset(torch.utils.data.Dataset):
    def __init__(self, source, ids: Sequence[int]):
        self.source, self.ids = source, list(ids)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, k):
        return self.source(self.ids[k])


class SemanticData:
    """Images + captions + split + tf-idf surrogate.

    Args:
        source (callable int -> uint8 Tensor[3, H, W]): decodes image ``i`` (picklable, it runs in
            dataloader workers).
        captions (list of list of str): the (region) captions of every image.
        train, val, test (sequence of int): image indices of each split.
        graphs (list, optional): scene graphs (synthetic data) for the simulated user study.
        knn (int): relevant neighbours per training image (spec 000.5).
    """

    def __init__(self, source, captions: List[List[str]], train: Sequence[int], val: Sequence[int],
                 test: Sequence[int], graphs=None, knn: int = 32, workers: int = 0, cache_images: bool = False):
        self.source, self.captions, self.graphs = source, captions, graphs
        self.cache_images, self._cache = cache_images, {}
        self.train, self.val, self.test = (np.asarray(s, np.int64) for s in (train, val, test))
        if len(self.train) <= knn:
            raise ValueError(f"the training split has {len(self.train)} images, need more than knn = {knn}")
        self.workers = workers
        self.tfidf = TfidfModel().fit([captions[i] for i in self.train])
        self.t = self.tfidf.transform(captions)  # CSR [n_images, V]
        self.knn_sim, knn_local = knn_relevance(self.t.rows(self.train), k=knn)
        self.knn = knn_local  # [n_train, k] positions in self.train

    def __len__(self) -> int:
        return len(self.captions)

    def split(self, name: str) -> np.ndarray:
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {name!r}")
        return getattr(self, name)

    def load(self, ids: Sequence[int], batch: int = 64) -> List[Tensor]:
        """Decodes the images ``ids`` (in ``workers`` dataloader processes); a list of uint8
        Tensor[3, H, W]. With ``cache_images`` decoded images are kept in memory."""
        ids = [int(i) for i in ids]
        todo = sorted({i for i in ids if i not in self._cache}) if self.cache_images else ids
        if todo:
            dl = torch.utils.data.DataLoader(_ImageDataset(self.source, todo), batch_size=batch,
                                             num_workers=self.workers, collate_fn=list)
            got: List[Tensor] = []
            for b in dl:
                got.extend(b)
            if not self.cache_images:
                return got
            self._cache.update(zip(todo, got))
        return [self._cache[i] for i in ids]


#: the config fields that define a semantic data set (read by :func:`build_data`)
DATA_FIELDS = ("data", "data_root", "n_images", "image_size", "data_seed", "split_sizes", "max_side", "knn", "workers",
               "device")


def build_semantic_data(data: str = "synthetic", data_root: Optional[str] = None, n_images: int = 1200,
                        image_size: int = 64, data_seed: int = 0, split_sizes: Sequence[int] = (80_000, 10_000, 10_000),
                        max_side: int = 0, knn: int = 32, workers: int = 0, device: str = "cpu") -> SemanticData:
    """The data set named by ``data``: ``"synthetic"`` (seeded scenes: ``n_images``,
    ``image_size``, ``data_seed``), ``"visual_genome"`` (``data_root``: the folder with the JSON
    files; JPEGs, or folders of .npy arrays as written by ``SyntheticScenes.to_visual_genome``) or
    ``"coco"`` (``data_root``: the captions file). ``split_sizes`` (train, val, test) are scaled
    down proportionally for small sets; real images are resized to ``max_side`` (0: chosen from the
    images' sizes and the ``device`` by :func:`~semvis.data.captions.choose_max_side`, and printed)."""
    if data == "synthetic":
        ds = SyntheticScenes(n_images, image_size=image_size, seed=data_seed)
        graphs = [ds.scene_graph(i) for i in range(len(ds))]
        caps = [[r.phrase for r in g[1]] for g in graphs]
        tr, va, te = split_ids(range(len(ds)), split_sizes, seed=data_seed)
        return SemanticData(_SyntheticSource(ds), caps, tr, va, te, graphs=[g[0] for g in graphs], knn=knn,
                            workers=workers, cache_images=True)
    if data not in ("visual_genome", "coco"):
        raise ValueError(f"data must be 'synthetic', 'visual_genome' or 'coco', got {data!r}")
    if not data_root:
        raise ValueError(f"data_root is required for data={data!r}")
    # as published: VG_100K(_2)/<id>.jpg (or .npy arrays); a COCO captions file or folder
    ims = read_captioned_images(data, data_root)
    ids = [im.image_id for im in ims]
    pos = {iid: k for k, iid in enumerate(ids)}
    tr, va, te = (sorted(pos[i] for i in s) for s in split_ids(ids, split_sizes, seed=data_seed))
    if not max_side:
        max_side, why = choose_max_side([(im.width, im.height) for im in ims], device)
        print(f"semvis: max_side = {max_side} ({why}; set max_side to override)", file=sys.stderr)
    return SemanticData(_FileSource([im.path for im in ims], max_side), [im.captions for im in ims], tr, va, te,
                        knn=knn, workers=workers)


def build_data(config) -> SemanticData:
    """:func:`build_semantic_data` with the :data:`DATA_FIELDS` of ``config`` (a
    ``SemanticConfig``, any object with those attributes, or a mapping such as a checkpoint's config)."""
    get = config.get if isinstance(config, Mapping) else (lambda k, d=None: getattr(config, k, d))
    kw = {k: get(k) for k in DATA_FIELDS if get(k) is not None or k == "data_root"}
    return build_semantic_data(**kw)


def stack_images(images: List[Tensor]) -> Optional[Tensor]:
    """``torch.stack(images)`` when they all have the same shape, else None."""
    return torch.stack(images) if images and all(x.shape == images[0].shape for x in images) else None
