"""semvis.losses: L_v, L_t1, L_t2 and θ(t) against the equations of seed 000.7, per triplet."""
import pytest
import torch
import torch.nn.functional as F

import semvis_ext as se
from semvis.losses import JointTripletLoss, TextProjection, TripletLoss, build_loss


def hinge(a, p, n, m):
    return 0.5 * torch.clamp(m - (a * p).sum(1) + (a * n).sum(1), min=0)


def streams(B=12, D=8, dtype=torch.float64):
    return [F.normalize(torch.randn(B, D, dtype=dtype), dim=1).requires_grad_() for _ in range(6)]


def test_joint_loss_equals_equations():
    pq, pp, pn, tq, tp, tn = streams()
    m = 0.3
    ours = JointTripletLoss(m)(pq, pp, pn, tq, tp, tn)
    ref = hinge(pq, pp, pn, m).mean() + hinge(pq, tp, tn, m).mean() + hinge(tq, pp, pn, m).mean()
    assert ref.item() > 0
    torch.testing.assert_close(ours, ref)
    g1 = torch.autograd.grad(ours, (pq, tp, tq))
    g2 = torch.autograd.grad(ref, (pq, tp, tq))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(build_loss("wsabie", m)(pq, pp, pn, tq, tp, tn), hinge(pq, tp, tn, m).mean())
    torch.testing.assert_close(TripletLoss(m)(pq, pp, pn), hinge(pq, pp, pn, m).mean())
    assert torch.autograd.gradcheck(lambda a, b, c: JointTripletLoss(0.5)(a, b, c, tq, tp, tn), (pq, pp, pn))
    with pytest.raises(ValueError, match="unknown loss 'vt'"):
        build_loss("vt")
    with pytest.raises(ValueError, match="needs theta_q"):
        JointTripletLoss(m, terms=("t2",))(pq, pp, pn)


def test_indexed_triplets_from_mining():
    x = F.normalize(torch.randn(40, 6), dim=1).requires_grad_()
    rel = [[1, 2], [0], [3, 7]]
    trip = se.hard_triplets(x[:3].detach(), x.detach(), rel, 0.2, 5, query_ids=torch.arange(3))
    loss = TripletLoss(0.2).forward_indexed(x, x, trip)
    ref = hinge(x[trip[:, 0]], x[trip[:, 1]], x[trip[:, 2]], 0.2).mean()
    torch.testing.assert_close(loss, ref)
    assert trip.shape[0] > 0 and torch.all(trip[:, 2] != trip[:, 0])


def test_text_projection_sparse_equals_dense():
    V, D = 30, 7
    proj = TextProjection(V, D)
    t = torch.rand(5, V) * (torch.rand(5, V) < 0.2)
    t[2] = 0  # no known word
    t = F.normalize(t, dim=1)
    dense = proj(t)
    sparse = proj(t.to_sparse_csr())
    torch.testing.assert_close(dense, sparse)
    assert torch.all(dense[2] == 0)
    ok = torch.ones(5, dtype=torch.bool)
    ok[2] = False
    torch.testing.assert_close(dense[ok].norm(dim=1), torch.ones(4))
    torch.testing.assert_close(dense, F.normalize(t @ proj.weight, dim=1))
    sparse.sum().backward()
    assert proj.weight.grad is not None
    with pytest.raises(ValueError, match=r"shape \[B, 30\]"):
        proj(torch.rand(2, 29))
