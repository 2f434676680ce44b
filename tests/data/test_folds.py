import json

import numpy as np
import pandas as pd
import pytest

from imat_kit.data.coco import csv_to_coco
from imat_kit.data.folds import (
    balance_report,
    make_folds,
    presence_matrix,
    read_folds_csv,
    summarise_balance,
)
from imat_kit.data.labels import load_labels
from imat_kit.data.prepare import prepare
from imat_kit.data.synth_real import generate_full_csv
from imat_kit.errors import KitError


@pytest.fixture(scope="module")
def presence(tmp_path_factory):
    out = tmp_path_factory.mktemp("fullish")
    generate_full_csv(out, seed=1, images=2500, rows=18000, quiet=True)
    data = csv_to_coco(out / "train.csv", quiet=True)
    return presence_matrix(data.ann_image, data.ann_category, len(data.images), 46)


def test_folds_deterministic(presence):
    a = make_folds(presence, 5, "stratified", seed=7)
    assert (a == make_folds(presence, 5, "stratified", seed=7)).all()
    assert (a != make_folds(presence, 5, "stratified", seed=8)).any()
    sizes = np.bincount(a, minlength=5)  # stratification trades a few images for balance
    assert sizes.sum() == len(presence) and np.abs(sizes - len(presence) / 5).max() <= 0.02 * 500
    r = make_folds(presence, 5, "random", seed=7)
    rs = np.bincount(r, minlength=5)
    assert rs.max() - rs.min() <= 1  # plain K-fold: sizes differ by at most one image
    assert (r == make_folds(presence, 5, "random", seed=7)).all()
    assert set(a.tolist()) == set(r.tolist()) == set(range(5))
    # fold 0 of a random 5-fold split is the reference study's 80/20 split
    assert abs((r == 0).mean() - 0.2) < 0.01


def test_stratified_balances_better_than_random(presence):
    names = load_labels().class_names
    for seed in range(3):
        s = summarise_balance(balance_report(presence, make_folds(presence, 5, "stratified",
                                                                  seed), names))
        r = summarise_balance(balance_report(presence, make_folds(presence, 5, "random", seed),
                                             names))
        assert s["mean_max_rel_dev"] < 0.5 * r["mean_max_rel_dev"], (seed, s, r)
        assert s["worst_max_rel_dev"] < r["worst_max_rel_dev"]


def test_balance_report_values():
    y = np.array([[1, 0], [1, 0], [1, 1], [0, 1]], dtype=np.uint8)
    rep = balance_report(y, np.array([0, 1, 0, 1]), ["a", "b"])
    assert rep["fold0"].tolist() == [2, 1] and rep["fold1"].tolist() == [1, 1]
    assert rep["max_rel_dev"].tolist() == pytest.approx([0.5 / 1.5, 0.0])
    assert rep["total"].tolist() == [3, 2]


def test_make_folds_errors():
    y = np.zeros((3, 2), np.uint8)
    with pytest.raises(KitError, match="cannot split 3 image"):
        make_folds(y, 5)
    with pytest.raises(KitError, match="at least 2 folds"):
        make_folds(y, 1)
    with pytest.raises(KitError, match="split method"):
        make_folds(y, 2, "kmeans")


def test_read_folds_csv_errors(tmp_path):
    p = tmp_path / "folds.csv"
    p.write_text("ImageId,fold\na.jpg,0\nb.jpg,x\n")
    with pytest.raises(KitError, match=r"folds.csv:3: fold must be a non-negative integer"):
        read_folds_csv(p)
    p.write_text("ImageId,fold\na.jpg,0\na.jpg,1\n")
    with pytest.raises(KitError, match=r"folds.csv:3: ImageId listed twice"):
        read_folds_csv(p)
    p.write_text("Image,fold\na.jpg,0\n")
    with pytest.raises(KitError, match=r"folds.csv:1: header lacks column\(s\) ImageId"):
        read_folds_csv(p)
    p.write_text("fold,ImageId\r\n1,b.jpg\r\n0,a.jpg\r\n")  # another column order, CRLF
    assert read_folds_csv(p).to_dict("list") == {"ImageId": ["b.jpg", "a.jpg"], "fold": [1, 0]}


def test_prepare_writes_consistent_fold_files(synth_dir, tmp_path):
    out = tmp_path / "prep"
    rep = prepare(synth_dir, out, n_folds=4, seed=2, quiet=True)
    folds = read_folds_csv(out / "folds.csv")
    all_ = json.loads((out / "annotations" / "all.json").read_text())
    assert rep["images"] == len(all_["images"]) == len(folds)
    key_of = {im["id"]: im["image_key"] for im in all_["images"]}
    fold_of = dict(zip(folds.ImageId, folds.fold))
    seen = set()
    for k in range(4):
        tr = json.loads((out / "annotations" / f"fold{k}_train.json").read_text())
        va = json.loads((out / "annotations" / f"fold{k}_val.json").read_text())
        va_keys = {im["image_key"] for im in va["images"]}
        assert all(fold_of[x] == k for x in va_keys)
        assert all(fold_of[im["image_key"]] != k for im in tr["images"])
        assert len(tr["images"]) + len(va["images"]) == len(all_["images"])
        assert len(tr["annotations"]) + len(va["annotations"]) == len(all_["annotations"])
        assert {key_of[a["image_id"]] for a in va["annotations"]} <= va_keys
        assert tr["categories"] == all_["categories"]
        seen |= va_keys
    assert seen == set(key_of.values())
    bal = pd.read_csv(out / "fold_balance.csv")
    assert list(bal.columns[:2]) == ["category_id", "category"] and len(bal) == 46
    test = json.loads((out / "annotations" / "test.json").read_text())
    sub = pd.read_csv(synth_dir / "sample_submission.csv")
    assert [im["image_key"] for im in test["images"]] == sub.ImageId.tolist()
    assert test["annotations"] == []
    # the same seed gives the same files
    prepare(synth_dir, tmp_path / "again", n_folds=4, seed=2, quiet=True)
    for name in ["folds.csv", "annotations/all.json", "annotations/fold3_val.json"]:
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes()


def test_prepare_leaves_no_partial_output(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    (data / "train.csv").write_text("ImageId,EncodedPixels,Height,Width,ClassId\n"
                                    "a.jpg,1 2,3,3,6\nb.jpg,1 2 3,3,3,6\n")
    with pytest.raises(KitError, match=r"train.csv:3: RLE has an odd number"):
        prepare(data, image_check=False, quiet=True)
    assert not (data / "annotations").exists() and not (data / "folds.csv").exists()
    with pytest.raises(KitError, match="pass --no-image-check"):
        prepare(data, quiet=True)
