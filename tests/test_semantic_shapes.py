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
