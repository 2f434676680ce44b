"""The training-time COCO metric (``IMatCocoMetric``) on faster-coco-eval gives mmdet's own
figures: its COCOeval against pycocotools' with mmdet's three maxDets, to full precision, and the
metric's whole result (both IoU types, all twelve items, per category) against the same metric
on pycocotools."""

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from imat_kit.mmdet_ext.metrics import IMatCocoMetric, PycocotoolsLayoutCOCOeval
from tests.helpers.coco import corner_case, jittered_fold, results_for_pycocotools

ALL_ITEMS = ["mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l", "AR@100", "AR@300",
             "AR@1000", "AR_s@1000", "AR_m@1000", "AR_l@1000"]


def _stats(cls, gt, res, iou_type, max_dets):
    with contextlib.redirect_stdout(io.StringIO()):
        api = COCO()
        api.dataset = copy.deepcopy(gt)
        api.createIndex()
        ev = cls(api, api.loadRes(copy.deepcopy(res)), iou_type)
        ev.params.maxDets = list(max_dets)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_cocoeval_in_pycocotools_layout_equals_pycocotools(seed, iou_type):
    # image 3 holds 130 detections of one category: AP at 100 detections and at 300 differ
    gt, preds = corner_case(seed)
    res = results_for_pycocotools(gt, preds, iou_type)
    for max_dets in ([100, 300, 1000], [1, 10, 100], [10, 100, 120]):
        ours = _stats(PycocotoolsLayoutCOCOeval, gt, res, iou_type, max_dets)
        ref = _stats(COCOeval, gt, res, iou_type, max_dets)
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def _mmdet_results(gt: dict, preds: dict, cat_ids: list[int]) -> list:
    """What ``CocoMetric.process`` stores for these predictions: (gt, result) per image."""
    label_of = {c: i for i, c in enumerate(cat_ids)}
    out = []
    for im in gt["images"]:
        p = preds[im["image_key"]]
        boxes = p.bboxes.astype(np.float64).copy()
        boxes[:, 2:] += boxes[:, :2]  # x1 y1 x2 y2
        out.append(({"width": im["width"], "height": im["height"], "img_id": im["id"]},
                    {"img_id": im["id"], "bboxes": boxes, "scores": p.scores,
                     "labels": np.array([label_of[int(c)] for c in p.labels], np.int64),
                     "masks": [{"size": [p.height, p.width], "counts": m.encode()}
                               for m in p.masks]}))
    return out


def test_training_metric_on_faster_coco_eval_equals_it_on_pycocotools(prepared, tmp_path):
    gt, preds = jittered_fold(prepared, 0, seed=7)
    ann = tmp_path / "val.json"
    ann.write_text(json.dumps(gt))
    names = [c["name"] for c in gt["categories"]]
    out = {}
    for engine in ("faster", "pycocotools"):
        m = IMatCocoMetric(ann_file=str(ann), metric=["bbox", "segm"], classwise=True,
                           metric_items=ALL_ITEMS, engine=engine)
        m.dataset_meta = {"classes": names}
        with contextlib.redirect_stdout(io.StringIO()):
            out[engine] = m.compute_metrics(_mmdet_results(gt, preds, [c["id"] for c in
                                                                       gt["categories"]]))
    assert out["faster"].keys() == out["pycocotools"].keys()
    for k, v in out["faster"].items():  # (NaN for a category without truth in both)
        assert v == pytest.approx(out["pycocotools"][k], abs=0, nan_ok=True), k
    assert 0.1 < out["faster"]["segm_mAP"] < 0.95 and len(out["faster"]) > 2 * len(ALL_ITEMS)


def test_unknown_engine_is_refused():
    with pytest.raises(ValueError, match="engine must be one of faster, pycocotools"):
        IMatCocoMetric(engine="fast")


@pytest.mark.parametrize("year", [2019, 2020])
def test_competition_metric_equals_evaluate(request, year, tmp_path):
    """``IMatCompetitionMetric`` (the validation metric the configs select checkpoints by)
    fed mmdet's validation outputs gives ``imat-kit evaluate``'s figures on the same
    predictions: ``competition`` (2019 formula), and on 2020 data ``competition2020``."""
    from dataclasses import replace

    import torch
    from pycocotools import mask as mask_util

    from imat_kit.eval.evaluate import evaluate_files
    from imat_kit.mmdet_ext.metrics import IMatCompetitionMetric
    from imat_kit.postprocess import PostProcess
    from tests.helpers.predictions import fold_predictions, write_val

    prep = request.getfixturevalue("prepared" if year == 2019 else "prepared2020")
    preds = fold_predictions(prep, 0, drop_every=3, attributes=year == 2020)
    # scores falling through the image, some below the 0.3 the 2019 figure cuts at
    preds = {k: replace(p, scores=np.linspace(0.95, 0.1, len(p)).astype(np.float32))
             for k, p in preds.items()}
    f = tmp_path / "fold0_val.jsonl"
    write_val(f, preds, 0)
    table, _ = evaluate_files(prep, [str(f)], postprocess=PostProcess())
    ann = prep / "annotations" / "fold0_val.json"
    gt = json.loads(ann.read_text())
    metric = IMatCompetitionMetric(ann_file=str(ann))
    attr_ids = metric.truth()[1].attribute_id_list
    for im in gt["images"]:
        p = preds[im["image_key"]]
        h, w = p.height, p.width
        masks = (np.stack([mask_util.decode({"size": [h, w], "counts": m}) for m in p.masks])
                 if len(p) else np.zeros((0, h, w), np.uint8)).astype(bool)
        boxes = p.bboxes.copy()
        boxes[:, 2:] += boxes[:, :2]
        inst = {"masks": torch.from_numpy(masks), "scores": torch.from_numpy(p.scores),
                "labels": torch.from_numpy(p.labels), "bboxes": torch.from_numpy(boxes)}
        if year == 2020:
            inst["attributes"] = torch.tensor([[a.get(i, 0.0) for i in attr_ids]
                                               for a in p.attr_probs]).reshape(len(p), -1)
        metric.process({}, [{"img_id": im["id"], "ori_shape": (h, w), "pred_instances": inst}])
    out = metric.evaluate(len(gt["images"]))
    assert 0 < out["imat/competition"] < 1
    assert out["imat/competition"] == pytest.approx(float(table.rows["competition"].iloc[0]),
                                                    abs=1e-12)
    if year == 2020:
        assert out["imat/competition2020"] == pytest.approx(
            float(table.rows["competition2020"].iloc[0]), abs=1e-12)
    else:
        assert "imat/competition2020" not in out
