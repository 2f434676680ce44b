"""Mask geometry every stage shares: the pixels of a box, soft masks (a box's probabilities)
cut at thresholds into COCO counts, the pairwise IoUs and overlaps of compressed RLEs, and the
score order every greedy rule walks. No rule and no setting lives here: the post-processing
(:mod:`imat_kit.postprocess`) and the matching rules (:mod:`imat_kit.eval.matching`) build on it.
"""

from __future__ import annotations

import math

import numpy as np
from pycocotools import mask as mask_util

from imat_kit.data import rle as rle_mod


def pair_ious(dt_rles: list[dict], gt_rles: list[dict], crowd: list[int] | None = None
              ) -> np.ndarray:
    """D × G mask IoUs (float64) of compressed COCO RLEs (``crowd``: COCO's iscrowd flag per
    truth, default none)."""
    if not dt_rles or not gt_rles:
        return np.zeros((len(dt_rles), len(gt_rles)))
    return np.asarray(mask_util.iou(dt_rles, gt_rles, crowd or [0] * len(gt_rles)),
                      dtype=np.float64).reshape(len(dt_rles), len(gt_rles))


def pair_overlaps(texts: list, first: np.ndarray, second: np.ndarray, size: list
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The pixels shared by each pair ``(texts[first[i]], texts[second[i]])`` of COCO counts
    texts (masks of one ``size``), and each text's area (int64): every text decoded once,
    only the listed pairs measured (pycocotools' ``iou`` decodes both lists at each call and
    measures every pair). In C where the kit's extension is built, else with pycocotools."""
    first = np.ascontiguousarray(first, np.int64)
    second = np.ascontiguousarray(second, np.int64)
    kernels = rle_mod._counts
    got = None if kernels is None else kernels.overlaps(texts, first.tobytes(), second.tobytes())
    if got is not None:
        return np.frombuffer(got[0], np.int64), np.frombuffer(got[1], np.int64)
    rles = [{"size": size, "counts": t} for t in texts]
    areas = np.asarray(mask_util.area(rles), np.int64) if rles else np.zeros(0, np.int64)
    inter = np.array([mask_util.area(mask_util.merge([rles[i], rles[j]], intersect=True))
                      for i, j in zip(first.tolist(), second.tolist())], np.int64)
    return inter, areas


def iou_of(inter: np.ndarray, area_a: np.ndarray, area_b: np.ndarray) -> np.ndarray:
    """IoU from the shared pixels and the two areas, as pycocotools computes it (0 where
    nothing is shared)."""
    union = area_a + area_b - inter
    return np.where(inter > 0, inter / np.maximum(union, 1), 0.0)


def score_order(scores) -> np.ndarray:
    """Indices by descending score, ties in input order (every greedy rule here)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def box_pixels(xywh, h: int, w: int) -> tuple[int, int, int, int]:
    """The pixel rectangle ``(x0, y0, x1, y1)`` a box covers (at least one pixel, inside the
    image): where a soft mask was cropped from and is pasted back."""
    x_end, y_end = xywh[0] + xywh[2], xywh[1] + xywh[3]  # in the box's own precision
    if all(math.isfinite(v) for v in (xywh[0], xywh[1], x_end, y_end)):
        x0 = min(max(math.floor(xywh[0]), 0), w - 1)
        y0 = min(max(math.floor(xywh[1]), 0), h - 1)
        return (x0, y0, min(max(math.ceil(x_end), x0 + 1), w),
                min(max(math.ceil(y_end), y0 + 1), h))
    x0 = int(np.clip(np.floor(xywh[0]), 0, w - 1))
    y0 = int(np.clip(np.floor(xywh[1]), 0, h - 1))
    return (x0, y0, int(np.clip(np.ceil(xywh[0] + xywh[2]), x0 + 1, w)),
            int(np.clip(np.ceil(xywh[1] + xywh[3]), y0 + 1, h)))


def soft_counts(xywh, soft: np.ndarray, h: int, w: int, threshold: float) -> str:
    """A soft mask (S×S uint8 probabilities inside the box) pasted into an h×w image and cut at
    ``threshold``: COCO counts text (an empty mask when nothing reaches it). Encoded from the
    box's columns directly (no h×w array)."""
    return soft_counts_at(xywh, soft, h, w, (threshold,))[0]


def soft_counts_at(xywh, soft: np.ndarray, h: int, w: int, thresholds) -> list[str]:
    """:func:`soft_counts` at several thresholds. The soft mask is stretched bilinearly over
    the box (half-pixel centres, edges clamped: cv2's ``INTER_LINEAR``, in double precision)
    and a pixel is in at threshold t when its value reaches 255 t. Each box column's profile
    is linear between the soft mask's rows, so its runs are read off where the profile crosses
    255 t, without evaluating a pixel: in C (``imat_kit._counts.soft_masks``) where the
    extension is built, else :func:`soft_counts_numpy` (the same operations, the same bits)."""
    x0, y0, x1, y1 = box_pixels(xywh, h, w)
    soft = np.ascontiguousarray(soft, np.uint8)
    if rle_mod._counts is not None:
        return rle_mod._counts.soft_masks(soft.tobytes(), soft.shape[0], soft.shape[1], x0, y0,
                                          x1 - x0, y1 - y0, int(h), int(w),
                                          [float(t) for t in thresholds])
    return soft_counts_numpy((x0, y0, x1, y1), soft, h, w, thresholds)


def _taps(n_out: int, n_src: int) -> tuple[np.ndarray, np.ndarray]:
    """Each of ``n_out`` output positions' lower source tap and the upper tap's weight, for a
    bilinear stretch of ``n_src`` positions (half-pixel centres, clamped at both ends)."""
    f = (np.arange(n_out) + 0.5) * (n_src / n_out) - 0.5
    low = np.floor(f)
    weight = f - low
    low = low.astype(np.int64)
    weight[low < 0] = 0.0
    low[low < 0] = 0
    top = low >= n_src - 1
    weight[top] = 0.0
    low[top] = n_src - 1
    return low, weight


def soft_counts_numpy(box: tuple[int, int, int, int], soft: np.ndarray, h: int, w: int,
                      thresholds) -> list[str]:
    """:func:`soft_counts_at` in numpy, on the pixel rectangle ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    src = soft.astype(np.float64)
    sh, sw = src.shape
    low, weight = _taps(bw, sw)
    high = np.minimum(low + 1, sw - 1)
    prof = src[:, low] * (1 - weight) + src[:, high] * weight  # (sh, bw): down each column
    fy = (np.arange(bh) + 0.5) * (sh / bh) - 0.5  # each box row's position among the rows
    level = np.asarray(thresholds, np.float64)[:, None, None] * 255.0  # (K, 1, 1)
    k = len(thresholds)
    a, b = prof[:-1][None], prof[1:][None]  # the two ends of each piece between source rows
    j = np.arange(sh - 1, dtype=np.float64)[None, :, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = j + (level - a) / (b - a)
    up, down = (a < level) & (b >= level), (a >= level) & (b < level)
    inside = up | down | ((a >= level) & (b >= level))
    # rows where the piece reaches the level: fy in [cross, j+1) rising, [j, cross] falling
    lo_f = np.where(up, cross, j)
    hi_f = np.where(down, cross, j + 1)
    start = np.searchsorted(fy, lo_f.ravel(), "left").reshape(lo_f.shape)
    end = np.where(down, np.searchsorted(fy, hi_f.ravel(), "right").reshape(hi_f.shape),
                   np.searchsorted(fy, hi_f.ravel(), "left").reshape(hi_f.shape))
    # above the first row's centre the first row's value, from the last row's centre the last's
    head_end, tail_start = np.searchsorted(fy, [0.0, sh - 1.0], "left")
    starts = np.concatenate([np.zeros((k, 1, bw), np.int64), start,
                             np.full((k, 1, bw), tail_start)], axis=1)
    ends = np.concatenate([np.full((k, 1, bw), head_end), end, np.full((k, 1, bw), bh)], axis=1)
    ins = np.concatenate([(prof[0][None] >= level[:, :, 0])[:, None], inside,
                          (prof[-1][None] >= level[:, :, 0])[:, None]], axis=1)
    ins &= ends > starts
    first = (np.arange(x0, x1) * h + y0)[:, None]  # each column's first box pixel
    out = []
    for q in range(k):
        sel = ins[q].T  # column-major: by column, then piece
        st, en = (starts[q].T + first)[sel], (ends[q].T + first)[sel]
        if st.size > 1:  # contiguous pieces (also a run reaching the image's bottom and the
            join = np.flatnonzero(st[1:] == en[:-1])  # next column's top) are one run
            if join.size:
                st, en = np.delete(st, join + 1), np.delete(en, join)
        out.append(rle_mod.counts_to_coco_string(rle_mod.runs_to_counts(st, en - st, h * w),
                                                 h, w))
    return out
