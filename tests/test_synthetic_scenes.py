import numpy as np
import pytest

from semvis.data import COLOURS, SHAPES, SyntheticScenes


def test_deterministic_and_seed_dependent():
    a, b = SyntheticScenes(20, image_size=64, seed=3), SyntheticScenes(20, image_size=64, seed=3)
    c = SyntheticScenes(20, image_size=64, seed=4)
    for i in (0, 7, 19):
        sa, sb = a[i], b[i]
        np.testing.assert_array_equal(sa.image, sb.image)
        assert sa.region_phrases == sb.region_phrases and sa.captions == sb.captions
    assert any(a[i].region_phrases != c[i].region_phrases for i in range(20))
    assert a[-1].image_id == 19


def test_shapes_boxes_and_regions():
    ds = SyntheticScenes(30, image_size=(64, 80), seed=0, min_objects=2, max_objects=4,
                         regions_per_image=(5, 8), captions_per_image=3)
    for i in range(len(ds)):
        s = ds[i]
        assert s.image.shape == (64, 80, 3) and s.image.dtype == np.uint8
        assert s.tensor().shape == (3, 64, 80)
        assert 1 <= len(s.objects) <= 4 and len(s.captions) == 3
        assert len(s.regions) >= max(5, len(s.objects))
        boxes = s.object_boxes()
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 80).all() and (boxes[:, 3] <= 64).all()
        for o in s.objects:  # every object described alone at least once, with its own box
            own = [r for r in s.regions if r.object_ids == (o.object_id,)]
            assert own and all((r.x, r.y, r.x + r.width, r.y + r.height) == o.box for r in own)
            assert any(w in own[0].phrase for w in (o.shape, "disc", "box", "block", "rhombus", "plus", "flower",
                                                     "round", "triangular"))
        # scene_graph() draws the same graph without rendering
        objs, regs, caps = ds.scene_graph(i)
        assert objs == s.objects and regs == s.regions and caps == s.captions


def test_rendered_colour_matches_the_graph():
    """A plain object's centre pixel has its colour unless a later object covers it."""
    ds = SyntheticScenes(60, image_size=96, seed=1, themes=0)
    checked = 0
    for i in range(len(ds)):
        s = ds[i]
        for k, o in enumerate(s.objects):
            cx, cy = (o.box[0] + o.box[2]) // 2, (o.box[1] + o.box[3]) // 2
            covered = any(p.box[0] <= cx < p.box[2] and p.box[1] <= cy < p.box[3] for p in s.objects[k + 1:])
            if o.texture != "plain" or covered:
                continue
            want = np.asarray(COLOURS[o.colour]) * 255
            assert np.abs(s.image[cy, cx].astype(float) - want).max() <= 3, (i, o)
            checked += 1
    assert checked > 10


def test_themes_shape_the_statistics():
    ds = SyntheticScenes(200, seed=0, themes=2, theme_strength=1.0)
    for i in range(40):
        s = ds[i]
        allowed = {SHAPES[j] for j in ds._theme_table[s.theme]["shape"]}
        assert {o.shape for o in s.objects} <= allowed


@pytest.mark.parametrize("kwargs, err", [
    (dict(n=-1), ValueError), (dict(n=2.5), TypeError), (dict(n=3, image_size=16), ValueError),
    (dict(n=3, image_size="big"), TypeError), (dict(n=3, min_objects=3, max_objects=2), ValueError),
    (dict(n=3, max_objects=9), ValueError), (dict(n=3, theme_strength=1.5), ValueError),
    (dict(n=3, regions_per_image=(4, 2)), ValueError),
])
def test_bad_arguments(kwargs, err):
    with pytest.raises(err):
        SyntheticScenes(**kwargs)


def test_index_errors():
    ds = SyntheticScenes(3)
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(TypeError):
        ds["0"]
