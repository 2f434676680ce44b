"""Error analysis on hand-made cases whose breakdown is known: TIDE's error types and dAP
(101-point AP50 in %), the images' own scores, attribute F1."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_util

from imat_kit.eval.analysis import attribute_f1, error_breakdown, image_scores
from imat_kit.predictions import ImagePrediction

H = W = 40


def _rle(y0, y1, x0, x1):
    m = np.zeros((H, W), np.uint8, order="F")
    m[y0:y1, x0:x1] = 1
    r = mask_util.encode(m)
    return {"size": [H, W], "counts": r["counts"].decode()}


SQ1, SQ2 = (0, 10, 0, 10), (20, 30, 20, 30)
FAR = (30, 40, 0, 10)  # IoU 0 with both squares
LOOSE = (0, 10, 6, 16)  # IoU 4*10 / (100 + 100 - 40) = 0.25 with SQ1


def _case(truth: dict, dets: dict, attrs: dict | None = None):
    """truth: image → [(category, box, attribute ids)]; dets: image → [(category, score, box)]"""
    images, anns, preds = [], [], {}
    for i, key in enumerate(sorted(set(truth) | set(dets))):
        images.append({"id": i + 1, "image_key": key, "height": H, "width": W})
        for c, box, *at in truth.get(key, []):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": c,
                         "segmentation": _rle(*box), "area": 1, "iscrowd": 0,
                         "bbox": [box[2], box[0], box[3] - box[2], box[1] - box[0]],
                         "attribute_ids": list(at[0]) if at else []})
        d = dets.get(key, [])
        rles = [_rle(*b) for _, _, b in d]
        preds[key] = ImagePrediction(
            key, H, W, np.array([c for c, _, _ in d], np.int64),
            np.array([s for _, s, _ in d], np.float32),
            np.array([mask_util.toBbox(r) for r in rles], np.float32).reshape(-1, 4),
            [r["counts"] for r in rles], attributes=(attrs or {}).get(key, []))
    return {"images": images, "annotations": anns,
            "categories": [{"id": c, "name": str(c)} for c in range(5)]}, preds


def _only(result: dict, kind: str, dap: float) -> None:
    assert result["dAP"][kind] == pytest.approx(dap, abs=1e-6), result
    for k, v in result["dAP"].items():
        if k != kind:
            assert v == pytest.approx(0.0, abs=1e-9), (k, result)


def test_classification_error():
    # category 1 is found on a; on b a truth of category 2 is detected as category 1:
    # AP50 = mean(class 1: 100, class 2: 0) = 50; fixing the class makes both 100
    gt, p = _case({"a": [(1, SQ1)], "b": [(2, SQ2)]},
                  {"a": [(1, 0.9, SQ1)], "b": [(1, 0.8, SQ2)]})
    r = error_breakdown(gt, p)
    assert r["AP50"] == pytest.approx(50.0) and r["counts"]["Cls"] == 1
    _only(r, "Cls", 50.0)


def test_localisation_error():
    gt, p = _case({"a": [(1, SQ1)]}, {"a": [(1, 0.9, LOOSE)]})
    r = error_breakdown(gt, p)
    assert r["AP50"] == 0.0 and r["counts"]["Loc"] == 1 and r["counts"]["Miss"] == 0
    _only(r, "Loc", 100.0)


def test_duplicate_error():
    # ranking TP(0.9), duplicate(0.8), TP(0.7): precision 1 up to recall 0.5, then 2/3:
    # 101-point AP = (51 * 1 + 50 * 2/3) / 101
    gt, p = _case({"a": [(1, SQ1)], "b": [(1, SQ2)]},
                  {"a": [(1, 0.9, SQ1), (1, 0.8, SQ1)], "b": [(1, 0.7, SQ2)]})
    r = error_breakdown(gt, p)
    base = (51 + 50 * 2 / 3) / 101 * 100
    assert r["AP50"] == pytest.approx(base) and r["counts"]["Dupe"] == 1
    _only(r, "Dupe", 100 - base)


def test_background_error():
    # FP(0.9) above the TP(0.7): precision 1/2 at every recall → AP 50
    gt, p = _case({"a": [(1, SQ1)]}, {"a": [(1, 0.9, FAR), (1, 0.7, SQ1)]})
    r = error_breakdown(gt, p)
    assert r["AP50"] == pytest.approx(50.0) and r["counts"]["Bkg"] == 1
    _only(r, "Bkg", 50.0)


def test_missed_truth():
    # one of two truths found: recall 0.5 at precision 1 → 51 of 101 points
    gt, p = _case({"a": [(1, SQ1), (1, SQ2)]}, {"a": [(1, 0.9, SQ1)]})
    r = error_breakdown(gt, p)
    assert r["AP50"] == pytest.approx(51 / 101 * 100) and r["counts"]["Miss"] == 1
    _only(r, "Miss", 100 - 51 / 101 * 100)


def test_both_error_and_an_image_without_truth():
    # a category-2 detection overlapping a category-1 truth by IoU 0.25 (neither class nor
    # location right) → "Both"; a detection on an image without truth → background
    gt, p = _case({"a": [(1, SQ1)], "b": []}, {"a": [(2, 0.9, LOOSE)], "b": [(1, 0.5, SQ2)]})
    r = error_breakdown(gt, p)
    assert r["counts"]["Both"] == 1 and r["counts"]["Bkg"] == 1 and r["counts"]["Miss"] == 1


def test_nothing_predicted():
    # every truth missed and nothing else: fixing the misses leaves nothing to average
    gt, p = _case({"a": [(1, SQ1)], "b": [(2, SQ2)]}, {"a": [], "b": []})
    r = error_breakdown(gt, p)
    assert r["AP50"] == 0.0 and r["counts"]["Miss"] == 2 and np.isnan(r["dAP"]["Miss"])
    assert all(r["dAP"][k] == 0.0 for k in ("Cls", "Loc", "Both", "Dupe", "Bkg"))


def test_image_scores_worst_first():
    gt, p = _case({"a": [(1, SQ1)], "b": [(1, SQ2)], "c": [(1, SQ1)]},
                  {"a": [(1, 0.9, SQ1)], "b": [(1, 0.9, FAR)], "c": [(1, 0.9, LOOSE)]})
    s = image_scores(gt, p)
    assert s.image_key.tolist()[-1] == "a" and s.score.iloc[-1] == 1.0
    assert set(s.image_key[:2]) == {"b", "c"} and (s.score[:2] == 0).all()
    assert s.truth.tolist() == [1, 1, 1] and s.predicted.tolist() == [1, 1, 1]


def test_attribute_f1_over_matched_instances():
    gt, p = _case({"a": [(1, SQ1, (3, 5)), (2, SQ2, (7,))], "b": [(1, SQ1, (3,))]},
                  {"a": [(1, 0.9, SQ1), (2, 0.8, FAR)], "b": [(1, 0.9, SQ1)]},
                  attrs={"a": [(3, 9), (7,)], "b": [(3,)]})
    f = attribute_f1(gt, p).set_index("attribute_id")
    assert f.loc[3, ["tp", "fp", "fn", "support"]].tolist() == [2, 0, 0, 2]
    assert f.loc[5, ["tp", "fn"]].tolist() == [0, 1] and f.loc[5, "f1"] == 0.0
    assert f.loc[9, ["fp", "support"]].tolist() == [1, 0]
    assert f.loc[7, ["tp", "fn"]].tolist() == [0, 1]  # its detection missed the truth
    assert attribute_f1(*_case({"a": [(1, SQ1)]}, {"a": [(1, 0.9, SQ1)]})).empty
