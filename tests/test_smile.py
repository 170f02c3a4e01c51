"""semvis.models.smile: the SMILE image path, its ablations, region grounding and the pointing game."""
import pytest
import torch
import torch.nn.functional as F

import semvis_ext
from semvis.eval.pointing import pointing_game
from semvis.models.smile import SMILE, SMILEImageEncoder, grid_boxes
from semvis.models.text_encoder import TextEncoder

MODES = ["softmax", "mean", "1-att", "no-conv", "no-softmax"]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SMILE.from_preset("tiny", num_words=40).eval()


def test_grid_boxes_partition_the_map():
    for h, w, g in [(4, 4, 2), (5, 7, 3), (2, 3, 6), (1, 1, 4)]:
        b = grid_boxes(h, w, g)
        cover = torch.zeros(h, w, dtype=torch.int64)
        for y, x, hh, ww in b.tolist():
            assert hh >= 1 and ww >= 1
            cover[y:y + hh, x:x + ww] += 1
        assert torch.all(cover == 1)


def test_text_path_is_beans():
    m = SMILE.from_preset("tiny", num_words=40)
    assert isinstance(m.text, TextEncoder)


@pytest.mark.parametrize("mode", MODES)
def test_image_embedding_is_the_attention_of_normalised_regions(model, mode):
    torch.manual_seed(1)
    enc = SMILEImageEncoder("resnet18", width=8, stages=3, dim=16, grid=3, attention=mode).eval()
    img = torch.randn(2, 3, 64, 64)
    G, lengths, boxes = enc.regions(img)
    assert G.shape == (2, 9, 16) and torch.equal(lengths, torch.tensor([9, 9]))
    torch.testing.assert_close(G.norm(dim=-1), torch.ones(2, 9))
    # the pipeline by hand: trunk -> region max pool -> 1x1 conv -> l2 -> attention (torch) -> l2
    fmap = enc.trunk(img)
    feats = semvis_ext.region_pool(fmap, grid_boxes(fmap.shape[2], fmap.shape[3], 3))
    G2 = F.normalize(enc.conv(feats), dim=-1)
    L = enc.attention.W(G2) if enc.attention.W is not None else None
    from semvis_ext.reference.region_attention import region_attention as ref
    expect = F.normalize(ref(G2, L, None, mode), dim=1)
    torch.testing.assert_close(enc(img), expect, rtol=1e-5, atol=1e-5)


def test_boxes_input_and_padding(model):
    img = torch.randn(2, 3, 64, 64)
    boxes = [torch.tensor([[0.0, 0.0, 32.0, 32.0], [16.0, 8.0, 64.0, 40.0], [0.0, 40.0, 20.0, 64.0]]),
             torch.tensor([[8.0, 8.0, 24.0, 24.0]])]
    rs = model.image.regions(img, boxes)
    assert torch.equal(rs.lengths, torch.tensor([3, 1]))
    assert torch.all(rs.features[1, 1:] == 0)
    torch.testing.assert_close(rs.boxes[0], boxes[0])
    x = model.embed_images(img, boxes)
    # image 1 has one region: the attention of one region is that region (before the final l2)
    torch.testing.assert_close(x[1], F.normalize(rs.features[1, 0], dim=0), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="boxes must be a list of 2"):
        model.embed_images(img, boxes[:1])
    with pytest.raises(ValueError, match="x1 > x0"):
        model.embed_images(img, [torch.tensor([[10.0, 0, 5, 5]]), boxes[1]])


def test_pre_extracted_features(model):
    d = model.image.region_dim
    f = torch.randn(3, 5, d)
    x = model.image.embed_regions(f, torch.tensor([5, 2, 1]))
    assert x.shape == (3, model.dim)
    torch.testing.assert_close(x.norm(dim=1), torch.ones(3))
    # the padding of image 2 does not matter
    f2 = f.clone()
    f2[2, 1:] = 1e6
    torch.testing.assert_close(model.image.embed_regions(f2, torch.tensor([5, 2, 1])), x)


def test_grounding_points_at_the_best_region_centre(model):
    img = torch.randn(1, 3, 64, 64)
    boxes = [torch.tensor([[0.0, 0.0, 20.0, 20.0], [30.0, 30.0, 60.0, 50.0]])]
    rs = model.image.regions(img, boxes)
    # a phrase equal to region 1's feature scores it highest (Eq. 4.3 on unit vectors)
    z = rs.features[:, 1]
    scores, _ = model.region_scores(img, z, boxes)
    assert scores.argmax(-1).item() == 1
    p = model.point(img, z, boxes)
    torch.testing.assert_close(p, torch.tensor([[[45.0, 40.0]]]))
    hits, acc = pointing_game(p.reshape(-1, 2), torch.tensor([[30.0, 30.0, 60.0, 50.0]]))
    assert hits.tolist() == [True] and acc == 100.0
    hits, acc = pointing_game(p.reshape(-1, 2), torch.tensor([[0.0, 0.0, 20.0, 20.0]]))
    assert acc == 0.0


def test_grid_grounding_and_several_phrases(model):
    img = torch.randn(2, 3, 64, 64)
    ids = torch.randint(2, 40, (4, 6))
    v = model.embed_captions(ids, torch.tensor([6, 4, 3, 2])).reshape(2, 2, -1)
    p = model.point(img, v)
    assert p.shape == (2, 2, 2)
    assert torch.all((p >= 0) & (p <= 64))


def test_joint_forward_and_training_step(model):
    m = SMILE.from_preset("tiny", num_words=40)
    img = torch.randn(3, 3, 64, 64)
    ids = torch.randint(2, 40, (3, 5))
    x, v = m(img, ids, torch.tensor([5, 5, 2]))
    loss = (1 - (x * v).sum(1)).mean()
    loss.backward()
    assert m.image.attention.W.weight.grad is not None
    assert m.image.conv.weight.grad.abs().sum() > 0


def test_bad_input(model):
    with pytest.raises(ValueError, match="unknown SMILE preset"):
        SMILE.from_preset("huge", num_words=10)
    with pytest.raises(ValueError, match="mode"):
        SMILE.from_preset("tiny", num_words=10, attention="max")
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model.embed_images(torch.randn(2, 64, 64))
    with pytest.raises(ValueError, match="at least"):
        model.embed_images(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="features must be"):
        model.image.embed_regions(torch.randn(2, 3, 7))
    with pytest.raises(ValueError, match="phrases must be"):
        model.point(torch.randn(1, 3, 64, 64), torch.randn(1, 5))
