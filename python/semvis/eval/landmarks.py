"""The revisited Oxford/Paris protocol (Radenović et al., CVPR 2018; spec 001.6 [X]).

``compute_map`` takes revisitop's inputs and returns its outputs (``python/evaluate.py``
``compute_map``, the same code as cirtorch's ``utils/evaluate.py``): AP by the trapezoid rule
with junk images removed from the ranking, mP@k with the reference's cut, NaN for queries
without positives (left out of the means). ``evaluate`` goes from a score matrix to the Easy /
Medium / Hard results without ranking the whole matrix: only the positions of each query's
positives and junk are computed (``semvis_ext.landmarks_positions``). Results agree with the
reference to the last bit (same operations in the same order).

Protocols (``gnd[q]`` has ``easy``, ``hard``, ``junk``):
    Easy:   ok = easy,        junk = junk + hard
    Medium: ok = easy + hard, junk = junk
    Hard:   ok = hard,        junk = junk + easy
"""
from __future__ import annotations

import numbers
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

import semvis_ext

__all__ = ["MapResult", "PROTOCOLS", "compute_map", "embed_images", "evaluate", "format_results", "protocol_gnd",
           "results_table", "run_pipeline"]

# protocol -> (keys whose ids are positives, keys whose ids are junk)
PROTOCOLS: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...]]] = {
    "easy": (("easy",), ("junk", "hard")),
    "medium": (("easy", "hard"), ("junk",)),
    "hard": (("hard",), ("junk", "easy")),
}


class MapResult(NamedTuple):
    """One protocol's results, revisitop's ``(map, aps, pr, prs)``.

    map (float): mean AP over the queries that have positives (NaN when none has).
    aps (ndarray[Q] float64): per-query AP, NaN for queries without positives.
    mpr (ndarray[K] float64): mean precision at each kappa over the same queries.
    prs (ndarray[Q, K] float64): per-query precision at each kappa (NaN rows as in aps).
    """

    map: float
    aps: np.ndarray
    mpr: np.ndarray
    prs: np.ndarray


def _ids(where: str, v, size: Optional[int]) -> np.ndarray:
    a = np.asarray(v)
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    if a.dtype.kind not in "iu":
        if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
            a = a.astype(np.int64)  # ids stored as floats (MATLAB exports)
        else:
            raise TypeError(f"{where} must hold integer database ids, got dtype {a.dtype}")
    a = a.astype(np.int64).reshape(-1)
    if size is not None and a.size and (a.min() < 0 or a.max() >= size):
        bad = a[(a < 0) | (a >= size)][0]
        raise ValueError(f"{where}: id {bad} is out of range [0, {size})")
    return a


def _check_kappas(kappas) -> List[int]:
    out = []
    for k in kappas:
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Integral):
            raise TypeError(f"kappas must be ints >= 1, got {k!r}")
        if k < 1:
            raise ValueError(f"kappas must be ints >= 1, got {k}")
        out.append(int(k))
    return out


def _pairs(lists: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """(query index, id) of every entry of per-query id lists, in query order."""
    lens = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    q = np.repeat(np.arange(len(lists), dtype=np.int64), lens)
    ids = np.concatenate(lists) if len(lists) else np.zeros(0, dtype=np.int64)
    return q, ids.astype(np.int64, copy=False)


def _indptr(q: np.ndarray, nq: int) -> np.ndarray:
    out = np.zeros(nq + 1, dtype=np.int64)
    np.cumsum(np.bincount(q, minlength=nq), out=out[1:])
    return out


def _map_from_positions(nq: int, ok: Sequence[np.ndarray], junk: Sequence[np.ndarray], size: int,
                        lookup, kappas: List[int]) -> MapResult:
    """AP/P@k of one protocol. ``lookup(keys)`` gives the position of each (q * size + id) key."""
    q_ok, id_ok = _pairs(ok)
    q_j, id_j = _pairs(junk)
    nres = np.bincount(q_ok, minlength=nq).astype(np.int64)  # len(gnd[q]['ok']), duplicates included
    # positions of the distinct ranked positives (np.in1d in the reference), likewise junk
    k_ok = np.unique(q_ok * size + id_ok)
    k_j = np.unique(q_j * size + id_j)
    aps, prs = semvis_ext.landmarks_ap(_indptr(k_ok // size, nq), lookup(k_ok), nres,
                                       _indptr(k_j // size, nq), lookup(k_j), kappas)
    valid = ~np.isnan(aps)
    n = int(valid.sum())
    # sequential sums in query order, like the reference's running `map = map + ap`
    m = float(np.cumsum(aps[valid])[-1]) / n if n else float("nan")
    mpr = (np.cumsum(prs[valid], axis=0)[-1] / n if n else np.full(len(kappas), np.nan))
    return MapResult(m, aps, np.asarray(mpr, dtype=np.float64), prs)


def _gnd_lists(gnd, keys: Sequence[str], required: Sequence[str], size: Optional[int]) -> Dict[str, List[np.ndarray]]:
    if isinstance(gnd, Mapping) or not isinstance(gnd, Sequence):
        raise TypeError(f"gnd must be a list of dicts (one per query), got {type(gnd).__name__}")
    out: Dict[str, List[np.ndarray]] = {k: [] for k in keys}
    for i, g in enumerate(gnd):
        if not isinstance(g, Mapping):
            raise TypeError(f"gnd[{i}] must be a dict, got {type(g).__name__}")
        for k in keys:
            if k not in g:
                if k in required:
                    raise ValueError(f"gnd[{i}] has no {k!r} key (it has {sorted(g)})")
                out[k].append(np.zeros(0, dtype=np.int64))
            else:
                out[k].append(_ids(f"gnd[{i}][{k!r}]", g[k], size))
    return out


def compute_map(ranks, gnd, kappas: Sequence[int] = (1, 5, 10), db_size: Optional[int] = None) -> MapResult:
    """revisitop's ``compute_map(ranks, gnd, kappas)``.

    Args:
        ranks (array[K, Q] int): column q is query q's ranking, 0-based database ids, each at most
            once, in ``[0, db_size)``. ``K`` is normally the database size; a shorter (truncated)
            ranking counts its unranked positives as never retrieved.
        gnd (list of Q dicts): ``ok`` (positive ids, required) and ``junk`` (ids removed from the
            ranking before AP, optional, as in the reference).
        kappas (sequence of int >= 1): cut-offs of P@k. Default (1, 5, 10).
        db_size (int, optional): the database size when ``ranks`` is truncated (default K).

    Returns:
        :class:`MapResult` ``(map, aps, mpr, prs)``. Queries without positives get NaN and are
        left out of ``map`` and ``mpr`` (NaN when no query has positives; the reference divides
        by zero there). A query whose positives are all outside a truncated ranking has AP 0 and
        P@k 0 (the reference raises on its P@k).

    Raises:
        ValueError: ids out of range, an id twice in a column, a dict without ``ok``, a gnd whose
        length is not Q. TypeError: non-integer ids or kappas.
    """
    kappas = _check_kappas(kappas)
    r = ranks.detach().cpu().numpy() if hasattr(ranks, "detach") else np.asarray(ranks)
    if r.ndim != 2:
        raise ValueError(f"compute_map: ranks must have shape [K, Q], got {r.shape}")
    if r.dtype.kind not in "iu":
        raise TypeError(f"compute_map: ranks must hold integer ids, got dtype {r.dtype}")
    size = r.shape[0] if db_size is None else db_size
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < r.shape[0]:
        raise ValueError(f"compute_map: db_size must be an int >= the ranking length {r.shape[0]}, got {db_size!r}")
    nq = r.shape[1]
    lists = _gnd_lists(gnd, ("ok", "junk"), ("ok",), int(size))
    if len(gnd) != nq:
        raise ValueError(f"compute_map: gnd has {len(gnd)} queries but ranks has {nq} columns")
    size = max(int(size), 1)
    q_all, id_all = _pairs(lists["ok"] + lists["junk"])
    q_all = q_all % nq if nq else q_all  # _pairs numbered the two lists one after the other
    keys = np.unique(q_all * size + id_all)
    pos = semvis_ext.landmarks_positions(_indptr(keys // size, nq), keys % size,
                                         ranks=r.astype(np.int64, copy=False), db_size=size)

    def lookup(k):
        return pos[np.searchsorted(keys, k)]

    return _map_from_positions(nq, lists["ok"], lists["junk"], size, lookup, kappas)


def protocol_gnd(gnd, protocol: str) -> List[Dict[str, np.ndarray]]:
    """revisitop's per-protocol ``gnd_t``: a list of ``{'ok', 'junk'}`` dicts for ``compute_map``.
    ``protocol`` is ``easy``, ``medium`` or ``hard``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}, got {protocol!r}")
    okk, jk = PROTOCOLS[protocol]
    lists = _gnd_lists(gnd, ("easy", "hard", "junk"), ("easy", "hard", "junk"), None)
    return [{"ok": np.concatenate([lists[k][i] for k in okk]), "junk": np.concatenate([lists[k][i] for k in jk])}
            for i in range(len(gnd))]


def evaluate(scores, gnd, kappas: Sequence[int] = (1, 5, 10),
             protocols: Sequence[str] = ("easy", "medium", "hard")) -> Dict[str, MapResult]:
    """Easy / Medium / Hard results from a score matrix, without ranking it.

    Equal to ``compute_map(np.argsort(-scores, axis=0, kind="stable"), protocol_gnd(gnd, p))``
    for each protocol p: ties between database items rank the lower id first. Only the positions
    of each query's easy, hard and junk images are computed (one pass over ``scores``), so the
    cost is O(N·Q·log T) with T the labelled images of a query, and the memory O(Q·T).

    Args:
        scores (array or Tensor[N, Q]): similarity of database item n to query q (float32 or
            float64; 16-bit converted exactly; cuda tensors are copied to the host). Any strides:
            ``sim.T`` of a [Q, N] matrix is read in place. NaN is refused.
        gnd (list of Q dicts): revisitop's ground truth, keys ``easy``, ``hard``, ``junk`` (ids in
            ``[0, N)``); other keys (``bbx``) are ignored.
        kappas (sequence of int >= 1): P@k cut-offs. Default (1, 5, 10).
        protocols: which of ``easy``, ``medium``, ``hard`` to compute.

    Returns:
        dict protocol -> :class:`MapResult`.
    """
    kappas = _check_kappas(kappas)
    for p in protocols:
        if p not in PROTOCOLS:
            raise ValueError(f"evaluate: protocols must be among {sorted(PROTOCOLS)}, got {p!r}")
    if hasattr(scores, "detach"):
        import torch

        s = scores.detach()
        if s.device.type != "cpu":
            s = s.cpu()
        if s.dtype in (torch.float16, torch.bfloat16):
            s = s.float()
        s = s.numpy()
    else:
        s = np.asarray(scores)
    if s.ndim != 2:
        raise ValueError(f"evaluate: scores must have shape [N, Q], got {s.shape}")
    if s.dtype == np.float16:
        s = s.astype(np.float32)
    if s.dtype not in (np.float32, np.float64):
        raise TypeError(f"evaluate: scores must be float32 or float64, got {s.dtype}")
    n, nq = s.shape
    if len(gnd) != nq:
        raise ValueError(f"evaluate: gnd has {len(gnd)} queries but scores has {nq} columns")
    lists = _gnd_lists(gnd, ("easy", "hard", "junk"), ("easy", "hard", "junk"), n)
    size = max(n, 1)
    q_all, id_all = _pairs(lists["easy"] + lists["hard"] + lists["junk"])
    q_all = q_all % nq if nq else q_all  # _pairs numbered the three lists one after the other
    keys = np.unique(q_all * size + id_all)
    pos = semvis_ext.landmarks_positions(_indptr(keys // size, nq), keys % size, scores=s)

    def lookup(k):
        return pos[np.searchsorted(keys, k)]

    out = {}
    for p in protocols:
        okk, jk = PROTOCOLS[p]
        ok = [np.concatenate([lists[k][i] for k in okk]) for i in range(nq)]
        junk = [np.concatenate([lists[k][i] for k in jk]) for i in range(nq)]
        out[p] = _map_from_positions(nq, ok, junk, size, lookup, kappas)
    return out


def format_results(results: Mapping[str, MapResult], dataset: str = "dataset", kappas: Sequence[int] = (1, 5, 10)) -> str:
    """revisitop's two printed lines (``example_evaluate.py``): mAP and mP@k in %, two decimals."""
    f = {p: results[p] for p in ("easy", "medium", "hard")}
    r = lambda x: np.around(x * 100, decimals=2)  # noqa: E731
    return (f">> {dataset}: mAP E: {r(f['easy'].map)}, M: {r(f['medium'].map)}, H: {r(f['hard'].map)}\n"
            f">> {dataset}: mP@k{np.array(list(kappas))} E: {r(f['easy'].mpr)}, M: {r(f['medium'].mpr)}, "
            f"H: {r(f['hard'].mpr)}")


# ---- the pipeline: embed, whiten, expand, diffuse, evaluate ------------------------------------

def _embedder(backbone: str, width: int, stages: int, levels: int, seed: int):
    import torch
    from torch import nn

    import semvis_ext.nn as snn
    from semvis.models.resnet import resnet

    torch.manual_seed(seed)
    trunk = resnet(backbone, width=width)
    if stages == 3:  # conv4 (stride 16): small images keep a usable map
        trunk.layer4 = nn.Identity()
        blk = trunk.layer3[-1]
        dim = (blk.conv3 if hasattr(blk, "conv3") else blk.conv2).out_channels
    else:
        dim = trunk.out_channels
    head = snn.RMAC(dim, levels=levels, whitening=False)
    return trunk.eval(), head.eval(), dim


def embed_images(images, trunk, head, batch: int = 32):
    """R-MAC descriptors [n, dim] (unit rows, float32) of uint8 RGB images [H, W, 3] (any sizes:
    same-size images are batched)."""
    import torch

    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out = [None] * len(images)
    groups: Dict[Tuple[int, int], List[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(im.shape[:2], []).append(i)
    with torch.no_grad():
        for idx in groups.values():
            for s in range(0, len(idx), batch):
                part = idx[s:s + batch]
                x = torch.from_numpy(np.stack([images[i] for i in part])).permute(0, 3, 1, 2).float() / 255
                e = head(trunk((x - mean) / std))
                for j, i in enumerate(part):
                    out[i] = e[j]
    return torch.stack(out) if out else torch.zeros(0, 0)


def run_pipeline(dataset, *, whiten_dataset=None, backbone: str = "resnet18", width: int = 32, stages: int = 3,
                 levels: int = 3, qe_n: int = 2, qe_alpha: float = 3.0, diffusion_k: int = 50,
                 diffusion_alpha: float = 0.99, diffusion_gamma: float = 3.0, truncation: int = 1000,
                 seed: int = 0, kappas: Sequence[int] = (1, 5, 10)) -> Dict[str, Dict[str, MapResult]]:
    """The landmark pipeline on a dataset in the revisitop layout, one evaluation per stage.

    Stages (each adds to the whitened descriptors):
        ``plain``: R-MAC (``semvis_ext.nn.RMAC``, L levels, no whitening) on a ResNet trunk
        (random weights from ``seed`` unless the caller loads some: there are no downloads);
        ``+whitening``: learned whitening (:func:`semvis.models.whitening.learned_whitening`) from
        the pairs of ``whiten_dataset`` (a revisitop-layout set whose pickle has a ``landmark``
        entry per image, e.g. a second synthetic set; all pairs of images of one landmark), else
        PCA whitening of the database descriptors;
        ``+aqe``: alpha-QE (n = ``qe_n``, alpha = ``qe_alpha``) on the whitened descriptors;
        ``+diffusion``: diffusion (:class:`semvis.search.landmarks.Diffusion`) on them.

    Args:
        dataset: a :class:`semvis.data.landmarks.RevisitopDataset` or its directory
            (``<root>/<name>``). Queries are cropped to their bbx, as the protocol requires.

    Returns:
        dict stage -> (dict protocol -> :class:`MapResult`).
    """
    import os

    import torch

    from semvis.data.landmarks import RevisitopDataset
    from semvis.models.whitening import apply_whitening, learned_whitening, pca_whitening
    from semvis.search.landmarks import Diffusion, query_expansion

    def as_ds(d):
        if isinstance(d, RevisitopDataset):
            return d
        p = os.path.abspath(os.fspath(d))
        return RevisitopDataset(os.path.dirname(p), os.path.basename(p))

    ds = as_ds(dataset)
    trunk, head, _ = _embedder(backbone, width, stages, levels, seed)
    X = embed_images([ds.image(i) for i in range(len(ds.imlist))], trunk, head)
    Q = embed_images([ds.query(q) for q in range(len(ds.qimlist))], trunk, head)
    res = {"plain": evaluate((X @ Q.T).numpy(), ds.gnd, kappas)}
    if whiten_dataset is not None:
        import pickle

        wd = as_ds(whiten_dataset)
        with open(os.path.join(wd.dir, f"gnd_{wd.name}.pkl"), "rb") as f:
            lm = np.asarray(pickle.load(f).get("landmark", []))
        if len(lm) != len(wd.imlist):
            raise ValueError("run_pipeline: whiten_dataset's pickle needs a 'landmark' label per image")
        W = embed_images([wd.image(i) for i in range(len(wd.imlist))], trunk, head)
        qi, pi = [], []
        for L in np.unique(lm[lm >= 0]):
            ids = np.flatnonzero(lm == L)
            a, b = np.meshgrid(ids, ids, indexing="ij")
            keep = a != b
            qi.append(a[keep]), pi.append(b[keep])
        m, P = learned_whitening(W, np.concatenate(qi), np.concatenate(pi))
    else:
        m, P = pca_whitening(X)
    Xw, Qw = apply_whitening(X, m, P), apply_whitening(Q, m, P)
    res["+whitening"] = evaluate((Xw @ Qw.T).numpy(), ds.gnd, kappas)
    Qe = query_expansion(Qw, Xw, n=min(qe_n, Xw.shape[0]), alpha=qe_alpha)
    res["+aqe"] = evaluate((Xw @ Qe.T).numpy(), ds.gnd, kappas)
    diff = Diffusion(Xw, k=diffusion_k, alpha=diffusion_alpha, gamma=diffusion_gamma, truncation=truncation)
    res["+diffusion"] = evaluate(diff.scores(Qw).T.contiguous().numpy(), ds.gnd, kappas)
    return res


def results_table(results: Mapping[str, Mapping[str, MapResult]]) -> str:
    """A markdown table: stage | mAP E / M / H | mP@10 E / M / H (in %, two decimals)."""
    lines = ["| stage | mAP E | mAP M | mAP H | mP@10 E | mP@10 M | mP@10 H |", "|---|---|---|---|---|---|---|"]
    for stage, r in results.items():
        m = [f"{np.around(r[p].map * 100, 2):.2f}" for p in ("easy", "medium", "hard")]
        k = [f"{np.around(r[p].mpr[-1] * 100, 2):.2f}" if len(r[p].mpr) else "-" for p in ("easy", "medium", "hard")]
        lines.append(f"| {stage} | " + " | ".join(m + k) + " |")
    return "\n".join(lines)
