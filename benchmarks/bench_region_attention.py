"""SMILE region self-attention forward+backward: semvis vs the torch softmax / mul / sum formulation.

The thesis' batch: B = 192 images, R = 36 bottom-up regions, d = 2400 (default size; the large
size adds the masked variant with random region counts). Memory: the bytes the forward keeps alive
for the backward beyond the inputs G and L (counted with saved-tensor hooks: our two [B, d]
statistics; torch's [B, R, d] weights and more), relative to the size of G.
"""
import pytest
import torch

import semvis_ext
from semvis_ext.reference.region_attention import region_attention as ref_masked

from conftest import LARGE, bench_devices, record, timed

B, R, D = 192, 36, 2400


def _torch_form(G, L, lengths):
    if lengths is None:
        return (torch.softmax(L, dim=1) * G).sum(1)
    return ref_masked(G, L, lengths)


IMPLS = {
    "semvis": lambda G, L, lengths: semvis_ext.region_attention(G, L, lengths),
    "torch softmax/mul/sum": _torch_form,
}
MASKS = [False, True] if LARGE else [False]


@pytest.mark.parametrize("device", bench_devices())
@pytest.mark.parametrize("masked", MASKS, ids=lambda m: "masked" if m else "full")
@pytest.mark.parametrize("impl", list(IMPLS))
def test_region_attention_forward_backward(benchmark, impl, masked, device):
    torch.manual_seed(0)
    G = torch.randn(B, R, D, device=device).requires_grad_()
    L = torch.randn(B, R, D, device=device).requires_grad_()
    lengths = torch.randint(10, R + 1, (B,), device=device) if masked else None
    g = torch.randn(B, D, device=device)
    fn = IMPLS[impl]

    def step():
        G.grad = L.grad = None
        fn(G, L, lengths).backward(g)

    step()
    inputs = {G.untyped_storage().data_ptr(), L.untyped_storage().data_ptr()}
    saved = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in inputs:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(G, L, lengths)
    peak_fwd = sum(saved.values())
    sec = timed(benchmark, step, device, rounds=5)
    group = f"region_attention fwd+bwd {device} B={B} R={R} d={D} {'masked' if masked else 'full'}"
    benchmark.group = group
    g_bytes = G.numel() * G.element_size()
    benchmark.extra_info.update(saved_extra_bytes=peak_fwd, G_bytes=g_bytes, saved_extra_over_G=peak_fwd / g_bytes)
    record(group, f"{impl} [saved {100 * peak_fwd / g_bytes:.1f}% of G]" if impl != "semvis" else impl, sec, peak_fwd)
    if impl == "semvis":
        print(f"\nsemvis region_attention saves {peak_fwd} bytes = {100 * peak_fwd / g_bytes:.2f}% of G")
