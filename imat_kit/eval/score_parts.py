"""The exact, vectorised competition score behind ``imat-kit tune``, part 1: each image's
matches computed once per mask variant, flattened over a fold.

For every image and mask variant (the masks as stored, or rebuilt from the soft masks at a
threshold of :data:`MASK_GRID`) :func:`image_part` computes, on the leftover masks
:func:`imat_kit.postprocess.kept_instances` leaves (the function ``submit`` writes its rows
with), each detection's leftover area, whether it touches a later detection of its class, and
its links to the truths of its category (mask IoU ≥ 0.5). Where a detection has two candidate
truths the (image, class) group is kept whole, to be matched by the greedy rule itself.
:class:`FoldParts` holds one fold's parts as flat arrays (:class:`FlatView`), builds the views
at a minimum area from those at 1 px, and those of a re-scored fold from its base fold's
(only the order of touching detections shapes them). :mod:`imat_kit.eval.fast_score` scores
settings on the views; ``tests/test_tune.py`` checks the scores equal the reference metric
(:mod:`imat_kit.eval.metric`, :mod:`imat_kit.eval.attr_metric`) on the submission itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from imat_kit.data.masks import iou_of, pair_ious, pair_overlaps, score_order
from imat_kit.eval.metric import Instance
from imat_kit.eval.runs import FoldRun
from imat_kit.postprocess import PostProcess, class_leftovers, masks_at, masks_of
from imat_kit.progress import parallel_map

#: the mask thresholds (None: as stored) a fold's parts are computed for, all at once (the
#: soft masks resampled once): the tuner's grid
MASK_GRID = (None, 0.3, 0.4, 0.5, 0.6, 0.7)
LINK_IOU = 0.5 - 1e-12  # a detection can match a truth only from IoU 0.5 on (both rules)


# --- one image's matches, for one mask variant ----------------------------------------------

def image_parts(pred, truths: list[Instance], mask_thrs: list, floor: int) -> list[tuple]:
    """:func:`image_part` at each mask threshold (``None``: as stored), the soft masks
    resampled once for all of them."""
    if pred is None or not len(pred) or mask_thrs == [None]:
        return [image_part(pred, truths, None, floor)]
    order = score_order(pred.scores)
    rebuilt = masks_at(pred, order, mask_thrs)
    return [image_part(pred, truths, t, floor, {i: m[k] for i, m in rebuilt.items()})
            for k, t in enumerate(mask_thrs)]


def image_part(pred, truths: list[Instance], mask_thr: float | None, floor: int,
               masks: dict | None = None, classes: set | None = None) -> tuple:
    """The leftover area of each detection (score order; 0: dropped), whether it shares a
    pixel with a later detection of its class, and its links to the truths of its category
    (IoU ≥ 0.5: arrays of detections, truths and IoUs); groups where a detection has two
    candidate truths are returned whole (kept detections, truths, IoUs) to be matched
    greedily; and the pairs of same-class detections that share a pixel (their indices in the
    image, the earlier first): only their order shapes the rest (:meth:`FoldParts._renumbered`).
    ``classes``: those classes only (the others' detections left at area 0, without links)."""
    n = 0 if pred is None else len(pred)
    area = np.zeros(n, np.int64)
    later = np.zeros(n, bool)
    link_dets, link_truths, link_ious = [], [], []
    greedy_groups: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    pairs = [np.zeros((0, 2), np.int64)]
    if n:
        order = score_order(pred.scores)
        if masks is None:
            which = (order if classes is None else
                     order[np.isin(pred.labels[order], list(classes))])
            masks = masks_of(pred, which, PostProcess(mask_thr=mask_thr))
        labels = pred.labels[order]
        truth_class = np.array([t.key for t in truths], np.int64)
        size = [pred.height, pred.width]
        # the whole image at once, each text decoded once: which detections of a class touch,
        # their areas and their IoUs with their class's truths (only same-class pairs are
        # measured); only classes with a touching pair are cut, and only the leftovers a cut
        # changed are measured again
        in_classes = np.flatnonzero(np.isin(labels, list(classes))) if classes is not None \
            else np.arange(n)
        det_class = labels[in_classes]
        rles = [{"size": size, "counts": masks[int(order[r])]} for r in in_classes]
        truth_rles = [t.rle for t in truths]
        n_dets = len(rles)
        same_i, same_j = np.triu_indices(n_dets, 1)
        keep = det_class[same_i] == det_class[same_j]
        same_i, same_j = same_i[keep], same_j[keep]
        pair_dets, pair_truths = np.nonzero(det_class[:, None] == truth_class[None, :])
        inter, sizes = pair_overlaps([r["counts"] for r in rles + truth_rles],
                                     np.concatenate([same_i, pair_dets]),
                                     np.concatenate([same_j, n_dets + pair_truths]), size)
        touch = np.zeros((n_dets, n_dets), bool)
        touch[same_i, same_j] = inter[:same_i.size] > 0
        touch |= touch.T
        ious = np.zeros((n_dets, len(truths)))
        ious[pair_dets, pair_truths] = iou_of(inter[same_i.size:], sizes[pair_dets],
                                              sizes[n_dets + pair_truths])
        sizes = sizes[:n_dets].copy()
        upper = np.triu(touch, 1)
        later[in_classes] = upper.any(axis=1)
        if upper.any():
            touching_pair = np.argwhere(upper)  # the earlier first; by class, then by position
            by_class = np.argsort(det_class[touching_pair[:, 0]], kind="stable")
            pairs.append(order[in_classes[touching_pair[by_class]]])
        kept = sizes >= floor
        npix = pred.height * pred.width
        for c in np.unique(det_class[upper.any(axis=1)]).tolist():
            at = np.flatnonzero(det_class == c)
            left = class_leftovers([rles[k] for k in at], floor, npix, touch[np.ix_(at, at)],
                                   sizes[at])
            kept[at] = False
            for r, text, a in left:
                k = at[r]
                kept[k], sizes[k] = True, a
                if text is not rles[k]["counts"] and truth_rles:
                    class_truths = np.flatnonzero(truth_class == c)
                    ious[k, class_truths] = pair_ious([{"size": size, "counts": text}],
                                            [truth_rles[g] for g in class_truths])[0]
        area[in_classes[kept]] = sizes[kept]
        hit = (ious >= LINK_IOU) & (det_class[:, None] == truth_class[None, :]) & kept[:, None]
        for c in np.unique(det_class[hit.sum(axis=1) >= 2]).tolist():  # matched greedily, whole
            rows = np.flatnonzero(kept & (det_class == c))
            class_truths = np.flatnonzero(truth_class == c)
            greedy_groups.append((in_classes[rows], class_truths, ious[np.ix_(rows, class_truths)]))
            hit[det_class == c] = False
        d, g = np.nonzero(hit)
        by_class = np.argsort(det_class[d], kind="stable")
        d, g = d[by_class], g[by_class]
        link_dets.append(in_classes[d])
        link_truths.append(g)
        link_ious.append(ious[d, g])
    links = (_cat(link_dets, np.int64), _cat(link_truths, np.int64), _cat(link_ious, np.float64))
    return area, later, links, greedy_groups, np.concatenate(pairs).astype(np.int64)


def _cat(xs: list, dtype) -> np.ndarray:
    return np.concatenate(xs).astype(dtype, copy=False) if xs else np.zeros(0, dtype)


def _parts_many(jobs: list, kw: dict) -> list:
    return [image_parts(p, t, kw["mask_thrs"], kw["floor"]) for p, t in jobs]


def _class_parts_many(jobs: list, kw: dict) -> list:
    """:func:`image_part` for some classes of each image: ``(pred, truths, classes)``
    jobs."""
    return [image_part(p, t, kw["mask_thr"], kw["floor"], classes=c) for p, t, c in jobs]


# --- a fold's data, and the views the search scores -----------------------------------------

@dataclass
class FlatView:
    """Detections (score order within each image), truths and links of a set of images for
    one (mask, min area) variant, flat; ``groups`` the groups matched greedily."""

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
    groups: list  # (image, detections, truths, ious), by image, then by class
    p_src: list  # (the fold's position in tune's list, image_key, index in its line)
    t_src: list  # truth Instance per truth

    @cached_property
    def cum_before(self) -> np.ndarray:
        """The position of each image's first detection."""
        counts = np.bincount(self.p_img, minlength=self.n_img)
        return np.concatenate(([0], np.cumsum(counts)[:-1]))


def concat_views(views: list[FlatView]) -> FlatView:
    if len(views) == 1:
        return views[0]
    img_at = np.cumsum([0] + [v.n_img for v in views])  # each view's first image, detection
    pred_at = np.cumsum([0] + [len(v.p_img) for v in views])  # and truth in the whole
    truth_at = np.cumsum([0] + [len(v.t_img) for v in views])
    cat = np.concatenate
    return FlatView(
        n_img=int(img_at[-1]), p_img=cat([v.p_img + o for v, o in zip(views, img_at)]),
        p_label=cat([v.p_label for v in views]), p_score=cat([v.p_score for v in views]),
        p_area=cat([v.p_area for v in views]), g=cat([v.g for v in views]),
        t_img=cat([v.t_img + o for v, o in zip(views, img_at)]),
        l_pred=cat([v.l_pred + o for v, o in zip(views, pred_at)]),
        l_truth=cat([v.l_truth + o for v, o in zip(views, truth_at)]),
        l_iou=cat([v.l_iou for v in views]),
        groups=[(i + a, d + b, t + c, x) for v, a, b, c in zip(views, img_at, pred_at, truth_at)
             for i, d, t, x in v.groups],
        p_src=[s for v in views for s in v.p_src], t_src=[s for v in views for s in v.t_src])


class FoldParts:
    """One fold's validation predictions and truths, with its mask variants built on demand.
    A fold made with ``base`` holds the base fold's detections re-scored (same masks, another
    score order): its views are the base's renumbered (:meth:`_renumbered`)."""

    def __init__(self, pos: int, run: FoldRun, truths: dict[str, list[Instance]],
                 workers: int | None, quiet: bool, base: FoldParts | None = None) -> None:
        if base is not None and base.base is not None:
            raise ValueError("a re-scored fold's base must be a fold of stored scores")
        self.pos, self.run, self.quiet, self.workers = pos, run, quiet, workers
        self.base = base
        self.class_parts: dict = {}  # (mask_thr, floor, image, class, order) → its part
        self.reordered_anew = 0  # images whose parts a re-scored order made compute anew
        self.keys = [im["image_key"] for im in run.gt["images"]]
        self.truths = truths
        self.has_soft = all(p.soft is not None for p in run.preds.values()) and bool(run.preds)
        img, det_class, sc, line_index, src = [], [], [], [], []
        for i, k in enumerate(self.keys):
            p = run.preds.get(k)
            if p is None or not len(p):
                continue
            o = score_order(p.scores)
            img.append(np.full(len(o), i))
            det_class.append(p.labels[o])
            sc.append(p.scores[o].astype(np.float64))
            line_index.append(o)
            src.extend((pos, k, int(j)) for j in o)
        self.p_img, self.p_label = _cat(img, np.int64), _cat(det_class, np.int64)
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
        self.origin = self.p_off[self.p_img] + _cat(line_index, np.int64)
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

    def view(self, mask_thr: float | None, floor: int) -> FlatView:
        return self._view(mask_thr, max(floor, 1))[0]

    def view_with_later(self, mask_thr: float | None, floor: int) -> tuple[FlatView, np.ndarray]:
        """:meth:`view` with each detection's flag: it shares a pixel with a later detection
        of its class."""
        return self._view(mask_thr, floor)

    def touching_pairs(self, mask_thr: float | None) -> tuple[np.ndarray, np.ndarray]:
        """The touching same-class pairs at ``mask_thr`` (origins, the earlier first), known
        once the view at 1 px is built."""
        self._view(mask_thr, 1)
        return self._pairs[mask_thr]

    def _view(self, mask_thr: float | None, floor: int) -> tuple[FlatView, np.ndarray]:
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

    def _assemble(self, area, later, link_pred, link_truth, link_iou,
                  greedy_groups: list) -> tuple[FlatView, np.ndarray]:
        o = np.lexsort((link_pred, link_truth))
        greedy_groups.sort(key=lambda grp: (grp[0], int(self.p_label[grp[1][0]])))
        return FlatView(n_img=len(self.keys), p_img=self.p_img, p_label=self.p_label,
                     p_score=self.p_score, p_area=area.astype(np.int64), g=self.g,
                     t_img=self.t_img, l_pred=link_pred[o], l_truth=link_truth[o],
                     l_iou=link_iou[o], groups=greedy_groups,
                     p_src=self.p_src, t_src=self.t_src), later

    def _flat(self, images, parts: list) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
        """The links (detections, truths, IoUs) and groups of some images' parts, from each
        image's numbering to the fold's."""
        at_img = np.repeat(np.asarray(images, np.int64),
                           np.array([len(p[2][0]) for p in parts], np.int64))
        link_pred = _cat([p[2][0] for p in parts], np.int64) + self.p_off[at_img]
        link_truth = _cat([p[2][1] for p in parts], np.int64) + self.t_off[at_img]
        greedy_groups = [(i, self.p_off[i] + rows, self.t_off[i] + class_truths, ious)
               for i, p in zip(images, parts) for rows, class_truths, ious in p[3]]
        return link_pred, link_truth, _cat([p[2][2] for p in parts], np.float64), greedy_groups

    def _of_parts(self, mask_thr: float | None, parts: list) -> tuple[FlatView, np.ndarray]:
        n_pairs = np.array([len(p[4]) for p in parts], np.int64)
        pairs = (np.concatenate([p[4] for p in parts]) if parts else np.zeros((0, 2), np.int64)
                 ) + np.repeat(self.p_off[:-1], n_pairs)[:, None]
        self._pairs[mask_thr] = (pairs[:, 0], pairs[:, 1])
        return self._assemble(_cat([p[0] for p in parts], np.int64),
                              _cat([p[1] for p in parts], bool),
                              *self._flat(range(len(parts)), parts))

    def _spliced(self, view: FlatView, area, later, images: list, parts: list
                 ) -> tuple[FlatView, np.ndarray]:
        """``view`` with the leftovers, links and groups of some images replaced by their
        ``parts`` (computed anew, in this fold's order)."""
        gone = np.zeros(len(self.keys), bool)
        gone[images] = True
        keep = ~gone[view.t_img[view.l_truth]]
        for i, (a, lat, *_) in zip(images, parts):
            area[self.p_off[i]:self.p_off[i + 1]] = a
            later[self.p_off[i]:self.p_off[i + 1]] = lat
        link_pred, link_truth, link_iou, greedy_groups = self._flat(images, parts)
        return self._assemble(area, later, np.concatenate((view.l_pred[keep], link_pred)),
                              np.concatenate((view.l_truth[keep], link_truth)),
                              np.concatenate((view.l_iou[keep], link_iou)),
                              [grp for grp in view.groups if not gone[grp[0]]] + greedy_groups)

    def _floored(self, mask_thr: float | None, floor: int) -> tuple[FlatView, np.ndarray]:
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

    def _renumbered(self, mask_thr: float | None, floor: int) -> tuple[FlatView, np.ndarray]:
        """The view of a re-scored fold, from its base's at the same variant: the leftovers,
        links and groups of an (image, class) whose touching detections keep their order are
        the base's (only touching detections' order shapes them, the min area's drops
        included), renumbered to the new order (all at once); a class where two touching
        detections swap places is taken from the base's cache when another re-scoring met the
        same order, else computed anew (and cached)."""
        base = self.base
        view, base_later = base.view_with_later(mask_thr, floor)
        first, second = base.touching_pairs(mask_thr)
        moved = self.at[base.origin]  # a detection's position in the base → here
        area = np.empty_like(view.p_area)
        area[moved] = view.p_area
        later = np.empty_like(base_later)
        later[moved] = base_later
        n_cls = int(self.p_label.max()) + 1 if len(self.p_label) else 1
        cls_key = self.p_img * n_cls + self.p_label
        flip = self.at[first] > self.at[second]
        swapped = np.isin(cls_key, cls_key[self.at[first[flip]]])
        link_pred = moved[view.l_pred]
        keep = ~swapped[link_pred]
        link_preds, link_truth_parts = [link_pred[keep]], [view.l_truth[keep]]
        link_iou_parts = [view.l_iou[keep]]
        greedy_groups = []
        for i, rows, class_truths, ious in view.groups:
            r = moved[rows]
            if not swapped[r[0]]:
                s = np.argsort(r, kind="stable")
                greedy_groups.append((i, r[s], class_truths, ious[s]))
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
            span = slice(self.p_off[i], self.p_off[i + 1])
            order, det_class = self.origin[span] - self.p_off[i], self.p_label[span]
            for c in sorted(missing[i]):
                mine, link = np.flatnonzero(det_class == c), det_class[d] == c
                entry = (order[mine], a[mine], lat[mine], order[d[link]], g[link], v[link],
                         [(order[rows], class_truths, ious) for rows, class_truths, ious in groups
                          if det_class[rows[0]] == c])
                base.class_parts[(mask_thr, floor, i, c, tuple(entry[0].tolist()))] = entry
                entries.append((i, entry))
        for i, (idx, c_area, c_later, d, g, v, groups) in entries:
            o, truth_start = self.p_off[i], self.t_off[i]
            area[self.at[o + idx]] = c_area
            later[self.at[o + idx]] = c_later
            link_preds.append(self.at[o + d])
            link_truth_parts.append(truth_start + g)
            link_iou_parts.append(v)
            greedy_groups += [(i, self.at[o + rows], truth_start + class_truths, ious)
                              for rows, class_truths, ious in groups]
        self.reordered_anew += len(redo)
        return self._assemble(area, later, _cat(link_preds, np.int64),
                              _cat(link_truth_parts, np.int64), _cat(link_iou_parts, np.float64),
                              greedy_groups)
