"""Fold-wise evaluation: COCO AP (faster-coco-eval, equal to pycocotools) and the competition
score per fold, their mean ± std, and per-category AP. A fold's truth is indexed once and its
mask IoUs computed once: the segm pass keeps them and the competition score reads them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from imat_kit.data.paths import find_labels
from imat_kit.eval.attr_eval import attribute_table, micro_f1
from imat_kit.eval.attr_metric import (
    attribute_categories,
    detections_from_predictions,
    fashionpedia_eval,
)
from imat_kit.eval.metric import (
    COCO_STATS,
    coco_eval,
    coco_truth,
    competition_from_ious,
    competition_score,
    pred_instances,
    truth_instances,
)
from imat_kit.eval.runs import FoldRun, as_run, read_fold_runs
from imat_kit.files import atomic_open
from imat_kit.postprocess import SCORE_THR, AttributeThresholds, apply_thresholds

__all__ = ["REFERENCE_TABLE3", "FoldRun", "FoldTable", "attribute_columns", "evaluate_files",
           "evaluate_fold", "evaluate_to", "pred_instances", "read_fold_runs", "truth_instances"]

#: The reference study (Matterport Mask R-CNN R50, COCO weights; AP on 100 validation images)
REFERENCE_TABLE3 = pd.DataFrame({
    "run": ["baseline", "heads 20 epochs", "+ all layers", "full data"],
    "AP": [11.9, 17.0, 22.4, 30.6], "AP50": [20.8, 30.3, 38.8, 51.3],
    "AP75": [13.2, 17.5, 22.6, 31.8], "time": ["15 min", "3 h", "11 h", "45 h (GTX 1070)"]})


def attribute_columns(run: FoldRun, labels, thresholds, *, score_thr: float = SCORE_THR) -> dict:
    """The attribute figures of one fold: Fashionpedia's AP^{IoU+F1} (``AP_iou_f1``), its
    AP^{IoU} and AP^{F1}, and the attribute micro F1 over matched instances of the model and
    of the per-category prior (``thresholds`` cut the probabilities)."""
    run = as_run(run)
    preds = apply_thresholds(run.preds, thresholds)
    fp = fashionpedia_eval(run.gt, detections_from_predictions(run.gt, preds),
                           attribute_ids=labels.attribute_id_list,
                           attribute_categories=attribute_categories(labels))
    table = attribute_table([run], labels, thresholds, score_thr=score_thr)
    return {"AP_iou_f1": fp["iou_f1"]["AP"], "AP_iou_f1_50": fp["iou_f1"]["AP_IOU50_F150"],
            "AP_iou_fp": fp["iou"]["AP"], "AP_f1": fp["f1"]["AP"],
            "attr_micro_f1": micro_f1(table), "prior_micro_f1": micro_f1(table, "prior_")}


def evaluate_fold(gt_coco: dict, preds: dict, *, average: str = "image",
                  score_thr: float = SCORE_THR, bbox: bool = False) -> dict:
    """One fold's figures: ``row`` (segm AP figures, the 2019 competition score at
    ``score_thr``, the image count; ``bbox``: the box AP too, a second COCO pass),
    ``per_category`` (segm AP) and ``segm`` (the whole :func:`metric.coco_eval` result, its
    precision-recall curves included)."""
    truth = coco_truth(gt_coco)
    segm = coco_eval(gt_coco, preds, "segm", truth=truth, keep_ious=True)
    comp = competition_from_ious(gt_coco, preds, segm.pop("ious"), score_thr=score_thr,
                                 average=average, max_dets=segm.pop("max_dets"))
    row = {f"segm_{k}": segm[k] for k in COCO_STATS}
    if bbox:
        row["bbox_AP"] = coco_eval(gt_coco, preds, "bbox", truth=truth)["AP"]
    row.update({"competition": comp["score"], "images": len(gt_coco["images"])})
    return {"row": row, "per_category": segm["per_category"], "segm": segm}


@dataclass(frozen=True)
class FoldTable:
    """The fold table: one row per fold (``rows``), and the mean and the population std of
    every numeric column over the folds. :meth:`frame` is the table as ``evaluation.csv``
    holds it (the fold rows, then the rows ``mean`` and ``std``)."""

    rows: pd.DataFrame
    mean: pd.Series
    std: pd.Series

    @classmethod
    def of(cls, rows: pd.DataFrame) -> FoldTable:
        """The table of ``rows`` (a ``fold`` column and figures)."""
        rows = rows.reset_index(drop=True)
        nums = rows.drop(columns=["fold"]).select_dtypes("number")
        return cls(rows, nums.mean(), nums.std(ddof=0))

    @property
    def columns(self) -> pd.Index:
        return self.rows.columns

    def frame(self) -> pd.DataFrame:
        """The fold rows (``fold`` as text), then ``mean`` and ``std``: the CSV's layout."""
        summary = pd.DataFrame([{"fold": "mean", **self.mean.to_dict()},
                                {"fold": "std", **self.std.to_dict()}])
        return pd.concat([self.rows.astype({"fold": str}), summary], ignore_index=True)

    def records(self, drop: tuple[str, ...] = ()) -> tuple[list[dict], dict, dict]:
        """The fold rows, the mean and the std as records, as the CSV's layout gives them
        (without the columns ``drop``)."""
        out = self.frame().drop(columns=list(drop), errors="ignore").to_dict("records")
        n = len(self.rows)
        return out[:n], out[n], out[n + 1]


def evaluate_files(data: str | Path, files: list[str], *, average: str = "image",
                   score_thr: float = SCORE_THR, runs: list[FoldRun] | None = None,
                   thresholds=None, postprocess=None, bbox: bool = False,
                   segm: dict | None = None, fn: str = "ignore"
                   ) -> tuple[FoldTable, pd.DataFrame]:
    """The fold table, one row per predictions file (its header's fold); and the
    per-category segm AP table (categories × folds). ``runs`` (from :func:`read_fold_runs`)
    spares reading the files again. Predictions with attributes add the
    :func:`attribute_columns` (attribute sets cut by ``thresholds``, default a global 0.5).
    ``postprocess`` (a :class:`postprocess.PostProcess`) adds the same figures at those
    settings, in columns ending ``_post`` (:func:`post_columns`). ``bbox`` adds the box AP
    (``bbox_AP``, a second COCO pass); ``segm`` (a dict) receives each fold's whole segm result
    (its precision-recall curves: the report draws them without evaluating again). ``fn``: the
    2020 score's (:func:`post_columns`)."""
    rows, per_cat = [], {}
    labels = find_labels(data)
    for run in runs if runs is not None else read_fold_runs(data, files):
        r = evaluate_fold(run.gt, run.preds, average=average, score_thr=score_thr, bbox=bbox)
        if segm is not None:
            segm[run.fold] = r["segm"]
        if run.attributes:
            r["row"].update(attribute_columns(run, labels, thresholds or AttributeThresholds(),
                                              score_thr=score_thr))
        if postprocess is not None:
            r["row"].update(post_columns(run, labels, postprocess, average=average, fn=fn))
        rows.append({"fold": run.fold, "file": run.file, **r["row"]})
        per_cat[f"fold{run.fold}"] = r["per_category"]
    table = FoldTable.of(pd.DataFrame(rows).sort_values("fold"))
    cats = pd.DataFrame(per_cat)
    cats.index.name = "category_id"
    cats["mean"] = cats.mean(axis=1)
    return table, cats


def competition2020(gt_coco: dict, preds: dict, labels, post=None, *, average: str = "image",
                    fn: str = "ignore") -> float:
    """The 2020 rule (:func:`attr_metric.competition_score_2020`) of ``preds`` against a
    fold's truth, after post-processing ``post`` (``None``: as given)."""
    from imat_kit.eval.attr_metric import competition_score_2020
    from imat_kit.postprocess import apply_postprocess

    q = preds if post is None else apply_postprocess(preds, post)
    return competition_score_2020(
        truth_instances(gt_coco, by_category=True), pred_instances(q, by_category=True),
        average=average, fn=fn, attribute_ids=labels.attribute_id_list)["score"]


def post_columns(run: FoldRun, labels, post, *, average: str = "image",
                 fn: str = "ignore") -> dict:
    """A fold's figures at post-processing settings ``post``: the 2019 competition score
    (``competition_post``), for 2020 data the 2020 rule at the defaults and at ``post``
    (``competition2020``, ``competition2020_post``; ``fn`` as
    :func:`attr_metric.competition_score_2020`), segm AP, and for attribute models
    AP^{IoU+F1} and the attribute micro F1 (``*_post``), all of the predictions as ``submit
    --postprocess`` writes them."""
    from imat_kit.postprocess import PostProcess, apply_postprocess

    pp = apply_postprocess(run.preds, post)
    out = {"competition_post": competition_score(truth_instances(run.gt),
                                                 pred_instances(pp, False, 0.0),
                                                 average=average)["score"],
           "segm_AP_post": coco_eval(run.gt, pp, "segm")["AP"]}
    if labels.year == 2020:
        out["competition2020"] = competition2020(run.gt, run.preds, labels, PostProcess(),
                                                 average=average, fn=fn)
        out["competition2020_post"] = competition2020(run.gt, pp, labels, None,
                                                      average=average, fn=fn)
    if run.attributes:
        cols = attribute_columns(run.with_preds(pp), labels, AttributeThresholds(),
                                 score_thr=0.0)
        out["AP_iou_f1_post"] = cols["AP_iou_f1"]
        out["attr_micro_f1_post"] = cols["attr_micro_f1"]
    return out


def evaluate_to(data: str | Path, files: list[str], out: str | Path, *, average: str = "image",
                score_thr: float = SCORE_THR, thresholds=None, runs: list[FoldRun] | None = None,
                postprocess=None, bbox: bool = False, fn: str = "ignore"
                ) -> tuple[FoldTable, pd.DataFrame]:
    """:func:`evaluate_files`, written to ``OUT/evaluation.csv`` and ``OUT/per_category_ap.csv``
    (with the category names), and for predictions with attributes ``OUT/per_attribute.csv``
    (:func:`attr_eval.attribute_table` over every fold): the ``imat-kit evaluate`` step.
    ``runs`` (from :func:`read_fold_runs`) spares reading the files again."""
    thresholds = thresholds or AttributeThresholds()
    runs = read_fold_runs(data, files) if runs is None else runs
    table, cats = evaluate_files(data, files, average=average, score_thr=score_thr, runs=runs,
                                 thresholds=thresholds, postprocess=postprocess, bbox=bbox,
                                 fn=fn)
    labels = find_labels(data)
    names = labels.class_names
    cats.insert(0, "category", [names[i] for i in cats.index])
    out = Path(out)
    with atomic_open(out / "evaluation.csv", "w", newline="") as f:
        table.frame().to_csv(f, index=False, float_format="%.4f")
    with atomic_open(out / "per_category_ap.csv", "w", newline="") as f:
        cats.to_csv(f, float_format="%.4f")
    with_attr = [r for r in runs if r.attributes]
    if with_attr:
        per_attr = attribute_table(with_attr, labels, thresholds, score_thr=score_thr)
        with atomic_open(out / "per_attribute.csv", "w", newline="") as f:
            per_attr.to_csv(f, index=False, float_format="%.4f")
    return table, cats
