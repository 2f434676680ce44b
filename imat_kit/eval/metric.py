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

from imat_kit.data import rle as rle_mod
from imat_kit.data.masks import pair_ious, score_order
from imat_kit.errors import KitError
from imat_kit.eval.matching import greedy_tp
from imat_kit.postprocess import SCORE_THR

IOU_THRESHOLDS = np.round(np.arange(0.50, 0.951, 0.05), 2)
AVERAGES = ("image", "image_class", "class")
#: whether a unit's false negatives count (``count``: TP / (TP + FP + FN), the 2019 formula and
#: the kit's 2020 rule before 0.4) or not (``ignore``: TP / (TP + FP), the 2020 formula as
#: published); ``docs/metrics.md``
FN_RULES = ("ignore", "count")


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
                      matcher=None, fn: str = "count") -> dict:
    """Score predictions against ground truth, both ``image_key → instances``.

    ``images`` restricts the scored images (default: every image of ``gt``; predictions on
    other images are ignored). ``matcher`` (``(dt, gt) → TP per threshold``, default
    :func:`match` over :data:`IOU_THRESHOLDS`) decides the true positives of one class in one
    image (the 2020 rule brings its own). ``fn`` (:data:`FN_RULES`): ``count`` (the 2019
    formula) or ``ignore`` (the 2020 formula: TP / (TP + FP), a unit without predictions
    scoring 0). Returns ``score``, ``per_threshold`` (T,) and ``count`` (how many images /
    pairs / classes were averaged).
    """
    if average not in AVERAGES:
        raise KitError(f"average must be one of {', '.join(AVERAGES)}", value=average)
    if fn not in FN_RULES:
        raise KitError(f"fn must be one of {', '.join(FN_RULES)}", value=fn)
    matcher = matcher or match
    keys = list(gt) if images is None else list(images)
    t = len(matcher([], []))
    units = _Units(t)  # every (image, class) pair with a truth or a prediction
    for i, key in enumerate(keys):
        g_by: dict = defaultdict(list)
        d_by: dict = defaultdict(list)
        for g in gt.get(key, []):
            g_by[g.key].append(g)
        for d in pred.get(key, []):
            d_by[d.key].append(d)
        for c in sorted(set(g_by) | set(d_by)):
            units.add(i, c, matcher(d_by[c], g_by[c]), len(d_by[c]), len(g_by[c]))
    return units.score(average, fn)


class _Units:
    """The (image, class) pairs of a score: true positives per threshold and the detection and
    truth counts of each, averaged per image, per pair or per class (:data:`AVERAGES`)."""

    def __init__(self, t: int) -> None:
        self.t = t
        self.image: list[int] = []
        self.cls: list = []
        self.tp: list[np.ndarray] = []
        self.nd: list[int] = []
        self.ng: list[int] = []

    def add(self, image: int, cls, tp: np.ndarray, n_dt: int, n_gt: int) -> None:
        self.image.append(image)
        self.cls.append(cls)
        self.tp.append(tp)
        self.nd.append(n_dt)
        self.ng.append(n_gt)

    def score(self, average: str, fn: str = "count") -> dict:
        """``score``, ``per_threshold`` (T,) and ``count`` (units averaged); at each threshold
        a unit scores TP / (TP + FP + FN), FP = detections − TP, FN = truths − TP; with ``fn``
        ``ignore`` TP / (TP + FP), and 0 for a unit without detections (it has a truth)."""
        t = self.t
        if not self.tp:
            return {"score": float("nan"), "per_threshold": np.full(t, np.nan), "count": 0}
        tp = np.stack(self.tp).astype(np.float64)  # U × T
        nd = np.asarray(self.nd, np.float64)
        ng = np.asarray(self.ng, np.float64)
        if average != "image_class":
            if average == "image":
                group = np.asarray(self.image)
            else:
                ids: dict = {}
                group = np.array([ids.setdefault(c, len(ids)) for c in self.cls])
            _, group = np.unique(group, return_inverse=True)  # groups in order of their ids
            k = int(group.max()) + 1
            tp = np.stack([np.bincount(group, weights=tp[:, j], minlength=k)
                           for j in range(t)], axis=1)
            nd = np.bincount(group, weights=nd, minlength=k)
            ng = np.bincount(group, weights=ng, minlength=k)
        if fn == "ignore":
            arr = np.where(nd[:, None] > 0, tp / np.maximum(nd[:, None], 1), 0.0)
        else:
            arr = tp / (nd[:, None] + ng[:, None] - tp)  # > 0: a unit has a truth or a detection
        return {"score": float(arr.mean()), "per_threshold": arr.mean(axis=0),
                "count": len(arr)}


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
# faster-coco-eval (``COCOeval_faster``: pycocotools' algorithm with the per-image loop and the
# accumulation in C++) is the engine; pycocotools stays the reference the tests compare with
# (the twelve summary figures and every per-category AP equal). A fold's truth is indexed once
# (:func:`coco_truth`) and serves every IoU type; the segm pass keeps its IoU matrices, from which
# :func:`competition_from_ious` takes the 2019 score without computing an IoU again.

COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
#: COCOeval's twelve summary figures, in its order
COCO_SUMMARY = (*COCO_STATS, "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_TYPES = ("segm", "bbox")


def coco_results(gt_coco: dict, preds: dict, iou_type: str = "bbox") -> list[dict]:
    """Predictions (``image_key → ImagePrediction``) as COCO results for ``gt_coco``'s image
    ids, as pycocotools' ``loadRes`` completes them (``id`` from 1, ``iscrowd`` 0, ``area``:
    the mask's for ``segm``, whose results carry no box, so that COCO's area ranges use the mask
    area; the box's for ``bbox``); images not in ``gt_coco`` are ignored. The mask areas come
    from the counts texts in one vectorised pass, not one decode per mask."""
    ids = {im["image_key"]: im["id"] for im in gt_coco["images"]}
    out = []
    segm = iou_type == "segm"
    for key, p in preds.items():
        iid = ids.get(key)
        if iid is None:
            continue
        size = [p.height, p.width]
        labels, scores = p.labels.tolist(), p.scores.tolist()
        if segm:
            out += [{"image_id": iid, "category_id": labels[j], "score": scores[j],
                     "segmentation": {"size": size, "counts": p.masks[j]}, "iscrowd": 0}
                    for j in range(len(p))]
        else:
            out += [{"image_id": iid, "category_id": labels[j], "score": scores[j],
                     "segmentation": {"size": size, "counts": p.masks[j]}, "bbox": bb,
                     "area": bb[2] * bb[3], "iscrowd": 0}
                    for j, bb in enumerate(p.bboxes.tolist())]
    if segm:
        areas = rle_mod.coco_strings_areas([r["segmentation"]["counts"] for r in out])
        for r, area in zip(out, areas.tolist()):
            r["area"] = float(area)
    for i, r in enumerate(out, 1):
        r["id"] = i
    return out


def coco_truth(gt_coco: dict):
    """``gt_coco`` indexed once as faster-coco-eval's ``COCO`` (on copies of the annotation
    dicts: the evaluation adds keys to them, and the caller's truth stays as it was)."""
    from faster_coco_eval import COCO

    api = COCO()
    api.dataset = {"images": gt_coco["images"], "categories": gt_coco["categories"],
                   "annotations": [dict(a) for a in gt_coco["annotations"]]}
    api.createIndex()
    return api


def coco_eval(gt_coco: dict, preds: dict, iou_type: str = "segm", *, truth=None,
              keep_ious: bool = False) -> dict:
    """COCO AP of predictions against a COCO ground-truth dict (faster-coco-eval, equal to
    pycocotools' COCOeval): the six AP figures, ``summary`` (all twelve, pycocotools' order),
    per-category AP (NaN for a category without ground truth) and the precision-recall curves.
    ``truth`` (from :func:`coco_truth`) spares indexing the truth again; ``keep_ious``: the
    result's ``ious`` maps ``(image id, category id)`` to the D × G IoU matrix of that pair's
    detections in descending score order (at most 100; ``[]`` when either side is empty)."""
    from faster_coco_eval import COCOeval_faster

    if iou_type not in IOU_TYPES:
        raise KitError(f"iou_type must be one of {', '.join(IOU_TYPES)}", value=iou_type)
    api = truth if truth is not None else coco_truth(gt_coco)
    res = coco_results(gt_coco, preds, iou_type)
    if not res:  # nothing predicted: AP 0
        return {**{k: 0.0 for k in COCO_STATS}, "summary": {k: 0.0 for k in COCO_SUMMARY},
                "per_category": {}, **({"ious": {}, "max_dets": 100} if keep_ious else {})}
    ev = COCOeval_faster(api, _results_api(gt_coco, res), iou_type, print_function=_quiet)
    ev.params.imgIds = [im["id"] for im in gt_coco["images"]]
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    out = {k: float(v) for k, v in zip(COCO_STATS, ev.stats[:6])}
    out["summary"] = {k: float(v) for k, v in zip(COCO_SUMMARY, ev.stats[:12])}
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
    if keep_ious:
        out["ious"] = ev.ious
        out["max_dets"] = int(ev.params.maxDets[-1])
    return out


def _results_api(gt_coco: dict, res: list[dict]):
    """Complete COCO results (:func:`coco_results`) indexed as ``loadRes`` would index them."""
    from faster_coco_eval import COCO

    api = COCO()
    api.dataset = {"images": gt_coco["images"], "categories": gt_coco["categories"],
                   "annotations": res}
    api.createIndex()
    return api


def _quiet(*_args, **_kwargs) -> None:
    """faster-coco-eval's print function: the kit prints its own tables."""


def competition_from_ious(gt_coco: dict, preds: dict, ious: dict, *, score_thr: float = SCORE_THR,
                          average: str = "image", max_dets: int = 100) -> dict:
    """The 2019 score (:func:`competition_score` of :func:`truth_instances` and
    :func:`pred_instances` at ``score_thr``, the same figure) from the IoU matrices a segm
    :func:`coco_eval` kept (``keep_ious``): both sort a pair's detections by descending score,
    ties in input order, so the detections at ``score_thr`` and above are the first rows. A
    pair with more than ``max_dets`` of those, or a crowd truth, has its IoUs computed anew."""
    if average not in AVERAGES:
        raise KitError(f"average must be one of {', '.join(AVERAGES)}", value=average)
    t = len(IOU_THRESHOLDS)
    gt_by: dict = defaultdict(lambda: defaultdict(list))  # image id → category → truths
    for a in gt_coco["annotations"]:
        gt_by[a["image_id"]][int(a["category_id"])].append(a)
    units = _Units(t)
    for i, im in enumerate(gt_coco["images"]):
        iid = im["id"]
        p = preds.get(im["image_key"])
        n_by: dict = {}  # category → its detections at score_thr and above
        if p is not None and len(p):
            keep = ~(p.scores < score_thr)
            cats, n = np.unique(p.labels[keep], return_counts=True)
            n_by = dict(zip(cats.tolist(), n.tolist()))
        g_img = gt_by.get(iid, {})
        for c in sorted(set(g_img) | set(n_by)):
            g, n_d = g_img.get(c, []), n_by.get(c, 0)
            if not n_d or not g:
                units.add(i, c, np.zeros(t, np.int64), n_d, len(g))
                continue
            m = ious.get((iid, c))
            if (m is None or len(m) < n_d or n_d > max_dets
                    or any(a.get("iscrowd", 0) for a in g)):
                rows = np.flatnonzero(keep & (p.labels == c))
                rows = rows[score_order(p.scores[rows])]
                m = pair_ious([{"size": [p.height, p.width], "counts": p.masks[r]}
                               for r in rows], [a["segmentation"] for a in g])
            units.add(i, c, greedy_tp(np.asarray(m, dtype=np.float64)[:n_d], IOU_THRESHOLDS),
                      n_d, len(g))
    return units.score(average)
