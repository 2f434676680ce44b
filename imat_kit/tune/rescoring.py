"""``imat-kit tune --rescore``: a model of each prediction's chance to be right (the 2020
winner's move, :mod:`imat_kit.rescore`) fitted on the tuning folds, its nested figure, and the
settings searched again over the re-scored folds."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from imat_kit import rescore as rescore_mod
from imat_kit.data.masks import score_order
from imat_kit.eval.fast_score import Rule, Scorer, f1_of_sets, predicted_sets, rule_of, tp_rates
from imat_kit.eval.score_parts import FoldParts
from imat_kit.postprocess import AttributeDecoder, PostProcess
from imat_kit.progress import progress
from imat_kit.tune.search import Search


@dataclass
class RescoringData:
    """One fold's re-scoring data, rows in the fold's flat order: the image features, the TP
    rates, the categories, and (category, F1) of the detections linked to a truth with
    attributes (IoU ≥ 0.5)."""

    x: np.ndarray
    y: np.ndarray
    labels: np.ndarray
    f1_labels: np.ndarray
    f1: np.ndarray

    @classmethod
    def of(cls, fold: FoldParts, rule: Rule, n_attributes: int) -> RescoringData:
        view = fold.view(None, 1)
        sc = Scorer.build(view, rule, AttributeDecoder(), {fold.pos: fold})
        preds, perm, start = [], [], 0
        for k in fold.keys:
            p = fold.run.preds.get(k)
            if p is None or not len(p):
                continue
            preds.append(p)
            perm.append(start + score_order(p.scores))
            start += len(p)
        x = (rescore_mod.image_features(preds)[np.concatenate(perm)] if preds else
             np.zeros((0, rescore_mod.N_IMAGE_FEATURES)))
        f1_labels, f1 = np.zeros(0, np.int64), np.zeros(0)
        if n_attributes and len(view.l_pred):
            has = np.array([bool(view.t_src[t].attributes) for t in view.l_truth.tolist()],
                           bool)
            if has.any():
                truths = [view.t_src[t] for t in view.l_truth[has].tolist()]
                f1_labels = np.array([int(t.key) for t in truths], np.int64)
                f1 = f1_of_sets(predicted_sets(view, {fold.pos: fold}, view.l_pred[has],
                                       AttributeDecoder()),
                            [tuple(t.attributes) for t in truths], n_attributes, rule.f1)
        return cls(x, tp_rates(sc), view.p_label.copy(), f1_labels, f1)


def fit_rescorer(parts: list[RescoringData], target: str, seed: int):
    tables = rescore_mod.Tables.fit(np.concatenate([d.labels for d in parts]),
                                    np.concatenate([d.y for d in parts]),
                                    np.concatenate([d.f1_labels for d in parts]),
                                    np.concatenate([d.f1 for d in parts]))
    x = np.vstack([np.hstack([d.x, tables.columns(d.labels)]) for d in parts])
    return rescore_mod.fit(x, np.concatenate([d.y for d in parts]), tables, target=target,
                           seed=seed)


def rescore_search(folds: list[FoldParts], start: PostProcess, metric: str, rule: Rule, labels,
                    min_support: int, quiet: bool) -> PostProcess:
    """The settings over re-scored folds: from ``start`` (the search's settings without
    re-scoring) without per-category thresholds (the model knows the category), the score
    threshold and the cap searched again."""
    srch = Search(folds, metric, rule, labels, min_support=min_support, groups=("global",),
                   quiet=quiet, fields=("score_thr", "max_per_image"))
    return srch.run(replace(start, category_thr={}))["global"]


def nested_rescoring(folds: list[FoldParts], nested_posts: list[PostProcess] | None,
                     final: PostProcess, metric: str, rule: Rule, labels, *, min_support: int,
                     quiet: bool, seed: int, fold_score, without: list[float] | None = None
                     ) -> tuple[dict, PostProcess | None, dict]:
    """``tune --rescore``: the nested figure with and without re-scoring and, where its gain is
    positive, the final settings with the model fitted on every fold. Protocol, the same
    nested and final: fit the model on the tuning folds, re-score them with it, search the
    settings on them; apply model and settings to the scored fold (nested) or the test set.
    ``without``: each fold's nested score without re-scoring (already known). Returns the
    report, the settings (None when re-scoring is not kept) and their in-sample score per
    fold."""
    t0 = time.perf_counter()
    target_rule = rule if metric != "ap_iou_f1" else rule_of("competition2020", labels)
    target = "competition2020" if target_rule.year == 2020 else "competition"
    n_attr = len(labels.attribute_id_list) if any(f.run.attributes for f in folds) else 0
    parts = {f.pos: RescoringData.of(f, target_rule, n_attr)
             for f in progress(folds, desc="tune: re-scoring targets and features",
                               quiet=quiet, unit="fold")}
    timing = {"targets_features": time.perf_counter() - t0, "fit": 0.0, "search": 0.0,
              "score": 0.0}

    def rescored(f: FoldParts, model) -> FoldParts:
        """The fold re-scored by ``model`` (what ``model.apply`` gives, from the features
        computed once), its masks' parts reordered from the fold's own."""
        d = parts[f.pos]
        y = model.new_scores(np.hstack([d.x, model.tables.columns(d.labels)]))
        preds, start = dict(f.run.preds), 0
        for k in f.keys:
            p = preds.get(k)
            if p is None or not len(p):
                continue
            new = np.empty(len(p))
            new[score_order(p.scores)] = y[start:start + len(p)]
            start += len(p)
            preds[k] = replace(p, scores=new)
        made.append(FoldParts(f.pos, f.run.with_preds(preds), f.truths, f.workers, True, base=f))
        return made[-1]

    made: list[FoldParts] = []

    report: dict = {"target": target, "features": list(rescore_mod.FEATURES),
                    "predictions": int(sum(len(d.y) for d in parts.values()))}
    rows_of = {f.pos: len(parts[f.pos].y) for f in folds}
    fewest = min([sum(rows_of.values())] + ([sum(rows_of.values()) - n for n in rows_of.values()]
                                            if nested_posts is not None else []))
    if fewest < rescore_mod.MIN_ROWS:  # nothing to learn from (e.g. a model barely trained)
        report.update(kept=False, skipped=f"only {fewest} predictions to fit a re-scorer on "
                      f"(at least {rescore_mod.MIN_ROWS} needed)",
                      seconds=round(time.perf_counter() - t0, 2))
        return report, None, {}
    kept = False
    if nested_posts is not None:
        rows = []
        for f, start in progress(list(zip(folds, nested_posts)), quiet=quiet, unit="fold",
                                 desc="tune: re-scoring, nested"):
            others = [g for g in folds if g is not f]
            t1 = time.perf_counter()
            model = fit_rescorer([parts[g.pos] for g in others], target, seed)
            t2 = time.perf_counter()
            post = rescore_search([rescored(g, model) for g in others], start, metric, rule,
                                   labels, min_support, True)
            t3 = time.perf_counter()
            rows.append({"fold": f.run.fold, "without": without[f.pos],
                         "with": fold_score(rescored(f, model), post),
                         "settings": post.values()})
            timing["fit"] += t2 - t1
            timing["search"] += t3 - t2
            timing["score"] += time.perf_counter() - t3
        gain = np.array([r["with"] - r["without"] for r in rows])
        kept = bool(gain.mean() > 1e-12)
        report["nested"] = {"without": float(np.mean([r["without"] for r in rows])),
                            "with": float(np.mean([r["with"] for r in rows])),
                            "gain": float(gain.mean()), "gain_std": float(gain.std()),
                            "per_fold": rows}
    t1 = time.perf_counter()
    model = fit_rescorer(list(parts.values()), target, seed)
    timing["fit"] += time.perf_counter() - t1
    report["kept"] = kept
    report["model"] = model.summary()
    settings, in_sample = None, {}
    if kept:
        every = [rescored(f, model) for f in folds]
        settings = replace(rescore_search(every, final, metric, rule, labels, min_support,
                                           True), rescore=model)
        plain = replace(settings, rescore=None)
        in_sample = {f.pos: fold_score(r, plain) for f, r in zip(folds, every)}
        in_sample["pooled"] = Search(every, metric, rule, labels, min_support=1, groups=(),
                                      quiet=True).score(plain)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    report["seconds_by_part"] = {k: round(v, 2) for k, v in timing.items()}
    report["images_reordered"] = int(sum(len(f.keys) for f in made))
    report["images_recomputed"] = int(sum(f.reordered_anew for f in made))
    return report, settings, in_sample
