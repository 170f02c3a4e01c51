"""vse_hardest_triplet_loss and triplet_margin_loss against VSE++ / per-triplet loops."""
import pytest
import torch
import torch.nn.functional as F

import semvis_ext as se
from semvis_ext import reference as R
from semvis_ext.ops.triplet_losses import _pair_backward, _triplet_loss, _vse_loss

from conftest import devices


def pair(B, d, dtype=torch.float32, device="cpu"):
    im = F.normalize(torch.randn(B, d, dtype=torch.float64), dim=1).to(dtype).to(device).requires_grad_()
    tx = F.normalize(torch.randn(B, d, dtype=torch.float64), dim=1).to(dtype).to(device).requires_grad_()
    return im, tx


def grads(loss, *xs):
    return torch.autograd.grad(loss, xs)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("max_violation", [True, False])
@pytest.mark.parametrize("B", [1, 2, 17, 64])
def test_vse_equals_vsepp(device, max_violation, B):
    im, tx = pair(B, 24, device=device)
    neg = "hardest" if max_violation else "all"
    ours = se.vse_hardest_triplet_loss(im, tx, 0.2, negatives=neg)
    ref = R.vse_contrastive_loss(im, tx, 0.2, max_violation)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    if B > 1:
        assert ref.item() > 0  # the comparison is not vacuous
    g1, g2 = grads(ours, im, tx), grads(ref, im, tx)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    mean = se.vse_hardest_triplet_loss(im, tx, 0.2, "mean", negatives=neg)
    torch.testing.assert_close(mean, ref / B, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("k", [1, 3, 40])
@pytest.mark.parametrize("both", [True, False])
def test_vse_khardest_labels_one_direction(device, k, both):
    B = 24
    im, tx = pair(B, 16, device=device)
    labels = torch.randint(0, 15, (B,), device=device)
    for lab in (None, labels):
        ours = se.vse_hardest_triplet_loss(im, tx, 0.3, both_directions=both, k=k, labels=lab)
        ref = R.vse_khardest_loss(im, tx, 0.3, k, lab, both)
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
        for a, b in zip(grads(ours, im, tx), grads(ref, im, tx)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    if not both:  # row term only = VSE++'s cost_s
        S = im @ tx.t()
        cs = (0.3 + S - S.diag().view(-1, 1)).clamp(min=0).masked_fill(torch.eye(B, dtype=torch.bool, device=device), 0)
        torch.testing.assert_close(se.vse_hardest_triplet_loss(im, tx, 0.3, both_directions=False),
                                   cs.max(1)[0].sum(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_vse_16bit(device, dtype):
    im, tx = pair(32, 64, dtype, device)
    ours = se.vse_hardest_triplet_loss(im, tx)
    assert ours.dtype == torch.float32
    ref = R.vse_contrastive_loss(im.float(), tx.float())
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-4)
    gi, gt = grads(ours, im, tx)
    ri, rt = grads(ref, im, tx)
    assert gi.dtype == dtype
    torch.testing.assert_close(gi.float(), ri.float(), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("device", devices())
def test_vse_gradcheck(device):
    im, tx = pair(9, 5, torch.float64, device)
    for kw in ({}, {"negatives": "all"}, {"k": 3, "reduction": "mean"}, {"both_directions": False}):
        assert torch.autograd.gradcheck(lambda a, b: se.vse_hardest_triplet_loss(a, b, 0.5, **kw), (im, tx))


def test_vse_opcheck_and_compile():
    im, tx = pair(12, 8)
    lab = torch.randint(0, 5, (12,))
    for args in ((im, tx, None, 0.2, 1, True, 1.0), (im, tx, lab, 0.2, 3, False, 0.5)):
        torch.library.opcheck(_vse_loss, args)
    loss, ei, ej, ew = _vse_loss(im.detach(), tx.detach(), None, 0.2, 1, True, 1.0)
    torch.library.opcheck(_pair_backward, (torch.tensor(1.0), im.detach(), tx.detach(), ei, ej, ew))
    fn = torch.compile(lambda a, b: se.vse_hardest_triplet_loss(a, b, 0.2), fullgraph=True)
    out = fn(im, tx)
    torch.testing.assert_close(out, R.vse_contrastive_loss(im, tx), rtol=1e-5, atol=1e-5)
    out.backward()
    assert im.grad is not None and im.grad.abs().sum() > 0


def test_vse_bad_inputs():
    im, tx = torch.randn(4, 8), torch.randn(4, 8)
    with pytest.raises(ValueError, match="same shape"):
        se.vse_hardest_triplet_loss(im, torch.randn(4, 7))
    with pytest.raises(ValueError, match="same shape"):
        se.vse_hardest_triplet_loss(im, torch.randn(5, 8))
    with pytest.raises(TypeError, match="same dtype"):
        se.vse_hardest_triplet_loss(im, tx.double())
    with pytest.raises(ValueError, match="reduction"):
        se.vse_hardest_triplet_loss(im, tx, reduction="avg")
    with pytest.raises(ValueError, match="negatives"):
        se.vse_hardest_triplet_loss(im, tx, negatives="semi")
    with pytest.raises(ValueError, match="k must be"):
        se.vse_hardest_triplet_loss(im, tx, k=0)
    with pytest.raises(ValueError, match="margin must be finite"):
        se.vse_hardest_triplet_loss(im, tx, margin=float("inf"))
    with pytest.raises(ValueError, match="non-empty"):
        se.vse_hardest_triplet_loss(im[:0], tx[:0])
    with pytest.raises(ValueError, match="labels"):
        se.vse_hardest_triplet_loss(im, tx, labels=torch.zeros(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="img must have dtype"):
        se.vse_hardest_triplet_loss(im.int(), tx.int())


# ---- triplet_margin_loss ---------------------------------------------------------------------

@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_triplet_loss_equals_loop(device, reduction):
    a = torch.randn(10, 12, device=device, requires_grad=True)
    c = torch.randn(30, 12, device=device, requires_grad=True)
    trip = torch.stack([torch.randint(0, 10, (50,)), torch.randint(0, 30, (50,)), torch.randint(0, 30, (50,))], 1)
    trip = trip.to(device)
    ours = se.triplet_margin_loss(a, c, trip, 1.0, reduction)
    ref = R.triplet_margin_loss(a, c, trip, 1.0, reduction)
    assert 0 < ref.item()
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    for x, y in zip(grads(ours, a, c), grads(ref, a, c)):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", devices())
def test_triplet_loss_shared_table_gradcheck_and_empty(device):
    x = torch.randn(8, 4, dtype=torch.float64, device=device, requires_grad=True)
    trip = torch.tensor([[0, 1, 2], [3, 4, 5], [0, 6, 7], [2, 2, 3]], device=device)
    assert torch.autograd.gradcheck(lambda t: se.triplet_margin_loss(t, t, trip, 2.0), (x,))
    empty = se.triplet_margin_loss(x, x, trip[:0], 0.1)
    assert empty.item() == 0.0 and empty.requires_grad
    (g,) = torch.autograd.grad(empty, x)
    assert torch.all(g == 0)


def test_triplet_loss_bf16_opcheck_compile_and_errors():
    a = torch.randn(6, 8).bfloat16().requires_grad_()
    trip = torch.tensor([[0, 1, 2], [3, 4, 5]])
    ours = se.triplet_margin_loss(a, a, trip, 5.0)
    torch.testing.assert_close(ours, R.triplet_margin_loss(a.float(), a.float(), trip, 5.0), rtol=1e-5, atol=1e-5)
    ours.backward()
    assert a.grad.dtype == torch.bfloat16
    torch.library.opcheck(_triplet_loss, (a.detach().float(), a.detach().float(), trip, 0.1, 0.5, True))
    fn = torch.compile(lambda t: _triplet_loss(t, t, trip, 5.0, 0.5, True)[0], fullgraph=True)
    torch.testing.assert_close(fn(a.detach().float()), ours)
    with pytest.raises(ValueError, match=r"triplets\[:, 1:\] holds candidate ids outside"):
        se.triplet_margin_loss(a, a, torch.tensor([[0, 1, 6]]))
    with pytest.raises(ValueError, match=r"triplets\[:, 0\]"):
        se.triplet_margin_loss(a, a, torch.tensor([[-1, 1, 2]]))
    with pytest.raises(ValueError, match=r"shape \[T, 3\]"):
        se.triplet_margin_loss(a, a, torch.tensor([[0, 1]]))
    with pytest.raises(TypeError, match="triplets must have dtype"):
        se.triplet_margin_loss(a, a, torch.tensor([[0.0, 1, 2]]))
    with pytest.raises(ValueError, match="same dimension"):
        se.triplet_margin_loss(a, torch.randn(6, 7).bfloat16(), trip)


def test_hardest_triplet_loss_module_warmup():
    im, tx = pair(10, 6)
    mod = se.nn.HardestTripletLoss(warmup_updates=1)
    first, second = mod(im, tx), mod(im, tx)
    torch.testing.assert_close(first, R.vse_contrastive_loss(im, tx, 0.2, False))
    torch.testing.assert_close(second, R.vse_contrastive_loss(im, tx, 0.2, True))
    assert first.item() > second.item()
    mod.eval()
    torch.testing.assert_close(mod(im, tx), second)


# ---- NaN policy: propagate as the definition does (issue 15.1) -------------------------------

@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", ["img", "txt"])
def test_vse_nonfinite_input_gives_nan_loss_and_grads(device, bad, where):
    im, tx = pair(9, 16, torch.float64, device)
    x = (im if where == "img" else tx).detach().clone()
    x[4, 3] = bad
    x.requires_grad_()
    args = (x, tx) if where == "img" else (im, x)
    for negatives, k in (("hardest", 1), ("hardest", 3), ("all", 1)):
        loss = se.vse_hardest_triplet_loss(*args, negatives=negatives, k=k)
        assert loss.isnan(), (negatives, k)
        g = torch.autograd.grad(loss, args)
        assert g[0].isnan().all() and g[1].isnan().all()
    if bad != bad:  # NaN: VSE++'s own definition gives NaN too
        assert R.vse_contrastive_loss(*args, 0.2, True).isnan()
        assert R.vse_contrastive_loss(*args, 0.2, False).isnan()


def test_vse_nan_out_of_play_does_not_matter():
    # B = 1: no negative, the definition gives 0 whatever the pair holds
    nan = torch.full((1, 4), float("nan"))
    assert se.vse_hardest_triplet_loss(nan, torch.randn(1, 4)) == 0
    # the in-play rule itself: a non-finite similarity only at a pair the labels mask is no negative
    from semvis_ext.ops.triplet_losses import _vse_nonfinite

    S = torch.randn(4, 4)
    labels = torch.tensor([0, 0, 1, 2])
    S[0, 1] = float("nan")
    assert not _vse_nonfinite(S, labels, True) and _vse_nonfinite(S, None, True)
    S[0, 1], S[3, 3] = 0.0, float("-inf")  # a positive of a query with negatives: in play
    assert _vse_nonfinite(S, labels, True) and _vse_nonfinite(S, labels, False)
    S[3, 3], S[2, 3] = 0.0, float("inf")  # a negative of column 3 (txt direction) and of row 2
    assert _vse_nonfinite(S, labels, False)
    S[2, 3] = 0.0
    assert not _vse_nonfinite(S, labels, True)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_triplet_margin_nonfinite_used_row_gives_nan(device, bad):
    a = torch.randn(6, 5, dtype=torch.float64, device=device)
    c = torch.randn(7, 5, dtype=torch.float64, device=device)
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]], device=device)
    for which, row in (("anchor", 3), ("positive", 4), ("negative", 2)):
        aa, cc = a.clone(), c.clone()
        (aa if which == "anchor" else cc)[row, 1] = bad
        aa.requires_grad_()
        cc.requires_grad_()
        loss = se.triplet_margin_loss(aa, cc, tri, reduction="sum")
        assert loss.isnan(), which
        ga, gc = torch.autograd.grad(loss, (aa, cc))
        assert ga[[0, 3]].isnan().all() and gc[[1, 2, 4, 5]].isnan().all()
        assert (ga[[1, 2, 4, 5]] == 0).all() and (gc[[0, 3, 6]] == 0).all()  # unused rows: no gradient
        if bad != bad:
            assert R.triplet_margin_loss(aa, cc, tri, reduction="sum").isnan()
    # a NaN in a row no triplet uses does not matter (the definition never reads it)
    aa = a.clone()
    aa[5] = float("nan")
    torch.testing.assert_close(se.triplet_margin_loss(aa, c, tri), R.triplet_margin_loss(a, c, tri))
    assert se.triplet_margin_loss(aa, c, tri[:0]) == 0
