"""R-MAC region pooling: forward + backward of ours vs the reference loop over regions
(semvis_ext.reference.region_pool) and cirtorch's formulation re-written in torch.

Default: B=8, C=512, 18x24 maps (ResNet conv5 of a 576x768 image), L=3 (21 regions), plus a padded
batch of mixed sizes. SEMVIS_BENCH_SIZE=large: the seed-000 training shape B=64, C=2048, 18x24.
A summary with the time ratios (reference / ours) and the peak extra memory is printed at the end
of the module (run with ``-s`` or read the terminal summary).
"""
import torch
import pytest

import semvis_ext as se
from semvis_ext import reference as ref
from semvis_ext.nn import RMAC, l2n

from conftest import LARGE, bench_devices, peak_memory, sync

def _exact_rss_peaks():
    """Large blocks straight from mmap (no dynamic threshold), so that memory freed by one run is
    returned to the OS and the RSS peak of the next run is its own (glibc; no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD = 64 KiB
    except (OSError, AttributeError):
        pass


_exact_rss_peaks()

B, C, H, W = (64, 2048, 18, 24) if LARGE else (8, 512, 18, 24)
ROUNDS = {"ours": 3 if LARGE else 5, "other": 1 if LARGE else 2}  # the loops take seconds per round
# padded batch: every image has its own valid size inside 18 x 24
VALID = torch.tensor([[18, 24], [18, 18], [12, 24], [18, 13], [9, 16], [16, 24], [18, 20], [14, 14]]).repeat(B // 8, 1)

_RESULTS = {}


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    yield
    capman = request.config.pluginmanager.getplugin("capturemanager")
    lines = [f"bench_region_pool summary (B={B}, C={C}, {H}x{W}, L=3, input {B * C * H * W * 4 / 2**20:.0f} MiB float32)"]
    for (group, dev), rows in sorted(_RESULTS.items()):
        ours = rows.get("ours")
        for name, (t, mem) in sorted(rows.items(), key=lambda kv: kv[1][0]):
            ratio = f"{t / ours[0]:7.2f}x" if ours else "   -"
            lines.append(f"  {group:<22} {dev:<5} {name:<10} min {t * 1e3:9.2f} ms  x/ours {ratio}  "
                         f"peak extra {mem / 2**20:8.1f} MiB ({mem / (B * C * H * W * 4):.2f} x input)")
    with capman.global_and_fixture_disabled():
        print("\n" + "\n".join(lines))


def _input(device, dtype=torch.float32):
    torch.manual_seed(0)
    return torch.randn(B, C, H, W, device=device, dtype=dtype).relu_().requires_grad_()


def _run(benchmark, group, name, device, fn):
    def step():
        fn()
        sync(device)

    step()  # warm-up: thread pools, allocator caches
    mem = peak_memory(step, device)
    benchmark.group = f"rmac {group} {device}"
    benchmark.pedantic(step, rounds=ROUNDS["ours" if name == "ours" else "other"], iterations=1)
    _RESULTS.setdefault((group, device), {})[name] = (benchmark.stats.stats.min, mem)


def _fwd_bwd(f, x):
    def go():
        x.grad = None
        y = f(x)
        y.backward(torch.ones_like(y))
    return go


# ------------------------------------------------------------------------- region_pool (max)

@pytest.mark.parametrize("device", bench_devices())
@pytest.mark.parametrize("impl", ["ours", "reference", "cirtorch"])
def test_region_pool(benchmark, device, impl):
    x = _input(device)
    boxes = se.rmac_regions(H, W)
    if impl == "ours":
        f = lambda t: se.region_pool(t)
    elif impl == "reference":
        f = lambda t: ref.region_pool(t, [boxes] * B)
    else:  # cirtorch roipool(x, mac): narrow + max_pool2d per region, cat
        f = lambda t: _cirtorch_roipool(t, boxes)
    _run(benchmark, "region_pool", impl, device, _fwd_bwd(f, x))


def _cirtorch_roipool(x, boxes):
    import torch.nn.functional as F

    vecs = [F.max_pool2d(x.narrow(2, a, h).narrow(3, b, w), (h, w)).flatten(1).unsqueeze(1)
            for a, b, h, w in boxes.tolist()]
    return torch.cat(vecs, dim=1)


def _cirtorch_padded(x, per):
    import torch.nn.functional as F

    R = max(bx.shape[0] for bx in per)
    outs = []
    for b, (h, w) in enumerate(VALID.tolist()):
        v = _cirtorch_roipool(x[b:b + 1, :, :h, :w], per[b])
        outs.append(F.pad(v, (0, 0, 0, R - v.shape[1])))
    return torch.cat(outs)


@pytest.mark.parametrize("device", bench_devices())
@pytest.mark.parametrize("impl", ["ours", "reference", "cirtorch"])
def test_region_pool_padded(benchmark, device, impl):
    x = _input(device)
    per = [se.rmac_regions(int(h), int(w)) for h, w in VALID.tolist()]
    if impl == "ours":
        f = lambda t: se.region_pool(t, valid_hw=VALID)
    elif impl == "reference":
        f = lambda t: ref.region_pool(t, per)
    else:  # cirtorch has no padded batches: one image at a time, cropped to its valid size
        f = lambda t: _cirtorch_padded(t, per)
    _run(benchmark, "region_pool_padded", impl, device, _fwd_bwd(f, x))


# ------------------------------------------------------------------------- GeM regions

@pytest.mark.parametrize("device", bench_devices())
@pytest.mark.parametrize("impl", ["ours", "reference"])
def test_region_pool_gem(benchmark, device, impl):
    x = _input(device)
    p = torch.tensor([3.0], device=device, requires_grad=True)
    boxes = se.rmac_regions(H, W)
    if impl == "ours":
        f = lambda t: se.region_pool(t, p=p)
    else:
        f = lambda t: ref.region_pool(t, [boxes] * B, p=p)
    _run(benchmark, "region_pool_gem", impl, device, _fwd_bwd(f, x))


# ------------------------------------------------------------------------- RMAC head

@pytest.mark.parametrize("device", bench_devices())
@pytest.mark.parametrize("impl", ["ours", "reference", "cirtorch"])
def test_rmac(benchmark, device, impl):
    x = _input(device)
    m = RMAC(C, levels=3, whitening=True).to(device)
    boxes = se.rmac_regions(H, W)
    if impl == "ours":
        f = m
    elif impl == "reference":  # the same head on the reference pooling
        def f(t):
            v = l2n(ref.region_pool(t, [boxes] * B))
            v = l2n(torch.nn.functional.linear(v - m.mean, m.weight))
            return l2n(v.sum(1))
    else:  # cirtorch's rmac (max-pool per region, l2n, sum) + l2n; cirtorch has no per-region whitening
        f = lambda t: l2n(ref.rmac_cirtorch(t))
    _run(benchmark, "rmac", impl, device, _fwd_bwd(f, x))
