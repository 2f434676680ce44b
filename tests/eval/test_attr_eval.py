"""Attribute thresholds, per-attribute evaluation, fused attributes, 2020 submissions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pycocotools import mask as mask_util

from imat_kit.cli.commands import main
from imat_kit.data import paths as layout
from imat_kit.data.labels import load_labels
from imat_kit.data.paths import find_labels, sample_image_ids
from imat_kit.ensemble import fuse_image
from imat_kit.errors import KitError
from imat_kit.eval.attr_eval import attribute_table, micro_f1, tune_thresholds
from imat_kit.postprocess import (
    AttributeThresholds,
    PostProcess,
    apply_thresholds,
    load_thresholds,
)
from imat_kit.predictions import ImagePrediction, write_predictions
from imat_kit.submission import score_submission, submit, validate_submission
from tests.helpers.predictions import truth_predictions


def _case(n: int, seed: int = 0, size: int = 40):
    """``n`` images with one square truth each (category 1) and the COCO ground truth."""
    images, anns, masks = [], [], []
    for i in range(n):
        m = np.zeros((size, size), np.uint8)
        m[5:25, 5:25] = 1
        r = mask_util.encode(np.asfortranarray(m))
        r["counts"] = r["counts"].decode("ascii")
        images.append({"id": i + 1, "image_key": f"im{i}", "height": size, "width": size})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "segmentation": r,
                     "area": 400, "iscrowd": 0, "attribute_ids": []})
        masks.append(r["counts"])
    return {"images": images, "annotations": anns,
            "categories": [{"id": c, "name": f"c{c}"} for c in range(46)]}, masks


def _preds(gt, masks, probs):
    return {im["image_key"]: ImagePrediction(
        im["image_key"], 40, 40, np.array([1]), np.array([0.9], np.float32),
        np.array([[5, 5, 20, 20]], np.float32), [masks[i]], attr_probs=[probs[i]])
        for i, im in enumerate(gt["images"])}


def test_tune_thresholds_finds_the_known_optimum():
    gt, masks = _case(6)
    # attribute 7: positives at 0.9, 0.8, 0.7; negatives at 0.65, 0.3, 0.2 → cut between
    # 0.7 and 0.65 gives F1 1 (0.5 gives 6/7); attribute 9: one truth (below min_support)
    p7 = [0.9, 0.8, 0.7, 0.65, 0.3, 0.2]
    for i in range(3):
        gt["annotations"][i]["attribute_ids"] = [7]
    gt["annotations"][5]["attribute_ids"] = [9]
    probs = [{7: p7[i], 9: 0.6} for i in range(6)]
    run = {"file": "f", "fold": 0, "gt": gt, "preds": _preds(gt, masks, probs),
           "head": {"attribute_floor": 0.05}}
    r = tune_thresholds([run], [7, 9, 11], min_support=2, global_threshold=0.5)
    a7, a9 = r["attributes"]["7"], r["attributes"]["9"]
    assert a7["tuned"] and a7["threshold"] == pytest.approx(0.675)
    assert a7["f1"] == pytest.approx(1.0) and a7["f1_at_global"] == pytest.approx(6 / 7)
    assert not a9["tuned"] and a9["threshold"] == 0.5 and a9["support"] == 1
    assert "11" not in r["attributes"]  # no truth: nothing to tune
    # the global threshold tuned for the pooled micro F1: the cut between 0.7 and 0.65 (3 TP,
    # 1 FN: 6/7) beats the one below 0.6 (4 TP, 6 FP: 8/14)
    g = tune_thresholds([run], [7, 9, 11], min_support=2)
    assert g["global_tuned"] and g["global_threshold"] == pytest.approx(0.675)
    assert g["attributes"]["9"]["threshold"] == pytest.approx(0.675)
    # at 0.5: attribute 7 on four (3 TP, 1 FP), attribute 9 on all six (1 TP, 5 FP): 8/14
    assert g["micro_f1"] == pytest.approx(6 / 7, abs=1e-6)
    assert g["micro_f1_at_0.5"] == pytest.approx(8 / 14, abs=1e-6)
    thr = AttributeThresholds(0.5, {7: a7["threshold"]})
    cut = apply_thresholds(run["preds"], thr)
    assert [cut[f"im{i}"].attributes[0] for i in range(6)] == \
        [(7, 9), (7, 9), (7, 9), (9,), (9,), (9,)]


def test_tune_thresholds_with_nothing_matched():
    """An attribute model that detected nothing (or nothing right): no attribute to tune, the
    global threshold stays 0.5 — a file, not a traceback."""
    gt, _ = _case(3)
    gt["annotations"][0]["attribute_ids"] = [7]
    empty = {im["image_key"]: ImagePrediction(im["image_key"], 40, 40, np.zeros(0, np.int64),
                                              np.zeros(0, np.float32), np.zeros((0, 4),
                                                                                np.float32), [])
             for im in gt["images"]}
    run = {"file": "f", "fold": 0, "gt": gt, "preds": empty, "head": {"attribute_model": True}}
    r = tune_thresholds([run], [7, 9])
    assert r["attributes"] == {} and r["global_threshold"] == 0.5
    assert r["matched_instances"] == 0 and r["micro_f1"] == 0.0


def test_thresholds_file_round_trip_and_errors(tmp_path):
    from imat_kit.errors import KitWarning
    from imat_kit.eval.attr_eval import write_thresholds
    from imat_kit.postprocess import AttributeDecoder, load_postprocess

    gt, masks = _case(4)
    for i in range(2):
        gt["annotations"][i]["attribute_ids"] = [3]
    run = {"file": "f", "fold": 0, "gt": gt, "head": {},
           "preds": _preds(gt, masks, [{3: 0.4}, {3: 0.35}, {3: 0.1}, {}])}
    content = tune_thresholds([run], [3], min_support=1)
    path = tmp_path / "t.json"
    write_thresholds(content, path, load_labels())
    thr = load_thresholds(path, load_labels())
    assert thr.of(3) == pytest.approx(0.225) and thr.of(99) == content["global_threshold"]
    # it is a postprocess file: the defaults, attributes decoded at the tuned thresholds
    post, whole = load_postprocess(path, load_labels())
    assert post == PostProcess(attributes=AttributeDecoder(thresholds=thr))
    assert whole["tuned_by"] == "tune-attributes" and whole["attribute_tuning"] == content
    # a thresholds file of an earlier imat-kit: read, with a note saying how to replace it
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"format": "imat-kit-attribute-thresholds", **content}))
    with pytest.warns(KitWarning, match="tune-attributes writes a postprocess file now"):
        assert load_thresholds(old, load_labels()) == thr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "imat-kit-attribute-thresholds", **content,
                               "attributes": {"3": {"threshold": 2}}}))
    with pytest.raises(KitError, match=r"threshold in 0\.\.1"), pytest.warns(KitWarning):
        load_thresholds(bad)
    bad.write_text("{}")
    with pytest.raises(KitError, match="not a postprocess file"):
        load_thresholds(bad)
    topk = tmp_path / "topk.json"
    topk.write_text(json.dumps({"format": "imat-kit-postprocess", "settings": PostProcess(
        attributes=AttributeDecoder("topk", topk={3: 2})).values()}))
    with pytest.raises(KitError, match="give it as --postprocess"):
        load_thresholds(topk)


def test_fusing_three_noisy_attribute_predictors_beats_the_best_single():
    rng = np.random.default_rng(0)
    n, attrs = 80, [2, 5, 8, 13, 21, 34]
    gt, masks = _case(n)
    truth = [sorted(int(a) for a in attrs if rng.random() < 0.35) for _ in range(n)]
    for a, t in zip(gt["annotations"], truth):
        a["attribute_ids"] = t
    labels = load_labels(year=2019)
    models = []
    for _ in range(3):  # each: truth + independent noise, then squashed to [0, 1]
        probs = [{a: float(np.clip((a in t) * 0.5 + 0.25 + rng.normal(0, 0.3), 0, 1))
                  for a in attrs} for t in truth]
        models.append(_preds(gt, masks, probs))
    thr = AttributeThresholds()

    def f1(preds):
        return micro_f1(attribute_table([{"gt": gt, "preds": preds}], labels, thr))

    singles = [f1(m) for m in models]
    fused = {k: fuse_image([m[k] for m in models]) for k in models[0]}
    assert all(len(p) == 1 for p in fused.values())  # the three copies fused into one
    assert f1(fused) > max(singles) + 0.03, (f1(fused), singles)


def test_evaluate_writes_attribute_figures(prepared2020, tmp_path, capsys):
    from imat_kit.data.paths import read_ann

    gt = read_ann(prepared2020, "val", 0)
    preds = {}
    for im in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == im["id"]]
        preds[im["image_key"]] = ImagePrediction(
            im["image_key"], im["height"], im["width"],
            np.array([a["category_id"] for a in anns], np.int64),
            np.linspace(0.99, 0.5, len(anns)).astype(np.float32),
            np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4),
            [a["segmentation"]["counts"] for a in anns],
            attr_probs=[{x: 0.9 for x in a["attribute_ids"]} for a in anns])
    f = tmp_path / "fold0_val.jsonl"
    write_predictions(f, {"split": "val", "fold": 0, "attribute_floor": 0.05}, preds.values())
    assert main(["evaluate", "--data", str(prepared2020), "--predictions", str(f), "--out",
                 str(tmp_path / "ev"), "-q"]) == 0
    table = pd.read_csv(tmp_path / "ev" / "evaluation.csv")
    assert table.AP_iou_f1.iloc[0] == pytest.approx(1.0)
    assert table.attr_micro_f1.iloc[0] == pytest.approx(1.0)
    assert table.prior_micro_f1.iloc[0] < 1.0
    per = pd.read_csv(tmp_path / "ev" / "per_attribute.csv")
    assert {"attribute_id", "name", "precision", "recall", "f1", "support", "prior_f1",
            "threshold"} <= set(per.columns)
    seen = per[per.support > 0]
    assert len(seen) and (seen.f1 == 1.0).all() and (seen.fp == 0).all()
    assert per[per.support == 0].f1.isna().all()  # only the prior named these: no F1
    # tune-attributes on the same folds: a JSON evaluate and submit accept
    out = tmp_path / "thr.json"
    assert main(["tune-attributes", "--data", str(prepared2020), "--predictions", str(f),
                 "--out", str(out), "--min-support", "1", "-q"]) == 0
    assert load_thresholds(out).per_attribute
    png = tmp_path / "attr.png"
    assert main(["plot", "attributes", "--data", str(prepared2020), "--predictions", str(f),
                 "--out", str(png), "--attribute-thresholds", str(out), "-q"]) == 0
    assert png.stat().st_size > 10_000
    assert main(["report", "--data", str(prepared2020), "--predictions", str(f), "--out",
                 str(tmp_path / "r.html"), "--attribute-thresholds", str(out), "-q"]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "AP<sup>IoU+F1</sup> <b>100.0</b>" in page and str(out) in page
    assert "tuned on fold(s) 0 shown here: a flattering figure" in page
    # the thresholds file of an earlier imat-kit: used, with one note on how to replace it
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"format": "imat-kit-attribute-thresholds",
                               **json.loads(out.read_text())["attribute_tuning"]}))
    capsys.readouterr()
    assert main(["evaluate", "--data", str(prepared2020), "--predictions", str(f), "--out",
                 str(tmp_path / "ev_old"), "--attribute-thresholds", str(old), "-q"]) == 0
    notes = [x for x in capsys.readouterr().err.splitlines() if "note:" in x]
    assert len(notes) == 1 and notes[0].startswith(f"imat-kit evaluate: note: {old}:"), notes
    assert main(["evaluate", "--data", str(prepared2020), "--predictions", str(f), "--out",
                 str(tmp_path / "ev_new"), "--attribute-thresholds", str(out), "-q"]) == 0
    assert "note:" not in capsys.readouterr().err
    assert (tmp_path / "ev_old" / "per_attribute.csv").read_text() == (
        tmp_path / "ev_new" / "per_attribute.csv").read_text()


def _submit_2020(data, tmp_path, preds):
    f = tmp_path / "test.jsonl"
    write_predictions(f, {"split": "test"}, preds.values())
    out = tmp_path / "sub.csv"
    man, problems = submit(f, data, out, PostProcess(score_thr=0.0, min_area=0), quiet=True)
    return out, man, problems


def test_2020_submission_round_trip(prepared2020, tmp_path):
    data = prepared2020
    out, man, problems = _submit_2020(data, tmp_path, truth_predictions(data))
    assert man["layout"] == 2020 and problems == []
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(df.columns) == ["ImageId", "EncodedPixels", "ClassId", "AttributesIds"]
    assert not df.ClassId.str.contains("_").any()
    assert (df.AttributesIds != "").any()
    for cell in df.AttributesIds[df.AttributesIds != ""]:
        ids = [int(x) for x in cell.split(",")]
        assert ids == sorted(set(ids))
    perfect = score_submission(out, data / "test_solution.csv", data, year=2020, quiet=True)
    assert perfect.score == pytest.approx(1.0)
    # the same masks without attributes: the garments no longer count
    out2, _, _ = _submit_2020(data, tmp_path, truth_predictions(data, attributes=False))
    blind = score_submission(out2, data / "test_solution.csv", data, year=2020, quiet=True)
    ignored = score_submission(out2, data / "test_solution.csv", data, quiet=True)
    assert blind.score < 0.9 and ignored.score == pytest.approx(1.0)
    assert main(["validate", "--submission", str(out), "--data", str(data), "-q"]) == 0
    assert main(["score", "--submission", str(out), "--solution",
                 str(data / "test_solution.csv"), "--data", str(data), "--year", "2020",
                 "--sweep", "paired", "--f1", "positive", "-q"]) == 0
    # --attributes (the 2019 layout's ClassId with attributes) has no 2020 meaning: refused
    # before anything is written (it used to write ClassIds its own validation refused)
    with pytest.raises(KitError, match="--attributes writes attributes into ClassId"):
        submit(tmp_path / "test.jsonl", data, tmp_path / "a.csv", attributes=True, quiet=True)
    assert not (tmp_path / "a.csv").exists()


def test_2020_validate_names_each_bad_attribute_cell(prepared2020, tmp_path):
    data = prepared2020
    out, _, _ = _submit_2020(data, tmp_path, truth_predictions(data))
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    rows = df.index[df.EncodedPixels != ""][:5].tolist()
    assert len(rows) == 5
    df.loc[rows[0], "AttributesIds"] = "9999"
    df.loc[rows[1], "AttributesIds"] = "115,115"
    df.loc[rows[2], "AttributesIds"] = "136,115"
    df.loc[rows[3], "AttributesIds"] = "115;136"
    df.loc[rows[4], "ClassId"] = df.loc[rows[4], "ClassId"] + "_115"
    bad = tmp_path / "bad.csv"
    df.to_csv(bad, index=False)
    problems = validate_submission(bad, sample_image_ids(data), layout.test_image_sizes(data),
                                   find_labels(data))
    text = {p.row: p.message for p in problems}
    assert "unknown attribute id 9999" in text[rows[0] + 2]
    assert "repeated" in text[rows[1] + 2]
    assert "ascending" in text[rows[2] + 2]
    assert "joined by ','" in text[rows[3] + 2] and "';'" in text[rows[3] + 2]
    assert "category alone" in text[rows[4] + 2]
    assert len(problems) == 5


def test_2019_submission_with_attributes_round_trip(synth_dir, tmp_path):
    from imat_kit.data.labels import parse_class_id

    prepared = synth_dir
    preds = truth_predictions(prepared)
    f = tmp_path / "test.jsonl"
    write_predictions(f, {"split": "test"}, preds.values())
    out = tmp_path / "sub.csv"
    man, problems = submit(f, prepared, out,
                           PostProcess(score_thr=0.0, min_area=0), attributes=True, quiet=True)
    assert man["layout"] == 2019 and problems == []
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(df.columns) == ["ImageId", "EncodedPixels", "ClassId"]
    assert any(parse_class_id(c)[1] for c in df.ClassId)
    sol = prepared / "test_solution.csv"
    assert score_submission(out, sol, prepared, attributes=True).score == pytest.approx(1.0)
    assert score_submission(out, sol, prepared, year=2020).score == pytest.approx(1.0)


def test_2020_score_published_formula_on_a_submission(prepared2020, tmp_path, capsys):
    """``score --year 2020`` ignores false negatives by default: one right row per image
    scores 1; an image whose only row is empty scores 0; ``--fn count`` is the old rule."""
    data = prepared2020
    out, _, _ = _submit_2020(data, tmp_path, truth_predictions(data))
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    df = df[df.EncodedPixels != ""].groupby("ImageId", sort=False).head(1)
    images = df.ImageId.tolist()
    assert len(images) >= 3
    one = tmp_path / "one.csv"
    df.to_csv(one, index=False)
    sol = data / "test_solution.csv"
    assert score_submission(one, sol, data, year=2020, quiet=True).score == 1.0
    counted = score_submission(one, sol, data, year=2020, fn="count", quiet=True).score
    assert counted < 0.9
    df.loc[df.ImageId == images[0], ["EncodedPixels", "ClassId", "AttributesIds"]] = ""
    empty = tmp_path / "empty.csv"
    df.to_csv(empty, index=False)
    r = score_submission(empty, sol, data, year=2020, quiet=True)
    assert r.score == pytest.approx((len(images) - 1) / len(images))
    assert r.count == len(images)
    capsys.readouterr()
    assert main(["score", "--submission", str(one), "--solution", str(sol), "--data",
                 str(data), "--year", "2020", "-q"]) == 0
    assert "TP/(TP+FP)," in capsys.readouterr().out
    assert main(["score", "--submission", str(one), "--solution", str(sol), "--data",
                 str(data), "--year", "2020", "--fn", "count", "-q"]) == 0
    line = capsys.readouterr().out
    assert "TP/(TP+FP+FN)" in line and f"{counted:.4f}" in line
