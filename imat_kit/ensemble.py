"""Fusing the predictions of several models (e.g. the K fold models) image by image.

``fusion`` (default): per image and class, instances of all models are clustered greedily by
descending score: a cluster takes, from each other model, its unclaimed instance of the same
class with the highest mask IoU ≥ ``iou`` with the cluster's best instance. The fused mask is a
weighted pixel vote of the members (weight = model weight × score), kept where the vote reaches
half of the members' total weight, computed on runs without building masks; the fused score is
the weighted mean of the member scores over **all** models, so an instance found by few models
(a singleton keeps only its own share) is penalised. ``nms``: the plain baseline, all instances
pooled and suppressed greedily at mask IoU ≥ ``iou`` per class.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_util

from . import rle as rle_mod
from .errors import KitError
from .io import parallel_map
from .predictions import ImagePrediction, empty_prediction

METHODS = ("fusion", "nms")


def _pool(preds: list[ImagePrediction | None], weights: np.ndarray) -> tuple:
    labels, scores, masks, model = [], [], [], []
    for m, p in enumerate(preds):
        if p is None or not len(p):
            continue
        labels.append(p.labels)
        scores.append(p.scores)
        masks += p.masks
        model.append(np.full(len(p), m))
    if not labels:
        return None
    return (np.concatenate(labels), np.concatenate(scores).astype(np.float64), masks,
            np.concatenate(model))


def fuse_image(preds: list[ImagePrediction | None], *, method: str = "fusion",
               iou: float = 0.5, weights: list[float] | None = None) -> ImagePrediction:
    """Fuse one image's predictions from several models (``None`` = the model has none)."""
    k = len(preds)
    w = np.ones(k) if weights is None else np.asarray(weights, dtype=np.float64)
    ref = next((p for p in preds if p is not None), None)
    if ref is None:
        raise KitError("no model has a prediction for this image")
    pooled = _pool(preds, w)
    if pooled is None:
        return empty_prediction(ref.image_key, ref.height, ref.width)
    labels, scores, masks, model = pooled
    h, width = ref.height, ref.width
    out_l, out_s, out_m = [], [], []
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
                out_l.append(int(c))
                out_s.append(scores[idx[a]])
                out_m.append(masks[idx[a]])
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
            if len(members) == 1:
                counts = masks[idx[a]]
            else:
                counts = _vote([masks[idx[i]] for i in members], mw, h * width)
                if counts is None:
                    continue
            out_l.append(int(c))
            out_s.append(fused_score)
            out_m.append(counts)
    order = np.argsort(-np.asarray(out_s), kind="stable")
    out_m = [out_m[i] for i in order]
    rles = [{"size": [h, width], "counts": m} for m in out_m]
    boxes = (np.asarray(mask_util.toBbox(rles), np.float32).reshape(-1, 4) if rles
             else np.zeros((0, 4), np.float32))
    return ImagePrediction(ref.image_key, h, width, np.asarray(out_l, np.int64)[order],
                           np.asarray(out_s, np.float32)[order], boxes, out_m)


def _vote(counts_texts: list[str], weights: np.ndarray, npix: int) -> str | None:
    """Pixels whose weighted vote reaches half the total weight, as COCO counts text."""
    starts, ends, deltas = [], [], []
    for text, wt in zip(counts_texts, weights):
        s, e = rle_mod.coco_to_runs({"counts": text})
        starts.append(s)
        ends.append(e)
        deltas.append(np.full(s.size, wt))
    pos = np.concatenate(starts + ends)
    delta = np.concatenate(deltas + [-d for d in deltas])
    up, inv = np.unique(pos, return_inverse=True)
    level = np.cumsum(np.bincount(inv, weights=delta, minlength=up.size))
    sel = np.flatnonzero(level[:-1] >= 0.5 * weights.sum() - 1e-9)
    if sel.size == 0:
        return None
    s, e = up[sel], up[sel + 1]
    cut = np.flatnonzero(s[1:] != e[:-1])
    s = s[np.concatenate(([0], cut + 1))]
    e = e[np.concatenate((cut, [e.size - 1]))]
    counts = rle_mod.runs_to_counts(s, e - s, npix)
    return rle_mod.coco_strings_batch(counts.astype(np.int64),
                                      np.array([0, counts.size]))[0]


def ensemble(inputs: list[dict[str, ImagePrediction]], *, method: str = "fusion",
             iou: float = 0.5, weights: list[float] | None = None, workers: int | None = None,
             quiet: bool = False) -> dict[str, ImagePrediction]:
    """Fuse several predictions (``image_key → ImagePrediction`` each), over the union of
    their images, in ``workers`` processes (default: up to 2; the result is the same)."""
    if method not in METHODS:
        raise KitError(f"method must be one of {', '.join(METHODS)}", value=method)
    if not 0 < iou <= 1:
        raise KitError("iou must be within (0, 1]", value=iou)
    if weights is not None and (len(weights) != len(inputs) or min(weights) <= 0):
        raise KitError(f"need one positive weight per input ({len(inputs)})", value=weights)
    keys = list(dict.fromkeys(k for d in inputs for k in d))
    jobs = [[d.get(key) for d in inputs] for key in keys]
    kw = dict(method=method, iou=iou, weights=weights)
    fused = parallel_map(_fuse_many, jobs, kw, workers=workers,
                         desc=f"ensemble ({method})", quiet=quiet)
    return dict(zip(keys, fused))


def _fuse_many(jobs: list, kw: dict) -> list[ImagePrediction]:
    return [fuse_image(j, **kw) for j in jobs]
