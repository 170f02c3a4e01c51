"""SoDeep's handcrafted sorter, forward+backward: semvis vs the dense [B, n, n] torch form vs
torchsort's soft_rank (when installed) vs exact ranks (argsort, forward only, no gradient).

Speed at B = 128, n in {100, 1000}; n = 10,000 runs ours only (B = 8 by default, 128 with
SEMVIS_BENCH_SIZE=large): the dense form would need B * n^2 * 4 bytes (3.2 GB at B = 8, 51 GB at
B = 128) per pairwise tensor. Quality is printed per n: the Spearman correlation of each soft
rank with the exact ranks, and the mean L1 between normalised ranks (A.10.1's measure).
"""
import pytest
import torch

import semvis_ext
from semvis_ext.reference.soft_rank import exact_rank, soft_rank as dense

from conftest import LARGE, bench_devices, peak_memory, record, timed

try:
    import torchsort
except Exception:  # not installed (an optional peer)
    torchsort = None


# torchsort's l2 regularisation acts on the score scale: with scores in [-1, 1] (spacing 2/n) a
# strength of 1e-3 gives soft ranks as close to the exact ones as ours at lam = 10 (see the printed
# Spearman / L1); its default 1.0 collapses them towards the mean rank.
TORCHSORT_STRENGTH = 1e-3


def _torchsort_desc(s):
    """torchsort's ascending 1-based soft ranks in our convention: (1 + descending rank) / n."""
    n = s.shape[-1]
    return (n + 1 - torchsort.soft_rank(s, regularization_strength=TORCHSORT_STRENGTH)) / n


IMPLS = {
    "semvis": lambda s: semvis_ext.soft_rank(s, lam=10.0),
    "dense torch": lambda s: dense(s, lam=10.0),
    "exact (argsort, no grad)": exact_rank,
}
if torchsort is not None:
    IMPLS["torchsort soft_rank"] = _torchsort_desc

CASES = [(128, 100), (128, 1000), (128 if LARGE else 8, 10000)]


def _spearman(a, b):
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    return ((a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))).mean().item()


@pytest.mark.parametrize("device", bench_devices())
@pytest.mark.parametrize("B,n", CASES, ids=[f"B{b}-n{n}" for b, n in CASES])
@pytest.mark.parametrize("impl", list(IMPLS))
def test_soft_rank_forward_backward(benchmark, impl, B, n, device):
    if n >= 10000 and impl == "dense torch":
        pytest.skip(f"dense form needs {B * n * n * 4 / 2**30:.1f} GiB per [B, n, n] tensor")
    torch.manual_seed(0)
    s = torch.rand(B, n, device=device) * 2 - 1  # scores in [-1, 1], as a cosine
    fn = IMPLS[impl]
    grad = impl != "exact (argsort, no grad)"
    x = s.clone().requires_grad_(grad)
    g = torch.randn(B, n, device=device)

    def step():
        x.grad = None
        y = fn(x)
        if grad:
            y.backward(g)

    step()
    peak = peak_memory(step, device)
    sec = timed(benchmark, step, device, rounds=3 if n < 10000 else 1, warmup=0 if n >= 10000 else 1)
    with torch.no_grad():
        soft, hard = fn(s), exact_rank(s)
    quality = {"spearman_vs_exact": _spearman(soft, hard), "l1_vs_exact": (soft - hard).abs().mean().item()}
    group = f"soft_rank fwd+bwd {device} B={B} n={n}"
    benchmark.group = group
    benchmark.extra_info.update(peak_extra_bytes=peak, **quality)
    record(group, f"{impl} [rho={quality['spearman_vs_exact']:.4f} L1={quality['l1_vs_exact']:.4f}]"
           if impl != "semvis" else "semvis", sec, peak)
    if impl == "semvis":
        print(f"\nsemvis soft_rank B={B} n={n}: rho={quality['spearman_vs_exact']:.4f} "
              f"L1={quality['l1_vs_exact']:.4f}")
