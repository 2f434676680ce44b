"""Run-length codecs: the competition's ``EncodedPixels`` and COCO RLE.

Both number the pixels of an H×W mask **top to bottom, then left to right** (column-major:
the Fortran order of the H×W array), so one converts to the other by run arithmetic:

* Kaggle RLE: text ``"s1 l1 s2 l2 …"``: runs of foreground, ``s`` **1-based**, ascending,
  non-overlapping.
* COCO RLE: ``{"size": [H, W], "counts": …}``; uncompressed ``counts`` alternate background
  and foreground run lengths starting with background; compressed ``counts`` is pycocotools'
  LEB128-like text (5 bits per character, values after the third coded as the difference to
  the value two places before).

Masks are ``H×W`` arrays; any dtype, non-zero is foreground. :func:`decode` returns ``uint8``
in Fortran order (as ``pycocotools.mask.decode`` does). Nothing here builds an H×W array
except :func:`encode` (reads one) and :func:`decode` (writes one).
"""

from __future__ import annotations

import re

import numpy as np
from pycocotools import mask as mask_util

from imat_kit.errors import KitError

try:  # the C build of coco_strings_totals (optional: numpy does the same, slower)
    from imat_kit import _counts
except ImportError:  # pragma: no cover - where the extension was not compiled
    _counts = None

__all__ = [
    "coco_string_to_counts",
    "coco_to_kaggle",
    "counts_to_coco_string",
    "counts_to_runs",
    "decode",
    "encode",
    "kaggle_to_coco",
    "parse_runs",
    "runs_to_counts",
    "runs_to_string",
]

_EMPTY = np.zeros(0, dtype=np.int64)


_INTEGER = re.compile(r"-?[0-9]+")
_RLE_CHARS = set("0123456789- \t\r\n")
_DIGIT_OR_SPACE = np.zeros(256, dtype=bool)
_DIGIT_OR_SPACE[list(b"0123456789 \t\r\n")] = True


def integers_of_text(text: str) -> np.ndarray | None:
    """The integers of ``text`` when it holds nothing but digits and whitespace (C speed),
    else None.

    ``np.fromstring`` alone cannot be trusted with other text: numpy 2.4 raises on a bad
    token, numpy 1 stops there and returns what it read so far, numpy 2.0 reads ``2.5`` as 2.
    So the characters are checked first (one vectorised pass), and callers still compare the
    count with their own token count.
    """
    if not text.isascii() or not _DIGIT_OR_SPACE[np.frombuffer(text.encode(), np.uint8)].all():
        return None
    return np.fromstring(text, dtype=np.int64, sep=" ")


def _tokens(rle: str) -> np.ndarray:
    """All integers of ``rle`` (int64); a non-integer token raises :class:`KitError`."""
    toks = rle.split()
    values = integers_of_text(rle)
    if values is not None and values.size == len(toks):
        return values
    for tok in toks:  # a sign, or something that is no integer at all
        if not _INTEGER.fullmatch(tok):
            raise KitError("RLE token is not an integer", value=tok) from None
    odd = sorted(set(rle) - _RLE_CHARS)  # tokens apart by another space (form feed, NBSP)
    if odd:
        raise KitError("RLE tokens must be separated by spaces", value=odd[0])
    return np.array([int(t) for t in toks], dtype=np.int64)


def parse_runs(rle: str | None, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Kaggle RLE text → ``(starts, lengths)``: int64, **0-based** starts, validated.

    Empty text (or ``None``/NaN) is an empty mask. Runs that touch (``end == next start``) are
    merged, so the result is canonical. Raises :class:`KitError` naming the problem for an odd
    token count, a non-integer token, a length < 1, a start < 1, a run past ``H×W``, and
    unsorted or overlapping runs.
    """
    if rle is None or (isinstance(rle, float) and rle != rle):
        return _EMPTY, _EMPTY
    t = _tokens(str(rle))
    if t.size == 0:
        return _EMPTY, _EMPTY
    if t.size % 2:
        raise KitError(f"RLE has an odd number of tokens ({t.size}): starts and lengths must pair",
                       value=rle)
    starts = t[0::2] - 1
    lengths = t[1::2]
    if (lengths < 1).any():
        i = int(np.flatnonzero(lengths < 1)[0])
        raise KitError(f"RLE run {i + 1} has length {int(lengths[i])} (must be >= 1)", value=rle)
    if (starts < 0).any():
        i = int(np.flatnonzero(starts < 0)[0])
        raise KitError(f"RLE run {i + 1} starts at {int(starts[i]) + 1} (starts are 1-based)",
                       value=rle)
    ends = starts + lengths
    npix = int(height) * int(width)
    if ends[-1] > npix or (ends > npix).any():
        i = int(np.flatnonzero(ends > npix)[0])
        raise KitError(f"RLE run {i + 1} ({int(starts[i]) + 1} {int(lengths[i])}) ends at pixel "
                       f"{int(ends[i])}, past the {height}x{width}={npix} pixels of the image",
                       value=rle)
    if starts.size > 1:
        gap = starts[1:] - ends[:-1]
        if (gap < 0).any():
            i = int(np.flatnonzero(gap < 0)[0])
            what = "unsorted" if starts[i + 1] < starts[i] else "overlapping"
            raise KitError(f"RLE runs {i + 1} and {i + 2} are {what} (start {int(starts[i]) + 1} "
                           f"length {int(lengths[i])}, then start {int(starts[i + 1]) + 1})",
                           value=rle)
        if (gap == 0).any():
            keep = np.concatenate(([True], gap != 0))
            starts = starts[keep]
            ends = np.concatenate((ends[:-1][gap != 0], ends[-1:]))
            lengths = ends - starts
    return starts, lengths


def runs_to_string(starts: np.ndarray, lengths: np.ndarray) -> str:
    """0-based ``starts`` and ``lengths`` → Kaggle RLE text (1-based starts)."""
    if len(starts) == 0:
        return ""
    pairs = np.empty(2 * len(starts), dtype=np.int64)
    pairs[0::2] = np.asarray(starts) + 1
    pairs[1::2] = lengths
    return " ".join(map(str, pairs.tolist()))


def _mask_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Foreground runs of an H×W mask in column-major order, in one pass over its pixels.

    Transitions are found in the array's own memory layout (no transposed copy): inside each
    column from the row-to-row difference, between columns from the last row of one column and
    the first row of the next. Their positions, sorted, alternate run start / run end.
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise KitError(f"mask must be a 2-D H×W array, got shape {m.shape}")
    if m.dtype == np.uint8 and m.max(initial=0) <= 1:
        m = m.view(np.bool_)  # 0/1 bytes are already booleans: no converted copy
    elif m.dtype != np.bool_:
        m = m != 0
    h, w = m.shape
    if m.size == 0:
        return _EMPTY, _EMPTY
    if m.flags.f_contiguous and not m.flags.c_contiguous:
        m = m.T  # W×H C-contiguous view: the same code with the roles swapped
        inner = np.flatnonzero(m[:, 1:] != m[:, :-1])  # (W, H-1) transitions inside columns
        col, row = np.divmod(inner, h - 1)
        first, last = m[:, 0], m[:, -1]
    else:
        inner = np.flatnonzero(m[1:] != m[:-1])  # (H-1, W) transitions inside columns
        row, col = np.divmod(inner, w)
        first, last = m[0], m[-1]
    pos = [col * h + row + 1]
    between = np.flatnonzero(first[1:] != last[:-1])  # between column j and j+1
    pos.append((between + 1) * h)
    if first[0]:
        pos.append(np.zeros(1, np.int64))
    if last[-1]:
        pos.append(np.full(1, h * w, np.int64))
    t = np.sort(np.concatenate(pos))
    return t[0::2], t[1::2] - t[0::2]


def encode(mask: np.ndarray) -> str:
    """H×W mask (non-zero = foreground, any memory order) → Kaggle RLE text."""
    return runs_to_string(*_mask_runs(mask))


def runs_to_counts(starts: np.ndarray, lengths: np.ndarray, npix: int) -> np.ndarray:
    """0-based sorted runs → uncompressed COCO counts (uint32, background first)."""
    n = len(starts)
    counts = np.empty(2 * n + 1, dtype=np.int64)
    if n == 0:
        counts[0] = npix
        return counts.astype(np.uint32)
    ends = starts + lengths
    counts[0] = starts[0]
    counts[2:-1:2] = starts[1:] - ends[:-1]
    counts[1::2] = lengths
    counts[-1] = npix - ends[-1]
    if counts[-1] == 0:
        counts = counts[:-1]
    return counts.astype(np.uint32)


def counts_to_runs(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Uncompressed COCO counts → 0-based ``(starts, lengths)``, zero-length runs dropped."""
    c = np.asarray(counts, dtype=np.int64)
    if c.size < 2:
        return _EMPTY, _EMPTY
    pos = np.cumsum(c)
    lengths = c[1::2]
    starts = pos[0::2][: len(lengths)]
    keep = lengths > 0
    if not keep.all():
        starts, lengths = starts[keep], lengths[keep]
        # two runs separated by an empty background run touch: merge them
        if len(starts) > 1:
            gap = starts[1:] - (starts[:-1] + lengths[:-1])
            if (gap == 0).any():
                ends = starts + lengths
                head = np.concatenate(([True], gap != 0))
                tail = np.concatenate((gap != 0, [True]))
                starts, ends = starts[head], ends[tail]
                lengths = ends - starts
    return starts, lengths


def coco_string_to_counts(s: str | bytes) -> np.ndarray:
    """pycocotools' compressed counts text → uncompressed counts (int64), vectorised.

    Inverse of ``rleToString`` in pycocotools' ``maskApi.c``: each value is 5-bit groups,
    least significant first, bit 0x20 = more groups follow, bit 0x10 of the last group =
    negative; values from the fourth on are deltas to the value two places before.
    """
    b = np.frombuffer(s.encode("ascii") if isinstance(s, str) else bytes(s), dtype=np.uint8)
    if b.size == 0:
        return _EMPTY
    c = b.astype(np.int64) - 48
    if (c < 0).any() or (c > 63).any():
        raise KitError("COCO counts text has characters outside '0'..'o'", value=s)
    last = (c & 0x20) == 0  # the last group of each value
    if not last[-1]:
        raise KitError("COCO counts text ends in the middle of a value", value=s)
    ends = np.flatnonzero(last)
    begins = np.concatenate(([0], ends[:-1] + 1))
    group = np.repeat(np.arange(ends.size), ends - begins + 1)
    k = np.arange(c.size) - begins[group]
    if k.max(initial=0) > 11:
        raise KitError("COCO counts text has a value longer than 12 characters", value=s)
    x = np.add.reduceat((c & 0x1F) << (5 * k), begins)
    neg = (c[ends] & 0x10) != 0
    x[neg] -= np.left_shift(1, 5 * (ends[neg] - begins[neg] + 1))
    if x.size > 3:
        x[3::2] = np.cumsum(x[1::2])[1:]  # odd chain: c1, c1+d3, …
        x[4::2] = np.cumsum(x[2::2])[1:]  # even chain from c2
    if (x < 0).any():
        raise KitError("COCO counts text decodes to a negative run length", value=s)
    return x


def counts_to_coco_string(counts: np.ndarray, height: int, width: int) -> str:
    """Uncompressed counts → compressed counts text, by pycocotools."""
    rle = mask_util.frPyObjects({"size": [int(height), int(width)],
                                 "counts": np.asarray(counts, np.uint32).tolist()},
                                int(height), int(width))
    return rle["counts"].decode("ascii")


def kaggle_to_coco(rle: str | None, height: int, width: int) -> dict:
    """Kaggle RLE text → compressed COCO RLE ``{"size": [H, W], "counts": str}`` by run
    arithmetic; the H×W mask is never built."""
    starts, lengths = parse_runs(rle, height, width)
    counts = runs_to_counts(starts, lengths, int(height) * int(width))
    return {"size": [int(height), int(width)],
            "counts": counts_to_coco_string(counts, height, width)}


def coco_to_kaggle(coco_rle: dict) -> str:
    """COCO RLE (compressed text/bytes or uncompressed list ``counts``) → Kaggle RLE text."""
    try:
        h, w = (int(v) for v in coco_rle["size"])
        raw = coco_rle["counts"]
    except (KeyError, TypeError, ValueError):
        raise KitError("COCO RLE needs 'size': [H, W] and 'counts'", value=coco_rle) from None
    counts = (np.asarray(raw, dtype=np.int64) if isinstance(raw, (list, tuple, np.ndarray))
              else coco_string_to_counts(raw))
    if counts.sum() != h * w:
        raise KitError(f"COCO RLE counts sum to {int(counts.sum())}, not {h}x{w}={h * w}",
                       value=coco_rle)
    return runs_to_string(*counts_to_runs(counts))


def decode(rle: str | None, height: int, width: int) -> np.ndarray:
    """Kaggle RLE text → H×W ``uint8`` mask (0/1), Fortran-ordered like pycocotools'."""
    h, w = int(height), int(width)
    starts, lengths = parse_runs(rle, h, w)
    flat = np.zeros(h * w, dtype=np.uint8)
    # a loop over runs (about one per column), each a memset: faster than any index array
    for s, e in zip(starts.tolist(), (starts + lengths).tolist()):
        flat[s:e] = 1
    return flat.reshape(w, h).T


# --------------------------------------------------------------------------------------------
# Set operations on runs (0-based, half-open [start, end), sorted and disjoint), without masks.
# --------------------------------------------------------------------------------------------

def _level_segments(pos: np.ndarray, delta: np.ndarray, keep) -> tuple[np.ndarray, np.ndarray]:
    """Sweep: ``delta`` added to the coverage level at each ``pos``; the pixels whose level
    passes ``keep``, as merged ``(starts, ends)``."""
    if pos.size == 0:
        return _EMPTY, _EMPTY
    up, inv = np.unique(pos, return_inverse=True)
    level = np.cumsum(np.bincount(inv, weights=delta, minlength=up.size))
    sel = np.flatnonzero(keep(level[:-1]))
    starts, ends = up[sel], up[sel + 1]
    if starts.size > 1:  # merge segments that touch
        cut = np.flatnonzero(starts[1:] != ends[:-1])
        starts = starts[np.concatenate(([0], cut + 1))]
        ends = ends[np.concatenate((cut, [ends.size - 1]))]
    return starts, ends


def _runs_where(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray],
                keep) -> tuple[np.ndarray, np.ndarray]:
    """Pixels whose coverage level (1 inside ``a``, 2 inside ``b``, 3 inside both) passes
    ``keep``; returned as merged ``(starts, ends)``."""
    (a_s, a_e), (b_s, b_e) = a, b
    pos = np.concatenate((a_s, a_e, b_s, b_e))
    delta = np.concatenate((np.ones(a_s.size), -np.ones(a_e.size), np.full(b_s.size, 2.0),
                            np.full(b_e.size, -2.0)))
    return _level_segments(pos, delta, keep)


def runs_vote(runs: list[tuple[np.ndarray, np.ndarray]], weights: np.ndarray,
              threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixels whose summed weight over the masks covering them reaches ``threshold``."""
    pos = np.concatenate([s for s, _ in runs] + [e for _, e in runs])
    delta = np.concatenate([np.full(s.size, float(w)) for (s, _), w in zip(runs, weights)]
                           + [np.full(e.size, -float(w)) for (_, e), w in zip(runs, weights)])
    return _level_segments(pos, delta, lambda lv: lv >= threshold - 1e-9)


def runs_difference(a, b):
    """Runs of ``a`` minus ``b``; both ``(starts, ends)``."""
    return _runs_where(a, b, lambda lv: lv == 1)


def runs_union(a, b):
    """Runs of ``a`` or ``b``; both ``(starts, ends)``."""
    return _runs_where(a, b, lambda lv: lv > 0)


def coco_to_runs(coco_rle: dict) -> tuple[np.ndarray, np.ndarray]:
    """COCO RLE (compressed or not) → 0-based ``(starts, ends)``."""
    raw = coco_rle["counts"]
    counts = (np.asarray(raw, dtype=np.int64) if isinstance(raw, (list, tuple, np.ndarray))
              else coco_string_to_counts(raw))
    starts, lengths = counts_to_runs(counts)
    return starts, starts + lengths


def coco_strings_totals(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Pixels covered by each compressed COCO counts text (the sum of its runs, background and
    foreground: ``height × width`` for a valid mask) and whether the text is malformed
    (characters outside ``'0'..'o'``, a value cut off at the end, longer than 12 characters,
    a negative run or one past pycocotools' 32 bits). pycocotools checks none of this, and a
    mask whose runs do not add up to its size makes it read or write past its buffers. In C
    (``imat_kit._counts``, built on install) where it is built, else
    :func:`coco_strings_totals_numpy`; both give the same."""
    return _totals_areas(texts)[:2]


def coco_strings_areas(texts: list[str]) -> np.ndarray:
    """The area (foreground pixels) of each compressed COCO counts text, int64, in one pass:
    pycocotools' ``mask.area`` without decoding each text into an RLE object (0 for a
    malformed text: :func:`coco_strings_totals` finds those)."""
    return _totals_areas(texts)[2]


def _totals_areas(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if _counts is None:
        return _totals_areas_numpy(texts)
    tot, bad, area = _counts.totals(texts)
    return (np.frombuffer(tot, np.int64), np.frombuffer(bad, np.uint8).astype(bool),
            np.frombuffer(area, np.int64))


def coco_strings_totals_numpy(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`coco_strings_totals` vectorised in numpy: the decoder of
    :func:`coco_string_to_counts`, segmented by text (all texts in one pass)."""
    return _totals_areas_numpy(texts)[:2]


def _totals_areas_numpy(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(texts)
    bad = np.fromiter((not isinstance(t, str) for t in texts), bool, n)
    if bad.any():
        texts = ["" if b else t for t, b in zip(texts, bad.tolist())]
    lens = np.fromiter(map(len, texts), np.int64, n)
    joined = "".join(texts)
    if not joined.isascii():
        bad |= np.fromiter((not t.isascii() for t in texts), bool, n)
        joined = "".join("" if b else t for t, b in zip(texts, bad.tolist()))
        lens[bad] = 0
    if not joined:
        return np.zeros(n, np.int64), bad, np.zeros(n, np.int64)
    c = np.frombuffer(joined.encode("ascii"), np.uint8).astype(np.int64) - 48
    tid = np.repeat(np.arange(n), lens)
    wrong = (c < 0) | (c > 63)
    if wrong.any():
        bad[tid[wrong]] = True
        c[wrong] = 0
    last = (c & 0x20) == 0
    text_end = (np.cumsum(lens) - 1)[lens > 0]
    bad[tid[text_end[~last[text_end]]]] = True  # a text ending in the middle of a value
    last[text_end] = True  # values never run on into the next text
    gend = np.flatnonzero(last)
    gbeg = np.concatenate(([0], gend[:-1] + 1))
    glen = gend - gbeg + 1
    gtid = tid[gend]
    if (glen > 12).any():
        bad[gtid[glen > 12]] = True
        glen = np.minimum(glen, 12)
    k = np.minimum(np.arange(c.size) - np.repeat(gbeg, gend - gbeg + 1), 11)
    x = np.add.reduceat((c & 0x1F) << (5 * k), gbeg)
    neg = (c[gend] & 0x10) != 0
    x[neg] -= np.left_shift(1, 5 * glen[neg])
    # values from the fourth on are deltas to the value two places before: a cumulative sum
    # along each text's odd and even chains (the first value stands alone)
    per_text = np.bincount(gtid, minlength=n)
    j = np.arange(gtid.size) - np.repeat(np.cumsum(per_text) - per_text, per_text)
    key = gtid * 3 + np.where(j == 0, 0, 1 + (j % 2 == 0))
    order = np.argsort(key, kind="stable")
    xs, ks = x[order], key[order]
    cs = np.cumsum(xs)
    seg = np.flatnonzero(np.concatenate(([True], ks[1:] != ks[:-1])))
    base = np.repeat(cs[seg] - xs[seg], np.diff(np.append(seg, ks.size)))
    values = np.empty_like(x)
    values[order] = cs - base
    out_of_range = (values < 0) | (values > 0xFFFFFFFF)
    if out_of_range.any():
        bad[gtid[out_of_range]] = True
    # (float64 sums of integers are exact far beyond any image's pixel count)
    totals = np.bincount(gtid, weights=values, minlength=n).astype(np.int64)
    areas = np.bincount(gtid, weights=np.where(j % 2 == 1, values, 0),
                        minlength=n).astype(np.int64)
    totals[bad] = 0
    areas[bad] = 0
    return totals, bad, areas


def region_counts(region: np.ndarray, top: int, left: int, height: int, width: int) -> str:
    """A 0/1 region whose first pixel is (``top``, ``left``) of an ``height`` × ``width`` image,
    as the image's compressed COCO counts text (column-major runs, touching runs merged: the
    text pycocotools writes for the full mask)."""
    h_r, w_r = region.shape
    if not region.any():
        starts = lengths = np.zeros(0, np.int64)
    else:
        cols = np.zeros((w_r, h_r + 2), np.int8)  # each column of the region, padded by 0s
        cols[:, 1:-1] = region.T
        d = np.diff(cols, axis=1)
        c_on, y_on = np.nonzero(d == 1)
        _, y_off = np.nonzero(d == -1)  # same order: column by column, top to bottom
        starts = (left + c_on).astype(np.int64) * height + top + y_on
        lengths = (y_off - y_on).astype(np.int64)
        touch = np.flatnonzero(starts[1:] == starts[:-1] + lengths[:-1])  # across columns
        if touch.size:
            keep = np.ones(len(starts), bool)
            keep[touch + 1] = False
            group = np.cumsum(keep) - 1
            lengths = np.bincount(group, weights=lengths).astype(np.int64)
            starts = starts[keep]
    counts = runs_to_counts(starts, lengths, height * width)
    return counts_to_coco_string(counts, height, width)
