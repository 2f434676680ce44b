"""Metrics with attributes: Fashionpedia's AP^{IoU+F1} and the 2020 (FGVC7) competition score,
both defined in ``docs/metrics.md`` (the one place).

AP^{IoU+F1} reproduces the ``fashionpedia`` package's ``FPEval`` (1.1) number for number
(``tests/eval/test_attr_metric.py`` checks it against the package), quirks included: its
matching raises *both* bars to the best match so far (a truth replaces the current candidate
only when its IoU *and* its F1 are at least the candidate's), each threshold list ends with an
"ignored" value (-1: AP^{IoU} uses F1 -1, AP^{F1} IoU -1), and categories are indexed by
position in the truth's category list (ids 0…45 at positions 0…45 in every label file here).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from imat_kit.data.masks import pair_ious, score_order
from imat_kit.errors import KitError
from imat_kit.eval.matching import fpeval_greedy, greedy_tp
from imat_kit.eval.metric import AVERAGES, IOU_THRESHOLDS, coco_results, competition_score

#: FPEval's ``catsWithAttributes``: the categories whose matches need attribute F1
FASHIONPEDIA_ATTRIBUTE_CATEGORIES = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 28, 29, 31, 32, 33)
#: FPEval's thresholds (the same values as COCO's, built the same way)
_THR = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
FP_IOU_THRESHOLDS = np.append(_THR, -1.0)
FP_F1_THRESHOLDS = np.append(_THR, -1.0)
RECALL_POINTS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
F1_TYPES = ("binary_macro", "positive")
SWEEPS = ("grid", "paired")
#: 2019: the garments (categories 0–12) carry the attributes; an assumption of this kit, the
#: 2019 competition published no such list
ATTRIBUTE_CATEGORIES_2019 = tuple(range(13))


def attribute_categories(labels) -> tuple[int, ...]:
    """The categories whose matches need attribute F1: FPEval's list for the 2020 /
    Fashionpedia label set (294 attributes), the garments for 2019."""
    return ATTRIBUTE_CATEGORIES_2019 if labels.year == 2019 else FASHIONPEDIA_ATTRIBUTE_CATEGORIES


def multihot(sets: Sequence[Sequence[int]], index: dict[int, int], *,
             what: str = "attribute") -> np.ndarray:
    """Attribute id sets → an N × A 0/1 matrix over ``index`` (id → column)."""
    out = np.zeros((len(sets), len(index)), np.int64)
    for i, s in enumerate(sets):
        for a in s:
            k = index.get(int(a))
            if k is None:
                raise KitError(f"{what} id {a} is not in the label file's attributes", value=a)
            out[i, k] = 1
    return out


def pairwise_f1(pred: np.ndarray, truth: np.ndarray, f1: str = "binary_macro") -> np.ndarray:
    """D × G attribute F1 of multi-hot rows ``pred`` (D × A) against ``truth`` (G × A).

    ``binary_macro`` is scikit-learn's ``f1_score(truth, pred, average="macro")`` on the two
    A-long vectors (what FPEval computes): the mean F1 of the classes 1 and 0 present in
    either vector. ``positive`` is the F1 of class 1 alone (1 when both sets are empty)."""
    if f1 not in F1_TYPES:
        raise KitError(f"f1 must be one of {', '.join(F1_TYPES)}", value=f1)
    tp = (pred @ truth.T).astype(np.float64)
    return f1_of_counts(tp, pred.sum(1)[:, None].astype(np.float64),
                        truth.sum(1)[None, :].astype(np.float64), pred.shape[1], f1)


def f1_of_counts(tp: np.ndarray, n_p: np.ndarray, n_t: np.ndarray, a: int,
                 f1: str = "binary_macro") -> np.ndarray:
    """:func:`pairwise_f1` from the counts of each pair (broadcast): attributes in both sets,
    in the prediction's, in the truth's, and A."""
    fp, fn = n_p - tp, n_t - tp
    tn = a - n_p - n_t + tp
    with np.errstate(invalid="ignore", divide="ignore"):
        pos = np.where(n_p + n_t > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        neg = np.where(tp < a, 2 * tn / (2 * tn + fp + fn), np.nan)
    if f1 == "positive":
        return np.where(np.isnan(pos), 1.0, pos)
    both = np.stack(np.broadcast_arrays(pos, neg))
    return np.nanmean(both, axis=0) if both.size else np.zeros(np.shape(tp))


def _precision(scores: np.ndarray, tps: np.ndarray, n_gt: int) -> np.ndarray:
    """COCO/FPEval precision at the 101 recall points for each row of ``tps`` (rows × N, the
    detections already in descending score order)."""
    rows = tps.shape[0]
    out = np.zeros((rows, len(RECALL_POINTS)))
    if not tps.shape[1]:
        return out
    tp = np.cumsum(tps, axis=1).astype(np.float64)
    fp = np.cumsum(~tps, axis=1).astype(np.float64)
    rc = tp / n_gt
    pr = tp / (fp + tp + np.spacing(1))
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
    for r in range(rows):
        idx = np.searchsorted(rc[r], RECALL_POINTS, side="left")
        ok = idx < pr.shape[1]
        out[r, ok] = pr[r, idx[ok]]
    return out


def fashionpedia_eval(gt_coco: dict, detections: list[dict], *, attribute_ids: Sequence[int],
                      attribute_categories: Sequence[int] = FASHIONPEDIA_ATTRIBUTE_CATEGORIES,
                      max_dets: int = 100) -> dict:
    """AP^{IoU+F1}, AP^{IoU} and AP^{F1} of ``detections`` against a COCO ground truth whose
    annotations carry ``attribute_ids``; ``detections`` are COCO results (``image_id``,
    ``category_id``, ``score``, ``segmentation`` as compressed RLE) with ``attribute_ids``.
    ``attribute_ids`` is the label file's attribute list (it sets A, the F1 vector length).

    Returns ``{"iou_f1": {...}, "iou": {...}, "f1": {...}}``, each with FPEval's keys
    (``AP``, ``AP_IOU50``, ``AP_IOU75``, ``AP_F150``, ``AP_F175``, ``AP_IOU50_F150``, …; NaN
    where FPEval prints -1, i.e. no category with truth), plus ``per_category`` (category id →
    AP^{IoU+F1}, NaN without truth)."""
    index = {int(a): i for i, a in enumerate(attribute_ids)}
    attr_cats = {int(c) for c in attribute_categories}
    img_ids = sorted({int(im["id"]) for im in gt_coco["images"]})
    img_set = set(img_ids)
    cat_ids = sorted({int(c["id"]) for c in gt_coco["categories"]})
    cat_pos = {c: k for k, c in enumerate(cat_ids)}
    gts: dict = defaultdict(list)
    dts: dict = defaultdict(list)
    for a in gt_coco["annotations"]:
        if int(a["image_id"]) in img_set and int(a["category_id"]) in cat_pos:
            gts[int(a["image_id"]), int(a["category_id"])].append(a)
    for d in detections:
        if int(d["image_id"]) in img_set and int(d["category_id"]) in cat_pos:
            dts[int(d["image_id"]), int(d["category_id"])].append(d)

    t_n, f_n = len(FP_IOU_THRESHOLDS), len(FP_F1_THRESHOLDS)
    precision = -np.ones((t_n, f_n, len(RECALL_POINTS), len(cat_ids)))
    for cat in cat_ids:
        with_attr = cat_pos[cat] in attr_cats  # FPEval compares positions (= ids here)
        f1_thr = FP_F1_THRESHOLDS if with_attr else FP_F1_THRESHOLDS[-1:]
        scores, matches, n_gt = [], [], 0
        for img in img_ids:
            g, d = gts.get((img, cat), []), dts.get((img, cat), [])
            if not g and not d:
                continue
            order = np.argsort([-x["score"] for x in d], kind="mergesort")[:max_dets]
            d = [d[i] for i in order]
            n_gt += len(g)
            ious = pair_ious([x["segmentation"] for x in d], [x["segmentation"] for x in g],
                             [int(x.get("iscrowd", 0)) for x in g])
            f1s = None
            if with_attr:
                f1s = pairwise_f1(multihot([x.get("attribute_ids", []) for x in d], index,
                                           what="predicted attribute"),
                                  multihot([x.get("attribute_ids", []) for x in g], index))
            scores.append(np.asarray([x["score"] for x in d], np.float64))
            matches.append(fpeval_greedy(ious, f1s, FP_IOU_THRESHOLDS, f1_thr))
        if not n_gt:
            continue
        sc = np.concatenate(scores) if scores else np.zeros(0)
        mt = np.concatenate(matches, axis=2) if matches else np.zeros((t_n, len(f1_thr), 0),
                                                                       bool)
        order = np.argsort(-sc, kind="mergesort")
        mt = mt[:, :, order]
        pr = _precision(sc[order], mt.reshape(t_n * len(f1_thr), mt.shape[2]), n_gt)
        pr = pr.reshape(t_n, len(f1_thr), len(RECALL_POINTS))
        if with_attr:
            precision[:, :, :, cat_pos[cat]] = pr
        else:
            precision[:, -1:, :, cat_pos[cat]] = pr

    def summarize(iou: bool, f1: bool, iou_thr: float | None = None,
                  f1_thr: float | None = None, only: int | None = None) -> float:
        s = precision
        if iou and iou_thr is not None:
            s = s[np.where(iou_thr == FP_IOU_THRESHOLDS[:-1])[0]]
        elif iou:
            s = s[:-1]
        else:
            s = s[[-1]]
        cols = []
        for k in range(len(cat_ids)):
            if only is not None and k != only:
                continue
            if f1 and k in attr_cats:
                f_idx = (np.where(f1_thr == FP_F1_THRESHOLDS[:-1])[0] if f1_thr is not None
                         else np.arange(f_n - 1))
                cols.extend(s[:, [f], :, k] for f in f_idx)
            else:
                cols.append(s[:, [-1], :, k])
        s = np.concatenate(cols, axis=1) if cols else np.zeros(0)
        s = s[s > -1]
        return float(s.mean()) if s.size else float("nan")

    out = {"iou_f1": {"AP": summarize(True, True)}, "iou": {"AP": summarize(True, False)},
           "f1": {"AP": summarize(False, True)}}
    for t in (0.5, 0.75):
        out["iou_f1"][f"AP_IOU{int(t * 100)}"] = summarize(True, True, iou_thr=t)
        out["iou"][f"AP_IOU{int(t * 100)}"] = summarize(True, False, iou_thr=t)
    for f in (0.5, 0.75):
        out["iou_f1"][f"AP_F1{int(f * 100)}"] = summarize(True, True, f1_thr=f)
        out["f1"][f"AP_F1{int(f * 100)}"] = summarize(False, True, f1_thr=f)
    for t in (0.5, 0.75):
        for f in (0.5, 0.75):
            out["iou_f1"][f"AP_IOU{int(t * 100)}_F1{int(f * 100)}"] = summarize(
                True, True, iou_thr=t, f1_thr=f)
    out["per_category"] = {c: summarize(True, True, only=k) for c, k in cat_pos.items()}
    return out


def detections_from_predictions(gt_coco: dict, preds: dict) -> list[dict]:
    """Predictions (``image_key → ImagePrediction``) as COCO results with ``attribute_ids``
    (each instance's attribute set; none when the file has no attributes), in the order
    ``metric.coco_results`` gives."""
    ids = {im["image_key"]: im["id"] for im in gt_coco["images"]}
    out = coco_results(gt_coco, preds)
    k = 0
    for key, p in preds.items():
        if key not in ids:
            continue
        for j in range(len(p)):
            out[k]["attribute_ids"] = list(p.attributes[j]) if p.attributes else []
            k += 1
    return out


# --- the 2020 competition score -------------------------------------------------------------

def _match_2020(dt: list, gt: list, index: dict[int, int], f1: str, iou_thr: np.ndarray,
                f1_thr: np.ndarray) -> np.ndarray:
    """True positives (P,) for the threshold pairs ``(iou_thr[p], f1_thr[p])`` of one
    category in one image: greedy by score; a detection takes the free truth of highest IoU
    among those with IoU > t_iou and (truth without attributes, or F1 > t_f1)."""
    if not dt or not gt:
        return np.zeros(len(iou_thr), np.int64)
    dt = [dt[i] for i in score_order([d.score for d in dt])]
    f1s = pairwise_f1(multihot([d.attributes for d in dt], index, what="predicted attribute"),
                      multihot([g.attributes for g in gt], index), f1)
    needs = np.array([bool(g.attributes) for g in gt])
    allowed = ~needs[None, None, :] | (f1s[None, :, :] > np.asarray(f1_thr)[:, None, None])
    return greedy_tp(pair_ious([d.rle for d in dt], [g.rle for g in gt]), iou_thr, strict=True,
                     allowed=allowed)


def competition_score_2020(gt: dict, pred: dict, *, attribute_ids: Sequence[int],
                           average: str = "image", sweep: str = "grid",
                           f1: str = "binary_macro", images: list[str] | None = None,
                           fn: str = "ignore") -> dict:
    """The 2020 score of predictions against truth, both ``image_key → [metric.Instance]``
    with ``key`` = category and ``attributes`` set (see the module doc for the rule and its
    options; ``average`` and ``fn`` as :func:`metric.competition_score`: by default TP / (TP +
    FP), the published formula). Returns ``score``,
    ``per_threshold`` (one value per threshold pair) and ``count``."""
    if average not in AVERAGES:
        raise KitError(f"average must be one of {', '.join(AVERAGES)}", value=average)
    if f1 not in F1_TYPES:
        raise KitError(f"f1 must be one of {', '.join(F1_TYPES)}", value=f1)
    if sweep not in SWEEPS:
        raise KitError(f"sweep must be one of {', '.join(SWEEPS)}", value=sweep)
    if sweep == "grid":
        iou_thr, f1_thr = (x.ravel() for x in np.meshgrid(IOU_THRESHOLDS, IOU_THRESHOLDS,
                                                          indexing="ij"))
    else:
        iou_thr, f1_thr = IOU_THRESHOLDS, IOU_THRESHOLDS
    index = {int(a): i for i, a in enumerate(attribute_ids)}

    def matcher(dt: list, gt_: list) -> np.ndarray:
        return _match_2020(dt, gt_, index, f1, iou_thr, f1_thr)

    return competition_score(gt, pred, average=average, images=images, matcher=matcher, fn=fn)
