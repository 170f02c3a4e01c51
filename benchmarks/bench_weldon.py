"""WELDON forward+backward: semvis vs the torch.topk formulation (the peers' form) at BEAN shapes.

B=160, C=2400 (BEAN: ResNet-152 conv5 -> 1x1 conv to 2400), 8x8 (256 px training crops) and
13x13 (400 px test images); k = 1 (BEAN) and k = 30% of the map (WILDCAT-style).
"""
import pytest
import torch

import semvis_ext
from semvis_ext import reference as R

from conftest import LARGE, bench_devices, peak_memory, record, sync, timed

B, C = 160, 2400
CASES = [(8, 1), (13, 1), (8, 0.3), (13, 0.3)]


def _k_count(k, n):
    return k if isinstance(k, int) else max(1, int(k * n))


def _make(impl, x, k):
    n = x.shape[2] * x.shape[3]
    if impl == "semvis":
        return lambda t: semvis_ext.weldon_pool(t, k, k)
    kc = _k_count(k, n)
    return lambda t: R.weldon_pool_topk(t, kc, kc)


@pytest.mark.parametrize("device", bench_devices())
@pytest.mark.parametrize("side,k", CASES, ids=[f"{s}x{s}-k{k}" for s, k in CASES])
@pytest.mark.parametrize("impl", ["semvis", "torch.topk reference"])
def test_weldon_forward_backward(benchmark, impl, side, k, device):
    torch.manual_seed(0)
    x = torch.randn(B, C, side, side, device=device, requires_grad=True)
    g = torch.randn(B, C, device=device)
    fn = _make(impl, x, k)

    def step():
        x.grad = None
        fn(x).backward(g)

    step()  # warm-up (and allocator)
    sync(device)
    peak = peak_memory(step, device)
    sec = timed(benchmark, step, device, rounds=5 if LARGE else 3)
    group = f"weldon fwd+bwd {device} B={B} C={C} {side}x{side} k={k}"
    benchmark.group = group
    benchmark.extra_info.update(peak_extra_bytes=peak, input_bytes=x.numel() * 4)
    record(group, impl, sec, peak)
