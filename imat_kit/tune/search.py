"""The search of ``imat-kit tune`` (:mod:`imat_kit.tune` has the whole algorithm): coordinate
ascent over the global settings' grids, then each category's threshold, then the attribute
decoding, over some folds pooled; and the shrinkage of per-category thresholds."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from imat_kit.errors import KitError
from imat_kit.eval.attr_eval import tune_thresholds
from imat_kit.eval.attr_metric import attribute_categories, fashionpedia_eval
from imat_kit.eval.fast_score import Rule, Scorer
from imat_kit.eval.runs import FoldRun
from imat_kit.eval.score_parts import LINK_IOU, MASK_GRID, FoldParts, concat_views
from imat_kit.postprocess import AttributeDecoder, PostProcess, thresholds_from
from imat_kit.progress import progress
from imat_kit.tune.attributes import matched_micro_f1, tune_pair_thresholds, tune_topk

SCORE_GRID = tuple(float(x) for x in np.round(np.arange(0.05, 0.951, 0.05), 2))
CAP_GRID = (1, 2, 3, 5, 10, 20, 30, 50, 75, 100)
AREA_GRID = (0, 10, 20, 50, 100, 200, 400)
GROUPS = ("global", "category", "attributes")
#: the per-category thresholds' shrinkage strengths λ the nested figure chooses among
SHRINK_GRID = (0.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, float("inf"))
#: the score grid over re-scored predictions (predicted TP rates: low values matter)
RESCORED_SCORE_GRID = (0.0, 0.01, 0.02, 0.03, 0.04, *SCORE_GRID)


class Search:
    """The search over some folds (pooled), with the caches it needs."""

    def __init__(self, folds: list[FoldParts], metric: str, rule: Rule, labels, *,
                 min_support: int, groups: tuple[str, ...], quiet: bool,
                 k_start: dict[int, int] | None = None,
                 fields: tuple[str, ...] | None = None,
                 shrinkage: float | None = None) -> None:
        self.folds, self.metric, self.rule, self.labels = folds, metric, rule, labels
        self.fields = fields  # the global settings searched (default: every one)
        self.shrinkage = float(min_support if shrinkage is None else shrinkage)
        self.raw: dict[int, tuple[float, int]] = {}  # category → (best threshold, support)
        self.min_support, self.groups, self.quiet = min_support, groups, quiet
        self.k_start = k_start  # top-k's start: medians of training data without the scored
        self.evaluations = 0
        self._scorers: dict = {}
        self.n_cat = max(labels.category_ids) + 1
        self.soft = all(f.has_soft for f in folds)
        self.attributes = any(f.run.attributes for f in folds)

    def release(self) -> None:
        """Let go of the pooled views and scorers (a finished search's are not needed
        again)."""
        self._scorers.clear()

    def scorer(self, mask_thr, floor, decoder) -> Scorer:
        key = (mask_thr, max(floor, 1),
               None if self.rule.year == 2019 else json.dumps(decoder.as_dict(), sort_keys=True))
        if key not in self._scorers:
            view = concat_views([f.view(mask_thr, floor) for f in self.folds])
            self._scorers[key] = Scorer.build(view, self.rule, decoder,
                                               {f.pos: f for f in self.folds})
        return self._scorers[key]

    def thr_array(self, post: PostProcess) -> np.ndarray:
        thr = np.full(self.n_cat, post.score_thr)
        for c, t in post.category_thr.items():
            thr[c] = t
        return thr

    def score(self, post: PostProcess) -> float:
        self.evaluations += 1
        if self.metric == "ap_iou_f1":
            return ap_iou_f1_score([f.run for f in self.folds], post, self.labels)
        return self.scorer(post.mask_thr, post.min_area, post.attributes).score(
            self.thr_array(post), post.max_per_image)

    def _best(self, post: PostProcess, field: str, grid) -> tuple[PostProcess, float]:
        best, best_s = post, self.score(post)
        for x in grid:
            cand = replace(post, **{field: x})
            if cand == best:
                continue
            s = self.score(cand)
            if s > best_s + 1e-12:
                best, best_s = cand, s
        return best, best_s

    def run(self, post: PostProcess | None = None) -> dict[str, PostProcess]:
        """Snapshots of the settings after each group: ``defaults``, ``global``,
        ``category``, ``attributes`` (a group not searched leaves them as they were)."""
        post = post or PostProcess()
        snaps = {"defaults": post}
        if "global" in self.groups:
            fields = [("score_thr", SCORE_GRID), ("max_per_image", CAP_GRID),
                      ("min_area", AREA_GRID)]
            if self.soft:
                fields.append(("mask_thr", MASK_GRID))
            if self.fields is not None:
                fields = [(f, RESCORED_SCORE_GRID if f == "score_thr" else g)
                          for f, g in fields if f in self.fields]
            for _ in range(3):
                before = post
                for field, grid in fields:
                    post, _ = self._best(post, field, grid)
                if post == before:
                    break
        snaps["global"] = post
        if "category" in self.groups and self.metric != "ap_iou_f1":
            post = self._categories(post)
        snaps["category"] = post
        snaps["category_raw"] = dict(self.raw)
        if "attributes" in self.groups and self.attributes:
            post = replace(post, attributes=self._decoder(post))
        snaps["attributes"] = post
        return snaps

    def _support(self) -> dict[int, int]:
        """Truths matched (greedy, IoU ≥ 0.5, at the defaults) per category, over the folds."""
        sc = self.scorer(None, PostProcess().min_area, AttributeDecoder())
        v = sc.view
        kept = v.p_score >= PostProcess().score_thr
        found = np.zeros(len(v.t_img), bool)
        sel = np.flatnonzero(kept[v.l_pred] & (v.l_iou >= LINK_IOU))
        found[v.l_truth[sel]] = True
        cats = np.array([t.key for t in v.t_src], np.int64)
        out = np.bincount(cats[found], minlength=self.n_cat) if found.any() else \
            np.zeros(self.n_cat, np.int64)
        for _, _, t, ious in v.groups:
            out[cats[t[0]]] += int((ious.max(0) >= LINK_IOU).sum())
        return {c: int(n) for c, n in enumerate(out) if n}

    def _categories(self, post: PostProcess) -> PostProcess:
        support = self._support()
        cats = sorted((c for c, n in support.items() if n >= self.min_support),
                      key=lambda c: (-support[c], c))
        if not cats:
            return post
        sc = self.scorer(post.mask_thr, post.min_area, post.attributes)
        v = sc.view
        thr = self.thr_array(post)
        # each image's score at the current thresholds; a category's threshold changes the
        # scores of the images holding it only, which are all that is scored per trial and
        # all that is updated after it (an image's score depends on that image alone)
        base, counted = sc.image_scores(thr, post.max_per_image)
        for c in progress(cats, desc="tune: per-category thresholds", quiet=self.quiet,
                          unit="cat"):
            total, n = base[counted].sum(), counted.sum()
            imgs = np.unique(v.p_img[v.p_label == c])
            part = sc.subset(imgs)
            rest_total = total - base[imgs][counted[imgs]].sum()
            rest_n = n - counted[imgs].sum()
            best_t, best_s, best_part = thr[c], total / max(n, 1), None
            for t in SCORE_GRID:
                if t == thr[c]:
                    continue
                trial = thr.copy()
                trial[c] = t
                s, cnt = part.image_scores(trial, post.max_per_image)
                self.evaluations += 1
                val = (rest_total + s[cnt].sum()) / max(rest_n + cnt.sum(), 1)
                if val > best_s + 1e-12:
                    best_t, best_s, best_part = t, val, (s, cnt)
            thr[c] = best_t
            if best_part is not None:
                base[imgs], counted[imgs] = best_part
            self.raw[c] = (float(best_t), int(support[c]))
        return replace(post, category_thr=shrink(post.score_thr, self.raw, self.shrinkage))

    def _decoder(self, post: PostProcess) -> AttributeDecoder:
        runs = [f.run for f in self.folds]
        cands = [AttributeDecoder()]
        try:
            cands.append(AttributeDecoder("threshold", thresholds_from(tune_thresholds(
                runs, list(self.labels.attribute_id_list)))))
        except KitError:  # no attribute probabilities
            return AttributeDecoder()
        cands.append(AttributeDecoder("topk", topk=tune_topk(runs, start=self.k_start,
                                                             min_support=self.min_support)))
        cands.append(AttributeDecoder("pair", cands[1].thresholds, pairs=tune_pair_thresholds(
            runs, cands[1].thresholds, min_support=self.min_support)))
        if self.metric == "competition":  # the 2019 score ignores attributes: micro F1
            scores = [matched_micro_f1(runs, d) for d in cands]
        else:
            scores = [self.score(replace(post, attributes=d)) for d in cands]
        best = 0
        for i, s in enumerate(scores):
            if s > scores[best] + 1e-12:
                best = i
        return cands[best]


def choose_shrinkage(folds: list[FoldParts], snaps: list[dict], fold_score
                      ) -> tuple[float, dict]:
    """The per-category thresholds' shrinkage strength λ (:data:`SHRINK_GRID`) whose nested
    figure is highest: each fold scored with its search's raw per-category thresholds (found
    on the other folds) shrunk by λ; ties go to the stronger shrinkage."""
    scores = {}
    for strength in SHRINK_GRID:
        scores[strength] = float(np.mean([
            fold_score(f, reshrunk(s, strength)["category"]) for f, s in zip(folds, snaps)]))
    best = SHRINK_GRID[-1]
    for strength in reversed(SHRINK_GRID):
        if scores[strength] > scores[best] + 1e-12:
            best = strength
    return best, {"chosen": "inf" if np.isinf(best) else best,
                  "nested": {("inf" if np.isinf(k) else str(k)): v for k, v in scores.items()}}


def reshrunk(snap: dict, strength: float) -> dict:
    """A search's snapshots with its per-category thresholds shrunk by ``strength``."""
    g = snap["global"]
    cat = replace(g, category_thr=shrink(g.score_thr, snap["category_raw"], strength))
    return {**snap, "category": cat,
            "attributes": replace(cat, attributes=snap["attributes"].attributes)}


def shrink(global_thr: float, raw: dict[int, tuple[float, int]], strength: float
           ) -> dict[int, float]:
    """Per-category thresholds shrunk toward the global one by their support n:
    ``(n·t_c + λ·t) / (n + λ)``, λ = ``strength`` (``inf``: every category at the global
    threshold); a category left at the global threshold is not listed."""
    out = {}
    for c, (t, n) in sorted(raw.items()):
        v = t if strength == 0 else global_thr if np.isinf(strength) else \
            (n * t + strength * global_thr) / (n + strength)
        v = round(float(v), 4)
        if abs(v - global_thr) > 1e-9:
            out[c] = v
    return out


def ap_iou_f1_score(runs: list[FoldRun], post: PostProcess, labels) -> float:
    from imat_kit.eval.attr_metric import detections_from_predictions
    from imat_kit.postprocess import apply_postprocess

    gt = {"images": [], "annotations": [], "categories": runs[0].gt["categories"]}
    dets = []
    for r in runs:
        gt["images"] += r.gt["images"]
        gt["annotations"] += r.gt["annotations"]
        dets += detections_from_predictions(r.gt, apply_postprocess(r.preds, post))
    res = fashionpedia_eval(gt, dets, attribute_ids=labels.attribute_id_list,
                            attribute_categories=attribute_categories(labels))
    return float(res["iou_f1"]["AP"])
