"""Batch kernels of run-length masks: many annotations at once, one numpy pass per step. The
CSV → COCO conversion runs these over chunks of rows; per-annotation calls into pycocotools
cost more in Python overhead than the work itself. ``tests/data/test_rle.py`` checks them
against pycocotools value for value (:mod:`imat_kit.data.rle` holds the one-mask codecs)."""

from __future__ import annotations

import numpy as np

from imat_kit.data.rle import integers_of_text

_EMPTY = np.zeros(0, dtype=np.int64)


class RunBatch:
    """Runs of ``n`` masks, concatenated: ``starts`` (0-based) and ``lengths`` (int64), with
    ``offsets`` (n+1) so that mask ``i`` owns runs ``offsets[i]:offsets[i+1]``; ``bad`` flags
    the masks whose text failed a check (their runs are left out). Touching runs are merged."""

    __slots__ = ("bad", "lengths", "offsets", "starts")

    def __init__(self, starts: np.ndarray, lengths: np.ndarray, offsets: np.ndarray,
                 bad: np.ndarray) -> None:
        self.starts, self.lengths, self.offsets, self.bad = starts, lengths, offsets, bad

    @property
    def run_owner(self) -> np.ndarray:
        """The mask index of each run."""
        return np.repeat(np.arange(len(self.offsets) - 1), np.diff(self.offsets))


def _tokens_per_text(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All integers of many texts, with the count per text and a flag for unparsable texts.

    Fast path: one ``np.fromstring`` over the texts joined by spaces, counting tokens by
    spaces. A text with stray whitespace or a non-integer token makes the totals disagree (or
    the parse fail); then each text is parsed alone and the unparsable ones flagged.
    """
    n = len(texts)
    ntok = np.fromiter((t.count(" ") + 1 for t in texts), dtype=np.int64, count=n)
    values = integers_of_text(" ".join(texts))
    if values is not None and values.size == ntok.sum():
        return values, ntok, np.zeros(n, dtype=bool)
    parts, bad = [], np.zeros(n, dtype=bool)
    for i, t in enumerate(texts):
        v = integers_of_text(t)
        if v is None or v.size != len(t.split()):
            bad[i], ntok[i] = True, 0
            continue
        parts.append(v)
        ntok[i] = v.size
    return (np.concatenate(parts) if parts else _EMPTY), ntok, bad


def parse_runs_batch(texts: list[str], heights: np.ndarray, widths: np.ndarray) -> RunBatch:
    """Parse and validate many Kaggle RLE texts at once (the rules of :func:`parse_runs`).

    Texts must be non-empty; a text that breaks any rule is flagged in ``bad`` (call
    :func:`parse_runs` on it for the precise message) and contributes no runs.
    """
    n = len(texts)
    npix = np.asarray(heights, np.int64) * np.asarray(widths, np.int64)
    values, ntok, bad = _tokens_per_text(texts)
    odd = (ntok % 2 == 1) | (ntok == 0)
    if odd.any():
        bad |= odd
        keep = np.repeat(~odd, ntok)
        values, ntok = values[keep], np.where(odd, 0, ntok)
    starts = values[0::2] - 1
    lengths = values[1::2]
    nruns = ntok // 2
    offsets = np.concatenate(([0], np.cumsum(nruns)))
    owner = np.repeat(np.arange(n), nruns)
    ends = starts + lengths
    wrong = (lengths < 1) | (starts < 0) | (ends > npix[owner])
    if starts.size > 1:
        same = owner[1:] == owner[:-1]
        gap = starts[1:] - ends[:-1]
        wrong[1:] |= same & (gap < 0)
    if wrong.any():
        bad[np.unique(owner[wrong])] = True
        keep = ~bad[owner]
        starts, lengths, ends, owner = starts[keep], lengths[keep], ends[keep], owner[keep]
        nruns = np.where(bad, 0, nruns)
        offsets = np.concatenate(([0], np.cumsum(nruns)))
    if starts.size > 1:  # merge touching runs of the same mask
        touch = (owner[1:] == owner[:-1]) & (starts[1:] == ends[:-1])
        if touch.any():
            head = np.concatenate(([True], ~touch))
            tail = np.concatenate((~touch, [True]))
            starts, ends, owner = starts[head], ends[tail], owner[head]
            lengths = ends - starts
            offsets = np.concatenate(([0], np.cumsum(np.bincount(owner, minlength=n))))
    return RunBatch(starts, lengths, offsets, bad)


def counts_batch(batch: RunBatch, npix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Uncompressed COCO counts of every mask in ``batch`` (as :func:`runs_to_counts`, each
    ending in a background run, possibly of length 0 when the mask reaches the last pixel):
    ``(counts, count_offsets)``."""
    n = len(batch.offsets) - 1
    nruns = np.diff(batch.offsets)
    ends = batch.starts + batch.lengths
    prev_end = np.empty_like(ends)
    prev_end[1:] = ends[:-1]
    firsts = batch.offsets[:-1][nruns > 0]
    prev_end[firsts] = 0
    pairs = np.empty((ends.size, 2), dtype=np.int64)
    pairs[:, 0] = batch.starts - prev_end
    pairs[:, 1] = batch.lengths
    last_end = np.zeros(n, dtype=np.int64)
    has = nruns > 0
    last_end[has] = ends[batch.offsets[1:][has] - 1]
    tail = np.asarray(npix, np.int64) - last_end
    # a zero final background run is left out, as pycocotools does
    with_tail = tail != 0
    counts = np.insert(pairs.ravel(), 2 * batch.offsets[1:][with_tail], tail[with_tail])
    coff = np.concatenate(([0], np.cumsum(2 * nruns + with_tail)))
    return counts, coff


def coco_strings_batch(counts: np.ndarray, coff: np.ndarray) -> list[str]:
    """Compressed COCO counts text of many masks at once (pycocotools' ``rleToString``)."""
    n = len(coff) - 1
    x = counts.copy()
    x[2:] -= counts[:-2]
    for j in range(3):  # the first three values of each mask are stored as they are
        pos = coff[:-1] + j
        pos = pos[pos < coff[1:]]
        x[pos] = counts[pos]
    # a value takes one character when -16 <= x < 16, one more per 5 further bits
    first = (x & 0x1F).astype(np.uint8)
    nchar = np.ones(x.size, dtype=np.int64)
    multi = np.flatnonzero((x + 16).astype(np.uint64) >= 32)
    tails = []
    if multi.size:
        first[multi] |= 0x20
        v = x[multi] >> 5
        idx = np.arange(multi.size)
        while idx.size:
            d = v & 0x1F
            r = v >> 5
            cont = np.where((d & 0x10) != 0, r != -1, r != 0)
            tails.append((multi[idx], (d + 48 + np.where(cont, 0x20, 0)).astype(np.uint8)))
            nchar[multi[idx]] += 1
            idx, v = idx[cont], r[cont]
    first += 48
    start = np.concatenate(([0], np.cumsum(nchar)))
    out = np.repeat(first, nchar)
    for j, (pos, d) in enumerate(tails, start=1):
        out[start[pos] + j] = d
    text = out.tobytes().decode("ascii")
    cut = start[coff].tolist()
    return [text[cut[i]:cut[i + 1]] for i in range(n)]


def bbox_area_batch(batch: RunBatch, heights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``bbox`` (n×4 int64, ``[x, y, w, h]``) and ``area`` (n) of every mask, from its runs,
    as pycocotools' ``toBbox``/``area`` compute them (all zeros for an empty mask)."""
    n = len(batch.offsets) - 1
    nruns = np.diff(batch.offsets)
    bbox = np.zeros((n, 4), dtype=np.int64)
    area = np.zeros(n, dtype=np.int64)
    has = nruns > 0
    if not has.any():
        return bbox, area
    owner = batch.run_owner
    h = np.asarray(heights, np.int64)[owner]
    s = batch.starts
    e = s + batch.lengths - 1
    cs, ce = s // h, e // h
    one_col = cs == ce
    ymin = np.where(one_col, s - cs * h, 0)
    ymax = np.where(one_col, e - ce * h, h - 1)
    first = batch.offsets[:-1][has]
    x0 = cs[first]
    x1 = ce[batch.offsets[1:][has] - 1]
    y0 = np.minimum.reduceat(ymin, first)
    y1 = np.maximum.reduceat(ymax, first)
    bbox[has] = np.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], axis=1)
    area[has] = np.add.reduceat(batch.lengths, first)
    return bbox, area
