"""WELDON forward+backward: semvis vs the torch.topk formulation (the peers' form) at BEAN shapes.

B=160, C=2400 (BEAN: ResNet-152 conv5 -> 1x1 conv to 2400), 8x8 (256 px training crops) and
13x13 (400 px test images); k = 1 (BEAN) and k = 30% of the map (WILDCAT-style).

``python benchmarks/bench_weldon.py [--batch 64] [--side 13] [--rounds 5]`` runs the contenders
interleaved (ours in both forms, then torch.topk, round after round) and prints the best time of
each and the ratios: the figures of benchmarks/RESULTS.md (issue 16).
"""
import time

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


def interleaved(batch=64, side=13, rounds=5, device="cpu"):
    """Best-of-`rounds` forward+backward times (s) per (k, contender), contenders interleaved."""
    torch.manual_seed(0)
    x = torch.randn(batch, C, side, side, device=device, requires_grad=True)
    g = torch.randn(batch, C, device=device)
    rows = []
    for k in (1, 0.3):
        kc = _k_count(k, side * side)
        fns = {
            "ours dsve": lambda: semvis_ext.weldon_pool(x, k, k),
            "ours wildcat": lambda: semvis_ext.weldon_pool(x, k, k, form="wildcat"),
            "torch.topk": lambda: R.weldon_pool_topk(x, kc, kc),
        }
        best = {}
        for r in range(rounds + 1):  # round 0 warms up
            for name, fn in fns.items():
                x.grad = None
                sync(device)
                t = time.perf_counter()
                fn().backward(g)
                sync(device)
                if r:
                    best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
        rows.append((k, best))
    return rows


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--side", type=int, default=13)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    for k, best in interleaved(a.batch, a.side, a.rounds, a.device):
        ref = best["torch.topk"]
        print(f"{a.batch} x {C} x {a.side} x {a.side} k={k}: "
              + ", ".join(f"{n} {v * 1e3:.1f} ms" for n, v in best.items())
              + f" | ratio dsve {ref / best['ours dsve']:.2f}x wildcat {ref / best['ours wildcat']:.2f}x", flush=True)
