import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from imat_kit.data import rle
from imat_kit.data.coco import csv_to_coco, detect_layout
from imat_kit.data.labels import load_labels, parse_class_id
from imat_kit.errors import KitError


def _load(data, tmp_path, name="out.json"):
    path = tmp_path / name
    data.write(path)
    return json.loads(path.read_text()), path


def test_conversion_annotation_by_annotation(synth_dir, tmp_path):
    df = pd.read_csv(synth_dir / "train.csv")
    data = csv_to_coco(synth_dir / "train.csv", image_dir=synth_dir / "train", quiet=True)
    coco, path = _load(data, tmp_path)
    assert len(coco["annotations"]) == len(df)
    assert len(coco["images"]) == df["ImageId"].nunique()
    assert [c["id"] for c in coco["categories"]] == list(range(46))
    assert len(coco["attributes"]) == 92
    images = {im["id"]: im for im in coco["images"]}
    for (_, row), ann in zip(df.iterrows(), coco["annotations"]):
        im = images[ann["image_id"]]
        assert im["file_name"] == row.ImageId == im["image_key"]
        assert (im["height"], im["width"]) == (row.Height, row.Width)
        cat, attrs = parse_class_id(row.ClassId)
        assert ann["category_id"] == cat and ann["attribute_ids"] == list(attrs)
        want = rle.decode(row.EncodedPixels, row.Height, row.Width)
        seg = ann["segmentation"]
        np.testing.assert_array_equal(mask_util.decode(seg), want)
        assert ann["area"] == int(want.sum())
        assert ann["bbox"] == mask_util.toBbox(seg).astype(int).tolist()
        assert ann["iscrowd"] == 0
    # pycocotools reads the file as is
    api = COCO(str(path))
    assert len(api.getAnnIds()) == len(df)


def test_workers_and_chunks_give_the_same_result(synth_dir):
    a = csv_to_coco(synth_dir / "train.csv", quiet=True, workers=0)
    b = csv_to_coco(synth_dir / "train.csv", quiet=True, workers=2, chunksize=7)
    assert a.to_json() == b.to_json()


def test_2020_layout(synth_dir, tmp_path):
    df = pd.read_csv(synth_dir / "train.csv", dtype=str)
    parsed = [parse_class_id(c) for c in df.ClassId]
    df20 = pd.DataFrame({
        "ImageId": df.ImageId.str.replace(".jpg", "", regex=False),
        "EncodedPixels": df.EncodedPixels, "Height": df.Height, "Width": df.Width,
        "ClassId": [str(c) for c, _ in parsed],
        "AttributesIds": [",".join(str(300 + a % 40) for a in at) for _, at in parsed]})
    path = tmp_path / "train.csv"
    df20.to_csv(path, index=False)
    assert detect_layout(df20.columns.tolist()) == 2020
    lab = load_labels(year=2020)
    data = csv_to_coco(path, labels=lab, image_dir=synth_dir / "train", quiet=True)
    coco, _ = _load(data, tmp_path)
    assert coco["images"][0]["file_name"].endswith(".jpg")
    assert not coco["images"][0]["image_key"].endswith(".jpg")
    assert [a["attribute_ids"] for a in coco["annotations"]] == \
        [sorted({300 + a % 40 for a in at}) for _, at in parsed]
    assert coco["info"]["layout"] == 2020
    # 2020 attribute ids are checked against the 2020 set, which has gaps
    gap = next(i for i in range(341) if i not in lab.attribute_ids)
    df20.loc[3, "AttributesIds"] = f"300,{gap}"
    df20.to_csv(path, index=False)
    with pytest.raises(KitError, match=rf"train.csv:5: unknown attribute id {gap}\b"):
        csv_to_coco(path, labels=lab, quiet=True)


def _write_rows(path, rows):
    pd.DataFrame(rows, columns=["ImageId", "EncodedPixels", "Height", "Width", "ClassId"]) \
        .to_csv(path, index=False)


GOOD = ["a.jpg", "1 3", "3", "3", "6"]


@pytest.mark.parametrize("bad,msg", [
    (["a.jpg", "1 3 5", "3", "3", "6"], r"t.csv:3: RLE has an odd number of tokens"),
    (["a.jpg", "1 x", "3", "3", "6"], r"t.csv:3: RLE token is not an integer \(value 'x'\)"),
    (["a.jpg", "8 3", "3", "3", "6"], r"t.csv:3: .*past the 3x3=9 pixels"),
    (["a.jpg", "5 1 1 1", "3", "3", "6"], r"t.csv:3: RLE runs 1 and 2 are unsorted"),
    (["a.jpg", "1 1", "3", "3", "77"], r"t.csv:3: unknown category id 77"),
    (["a.jpg", "1 1", "3", "3", "6_200"], r"t.csv:3: unknown attribute id 200"),
    (["a.jpg", "1 1", "3", "0", "6"], r"t.csv:3: Width must be a positive integer"),
    (["a.jpg", "1 1", "3.5", "3", "6"], r"t.csv:3: Height must be a positive integer"),
    (["a.jpg", "1 1", "4", "3", "6"], r"t.csv:3: Height/Width 4x3 differ from row 2's 3x3"),
    (["a.jpg", "", "3", "3", "6"], r"t.csv:3: empty EncodedPixels"),
    (["", "1 1", "3", "3", "6"], r"t.csv:3: empty ImageId"),
])
def test_bad_rows_are_named(tmp_path, bad, msg):
    path = tmp_path / "t.csv"
    _write_rows(path, [GOOD, bad, GOOD])
    with pytest.raises(KitError, match=msg):
        csv_to_coco(path, quiet=True)
    data = csv_to_coco(path, quiet=True, skip_bad_rows=True)
    assert [r.row for r in data.rejected] == [3]
    assert len(data.annotations) == 2


def test_skip_bad_rows_reports_every_row(tmp_path):
    path = tmp_path / "t.csv"
    _write_rows(path, [GOOD, ["b.jpg", "1 x", "3", "3", "6"], GOOD,
                       ["c.jpg", "1 1", "3", "3", "99"], ["b.jpg", "2 1", "3", "3", "7"]])
    with pytest.raises(KitError, match=r"t.csv:3: .*\(1 more bad row"):
        csv_to_coco(path, quiet=True)
    data = csv_to_coco(path, quiet=True, skip_bad_rows=True, chunksize=2, workers=0)
    got = [(r.row, r.image_id, r.reason) for r in data.rejected]
    assert got == [(3, "b.jpg", "RLE token is not an integer (value 'x')"),
                   (5, "c.jpg", "unknown category id 99 (known: 0–45) (value 99)"),
                   (5, "c.jpg", "image left without annotations")]
    coco = data.to_dict()
    # c.jpg lost its only row and is not an image of the set; b.jpg keeps row 6
    assert [im["file_name"] for im in coco["images"]] == ["a.jpg", "b.jpg"]
    assert [a["image_id"] for a in coco["annotations"]] == [1, 1, 2]


def test_header_errors(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("ImageId,EncodedPixels,Height,ClassId\na.jpg,1 1,3,6\n")
    with pytest.raises(KitError, match=r"t.csv:1: header lacks column\(s\) Width"):
        csv_to_coco(path, quiet=True)
    with pytest.raises(KitError, match="file not found"):
        csv_to_coco(tmp_path / "nope.csv", quiet=True)


def test_missing_image(synth_copy):
    first = pd.read_csv(synth_copy / "train.csv").ImageId.iloc[0]
    (synth_copy / "train" / first).unlink()
    with pytest.raises(KitError, match=rf"train.csv:2: image file .*{first} does not exist"):
        csv_to_coco(synth_copy / "train.csv", image_dir=synth_copy / "train", quiet=True)
    # without the image check the same file converts
    assert csv_to_coco(synth_copy / "train.csv", quiet=True).images


def _swap_image(data_dir, name):
    p = data_dir / "train" / name
    with Image.open(p) as im:
        im.transpose(Image.Transpose.TRANSPOSE).save(p, quality=92)


def test_size_mismatch_policies(synth_copy):
    df = pd.read_csv(synth_copy / "train.csv")
    sizes = df.drop_duplicates("ImageId")
    victim = sizes[sizes.Height != sizes.Width].iloc[1]
    _swap_image(synth_copy, victim.ImageId)
    csv, train = synth_copy / "train.csv", synth_copy / "train"
    row = int(df.index[df.ImageId == victim.ImageId][0]) + 2
    with pytest.raises(KitError, match=rf"train.csv:{row}: CSV size {victim.Height}x"
                       rf"{victim.Width} .* use --size-mismatch transpose or drop"):
        csv_to_coco(csv, image_dir=train, quiet=True)

    fixed = csv_to_coco(csv, image_dir=train, size_mismatch="transpose", quiet=True).to_dict()
    im = next(i for i in fixed["images"] if i["image_key"] == victim.ImageId)
    assert (im["height"], im["width"]) == (victim.Width, victim.Height)
    anns = [a for a in fixed["annotations"] if a["image_id"] == im["id"]]
    rows = df[df.ImageId == victim.ImageId]
    assert len(anns) == len(rows)
    for a, (_, r) in zip(anns, rows.iterrows()):
        np.testing.assert_array_equal(mask_util.decode(a["segmentation"]),
                                      rle.decode(r.EncodedPixels, r.Height, r.Width).T)
        assert a["bbox"] == mask_util.toBbox(a["segmentation"]).astype(int).tolist()

    dropped = csv_to_coco(csv, image_dir=train, size_mismatch="drop", quiet=True)
    assert victim.ImageId not in [i["image_key"] for i in dropped.images]
    assert len(dropped.images) == len(sizes) - 1
    assert len(dropped.annotations) == len(df) - len(rows)
    assert dropped.size_fixes and "image dropped" in dropped.size_fixes[0]
    coco = dropped.to_dict()
    assert sorted(i["id"] for i in coco["images"]) == list(range(1, len(sizes)))
    assert {a["image_id"] for a in coco["annotations"]} <= {i["id"] for i in coco["images"]}


def test_not_a_swap_cannot_be_transposed(synth_copy):
    name = pd.read_csv(synth_copy / "train.csv").ImageId.iloc[0]
    p = synth_copy / "train" / name
    with Image.open(p) as im:
        im.resize((im.width + 3, im.height)).save(p)
    with pytest.raises(KitError, match="not a pure swap"):
        csv_to_coco(synth_copy / "train.csv", image_dir=synth_copy / "train",
                    size_mismatch="transpose", quiet=True)
    with pytest.raises(KitError, match="size_mismatch must be one of"):
        csv_to_coco(synth_copy / "train.csv", size_mismatch="fix", quiet=True)
