"""Fold-wise evaluation: COCO AP (pycocotools) and the competition score per fold, their mean
± std, and per-category AP."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .errors import KitError
from .io import atomic_open
from .layout import ann_relpath, find_labels, read_ann
from .metric import COCO_STATS, Instance, class_key, coco_eval, competition_score
from .predictions import Expected, read_header, read_predictions

#: The reference study (Matterport Mask R-CNN R50, COCO weights; AP on 100 validation images)
REFERENCE_TABLE3 = pd.DataFrame({
    "run": ["baseline", "heads 20 epochs", "+ all layers", "full data"],
    "AP": [11.9, 17.0, 22.4, 30.6], "AP50": [20.8, 30.3, 38.8, 51.3],
    "AP75": [13.2, 17.5, 22.6, 31.8], "time": ["15 min", "3 h", "11 h", "45 h (GTX 1070)"]})


def truth_instances(gt_coco: dict, use_attributes: bool = False) -> dict[str, list[Instance]]:
    by_id = {im["id"]: im["image_key"] for im in gt_coco["images"]}
    out: dict[str, list[Instance]] = {k: [] for k in by_id.values()}
    for a in gt_coco["annotations"]:
        out[by_id[a["image_id"]]].append(Instance(
            class_key(a["category_id"], a.get("attribute_ids", []), use_attributes),
            a["segmentation"]))
    return out


def pred_instances(preds: dict, use_attributes: bool = False,
                   score_thr: float = 0.0) -> dict[str, list[Instance]]:
    return {k: [Instance(class_key(int(p.labels[j]),
                                   p.attributes[j] if p.attributes else (), use_attributes),
                         {"size": [p.height, p.width], "counts": p.masks[j]},
                         float(p.scores[j]))
                for j in range(len(p)) if p.scores[j] >= score_thr]
            for k, p in preds.items()}


def has_attributes(preds: dict, head: dict | None = None) -> bool:
    """Whether predictions speak of attributes: an instance carries some, or the header says
    an attribute model made them (one that detected nothing carries none)."""
    return bool((head or {}).get("attribute_model")) or any(
        p.attr_probs or p.attributes for p in preds.values())


def attribute_columns(run: dict, labels, thresholds, *, score_thr: float = 0.3) -> dict:
    """The attribute figures of one fold: Fashionpedia's AP^{IoU+F1} (``AP_iou_f1``), its
    AP^{IoU} and AP^{F1}, and the attribute micro F1 over matched instances of the model and
    of the per-category prior (``thresholds`` cut the probabilities)."""
    from .attr_eval import apply_thresholds, attribute_table, micro_f1
    from .attr_metric import attribute_categories, detections_from_predictions, fashionpedia_eval

    preds = apply_thresholds(run["preds"], thresholds)
    fp = fashionpedia_eval(run["gt"], detections_from_predictions(run["gt"], preds),
                           attribute_ids=labels.attribute_id_list,
                           attribute_categories=attribute_categories(labels))
    table = attribute_table([run], labels, thresholds, score_thr=score_thr)
    return {"AP_iou_f1": fp["iou_f1"]["AP"], "AP_iou_f1_50": fp["iou_f1"]["AP_IOU50_F150"],
            "AP_iou_fp": fp["iou"]["AP"], "AP_f1": fp["f1"]["AP"],
            "attr_micro_f1": micro_f1(table), "prior_micro_f1": micro_f1(table, "prior_")}


def evaluate_fold(gt_coco: dict, preds: dict, *, average: str = "image",
                  score_thr: float = 0.3) -> dict:
    segm = coco_eval(gt_coco, preds, "segm")
    bbox = coco_eval(gt_coco, preds, "bbox")
    comp = competition_score(truth_instances(gt_coco), pred_instances(preds, False, score_thr),
                             average=average)
    row = {f"segm_{k}": segm[k] for k in COCO_STATS}
    row.update({"bbox_AP": bbox["AP"], "competition": comp["score"],
                "images": len(gt_coco["images"])})
    return {"row": row, "per_category": segm["per_category"]}


def read_fold_runs(data: str | Path, files: list[str]) -> list[dict]:
    """Each validation predictions file with its header, predictions, fold and ground truth,
    sorted by fold: what the fold table and the report are computed from, read once."""
    if not files:
        raise KitError("no predictions file to evaluate")
    runs = []
    labels = find_labels(data)
    for f in files:
        head = read_header(f)
        fold = head.get("fold")
        if head.get("split") != "val" or not isinstance(fold, int) or fold < 0:
            raise KitError("evaluate needs validation predictions of one fold (imat-kit "
                           "predict --split val --fold k)", file=f, row=1)
        gt = read_ann(data, "val", fold)
        _, preds = read_predictions(f, split_expected(labels, gt, fold))
        runs.append({"file": f, "head": head, "preds": preds, "fold": int(fold), "gt": gt})
    return sorted(runs, key=lambda r: r["fold"])


def split_expected(labels, gt_coco: dict, fold: int | None) -> Expected:
    """What predictions of a split must fit: the label file's ids and the images of
    ``gt_coco``, fold ``fold``'s validation set (``None``: the test set)."""
    split = (f"fold {fold}'s validation set ({ann_relpath('val', fold)})" if fold is not None
             else f"the test set ({ann_relpath('test')})")
    return Expected.of(labels, {im["image_key"]: (im["height"], im["width"])
                                for im in gt_coco["images"]}, split)


def evaluate_files(data: str | Path, files: list[str], *, average: str = "image",
                   score_thr: float = 0.3, runs: list[dict] | None = None,
                   thresholds=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per predictions file (its header's fold), plus mean and std rows; and the
    per-category segm AP table (categories × folds). ``runs`` (from :func:`read_fold_runs`)
    spares reading the files again. Predictions with attributes add the
    :func:`attribute_columns` (attribute sets cut by ``thresholds``, default a global 0.5)."""
    from .attr_eval import AttributeThresholds

    rows, per_cat = [], {}
    labels = find_labels(data)
    for run in runs if runs is not None else read_fold_runs(data, files):
        r = evaluate_fold(run["gt"], run["preds"], average=average, score_thr=score_thr)
        if has_attributes(run["preds"], run["head"]):
            if "train_gt" not in run:  # (setdefault would read the file every time)
                run["train_gt"] = read_ann(data, "train", run["fold"])
            r["row"].update(attribute_columns(run, labels, thresholds or AttributeThresholds(),
                                              score_thr=score_thr))
        rows.append({"fold": run["fold"], "file": run["file"], **r["row"]})
        per_cat[f"fold{run['fold']}"] = r["per_category"]
    table = pd.DataFrame(rows).sort_values("fold")
    nums = table.select_dtypes("number").drop(columns=["fold"])
    summary = pd.DataFrame([{"fold": "mean", **nums.mean().to_dict()},
                            {"fold": "std", **nums.std(ddof=0).to_dict()}])
    table = pd.concat([table.astype({"fold": str}), summary], ignore_index=True)
    cats = pd.DataFrame(per_cat)
    cats.index.name = "category_id"
    cats["mean"] = cats.mean(axis=1)
    return table, cats


def evaluate_to(data: str | Path, files: list[str], out: str | Path, *, average: str = "image",
                score_thr: float = 0.3, thresholds=None,
                runs: list[dict] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`evaluate_files`, written to ``OUT/evaluation.csv`` and ``OUT/per_category_ap.csv``
    (with the category names), and for predictions with attributes ``OUT/per_attribute.csv``
    (:func:`attr_eval.attribute_table` over every fold): the ``imat-kit evaluate`` step.
    ``runs`` (from :func:`read_fold_runs`) spares reading the files again; runs with
    attributes come back with their fold's training annotations (``train_gt``)."""
    from .attr_eval import AttributeThresholds, attribute_table

    thresholds = thresholds or AttributeThresholds()
    runs = read_fold_runs(data, files) if runs is None else runs
    table, cats = evaluate_files(data, files, average=average, score_thr=score_thr, runs=runs,
                                 thresholds=thresholds)
    labels = find_labels(data)
    names = labels.class_names
    cats.insert(0, "category", [names[i] for i in cats.index])
    out = Path(out)
    with atomic_open(out / "evaluation.csv", "w", newline="") as f:
        table.to_csv(f, index=False, float_format="%.4f")
    with atomic_open(out / "per_category_ap.csv", "w", newline="") as f:
        cats.to_csv(f, float_format="%.4f")
    with_attr = [r for r in runs if has_attributes(r["preds"], r["head"])]
    if with_attr:
        per_attr = attribute_table(with_attr, labels, thresholds, score_thr=score_thr)
        with atomic_open(out / "per_attribute.csv", "w", newline="") as f:
            per_attr.to_csv(f, index=False, float_format="%.4f")
    return table, cats
