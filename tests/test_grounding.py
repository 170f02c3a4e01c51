
import pytest
import torch

from semvis.data import SyntheticScenes
from semvis.models.grounding import compose_query, grad_cam_pair
from semvis.models.semantic import SemanticRetrievalNet
from semvis.text import TfidfModel
from semvis.train.registry import build_text_projection


def test_grad_cam_pair_depends_on_the_partner():
    torch.manual_seed(0)
    net = SemanticRetrievalNet("resnet18", width=8, levels=2, stages=3, freeze_bn=False)
    ds = SyntheticScenes(3, image_size=64, seed=0)
    a, b, c = (ds[i].tensor() for i in range(3))
    ma, mb, dims = grad_cam_pair(net, a, b)
    ma2, _, dims2 = grad_cam_pair(net, a, c)
    assert ma.shape == (64, 64) and mb.shape == (64, 64) and dims.shape == (5,)
    assert float(ma.min()) >= 0 and float(ma.max()) <= 1 and float(ma.max()) == pytest.approx(1.0)
    assert not torch.equal(dims, dims2) or not torch.allclose(ma, ma2)
    # the dims are the largest elementwise products of the two embeddings
    with torch.no_grad():
        net.eval()
        pa, pb = net(a[None])[0], net(b[None])[0]
    assert set(dims.tolist()) == set(torch.topk(pa * pb, 5).indices.tolist())
    with pytest.raises(ValueError, match="k must"):
        grad_cam_pair(net, a, b, k=0)


def test_compose_query():
    tf = TfidfModel(min_df=1).fit([["a red circle"], ["a blue square"], ["a dog"]])
    proj = build_text_projection(len(tf.vocab), 16)
    phi = torch.nn.functional.normalize(torch.randn(16), dim=0)
    torch.testing.assert_close(compose_query(phi, proj, tf), phi)
    with torch.no_grad():
        th = proj(tf.vector("dog").to_torch())[0]
        th2 = proj(tf.vector("circles").to_torch())[0]  # stemmed: circles -> circl
    want = torch.nn.functional.normalize(phi + th - th2, dim=0)
    torch.testing.assert_close(compose_query(phi, proj, tf, ["dog"], ["circles"]), want)
    with pytest.raises(ValueError, match="'zebra'"):
        compose_query(phi, proj, tf, ["zebra"])
