"""Per-image instance predictions on disk: one JSON line per image.

A predictions file (``.jsonl``) starts with a header line, then holds one line per image::

    {"format": "imat-kit-predictions", "version": 2, "split": "val", "fold": 0,
     "config": "...", "checkpoint": "...", "soft_size": 28, "tta": "flip",
     "attribute_floor": 0.05}
    {"image_key": "a1b2….jpg", "height": 683, "width": 1024,
     "labels": [31, 6], "scores": [0.97, 0.88], "bboxes": [[x, y, w, h], …],
     "masks": ["<COCO compressed counts>", …], "soft": "<base64 N×S×S uint8>",
     "attr_probs": [[], [[115, 0.93], [136, 0.41]]]}

``labels`` are competition category ids; ``masks`` are COCO RLE counts text at the image's
original size (``size`` is ``[height, width]``); ``soft`` (optional) holds each instance's mask
probabilities (0–255) inside its box resampled to S×S, for ensembling; ``attr_probs``
(version 2, attribute models only) holds each instance's attribute probabilities, sparse:
``[attribute id, probability]`` pairs of the attributes at or above the file's
``attribute_floor``, by id. ``attributes`` are hard attribute sets: written by hand-made files
and read from version-1 files; for a file with ``attr_probs`` they are those at or above
:data:`ATTRIBUTE_THRESHOLD`. Version-1 files (no ``attr_probs``) are read as before.

Every reader checks every line (:func:`iter_predictions`): a corrupt file is refused with the
file, the line, the field and the value, never scored, fused or submitted. A finished file
holds each image once. ``imat-kit predict`` appends to ``OUT.partial`` while it runs (a killed
run keeps every finished image, a torn last line is dropped, a resumed run's later line of an
image wins) and writes the finished file, each image once in the split's order, at the end.
A header may record ``label_space`` (the category and attribute ids of the data the
predictions were made for; ``predict`` and ``ensemble`` write it), which ``ensemble`` checks
the labels against when it is not given ``--data``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imat_kit import fields
from imat_kit.data import rle as rle_mod
from imat_kit.data.paths import ann_relpath
from imat_kit.errors import KitError
from imat_kit.files import atomic_open

FORMAT = "imat-kit-predictions"
VERSION = 2  # 2: attr_probs (attribute probabilities); 1 is still read
#: attributes at or above this probability form an instance's attribute set by default
ATTRIBUTE_THRESHOLD = 0.5
#: attribute probabilities below this are not stored by default
ATTRIBUTE_FLOOR = 0.05


@dataclass
class ImagePrediction:
    """The instances predicted on one image (all arrays have one row per instance)."""

    image_key: str
    height: int
    width: int
    labels: np.ndarray  # (N,) int64 category ids
    scores: np.ndarray  # (N,) float32
    bboxes: np.ndarray  # (N, 4) float32 [x, y, w, h]
    masks: list[str]  # N COCO counts strings at (height, width)
    soft: np.ndarray | None = None  # (N, S, S) uint8 probabilities inside the box
    attributes: list[tuple[int, ...]] = field(default_factory=list)  # N sorted id sets
    attr_probs: list[dict[int, float]] = field(default_factory=list)  # N {id: probability}

    def __len__(self) -> int:
        return len(self.labels)

    def rles(self) -> list[dict]:
        return [{"size": [self.height, self.width], "counts": m} for m in self.masks]

    def take(self, idx: np.ndarray) -> ImagePrediction:
        idx = np.asarray(idx, dtype=np.int64)
        return ImagePrediction(
            self.image_key, self.height, self.width, self.labels[idx], self.scores[idx],
            self.bboxes[idx], [self.masks[i] for i in idx.tolist()],
            None if self.soft is None else self.soft[idx],
            [self.attributes[i] for i in idx.tolist()] if self.attributes else [],
            [self.attr_probs[i] for i in idx.tolist()] if self.attr_probs else [])

    def to_json(self) -> str:
        d = {"image_key": self.image_key, "height": int(self.height), "width": int(self.width),
             "labels": self.labels.astype(int).tolist(),
             "scores": [round(float(s), 5) for s in self.scores],
             "bboxes": np.round(self.bboxes.astype(float), 2).tolist(), "masks": self.masks}
        if self.attr_probs:
            d["attr_probs"] = [[[int(k), round(float(v), 4)] for k, v in sorted(a.items())]
                               for a in self.attr_probs]
        elif self.attributes:
            d["attributes"] = [list(a) for a in self.attributes]
        if self.soft is not None and len(self):
            d["soft"] = base64.b64encode(np.ascontiguousarray(self.soft, np.uint8).tobytes()
                                         ).decode("ascii")
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str, soft_size: int | None = None) -> ImagePrediction:
        """One image line, with the checks that need no knowledge of the data (see
        :func:`iter_predictions`); a problem raises :class:`ValueError` naming the field."""
        try:
            pred, flat = _parse_line(json.loads(line), soft_size)
            problems = _chunk_problems([(0, pred, flat)], None)
        except _Bad as e:
            raise ValueError(e.text()) from None
        if problems:
            raise ValueError(min(problems, key=lambda t: t[:2])[2].text())
        return pred


def attribute_sets(probs: list[dict[int, float]],
                   threshold: float = ATTRIBUTE_THRESHOLD) -> list[tuple[int, ...]]:
    """Each instance's attribute set: the ids whose probability reaches ``threshold``."""
    return [tuple(sorted(k for k, v in a.items() if v >= threshold)) for a in probs]


def sparse_probs(probs: np.ndarray, ids: tuple[int, ...] | list[int],
                 floor: float = ATTRIBUTE_FLOOR) -> list[dict[int, float]]:
    """N × A probabilities (column i is attribute ``ids[i]``) → per instance ``{id: p}`` of
    those at or above ``floor``."""
    ids_a = np.asarray(ids, np.int64)
    out = []
    for row in np.asarray(probs, np.float32):
        keep = np.flatnonzero(row >= floor)
        out.append({int(ids_a[k]): float(row[k]) for k in keep})
    return out


def empty_prediction(image_key: str, height: int, width: int,
                     soft_size: int | None = None) -> ImagePrediction:
    return ImagePrediction(image_key, height, width, np.zeros(0, np.int64),
                           np.zeros(0, np.float32), np.zeros((0, 4), np.float32), [],
                           None if not soft_size else np.zeros((0, soft_size, soft_size),
                                                               np.uint8))


def header(**meta) -> str:
    """The header line (without its newline) of a predictions file."""
    return json.dumps({"format": FORMAT, "version": VERSION, **meta})


class PredictionsWriter:
    """Writes a predictions file atomically: the header on entering, one line per
    :meth:`write`, renamed onto ``path`` only when the block ends without an error::

        with PredictionsWriter(path, {"split": "test"}) as w:
            for p in preds:
                w.write(p)
    """

    def __init__(self, path: str | Path, meta: dict) -> None:
        self.path, self.meta, self.count = Path(path), dict(meta), 0
        self._ctx = atomic_open(self.path, "w", encoding="utf-8")
        self._f = None

    def __enter__(self) -> PredictionsWriter:
        self._f = self._ctx.__enter__()
        self._f.write(header(**self.meta) + "\n")
        return self

    def write(self, pred: ImagePrediction) -> None:
        self._f.write(pred.to_json() + "\n")
        self.count += 1

    def __exit__(self, *exc) -> bool | None:
        return self._ctx.__exit__(*exc)


def write_predictions(path: str | Path, meta: dict,
                      preds: Iterable[ImagePrediction]) -> int:
    """Write a whole predictions file atomically (header from ``meta``, then one line per
    image); returns the number of images written."""
    with PredictionsWriter(path, meta) as w:
        for p in preds:
            w.write(p)
    return w.count


def read_header(path: str | Path) -> dict:
    file = str(path)
    if not Path(path).is_file():
        raise KitError("predictions file not found", file=file)
    with open(path, "rb") as f:
        first = fields.decode(f.readline(), file=file)
    try:
        h = json.loads(first)
    except (json.JSONDecodeError, RecursionError):
        h = None
    if not isinstance(h, dict) or h.get("format") != FORMAT:
        raise KitError(f"not an imat-kit predictions file (first line must be a {FORMAT} "
                       "header)", file=file, row=1, value=first.strip()[:60] or None)
    if not isinstance(h.get("version"), int) or not 1 <= h["version"] <= VERSION:
        raise KitError(f"predictions format version {h.get('version')!r} is not one this "
                       f"imat-kit reads (1–{VERSION}); a newer imat-kit wrote it?", file=file,
                       row=1, value=h.get("version"))
    ss = h.get("soft_size")
    if ss is not None and (not _is_int(ss) or ss < 0):
        raise KitError("soft_size must be a non-negative integer", file=file, row=1, value=ss)
    return h


# --- checking every image line ------------------------------------------------------------

#: image lines checked together: the numeric checks are vectorised over a chunk's instances
CHECK_CHUNK = 64


@dataclass(frozen=True)
class Expected:
    """What the step that reads a predictions file knows the file must fit: the label space
    (the data's category and attribute ids) and the split's images (``image_key → (height,
    width)``). A ``None`` field is not known there and not checked."""

    categories: frozenset[int] | None = None
    attribute_ids: frozenset[int] | None = None
    images: Mapping[str, tuple[int, int]] | None = None
    split: str = "the split"  # how messages name the images, e.g. "fold 0's validation set"
    labels_from: str = "the label file"

    @classmethod
    def of(cls, labels, images: Mapping[str, tuple[int, int]] | None = None,
           split: str = "the split") -> Expected:
        """The label space of a :class:`~imat_kit.data.labels.Labels` (and the split's images)."""
        return cls(frozenset(labels.category_ids), frozenset(labels.attribute_ids), images,
                   split, labels.source or "the label file")

    @classmethod
    def of_split(cls, labels, gt_coco: dict, fold: int | None) -> Expected:
        """What predictions of a split must fit: the label file's ids and the images of
        ``gt_coco``, fold ``fold``'s validation set (``None``: the test set)."""
        split = (f"fold {fold}'s validation set ({ann_relpath('val', fold)})" if fold is not None
                 else f"the test set ({ann_relpath('test')})")
        return cls.of(labels, {im["image_key"]: (im["height"], im["width"])
                               for im in gt_coco["images"]}, split)

    @classmethod
    def of_header(cls, head: dict, file: str) -> Expected | None:
        """The label space a predictions header records (``label_space``), or None."""
        ls = head.get("label_space")
        if ls is None:
            return None
        ids = [ls.get(k) if isinstance(ls, dict) else None for k in ("categories", "attributes")]
        if not all(isinstance(v, list) and all(_is_int(x) for x in v) for v in ids):
            raise KitError("label_space must hold lists of integer 'categories' and "
                           "'attributes' ids", file=file, row=1, value=_short(ls))
        return cls(frozenset(ids[0]), frozenset(ids[1]),
                   labels_from="the label space of its header")


def label_space(labels) -> dict:
    """The ``label_space`` header field: the category and attribute ids predictions use."""
    return {"categories": sorted(labels.category_ids), "attributes": sorted(labels.attribute_ids)}


_NO_IDS = np.zeros(0)
_NO_OWNER = np.zeros(0, np.int64)


class _Bad(Exception):
    """A problem with one field of one image line."""

    def __init__(self, field: str, message: str, value: object = None) -> None:
        super().__init__(field)
        self.field, self.message, self.value = field, message, value

    def text(self) -> str:
        return f"{self.field} {self.message}"


def _short(v: object) -> object:
    return v if not isinstance(v, (list, dict)) else json.dumps(v)[:60]


def _list(d: dict, key: str, n: int | None = None) -> list:
    if key not in d:
        raise _Bad(key, "is missing")
    v = d[key]
    if not isinstance(v, list):
        raise _Bad(key, "must be a list", _short(v))
    if n is not None and len(v) != n:
        raise _Bad(key, f"has {len(v)} entries for {n} labels", len(v))
    return v


def _first(items: list, ok) -> int:
    return next((i for i, x in enumerate(items) if not ok(x)), 0)


_is_int = fields.is_int


def _shape(x: object) -> tuple | None:
    try:
        return np.shape(x)
    except ValueError:  # ragged
        return None


def _has_bool(raw: list) -> bool:
    """A JSON ``true``/``false`` among numbers (numpy would read it as 1 or 0)."""
    return any(type(x) is bool or (type(x) is list and any(type(v) is bool for v in x))
               for x in raw)


def _numbers(raw: list, key: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    """``raw`` as float32 of ``shape`` (as stored; a number past float32 becomes infinite and
    is refused by the range checks); a non-number (a text such as ``"0.95"``, a boolean, a
    null) or a wrong shape names its entry."""
    try:
        a = np.asarray(raw)
        if a.size == 0:
            a = a.reshape(shape)
        a = None if a.dtype.kind not in "iuf" or _has_bool(raw) else a.astype(np.float32)
    except (ValueError, TypeError, OverflowError):
        a = None
    if a is None or a.shape != shape:
        i = _first(raw, lambda x: _shape(x) == shape[1:] and not _has_bool([x]) and (
            fields.is_number(x) or (isinstance(x, list) and all(fields.is_number(v)
                                                                for v in x))))
        raise _Bad(f"{key}[{i}]", f"must be {what}", _short(raw[i]) if raw else None)
    return a


def _parse_line(d: object, soft_size: int | None) -> tuple[ImagePrediction, tuple]:
    """An image line's JSON as an :class:`ImagePrediction`, with the checks of types and
    lengths; the numeric checks are left to :func:`_chunk_problems` (vectorised), which gets
    the second item (the attribute ids and probabilities, flattened)."""
    if not isinstance(d, dict):
        raise _Bad("line", "must be a JSON object", _short(d))
    key = d.get("image_key")
    if not isinstance(key, str) or not key or fields.has_control(key):
        raise _Bad("image_key", "must be a non-empty text without control characters",
                    _short(key))
    for k in ("height", "width"):
        if not _is_int(d.get(k)) or not 1 <= d[k] <= fields.MAX_SIDE:
            raise _Bad(k, f"must be an integer within 1..{fields.MAX_SIDE}" if k in d
                       else "is missing", _short(d.get(k)))
    raw = _list(d, "labels")
    n = len(raw)
    try:
        labels = np.asarray(raw) if n else np.zeros(0, np.int64)
    except (ValueError, OverflowError):  # ragged
        labels = np.zeros(0, object)
    if labels.dtype.kind not in "iu" or labels.ndim != 1 or _has_bool(raw):
        i = _first(raw, _is_int)
        raise _Bad(f"labels[{i}]", "must be an integer category id", _short(raw[i]))
    scores = _numbers(_list(d, "scores", n), "scores", (n,), "a number")
    bboxes = _numbers(_list(d, "bboxes", n), "bboxes", (n, 4), "[x, y, w, h] (4 numbers)")
    masks = _list(d, "masks", n)  # each checked to be counts text by _chunk_problems
    soft = None
    if d.get("soft"):
        if not soft_size:
            raise _Bad("soft", "is given but the header has no soft_size")
        try:
            buf = base64.b64decode(d["soft"], validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise _Bad("soft", "is not base64 text", str(d["soft"])[:40]) from None
        if len(buf) != n * soft_size * soft_size:
            raise _Bad("soft", f"holds {len(buf)} bytes; {n} masks of the header's soft_size "
                       f"{soft_size}×{soft_size} are {n * soft_size * soft_size}", len(buf))
        soft = np.frombuffer(buf, np.uint8).reshape(n, soft_size, soft_size).copy()
    probs, prob_ids, prob_values, prob_owner = [], _NO_IDS, _NO_IDS, _NO_OWNER
    if d.get("attr_probs"):
        ap = _list(d, "attr_probs", n)
        if not all(isinstance(a, list) for a in ap):
            i = _first(ap, lambda a: isinstance(a, list))
            raise _Bad(f"attr_probs[{i}]", "must be a list of [attribute id, probability]",
                       _short(ap[i]))
        pairs = [x for a in ap for x in a]
        try:
            arr = np.asarray(pairs, np.float64).reshape(len(pairs), 2)
        except (ValueError, TypeError):
            i = _first(ap, lambda a: all(isinstance(x, list) and len(x) == 2 and not any(
                isinstance(v, (str, list, dict)) or v is None for v in x) for x in a))
            raise _Bad(f"attr_probs[{i}]", "must be a list of [attribute id, probability] "
                       "pairs", _short(ap[i])) from None
        prob_ids, prob_values = arr[:, 0], arr[:, 1]
        prob_owner = np.repeat(np.arange(n), [len(a) for a in ap])
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(prob_ids) | (prob_ids != np.floor(prob_ids)) | (
                np.abs(prob_ids) > 10 ** fields.MAX_DIGITS)
        if bad.any():
            i = int(np.argmax(bad))
            raise _Bad(f"attr_probs[{prob_owner[i]}]", "has an attribute id that is not an "
                       "integer", float(prob_ids[i]))
        probs = [{int(k): float(v) for k, v in a} for a in ap]
        if any(len(p) != len(a) for p, a in zip(probs, ap)):
            i = next(i for i, (p, a) in enumerate(zip(probs, ap)) if len(p) != len(a))
            raise _Bad(f"attr_probs[{i}]", "repeats an attribute id", _short(ap[i]))
    attrs, set_ids, set_owner = [], _NO_IDS, _NO_OWNER
    if d.get("attributes"):
        at = _list(d, "attributes", n)
        if not all(isinstance(a, list) and all(_is_int(x) for x in a) for a in at):
            i = _first(at, lambda a: isinstance(a, list) and all(_is_int(x) for x in a))
            raise _Bad(f"attributes[{i}]", "must be a list of integer attribute ids",
                       _short(at[i]))
        attrs = [tuple(a) for a in at]
        set_ids = np.asarray([x for a in at for x in a], np.float64)
        set_owner = np.repeat(np.arange(n), [len(a) for a in at])
    if probs and not attrs:
        attrs = attribute_sets(probs)
    pred = ImagePrediction(key, d["height"], d["width"], labels.astype(np.int64), scores,
                           bboxes, masks, soft, attrs, probs)
    return pred, (prob_ids, prob_values, prob_owner, set_ids, set_owner)


def _image_problem(pred: ImagePrediction, expected: Expected | None) -> _Bad | None:
    """An image line against the split's images: a key it lacks, a size it does not have."""
    if expected is None or expected.images is None:
        return None
    size = expected.images.get(pred.image_key)
    if size is None:
        return _Bad("image_key", f"is not an image of {expected.split} (predictions of "
                    "another fold or dataset?)", pred.image_key)
    if (pred.height, pred.width) != tuple(size):
        return _Bad("height" if pred.height != size[0] else "width",
                    f"is {pred.height}×{pred.width} (height×width); the image in "
                    f"{expected.split} is {size[0]}×{size[1]}", f"{pred.height}x{pred.width}")
    return None


def _in_set(ids: np.ndarray, known: frozenset[int]) -> np.ndarray:
    """Which of the (integer-valued) ``ids`` are in ``known``, by a lookup table."""
    top = max(known, default=-1)
    lut = np.zeros(top + 2, bool)
    lut[list(known)] = True
    inside = (ids >= 0) & (ids <= top)
    return inside & lut[np.where(inside, ids, top + 1).astype(np.int64)]


def _chunk_problems(items: list[tuple[int, ImagePrediction, tuple]],
                    expected: Expected | None) -> list[tuple[int, int, _Bad]]:
    """The numeric checks of many image lines at once: ``(row, field order, problem)`` of the
    first bad entry of each check."""
    out = []
    rows = np.array([r for r, _, _ in items])
    preds = [p for _, p, _ in items]
    ns = np.array([len(p) for p in preds])
    inst_row = np.repeat(rows, ns)
    inst_j = np.arange(ns.sum()) - np.repeat(np.cumsum(ns) - ns, ns)

    def first(bad: np.ndarray, order: int, make) -> None:
        if bad.any():
            i = int(np.argmax(bad))
            out.append((int(inst_row[i]), order, make(i, int(inst_j[i]))))

    if ns.sum():
        labels = np.concatenate([p.labels for p in preds])
        ok = labels >= 0 if expected is None or expected.categories is None else _in_set(
            labels, expected.categories)
        where = "" if expected is None else f" of {expected.labels_from}"
        first(~ok, 1, lambda i, j: _Bad(f"labels[{j}]", f"is not a category id{where}",
                                        int(labels[i])))
        scores = np.concatenate([p.scores for p in preds])
        first(~((scores >= 0) & (scores <= 1)), 2, lambda i, j: _Bad(
            f"scores[{j}]", "must be within 0..1", float(scores[i])))
        boxes = np.concatenate([p.bboxes for p in preds])
        bad = ~np.isfinite(boxes).all(1) | ~(boxes[:, 2] >= 0) | ~(boxes[:, 3] >= 0)
        first(bad, 3, lambda i, j: _Bad(f"bboxes[{j}]", "must be finite [x, y, w, h] with "
                                        "w, h >= 0", boxes[i].tolist()))
        texts = [m for p in preds for m in p.masks]
        totals, malformed = rle_mod.coco_strings_totals(texts)
        npix = np.repeat([p.height * p.width for p in preds], ns)

        def size(i: int) -> str:
            p = preds[int(np.searchsorted(np.cumsum(ns), i, side="right"))]
            return f"{p.height}×{p.width}"

        first(malformed | (totals != npix), 4, lambda i, j: _Bad(
            f"masks[{j}]", "is not COCO compressed counts text" if malformed[i] else
            f"covers {totals[i]} pixels, not the image's {size(i)} = {npix[i]} (a mask "
            "encoded at another size?)", texts[i]))
    known = None if expected is None else expected.attribute_ids
    where = "" if known is None else f" of {expected.labels_from}"
    for field_name, order, at, owner_at in (("attr_probs", 5, 0, 2), ("attributes", 7, 3, 4)):
        ids = np.concatenate([f[at] for _, _, f in items])
        if not ids.size:
            continue
        ids_row = np.concatenate([np.full(f[at].size, r) for r, _, f in items])
        owner = np.concatenate([f[owner_at] for _, _, f in items])
        bad = ~(_in_set(ids, known) if known is not None else ids >= 0)
        if bad.any():
            i = int(np.argmax(bad))
            out.append((int(ids_row[i]), order, _Bad(
                f"{field_name}[{owner[i]}]", f"has attribute id {int(ids[i])}, not an "
                f"attribute{where}", int(ids[i]))))
        if at == 0:
            values = np.concatenate([f[1] for _, _, f in items])
            bad = ~((values >= 0) & (values <= 1))
            if bad.any():
                i = int(np.argmax(bad))
                out.append((int(ids_row[i]), 6, _Bad(
                    f"attr_probs[{owner[i]}]", "has a probability outside 0..1 (attribute "
                    f"{int(ids[i])})", float(values[i]))))
    return out


def soft_size_of(head: dict) -> int | None:
    """The soft-mask size of a file: its header's ``soft_size``; for an ensemble written
    before ensembles recorded it, the one size all its inputs' headers give."""
    if head.get("soft_size") or not isinstance(head.get("inputs"), list):
        return head.get("soft_size")
    sizes = {i.get("soft_size") if isinstance(i, dict) else None for i in head["inputs"]}
    return sizes.pop() if len(sizes) == 1 else None


def _rows(path: str | Path, expected: Expected | None,
          resumable: bool) -> Iterator[tuple[int, ImagePrediction]]:
    """``(line number, prediction)`` of every image line, each checked (see
    :func:`iter_predictions`). The numeric checks run on chunks of :data:`CHECK_CHUNK` lines,
    each in a helper thread while the next chunk is parsed (the masks' check runs without the
    GIL); a chunk's lines are yielded once it passed, so the first problem in file order is
    the one reported, whatever the timing."""
    from concurrent.futures import ThreadPoolExecutor

    file = str(path)
    soft = soft_size_of(read_header(path))
    pending: list[tuple[int, ImagePrediction, tuple]] = []
    inflight: list = []  # the chunk being checked: [(future, its items)]

    def refuse(row: int, bad: _Bad) -> KitError:
        return KitError(bad.text(), file=file, row=row,
                        value=None if bad.value is None else _short(bad.value))

    def passed(problems: list, chunk: list) -> list[tuple[int, ImagePrediction]]:
        if problems:
            row, _, bad = min(problems, key=lambda t: t[:2])
            raise refuse(row, bad)
        return [(r, p) for r, p, _ in chunk]

    def settle() -> list[tuple[int, ImagePrediction]]:
        """The chunk in flight, once checked (its first problem raised)."""
        if not inflight:
            return []
        future, chunk = inflight.pop()
        return passed(future.result(), chunk)

    def rest() -> list[tuple[int, ImagePrediction]]:
        """Everything read so far, checked: the chunk in flight, then the pending lines."""
        done = settle()
        chunk = list(pending)
        pending.clear()
        return done + passed(_chunk_problems(chunk, expected) if chunk else [], chunk)

    with ThreadPoolExecutor(1) as pool, open(path, "rb") as f:
        f.readline()
        for row, raw in enumerate(f, start=2):
            torn = not raw.endswith(b"\n")
            if torn and resumable:
                break  # torn by a kill mid-write: the image is predicted again on resume
            try:
                line = raw.decode("utf-8")
                d = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
                yield from rest()
                if isinstance(e, UnicodeDecodeError):
                    what = "is not valid UTF-8"
                    value = raw[e.start:e.start + 4]
                elif isinstance(e, RecursionError):
                    what, value = "nests arrays/objects too deep to read", None
                else:
                    what = ("is cut off: the file ends mid-line (an interrupted write or "
                            "copy?)" if torn else f"is not JSON ({e.msg}, column {e.colno})")
                    value = line.strip()[:60]
                raise KitError(f"line {what}", file=file, row=row, value=value) from None
            try:
                pred, flat = _parse_line(d, soft)
                bad = _image_problem(pred, expected)
            except _Bad as e:
                bad = e
            if bad is not None:
                yield from rest()
                raise refuse(row, bad)
            pending.append((row, pred, flat))
            if len(pending) >= CHECK_CHUNK:
                done = settle()
                chunk = list(pending)
                pending.clear()
                inflight.append((pool.submit(_chunk_problems, chunk, expected), chunk))
                yield from done
        yield from rest()


def iter_predictions(path: str | Path, expected: Expected | None = None, *,
                     resumable: bool = False) -> Iterator[ImagePrediction]:
    """The images of a predictions file, in file order, each line checked: the array lengths
    agree; labels are integers (of ``expected``'s label space when given); scores within 0–1;
    boxes finite with non-negative sizes; every mask a valid COCO counts text covering exactly
    ``height × width`` pixels; soft masks of the header's ``soft_size``; attribute ids (of
    the label space) with probabilities within 0–1; and, when ``expected`` knows the split's
    images, ``image_key`` one of them at its size. The first problem raises a
    :class:`KitError` naming the file, the line (1-based, the header is line 1), the field
    and the value. ``resumable`` (predict's own partial files): a torn last line is ignored;
    otherwise it is an error too."""
    for _, p in _rows(path, expected, resumable):
        yield p


def read_predictions(path: str | Path, expected: Expected | None = None, *,
                     require_images: bool = True) -> tuple[dict, dict[str, ImagePrediction]]:
    """Header and ``image_key → prediction``, every line checked (:func:`iter_predictions`);
    an image on two lines is an error (a finished file holds each image once). A file
    without any image line is an error unless ``require_images`` is False."""
    head, preds, rows = read_header(path), {}, {}
    for row, p in _rows(path, expected, False):
        if p.image_key in rows:
            raise KitError(f"image_key is on line {rows[p.image_key]} already (each image "
                           "once: two files joined?)", file=str(path), row=row,
                           value=p.image_key)
        rows[p.image_key] = row
        preds[p.image_key] = p
    if require_images and not preds:
        raise KitError("the predictions file holds no image (only its header)", file=str(path),
                       row=2)
    return head, preds
