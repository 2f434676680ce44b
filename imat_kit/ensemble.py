"""Fusing the predictions of several models (e.g. the K fold models) image by image.

``fusion`` (default): per image and class, instances of all models are clustered greedily by
descending score: a cluster takes, from each other model, its unclaimed instance of the same
class with the highest mask IoU ≥ ``iou`` with the cluster's best instance. The fused mask is a
weighted pixel vote of the members (weight = model weight × score), kept where the vote reaches
half of the members' total weight, computed on runs without building masks; the fused score is
the weighted mean of the member scores over **all** models, so an instance found by few models
(a singleton keeps only its own share) is penalised; its attribute probabilities (when every
model gives them) are the members' mean with the same weights as the mask vote. ``nms``: the
plain baseline, all instances pooled and suppressed greedily at mask IoU ≥ ``iou`` per class
(the survivor keeps its attribute probabilities).

**Scores comparable with a single model's** (``scores="members"``, the default for
``fusion``): the settings ``tune`` finds are tuned on single models' out-of-fold predictions, but
the mean over all models puts every fused score below its members' (a garment found by 3 of 5
models at 0.9 scores 0.54), so a tuned threshold cuts the fusion far deeper than it cut a single
model. Once every image is fused, each fused score is therefore put on one input's scale
(:func:`members_scale`): the fused score reached by c fused predictions becomes the score reached
by K·c of the K inputs' predictions pooled, so the order the fusion found is kept and any
threshold keeps about as many fused predictions as it keeps of one input.
``scores="mean"`` keeps the weighted means (the rule before; ``benchmarks/fusion.py`` compares
both).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_util

from imat_kit.data import rle as rle_mod
from imat_kit.data import rle_batch
from imat_kit.data.paths import find_labels
from imat_kit.errors import KitError
from imat_kit.predictions import (
    Expected,
    ImagePrediction,
    attribute_sets,
    empty_prediction,
    label_space,
    read_header,
    read_predictions,
    soft_size_of,
    write_predictions,
)
from imat_kit.progress import parallel_map

METHODS = ("fusion", "nms")
SCORES = ("members", "mean")


def _mean_probs(probs: list[dict[int, float]], weights: np.ndarray) -> dict[int, float]:
    """The weighted mean of sparse attribute probabilities (a missing id counts as 0)."""
    total = float(weights.sum())
    out: dict[int, float] = {}
    for p, wt in zip(probs, weights):
        for k, v in p.items():
            out[k] = out.get(k, 0.0) + float(wt) * v
    return {k: v / total for k, v in sorted(out.items())}


def fuse_image(preds: list[ImagePrediction | None], *, method: str = "fusion",
               iou: float = 0.5, weights: list[float] | None = None) -> ImagePrediction:
    """Fuse one image's predictions from several models (``None`` = the model has none)."""
    k = len(preds)
    w = np.ones(k) if weights is None else np.asarray(weights, dtype=np.float64)
    ref = next((p for p in preds if p is not None), None)
    if ref is None:
        raise KitError("no model has a prediction for this image")
    given = [(m, p) for m, p in enumerate(preds) if p is not None and len(p)]
    if not given:
        return empty_prediction(ref.image_key, ref.height, ref.width)
    # every model's instances, with the model of each; soft masks and attribute
    # probabilities only when every model that predicted anything has them
    pool = ImagePrediction.cat([p for _, p in given])
    model = np.concatenate([np.full(len(p), m) for m, p in given])
    labels, scores, masks = pool.labels, pool.scores.astype(np.float64), pool.masks
    boxes, soft, probs = pool.bboxes, pool.soft, pool.attr_probs or None
    h, width = ref.height, ref.width
    fused: list[ImagePrediction] = []  # one instance each, scores in float64 until the end

    def keep(c: int, score: float, counts: str, soft_one, probs_one) -> None:
        fused.append(ImagePrediction(
            ref.image_key, h, width, np.array([c], np.int64), np.array([score], np.float64),
            np.zeros((1, 4), np.float32), [counts],
            None if soft is None else soft_one[None], [],
            [probs_one] if probs is not None else []))

    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        rles = [{"size": [h, width], "counts": masks[i]} for i in idx]
        ious = np.asarray(mask_util.iou(rles, rles, [0] * len(rles))).reshape(len(idx),
                                                                                len(idx))
        free = np.ones(len(idx), dtype=bool)
        for a in range(len(idx)):
            if not free[a]:
                continue
            free[a] = False
            if method == "nms":
                free &= ~(ious[a] >= iou)
                keep(int(c), scores[idx[a]], masks[idx[a]],
                     soft[idx[a]] if soft is not None else None,
                     probs[idx[a]] if probs is not None else None)
                continue
            members = [a]
            for m in range(k):
                if m == model[idx[a]]:
                    continue
                cand = np.flatnonzero(free & (model[idx] == m) & (ious[a] >= iou))
                if cand.size:
                    b = cand[np.argmax(ious[a, cand])]
                    members.append(int(b))
                    free[b] = False
            mw = w[model[idx[members]]] * scores[idx[members]]
            fused_score = float(mw.sum() / w.sum())
            fused_soft = None
            if len(members) == 1:
                counts = masks[idx[a]]
                fused_soft = soft[idx[a]] if soft is not None else None
            elif soft is not None:
                counts, fused_soft = _soft_vote([boxes[idx[i]] for i in members],
                                                [soft[idx[i]] for i in members], mw, h, width)
            else:
                counts = _vote([masks[idx[i]] for i in members], mw, h * width)
            if counts is None:
                continue
            keep(int(c), fused_score, counts, fused_soft,
                 _mean_probs([probs[idx[i]] for i in members], mw) if probs is not None
                 else None)
    if not fused:
        return replace(empty_prediction(ref.image_key, h, width),
                       soft=None if soft is None else soft[:0])
    out = ImagePrediction.cat(fused)
    out = out[np.argsort(-out.scores, kind="stable")]
    rles = out.rles()
    return replace(out, scores=out.scores.astype(np.float32),
                   bboxes=np.asarray(mask_util.toBbox(rles), np.float32).reshape(-1, 4),
                   attributes=attribute_sets(out.attr_probs))


def _soft_vote(boxes: list[np.ndarray], softs: list[np.ndarray], weights: np.ndarray,
               h: int, w: int) -> tuple[str | None, np.ndarray | None]:
    """Weighted mean of the members' probabilities (each pasted into its box) over the union
    of their boxes, kept where it reaches 0.5; also that mean resampled into the fused box."""
    import cv2

    from imat_kit.data.masks import box_pixels

    ib = [box_pixels(b, h, w) for b in boxes]
    ux0, uy0 = min(b[0] for b in ib), min(b[1] for b in ib)
    ux1, uy1 = max(b[2] for b in ib), max(b[3] for b in ib)
    acc = np.zeros((uy1 - uy0, ux1 - ux0), np.float32)
    for (x0, y0, x1, y1), s, wt in zip(ib, softs, weights):
        acc[y0 - uy0:y1 - uy0, x0 - ux0:x1 - ux0] += wt * cv2.resize(
            s.astype(np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    acc /= weights.sum() * 255.0
    keep = acc >= 0.5
    if not keep.any():
        return None, None
    counts = rle_mod.region_counts(keep, uy0, ux0, h, w)  # no H×W array
    rows, cols = np.flatnonzero(keep.any(axis=1)), np.flatnonzero(keep.any(axis=0))
    crop = acc[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]  # the fused mask's box
    size = softs[0].shape[0]
    soft = cv2.resize(crop * 255, (size, size), interpolation=cv2.INTER_LINEAR)
    return counts, np.clip(soft, 0, 255).astype(np.uint8)


def _vote(counts_texts: list[str], weights: np.ndarray, npix: int) -> str | None:
    """Pixels whose weighted vote reaches half the total weight, as COCO counts text."""
    runs = [rle_mod.coco_to_runs({"counts": text}) for text in counts_texts]
    s, e = rle_mod.runs_vote(runs, weights, 0.5 * weights.sum())
    if s.size == 0:
        return None
    counts = rle_mod.runs_to_counts(s, e - s, npix)
    return rle_batch.coco_strings_batch(counts.astype(np.int64),
                                      np.array([0, counts.size]))[0]


def ensemble(inputs: list[dict[str, ImagePrediction]], *, method: str = "fusion",
             iou: float = 0.5, weights: list[float] | None = None, workers: int | None = None,
             quiet: bool = False, scores: str = "members") -> dict[str, ImagePrediction]:
    """Fuse several predictions (``image_key → ImagePrediction`` each), over the union of
    their images, in ``workers`` processes (default: up to 2; the result is the same).
    ``scores`` (fusion only): ``members`` puts the fused scores on one input's scale
    (:func:`members_scale`), ``mean`` keeps the weighted means."""
    if method not in METHODS:
        raise KitError(f"method must be one of {', '.join(METHODS)}", value=method)
    if scores not in SCORES:
        raise KitError(f"scores must be one of {', '.join(SCORES)}", value=scores)
    if not 0 < iou <= 1:
        raise KitError("iou must be within (0, 1]", value=iou)
    if weights is not None and (len(weights) != len(inputs) or min(weights) <= 0):
        raise KitError(f"need one positive weight per input ({len(inputs)})", value=weights)
    keys = list(dict.fromkeys(k for d in inputs for k in d))
    jobs = [[d.get(key) for d in inputs] for key in keys]
    kw = dict(method=method, iou=iou, weights=weights)
    fused = dict(zip(keys, parallel_map(_fuse_many, jobs, kw, workers=workers,
                                        desc=f"ensemble ({method})", quiet=quiet)))
    if method == "fusion" and scores == "members" and len(inputs) > 1:
        fused = members_scale(fused, inputs)
    return fused


def members_scale(fused: dict[str, ImagePrediction], inputs: list[dict]
                  ) -> dict[str, ImagePrediction]:
    """The fused predictions with scores on one input's scale: the fused score reached by c
    fused predictions is replaced by the input score reached by K·c of the K inputs'
    predictions pooled (each input's at that score: c on average), so any threshold keeps as
    many fused predictions as it keeps of one input, on average — the fusion decides which.
    Past the inputs' lowest score the new scores fall toward 0. The map is increasing: the
    order within and across images is kept (ties stay ties)."""
    from dataclasses import replace

    k = len(inputs)
    members = -np.sort(-np.concatenate([np.asarray(p.scores, np.float64) for d in inputs
                                        for p in d.values()] or [np.zeros(0)]))
    mine = np.sort(np.concatenate([np.asarray(p.scores, np.float64) for p in fused.values()]
                                  or [np.zeros(0)]))
    if not members.size or not mine.size:
        return fused
    m = members.size

    def scale(x: np.ndarray) -> np.ndarray:
        reached = mine.size - np.searchsorted(mine, x.astype(np.float64), side="left")
        pos = k * reached.astype(np.float64)  # how many inputs' predictions reach it
        inside = members[np.clip(pos.astype(np.int64) - 1, 0, m - 1)]
        return np.where(pos <= m, inside, members[-1] * m / np.maximum(pos, 1)
                        ).astype(np.float32)

    return {key: replace(p, scores=scale(p.scores)) if len(p) else p
            for key, p in fused.items()}


def _fuse_many(jobs: list, kw: dict) -> list[ImagePrediction]:
    return [fuse_image(j, **kw) for j in jobs]


def ensemble_files(files: list[str | Path], out: str | Path, *, method: str = "fusion",
                   iou: float = 0.5, weights: list[float] | None = None,
                   data: str | Path | None = None, quiet: bool = False,
                   meta: dict | None = None, scores: str = "members") -> EnsembleSummary:
    """The ``imat-kit ensemble`` step: read predictions files, fuse them, write ``out``
    (atomically; its header lists the inputs' headers, and ``meta``'s fields). Every input
    is checked as it is read (:func:`~imat_kit.predictions.iter_predictions`): with ``data``
    (the prepared data) against its label file and the split's images (the inputs'
    ``split``/``fold``), without it against the ``label_space`` the inputs' headers record
    (``predict`` writes it); inputs of neither kind are refused. Nothing is written when an
    input is refused. Returns a summary."""
    if not files:
        raise KitError("no predictions file to ensemble")
    heads = [read_header(f) for f in files]
    splits = {h.get("split") for h in heads}
    if len(splits) > 1:
        raise KitError(f"the inputs predict different splits ({', '.join(map(str, splits))})",
                       file=str(files[-1]), row=1)
    folds = {h.get("fold") for h in heads}
    if splits == {"val"} and len(folds) > 1:
        raise KitError(f"the inputs predict different folds' validation sets "
                       f"({', '.join(map(str, folds))})", file=str(files[-1]), row=1)
    if data is not None:
        labels = find_labels(data)
        expected = _data_expected(data, labels, heads[0])
        space = label_space(labels)
    else:
        expected = _header_expected(files, heads)
        space = heads[0]["label_space"]
    inputs = [read_predictions(f, expected)[1] for f in files]
    fused = ensemble(inputs, method=method, iou=iou, weights=weights, quiet=quiet,
                     scores=scores)
    described = [{"file": str(f), **h} for f, h in zip(files, heads)]
    soft = {soft_size_of(h) for h in heads}
    meta = {"split": heads[0].get("split"), "fold": heads[0].get("fold"), "method": method,
            "iou": iou, "scores": scores if method == "fusion" else None, "weights": weights,
            "soft_size": soft.pop() if len(soft) == 1 else None,
            "label_space": space, "inputs": described, **(meta or {})}
    if all(h.get("attribute_model") for h in heads):
        meta["attribute_model"] = True
    write_predictions(out, meta, fused.values())
    return EnsembleSummary(inputs=len(inputs), images=len(fused), out=str(out),
                           headers=described, instances=sum(len(p) for p in fused.values()),
                           fused=fused)


@dataclass(frozen=True)
class EnsembleSummary:
    """What ``ensemble_files`` wrote: the number of inputs, images and fused instances, the
    file, the inputs' headers as the output's header records them, and the fused
    predictions (image key → :class:`~imat_kit.predictions.ImagePrediction`)."""

    inputs: int
    images: int
    instances: int
    out: str
    headers: list = field(default_factory=list)
    fused: dict = field(default_factory=dict, repr=False)


def _data_expected(data: str | Path, labels, head: dict) -> Expected:
    """The data's label file and the images of the inputs' split."""
    from imat_kit.data.paths import read_ann, test_image_sizes

    if head.get("split") == "val" and head.get("fold") is not None:
        return Expected.of_split(labels, read_ann(data, "val", head["fold"]), head["fold"])
    if head.get("split") in (None, "test"):
        return Expected.of(labels, test_image_sizes(data, quiet=True), "the test set")
    return Expected.of(labels)


def _header_expected(files: list[str | Path], heads: list[dict]) -> Expected:
    """The label space every input's header records (they must agree)."""
    spaces = [Expected.of_header(h, str(f)) for f, h in zip(files, heads)]
    for f, sp in zip(files, spaces):
        if sp is None:
            raise KitError("its header records no label_space, so its labels cannot be "
                           "checked: pass --data (the prepared data the predictions are of)",
                           file=str(f), row=1)
    for f, h in zip(files[1:], heads[1:]):
        if h["label_space"] != heads[0]["label_space"]:
            raise KitError(f"its label_space differs from {files[0]}'s: predictions of "
                           "different label files cannot be fused", file=str(f), row=1)
    return spaces[0]
