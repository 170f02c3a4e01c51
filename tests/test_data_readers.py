import json
import os

import numpy as np
import pytest

from semvis.data import SyntheticScenes
from semvis.data.captions import load_image, read_coco_captions, read_visual_genome, split_ids

FIX = os.path.join(os.path.dirname(__file__), "fixtures")


def test_visual_genome_fixture():
    ims = read_visual_genome(os.path.join(FIX, "vg"))
    assert [im.image_id for im in ims] == [1, 2, 107899]  # image 3 has no region: dropped
    assert ims[0].captions == ["the clock is green in colour", "shade is along the street",
                               "man is wearing sneakers"]
    np.testing.assert_array_equal(ims[0].boxes[0], [421, 57, 82, 139])
    assert (ims[2].width, ims[2].height) == (640, 480)
    assert ims[1].path.endswith(os.path.join("VG_100K", "2.jpg"))
    all_ = read_visual_genome(os.path.join(FIX, "vg"), drop_empty=False)
    assert [im.image_id for im in all_] == [1, 2, 3, 107899] and all_[2].boxes.shape == (0, 4)


def test_coco_fixture():
    ims = read_coco_captions(os.path.join(FIX, "coco", "captions_val2014.json"), images_dir="/data/val2014")
    assert [im.image_id for im in ims] == [391895, 522418]  # 42 has no caption
    # annotation-id order, stripped
    assert ims[0].captions == ["A man riding on the back of a motorcycle.",
                               "A man with a red helmet on a small moped on a dirt road.",
                               "Man riding a motor bike on a dirt road on the countryside."]
    assert ims[0].path == "/data/val2014/COCO_val2014_000000391895.jpg" and ims[0].boxes is None


def test_synthetic_export_roundtrip(tmp_path):
    ds = SyntheticScenes(6, image_size=48, seed=1)
    ds.to_visual_genome(tmp_path / "vg", write_images=True)
    ims = read_visual_genome(tmp_path / "vg", image_ext=".npy")
    assert len(ims) == 6
    for i, im in enumerate(ims):
        assert im.captions == ds.region_phrases(i)
        np.testing.assert_array_equal(im.boxes[:, :2], [[r.x, r.y] for r in ds[i].regions])
        np.testing.assert_array_equal(load_image(im.path), ds[i].image)
    ds.to_coco_captions(tmp_path / "c.json")
    coco = read_coco_captions(tmp_path / "c.json")
    assert [c.captions for c in coco] == ds.all_captions()


def test_split_paper_like():
    tr, va, te = split_ids(range(1000), seed=0)
    assert (len(tr), len(va), len(te)) == (800, 100, 100)
    assert not (set(tr) & set(va)) and not (set(va) & set(te)) and set(tr) | set(va) | set(te) == set(range(1000))
    assert split_ids(range(1000), seed=0) == (tr, va, te)
    assert split_ids(range(1000), seed=1) != (tr, va, te)
    tr, va, te = split_ids(range(108_077))
    assert (len(tr), len(va), len(te)) == (80_000, 10_000, 10_000)
    with pytest.raises(ValueError, match="duplicates"):
        split_ids([1, 1, 2])


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="image_data.json"):
        read_visual_genome(tmp_path)
    (tmp_path / "image_data.json").write_text("[{")
    (tmp_path / "region_descriptions.json").write_text("[]")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_visual_genome(tmp_path)
    (tmp_path / "image_data.json").write_text(json.dumps([{"image_id": 1, "width": 4}]))
    with pytest.raises(ValueError, match="'height'"):
        read_visual_genome(tmp_path)
    (tmp_path / "image_data.json").write_text(json.dumps([{"image_id": 1, "width": 4, "height": 4}]))
    (tmp_path / "region_descriptions.json").write_text(json.dumps([{"id": 9, "regions": []}]))
    with pytest.raises(ValueError, match="absent"):
        read_visual_genome(tmp_path)
    (tmp_path / "region_descriptions.json").write_text(json.dumps([{"id": 1, "regions": [{"phrase": "x"}]}]))
    with pytest.raises(ValueError, match="x, y, width, height"):
        read_visual_genome(tmp_path)
    (tmp_path / "c.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="'annotations'"):
        read_coco_captions(tmp_path / "c.json")
    with pytest.raises(FileNotFoundError):
        read_coco_captions(tmp_path / "none.json")
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "none.npy")
    np.save(tmp_path / "bad.npy", np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        load_image(tmp_path / "bad.npy")
