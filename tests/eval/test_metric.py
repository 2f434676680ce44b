
import numpy as np
import pytest
from pycocotools import mask as mask_util

from imat_kit.eval.metric import IOU_THRESHOLDS, Instance, class_key, coco_eval, competition_score
from imat_kit.predictions import ImagePrediction
from tests.helpers.coco import pycocotools_stats


def box_rle(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), np.uint8, order="F")
    m[y0:y1, x0:x1] = 1
    r = mask_util.encode(m)
    r["counts"] = r["counts"].decode()
    return r


A = box_rle(20, 20, 0, 10, 0, 10)
B = box_rle(20, 20, 10, 20, 10, 20)
A_SHIFT = box_rle(20, 20, 0, 10, 2, 12)  # IoU with A = 80/120 = 0.667


def score(gt, pred, **kw):
    return competition_score(gt, pred, **kw)["score"]


def test_perfect_and_empty():
    gt = {"i": [Instance(6, A), Instance(7, B)]}
    assert score(gt, {"i": [Instance(6, A, 0.9), Instance(7, B, 0.8)]}) == 1.0
    assert score(gt, {}) == 0.0
    assert score(gt, {"i": []}) == 0.0


def test_empty_truth_with_a_prediction_scores_zero():
    gt = {"i": [Instance(6, A)], "j": []}
    r = competition_score(gt, {"i": [Instance(6, A, 0.9)], "j": [Instance(6, B, 0.5)]})
    assert r["score"] == 0.5 and r["count"] == 2
    # an image with neither truth nor prediction is not counted
    r = competition_score({"i": [Instance(6, A)], "k": []}, {"i": [Instance(6, A, 0.9)]})
    assert r["score"] == 1.0 and r["count"] == 1


def test_one_false_positive_and_duplicates():
    gt = {"i": [Instance(6, A)]}
    assert score(gt, {"i": [Instance(6, A, 0.9), Instance(6, B, 0.5)]}) == 0.5
    assert score(gt, {"i": [Instance(6, A, 0.9), Instance(6, A, 0.8)]}) == 0.5  # 2nd: FP


def test_iou_thresholds_partial_overlap():
    r = competition_score({"i": [Instance(6, A)]}, {"i": [Instance(6, A_SHIFT, 0.9)]})
    # IoU 0.667: a match at 0.50, 0.55, 0.60, 0.65 (4 of 10 thresholds) → TP/(TP+FP+FN) = 1
    assert r["per_threshold"].tolist() == [1.0] * 4 + [0.0] * 6
    assert r["score"] == pytest.approx(0.4)
    assert len(IOU_THRESHOLDS) == 10 and IOU_THRESHOLDS[-1] == 0.95


def test_greedy_by_score():
    gt = {"i": [Instance(6, A)]}
    # the higher-scoring prediction takes the truth even though it overlaps less
    r = competition_score(gt, {"i": [Instance(6, A_SHIFT, 0.9), Instance(6, A, 0.1)]})
    assert r["per_threshold"][0] == 0.5 and r["per_threshold"][-1] == 0.5  # 1 TP of 3 / 1 of 2


def test_attributes_must_match_when_used():
    gt = {"i": [Instance(class_key(6, (28, 77)), A)]}
    wrong = {"i": [Instance(class_key(6, (28,)), A, 0.9)]}
    assert score(gt, wrong) == 0.0
    gt_cat = {"i": [Instance(class_key(6, (28, 77), False), A)]}
    assert score(gt_cat, {"i": [Instance(class_key(6, (28,), False), A, 0.9)]}) == 1.0


def test_averaging_modes():
    gt = {"i": [Instance(6, A), Instance(7, B)], "j": [Instance(6, A)]}
    pred = {"i": [Instance(6, A, 0.9)], "j": [Instance(6, A, 0.9), Instance(8, B, 0.9)]}
    # image: i = 1/(1+0+1) = .5, j = 1/(1+1+0) = .5 → .5
    assert score(gt, pred, average="image") == pytest.approx(0.5)
    # pairs: (i,6)=1 (i,7)=0 (j,6)=1 (j,8)=0 → .5
    assert score(gt, pred, average="image_class") == pytest.approx(0.5)
    # classes: 6 → 2/2 = 1, 7 → 0, 8 → 0 → 1/3
    assert score(gt, pred, average="class") == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="average must be one of"):
        competition_score(gt, pred, average="micro")


def _random_case(seed):
    rng = np.random.default_rng(seed)
    images, anns, preds = [], [], {}
    for i in range(12):
        h, w = int(rng.integers(20, 40)), int(rng.integers(20, 40))
        key = f"{i}.jpg"
        images.append({"id": i + 1, "file_name": key, "image_key": key, "height": h,
                       "width": w})
        labels, scores, masks, boxes = [], [], [], []
        for _ in range(int(rng.integers(0, 4))):
            y0, x0 = int(rng.integers(0, h - 5)), int(rng.integers(0, w - 5))
            r = box_rle(h, w, y0, y0 + int(rng.integers(3, 8)), x0, x0 + int(rng.integers(3, 8)))
            cat = int(rng.integers(0, 3))
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat,
                         "segmentation": r, "area": float(mask_util.area(r)),
                         "bbox": mask_util.toBbox(r).tolist(), "iscrowd": 0})
            if rng.random() < 0.8:  # a jittered copy as a prediction
                dy, dx = rng.integers(-2, 3, 2)
                y, x = int(np.clip(y0 + dy, 0, h - 5)), int(np.clip(x0 + dx, 0, w - 5))
                p = box_rle(h, w, y, y + 5, x, x + 5)
                labels.append(cat if rng.random() < 0.9 else (cat + 1) % 3)
                scores.append(float(rng.random()))
                masks.append(p["counts"])
                boxes.append(mask_util.toBbox(p).tolist())
        preds[key] = ImagePrediction(key, h, w, np.array(labels, np.int64),
                                     np.array(scores, np.float32),
                                     np.array(boxes, np.float32).reshape(-1, 4), masks)
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": c, "name": str(c)} for c in range(3)]}
    return gt, preds


@pytest.mark.parametrize("seed", range(4))
def test_coco_ap_equals_pycocotools(seed):
    gt, preds = _random_case(seed)
    ours = coco_eval(gt, preds)
    # pycocotools, straight from its own objects
    res = [{"image_id": im["id"], "category_id": int(lab), "score": float(s),
            "segmentation": {"size": [im["height"], im["width"]], "counts": m}}
           for im in gt["images"] for p in [preds[im["image_key"]]]
           for lab, s, m in zip(p.labels, p.scores, p.masks)]
    stats = pycocotools_stats(gt, res, "segm")
    assert [ours[k] for k in ("AP", "AP50", "AP75")] == pytest.approx(list(stats[:3]))
    assert ours["AP50"] > 0  # a non-trivial case


def test_coco_eval_of_nothing_is_zero():
    gt, _ = _random_case(0)
    assert coco_eval(gt, {})["AP"] == 0.0


def test_pair_overlaps_give_pycocotools_ious(monkeypatch):
    """The listed pairs' shared pixels and the texts' areas (C, else pycocotools' merge) turn
    into exactly pycocotools' IoUs; str and bytes texts alike."""
    from imat_kit.data import rle
    from imat_kit.data.masks import iou_of, pair_ious, pair_overlaps

    rng = np.random.default_rng(6)
    for it in range(200):
        h, w = int(rng.integers(1, 30)), int(rng.integers(1, 30))
        ms = (rng.random((int(rng.integers(1, 7)), h, w)) < rng.uniform(0.05, 0.9)).astype(
            np.uint8)
        if it % 5 == 0:
            ms[0] = 0
        texts = [mask_util.encode(np.asfortranarray(m))["counts"] for m in ms]
        texts = [t if k % 2 else t.decode() for k, t in enumerate(texts)]
        n = len(texts)
        first, second = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(n),
                                                          indexing="ij"))
        rles = [{"size": [h, w], "counts": t} for t in texts]
        expected = pair_ious(rles, rles).ravel()
        for built in (rle._counts, None):
            with monkeypatch.context() as m:
                m.setattr(rle, "_counts", built)
                inter, areas = pair_overlaps(texts, first, second, [h, w])
            assert np.array_equal(areas, ms.sum(axis=(1, 2)))
            got = iou_of(inter, areas[first], areas[second])
            assert np.array_equal(got, expected)
