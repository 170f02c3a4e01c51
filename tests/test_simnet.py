"""SimNet (Garcia thesis ch. 3): the tiled database scoring equals the pairwise network."""
import math

import pytest
import torch

from semvis.models.simnet import SimNet, difficult_pairs, random_pairs, simnet_loss


def _dense_scores(net, q, db):
    Q, N = q.shape[0], db.shape[0]
    pairs = torch.cat([q.repeat_interleave(N, 0), db.repeat(Q, 1)], 1)
    with torch.no_grad():
        return net(pairs).view(Q, N)


def _ref_topk(S, k):
    # ties to the lowest index: a stable sort of the descending scores
    order = torch.sort(S, dim=1, descending=True, stable=True).indices[:, :k]
    return S.gather(1, order), order


@pytest.mark.parametrize("Q,N,k,tile", [(7, 50, 5, 64), (1, 1, 1, 1), (5, 33, 33, 10), (3, 20, 1, 1000), (4, 9, 4, 7)])
def test_topk_equals_pairwise(Q, N, k, tile):
    torch.manual_seed(Q * 100 + N)
    net = SimNet(6, hidden=(16, 8)).double()
    q, db = torch.randn(Q, 6, dtype=torch.float64), torch.randn(N, 6, dtype=torch.float64)
    D, I = net.topk(q, db, k, tile_pairs=tile)
    rD, rI = _ref_topk(_dense_scores(net, q, db), k)
    torch.testing.assert_close(D, rD, rtol=1e-10, atol=1e-10)
    assert torch.equal(I, rI)


def test_topk_float32_matches_to_rounding_and_score():
    torch.manual_seed(0)
    net = SimNet(16, hidden=(32, 32))
    q, db = torch.randn(10, 16), torch.randn(200, 16)
    D, I = net.topk(q, db, 10, tile_pairs=300)
    S = _dense_scores(net, q, db)
    torch.testing.assert_close(D, S.gather(1, I), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(D, S.topk(10, dim=1).values, rtol=1e-5, atol=1e-5)
    assert (D[:, :-1] >= D[:, 1:]).all() and len(set(I[0].tolist())) == 10
    torch.testing.assert_close(net.score(q[:3], db[:3]), torch.diagonal(S[:3, :3]), rtol=1e-5, atol=1e-5)


def test_ties_go_to_lowest_index_and_padding():
    torch.manual_seed(1)
    net = SimNet(4, hidden=(8,)).double()
    db = torch.randn(3, 4, dtype=torch.float64).repeat(4, 1)  # every row 4 times: exact ties
    q = torch.randn(2, 4, dtype=torch.float64)
    D, I = net.topk(q, db, 12, tile_pairs=5)
    rD, rI = _ref_topk(_dense_scores(net, q, db), 12)
    assert torch.equal(I, rI)
    D, I = net.topk(q, db, 15)
    assert (I[:, 12:] == -1).all() and torch.isinf(D[:, 12:]).all() and (D[:, 12:] < 0).all()
    D, I = net.topk(q[:0], db, 3)
    assert D.shape == (0, 3) and I.shape == (0, 3)


def test_database_half_cache_follows_weights():
    torch.manual_seed(2)
    net = SimNet(4, hidden=(8, 8)).double()
    q, db = torch.randn(3, 4, dtype=torch.float64), torch.randn(10, 4, dtype=torch.float64)
    net.topk(q, db, 2)
    with torch.no_grad():
        net.layers[0].weight.add_(0.5)  # an optimiser step changes the weights in place
    D, I = net.topk(q, db, 10)
    rD, rI = _ref_topk(_dense_scores(net, q, db), 10)
    torch.testing.assert_close(D, rD)
    with torch.no_grad():
        db.mul_(2)  # the database changes in place
    D, _ = net.topk(q, db, 10)
    torch.testing.assert_close(D, _ref_topk(_dense_scores(net, q, db), 10)[0])


def test_bad_input():
    net = SimNet(4, hidden=(8,))
    with pytest.raises(ValueError, match="dim must be an int >= 1"):
        SimNet(0)
    with pytest.raises(ValueError, match="hidden"):
        SimNet(4, hidden=())
    with pytest.raises(ValueError, match="q must have 4 columns"):
        net.topk(torch.randn(2, 5), torch.randn(3, 4), 1)
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        net.topk(torch.randn(2, 4), torch.randn(3, 4), 0)
    with pytest.raises(TypeError, match="db must be floating point"):
        net.topk(torch.randn(2, 4), torch.ones(3, 4, dtype=torch.int64), 1)
    with pytest.raises(ValueError, match="same rows"):
        net.score(torch.randn(2, 4), torch.randn(3, 4))
    with pytest.raises(ValueError, match="reduction"):
        simnet_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2, dtype=torch.bool), reduction="max")


def test_loss_eq_3_2_and_warmup_learns_cosine():
    s = torch.tensor([0.5, 0.5])
    cos = torch.tensor([0.2, 0.2])
    m = torch.tensor([True, False])
    assert torch.allclose(simnet_loss(s, cos, m, delta=0.8, reduction="none"), torch.tensor([0.5, 1.1]))
    torch.manual_seed(3)
    g = torch.Generator().manual_seed(3)
    net = SimNet(8, hidden=(64, 64))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xi, xj, cos = random_pairs(4000, 8, generator=g)
    first = None
    for step in range(300):
        b = torch.randint(0, 4000, (128,), generator=g)
        loss = simnet_loss(net.score(xi[b], xj[b]), cos[b], torch.zeros(128, dtype=torch.bool), delta=0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    xi, xj, cos = random_pairs(1000, 8, generator=g)
    with torch.no_grad():
        s = net.score(xi, xj)
    rho = torch.corrcoef(torch.stack([s, cos]))[0, 1].item()
    assert rho > 0.9, rho  # imitates the cosine after the warm-up (the thesis: rho 0.965 at full size)


def test_difficult_pairs_against_brute_force():
    torch.manual_seed(4)
    net = SimNet(5, hidden=(8,)).double()
    x = torch.randn(12, 5, dtype=torch.float64)
    labels = torch.arange(12) % 3
    i, j, m = difficult_pairs(net, x, labels, per_query=100, tile_pairs=17)
    S = _dense_scores(net, x, x)
    xn = torch.nn.functional.normalize(x, dim=1)
    C = xn @ xn.t()
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(12, dtype=torch.bool)
    want = {(a, b, True) for a, b in zip(*torch.nonzero(same & ~eye & (S < C), as_tuple=True))}
    want |= {(a, b, False) for a, b in zip(*torch.nonzero(~same & (S > C), as_tuple=True))}
    want = {(int(a), int(b), bool(c)) for a, b, c in want}
    got = {(int(a), int(b), bool(c)) for a, b, c in zip(i, j, m)}
    assert got == want and len(got) > 0


def test_mine_pairs_equals_the_definition_on_its_candidates():
    import semvis_ext
    torch.manual_seed(5)
    net = SimNet(6, hidden=(8,))
    with torch.no_grad():
        net.out.bias.fill_(0.3)  # scores near 0.3: both kinds of difficult pairs exist
    x = torch.randn(20, 6)
    labels = torch.tensor([0, 1, 2, 3] * 5)
    from semvis.models.simnet import mine_pairs
    i, j, m = mine_pairs(net, x, labels, k=3)
    got = {(int(a), int(b), bool(c)) for a, b, c in zip(i, j, m)}
    xn = torch.nn.functional.normalize(x, dim=1)
    C = xn @ xn.t()
    S = _dense_scores(net, x, x)
    want = set()
    for a in range(20):
        negs = [b for b in range(20) if labels[b] != labels[a]]
        negs = sorted(negs, key=lambda b: (-float(C[a, b]), b))[:3]
        for b in negs:
            if S[a, b] > C[a, b]:
                want.add((a, b, False))
        for b in range(20):
            if b != a and labels[b] == labels[a] and S[a, b] < C[a, b]:
                want.add((a, b, True))
    assert got == want and any(c for _, _, c in got) and any(not c for _, _, c in got)


def test_simnet_trainer_learns_and_resumes(tmp_path):
    from semvis.train.simnet import SimNetConfig, SimNetTrainer
    cfg = SimNetConfig.preset("synthetic", steps=240, warmup_steps=40, hidden=[64, 64], synthetic_classes=12,
                              synthetic_per_class=8, dim=16, progress=False, threads=1, mine_at=0.5,
                              out_dir=str(tmp_path / "a"))
    tr = SimNetTrainer(cfg)
    tr.fit()
    ev = tr.evaluate()
    assert tr.hard is not None and ev["queries"] == 48
    assert 0 < ev["map_cosine"] <= 1 and 0 < ev["map_simnet"] <= 1
    # resume from the middle equals the straight run
    t2 = SimNetTrainer(cfg.replace(out_dir=str(tmp_path / "b")))
    t2.fit(until=160)  # stopped after the mining round
    t3 = SimNetTrainer.resume(str(tmp_path / "b" / "checkpoint.pt"))
    assert t3.step == 160 and t3.hard is not None
    t3.fit()
    for p, q in zip(tr.model.parameters(), t3.model.parameters()):
        torch.testing.assert_close(p, q)


def test_cli_train_eval_search(tmp_path, capsys):
    import json
    from semvis.cli import main

    run = tmp_path / "run"
    common = ["--set", "steps=60", "--set", "warmup_steps=20", "--set", "hidden=[32]", "--set", "synthetic_classes=6",
              "--set", "synthetic_per_class=6", "--set", "dim=8"]
    assert main(["simnet", "train", *common, "-o", str(run), "--quiet", "--json"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["steps"] == 60 and 0 < last["map_cosine"] <= 1
    ck = str(run / "checkpoint.pt")
    assert main(["simnet", "eval", ck, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["map_simnet"] == last["map_simnet"]
    assert main(["simnet", "search", ck, "--query", "0", "-k", "4", "--json"]) == 0
    hits = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert len(hits) == 4 and hits[0]["score"] >= hits[-1]["score"]
    assert main(["simnet", "search", ck, "--query", "999"]) == 2
    assert "--query must be a test descriptor index" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    assert main(["simnet", "train", "--set", f"data={bad}"]) == 2
    assert "not a readable .npz" in capsys.readouterr().err


def test_landmark_descriptors_feed_the_trainer(tmp_path):
    from semvis.train.simnet import SimNetConfig, SimNetTrainer, landmark_descriptors
    x, labels, split = landmark_descriptors(3, 4, seed=1, root=str(tmp_path), width=8)
    assert x.shape[0] == 12 and torch.allclose(x.norm(dim=1), torch.ones(12), atol=1e-5)
    assert labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and split.tolist() == [0, 1] * 6
    tr = SimNetTrainer(SimNetConfig(data="landmarks", synthetic_classes=3, synthetic_per_class=4, hidden=[16],
                                    steps=5, warmup_steps=2, progress=False, out_dir=str(tmp_path / "run")))
    tr.fit()
    assert tr.x.shape[0] == 12 and 0 < tr.evaluate()["map_cosine"] <= 1
