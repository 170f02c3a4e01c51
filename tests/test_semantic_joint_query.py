"""The (V+T, V+T) query: composition, calibration, and the case where l2(phi + theta) ranked below
the image alone (issue 23)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from semvis.eval.semantic import JointQuery, auc, fit_joint_query, ndcg_curve, pcc_curve
from semvis.models.semantic import compose_query
from semvis.train import SemanticConfig, SemanticTrainer, build_data


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _metrics(q, db, rel, qi):
    s = (q.double() @ db.double().T)
    s[torch.arange(len(qi)), qi] = -float("inf")
    rel = rel.clone().double()
    rel[torch.arange(len(qi)), qi] = 0
    return auc(ndcg_curve(s, rel, 50).curve), auc(pcc_curve(s, rel, 50).curve)


def _world(seed, n=300, d=32, topics=6):
    """Images of `topics` latent topics: tf-idf-like texts t, relevance t.t^T, image embeddings phi with a weak
    topic signal in a compressed spread (as an embedding trained briefly), text embeddings theta."""
    g = torch.Generator().manual_seed(seed)
    topic = torch.randint(topics, (n,), generator=g)
    words = torch.rand(n, 40, generator=g) * (torch.rand(n, 40, generator=g) < 0.1)
    words[torch.arange(n), topic * 5] += 1.0
    words[torch.arange(n), topic * 5 + 1] += 0.7
    t = F.normalize(words, dim=1)
    rel = t @ t.T
    centres = F.normalize(torch.randn(topics, d, generator=g), dim=1)
    hub = F.normalize(torch.randn(d, generator=g), dim=0)
    phi = F.normalize(hub * 3 + 0.15 * centres[topic] + 0.1 * torch.randn(n, d, generator=g), dim=1)
    return t, rel, phi, centres, topic, hub, g


def test_compose_query_definition():
    g = torch.Generator().manual_seed(0)
    phi, theta = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    theta[3] = 0  # a text with no known word
    mu = torch.randn(8, generator=g)
    torch.testing.assert_close(compose_query(phi, theta), F.normalize(phi + theta, dim=1))
    w = torch.tensor([0.0, 1.0, 2.0, 3.0, 0.5])
    got = compose_query(phi, theta, w, mu)
    want = F.normalize(phi + w[:, None] * (theta - mu), dim=1)
    want[3] = F.normalize(phi[3], dim=0)  # the empty text is not shifted by -mu: the image alone
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(compose_query(phi, theta, 0.0, mu), F.normalize(phi, dim=1))
    with pytest.raises(ValueError, match="shape"):
        compose_query(phi, theta[:, :4])


def test_hostile_text_old_composition_falls_below_the_image_alone():
    """A text embedding that points away from the relevant images (a projection that generalises badly) with
    image similarities compressed near 1: l2(phi + theta) lets the text rank, and falls below the image and
    below random; the calibrated query keeps the image (alpha = 0), never worse than it."""
    t, rel, phi, centres, topic, hub, g = _world(1)
    theta = F.normalize(-centres[topic] + 0.3 * torch.randn(len(topic), phi.shape[1], generator=g), dim=1)
    qi = torch.arange(100)
    cal = torch.arange(100, 300)  # calibration images: disjoint from the evaluated ones
    v = _metrics(phi[qi], phi[:100], rel[:100, :100], qi)
    old = _metrics(F.normalize(phi[qi] + theta[qi], dim=1), phi[:100], rel[:100, :100], qi)
    rnd = _metrics(torch.randn(100, phi.shape[1], generator=g), phi[:100], rel[:100, :100], qi)
    assert old[0] < rnd[0] < v[0] and old[1] < 0 < v[1]  # the failure: below the image alone and below random
    jq = JointQuery.fit(phi[cal], theta[cal], rel[cal][:, cal], r_max=50)
    assert jq.alpha == 0.0
    new = _metrics(jq(phi[qi], theta[qi]), phi[:100], rel[:100, :100], qi)
    assert new[0] >= v[0] and new[1] >= v[1]
    torch.testing.assert_close(jq(phi[qi], theta[qi]), phi[qi])


def test_informative_text_is_used_and_balanced():
    """A text embedding that agrees with relevance: the calibrated query uses it and beats the image alone;
    and when the image similarities are compressed, w = 1 (old) and the balanced weights differ."""
    t, rel, phi, centres, topic, hub, g = _world(2)
    theta = F.normalize(hub + centres[topic] + 0.8 * torch.randn(len(topic), phi.shape[1], generator=g), dim=1)
    qi = torch.arange(100)
    cal = torch.arange(100, 300)
    v = _metrics(phi[qi], phi[:100], rel[:100, :100], qi)
    jq = JointQuery.fit(phi[cal], theta[cal], rel[cal][:, cal], r_max=50)
    assert jq.alpha > 0
    assert jq.scores[(jq.alpha, jq.center)] > jq.scores[(0.0, False)]
    new = _metrics(jq(phi[qi], theta[qi]), phi[:100], rel[:100, :100], qi)
    assert new[0] > v[0] + 2 and new[1] > v[1]
    w = jq.weights(phi[qi], theta[qi])
    assert (w > 0).all() and torch.isfinite(w).all()
    assert jq.z >= 2.0  # the default gate: a gain of at least 2 standard errors over the image alone
    strict = JointQuery.fit(phi[cal], theta[cal], rel[cal][:, cal], r_max=50, min_z=1e9)
    assert strict.alpha == 0.0 and strict.z == jq.z  # same best candidate, gain below the gate


def test_gate_keeps_the_image_when_the_text_gain_is_noise():
    """Text that is pure noise can still beat the image alone on a few calibration queries by chance; the
    significance gate (min_z) keeps the image alone, where min_z = 0 takes the lucky candidate."""
    t, rel, phi, centres, topic, hub, g = _world(5, n=60)
    picked = 0
    for seed in range(6):
        noise = F.normalize(torch.randn(len(topic), phi.shape[1], generator=torch.Generator().manual_seed(seed)), dim=1)
        loose = JointQuery.fit(phi, noise, rel, r_max=30, min_z=0.0)
        gated = JointQuery.fit(phi, noise, rel, r_max=30)
        picked += loose.alpha > 0
        assert gated.alpha == 0.0
    assert picked >= 1  # chance gains exist at this size, and the gate is what refuses them


def test_joint_query_edge_cases():
    g = torch.Generator().manual_seed(3)
    phi = F.normalize(torch.randn(6, 4, generator=g), dim=1)
    theta = torch.zeros(6, 4)  # no text at all: the image alone whatever alpha
    rel = torch.rand(6, 6, generator=g)
    jq = JointQuery.fit(phi, theta, rel, r_max=4)
    torch.testing.assert_close(jq(phi, theta), phi)
    jq2 = JointQuery(2.0, torch.cov(phi.T), theta.mean(0))
    torch.testing.assert_close(jq2(phi, theta), phi)  # zero text -> weight 0
    with pytest.raises(ValueError, match="rel"):
        JointQuery.fit(phi, theta, rel[:3])
    with pytest.raises(ValueError, match="alphas"):
        JointQuery.fit(phi, theta, rel, alphas=(-1.0,))
    with pytest.raises(ValueError, match="at least 3"):
        JointQuery.fit(phi[:2], theta[:2], rel[:2, :2])
    with pytest.raises(ValueError, match="alpha"):
        JointQuery(float("nan"), torch.eye(4))
    with pytest.raises(ValueError, match=r"\[Q, 4\]"):
        jq(phi[:, :3], theta[:, :3])


TINY = dict(n_images=160, image_size=48, split_sizes=(100, 30, 30), width=8, mine_queries=12, remine_every=3,
            batch_size=8, per_pair=20, knn=8, positives_per_query=4, eval_queries=30, r_max=20, threads=1,
            objective="joint", steps=0, progress=False)


def test_trainer_joint_query_never_below_the_image_alone():
    """Issue 23, end to end through SemanticTrainer.evaluate: a text projection that maps every caption away
    from the images relevant to it (W = -T^T Phi on the training split, the worst a small vocabulary can
    generalise to). The old query l2(phi + theta) ranked below the image alone; the calibrated one does not."""
    cfg = SemanticConfig.synthetic_preset(**TINY)
    data = build_data(cfg)
    tr = SemanticTrainer(cfg, data)
    ids = data.train
    phi = tr.embed(ids)
    t = torch.from_numpy(data.t.rows(ids).to_dense())
    with torch.no_grad():
        tr.text.weight.copy_(-(t.T @ phi) * 10)
    v = tr.evaluate("val", "V")
    vt = tr.evaluate("val", "V+T")
    # what the old composition gave on the same model
    qsel = tr.query_split("val")
    phi_val = tr.embed(data.val)
    from semvis.train.semantic import evaluate_scores

    q_old = F.normalize(phi_val[qsel] + tr.text_embed(data.val[qsel]).float(), dim=1)
    old = evaluate_scores(q_old @ phi_val.T, data, data.val, qsel, cfg.r_max)
    assert old["ndcg_auc"] < v["ndcg_auc"] - 1  # the failure this guards against
    assert vt["ndcg_auc"] >= v["ndcg_auc"] and vt["pcc_auc"] >= v["pcc_auc"]
    assert tr.joint_query().alpha == 0.0


def test_fit_joint_query_on_tfidf_rows():
    """fit_joint_query builds the relevance from tf-idf rows (queries = the first max_queries images)."""
    from semvis.text.tfidf import TfidfModel

    caps = [[f"a {c} {s}"] for c in ("red", "blue", "green") for s in ("ring", "bar", "cross", "star")] * 3
    t = TfidfModel(min_df=1).fit_transform(caps)
    g = torch.Generator().manual_seed(0)
    dense = torch.from_numpy(t.to_dense())
    proj = torch.randn(dense.shape[1], 16, generator=g)
    phi = F.normalize(dense @ proj + 0.5 * torch.randn(len(caps), 16, generator=g), dim=1)
    theta = F.normalize(dense @ proj, dim=1)
    jq = fit_joint_query(phi, theta, t, max_queries=20, r_max=10)
    assert jq.alpha > 0  # the text is the relevance here: it must be used
    with pytest.raises(ValueError, match="rows"):
        fit_joint_query(phi[:5], theta[:5], t)


def test_calibration_split_is_held_out_of_training():
    """Issue 23: the (V+T) query is calibrated on training images that no update ever sees (their captions
    are unseen by the text projection), so the text's weight is not chosen on over-fitted texts."""
    from semvis.train.semantic import calibration_split

    cal, fit = calibration_split(400, 0.1, seed=0)
    assert len(cal) == 40 and len(fit) == 360 and not np.intersect1d(cal, fit).size
    assert np.array_equal(np.sort(np.concatenate([cal, fit])), np.arange(400))
    assert np.array_equal(cal, calibration_split(400, 0.1, seed=0)[0])  # deterministic
    assert len(calibration_split(10_000, 0.1, seed=0)[0]) == 200  # capped
    assert len(calibration_split(200, 0.1, seed=0)[0]) == 0  # 20 < 32: calibrate in-sample
    assert len(calibration_split(400, 0.0, seed=0)[0]) == 0

    cfg = SemanticConfig.synthetic_preset(**{**TINY, "calib_fraction": 0.4, "steps": 3, "remine_every": 1})
    data = build_data(cfg)
    tr = SemanticTrainer(cfg, data)
    assert len(tr.calib_pos) >= 32
    held = set(tr.calib_pos.tolist())
    for _ in range(3):
        tr.mine()
        assert not held & set(tr.round["pool"].tolist())  # no held-out image in any mining pool
    jq = tr.joint_query()
    assert jq.alpha in JointQuery.ALPHAS
    with pytest.raises(Exception, match="calib_fraction"):
        SemanticConfig.synthetic_preset(calib_fraction=0.9)


def test_text_init_from_images():
    """text_init = "images": word rows of W start at l2(sum_i t_iw phi_i) over the fitted training images, so a
    training caption's theta points near its own image (cosine well above the random projection's)."""
    cfg = SemanticConfig.synthetic_preset(**TINY)
    data = build_data(cfg)
    assert cfg.text_init == "images"  # the synthetic preset's choice
    rnd = SemanticTrainer(cfg.replace(text_init="random"), data)
    img = SemanticTrainer(cfg, data)
    ids = data.train[img.fit_pos]
    phi = img.embed(ids)
    t = torch.from_numpy(data.t.rows(ids).to_dense()).float()
    w = t.T @ phi
    used = w.norm(dim=1) > 0
    torch.testing.assert_close(img.text.weight[used], F.normalize(w[used], dim=1))
    torch.testing.assert_close(img.text.weight[~used], rnd.text.weight[~used])  # unseen words: the random rows
    cos_img = (img.text_embed(ids).float() * phi).sum(1).mean()
    cos_rnd = (rnd.text_embed(ids).float() * rnd.embed(ids)).sum(1).mean()
    assert cos_img > 0.3 and cos_img > cos_rnd + 0.25
    with pytest.raises(Exception, match="text_init"):
        SemanticConfig.synthetic_preset(text_init="glove")
