"""semvis.models.sodeep (sorters, synthetic sequences, pretraining) and semvis.losses.sodeep."""
import pytest
import torch

from semvis.losses.sodeep import MAPRankLoss, RankHardLoss, SpearmanLoss
from semvis.models.sodeep import (SEQUENCE_KINDS, CNNSorter, HandcraftedSorter, LSTMSorter, build_sorter,
                                  evaluate_sorter, load_sorter, pretrain_sorter, rank_targets, sorter_state,
                                  synthetic_sequences)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # tiny networks: one intra-op thread is faster and immune to a loaded machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _sorters(n=12):
    return [HandcraftedSorter(), LSTMSorter(n, hidden=16, layers=2), CNNSorter(n)]


def test_rank_targets_official_convention():
    y = torch.tensor([[0.3, -2.0, 5.0, 0.31], [1.0, 1.0, 0.0, 2.0]])
    torch.testing.assert_close(rank_targets(y), torch.tensor([[0.75, 1.0, 0.25, 0.5], [0.5, 0.75, 1.0, 0.25]]))


def test_synthetic_sequences_kinds_and_determinism():
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    a, b = synthetic_sequences(64, 20, generator=g()), synthetic_sequences(64, 20, generator=g())
    assert a.shape == (64, 20) and torch.equal(a, b)
    u = synthetic_sequences(50, 30, kind="uniform", generator=g())
    assert u.min() >= -1 and u.max() <= 1
    ramp = synthetic_sequences(4, 10, kind="fixed_ramp")
    torch.testing.assert_close(ramp[0], torch.arange(-1, 1, 0.2))
    r = synthetic_sequences(8, 10, kind="ramp", generator=g())
    d = torch.diff(r, dim=1)
    assert torch.all((d >= 0).all(1) | (d <= 0).all(1))  # monotone rows
    sr = synthetic_sequences(8, 10, kind="shuffled_ramp", generator=g())
    # the same draws: the shuffled ramp is a permutation of the ramp
    torch.testing.assert_close(torch.sort(sr, 1).values, torch.sort(r, 1).values)
    assert not torch.equal(sr, r)
    for k in SEQUENCE_KINDS:
        assert torch.isfinite(synthetic_sequences(3, 7, kind=k)).all()
    with pytest.raises(ValueError, match="kind"):
        synthetic_sequences(2, 5, kind="cauchy")
    with pytest.raises(ValueError, match="length"):
        synthetic_sequences(2, 0)


@pytest.mark.parametrize("idx", range(3))
def test_sorters_shapes_and_gradients(idx):
    s = _sorters()[idx]
    y = synthetic_sequences(5, 12).requires_grad_()
    r = s(y)
    assert r.shape == (5, 12)
    r.sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all()


@pytest.mark.parametrize("cls", [LSTMSorter, CNNSorter])
def test_learned_sorter_refuses_other_lengths_with_its_length(cls):
    s = cls(12) if cls is CNNSorter else cls(12, hidden=8)
    with pytest.raises(ValueError, match="length 12, got length 20"):
        s(torch.randn(3, 20))
    with pytest.raises(ValueError, match="length 12, got length 5"):
        s(torch.randn(3, 5))
    with pytest.raises(TypeError, match="floating"):
        s(torch.ones(2, 12, dtype=torch.int64))


def test_handcrafted_sorter_matches_its_definition_and_any_length():
    s = HandcraftedSorter(lam=10.0)
    y = torch.randn(3, 9)
    expect = (1 + torch.sigmoid(10 * (y[:, None, :] - y[:, :, None])).sum(-1) - 0.5) / 9
    torch.testing.assert_close(s(y), expect)
    assert s(torch.randn(2, 41)).shape == (2, 41)
    with pytest.raises(ValueError, match="finite"):
        s(torch.tensor([[0.0, float("nan")]]))


def test_pretraining_reduces_the_l1_and_beats_an_untrained_sorter():
    torch.manual_seed(0)
    s = CNNSorter(10, widths=(4, 8, 8, 8, 8, 8, 8, 4))
    before = evaluate_sorter(s, num=300)
    hist = pretrain_sorter(s, epochs=2, steps_per_epoch=40, batch_size=64, lr=3e-3, progress=False)
    after = evaluate_sorter(s, num=300)
    assert len(hist) == 2 and hist[1] < hist[0]
    assert after < 0.6 * before
    # the handcrafted sorter needs no training and is refused
    with pytest.raises(ValueError, match="no trainable"):
        pretrain_sorter(HandcraftedSorter(), progress=False)


def test_evaluate_sorter_handcrafted_close_to_table_5_1():
    # thesis Table 5.1: 0.035 for the handcrafted sorter at d = 100
    l1 = evaluate_sorter(HandcraftedSorter(), num=300, seq_len=100)
    assert 0.005 < l1 < 0.06


def test_sorter_state_roundtrip(tmp_path):
    for s in (LSTMSorter(8, hidden=6), CNNSorter(8), HandcraftedSorter(3.0)):
        s.eval()
        path = tmp_path / "s.pt"
        torch.save(sorter_state(s), path)
        t = load_sorter(str(path)).eval()
        y = torch.randn(4, 8)
        torch.testing.assert_close(s(y), t(y))
    with pytest.raises(ValueError, match="not a sorter checkpoint"):
        load_sorter({"state_dict": {}})
    with pytest.raises(ValueError, match="unknown sorter"):
        build_sorter("transformer")


# ---------------------------------------------------------------------------------------- losses

@pytest.mark.parametrize("idx", range(3))
def test_spearman_loss_with_each_sorter(idx):
    sorter = _sorters()[idx]
    target = torch.randn(12)
    loss = SpearmanLoss(sorter, l1_weight=1.0)
    pred = target.clone().requires_grad_()
    v = loss(pred, target)
    v.backward()
    assert torch.isfinite(pred.grad).all()
    loss.end_warmup()
    assert loss.l1_weight == 0.0
    if idx == 0:
        # perfect order beats reversed order with the handcrafted sorter
        assert loss(target, target) < loss(-target, target)


def test_spearman_loss_value():
    sorter = HandcraftedSorter(lam=10.0)
    p, t = torch.randn(2, 6), torch.randn(2, 6)
    expect = ((sorter(p) - rank_targets(t)) ** 2).mean() + 0.5 * (p - t).abs().mean()
    torch.testing.assert_close(SpearmanLoss(sorter, l1_weight=0.5)(p, t), expect)


@pytest.mark.parametrize("idx", range(3))
def test_map_loss_with_each_sorter(idx):
    sorter = _sorters()[idx]
    scores = torch.randn(12, 3, requires_grad=True)
    labels = torch.zeros(12, 3)
    labels[[0, 4], 0] = 1
    labels[5, 2] = 1  # class 1 has no positive: skipped
    v = MAPRankLoss(sorter)(scores, labels)
    expect = (sorter(scores.t()[[0, 2]]) * labels.t()[[0, 2]]).sum()
    torch.testing.assert_close(v, expect)
    v.backward()
    assert scores.grad[:, 1].abs().sum() == 0


def test_map_loss_prefers_positives_on_top():
    sorter = HandcraftedSorter(lam=20.0)
    labels = torch.tensor([[1.0], [1.0], [0.0], [0.0]])
    good = torch.tensor([[0.9], [0.8], [0.1], [0.0]])
    loss = MAPRankLoss(sorter, reduction="mean")
    assert loss(good, labels) < loss(-good, labels)
    assert MAPRankLoss(sorter)(good, torch.zeros(4, 1)).item() == 0.0
    with pytest.raises(ValueError, match="0 or 1"):
        loss(good, labels * 2)


@pytest.mark.parametrize("idx", range(3))
def test_rank_hard_loss_with_each_sorter(idx):
    sorter = _sorters()[idx]
    S = torch.randn(12, 12, requires_grad=True)
    v = RankHardLoss(sorter)(S)
    v.backward()
    assert torch.isfinite(S.grad).all()


def test_rank_hard_loss_value_and_margin():
    sorter = HandcraftedSorter(lam=50.0)
    d = 6
    S = torch.eye(d) * 2 + torch.randn(d, d) * 0.01  # positives far on top: no violation
    assert RankHardLoss(sorter)(S).item() == pytest.approx(0.0, abs=1e-6)
    S = torch.randn(d, d)
    r1, r2 = sorter(S), sorter(S.t())

    def one(r):
        hn = r.masked_fill(torch.eye(d, dtype=torch.bool), float("inf")).min(1).values
        return torch.clamp(r.diagonal() + 1.0 / d - hn, min=0).sum()

    torch.testing.assert_close(RankHardLoss(sorter)(S), one(r1) + one(r2))
    with pytest.raises(ValueError, match="square"):
        RankHardLoss(sorter)(torch.randn(3, 4))
    with pytest.raises(ValueError, match="length 12"):
        RankHardLoss(CNNSorter(12))(torch.randn(8, 8))
