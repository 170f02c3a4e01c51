"""The second synthetic family (SyntheticShapes) and the readers on the published VG / COCO layouts."""
import json
import os

import numpy as np
import pytest

from semvis.data.captions import (coco_images_dir, find_coco_captions, load_image, read_captioned_images,
                                  read_coco_captions, read_visual_genome)
from semvis.data.synthetic_scenes import SyntheticScenes
from semvis.data.synthetic_shapes import GROUNDS, IMAGE_SIZES, OBJECTS, PALETTE, SyntheticShapes
from semvis.text.tfidf import TfidfModel


def test_shapes_deterministic_and_varied():
    ds = SyntheticShapes(24, seed=3)
    a, b = ds[5], SyntheticShapes(24, seed=3)[5]
    np.testing.assert_array_equal(a.image, b.image)
    assert a.captions == b.captions and a.regions == b.regions
    assert not np.array_equal(ds[5].image, SyntheticShapes(24, seed=4)[5].image)
    sizes = {ds[i].image.shape[:2] for i in range(24)}
    assert len(sizes) >= 2 and all(h != w for h, w in sizes)  # several non-square sizes
    assert all((w, h) in IMAGE_SIZES for h, w in sizes)
    for i in range(24):
        s = ds[i]
        assert s.image.dtype == np.uint8 and len(s.captions) == 5 and 3 <= len(s.regions) <= 5
        assert s.ground in GROUNDS and all(o.kind in OBJECTS and o.colour in PALETTE for o in s.items)
        h, w = s.image.shape[:2]
        for r in s.regions:
            assert 0 <= r.x and 0 <= r.y and r.x + r.width <= w and r.y + r.height <= h
        assert all(c[0].isupper() and c.endswith(".") for c in s.captions)  # sentence style
        assert ds.annotations(i)[2] == s.captions  # annotations without rendering agree


def test_shapes_fixed_size_and_bad_args():
    ds = SyntheticShapes(3, image_size=(427, 336), seed=0)
    assert ds[2].image.shape == (336, 427, 3)
    with pytest.raises(ValueError, match="image_size"):
        SyntheticShapes(3, image_size=(20, 336))
    with pytest.raises(TypeError, match="image_size"):
        SyntheticShapes(3, image_size=64)
    with pytest.raises(ValueError, match="max_items"):
        SyntheticShapes(3, max_items=9)
    with pytest.raises(IndexError):
        ds[3]

def test_shapes_unnamed_ground_is_a_distractor():
    """name_ground=False: no caption or region names the background, and the background does not
    follow the scene's setting (so it carries nothing the captions share)."""
    ground_words = {"wooden", "wood", "grass", "lawn", "brick", "bricks", "sand", "sandy", "beach", "water", "pond",
                    "tiles", "tiled"}

    def words(texts):
        return {w.strip(".,:").lower() for t in texts for w in t.split()}

    named = SyntheticShapes(60, seed=4)
    plain = SyntheticShapes(60, seed=4, name_ground=False)
    assert words(t for i in range(5) for t in named.annotations(i)[2]) & ground_words  # named by default
    grounds = {}
    for i in range(60):
        _, regions, captions = plain.annotations(i)
        assert captions and regions
        assert not words(captions + [r.phrase for r in regions]) & ground_words, captions
        grounds.setdefault(plain.setting(i), set()).add(plain[i].ground)
    assert max(len(g) for g in grounds.values()) >= 3  # several grounds within one setting
    with pytest.raises(TypeError, match="name_ground"):
        SyntheticShapes(3, name_ground=1)


def test_shapes_vocabulary_differs_from_scenes():
    """An independent family: its caption vocabulary barely overlaps the first family's."""
    shapes = TfidfModel().fit([s.captions + [r.phrase for r in s.regions] for s in (SyntheticShapes(60, seed=0)[i]
                                                                                     for i in range(60))])
    scenes = TfidfModel().fit(SyntheticScenes(60, image_size=32, seed=0).all_region_phrases())
    a, b = set(shapes.vocab.terms), set(scenes.vocab.terms)
    assert len(a & b) / len(a | b) < 0.2, sorted(a & b)


def test_visual_genome_layout_roundtrip(tmp_path):
    ds = SyntheticShapes(7, seed=2)
    ds.write_visual_genome(tmp_path / "vg")
    meta = json.load(open(tmp_path / "vg" / "image_data.json"))
    assert set(meta[0]) == {"width", "url", "height", "image_id", "coco_id", "flickr_id"}
    ids = [m["image_id"] for m in meta]
    assert ids != list(range(1, 8))  # non-contiguous ids, as VG
    assert os.path.isdir(tmp_path / "vg" / "VG_100K_2")  # images over two folders, as VG
    ims = read_visual_genome(tmp_path / "vg")
    assert [im.image_id for im in ims] == sorted(ids)
    for im in ims:
        k = ids.index(im.image_id)
        sc = ds[k]
        m = meta[k]
        assert im.path.endswith(os.path.join(m["url"].split("/")[-2], f"{im.image_id}.jpg"))
        assert im.captions == [r.phrase for r in sc.regions] + sc.captions
        img = load_image(im.path)
        assert img.shape == sc.image.shape and (im.width, im.height) == (img.shape[1], img.shape[0])
        assert np.abs(img.astype(int) - sc.image).mean() < 8  # JPEG
    assert [im.path for im in read_captioned_images("visual_genome", tmp_path / "vg")] == [im.path for im in ims]


def test_visual_genome_folder_order(tmp_path):
    """The url's folder first, the other folder when the file is only there; .npy arrays too."""
    root = tmp_path / "vg"
    for d in ("VG_100K", "VG_100K_2"):
        os.makedirs(root / d)
    meta = [{"image_id": 5, "url": "https://x/VG_100K_2/5.jpg", "width": 4, "height": 4},
            {"image_id": 6, "url": "https://x/VG_100K/6.jpg", "width": 4, "height": 4},
            {"image_id": 7, "url": None, "width": 4, "height": 4}]
    json.dump(meta, open(root / "image_data.json", "w"))
    json.dump([{"id": i, "regions": [{"phrase": "a cat", "x": 0, "y": 0, "width": 1, "height": 1}]} for i in (5, 6, 7)],
              open(root / "region_descriptions.json", "w"))
    for d in ("VG_100K", "VG_100K_2"):
        open(root / d / "5.jpg", "wb").close()
    open(root / "VG_100K_2" / "6.jpg", "wb").close()  # url says VG_100K, file only in VG_100K_2
    np.save(root / "VG_100K" / "7.npy", np.zeros((4, 4, 3), np.uint8))
    p = {im.image_id: im.path for im in read_visual_genome(root)}
    assert p[5] == str(root / "VG_100K_2" / "5.jpg")
    assert p[6] == str(root / "VG_100K_2" / "6.jpg")
    assert p[7] == str(root / "VG_100K" / "7.npy")
    assert read_visual_genome(root, images_dir="/imgs")[0].path == os.path.join("/imgs", "5.jpg")


@pytest.mark.parametrize("year", [2017, 2014])
def test_coco_layout_roundtrip(tmp_path, year):
    ds = SyntheticShapes(8, seed=5)
    files = ds.write_coco(tmp_path / "coco", year=year, val_every=3)
    assert [os.path.basename(f) for f in files] == [f"captions_train{year}.json", f"captions_val{year}.json"]
    assert find_coco_captions(tmp_path / "coco") == files
    assert coco_images_dir(files[1]) == str(tmp_path / "coco" / f"val{year}")
    ims = read_captioned_images("coco", tmp_path / "coco")  # the folder: both files merged
    assert [im.image_id for im in ims] == sorted(ds.image_id(i) for i in range(8))
    for im in ims:
        k = [ds.image_id(i) for i in range(8)].index(im.image_id)
        split = f"val{year}" if k % 3 == 2 else f"train{year}"
        name = f"{im.image_id:012d}.jpg" if year == 2017 else f"COCO_{split}_{im.image_id:012d}.jpg"
        assert im.path == str(tmp_path / "coco" / split / name) and os.path.isfile(im.path)
        assert im.captions == ds[k].captions and im.boxes is None
    one = read_captioned_images("coco", files[0])  # one captions file
    assert len(one) == len([k for k in range(8) if k % 3 != 2])
    assert read_coco_captions(files[0])[0].path.startswith("0" if year == 2017 else "COCO_")  # bare names


def test_coco_duplicate_ids_and_missing(tmp_path):
    ds = SyntheticShapes(3, seed=0, image_size=(40, 32))
    ds.write_coco(tmp_path / "c", val_every=0)
    f = find_coco_captions(tmp_path / "c")[0]
    d = json.load(open(f))
    json.dump(d, open(os.path.join(os.path.dirname(f), "captions_val2017.json"), "w"))
    with pytest.raises(ValueError, match="also appears"):
        read_captioned_images("coco", tmp_path / "c")
    with pytest.raises(FileNotFoundError, match="captions"):
        find_coco_captions(tmp_path / "c" / "train2017")
    with pytest.raises(ValueError, match="data"):
        read_captioned_images("flickr", tmp_path)


def test_choose_max_side():
    from semvis.data.captions import choose_max_side

    side, why = choose_max_side([(427, 336), (336, 427), (480, 360)], "cpu")
    assert side == 128 and "capped" in why and "cpu" in why
    assert choose_max_side([(427, 336)] * 3, "cuda")[0] == 416  # no upscaling, a multiple of 16
    assert choose_max_side([(800, 600), (500, 333), (1024, 768)], "cuda")[0] == 576  # the paper's size
    assert choose_max_side([(40, 20)], "cpu")[0] == 32
    assert choose_max_side([(64, 64)], "cpu") == (64, "median largest image side 64 px (no upscaling)")
    with pytest.raises(ValueError, match="device"):
        choose_max_side([(64, 64)], "tpu")
    with pytest.raises(ValueError, match="no image size"):
        choose_max_side([], "cpu")


def test_forward_list_mixed_sizes_equals_one_by_one():
    import torch

    from semvis.models.semantic import SemanticRetrievalNet

    torch.manual_seed(0)
    net = SemanticRetrievalNet("resnet18", width=8, stages=3, freeze_bn=False).eval()
    g = torch.Generator().manual_seed(1)
    ims = [torch.randint(0, 256, s, generator=g, dtype=torch.uint8) for s in
           [(3, 48, 64), (3, 64, 48), (3, 48, 64), (3, 40, 64), (3, 64, 48)]]
    net.init_whitening(ims)  # a list of mixed sizes works (it used to be skipped)
    with torch.no_grad():
        got = net.forward_list(ims, batch=2)
        want = torch.cat([net(im[None]) for im in ims])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert net.forward_list([]).shape == (0, net.dim)


@pytest.mark.parametrize("kind", ["visual_genome", "coco"])
def test_published_layout_trains_with_data_and_root_only(tmp_path, kind, capfd, monkeypatch):
    """A VG-format set (VG_100K/<id>.jpg, mixed sizes) and a COCO folder train and evaluate with the preset
    and nothing but data and data_root (shortened here: steps, and a 64-px CPU cap); max_side is chosen
    and printed."""
    import torch

    from semvis.data import captions, synthetic_shapes
    from semvis.train import SemanticConfig, SemanticTrainer, build_data

    monkeypatch.setitem(captions.AUTO_MAX_SIDE, "cpu", 64)
    monkeypatch.setattr(synthetic_shapes, "IMAGE_SIZES", ((112, 84), (84, 112), (120, 90)))  # small, for speed
    n = torch.get_num_threads()
    ds = SyntheticShapes(60, seed=11, image_size=None)
    root = tmp_path / kind
    if kind == "visual_genome":
        ds.write_visual_genome(root, quality=80)
    else:
        ds.write_coco(root, quality=80)
    cfg = SemanticConfig.synthetic_preset(data=kind, data_root=str(root), objective="joint", steps=2, knn=8,
                                          mine_queries=8, batch_size=4, eval_queries=10, r_max=10, progress=False,
                                          width=8)
    assert cfg.max_side == 0
    data = build_data(cfg)
    assert "max_side = 64 (median largest image side 112 px, capped at 64 px on cpu" in capfd.readouterr().err
    assert len(data) == 60 and len({tuple(x.shape) for x in data.load(data.train[:12])}) > 1  # mixed sizes
    tr = SemanticTrainer(cfg, data)
    assert not torch.equal(tr.model.pool.weight, torch.eye(tr.model.dim))  # whitening initialised (mixed sizes)
    tr.fit()
    for mode in ("V", "V+T"):
        assert np.isfinite(tr.evaluate("val", mode)["ndcg_auc"])
    torch.set_num_threads(n)
