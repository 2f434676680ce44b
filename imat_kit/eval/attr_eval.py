"""Attribute thresholds and per-attribute evaluation.

* :func:`tune_thresholds` (``imat-kit tune-attributes``): one probability threshold per
  attribute, the one that maximises that attribute's F1 over the validation folds' matched
  instances (a detection matched one-to-one to a truth of its category, mask IoU ≥ 0.5, greedy
  by score: the attribute question, apart from detection errors no threshold can mend) — the
  2020 winners' approach. Attributes with fewer than ``min_support`` truths keep the global
  threshold. The threshold is the midpoint between the lowest probability it keeps and the
  highest one it leaves out (never below the predictions' floor: lower probabilities were not
  stored). Written to a JSON with each attribute's support and F1 (tuned and at the global
  threshold).
* :func:`apply_thresholds`: predictions whose attribute sets are re-cut from their stored
  probabilities with such thresholds (``--attribute-thresholds`` of evaluate/submit).
* :func:`attribute_table`: per-attribute precision, recall, F1 and support of the model and of
  the per-category prior over the matched instances (``per_attribute.csv``).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from imat_kit.data.masks import pair_ious, score_order
from imat_kit.errors import KitError
from imat_kit.eval.matching import greedy_pairs
from imat_kit.eval.runs import FoldRun, as_run
from imat_kit.files import atomic_open
from imat_kit.postprocess import (
    FORMAT,
    SCORE_THR,
    AttributeDecoder,
    AttributeThresholds,
    PostProcess,
    thresholds_from,
)
from imat_kit.predictions import ATTRIBUTE_THRESHOLD, label_space


def match_instances(gt_coco: dict, preds: dict, *, iou: float = 0.5,
                    score_thr: float = SCORE_THR) -> tuple[list, list]:
    """Detections matched one-to-one to truths of their category with mask IoU ≥ ``iou``,
    greedy by descending score (``score_thr`` and above): ``(matched, unmatched_truths)``, the
    first a list of ``(prediction, index, annotation)``, the second of annotations."""
    anns: dict[int, list] = {}
    for a in gt_coco["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    matched, missed = [], []
    for im in gt_coco["images"]:
        p = preds.get(im["image_key"])
        g = anns.get(im["id"], [])
        if p is None or not len(p) or not g:
            missed.extend(g)
            continue
        keep = np.flatnonzero(p.scores >= score_thr)
        keep = keep[score_order(p.scores[keep])]
        rles = p.rles()
        cats = np.array([a["category_id"] for a in g])
        ious = pair_ious([rles[j] for j in keep], [a["segmentation"] for a in g])
        same = p.labels[keep][:, None] == cats[None, :]
        pairs = greedy_pairs(ious, iou, allowed=same)
        free = np.ones(len(g), bool)
        for r, k in pairs:
            free[k] = False
            matched.append((p, int(keep[r]), g[k]))
        missed.extend(g[k] for k in np.flatnonzero(free).tolist())
    return matched, missed


def best_threshold(p: np.ndarray, y: np.ndarray, floor: float) -> tuple[float, float]:
    """The threshold maximising F1 of ``p >= threshold`` against ``y`` and that F1 (the
    highest threshold among equal F1s); midpoints between distinct probabilities."""
    if not p.size or not y.any():  # nothing matched, or no truth to find: nothing to tune
        return float("nan"), 0.0
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order].astype(np.int64)
    tp = np.cumsum(ys)
    k = np.arange(1, len(ps) + 1)
    f1 = 2 * tp / (k + ys.sum())
    last = np.r_[ps[1:] != ps[:-1], True]  # cut only after the last of equal probabilities
    f1 = np.where(last & (ps > 0), f1, -1.0)
    i = int(np.argmax(f1))
    if f1[i] <= 0:
        return float("nan"), 0.0
    lower = ps[i + 1] if i + 1 < len(ps) else 0.0
    return float(max((ps[i] + lower) / 2, floor)), float(f1[i])


def _pairs(runs: list[dict], score_thr: float) -> tuple[list, float]:
    pairs, floor = [], 0.0
    for run in map(as_run, runs):
        if not run.head.get("attribute_model") and not any(
                p.attr_probs for p in run.preds.values()):
            raise KitError("these predictions carry no attribute probabilities (predict with an "
                           "attribute config, e.g. configs/tiny_maskrcnn_imat_attr.py)",
                           file=run.file, row=1)
        floor = max(floor, float(run.head.get("attribute_floor") or 0.0))
        matched, _ = match_instances(run.gt, run.preds, score_thr=score_thr)
        pairs.extend((p.attr_probs[j], set(a.get("attribute_ids", []))) for p, j, a in matched)
    return pairs, floor


def tune_thresholds(runs: list[FoldRun], attribute_ids: list[int], *, min_support: int = 10,
                    global_threshold: float | None = None, score_thr: float = SCORE_THR) -> dict:
    """Per-attribute thresholds from validation runs (``evaluate.read_fold_runs``); returns
    the thresholds file's content. The global threshold (for the attributes below
    ``min_support``) is tuned too, for the micro F1 of every attribute pooled, unless given:
    for calibrated probabilities the F1-optimal threshold is about half the F1 it reaches
    (Lipton et al., 2014), well below 0.5 for most attribute models."""
    if min_support < 1:
        raise KitError("--min-support must be at least 1", value=min_support)
    if global_threshold is not None and not 0 < global_threshold <= 1:
        raise KitError("--global-threshold must be in (0, 1]", value=global_threshold)
    pairs, floor = _pairs(runs, score_thr)
    known = set(int(a) for a in attribute_ids)
    seen = sorted(known & ({a for pr, t in pairs for a in pr} | {a for _, t in pairs for a in t}))
    col = {a: k for k, a in enumerate(seen)}
    probs = np.zeros((len(pairs), len(seen)))
    truth = np.zeros((len(pairs), len(seen)), bool)
    for i, (pr, t) in enumerate(pairs):
        for a, v in pr.items():
            if a in col:
                probs[i, col[a]] = v
        for a in t:
            if a in col:
                truth[i, col[a]] = True
    at_half = _f1(probs >= ATTRIBUTE_THRESHOLD, truth)
    g_tuned = global_threshold is None
    if g_tuned:
        g, _ = best_threshold(probs.ravel(), truth.ravel(), floor)
        global_threshold = ATTRIBUTE_THRESHOLD if np.isnan(g) else round(g, 6)
    out = {}
    for a in seen:
        y, p = truth[:, col[a]], probs[:, col[a]]
        support = int(y.sum())
        if not support:
            continue
        at_global = _f1(p >= global_threshold, y)
        thr, best = best_threshold(p, y, floor)
        tuned = support >= min_support and not np.isnan(thr)
        out[str(a)] = {"threshold": round(thr, 6) if tuned else global_threshold,
                       "tuned": bool(tuned), "support": support,
                       "f1": round(best if tuned else at_global, 6),
                       "f1_at_global": round(at_global, 6)}
    final = AttributeThresholds(global_threshold,
                                {int(a): v["threshold"] for a, v in out.items()})
    cut = probs >= np.array([final.of(a) for a in seen])[None, :]
    return {"global_threshold": global_threshold,
            "global_tuned": g_tuned, "min_support": min_support,
            "matched_instances": len(pairs), "probability_floor": floor,
            "micro_f1_at_0.5": round(at_half, 6), "micro_f1": round(_f1(cut, truth), 6),
            "folds": [as_run(r).fold for r in runs], "files": [as_run(r).file for r in runs],
            "attributes": out}


def _f1(pred: np.ndarray, y: np.ndarray) -> float:
    tp = int((pred & y).sum())
    den = int(pred.sum() + y.sum())
    return 2 * tp / den if den else 0.0


def thresholds_postprocess(content: dict, labels, data: str | Path | None = None) -> dict:
    """The postprocess file ``tune-attributes`` writes from :func:`tune_thresholds`' result:
    the default settings with the tuned thresholds as the attribute decoding, the data's
    label space, and the tuning's figures (``attribute_tuning``: each attribute's threshold,
    support and F1, tuned and at the global threshold)."""
    post = PostProcess(attributes=AttributeDecoder(thresholds=thresholds_from(content)))
    return {"format": FORMAT, "tuned_by": "tune-attributes", "settings": post.values(),
            "label_space": label_space(labels), "data": None if data is None else str(data),
            "folds": content["folds"], "files": content["files"],
            "attribute_tuning": content}


def write_thresholds(content: dict, out: str | Path, labels,
                     data: str | Path | None = None) -> None:
    """:func:`thresholds_postprocess`, written atomically."""
    with atomic_open(out, "w") as f:
        json.dump(thresholds_postprocess(content, labels, data), f, indent=2)


def attribute_table(runs: list[FoldRun], labels, thresholds: AttributeThresholds, *,
                    score_thr: float = SCORE_THR) -> pd.DataFrame:
    """Per attribute over the matched instances of every fold: the model's TP, FP, FN,
    precision, recall, F1 and the per-category prior's precision/recall/F1 (the prior is
    learnt from each fold's training annotations), support and the threshold used."""
    counts: dict[str, dict[int, np.ndarray]] = {"model": {}, "prior": {}}
    for run in map(as_run, runs):
        train = run.train_gt
        prior = category_prior(train) if train is not None else None
        matched, _ = match_instances(run.gt, run.preds, score_thr=score_thr)
        for p, j, a in matched:
            truth = set(a.get("attribute_ids", []))
            mine = set(thresholds.cut(p.attr_probs[j]) if p.attr_probs
                       else (p.attributes[j] if p.attributes else ()))
            guess = set(prior.get(int(a["category_id"]), ())) if prior is not None else None
            for who, s in (("model", mine), ("prior", guess)):
                if s is None:  # no training annotations: the prior is unknown (NaN columns)
                    continue
                c = counts[who]
                for x in s | truth:
                    v = c.setdefault(x, np.zeros(3, np.int64))
                    v += (x in s and x in truth, x in s and x not in truth,
                          x in truth and x not in s)
    ids = sorted(set(counts["model"]) | set(counts["prior"]))
    cols = {}
    for who in ("model", "prior"):
        arr = np.array([counts[who].get(i, np.zeros(3, np.int64)) for i in ids]).reshape(-1, 3)
        cols[who] = f1_from_counts(pd.DataFrame({"tp": arr[:, 0], "fp": arr[:, 1],
                                                 "fn": arr[:, 2]}))
    names = {a["id"]: a["name"] for a in labels.attributes}
    m, pr = cols["model"], cols["prior"]
    return pd.DataFrame({
        "attribute_id": ids, "name": [names.get(i, "?") for i in ids],
        "support": m.support.to_numpy(), "tp": m.tp.to_numpy(), "fp": m.fp.to_numpy(),
        "fn": m.fn.to_numpy(), "precision": m.precision.to_numpy(),
        "recall": m.recall.to_numpy(), "f1": m.f1.to_numpy(),
        "prior_precision": pr.precision.to_numpy(), "prior_recall": pr.recall.to_numpy(),
        "prior_f1": pr.f1.to_numpy(), "prior_tp": pr.tp.to_numpy(), "prior_fp": pr.fp.to_numpy(),
        "prior_fn": pr.fn.to_numpy(), "threshold": [thresholds.of(i) for i in ids]})


def micro_f1(table: pd.DataFrame, prefix: str = "") -> float:
    """Micro F1 of an :func:`attribute_table` (``prefix="prior_"``: the prior's)."""
    tp, fp, fn = (int(table[prefix + c].sum()) for c in ("tp", "fp", "fn"))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")


def category_prior(train_coco: dict) -> dict[int, tuple[int, ...]]:
    """The per-category prior: for each category, its k most frequent attributes in the
    training annotations, k = the median number of attributes of its instances (the constant
    guess a model that ignores the pixels would make)."""
    per_cat: dict[int, list] = {}
    for a in train_coco["annotations"]:
        per_cat.setdefault(int(a["category_id"]), []).append(a.get("attribute_ids", []))
    prior = {}
    for c, sets in per_cat.items():
        k = int(np.median([len(s) for s in sets]))
        counts = pd.Series([x for s in sets for x in s], dtype=np.int64).value_counts()
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        prior[c] = tuple(sorted(int(x) for x, _ in ranked[:k]))
    return prior


def with_prior(preds: dict, prior: dict[int, tuple[int, ...]]) -> dict:
    """The predictions with each instance's attributes replaced by its category's prior."""
    return {key: replace(p, attr_probs=[], attributes=[prior.get(int(c), ()) for c in p.labels])
            for key, p in preds.items()}


def f1_from_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Precision, recall, F1 (NaN where undefined) and support from ``tp``, ``fp``, ``fn``
    columns: one attribute per row (per fold, or counts summed over folds)."""
    df = df.copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        df["precision"] = df.tp / (df.tp + df.fp)
        df["recall"] = df.tp / (df.tp + df.fn)
        df["f1"] = 2 * df.tp / (2 * df.tp + df.fp + df.fn)
    df["support"] = df.tp + df.fn
    return df
