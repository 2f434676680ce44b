"""Error analysis of validation predictions: what kind of errors, on which images, for which
attributes.

* :func:`error_breakdown`: the TIDE breakdown (Bolya et al., ECCV 2020) through the ``tidecv``
  package (1.0.1 runs under numpy 2 and takes COCO RLE masks as they are): each false positive is
  a classification error (IoU ≥ 0.5 with a truth of another category), a localisation error
  (0.1 ≤ IoU ≤ 0.5 with a truth of its category), both, a duplicate (its truth already matched by
  a higher score) or background (IoU ≤ 0.1 with every truth); a truth no detection explains is
  missed. Each type is reported as **dAP**: the mask AP50 (TIDE's own 101-point AP) that fixing
  every error of that type alone would add.
* :func:`image_scores`: the competition score of every image on its own, for the gallery of the
  best and worst images.
* :func:`attribute_f1`: precision, recall, F1 and support of each attribute over the matched
  instances (same category, mask IoU ≥ 0.5), when the predictions carry attributes.
"""

from __future__ import annotations

import contextlib
import io

import pandas as pd

from imat_kit.eval.attr_eval import category_prior, f1_from_counts, match_instances, with_prior
from imat_kit.eval.metric import competition_score, pred_instances, truth_instances
from imat_kit.postprocess import SCORE_THR

__all__ = ["attribute_f1", "category_prior", "error_breakdown", "f1_from_counts", "f1_summary",
           "image_scores", "with_prior"]

ERROR_TYPES = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")
ERROR_NAMES = {"Cls": "classification", "Loc": "localisation", "Both": "both cls + loc",
               "Dupe": "duplicate", "Bkg": "background", "Miss": "missed"}


def error_breakdown(gt_coco: dict, preds: dict, *, pos_thr: float = 0.5,
                    bg_thr: float = 0.1) -> dict:
    """TIDE's main and special errors of ``preds`` (``image_key → ImagePrediction``) against a
    COCO ground truth. Returns ``AP50`` (mask AP at ``pos_thr``, in %), ``dAP`` (type → AP
    points gained by fixing it), ``dAP_special`` (``FalsePos``, ``FalseNeg``) and ``counts``
    (type → number of errors)."""
    from tidecv import TIDE, Data

    gt, dt = Data("truth"), Data("predictions")
    by_key = {im["image_key"]: im["id"] for im in gt_coco["images"]}
    for im in gt_coco["images"]:  # images without truth still count (their detections are FP)
        gt.add_image(im["id"], im["image_key"])
    for a in gt_coco["annotations"]:
        gt.add_ground_truth(a["image_id"], int(a["category_id"]), mask=a["segmentation"])
    for key, p in preds.items():
        if key not in by_key:
            continue
        for r, lab, s in zip(p.rles(), p.labels.tolist(), p.scores.tolist()):
            dt.add_detection(by_key[key], int(lab), float(s), mask=r)
    if not gt.annotations and not dt.annotations:
        return {"AP50": 0.0, "dAP": dict.fromkeys(ERROR_TYPES, 0.0),
                "dAP_special": {"FalsePos": 0.0, "FalseNeg": 0.0},
                "counts": dict.fromkeys(ERROR_TYPES, 0)}
    tide = TIDE(pos_threshold=pos_thr, background_threshold=bg_thr, mode=TIDE.MASK)
    with contextlib.redirect_stdout(io.StringIO()), _mean_of_nothing_is_nan():
        tide.evaluate(gt, dt, name="run")
        errors = tide.get_all_errors()
    run = tide.runs["run"]
    counts = {t.short_name: len(v) for t, v in run.error_dict.items()}
    return {"AP50": float(run.ap), "dAP": {k: float(errors["main"]["run"][k])
                                           for k in ERROR_TYPES},
            "dAP_special": {k: float(v) for k, v in errors["special"]["run"].items()},
            "counts": {k: int(counts.get(k, 0)) for k in ERROR_TYPES}}


@contextlib.contextmanager
def _mean_of_nothing_is_nan():
    """tidecv divides by zero when fixing an error type leaves no category to average (e.g.
    fixing the misses of a model that predicted nothing removes every truth): that dAP is
    undefined, so it comes back as NaN (shown as "–") instead of an exception."""
    from tidecv.ap import ClassedAPDataObject

    original = ClassedAPDataObject.get_mAP

    def get_map(self) -> float:
        aps = [x.get_ap() for x in self.objs.values() if not x.is_empty()]
        return sum(aps) / len(aps) if aps else float("nan")

    ClassedAPDataObject.get_mAP = get_map
    try:
        yield
    finally:
        ClassedAPDataObject.get_mAP = original


def image_scores(gt_coco: dict, preds: dict, *, score_thr: float = SCORE_THR) -> pd.DataFrame:
    """Each validation image's own competition score (IoU thresholds 0.50…0.95), with its
    truth and prediction counts, sorted worst first."""
    truth = truth_instances(gt_coco)
    pred = pred_instances(preds, False, score_thr)
    rows = []
    for key, t in truth.items():
        p = pred.get(key, [])
        r = competition_score({key: t}, {key: p}, images=[key])
        rows.append({"image_key": key, "score": r["score"] if r["count"] else 1.0,
                     "truth": len(t), "predicted": len(p)})
    return pd.DataFrame(rows).sort_values(["score", "image_key"], kind="stable") \
        .reset_index(drop=True)


def attribute_f1(gt_coco: dict, preds: dict, *, iou: float = 0.5, score_thr: float = SCORE_THR,
                 matched_only: bool = False) -> pd.DataFrame:
    """Per attribute id: TP, FP, FN, precision, recall, F1 and support (truth count) over the
    instances matched one-to-one (greedy by score, same category, mask IoU ≥ ``iou``); the
    attributes of unmatched truths count as missed unless ``matched_only`` (then the figure is
    about attribute recognition alone). Empty when no prediction carries attributes."""
    if not any(p.attributes for p in preds.values()):
        return pd.DataFrame(columns=["attribute_id", "tp", "fp", "fn", "precision", "recall",
                                     "f1", "support"])
    tp: dict[int, int] = {}
    fp: dict[int, int] = {}
    fn: dict[int, int] = {}
    matched, missed = match_instances(gt_coco, preds, iou=iou, score_thr=score_thr)
    for p, j, a in matched:
        truth_set = set(a.get("attribute_ids", []))
        pred_set = set(p.attributes[j]) if p.attributes else set()
        for x in truth_set & pred_set:
            tp[x] = tp.get(x, 0) + 1
        for x in pred_set - truth_set:
            fp[x] = fp.get(x, 0) + 1
        for x in truth_set - pred_set:
            fn[x] = fn.get(x, 0) + 1
    for a in missed if not matched_only else ():
        for x in a.get("attribute_ids", []):
            fn[x] = fn.get(x, 0) + 1
    ids = sorted(set(tp) | set(fp) | set(fn))
    return f1_from_counts(pd.DataFrame({
        "attribute_id": ids, "tp": [tp.get(i, 0) for i in ids],
        "fp": [fp.get(i, 0) for i in ids], "fn": [fn.get(i, 0) for i in ids]}))


def f1_summary(df: pd.DataFrame) -> dict:
    """Micro F1 (from the summed counts) and macro F1 (mean over the attributes with support)
    of an :func:`attribute_f1` table."""
    tp, fp, fn = (int(df[c].sum()) for c in ("tp", "fp", "fn"))
    micro = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    supported = df[df.support > 0]
    macro = float(supported.f1.fillna(0).mean()) if len(supported) else float("nan")
    return {"micro_f1": micro, "macro_f1": macro, "tp": tp, "fp": fp, "fn": fn,
            "attributes": len(supported)}
