"""The exact, vectorised competition score behind ``imat-kit tune``, part 2: settings scored
on a fold's flat views (:mod:`imat_kit.eval.score_parts`).

Where each kept detection has at most one truth it could match, greedy matching by score
reduces to "a truth is found at a threshold when some kept detection linked to it passes it",
computed for all images at once; the (image, class) groups where a detection has two candidate
truths are matched by the greedy rule itself (:mod:`imat_kit.eval.matching`). The rule is 2019's
(IoU thresholds) or 2020's (IoU and attribute F1 thresholds, false negatives counted or not);
``tests/test_tune.py`` checks the scores against :mod:`imat_kit.eval.metric` and
:mod:`imat_kit.eval.attr_metric` on the submission ``submit`` writes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imat_kit.errors import KitError
from imat_kit.eval.attr_metric import F1_TYPES, SWEEPS, f1_of_counts
from imat_kit.eval.matching import greedy_tp
from imat_kit.eval.metric import FN_RULES, IOU_THRESHOLDS, Instance, truth_instances
from imat_kit.eval.runs import FoldRun
from imat_kit.eval.score_parts import FlatView, FoldParts
from imat_kit.postprocess import AttributeDecoder

#: the metrics ``tune`` can maximise
METRICS = ("competition", "competition2020", "ap_iou_f1")


@dataclass(frozen=True)
class Rule:
    """The competition rule a score uses, 2019 or 2020 (``docs/metrics.md``); ``sweep`` and
    ``f1`` as :func:`attr_metric.competition_score_2020`, ``fn`` as
    :func:`metric.competition_score`."""

    year: int = 2019
    sweep: str = "grid"
    f1: str = "binary_macro"
    attribute_ids: tuple = ()
    fn: str = "count"  # metric.FN_RULES: 2020 ignores false negatives by default

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        if self.year == 2019:
            return IOU_THRESHOLDS, np.full(len(IOU_THRESHOLDS), -1.0)
        if self.sweep == "grid":
            a, b = np.meshgrid(IOU_THRESHOLDS, IOU_THRESHOLDS, indexing="ij")
            return a.ravel(), b.ravel()
        return IOU_THRESHOLDS, IOU_THRESHOLDS


def f1_of_sets(pred_sets: list, truth_sets: list, a: int, kind: str) -> np.ndarray:
    """Attribute F1 of each (prediction set, truth set) pair, as :func:`attr_metric.pairwise_f1`
    computes it for one pair (``binary_macro`` over the A-long vectors, or ``positive``)."""
    tp = np.array([len(set(p) & set(t)) for p, t in zip(pred_sets, truth_sets)], np.float64)
    n_p = np.array([len(p) for p in pred_sets], np.float64)
    n_t = np.array([len(t) for t in truth_sets], np.float64)
    return f1_of_counts(tp, n_p, n_t, a, kind)


def predicted_sets(view: FlatView, folds: dict, idx, decoder: AttributeDecoder) -> list:
    """The attribute sets of the view's detections ``idx``: decoded by ``decoder`` from the
    probabilities, or as stored."""
    out = []
    for k in np.asarray(idx).tolist():
        f, key, j = view.p_src[k]
        p = folds[f].run.preds[key]
        if p.attr_probs:
            out.append(decoder.decode(int(p.labels[j]), p.attr_probs[j]))
        else:
            out.append(tuple(p.attributes[j]) if p.attributes else ())
    return out


class Scorer:
    """Scores settings on a view: the link patterns (which thresholds each link passes) are
    built once per rule and attribute decoding."""

    def __init__(self, *, view: FlatView, rule: Rule, n_thresholds: int,
                 link_passes: np.ndarray, groups: list) -> None:
        self.view, self.rule, self.n_thresholds = view, rule, n_thresholds
        self.link_passes = link_passes  # links × thresholds: whether the link passes each
        self.groups = groups  # (image, detections, IoUs, allowed, cache): matched greedily

    @classmethod
    def build(cls, view: FlatView, rule: Rule, decoder: AttributeDecoder | None,
              folds: dict[int, FoldParts]) -> Scorer:
        """The scorer of ``view`` under ``rule``, attribute sets decoded by ``decoder``
        (``folds``: the folds the view's detections come from, by position)."""
        thr_iou, thr_f1 = rule.pairs()
        if rule.year == 2019:
            passes = view.l_iou[:, None] >= thr_iou[None, :] - 1e-12
            groups = [(i, d, ious, ious[None, :, :] >= thr_iou[:, None, None] - 1e-12, {})
                      for i, d, t, ious in view.groups]
            return cls(view=view, rule=rule, n_thresholds=len(thr_iou), link_passes=passes,
                       groups=groups)
        n_attr = len(rule.attribute_ids)

        def sets(idx: np.ndarray) -> list:
            return predicted_sets(view, folds, idx, decoder)

        truth_sets = [tuple(view.t_src[t].attributes) for t in view.l_truth.tolist()]
        f1 = f1_of_sets(sets(view.l_pred), truth_sets, n_attr, rule.f1)
        needs = np.array([bool(s) for s in truth_sets], bool)
        passes = (view.l_iou[:, None] > thr_iou[None, :]) & (
            ~needs[:, None] | (f1[:, None] > thr_f1[None, :]))
        groups = []
        for i, d, t, ious in view.groups:
            pred_sets = sets(d)
            group_truths = [tuple(view.t_src[g].attributes) for g in t.tolist()]
            f = f1_of_sets([x for x in pred_sets for _ in group_truths],
                       [y for _ in pred_sets for y in group_truths], n_attr,
                       rule.f1).reshape(len(pred_sets), len(group_truths))
            needs_f1 = np.array([bool(s) for s in group_truths], bool)
            allowed = (ious[None, :, :] > thr_iou[:, None, None]) & (
                ~needs_f1[None, None, :] | (f[None, :, :] > thr_f1[:, None, None]))
            groups.append((i, d, ious, allowed, {}))
        return cls(view=view, rule=rule, n_thresholds=len(thr_iou), link_passes=passes,
                   groups=groups)

    def subset(self, images: np.ndarray) -> Scorer:
        """The same scorer over some images only (``images``: sorted image indices): each
        image's score depends on that image alone."""
        v = self.view
        keep_img = np.zeros(v.n_img, bool)
        keep_img[images] = True
        new_img = np.cumsum(keep_img) - 1
        keep_pred, keep_truth = keep_img[v.p_img], keep_img[v.t_img]
        new_pred, new_truth = np.cumsum(keep_pred) - 1, np.cumsum(keep_truth) - 1
        keep_link = keep_pred[v.l_pred]
        sub = FlatView(n_img=int(keep_img.sum()), p_img=new_img[v.p_img[keep_pred]],
                       p_label=v.p_label[keep_pred], p_score=v.p_score[keep_pred],
                       p_area=v.p_area[keep_pred], g=v.g[keep_img],
                       t_img=new_img[v.t_img[keep_truth]], l_pred=new_pred[v.l_pred[keep_link]],
                       l_truth=new_truth[v.l_truth[keep_link]], l_iou=v.l_iou[keep_link],
                       groups=[], p_src=[], t_src=[])
        return Scorer(view=sub, rule=self.rule, n_thresholds=self.n_thresholds,
                      link_passes=self.link_passes[keep_link],
                      groups=[(int(new_img[i]), new_pred[d], ious, allowed, done)
                              for i, d, ious, allowed, done in self.groups if keep_img[i]])

    def image_scores(self, thr: np.ndarray, cap: int) -> tuple[np.ndarray, np.ndarray]:
        """Per image: the score (mean over the thresholds of TP / (TP + FP + FN), or with the
        rule's ``fn`` ``ignore`` TP / (TP + FP) and 0 without detections) and whether it counts
        (something predicted or true), at per-category thresholds ``thr`` (indexed by category
        id) and the cap."""
        v = self.view
        kept = v.p_score >= thr[v.p_label]
        c = np.cumsum(kept)
        before = c - kept
        rank = before - (np.concatenate(([0], c))[v.cum_before])[v.p_img]
        kept &= (rank < cap) & (v.p_area > 0)
        k = np.bincount(v.p_img[kept], minlength=v.n_img)
        tp = np.zeros((v.n_img, self.n_thresholds), np.int64)
        kept_links = np.flatnonzero(kept[v.l_pred])
        if kept_links.size:
            link_truth = v.l_truth[kept_links]
            starts = np.flatnonzero(np.concatenate(([True], link_truth[1:] != link_truth[:-1])))
            cov = np.logical_or.reduceat(self.link_passes[kept_links], starts,
                                         axis=0).astype(np.int64)
            imgs = v.t_img[link_truth[starts]]
            istarts = np.flatnonzero(np.concatenate(([True], imgs[1:] != imgs[:-1])))
            tp[imgs[istarts]] = np.add.reduceat(cov, istarts, axis=0)
        no_thr = np.full(self.n_thresholds, -1.0)
        for i, d, ious, allowed, done in self.groups:  # matched greedily: once per kept set
            kept_here = kept[d]
            key = kept_here.tobytes()
            got = done.get(key)
            if got is None:
                rows = np.flatnonzero(kept_here)
                got = done[key] = (greedy_tp(ious[rows], no_thr, allowed=allowed[:, rows, :])
                                   if rows.size else None)
            if got is not None:
                tp[i] += got
        den = k[:, None] + (0 if self.rule.fn == "ignore" else v.g[:, None] - tp)
        ratio = np.where(den > 0, tp / np.maximum(den, 1), 0.0)
        return ratio.mean(axis=1), (k + v.g) > 0

    def score(self, thr: np.ndarray, cap: int) -> float:
        s, counted = self.image_scores(thr, cap)
        return float(s[counted].mean()) if counted.any() else float("nan")


def tp_rates(sc: Scorer) -> np.ndarray:
    """Each detection's TP rate on the scorer's view with every detection kept: the share of
    the rule's thresholds at which greedy matching by score makes it a true positive
    (:mod:`rescore`'s target). A detection linked to one truth is a TP at t when it passes t
    and no earlier detection linked to that truth does; the groups where a detection has two
    candidate truths are matched by the greedy rule itself."""
    v = sc.view
    hits = np.zeros(len(v.p_img), np.int64)
    if len(v.l_pred):
        link_passes_int = sc.link_passes.astype(np.int64)
        link_truth = v.l_truth
        starts = np.flatnonzero(np.concatenate(([True], link_truth[1:] != link_truth[:-1])))
        group = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(link_truth))))
        cum = np.cumsum(link_passes_int, axis=0)
        before = cum - link_passes_int - (cum[starts] - link_passes_int[starts])[group]
        np.add.at(hits, v.l_pred, ((link_passes_int == 1) & (before == 0)).sum(axis=1))
    for _, rows, ious, allowed, _ in sc.groups:
        for p in range(allowed.shape[0]):
            free = np.ones(ious.shape[1], bool)
            for r in range(len(rows)):
                ok = free & allowed[p, r]
                if ok.any():
                    free[int(np.where(ok, ious[r], -1.0).argmax())] = False
                    hits[rows[r]] += 1
    return hits / sc.n_thresholds


def truths_of(run: FoldRun) -> dict[str, list[Instance]]:
    """A fold's truth as the competition rules take it: key = category, with attributes."""
    return truth_instances(run.gt, by_category=True)


def rule_of(metric: str, labels, *, sweep: str = "grid", f1: str = "binary_macro",
            fn: str = "ignore") -> Rule:
    """The rule of a metric; ``fn`` applies to ``competition2020`` (2019 counts false
    negatives)."""
    if metric not in METRICS:
        raise KitError(f"metric must be one of {', '.join(METRICS)}", value=metric)
    if sweep not in SWEEPS or f1 not in F1_TYPES or fn not in FN_RULES:
        raise KitError("unknown sweep, f1 or fn", value=(sweep, f1, fn))
    year = 2020 if metric == "competition2020" else 2019
    return Rule(year, sweep, f1, tuple(labels.attribute_id_list),
                fn if year == 2020 else "count")
