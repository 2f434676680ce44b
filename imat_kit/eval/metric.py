"""The 2019 competition metric and COCO AP, on RLE masks (IoU by pycocotools, never on H×W
arrays). The score is defined in ``docs/metrics.md`` (the one place); ``average`` is one of
:data:`AVERAGES`: ``image`` (per image, TP/FP/FN summed over its classes), ``image_class`` (per
(image, class) pair) or ``class`` (per class, summed over images).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from imat_kit.errors import KitError
from imat_kit.eval.matching import greedy_tp, pair_ious, score_order

IOU_THRESHOLDS = np.round(np.arange(0.50, 0.951, 0.05), 2)
AVERAGES = ("image", "image_class", "class")


@dataclass(frozen=True)
class Instance:
    """One mask with its class key, e.g. ``6`` or ``(6, (28, 77))``, and (for predictions) a
    score. ``rle`` is a COCO RLE dict (compressed counts) at the image size; ``attributes``
    (sorted ids) are used by the 2020 score, whose key is the category alone."""

    key: object
    rle: dict
    score: float = 1.0
    attributes: tuple = ()


def class_key(category: int, attributes=(), use_attributes: bool = True) -> object:
    return (int(category), tuple(sorted(int(a) for a in attributes))) if use_attributes \
        else int(category)


def match(dt: list[Instance], gt: list[Instance],
          thresholds: np.ndarray = IOU_THRESHOLDS) -> np.ndarray:
    """True positives per threshold (T,) for predictions ``dt`` against ground truth ``gt`` of
    one class in one image: greedy, by descending score, each truth used once, IoU ≥ t
    (:func:`matching.greedy_tp`)."""
    if not dt or not gt:
        return np.zeros(len(thresholds), dtype=np.int64)
    order = score_order([d.score for d in dt])
    return greedy_tp(pair_ious([dt[i].rle for i in order], [g.rle for g in gt]), thresholds)


def competition_score(gt: dict[str, list[Instance]], pred: dict[str, list[Instance]], *,
                      average: str = "image", images: list[str] | None = None,
                      matcher=None) -> dict:
    """Score predictions against ground truth, both ``image_key → instances``.

    ``images`` restricts the scored images (default: every image of ``gt``; predictions on
    other images are ignored). ``matcher`` (``(dt, gt) → TP per threshold``, default
    :func:`match` over :data:`IOU_THRESHOLDS`) decides the true positives of one class in one
    image (the 2020 rule brings its own). Returns ``score``, ``per_threshold`` (T,) and
    ``count`` (how many images / pairs / classes were averaged).
    """
    if average not in AVERAGES:
        raise KitError(f"average must be one of {', '.join(AVERAGES)}", value=average)
    matcher = matcher or match
    keys = list(gt) if images is None else list(images)
    t = len(matcher([], []))
    per_unit: list[np.ndarray] = []  # (T,) scores of each averaged unit
    by_class: dict = defaultdict(lambda: np.zeros((3, t), dtype=np.int64))
    for key in keys:
        g_by: dict = defaultdict(list)
        d_by: dict = defaultdict(list)
        for g in gt.get(key, []):
            g_by[g.key].append(g)
        for d in pred.get(key, []):
            d_by[d.key].append(d)
        img = np.zeros((3, t), dtype=np.int64)
        for c in set(g_by) | set(d_by):
            tp = matcher(d_by[c], g_by[c])
            cnt = np.stack([tp, len(d_by[c]) - tp, len(g_by[c]) - tp])  # TP, FP, FN
            img += cnt
            by_class[c] += cnt
            if average == "image_class":
                per_unit.append(_ratio(cnt))
        if average == "image" and img.sum():
            per_unit.append(_ratio(img))
    if average == "class":
        per_unit = [_ratio(c) for c in by_class.values()]
    if not per_unit:
        return {"score": float("nan"), "per_threshold": np.full(t, np.nan), "count": 0}
    arr = np.stack(per_unit)
    return {"score": float(arr.mean()), "per_threshold": arr.mean(axis=0), "count": len(arr)}


def _ratio(cnt: np.ndarray) -> np.ndarray:
    tp, fp, fn = cnt
    den = tp + fp + fn
    return np.where(den > 0, tp / np.maximum(den, 1), 0.0)


def truth_instances(gt_coco: dict, use_attributes: bool = False, *,
                    by_category: bool = False) -> dict[str, list[Instance]]:
    """A COCO truth as ``image_key → [Instance]``; ``by_category``: the key is the category
    and ``attributes`` holds the instance's attribute ids (the 2020 rule's input)."""
    by_id = {im["id"]: im["image_key"] for im in gt_coco["images"]}
    out: dict[str, list[Instance]] = {k: [] for k in by_id.values()}
    for a in gt_coco["annotations"]:
        attrs = a.get("attribute_ids", [])
        out[by_id[a["image_id"]]].append(
            Instance(int(a["category_id"]), a["segmentation"], 1.0, tuple(sorted(attrs)))
            if by_category else Instance(class_key(a["category_id"], attrs, use_attributes),
                                         a["segmentation"]))
    return out


def pred_instances(preds: dict, use_attributes: bool = False, score_thr: float = 0.0, *,
                   by_category: bool = False) -> dict[str, list[Instance]]:
    """Predictions as ``image_key → [Instance]`` (score ``score_thr`` and above);
    ``by_category`` as :func:`truth_instances`."""
    out = {}
    for k, p in preds.items():
        items = []
        for j in range(len(p)):
            if p.scores[j] < score_thr:
                continue
            attrs = tuple(p.attributes[j]) if p.attributes else ()
            rle = {"size": [p.height, p.width], "counts": p.masks[j]}
            items.append(Instance(int(p.labels[j]), rle, float(p.scores[j]), attrs)
                         if by_category else Instance(class_key(int(p.labels[j]), attrs,
                                                                use_attributes),
                                                      rle, float(p.scores[j])))
        out[k] = items
    return out


# --- COCO AP --------------------------------------------------------------------------------

COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def coco_results(gt_coco: dict, preds: dict) -> list[dict]:
    """Predictions (``image_key → ImagePrediction``) as COCO results for ``gt_coco``'s image
    ids; images not in ``gt_coco`` are ignored."""
    ids = {im["image_key"]: im["id"] for im in gt_coco["images"]}
    out = []
    for key, p in preds.items():
        iid = ids.get(key)
        if iid is None:
            continue
        for j in range(len(p)):
            out.append({"image_id": iid, "category_id": int(p.labels[j]),
                        "score": float(p.scores[j]),
                        "bbox": [float(v) for v in p.bboxes[j]],
                        "segmentation": {"size": [p.height, p.width], "counts": p.masks[j]}})
    return out


def coco_eval(gt_coco: dict, preds: dict, iou_type: str = "segm") -> dict:
    """pycocotools COCOeval of predictions against a COCO ground-truth dict: the six summary
    figures and per-category AP (NaN for a category without ground truth)."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        api = COCO()
        api.dataset = gt_coco
        api.createIndex()
        res = coco_results(gt_coco, preds)
        if not res:  # nothing predicted: AP 0 (loadRes refuses an empty list)
            return {**{k: 0.0 for k in COCO_STATS}, "per_category": {}}
        if iou_type == "segm":  # mask areas, not box areas, for small/medium/large
            for r in res:
                r.pop("bbox")
        ev = COCOeval(api, api.loadRes(res), iou_type)
        ev.params.imgIds = [im["id"] for im in gt_coco["images"]]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out = {k: float(v) for k, v in zip(COCO_STATS, ev.stats[:6])}
    prec = ev.eval["precision"][:, :, :, 0, -1]  # T × R × K, area all, maxDets 100
    per = {}
    for k, cid in enumerate(ev.params.catIds):
        p = prec[:, :, k]
        per[int(cid)] = float(p[p > -1].mean()) if (p > -1).any() else float("nan")
    out["per_category"] = per
    # precision at the 101 recall points per IoU threshold, mean over present categories
    pr = np.where(prec > -1, prec, np.nan)
    with warnings.catch_warnings():  # a threshold without any category: NaN, no warning
        warnings.simplefilter("ignore", RuntimeWarning)
        out["pr_curves"] = np.nanmean(pr, axis=2)  # T × R
    out["recall_points"] = np.asarray(ev.params.recThrs)
    out["iou_thresholds"] = np.asarray(ev.params.iouThrs)
    return out
