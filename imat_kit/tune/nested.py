"""``imat-kit tune`` itself (:mod:`imat_kit.tune` has the algorithm): the nested cross-fold
figure (each fold scored with the settings searched on the others), the groups kept, the final
search on every fold, the optional re-scorer; and :func:`fold_scores`, the score of given
settings on each fold."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from imat_kit.errors import KitError
from imat_kit.eval.fast_score import rule_of, truths_of
from imat_kit.eval.runs import FoldRun
from imat_kit.eval.score_parts import FoldParts
from imat_kit.postprocess import FORMAT, PostProcess
from imat_kit.predictions import label_space
from imat_kit.progress import progress
from imat_kit.tune.attributes import matched_micro_f1, topk_start
from imat_kit.tune.rescoring import nested_rescoring
from imat_kit.tune.search import GROUPS, Search, choose_shrinkage, reshrunk


def fold_scores(runs: list[FoldRun], post: PostProcess, labels, *, metric: str = "competition",
                truths: list[dict] | None = None, workers: int | None = None,
                quiet: bool = True, fn: str = "ignore") -> list[float]:
    """The score of each run's predictions post-processed by ``post`` (what ``tune`` reports
    for a setting). ``truths`` (per run, ``image_key → [Instance]`` with key = category and
    attributes) default to the runs' truth."""
    rule = rule_of(metric, labels, fn=fn)
    if post.rescore is not None:  # the learned scores first, as submit applies them
        runs = [r.with_preds(post.rescore.apply(r.preds)) for r in runs]
        post = replace(post, rescore=None)
    out = []
    for i, run in enumerate(runs):
        fold = FoldParts(i, run, truths[i] if truths else truths_of(run), workers, quiet)
        out.append(Search([fold], metric, rule, labels, min_support=1, groups=(),
                           quiet=quiet).score(post))
    return out


def tune(runs: list[FoldRun], labels, *, metric: str = "competition", min_support: int = 20,
         workers: int | None = None, quiet: bool = False, data: str | Path | None = None,
         fn: str = "ignore", rescore: bool = False, seed: int = 0) -> dict:
    """The ``imat-kit tune`` search (module doc) over validation runs: the postprocess file's
    content. ``fn``: the 2020 rule's (``competition2020``). ``rescore``: also fit a re-scorer
    (:mod:`rescore`, fitted with ``seed``) and keep it where its nested gain is positive
    (:func:`nested_rescoring`); the file then holds the model under ``"rescore"``."""
    t0 = time.perf_counter()
    rule = rule_of(metric, labels, fn=fn)
    if min_support < 1:
        raise KitError("--min-support must be at least 1", value=min_support)
    if metric == "ap_iou_f1" and not any(r.attributes for r in runs):
        raise KitError("ap_iou_f1 needs predictions with attributes (an attribute model)",
                       file=runs[0].file, row=1)
    folds = [FoldParts(i, r, truths_of(r), workers, quiet) for i, r in enumerate(runs)]
    defaults = PostProcess()

    searches: list[Search] = []
    lam: list[float | None] = [None]  # the shrinkage strength, once the nested figure chose it

    def search(fs: list[FoldParts], groups=GROUPS, k_start: dict | None = None) -> Search:
        for old in searches:
            old.release()
        searches.append(Search(fs, metric, rule, labels, min_support=min_support,
                                groups=groups, quiet=quiet, k_start=k_start,
                                shrinkage=lam[0]))
        return searches[-1]

    def fold_score(f: FoldParts, post: PostProcess) -> float:
        return search([f], ()).score(post)

    attr = any(r.attributes for r in runs)
    starts = {f.pos: topk_start(f.run) for f in folds} if attr else {}
    per_fold = []
    nested = None
    kept = list(GROUPS)
    notes = []
    if len(folds) > 1:
        snaps = []
        for f in progress(folds, desc="tune: nested (each fold by the others)", quiet=quiet,
                          unit="fold"):
            others = [g for g in folds if g is not f]
            snaps.append(search(others, k_start=starts.get(f.pos)).run())
        shrinkage = None
        if any(s["category_raw"] for s in snaps):
            lam[0], shrinkage = choose_shrinkage(folds, snaps, fold_score)
            snaps = [reshrunk(s, lam[0]) for s in snaps]
        order = ["defaults", *GROUPS]
        gains = {}
        for k in range(1, len(order)):
            g = order[k]
            if g == "attributes" and metric == "competition":
                d = [matched_micro_f1([f.run], s[g].attributes)
                     - matched_micro_f1([f.run], s[order[k - 1]].attributes)
                     for f, s in zip(folds, snaps)] if attr else [0.0]
            else:
                d = [fold_score(f, s[g]) - fold_score(f, s[order[k - 1]])
                     for f, s in zip(folds, snaps)]
            gains[g] = float(np.mean(d))
        kept = [g for g in GROUPS if gains[g] > 1e-12 and (g != "attributes" or attr)]
        for g in GROUPS:
            if g not in kept:
                notes.append(f"{g} settings left at the defaults: their nested gain "
                             f"{gains[g]:+.4f} is not positive")
        if kept != list(GROUPS):
            snaps = [search([g for g in folds if g is not f], tuple(kept),
                            k_start=starts.get(f.pos)).run() for f in folds]
        for f, s in zip(folds, snaps):
            row = {"fold": f.run.fold, "defaults": fold_score(f, defaults),
                   "nested": fold_score(f, s["attributes"]),
                   "nested_settings": s["attributes"].values()}
            if attr:
                row["attr_micro_f1_defaults"] = matched_micro_f1([f.run], defaults.attributes)
                row["attr_micro_f1_nested"] = matched_micro_f1([f.run], s["attributes"].attributes)
            per_fold.append(row)
        gain = np.array([r["nested"] - r["defaults"] for r in per_fold])
        nested = {"defaults": float(np.mean([r["defaults"] for r in per_fold])),
                  "tuned": float(np.mean([r["nested"] for r in per_fold])),
                  "gain": float(gain.mean()), "gain_std": float(gain.std()),
                  "gain_min": float(gain.min()), "gain_max": float(gain.max()),
                  "group_gains": gains, "shrinkage": shrinkage}
        if attr:
            nested["attr_micro_f1_defaults"] = float(np.mean(
                [r["attr_micro_f1_defaults"] for r in per_fold]))
            nested["attr_micro_f1_tuned"] = float(np.mean(
                [r["attr_micro_f1_nested"] for r in per_fold]))
    else:
        notes.append("one fold only: no honest (nested) figure exists; the tuned score below "
                     "is measured on the data it was tuned on")
    final_search = search(folds, tuple(kept), k_start=topk_start(None, runs) if attr else None)
    final = final_search.run()["attributes"]
    if not all(f.has_soft for f in folds):
        notes.append("no soft masks in (some of) these predictions (predict --soft-size): "
                     "the masks are kept as stored, the mask threshold was not tuned")
    in_sample = {"defaults": final_search.score(defaults), "tuned": final_search.score(final)}
    if not per_fold:
        per_fold = [{"fold": f.run.fold, "defaults": fold_score(f, defaults)} for f in folds]
    for f, row in zip(folds, per_fold):
        row["tuned_in_sample"] = fold_score(f, final)
    rescoring, model = None, None
    if rescore:
        rescoring, settings, fits = nested_rescoring(
            folds, [s["attributes"] for s in snaps] if nested is not None else None, final,
            metric, rule, labels, min_support=min_support, quiet=quiet, seed=seed,
            fold_score=fold_score, without=[r.get("nested") for r in per_fold])
        if settings is None:
            notes.append("re-scoring left out: " + (
                rescoring["skipped"] if "skipped" in rescoring else
                "with one fold there is no nested figure to say it helps" if nested is None
                else f"its nested gain {rescoring['nested']['gain']:+.4f} is not positive"))
        else:
            final, model = settings, settings.rescore
            for row, r in zip(per_fold, rescoring["nested"]["per_fold"]):
                row["nested_without_rescore"] = row["nested"]
                row["nested"] = r["with"]
                row["nested_settings"] = r["settings"]
            for f, row in zip(folds, per_fold):
                row["tuned_in_sample"] = fits[f.pos]
            gain = np.array([r["nested"] - r["defaults"] for r in per_fold])
            nested.update({"tuned": float(np.mean([r["nested"] for r in per_fold])),
                           "gain": float(gain.mean()), "gain_std": float(gain.std()),
                           "gain_min": float(gain.min()), "gain_max": float(gain.max()),
                           "tuned_without_rescore": rescoring["nested"]["without"]})
            in_sample["tuned"] = fits["pooled"]
            notes.append(f"re-scoring kept: nested gain {rescoring['nested']['gain']:+.4f} "
                         f"± {rescoring['nested']['gain_std']:.4f} over the settings without it")
    if final.max_per_image == 1:
        notes.append("one prediction per image: the search capped every image at its most "
                     "confident prediction (the 2020 winner's move; the 2020 formula does not "
                     "count false negatives)" if rule.fn == "ignore" else
                     "one prediction per image: the search capped every image at its most "
                     "confident prediction")
    return {"format": FORMAT, "metric": metric, "fn": rule.fn, "settings": final.values(),
            "groups_kept": kept, "notes": notes, "min_support": min_support,
            "label_space": label_space(labels), "data": None if data is None else str(data),
            "folds": [r.fold for r in runs], "files": [r.file for r in runs],
            "soft_masks": all(f.has_soft for f in folds),
            "scores": in_sample, "nested": nested, "per_fold": per_fold,
            "rescoring": rescoring, "rescore": None if model is None else model.as_dict(),
            "search": {"evaluations": sum(x.evaluations for x in searches),
                       "seconds": round(time.perf_counter() - t0, 2),
                       "iou_seconds": round(sum(f.iou_seconds for f in folds), 2)}}
