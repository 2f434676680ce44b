"""Matching predicted masks to truths: the one place every score of the kit gets its matches.

Each score starts from the pairwise mask IoUs of an image, computed once by pycocotools on
compressed RLE (:func:`imat_kit.data.masks.pair_ious`), and applies one of two greedy rules to them:

* **greedy by score** (:func:`greedy_tp`, :func:`greedy_pairs`): detections in descending score
  order each take the free truth of highest IoU among those that pass the threshold (and an
  extra condition, e.g. the 2020 rule's attribute F1). The 2019 competition score, the 2020
  rule, attribute matching, the confusion matrix and the post-processing tuner use it.
* **FPEval's rule** (:func:`fpeval_greedy`): scanning the truths in order, a free truth becomes
  the candidate when its IoU (and attribute F1) reach the current bars, and the bars then rise
  to the candidate's values — not "the highest IoU among those passing both". Fashionpedia's
  AP^{IoU+F1} uses it, reproduced as ``fashionpedia``'s FPEval 1.1 does it (``docs/metrics.md``;
  ``tests/eval/test_attr_metric.py`` checks it against the package).

The metrics are defined in ``docs/metrics.md`` and computed in :mod:`imat_kit.eval.metric`
(2019) and :mod:`imat_kit.eval.attr_metric` (2020, AP^{IoU+F1}).
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-12


def greedy_tp(ious: np.ndarray, thresholds: np.ndarray, *, strict: bool = False,
              allowed: np.ndarray | None = None) -> np.ndarray:
    """True positives (P,) at each of P thresholds: the D rows of ``ious`` (D × G, already in
    descending score order) each take the free truth of highest IoU with IoU ≥ t (``strict``:
    > t); ``allowed`` (P × D × G booleans) adds a condition per threshold and pair."""
    thr = np.asarray(thresholds, dtype=np.float64)
    tp = np.zeros(len(thr), dtype=np.int64)
    d_n, g_n = ious.shape
    if not d_n or not g_n:
        return tp
    if allowed is None and (d_n == 1 or g_n == 1):  # one side alone: a match iff a pair passes
        best = ious.max()
        return ((best > thr) if strict else (best >= thr - _EPS)).astype(np.int64)
    free = np.ones((len(thr), g_n), dtype=bool)
    rows = np.arange(len(thr))
    for d in range(d_n):
        row = ious[d][None, :]
        ok = free & ((row > thr[:, None]) if strict else (row >= thr[:, None] - _EPS))
        if allowed is not None:
            ok &= allowed[:, d, :]
        cand = np.where(ok, row, -1.0)
        best = cand.argmax(axis=1)
        hit = cand[rows, best] >= 0
        tp += hit
        free[rows[hit], best[hit]] = False
    return tp


def greedy_pairs(ious: np.ndarray, threshold: float, *,
                 allowed: np.ndarray | None = None) -> list[tuple[int, int]]:
    """The matches ``(row, column)`` at one threshold (IoU ≥ ``threshold``), rows of ``ious``
    in descending score order, each column used once; ``allowed`` (D × G) adds a condition
    (e.g. same category)."""
    d_n, g_n = ious.shape
    free = np.ones(g_n, dtype=bool)
    out = []
    for d in range(d_n):
        ok = free & (ious[d] >= threshold)
        if allowed is not None:
            ok &= allowed[d]
        if not ok.any():
            continue
        g = int(np.where(ok, ious[d], -1.0).argmax())
        free[g] = False
        out.append((d, g))
    return out


def fpeval_greedy(ious: np.ndarray, f1s: np.ndarray | None, iou_thr: np.ndarray,
                  f1_thr: np.ndarray) -> np.ndarray:
    """FPEval's (and COCOeval's) matching of D detections (sorted by score) to G truths at
    every threshold pair: returns (T, F, D) booleans, detection matched. Scanning the truths
    in order, a free truth becomes the candidate when its IoU (and F1, when ``f1s`` is given)
    reach the current bars; the bars then rise to the candidate's values."""
    d_n, g_n = ious.shape
    t_n, f_n = len(iou_thr), len(f1_thr)
    matched_dt = np.zeros((t_n, f_n, d_n), bool)
    if not d_n or not g_n:
        return matched_dt
    taken = np.zeros((t_n, f_n, g_n), bool)
    iou0 = np.broadcast_to(np.minimum(iou_thr, 1 - 1e-10)[:, None], (t_n, f_n))
    f10 = np.broadcast_to(np.minimum(f1_thr, 1 - 1e-10)[None, :], (t_n, f_n))
    tt, ff = np.indices((t_n, f_n))
    for d in range(d_n):
        bar_i, bar_f = iou0.copy(), f10.copy()
        m = np.full((t_n, f_n), -1)
        for g in range(g_n):
            ok = ~taken[:, :, g] & (ious[d, g] >= bar_i)
            if f1s is not None:
                ok &= f1s[d, g] >= bar_f
                bar_f = np.where(ok, f1s[d, g], bar_f)
            bar_i = np.where(ok, ious[d, g], bar_i)
            m = np.where(ok, g, m)
        hit = m >= 0
        matched_dt[:, :, d] = hit
        taken[tt[hit], ff[hit], m[hit]] = True
    return matched_dt
