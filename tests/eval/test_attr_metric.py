"""AP^{IoU+F1} against Fashionpedia's own FPEval, and the 2020 competition rule by hand."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_util

from imat_kit.errors import KitError
from imat_kit.eval.attr_metric import (
    FASHIONPEDIA_ATTRIBUTE_CATEGORIES,
    competition_score_2020,
    fashionpedia_eval,
    pairwise_f1,
)
from imat_kit.eval.metric import Instance
from tests.helpers.coco import fpeval_results, random_attribute_case

ATTRS = [0, 3, 4, 7, 11, 12, 20, 31]  # non-contiguous, as the 2020 file's


def _rle(mask: np.ndarray) -> dict:
    r = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


def _random_case(seed: int):
    """4 images of 20×20, 0–4 truths and 1–6 detections each, categories with (0, 5, 28) and
    without (13, 40) attributes, scores to one decimal (ties happen)."""
    return random_attribute_case(seed, images=4, size=20, categories=[0, 5, 13, 28, 40],
                                 attributes=ATTRS, truths=(0, 5), detections=(1, 7),
                                 blob=(4, 12), shift=2, score_decimals=1)


@pytest.mark.parametrize("seed", range(12))
def test_fashionpedia_ap_equals_fpeval(seed):
    gt, dets = _random_case(seed)
    ref = fpeval_results(gt, dets)
    ours = fashionpedia_eval(gt, dets, attribute_ids=ATTRS)
    compared = 0
    for mode in ("iou_f1", "iou", "f1"):
        for key, value in ours[mode].items():
            want = ref[mode][key]
            got = -1.0 if np.isnan(value) else value
            assert got == pytest.approx(want, abs=1e-6), (seed, mode, key)
            compared += 1
    assert compared == 15
    assert ours["iou_f1"]["AP"] <= ours["iou"]["AP"] + 1e-12  # attributes can only cost


def test_fashionpedia_ap_attributes_matter():
    """The same masks with the right and with wrong attributes: AP^{IoU} equal, AP^{IoU+F1}
    lower with wrong ones (and FPEval agrees)."""
    gt, _ = _random_case(3)
    right = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 0.9,
              "segmentation": a["segmentation"], "attribute_ids": a["attribute_ids"]}
             for a in gt["annotations"]]
    wrong = [{**d, "attribute_ids": [x for x in ATTRS if x not in d["attribute_ids"]][:3]}
             for d in right]
    r, w = (fashionpedia_eval(gt, d, attribute_ids=ATTRS) for d in (right, wrong))
    assert r["iou"]["AP"] == pytest.approx(1.0) and w["iou"]["AP"] == pytest.approx(1.0)
    assert r["iou_f1"]["AP"] == pytest.approx(1.0)
    assert w["iou_f1"]["AP"] < 0.9
    assert w["iou_f1"]["AP"] == pytest.approx(fpeval_results(gt, wrong)["iou_f1"]["AP"], abs=1e-6)


def test_pairwise_f1_is_sklearn_binary_macro():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    a = 9
    pred = (rng.random((30, a)) < 0.3).astype(np.int64)
    truth = (rng.random((20, a)) < 0.3).astype(np.int64)
    pred[0] = 0
    truth[0] = 0
    pred[1] = 1
    truth[1] = 1
    got = pairwise_f1(pred, truth)
    for i in range(len(pred)):
        for j in range(len(truth)):
            assert got[i, j] == pytest.approx(f1_score(truth[j], pred[i], average="macro"))
    assert got[0, 0] == 1.0  # empty prediction on an attribute-less truth
    assert got[1, 1] == 1.0


def test_fashionpedia_categories_are_fpevals():
    fpeval_results(*_random_case(0))  # imports the package the way it can run here
    from fashionpedia.fp_eval import FPParams

    assert set(FASHIONPEDIA_ATTRIBUTE_CATEGORIES) == set(FPParams().catsWithAttributes)


# --- the 2020 rule --------------------------------------------------------------------------

def _inst(mask, cat, attrs=(), score=1.0):
    return Instance(cat, _rle(mask), score, tuple(attrs))


def _square(y, x, s=10, size=40):
    m = np.zeros((size, size), np.uint8)
    m[y:y + s, x:x + s] = 1
    return m


A20 = list(range(10))


def _score(gt, pred, **kw):
    return competition_score_2020({"im": gt}, {"im": pred}, attribute_ids=A20, **kw)["score"]


def test_2020_attributeless_truth_ignores_f1():
    m = _square(5, 5)
    assert _score([_inst(m, 3)], [_inst(m, 3, (1, 2))]) == 1.0


def test_2020_empty_prediction_on_truth_with_attributes():
    m = _square(5, 5)
    # binary_macro: positive class F1 0, negative class F1 2*8/(16+2) = 0.889 → mean 0.444
    assert _score([_inst(m, 3, (1, 2))], [_inst(m, 3)]) == 0.0
    assert _score([_inst(m, 3, (1, 2))], [_inst(m, 3, (1, 2))]) == 1.0


def test_2020_one_wrong_attribute_and_threshold_edges():
    m = _square(5, 5)
    gt = [_inst(m, 3, (1, 2))]
    pred = [_inst(m, 3, (1, 3))]
    # positive F1 = 0.5; negative F1 = 2*7/(14+2) = 0.875 → binary_macro 0.6875
    f1 = pairwise_f1(np.array([[0, 1, 0, 1, 0, 0, 0, 0, 0, 0]]),
                     np.array([[0, 1, 1, 0, 0, 0, 0, 0, 0, 0]]))[0, 0]
    assert f1 == pytest.approx(0.6875)
    # grid: IoU 1 passes every t_iou; F1 0.6875 > t_f1 for t_f1 in 0.50…0.65 (4 of 10)
    assert _score(gt, pred) == pytest.approx(0.4)
    assert _score(gt, pred, sweep="paired") == pytest.approx(0.4)
    # positive-class F1 0.5 is not > 0.5: strict comparison, no threshold passes
    assert _score(gt, pred, f1="positive") == 0.0
    # IoU exactly 0.5 does not pass t_iou = 0.5 (strict): shift by half the side
    half = _square(5, 10)
    iou = mask_util.iou([_rle(half)], [_rle(m)], [0])[0, 0]
    assert iou == pytest.approx(1 / 3)
    wide = np.zeros((40, 40), np.uint8)
    wide[5:15, 5:25] = 1  # IoU with m: 100 / 200 = 0.5 exactly
    assert _score([_inst(m, 3)], [_inst(wide, 3)]) == 0.0


def test_2020_greedy_by_score_and_counts():
    a, b = _square(2, 2), _square(20, 20)
    gt = [_inst(a, 1, (4,)), _inst(b, 1, (5,))]
    pred = [_inst(a, 1, (4,), 0.9), _inst(b, 1, (4,), 0.8), _inst(b, 7, (), 0.7)]
    # a: TP everywhere; b: wrong attribute → FP + FN (F1 of {4} vs {5}: pos 0, neg 0.889)
    # b's F1 0.444 < 0.5 → never TP; category 7: FP → TP 1, FP 2 (FN 1, not counted) → 1/3
    assert _score(gt, pred) == pytest.approx(1 / 3)
    assert _score(gt, pred, fn="count") == pytest.approx(0.25)
    # per class: category 1 TP 1, FP 1 → 1/2 (counting its FN: 1/3); category 7 → 0
    assert _score(gt, pred, average="class") == pytest.approx((1 / 2 + 0.0) / 2)
    assert _score(gt, pred, average="class", fn="count") == pytest.approx((1 / 3 + 0.0) / 2)


def _score_images(gt, pred, **kw):
    return competition_score_2020(gt, pred, attribute_ids=A20, **kw)["score"]


def test_2020_published_formula_one_sure_prediction_scores_one():
    """TP / (TP + FP): one right prediction among three truths scores 1 (2020, as the
    competition computed it); 1/3 when false negatives count."""
    a, b, c = _square(2, 2), _square(20, 2), _square(2, 20)
    gt = [_inst(a, 1), _inst(b, 2), _inst(c, 3, (4,))]
    assert _score(gt, [_inst(a, 1, (), 0.9)]) == 1.0
    assert _score(gt, [_inst(a, 1, (), 0.9)], fn="count") == pytest.approx(1 / 3)
    # a second, wrong prediction halves it: TP 1, FP 1
    assert _score(gt, [_inst(a, 1, (), 0.9), _inst(b, 3, (), 0.5)]) == pytest.approx(0.5)
    # a prediction that passes half the IoU thresholds: IoU 0.8 → t_iou 0.50…0.75 (6 of 10)
    near = np.zeros((40, 40), np.uint8)
    near[2:10, 2:12] = 1  # 80 of a's 100 px
    assert _score(gt, [_inst(near, 1, (), 0.9)]) == pytest.approx(0.6)


def test_2020_open_cases_image_without_prediction_and_average():
    """The cases the published formula leaves open (docs/metrics.md): an image with truth and
    no prediction scores 0; an image with neither is not counted; an image with predictions
    and no truth scores 0; under ``image_class`` a (image, category) pair with truth and no
    prediction scores 0 (so missing a category costs there, as it does per image)."""
    a, b = _square(2, 2), _square(20, 20)
    gt = {"hit": [_inst(a, 1), _inst(b, 2)], "missed": [_inst(a, 1)], "nothing": [],
          "stray": []}
    pred = {"hit": [_inst(a, 1, (), 0.9)], "stray": [_inst(a, 5, (), 0.9)]}
    # hit 1, missed 0, stray 0; "nothing" has neither → not counted
    r = competition_score_2020(gt, pred, attribute_ids=A20)
    assert r["score"] == pytest.approx(1 / 3) and r["count"] == 3
    # count: hit 1/2, missed 0, stray 0
    assert _score_images(gt, pred, fn="count") == pytest.approx(1 / 6)
    # image_class: (hit, 1) 1, (hit, 2) 0, (missed, 1) 0, (stray, 5) 0
    r = competition_score_2020(gt, pred, attribute_ids=A20, average="image_class")
    assert r["score"] == pytest.approx(1 / 4) and r["count"] == 4
    with pytest.raises(KitError, match="fn must be one of"):
        _score_images(gt, pred, fn="never")
