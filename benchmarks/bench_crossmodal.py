"""BEAN / DSVE-loc evaluation kernels (pure torch in semvis.models / semvis.eval) against their
definitions and the peers' code:

* text-conditioned heatmaps: the fast form ``a = A_Kᵀ|v_K|, H = aᵀG`` (``semvis.models.text_heatmap``)
  vs the dense definition (``dense_text_heatmap``: A·G for all d channels) vs DSVE-loc
  ``misc/localization.py`` (numpy: ``prod = fc_w @ act_map`` then one argsort + dot per phrase);
  paper shapes D' = d = 2400, a 13×13 map (400×400 input), 50 phrases per image, k = 180;
* R@K / MedR both ways: ``crossmodal_retrieval_metrics`` (counting ranks, no sort) vs VSE++
  ``evaluation.py`` ``i2t``/``t2i`` (a full argsort per query), one 1k-image fold with 5k captions.
"""
import numpy as np
import pytest
import torch

from conftest import LARGE, peak_memory, record, timed

from semvis.eval import crossmodal_retrieval_metrics
from semvis.models import dense_text_heatmap, text_heatmap

C, D, HW, P, K = 2400, 2400, 13, 50, 180
IMAGES = 4 if LARGE else 1
N_IMG = 1000


@pytest.fixture(scope="module")
def heat_inputs():
    g = torch.Generator().manual_seed(0)
    G = torch.randn(IMAGES, C, HW, HW, generator=g)
    A = torch.randn(D, C, generator=g) / C ** 0.5
    v = torch.nn.functional.normalize(torch.randn(IMAGES, P, D, generator=g), dim=2)
    return G, A, v


def _dsve_loc(G, A, v):
    """misc/localization.py one_img_process (heat maps only), transcribed."""
    fc_w = A.numpy()
    out = []
    for b in range(G.shape[0]):
        act = G[b].numpy().reshape(C, -1)
        prod = fc_w @ act
        maps = []
        for cap in v[b].numpy():
            order = np.argsort(cap)[::-1]
            maps.append((np.abs(cap[order[:K]]) @ prod[order[:K]]).reshape(HW, HW))
        out.append(np.stack(maps))
    return np.stack(out)


@pytest.mark.benchmark(group="crossmodal-heatmap")
@pytest.mark.parametrize("impl", ["semvis", "dense_reference", "dsve_loc_numpy"])
def test_heatmap(benchmark, heat_inputs, impl):
    G, A, v = heat_inputs
    fn = {"semvis": lambda: text_heatmap(G, A, v, K),
          "dense_reference": lambda: dense_text_heatmap(G, A, v, K),
          "dsve_loc_numpy": lambda: _dsve_loc(G, A, v)}[impl]
    sec = timed(benchmark, fn, "cpu", rounds=3)
    record(f"heatmap {IMAGES}x[{C},{HW},{HW}], {P} phrases, d={D}, k={K}", impl, sec, peak_memory(fn))
    if impl != "semvis":
        want = torch.as_tensor(np.asarray(fn()), dtype=torch.float32) if impl == "dsve_loc_numpy" else fn()
        torch.testing.assert_close(text_heatmap(G, A, v, K), want, atol=1e-3, rtol=1e-3)


@pytest.fixture(scope="module")
def fold():
    g = torch.Generator().manual_seed(1)
    img = torch.nn.functional.normalize(torch.randn(N_IMG, 128, generator=g), dim=1)
    cap = torch.nn.functional.normalize(img.repeat_interleave(5, 0) + 0.9 * torch.randn(5 * N_IMG, 128, generator=g), dim=1)
    return img, cap


def _vsepp(img, cap):
    """VSE++ evaluation.py i2t + t2i (cosine), transcribed for one fold; returns (R@1, R@5, R@10) both ways."""
    ims, caps = img.numpy(), cap.numpy()
    npts = ims.shape[0]
    ranks = np.zeros(npts)
    for index in range(npts):
        inds = np.argsort(ims[index] @ caps.T)[::-1]
        ranks[index] = min(np.where(inds == i)[0][0] for i in range(5 * index, 5 * index + 5))
    ranks_t = np.zeros(5 * npts)
    for index in range(npts):
        d = caps[5 * index:5 * index + 5] @ ims.T
        for i in range(5):
            ranks_t[5 * index + i] = np.where(np.argsort(d[i])[::-1] == index)[0][0]
    return [100.0 * np.mean(r < k) for r in (ranks, ranks_t) for k in (1, 5, 10)]


@pytest.mark.benchmark(group="crossmodal-recall")
@pytest.mark.parametrize("impl", ["semvis", "vsepp_numpy"])
def test_recall(benchmark, fold, impl):
    img, cap = fold
    owner = torch.arange(N_IMG).repeat_interleave(5)
    fn = {"semvis": lambda: crossmodal_retrieval_metrics(img, cap, owner),
          "vsepp_numpy": lambda: _vsepp(img, cap)}[impl]
    sec = timed(benchmark, fn, "cpu", rounds=1 if impl == "vsepp_numpy" else 3)
    record(f"R@K both ways, {N_IMG} images x {5 * N_IMG} captions", impl, sec, peak_memory(fn))
    if impl == "vsepp_numpy":
        m = crossmodal_retrieval_metrics(img, cap, owner)
        ours = [m[d][f"r{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10)]
        np.testing.assert_allclose(ours, fn(), atol=1e-9)  # continuous scores: no ties
