"""How ``imat-kit tune`` decodes attribute sets: the micro F1 of the matched instances, the
``k`` per category of top-k decoding, the thresholds per (category, attribute) pair, and
top-k's start (the training annotations' medians)."""

from __future__ import annotations

import numpy as np

from imat_kit.data.paths import read_ann
from imat_kit.eval.attr_eval import best_threshold, match_instances
from imat_kit.eval.runs import FoldRun
from imat_kit.postprocess import AttributeDecoder, PostProcess


def matched_attribute_pairs(runs: list[FoldRun]) -> list[tuple[int, dict, set]]:
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
    for c, probs, truth in matched_attribute_pairs(runs):
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
    pairs = matched_attribute_pairs(runs)
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
    floor = max((float(r.head.get("attribute_floor") or 0.0) for r in runs), default=0.0)
    by_pair: dict[tuple[int, int], tuple[list, list]] = {}
    for c, probs, truth in matched_attribute_pairs(runs):
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
        thr, _ = best_threshold(np.asarray(ps), y, floor)
        if np.isnan(thr):
            continue
        t_a = base.of(a)
        t = round(float((n * thr + min_support * t_a) / (n + min_support)), 6)
        if abs(t - t_a) > 1e-9:
            out[(c, a)] = t
    return out


def topk_start(run: FoldRun | None, runs: list[FoldRun] = ()) -> dict[int, int] | None:
    """Top-k's start for settings that will score ``run``: the medians of its fold's training
    annotations (which exclude it); for the final settings (``run`` None), of every training
    annotation of the data the ``runs`` came from. Read, reduced to medians and let go (the
    annotations of real data take gigabytes); ``None`` for runs built in memory."""
    if run is not None:
        train = run.read_train_gt()
        return None if train is None else median_attributes(train)
    data = next((r.data for r in runs if r.data is not None), None)
    return median_attributes(read_ann(data, "all")) if data is not None else None
