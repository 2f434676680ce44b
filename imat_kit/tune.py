"""``imat-kit tune``: the post-processing settings of ``submit`` tuned on out-of-fold predictions.

**What is tuned** (the :class:`postprocess.PostProcess` settings): the global score threshold,
a score threshold per category (categories with at least ``min_support`` truths matched at the
defaults; shrunk toward the global one by their support: ``(n·t_c + λ·t) / (n + λ)``, the
strength λ chosen by the nested figure among :data:`SHRINK_GRID`), the mask binarisation
threshold (from the stored soft masks; files without them keep their masks), the minimum mask
area, the maximum instances per image, and for attribute models how attribute sets are decoded
(a global 0.5, the thresholds of ``tune-attributes``, a threshold per (category, attribute)
shrunk toward the attribute's, or the ``k`` most probable attributes, ``k`` per category).
With ``rescore``, a learned re-scorer (:mod:`rescore`, :func:`_rescoring`) too.

**The search** runs over the validation predictions of every given fold pooled (their images
averaged together): coordinate ascent over grids — the score threshold (0.05…0.95 by 0.05), the
cap (1, 2, 3, 5, 10, 20, 30, 50, 75, 100: under the 2020 formula, which ignores false
negatives, one sure prediction per image can be best), the minimum area (0, 10, 20, 50, 100,
200, 400 px) and the mask threshold (as stored, 0.3…0.7) in turn, each over its grid with the
others fixed, until a round changes nothing (at most 3 rounds); then each category's threshold
over the score grid (most supported first); then the attribute decoding (``k`` per category:
the category's median number of attributes in training annotations that never include the
scored images — for the search that scores fold f, fold f's own training split; for the final
settings, every training annotation — moved by coordinate ascent, up to 3 rounds, only for
categories with at least ``min_support`` matched instances). A setting replaces the current one
only when it scores strictly higher. The attribute decoding is chosen by the target metric when
it involves attributes (``competition2020``, ``ap_iou_f1``), else by the attribute micro F1 of
the instances matched at the defaults (what ``evaluate`` reports).

**Scores are exact.** For the competition rules (2019 and 2020) every setting is scored from
IoUs computed once per image and mask variant (pycocotools, on the leftover masks that
:func:`postprocess.kept_instances` — the function ``submit`` writes its rows with — leaves):
where each kept detection has at most one truth it could match (mask IoU ≥ 0.5), greedy matching
by score reduces to "a truth is found at a threshold when some kept detection linked to it
passes it", computed for all images at once; the rare (image, class) groups where a detection
has two candidate truths are matched by the greedy rule itself (:mod:`matching`). So the score
``tune`` reports for its settings is the score of the submission ``submit --postprocess``
writes, scored by ``imat-kit score`` (a test checks it). ``ap_iou_f1`` is scored by
:func:`attr_metric.fashionpedia_eval` on the post-processed predictions of each setting (slower:
no per-category thresholds).

**Honest figure.** For each fold, the whole search is run on the other folds and its settings
are applied to that fold: the nested score, whose mean gain over the defaults (and its spread
over folds) ``tune`` prints as the expected gain. The search's three groups (global settings,
per-category thresholds, attribute decoding) are each kept only when their nested gain is
positive (else left at the defaults, and the output says so); the nested figure reported is
that of the recipe kept. With one fold there is no honest figure, and the output says so.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from imat_kit import rescore as rescore_mod
from imat_kit.data.masks import iou_of, pair_ious, pair_overlaps, score_order
from imat_kit.errors import KitError
from imat_kit.eval.attr_eval import match_instances, tune_thresholds
from imat_kit.eval.attr_metric import (
    F1_TYPES,
    SWEEPS,
    attribute_categories,
    f1_of_counts,
    fashionpedia_eval,
)
from imat_kit.eval.matching import greedy_tp
from imat_kit.eval.metric import FN_RULES, IOU_THRESHOLDS, Instance, truth_instances
from imat_kit.eval.runs import FoldRun
from imat_kit.postprocess import (
    FORMAT,
    AttributeDecoder,
    PostProcess,
    class_leftovers,
    masks_at,
    masks_of,
    thresholds_from,
)
from imat_kit.predictions import label_space
from imat_kit.progress import parallel_map, progress

METRICS = ("competition", "competition2020", "ap_iou_f1")
SCORE_GRID = tuple(float(x) for x in np.round(np.arange(0.05, 0.951, 0.05), 2))
CAP_GRID = (1, 2, 3, 5, 10, 20, 30, 50, 75, 100)
AREA_GRID = (0, 10, 20, 50, 100, 200, 400)
MASK_GRID = (None, 0.3, 0.4, 0.5, 0.6, 0.7)
GROUPS = ("global", "category", "attributes")
#: the per-category thresholds' shrinkage strengths λ the nested figure chooses among
SHRINK_GRID = (0.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, float("inf"))
#: the score grid over re-scored predictions (predicted TP rates: low values matter)
RESCORED_SCORE_GRID = (0.0, 0.01, 0.02, 0.03, 0.04, *SCORE_GRID)
_LINK = 0.5 - 1e-12  # a detection can match a truth only from IoU 0.5 on (both rules)


# --- one image's matches, for one mask variant ----------------------------------------------

def _image_parts(pred, truths: list[Instance], mask_thrs: list, floor: int) -> list[tuple]:
    """:func:`_image_part` at each mask threshold (``None``: as stored), the soft masks
    resampled once for all of them."""
    if pred is None or not len(pred) or mask_thrs == [None]:
        return [_image_part(pred, truths, None, floor)]
    order = score_order(pred.scores)
    rebuilt = masks_at(pred, order, mask_thrs)
    return [_image_part(pred, truths, t, floor, {i: m[k] for i, m in rebuilt.items()})
            for k, t in enumerate(mask_thrs)]


def _image_part(pred, truths: list[Instance], mask_thr: float | None, floor: int,
                masks: dict | None = None, classes: set | None = None) -> tuple:
    """The leftover area of each detection (score order; 0: dropped), whether it shares a
    pixel with a later detection of its class, and its links to the truths of its category
    (IoU ≥ 0.5: arrays of detections, truths and IoUs); groups where a detection has two
    candidate truths are returned whole (kept detections, truths, IoUs) to be matched
    greedily; and the pairs of same-class detections that share a pixel (their indices in the
    image, the earlier first): only their order shapes the rest (:meth:`_Fold._renumbered`).
    ``classes``: those classes only (the others' detections left at area 0, without links)."""
    n = 0 if pred is None else len(pred)
    area = np.zeros(n, np.int64)
    later = np.zeros(n, bool)
    ld, lg, lv = [], [], []
    amb: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    pairs = [np.zeros((0, 2), np.int64)]
    if n:
        order = score_order(pred.scores)
        if masks is None:
            which = (order if classes is None else
                     order[np.isin(pred.labels[order], list(classes))])
            masks = masks_of(pred, which, PostProcess(mask_thr=mask_thr))
        labels = pred.labels[order]
        t_cat = np.array([t.key for t in truths], np.int64)
        size = [pred.height, pred.width]
        # the whole image at once, each text decoded once: which detections of a class touch,
        # their areas and their IoUs with their class's truths (only same-class pairs are
        # measured); only classes with a touching pair are cut, and only the leftovers a cut
        # changed are measured again
        todo = np.flatnonzero(np.isin(labels, list(classes))) if classes is not None \
            else np.arange(n)
        lab = labels[todo]
        rles = [{"size": size, "counts": masks[int(order[r])]} for r in todo]
        truth_rles = [t.rle for t in truths]
        nd = len(rles)
        same_i, same_j = np.triu_indices(nd, 1)
        keep = lab[same_i] == lab[same_j]
        same_i, same_j = same_i[keep], same_j[keep]
        pd, pg = np.nonzero(lab[:, None] == t_cat[None, :])
        inter, sizes = pair_overlaps([r["counts"] for r in rles + truth_rles],
                                     np.concatenate([same_i, pd]),
                                     np.concatenate([same_j, nd + pg]), size)
        touch = np.zeros((nd, nd), bool)
        touch[same_i, same_j] = inter[:same_i.size] > 0
        touch |= touch.T
        ious = np.zeros((nd, len(truths)))
        ious[pd, pg] = iou_of(inter[same_i.size:], sizes[pd], sizes[nd + pg])
        sizes = sizes[:nd].copy()
        upper = np.triu(touch, 1)
        later[todo] = upper.any(axis=1)
        if upper.any():
            ij = np.argwhere(upper)  # the earlier first; by class, then by position
            pairs.append(order[todo[ij[np.argsort(lab[ij[:, 0]], kind="stable")]]])
        kept = sizes >= floor
        npix = pred.height * pred.width
        for c in np.unique(lab[upper.any(axis=1)]).tolist():
            at = np.flatnonzero(lab == c)
            left = class_leftovers([rles[k] for k in at], floor, npix, touch[np.ix_(at, at)],
                                   sizes[at])
            kept[at] = False
            for r, text, a in left:
                k = at[r]
                kept[k], sizes[k] = True, a
                if text is not rles[k]["counts"] and truth_rles:
                    tg = np.flatnonzero(t_cat == c)
                    ious[k, tg] = pair_ious([{"size": size, "counts": text}],
                                            [truth_rles[g] for g in tg])[0]
        area[todo[kept]] = sizes[kept]
        hit = (ious >= _LINK) & (lab[:, None] == t_cat[None, :]) & kept[:, None]
        for c in np.unique(lab[hit.sum(axis=1) >= 2]).tolist():  # matched greedily, whole
            rows = np.flatnonzero(kept & (lab == c))
            tg = np.flatnonzero(t_cat == c)
            amb.append((todo[rows], tg, ious[np.ix_(rows, tg)]))
            hit[lab == c] = False
        d, g = np.nonzero(hit)
        by_class = np.argsort(lab[d], kind="stable")
        d, g = d[by_class], g[by_class]
        ld.append(todo[d])
        lg.append(g)
        lv.append(ious[d, g])
    links = (_cat(ld, np.int64), _cat(lg, np.int64), _cat(lv, np.float64))
    return area, later, links, amb, np.concatenate(pairs).astype(np.int64)


def _cat(xs: list, dtype) -> np.ndarray:
    return np.concatenate(xs).astype(dtype, copy=False) if xs else np.zeros(0, dtype)


def _parts_many(jobs: list, kw: dict) -> list:
    return [_image_parts(p, t, kw["mask_thrs"], kw["floor"]) for p, t in jobs]


def _class_parts_many(jobs: list, kw: dict) -> list:
    """:func:`_image_part` for some classes of each image: ``(pred, truths, classes)``
    jobs."""
    return [_image_part(p, t, kw["mask_thr"], kw["floor"], classes=c) for p, t, c in jobs]


# --- a fold's data, and the views the search scores -----------------------------------------

@dataclass
class _View:
    """Detections (score order within each image), truths and links of a set of images for
    one (mask, min area) variant, flat; ``amb`` the groups matched greedily."""

    n_img: int
    p_img: np.ndarray
    p_label: np.ndarray
    p_score: np.ndarray
    p_area: np.ndarray
    g: np.ndarray  # truths per image
    t_img: np.ndarray
    l_pred: np.ndarray  # links, sorted by truth, then by detection
    l_truth: np.ndarray
    l_iou: np.ndarray
    amb: list  # (image, detections, truths, ious), by image, then by class
    p_src: list  # (the fold's position in tune's list, image_key, index in its line)
    t_src: list  # truth Instance per truth

    @cached_property
    def cum_before(self) -> np.ndarray:
        """The position of each image's first detection."""
        counts = np.bincount(self.p_img, minlength=self.n_img)
        return np.concatenate(([0], np.cumsum(counts)[:-1]))


def _concat(views: list[_View]) -> _View:
    if len(views) == 1:
        return views[0]
    oi = np.cumsum([0] + [v.n_img for v in views])
    op = np.cumsum([0] + [len(v.p_img) for v in views])
    ot = np.cumsum([0] + [len(v.t_img) for v in views])
    cat = np.concatenate
    return _View(
        int(oi[-1]), cat([v.p_img + o for v, o in zip(views, oi)]),
        cat([v.p_label for v in views]), cat([v.p_score for v in views]),
        cat([v.p_area for v in views]), cat([v.g for v in views]),
        cat([v.t_img + o for v, o in zip(views, oi)]),
        cat([v.l_pred + o for v, o in zip(views, op)]),
        cat([v.l_truth + o for v, o in zip(views, ot)]), cat([v.l_iou for v in views]),
        [(i + a, d + b, t + c, x) for v, a, b, c in zip(views, oi, op, ot)
         for i, d, t, x in v.amb],
        [s for v in views for s in v.p_src], [s for v in views for s in v.t_src])


class _Fold:
    """One fold's validation predictions and truths, with its mask variants built on demand.
    A fold made with ``base`` holds the base fold's detections re-scored (same masks, another
    score order): its views are the base's renumbered (:meth:`_renumbered`)."""

    def __init__(self, pos: int, run: FoldRun, truths: dict[str, list[Instance]],
                 workers: int | None, quiet: bool, base: _Fold | None = None) -> None:
        if base is not None and base.base is not None:
            raise ValueError("a re-scored fold's base must be a fold of stored scores")
        self.pos, self.run, self.quiet, self.workers = pos, run, quiet, workers
        self.base = base
        self.class_parts: dict = {}  # (mask_thr, floor, image, class, order) → its part
        self.reordered_anew = 0  # images whose parts a re-scored order made compute anew
        self.keys = [im["image_key"] for im in run.gt["images"]]
        self.truths = truths
        self.has_soft = all(p.soft is not None for p in run.preds.values()) and bool(run.preds)
        img, lab, sc, js, src = [], [], [], [], []
        for i, k in enumerate(self.keys):
            p = run.preds.get(k)
            if p is None or not len(p):
                continue
            o = score_order(p.scores)
            img.append(np.full(len(o), i))
            lab.append(p.labels[o])
            sc.append(p.scores[o].astype(np.float64))
            js.append(o)
            src.extend((pos, k, int(j)) for j in o)
        self.p_img, self.p_label = _cat(img, np.int64), _cat(lab, np.int64)
        self.p_score, self.p_src = _cat(sc, np.float64), src
        t_img, t_src = [], []
        for i, k in enumerate(self.keys):
            for t in truths.get(k, []):
                t_img.append(i)
                t_src.append(t)
        self.t_img = np.asarray(t_img, np.int64)
        self.t_src = t_src
        self.g = np.bincount(self.t_img, minlength=len(self.keys))
        self.t_off = np.concatenate(([0], np.cumsum(self.g)))
        self.p_off = np.concatenate(([0], np.cumsum(np.bincount(self.p_img,
                                                                minlength=len(self.keys)))))
        # a detection's "origin": its image's first position + its index in the image's line
        # (the same in every score order); ``at``: the origin's position in this fold
        self.origin = self.p_off[self.p_img] + _cat(js, np.int64)
        self.at = np.empty_like(self.origin)
        self.at[self.origin] = np.arange(len(self.origin))
        self._parts: dict = {}  # mask_thr → each image's part at 1 px (until its view exists)
        self._views: dict = {}  # (mask_thr, floor) → (view, each detection's "later" flag)
        self._pairs: dict = {}  # mask_thr → touching same-class pairs (origins, earlier first)
        self.iou_seconds = 0.0

    def _compute(self, fn, jobs: list, kw: dict, desc: str | None = None) -> list:
        t0 = time.perf_counter()
        out = parallel_map(fn, jobs, kw, workers=self.workers, quiet=self.quiet or not desc,
                           desc=desc or "")
        self.iou_seconds += time.perf_counter() - t0
        return out

    def _parts_for(self, mask_thr: float | None) -> list:
        """Each image's part at 1 px: every soft threshold at once (the soft masks resampled
        once)."""
        if mask_thr not in self._parts:
            jobs = [(self.run.preds.get(k), self.truths.get(k, [])) for k in self.keys]
            thrs = [mask_thr] if mask_thr is None else [t for t in MASK_GRID if t is not None]
            if mask_thr not in thrs:
                thrs.append(mask_thr)
            thrs = [t for t in thrs if (t, 1) not in self._views]
            per = self._compute(_parts_many, jobs, {"mask_thrs": thrs, "floor": 1},
                                desc=f"tune: masks of fold {self.run.fold}")
            for k, t in enumerate(thrs):
                self._parts[t] = [p[k] for p in per]
        return self._parts[mask_thr]

    def view(self, mask_thr: float | None, floor: int) -> _View:
        return self._view(mask_thr, max(floor, 1))[0]

    def _view(self, mask_thr: float | None, floor: int) -> tuple[_View, np.ndarray]:
        key = (mask_thr, floor)
        if key not in self._views:
            if self.base is not None:
                made = self._renumbered(mask_thr, floor)
            elif floor > 1:
                made = self._floored(mask_thr, floor)
            else:
                made = self._of_parts(mask_thr, self._parts_for(mask_thr))
                del self._parts[mask_thr]
            self._views[key] = made
        return self._views[key]

    def _assemble(self, area, later, lp, lt, li, amb: list) -> tuple[_View, np.ndarray]:
        o = np.lexsort((lp, lt))
        amb.sort(key=lambda grp: (grp[0], int(self.p_label[grp[1][0]])))
        return _View(len(self.keys), self.p_img, self.p_label, self.p_score,
                     area.astype(np.int64), self.g, self.t_img, lp[o], lt[o], li[o], amb,
                     self.p_src, self.t_src), later

    def _flat(self, images, parts: list) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
        """The links (detections, truths, IoUs) and groups of some images' parts, from each
        image's numbering to the fold's."""
        at_img = np.repeat(np.asarray(images, np.int64),
                           np.array([len(p[2][0]) for p in parts], np.int64))
        lp = _cat([p[2][0] for p in parts], np.int64) + self.p_off[at_img]
        lt = _cat([p[2][1] for p in parts], np.int64) + self.t_off[at_img]
        amb = [(i, self.p_off[i] + rows, self.t_off[i] + tg, ious)
               for i, p in zip(images, parts) for rows, tg, ious in p[3]]
        return lp, lt, _cat([p[2][2] for p in parts], np.float64), amb

    def _of_parts(self, mask_thr: float | None, parts: list) -> tuple[_View, np.ndarray]:
        n_pairs = np.array([len(p[4]) for p in parts], np.int64)
        pairs = (np.concatenate([p[4] for p in parts]) if parts else np.zeros((0, 2), np.int64)
                 ) + np.repeat(self.p_off[:-1], n_pairs)[:, None]
        self._pairs[mask_thr] = (pairs[:, 0], pairs[:, 1])
        return self._assemble(_cat([p[0] for p in parts], np.int64),
                              _cat([p[1] for p in parts], bool),
                              *self._flat(range(len(parts)), parts))

    def _spliced(self, view: _View, area, later, images: list, parts: list
                 ) -> tuple[_View, np.ndarray]:
        """``view`` with the leftovers, links and groups of some images replaced by their
        ``parts`` (computed anew, in this fold's order)."""
        gone = np.zeros(len(self.keys), bool)
        gone[images] = True
        keep = ~gone[view.t_img[view.l_truth]]
        for i, (a, lat, *_) in zip(images, parts):
            area[self.p_off[i]:self.p_off[i + 1]] = a
            later[self.p_off[i]:self.p_off[i + 1]] = lat
        lp, lt, li, amb = self._flat(images, parts)
        return self._assemble(area, later, np.concatenate((view.l_pred[keep], lp)),
                              np.concatenate((view.l_truth[keep], lt)),
                              np.concatenate((view.l_iou[keep], li)),
                              [grp for grp in view.amb if not gone[grp[0]]] + amb)

    def _floored(self, mask_thr: float | None, floor: int) -> tuple[_View, np.ndarray]:
        """The view at a min area: it only changes an image where a detection it drops shares
        pixels with a later one of its class (those images computed anew); elsewhere the
        variant is the one at 1 px with the small ones dropped."""
        view, later = self._view(mask_thr, 1)
        small = (view.p_area > 0) & (view.p_area < floor)
        redo = np.unique(view.p_img[small & later]).tolist()
        parts = self._compute(_parts_many, [(self.run.preds.get(self.keys[i]),
                                             self.truths.get(self.keys[i], []))
                                            for i in redo],
                              {"mask_thrs": [mask_thr], "floor": floor})
        return self._spliced(view, np.where(small, 0, view.p_area), later.copy(), redo,
                             [p[0] for p in parts])

    def _renumbered(self, mask_thr: float | None, floor: int) -> tuple[_View, np.ndarray]:
        """The view of a re-scored fold, from its base's at the same variant: the leftovers,
        links and groups of an (image, class) whose touching detections keep their order are
        the base's (only touching detections' order shapes them, the min area's drops
        included), renumbered to the new order (all at once); a class where two touching
        detections swap places is taken from the base's cache when another re-scoring met the
        same order, else computed anew (and cached)."""
        base = self.base
        view, base_later = base._view(mask_thr, floor)
        first, second = base._pairs[mask_thr]
        moved = self.at[base.origin]  # a detection's position in the base → here
        area = np.empty_like(view.p_area)
        area[moved] = view.p_area
        later = np.empty_like(base_later)
        later[moved] = base_later
        n_cls = int(self.p_label.max()) + 1 if len(self.p_label) else 1
        cls_key = self.p_img * n_cls + self.p_label
        flip = self.at[first] > self.at[second]
        swapped = np.isin(cls_key, cls_key[self.at[first[flip]]])
        lp = moved[view.l_pred]
        keep = ~swapped[lp]
        lps, lts, lis = [lp[keep]], [view.l_truth[keep]], [view.l_iou[keep]]
        amb = []
        for i, rows, tg, ious in view.amb:
            r = moved[rows]
            if not swapped[r[0]]:
                s = np.argsort(r, kind="stable")
                amb.append((i, r[s], tg, ious[s]))
        area[swapped] = 0
        later[swapped] = False
        pos = np.flatnonzero(swapped)
        pos = pos[np.argsort(cls_key[pos], kind="stable")]
        entries, missing = [], {}
        for grp in np.split(pos, np.flatnonzero(np.diff(cls_key[pos])) + 1) if pos.size else []:
            i, c = int(self.p_img[grp[0]]), int(self.p_label[grp[0]])
            origins = self.origin[grp] - self.p_off[i]
            hit = base.class_parts.get((mask_thr, floor, i, c, tuple(origins.tolist())))
            if hit is None:
                missing.setdefault(i, set()).add(c)
            else:
                entries.append((i, hit))
        redo = sorted(missing)
        fresh = self._compute(_class_parts_many,
                              [(self.run.preds.get(self.keys[i]),
                                self.truths.get(self.keys[i], []), missing[i]) for i in redo],
                              {"mask_thr": mask_thr, "floor": floor})
        for i, (a, lat, (d, g, v), groups, _) in zip(redo, fresh):
            sl = slice(self.p_off[i], self.p_off[i + 1])
            order, lab = self.origin[sl] - self.p_off[i], self.p_label[sl]
            for c in sorted(missing[i]):
                mine, link = np.flatnonzero(lab == c), lab[d] == c
                entry = (order[mine], a[mine], lat[mine], order[d[link]], g[link], v[link],
                         [(order[rows], tg, ious) for rows, tg, ious in groups
                          if lab[rows[0]] == c])
                base.class_parts[(mask_thr, floor, i, c, tuple(entry[0].tolist()))] = entry
                entries.append((i, entry))
        for i, (idx, c_area, c_later, d, g, v, groups) in entries:
            o, ot = self.p_off[i], self.t_off[i]
            area[self.at[o + idx]] = c_area
            later[self.at[o + idx]] = c_later
            lps.append(self.at[o + d])
            lts.append(ot + g)
            lis.append(v)
            amb += [(i, self.at[o + rows], ot + tg, ious) for rows, tg, ious in groups]
        self.reordered_anew += len(redo)
        return self._assemble(area, later, _cat(lps, np.int64), _cat(lts, np.int64),
                              _cat(lis, np.float64), amb)


# --- scoring a setting ------------------------------------------------------------------------

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


def _f1_of(pred_sets: list, truth_sets: list, a: int, kind: str) -> np.ndarray:
    """Attribute F1 of each (prediction set, truth set) pair, as :func:`attr_metric.pairwise_f1`
    computes it for one pair (``binary_macro`` over the A-long vectors, or ``positive``)."""
    tp = np.array([len(set(p) & set(t)) for p, t in zip(pred_sets, truth_sets)], np.float64)
    n_p = np.array([len(p) for p in pred_sets], np.float64)
    n_t = np.array([len(t) for t in truth_sets], np.float64)
    return f1_of_counts(tp, n_p, n_t, a, kind)


def _pred_sets(view: _View, folds: dict, idx, decoder: AttributeDecoder) -> list:
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


class _Scorer:
    """Scores settings on a view: the link patterns (which thresholds each link passes) are
    built once per rule and attribute decoding."""

    def __init__(self, view: _View, rule: Rule, decoder: AttributeDecoder | None,
                 folds: dict[int, _Fold]) -> None:
        self.v, self.rule = view, rule
        ti, tf = rule.pairs()
        self.p = len(ti)
        if rule.year == 2019:
            self.pat = view.l_iou[:, None] >= ti[None, :] - 1e-12
            self.amb = [(i, d, ious, ious[None, :, :] >= ti[:, None, None] - 1e-12, {})
                        for i, d, t, ious in view.amb]
            return
        a = len(rule.attribute_ids)

        def sets(idx: np.ndarray) -> list:
            return _pred_sets(view, folds, idx, decoder)

        t_sets = [tuple(view.t_src[t].attributes) for t in view.l_truth.tolist()]
        f1 = _f1_of(sets(view.l_pred), t_sets, a, rule.f1)
        needs = np.array([bool(s) for s in t_sets], bool)
        self.pat = (view.l_iou[:, None] > ti[None, :]) & (
            ~needs[:, None] | (f1[:, None] > tf[None, :]))
        self.amb = []
        for i, d, t, ious in view.amb:
            ps = sets(d)
            ts = [tuple(view.t_src[g].attributes) for g in t.tolist()]
            f = _f1_of([x for x in ps for _ in ts], [y for _ in ps for y in ts], a,
                       rule.f1).reshape(len(ps), len(ts))
            nd = np.array([bool(s) for s in ts], bool)
            allowed = (ious[None, :, :] > ti[:, None, None]) & (
                ~nd[None, None, :] | (f[None, :, :] > tf[:, None, None]))
            self.amb.append((i, d, ious, allowed, {}))

    def subset(self, images: np.ndarray) -> _Scorer:
        """The same scorer over some images only (``images``: sorted image indices): each
        image's score depends on that image alone."""
        v = self.v
        im = np.zeros(v.n_img, bool)
        im[images] = True
        new_img = np.cumsum(im) - 1
        pm, tm = im[v.p_img], im[v.t_img]
        new_p, new_t = np.cumsum(pm) - 1, np.cumsum(tm) - 1
        lk = pm[v.l_pred]
        sub = _View(int(im.sum()), new_img[v.p_img[pm]], v.p_label[pm], v.p_score[pm],
                    v.p_area[pm], v.g[im], new_img[v.t_img[tm]], new_p[v.l_pred[lk]],
                    new_t[v.l_truth[lk]], v.l_iou[lk], [], [], [])
        out = object.__new__(_Scorer)
        out.v, out.rule, out.p = sub, self.rule, self.p
        out.pat = self.pat[lk]
        out.amb = [(int(new_img[i]), new_p[d], ious, allowed, done)
                   for i, d, ious, allowed, done in self.amb if im[i]]
        return out

    def image_scores(self, thr: np.ndarray, cap: int) -> tuple[np.ndarray, np.ndarray]:
        """Per image: the score (mean over the thresholds of TP / (TP + FP + FN), or with the
        rule's ``fn`` ``ignore`` TP / (TP + FP) and 0 without detections) and whether it counts
        (something predicted or true), at per-category thresholds ``thr`` (indexed by category
        id) and the cap."""
        v = self.v
        kept = v.p_score >= thr[v.p_label]
        c = np.cumsum(kept)
        before = c - kept
        rank = before - (np.concatenate(([0], c))[v.cum_before])[v.p_img]
        kept &= (rank < cap) & (v.p_area > 0)
        k = np.bincount(v.p_img[kept], minlength=v.n_img)
        tp = np.zeros((v.n_img, self.p), np.int64)
        sel = np.flatnonzero(kept[v.l_pred])
        if sel.size:
            tr = v.l_truth[sel]
            starts = np.flatnonzero(np.concatenate(([True], tr[1:] != tr[:-1])))
            cov = np.logical_or.reduceat(self.pat[sel], starts, axis=0).astype(np.int64)
            imgs = v.t_img[tr[starts]]
            istarts = np.flatnonzero(np.concatenate(([True], imgs[1:] != imgs[:-1])))
            tp[imgs[istarts]] = np.add.reduceat(cov, istarts, axis=0)
        no_thr = np.full(self.p, -1.0)
        for i, d, ious, allowed, done in self.amb:  # matched greedily: once per kept set
            on = kept[d]
            key = on.tobytes()
            got = done.get(key)
            if got is None:
                rows = np.flatnonzero(on)
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


# --- the search ------------------------------------------------------------------------------

class _Search:
    """The search over some folds (pooled), with the caches it needs."""

    def __init__(self, folds: list[_Fold], metric: str, rule: Rule, labels, *,
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

    def scorer(self, mask_thr, floor, decoder) -> _Scorer:
        key = (mask_thr, max(floor, 1),
               None if self.rule.year == 2019 else json.dumps(decoder.as_dict(), sort_keys=True))
        if key not in self._scorers:
            view = _concat([f.view(mask_thr, floor) for f in self.folds])
            self._scorers[key] = _Scorer(view, self.rule, decoder,
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
            return _ap_iou_f1([f.run for f in self.folds], post, self.labels)
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
        v = sc.v
        kept = v.p_score >= PostProcess().score_thr
        found = np.zeros(len(v.t_img), bool)
        sel = np.flatnonzero(kept[v.l_pred] & (v.l_iou >= _LINK))
        found[v.l_truth[sel]] = True
        cats = np.array([t.key for t in v.t_src], np.int64)
        out = np.bincount(cats[found], minlength=self.n_cat) if found.any() else \
            np.zeros(self.n_cat, np.int64)
        for _, _, t, ious in v.amb:
            out[cats[t[0]]] += int((ious.max(0) >= _LINK).sum())
        return {c: int(n) for c, n in enumerate(out) if n}

    def _categories(self, post: PostProcess) -> PostProcess:
        support = self._support()
        cats = sorted((c for c, n in support.items() if n >= self.min_support),
                      key=lambda c: (-support[c], c))
        if not cats:
            return post
        sc = self.scorer(post.mask_thr, post.min_area, post.attributes)
        v = sc.v
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


def _choose_shrinkage(folds: list[_Fold], snaps: list[dict], fold_score
                      ) -> tuple[float, dict]:
    """The per-category thresholds' shrinkage strength λ (:data:`SHRINK_GRID`) whose nested
    figure is highest: each fold scored with its search's raw per-category thresholds (found
    on the other folds) shrunk by λ; ties go to the stronger shrinkage."""
    scores = {}
    for strength in SHRINK_GRID:
        scores[strength] = float(np.mean([
            fold_score(f, _reshrunk(s, strength)["category"]) for f, s in zip(folds, snaps)]))
    best = SHRINK_GRID[-1]
    for strength in reversed(SHRINK_GRID):
        if scores[strength] > scores[best] + 1e-12:
            best = strength
    return best, {"chosen": "inf" if np.isinf(best) else best,
                  "nested": {("inf" if np.isinf(k) else str(k)): v for k, v in scores.items()}}


def _reshrunk(snap: dict, strength: float) -> dict:
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


def _pairs(runs: list[FoldRun]) -> list[tuple[int, dict, set]]:
    """(category, probabilities, truth set) of the instances matched at the defaults."""
    out = []
    for run in runs:
        matched, _ = match_instances(run.gt, run.preds, score_thr=PostProcess().score_thr)
        out.extend((int(a["category_id"]), p.attr_probs[j] if p.attr_probs else {},
                    set(a.get("attribute_ids", []))) for p, j, a in matched)
    return out


def matched_micro_f1(runs: list[FoldRun], decoder: AttributeDecoder) -> float:
    """Attribute micro F1 over the instances matched at the defaults (as ``evaluate``'s
    ``attr_micro_f1``), attribute sets decoded by ``decoder``."""
    tp = fp = fn = 0
    for c, probs, truth in _pairs(runs):
        mine = set(decoder.decode(c, probs))
        tp += len(mine & truth)
        fp += len(mine - truth)
        fn += len(truth - mine)
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")


def median_attributes(coco: dict) -> dict[int, int]:
    """Each category's median number of attributes per instance in a COCO truth (the
    per-category prior's k)."""
    per: dict[int, list] = {}
    for a in coco["annotations"]:
        per.setdefault(int(a["category_id"]), []).append(len(a.get("attribute_ids", [])))
    return {c: int(np.median(v)) for c, v in per.items()}


def tune_topk(runs: list[FoldRun], *, start: dict[int, int] | None = None, rounds: int = 3,
              k_max: int = 20, min_support: int = 1) -> dict[int, int]:
    """``k`` per category for top-k attribute decoding. It starts from ``start`` (each
    category's median number of attributes in training annotations that exclude the scored
    images: the per-category prior's k; default, these folds' validation truth); categories
    with at least ``min_support`` matched instances then move it by coordinate ascent on the
    micro F1 of the matched instances of these folds (the others keep the median: a k fitted
    on a handful of instances fits their noise)."""
    pairs = _pairs(runs)
    by_cat: dict[int, list] = {}
    for c, probs, truth in pairs:
        ranked = [a for a, _ in sorted(probs.items(), key=lambda kv: (-kv[1], kv[0]))]
        by_cat.setdefault(c, []).append((ranked, truth))
    counts = {}  # category → (k_max + 1) × 3 (TP, FP, FN) at each k
    for c, items in by_cat.items():
        arr = np.zeros((k_max + 1, 3), np.int64)
        for ranked, truth in items:
            for k in range(k_max + 1):
                mine = set(ranked[:k])
                tp = len(mine & truth)
                arr[k] += (tp, len(mine) - tp, len(truth) - tp)
        counts[c] = arr
    k = {c: min(int((start or {}).get(c, np.median([len(t) for _, t in by_cat[c]]))), k_max)
         for c in by_cat}
    if start:
        k.update({c: min(int(v), k_max) for c, v in start.items() if c not in k})
    total = sum(counts[c][k[c]] for c in by_cat) if by_cat else np.zeros(3, np.int64)

    def f1(t: np.ndarray) -> float:
        return 2 * t[0] / (2 * t[0] + t[1] + t[2]) if t.sum() else 0.0

    for _ in range(rounds):
        changed = False
        for c in sorted(by_cat):
            if len(by_cat[c]) < min_support:
                continue
            rest = total - counts[c][k[c]]
            vals = [f1(rest + counts[c][j]) for j in range(k_max + 1)]
            j = int(np.argmax(vals))
            if vals[j] > f1(total) + 1e-12:
                k[c], total, changed = j, rest + counts[c][j], True
        if not changed:
            break
    return {c: int(v) for c, v in sorted(k.items())}


def tune_pair_thresholds(runs: list[FoldRun], base, *, min_support: int = 20
                         ) -> dict[tuple[int, int], float]:
    """A threshold per (category, attribute) pair: the F1-optimal one over the pair's matched
    instances (``attr_eval``'s rule), shrunk toward the attribute's threshold in ``base`` by
    the pair's support n (its truths among those instances): (n·t_pair + λ·t_attribute) /
    (n + λ), λ = ``min_support`` — a rare pair moves little, so it does not fit noise. Pairs
    without a truth, or whose shrunk threshold equals the attribute's, are left out."""
    from imat_kit.eval.attr_eval import _best_threshold

    floor = max((float(r.head.get("attribute_floor") or 0.0) for r in runs), default=0.0)
    by_pair: dict[tuple[int, int], tuple[list, list]] = {}
    for c, probs, truth in _pairs(runs):
        for a in set(probs) | truth:
            ps, ys = by_pair.setdefault((c, int(a)), ([], []))
            ps.append(float(probs.get(a, 0.0)))
            ys.append(a in truth)
    out = {}
    for (c, a), (ps, ys) in sorted(by_pair.items()):
        y = np.asarray(ys, bool)
        n = int(y.sum())
        if not n:
            continue
        thr, _ = _best_threshold(np.asarray(ps), y, floor)
        if np.isnan(thr):
            continue
        t_a = base.of(a)
        t = round(float((n * thr + min_support * t_a) / (n + min_support)), 6)
        if abs(t - t_a) > 1e-9:
            out[(c, a)] = t
    return out


def _ap_iou_f1(runs: list[FoldRun], post: PostProcess, labels) -> float:
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


# --- learned re-scoring (tune --rescore) ------------------------------------------------------

def tp_rates(sc: _Scorer) -> np.ndarray:
    """Each detection's TP rate on the scorer's view with every detection kept: the share of
    the rule's thresholds at which greedy matching by score makes it a true positive
    (:mod:`rescore`'s target). A detection linked to one truth is a TP at t when it passes t
    and no earlier detection linked to that truth does; the groups where a detection has two
    candidate truths are matched by the greedy rule itself."""
    v = sc.v
    hits = np.zeros(len(v.p_img), np.int64)
    if len(v.l_pred):
        pat = sc.pat.astype(np.int64)
        tr = v.l_truth
        starts = np.flatnonzero(np.concatenate(([True], tr[1:] != tr[:-1])))
        group = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(tr))))
        cum = np.cumsum(pat, axis=0)
        before = cum - pat - (cum[starts] - pat[starts])[group]
        np.add.at(hits, v.l_pred, ((pat == 1) & (before == 0)).sum(axis=1))
    for _, rows, ious, allowed, _ in sc.amb:
        for p in range(allowed.shape[0]):
            free = np.ones(ious.shape[1], bool)
            for r in range(len(rows)):
                ok = free & allowed[p, r]
                if ok.any():
                    free[int(np.where(ok, ious[r], -1.0).argmax())] = False
                    hits[rows[r]] += 1
    return hits / sc.p


@dataclass
class _Rescoring:
    """One fold's re-scoring data, rows in the fold's flat order: the image features, the TP
    rates, the categories, and (category, F1) of the detections linked to a truth with
    attributes (IoU ≥ 0.5)."""

    x: np.ndarray
    y: np.ndarray
    labels: np.ndarray
    f1_labels: np.ndarray
    f1: np.ndarray

    @classmethod
    def of(cls, fold: _Fold, rule: Rule, n_attributes: int) -> _Rescoring:
        view = fold.view(None, 1)
        sc = _Scorer(view, rule, AttributeDecoder(), {fold.pos: fold})
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
                f1 = _f1_of(_pred_sets(view, {fold.pos: fold}, view.l_pred[has],
                                       AttributeDecoder()),
                            [tuple(t.attributes) for t in truths], n_attributes, rule.f1)
        return cls(x, tp_rates(sc), view.p_label.copy(), f1_labels, f1)


def _fit_rescorer(parts: list[_Rescoring], target: str, seed: int):
    tables = rescore_mod.Tables.fit(np.concatenate([d.labels for d in parts]),
                                    np.concatenate([d.y for d in parts]),
                                    np.concatenate([d.f1_labels for d in parts]),
                                    np.concatenate([d.f1 for d in parts]))
    x = np.vstack([np.hstack([d.x, tables.columns(d.labels)]) for d in parts])
    return rescore_mod.fit(x, np.concatenate([d.y for d in parts]), tables, target=target,
                           seed=seed)


def _rescore_search(folds: list[_Fold], start: PostProcess, metric: str, rule: Rule, labels,
                    min_support: int, quiet: bool) -> PostProcess:
    """The settings over re-scored folds: from ``start`` (the search's settings without
    re-scoring) without per-category thresholds (the model knows the category), the score
    threshold and the cap searched again."""
    srch = _Search(folds, metric, rule, labels, min_support=min_support, groups=("global",),
                   quiet=quiet, fields=("score_thr", "max_per_image"))
    return srch.run(replace(start, category_thr={}))["global"]


def _rescoring(folds: list[_Fold], nested_posts: list[PostProcess] | None, final: PostProcess,
               metric: str, rule: Rule, labels, *, min_support: int, quiet: bool, seed: int,
               fold_score, without: list[float] | None = None
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
    parts = {f.pos: _Rescoring.of(f, target_rule, n_attr)
             for f in progress(folds, desc="tune: re-scoring targets and features",
                               quiet=quiet, unit="fold")}
    timing = {"targets_features": time.perf_counter() - t0, "fit": 0.0, "search": 0.0,
              "score": 0.0}

    def rescored(f: _Fold, model) -> _Fold:
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
        made.append(_Fold(f.pos, f.run.with_preds(preds), f.truths, f.workers, True, base=f))
        return made[-1]

    made: list[_Fold] = []

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
            model = _fit_rescorer([parts[g.pos] for g in others], target, seed)
            t2 = time.perf_counter()
            post = _rescore_search([rescored(g, model) for g in others], start, metric, rule,
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
    model = _fit_rescorer(list(parts.values()), target, seed)
    timing["fit"] += time.perf_counter() - t1
    report["kept"] = kept
    report["model"] = model.summary()
    settings, in_sample = None, {}
    if kept:
        every = [rescored(f, model) for f in folds]
        settings = replace(_rescore_search(every, final, metric, rule, labels, min_support,
                                           True), rescore=model)
        plain = replace(settings, rescore=None)
        in_sample = {f.pos: fold_score(r, plain) for f, r in zip(folds, every)}
        in_sample["pooled"] = _Search(every, metric, rule, labels, min_support=1, groups=(),
                                      quiet=True).score(plain)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    report["seconds_by_part"] = {k: round(v, 2) for k, v in timing.items()}
    report["images_reordered"] = int(sum(len(f.keys) for f in made))
    report["images_recomputed"] = int(sum(f.reordered_anew for f in made))
    return report, settings, in_sample


# --- the command -----------------------------------------------------------------------------

def _k_start(run: FoldRun | None, runs: list[FoldRun] = ()) -> dict[int, int] | None:
    """Top-k's start for settings that will score ``run``: the medians of its fold's training
    annotations (which exclude it); for the final settings (``run`` None), of every training
    annotation of the data the ``runs`` came from. Read, reduced to medians and let go (the
    annotations of real data take gigabytes); ``None`` for runs built in memory."""
    from imat_kit.data.paths import read_ann

    if run is not None:
        if run._train_gt is not None:
            return median_attributes(run._train_gt)
        return median_attributes(read_ann(run.data, "train", run.fold)) if run.data else None
    data = next((r.data for r in runs if r.data is not None), None)
    return median_attributes(read_ann(data, "all")) if data is not None else None


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
        fold = _Fold(i, run, truths[i] if truths else truths_of(run), workers, quiet)
        out.append(_Search([fold], metric, rule, labels, min_support=1, groups=(),
                           quiet=quiet).score(post))
    return out


def tune(runs: list[FoldRun], labels, *, metric: str = "competition", min_support: int = 20,
         workers: int | None = None, quiet: bool = False, data: str | Path | None = None,
         fn: str = "ignore", rescore: bool = False, seed: int = 0) -> dict:
    """The ``imat-kit tune`` search (module doc) over validation runs: the postprocess file's
    content. ``fn``: the 2020 rule's (``competition2020``). ``rescore``: also fit a re-scorer
    (:mod:`rescore`, fitted with ``seed``) and keep it where its nested gain is positive
    (:func:`_rescoring`); the file then holds the model under ``"rescore"``."""
    t0 = time.perf_counter()
    rule = rule_of(metric, labels, fn=fn)
    if min_support < 1:
        raise KitError("--min-support must be at least 1", value=min_support)
    if metric == "ap_iou_f1" and not any(r.attributes for r in runs):
        raise KitError("ap_iou_f1 needs predictions with attributes (an attribute model)",
                       file=runs[0].file, row=1)
    folds = [_Fold(i, r, truths_of(r), workers, quiet) for i, r in enumerate(runs)]
    defaults = PostProcess()

    searches: list[_Search] = []
    lam: list[float | None] = [None]  # the shrinkage strength, once the nested figure chose it

    def search(fs: list[_Fold], groups=GROUPS, k_start: dict | None = None) -> _Search:
        for old in searches:  # a finished search's pooled views are not needed again
            old._scorers.clear()
        searches.append(_Search(fs, metric, rule, labels, min_support=min_support,
                                groups=groups, quiet=quiet, k_start=k_start,
                                shrinkage=lam[0]))
        return searches[-1]

    def fold_score(f: _Fold, post: PostProcess) -> float:
        return search([f], ()).score(post)

    attr = any(r.attributes for r in runs)
    starts = {f.pos: _k_start(f.run) for f in folds} if attr else {}
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
            lam[0], shrinkage = _choose_shrinkage(folds, snaps, fold_score)
            snaps = [_reshrunk(s, lam[0]) for s in snaps]
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
    final_search = search(folds, tuple(kept), k_start=_k_start(None, runs) if attr else None)
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
        rescoring, settings, fits = _rescoring(
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
