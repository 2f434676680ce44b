"""The COCO AP engine (faster-coco-eval) against the field's reference (pycocotools' COCOeval):
all twelve summary figures and every per-category AP, on random cases built to hit the corners
(score ties, images without truth or without predictions, masks of a few pixels, more than 100
detections of one category in one image) and on the synthetic sets of both years; and the 2019
competition score read from the engine's IoUs equal to the one computed from the masks."""

import copy

import numpy as np
import pytest

from imat_kit.eval.evaluate import evaluate_fold
from imat_kit.eval.metric import (
    AVERAGES,
    COCO_SUMMARY,
    coco_eval,
    coco_truth,
    competition_from_ious,
    competition_score,
    pred_instances,
    truth_instances,
)
from tests.helpers.coco import corner_case, jittered_fold, pycocotools_eval, results_for_pycocotools


def assert_same_as_pycocotools(gt: dict, preds: dict, iou_type: str) -> dict:
    ours = coco_eval(gt, preds, iou_type)
    stats, per_cat = pycocotools_eval(gt, results_for_pycocotools(gt, preds, iou_type),
                                      iou_type)
    assert [ours["summary"][k] for k in COCO_SUMMARY] == pytest.approx(list(stats), abs=1e-12)
    assert ours["per_category"].keys() == per_cat.keys()
    for c, ap in per_cat.items():
        assert ours["per_category"][c] == pytest.approx(ap, abs=1e-12, nan_ok=True), c
    return ours


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_twelve_figures_and_per_category_ap_equal_pycocotools(seed, iou_type):
    gt, preds = corner_case(seed)
    before = copy.deepcopy(gt)
    ours = assert_same_as_pycocotools(gt, preds, iou_type)
    assert 0 < ours["AP50"] < 1  # a non-trivial case
    assert any(np.isnan(v) for v in ours["per_category"].values())  # a category without truth
    assert gt == before  # the caller's truth is left as it was


@pytest.mark.parametrize("year", [2019, 2020])
def test_synthetic_sets_of_both_years_equal_pycocotools(year, prepared, prepared2020):
    prep = prepared if year == 2019 else prepared2020
    gt, preds = jittered_fold(prep, 0, seed=year)
    for iou_type in ("segm", "bbox"):
        ours = assert_same_as_pycocotools(gt, preds, iou_type)
        assert 0.1 < ours["AP"] < 0.95


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("score_thr", [0.0, 0.3, 0.55])
def test_competition_from_the_engines_ious_equals_the_score_from_masks(seed, score_thr):
    gt, preds = corner_case(seed)
    segm = coco_eval(gt, preds, "segm", keep_ious=True)
    for average in AVERAGES:
        fast = competition_from_ious(gt, preds, segm["ious"], score_thr=score_thr,
                                     average=average, max_dets=segm["max_dets"])
        ref = competition_score(truth_instances(gt), pred_instances(preds, False, score_thr),
                                average=average)
        assert fast["count"] == ref["count"]
        np.testing.assert_allclose(fast["per_threshold"], ref["per_threshold"], atol=1e-12)
        assert fast["score"] == pytest.approx(ref["score"], abs=1e-12)
    # the 130-detection image is past COCO's 100: its IoUs are computed anew, not cut short
    if score_thr == 0.0:
        assert len(segm["ious"][(4, 0)]) == 100


def test_evaluate_fold_reads_the_truth_once_and_adds_the_box_ap_on_request():
    gt, preds = corner_case(0)
    plain = evaluate_fold(gt, preds)
    both = evaluate_fold(gt, preds, bbox=True)
    assert "bbox_AP" not in plain["row"]
    assert both["row"]["bbox_AP"] == pytest.approx(coco_eval(gt, preds, "bbox")["AP"])
    assert {k: v for k, v in both["row"].items() if k != "bbox_AP"} == plain["row"]
    assert plain["row"]["competition"] == pytest.approx(competition_score(
        truth_instances(gt), pred_instances(preds, False, 0.3))["score"], abs=1e-12)
    assert plain["segm"]["pr_curves"].shape == (10, 101)
    # an index built once serves both IoU types and gives what a fresh one gives
    truth = coco_truth(gt)
    for iou_type in ("segm", "bbox"):
        a = coco_eval(gt, preds, iou_type, truth=truth)
        b = coco_eval(gt, preds, iou_type)
        assert a["summary"] == b["summary"]


def test_nothing_predicted_is_zero_and_an_unknown_iou_type_is_refused():
    gt, _ = corner_case(1)
    ev = coco_eval(gt, {})
    assert ev["AP"] == 0.0 and all(v == 0.0 for v in ev["summary"].values())
    with pytest.raises(ValueError, match="iou_type must be one of"):
        coco_eval(gt, {}, "keypoints")
