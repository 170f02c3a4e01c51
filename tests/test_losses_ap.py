"""semvis.losses.APLoss / FastAPLoss on batches of embeddings, and the AP training example."""
import pytest
import torch

from semvis.losses import APLoss, FastAPLoss, get_loss
from semvis_ext import reference as R


def _batch(B=12, D=6, C=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    e = torch.nn.functional.normalize(torch.randn(B, D, generator=g, dtype=torch.float64), dim=1)
    return e, torch.randint(0, C, (B,), generator=g)


def test_in_batch_excludes_self_and_matches_reference():
    e, lab = _batch()
    B = e.shape[0]
    off = ~torch.eye(B, dtype=torch.bool)
    scores = (e @ e.t())[off].view(B, B - 1)
    rel = (lab.view(-1, 1) == lab.view(1, -1))[off].view(B, B - 1)
    x = e.clone().requires_grad_()
    loss = APLoss()(x, lab)
    assert loss.item() == pytest.approx(R.ap_loss(scores, rel).item(), abs=1e-12)
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert torch.autograd.gradcheck(lambda t: APLoss(bins=10)(t, lab), (e.clone().requires_grad_(),))


def test_query_database_and_graded_relevance():
    q, ql = _batch(5, seed=1)
    db, dl = _batch(30, seed=2)
    loss = APLoss(bins=25)(q, ql, db_embeddings=db, db_labels=dl)
    rel = ql.view(-1, 1) == dl.view(1, -1)
    assert loss.item() == pytest.approx(R.ap_loss(q @ db.t(), rel, 25).item(), abs=1e-12)
    w = torch.rand(5, 30, dtype=torch.float64)
    loss = APLoss()(q, relevance=w, db_embeddings=db)
    assert loss.item() == pytest.approx(R.ap_loss(q @ db.t(), w).item(), abs=1e-12)


def test_normalize_and_fastap():
    e, lab = _batch(16, seed=3)
    raw = e * 3.0
    assert APLoss(normalize=True)(raw, lab).item() == pytest.approx(APLoss()(e, lab).item(), abs=1e-12)
    assert FastAPLoss(bins=10)(raw, lab).item() == pytest.approx(R.fast_ap_loss_kunhe(e, lab, 10).item(), abs=1e-9)
    assert isinstance(get_loss("ap", bins=7), APLoss)
    with pytest.raises(ValueError, match="known"):
        get_loss("apl")


def test_bad_batches():
    e, lab = _batch()
    with pytest.raises(ValueError, match="exactly one"):
        APLoss()(e)
    with pytest.raises(ValueError, match="at least 2"):
        APLoss()(e[:1], lab[:1])
    with pytest.raises(ValueError, match="db_labels"):
        APLoss()(e, lab, db_embeddings=e)
    with pytest.raises(ValueError, match="relevance must have shape"):
        APLoss()(e, relevance=torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="reduction"):
        APLoss(reduction="avg")


def test_training_example_improves_map():
    from semvis.train.listwise import train

    hist = train(steps=20, eval_every=20, log=lambda *_: None)
    (_, _, m0), (_, _, m1) = hist[0], hist[-1]
    assert m1 > m0 + 0.08, hist


def test_listwise_trainer_resume_and_old_import_path(tmp_path):
    from semvis.train import ListwiseConfig, ListwiseTrainer, Trainer
    from semvis.train import ap_example

    assert ap_example.train is __import__("semvis.train.listwise", fromlist=["train"]).train
    cfg = ListwiseConfig(steps=4, eval_every=2, per_class=3, num_classes=4, test_per_class=3, progress=False,
                         out_dir=str(tmp_path), checkpoint_every=2)
    a = ListwiseTrainer(cfg)
    assert isinstance(a, Trainer)
    a.fit()
    b = ListwiseTrainer(cfg.replace(out_dir=str(tmp_path / "b")))
    b.fit(until=2)
    c = ListwiseTrainer.resume(str(tmp_path / "b" / "checkpoint.pt"))
    c.fit()
    assert [h["loss"] for h in a.history] == [h["loss"] for h in c.history]
    assert [h["step"] for h in c.history if "test_map" in h] == [2, 4]


def test_multistage_backward_equals_full_batch_backward():
    from semvis.data.synthetic_patterns import SyntheticPatterns
    from semvis.models.small import SmallMACNet
    from semvis.train.listwise import multistage_backward

    torch.manual_seed(0)
    net = SmallMACNet(dim=8, width=4).double()
    data = SyntheticPatterns(num_classes=4, size=12)
    labels = torch.arange(4).repeat_interleave(5)
    x = data.sample(labels, torch.Generator().manual_seed(1)).double()
    loss_fn = APLoss(bins=10)
    full = loss_fn(net(x), labels)
    full.backward()
    expect = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    loss = multistage_backward(net, x, lambda e: loss_fn(e, labels), chunk_size=3)
    assert loss.item() == pytest.approx(full.item(), abs=1e-12)
    for p, e in zip(net.parameters(), expect):
        assert torch.allclose(p.grad, e, atol=1e-12, rtol=1e-9)
    with pytest.raises(ValueError, match="chunk_size"):
        multistage_backward(net, x, lambda e: loss_fn(e, labels), chunk_size=0)
