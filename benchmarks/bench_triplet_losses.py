"""Triplet-loss benchmarks: VSE++ hardest-negative loss, forward + backward, ours vs the VSE++
``ContrastiveLoss(max_violation=True)`` formulation (``reference.vse_contrastive_loss``).

    pytest benchmarks/bench_triplet_losses.py --benchmark-only
"""
import pytest
import torch

import semvis_ext as se
from semvis_ext import reference as R

from conftest import bench_devices, sync

VSE_B, VSE_D = 160, 2400


def vse_inputs(device, B=VSE_B, d=VSE_D):
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(B, d, generator=g), dim=1).to(device).requires_grad_()
    txt = torch.nn.functional.normalize(torch.randn(B, d, generator=g), dim=1).to(device).requires_grad_()
    return img, txt


@pytest.mark.parametrize("device", bench_devices())
@pytest.mark.parametrize("who", ["ours", "vsepp"])
def test_vse_loss_fwd_bwd(benchmark, device, who):
    benchmark.group = f"vse hardest-negative loss fwd+bwd {device} B={VSE_B} d={VSE_D}"
    img, txt = vse_inputs(device)

    def call():
        img.grad = None
        txt.grad = None
        loss = se.vse_hardest_triplet_loss(img, txt) if who == "ours" else R.vse_contrastive_loss(img, txt)
        loss.backward()
        sync(device)
        return loss

    benchmark.pedantic(call, rounds=30, warmup_rounds=3)
