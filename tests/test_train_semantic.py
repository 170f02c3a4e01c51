import json

import numpy as np
import pytest
import torch

from semvis.train import ConfigError, SemanticConfig, SemanticTrainer, build_data, build_miner


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    n = torch.get_num_threads()  # configs with threads=1 call torch.set_num_threads
    yield
    torch.set_num_threads(n)


def _brute_force_mining(q, db, relevant, margin, per_pair, query_ids):
    """Spec 000.8 as a triple loop: for every listed (q, d+), the per_pair largest-loss d- (loss > 0, d- not
    relevant and not the query),
    ties to the lowest index; ordered by query, positive id, decreasing loss."""
    out = []
    s = (q.double() @ db.double().T).float()  # float32 similarities, as the miners
    for i in range(len(q)):
        rel = set(relevant[i])
        for p in sorted(rel):  # the query itself counts as a positive when it is listed
            cands = [(float(s[i, j]) - float(s[i, p]) + margin, j) for j in range(len(db))
                     if j not in rel and j != int(query_ids[i])]
            cands = [c for c in cands if c[0] > 0]
            cands.sort(key=lambda c: (-c[0], c[1]))
            out += [(i, p, j) for _, j in cands[:per_pair]]
    return out


@pytest.mark.parametrize("per_pair", [1, 5, 100])
def test_mining_equals_brute_force(per_pair):
    g = torch.Generator().manual_seed(per_pair)
    P, n, d = 60, 8, 16
    db = torch.nn.functional.normalize(torch.randn(P, d, generator=g), dim=1)
    db[7] = db[3]  # exact ties among negatives
    qids = torch.randperm(P, generator=g)[:n]
    q = db[qids]
    relevant = [sorted(set(torch.randint(P, (6,), generator=g).tolist()) | {int(qids[i])}) for i in range(n)]
    fn = build_miner()
    got = fn(q.contiguous(), db.contiguous(), relevant, 0.3, per_pair, query_ids=qids)
    want = _brute_force_mining(q, db, relevant, 0.3, per_pair, qids)
    assert len(want) > 0
    assert [tuple(r) for r in got.tolist()] == want


@pytest.mark.parametrize("kw, match", [
    (dict(objective="vision"), "objective"), (dict(lr=-1.0), "lr"), (dict(batch_size=0), "batch_size"),
    (dict(scales=[]), "scales"), (dict(split_sizes=[1, 2]), "split_sizes"), (dict(margin=float("nan")), "margin"),
    (dict(data="visual_genome"), "data_root"), (dict(data_root="/no/such/dir", data="coco"), "data_root"),
    (dict(weights="/no/such.pth"), "weights"), (dict(steps=1.5), "steps"), (dict(lr_drop_at=2.0), "lr_drop_at"),
    (dict(freeze_bn="yes"), "freeze_bn"), (dict(negatives="hard"), "negatives"), (dict(mine_by="text"), "mine_by"),
])
def test_bad_config_values(kw, match):
    with pytest.raises(ConfigError, match=f"config.{match}"):
        SemanticConfig(**kw)


def test_config_files(tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        SemanticConfig.from_dict({"learning_rate": 1e-3})
    with pytest.raises(ConfigError, match="config file not found"):
        SemanticConfig.from_file(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(ConfigError, match="cannot parse"):
        SemanticConfig.from_file(tmp_path / "bad.json")
    (tmp_path / "c.toml").write_text('objective = "joint"\nsteps = 7\nscales = [1.0, 0.707]\n')
    c = SemanticConfig.from_file(tmp_path / "c.toml")
    assert c.objective == "joint" and c.steps == 7 and c.scales == (1.0, 0.707)
    (tmp_path / "c.json").write_text(json.dumps(c.to_dict()))
    assert SemanticConfig.from_file(tmp_path / "c.json") == c


TINY = dict(n_images=160, image_size=48, split_sizes=(100, 30, 30), width=8, mine_queries=12, remine_every=3,
            batch_size=8, per_pair=20, knn=8, positives_per_query=4, eval_queries=30, r_max=20, threads=1)


@pytest.fixture(scope="module")
def tiny_data():
    return build_data(SemanticConfig.synthetic_preset(**TINY))


@pytest.mark.parametrize("objective", ["visual", "joint"])
def test_checkpoint_resume_equals_uninterrupted(tmp_path, tiny_data, objective):
    cfg = SemanticConfig.synthetic_preset(**TINY, steps=7, objective=objective, progress=False)
    a = SemanticTrainer(cfg, tiny_data)
    a.fit()
    b = SemanticTrainer(cfg, tiny_data)
    b.fit(until=4)  # stops inside the second mining round
    b.save(str(tmp_path / "ck.pt"))
    c = SemanticTrainer.resume(str(tmp_path / "ck.pt"), tiny_data)
    assert c.step == 4
    c.fit()
    sa, sc = a.state_dict(), c.state_dict()
    for k, v in sa["model"].items():
        assert torch.equal(v, sc["model"][k]), k
    if objective == "joint":
        assert torch.equal(sa["text"]["weight"], sc["text"]["weight"])
    assert [h["loss"] for h in a.history] == [h["loss"] for h in c.history]
    assert torch.equal(sa["round"]["candidates"], sc["round"]["candidates"])


@pytest.mark.parametrize("objective", ["visual", "joint"])
def test_semihard_round_keeps_negatives_below_their_positive(tiny_data, objective):
    """negatives="semihard" (the synthetic preset): every candidate of a mining round has its
    negative ranked below its positive and within the margin under the round's embeddings (the
    summed score and 3 m for the joint objective); the paper's hardest mining on the same untrained
    network keeps negatives ranked above their positive."""
    got = {}
    for negatives in ("semihard", "hardest"):
        tr = SemanticTrainer(SemanticConfig.synthetic_preset(**TINY, steps=1, objective=objective, progress=False,
                                                             negatives=negatives, mine_by="objective"), tiny_data)
        tr.mine()
        pool, cand = tr.round["pool"], tr.round["candidates"]
        assert len(cand) > 0
        ids = tiny_data.train[pool.numpy()]
        phi = tr.embed(ids)
        if objective == "joint":
            th = tr.text_embed(ids).float()
            s = lambda a, b: (phi[a] * phi[b]).sum(1) + (phi[a] * th[b]).sum(1) + (th[a] * phi[b]).sum(1)  # noqa: E731
            m = 3 * tr.cfg.margin
        else:
            s = lambda a, b: (phi[a] * phi[b]).sum(1)  # noqa: E731
            m = tr.cfg.margin
        sp, sn = s(cand[:, 0], cand[:, 1]), s(cand[:, 0], cand[:, 2])
        got[negatives] = (sp, sn, m)
    sp, sn, m = got["semihard"]
    assert bool((sn < sp + 1e-5).all()) and bool((sn - sp + m > -1e-5).all())
    sp, sn, m = got["hardest"]
    assert bool((sn > sp + 1e-4).any())


def test_joint_model_mined_by_phi_gets_the_visual_models_triplets(tiny_data):
    """mine_by="visual" (the synthetic preset): a joint trainer's mining round is the visual
    trainer's round (same seed, same network: the same candidates); mine_by="objective" scores
    them by the summed similarity and finds others."""
    rounds = {}
    for objective, mine_by in (("visual", "visual"), ("joint", "visual"), ("joint", "objective")):
        tr = SemanticTrainer(SemanticConfig.synthetic_preset(**TINY, steps=1, objective=objective, progress=False,
                                                             mine_by=mine_by), tiny_data)
        tr.mine()
        rounds[objective, mine_by] = tr.round["candidates"]
    assert len(rounds["visual", "visual"]) > 0
    assert torch.equal(rounds["joint", "visual"], rounds["visual", "visual"])
    assert not torch.equal(rounds["joint", "objective"], rounds["visual", "visual"])


def test_hardest_negatives_collapse_from_scratch_and_semihard_do_not(tmp_path):
    """Why the synthetic preset mines semi-hard negatives (issue 23): on scenes whose backgrounds no
    caption names, the paper's hardest negatives drive a network trained from scratch towards one
    embedding for every image (measured: mean cosine 0.98 between val images after 150 updates,
    0.998 at full size), semi-hard ones keep it spread (0.69)."""
    from semvis.data.synthetic_shapes import SyntheticShapes

    root = tmp_path / "vg"
    SyntheticShapes(120, image_size=(96, 72), seed=5, name_ground=False, settings=0).write_visual_genome(root)
    cos = {}
    for negatives in ("hardest", "semihard"):
        cfg = SemanticConfig.synthetic_preset(**{**TINY, "n_images": 120, "split_sizes": (80, 20, 20)},
                                              data="visual_genome", data_root=str(root), steps=150,
                                              negatives=negatives, progress=False, calib_fraction=0)
        tr = SemanticTrainer(cfg)
        tr.fit()
        phi = tr.embed(tr.data.val)
        s = phi @ phi.T
        cos[negatives] = float(s[~torch.eye(len(s), dtype=torch.bool)].mean())
    assert cos["hardest"] > 0.95 and cos["semihard"] < 0.85, cos


def test_checkpoint_errors(tmp_path, tiny_data):
    with pytest.raises(FileNotFoundError):
        SemanticTrainer.resume(str(tmp_path / "none.pt"), tiny_data)
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        SemanticTrainer.resume(str(tmp_path / "x.pt"), tiny_data)
    torch.save({"hello": 1}, tmp_path / "y.pt")
    with pytest.raises(ValueError, match="format tag"):
        SemanticTrainer.resume(str(tmp_path / "y.pt"), tiny_data)
    with pytest.raises(TypeError):
        SemanticTrainer({"steps": 1}, tiny_data)
    # a checkpoint of another kind is refused by its tag, and a pickled object is never unpickled
    torch.save({"format": "semvis.crossmodal-checkpoint/1"}, tmp_path / "z.pt")
    with pytest.raises(ValueError, match="not a semvis semantic checkpoint.*found 'semvis.crossmodal"):
        SemanticTrainer.resume(str(tmp_path / "z.pt"), tiny_data)
    torch.save({"format": "semvis.semantic-checkpoint/1", "x": _Opaque()}, tmp_path / "o.pt")
    with pytest.raises(ValueError, match="Python objects beyond tensors") as e:
        SemanticTrainer.resume(str(tmp_path / "o.pt"), tiny_data)
    assert "weights_only" not in str(e.value)
    (tmp_path / "t.pt").write_text("hello\n")
    with pytest.raises(ValueError, match="not a readable checkpoint") as e:
        SemanticTrainer.resume(str(tmp_path / "t.pt"), tiny_data)
    assert "weights_only" not in str(e.value) and "succeed" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="is a directory"):
        SemanticTrainer.resume(str(tmp_path), tiny_data)


class _Opaque:
    pass


def test_missing_data_files(tmp_path):
    (tmp_path / "image_data.json").write_text("[]")
    cfg = SemanticConfig(data="visual_genome", data_root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="region_descriptions.json"):
        build_data(cfg)


def test_short_training_beats_the_untrained_model():
    """A seeded 24-update run (64-px scenes, narrow ResNet-18 to conv4) raises held-out NDCG AUC
    by > 2.5 points and PCC AUC over the untrained network (measured: 45.3 -> 49.6 and 4.9 -> 7.9)."""
    cfg = SemanticConfig.synthetic_preset(n_images=700, image_size=64, split_sizes=(600, 100, 1), width=16, stages=3,
                                          mine_queries=48, remine_every=12, batch_size=24, knn=16,
                                          positives_per_query=6, eval_queries=100, r_max=50, steps=24, threads=1,
                                          progress=False, seed=0)
    tr = SemanticTrainer(cfg)
    before = tr.evaluate("val")
    tr.fit()
    after = tr.evaluate("val")
    assert after["ndcg_auc"] > before["ndcg_auc"] + 2.5, (before["ndcg_auc"], after["ndcg_auc"])
    assert after["pcc_auc"] > before["pcc_auc"], (before["pcc_auc"], after["pcc_auc"])
    assert tr.step == 24 and all(h["candidates"] > 0 for h in tr.history)


def test_visual_genome_path_end_to_end(tmp_path):
    """The VG reader feeds the trainer: synthetic scenes exported in the VG layout train 2 steps."""
    from semvis.data import SyntheticScenes

    SyntheticScenes(120, image_size=48, seed=4).to_visual_genome(tmp_path / "vg", write_images=True)
    cfg = SemanticConfig.synthetic_preset(**{**TINY, "n_images": 120}, data="visual_genome",
                                          data_root=str(tmp_path / "vg"), max_side=48, steps=2, progress=False)
    data = build_data(cfg)
    assert len(data) == 120 and len(data.train) == 76  # 100/30/30 scaled to 120 images: 76/22/22
    tr = SemanticTrainer(cfg, data)
    tr.fit()
    assert tr.step == 2 and np.isfinite(tr.evaluate("val")["ndcg_auc"])
