"""The checks of every image line of a predictions file: types and lengths while a line is
parsed, the numbers vectorised over a chunk of lines, the images against the split's
(:class:`Expected`); the first problem in file order is the one reported, naming the file, the
line, the field and the value."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from imat_kit import fields
from imat_kit.data import rle as rle_mod
from imat_kit.data.paths import ann_relpath
from imat_kit.errors import KitError
from imat_kit.predictions.instances import ImagePrediction, attribute_sets

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
                           "'attributes' ids", file=file, row=1, value=short_value(ls))
        return cls(frozenset(ids[0]), frozenset(ids[1]),
                   labels_from="the label space of its header")


_NO_IDS = np.zeros(0)


_NO_OWNER = np.zeros(0, np.int64)


class FlatAttributes(NamedTuple):
    """An image line's attribute ids, flattened for the vectorised checks: the ids and values
    of ``attr_probs`` and the ids of ``attributes``, each with the instance it belongs to."""

    prob_ids: np.ndarray
    prob_values: np.ndarray
    prob_owner: np.ndarray
    set_ids: np.ndarray
    set_owner: np.ndarray


class LineProblem(Exception):
    """A problem with one field of one image line."""

    def __init__(self, field: str, message: str, value: object = None) -> None:
        super().__init__(field)
        self.field, self.message, self.value = field, message, value

    def text(self) -> str:
        return f"{self.field} {self.message}"


def short_value(v: object) -> object:
    return v if not isinstance(v, (list, dict)) else json.dumps(v)[:60]


def _list(d: dict, key: str, n: int | None = None) -> list:
    if key not in d:
        raise LineProblem(key, "is missing")
    v = d[key]
    if not isinstance(v, list):
        raise LineProblem(key, "must be a list", short_value(v))
    if n is not None and len(v) != n:
        raise LineProblem(key, f"has {len(v)} entries for {n} labels", len(v))
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
        raise LineProblem(f"{key}[{i}]", f"must be {what}", short_value(raw[i]) if raw else None)
    return a


def parse_line_fields(d: object, soft_size: int | None) -> tuple[ImagePrediction, FlatAttributes]:
    """An image line's JSON as an :class:`ImagePrediction`, with the checks of types and
    lengths; the numeric checks are left to :func:`chunk_problems` (vectorised), which gets
    the second item (the attribute ids and probabilities, flattened)."""
    if not isinstance(d, dict):
        raise LineProblem("line", "must be a JSON object", short_value(d))
    key = d.get("image_key")
    if not isinstance(key, str) or not key or fields.has_control(key):
        raise LineProblem("image_key", "must be a non-empty text without control characters",
                    short_value(key))
    for k in ("height", "width"):
        if not _is_int(d.get(k)) or not 1 <= d[k] <= fields.MAX_SIDE:
            raise LineProblem(k, f"must be an integer within 1..{fields.MAX_SIDE}" if k in d
                       else "is missing", short_value(d.get(k)))
    raw = _list(d, "labels")
    n = len(raw)
    try:
        labels = np.asarray(raw) if n else np.zeros(0, np.int64)
    except (ValueError, OverflowError):  # ragged
        labels = np.zeros(0, object)
    if labels.dtype.kind not in "iu" or labels.ndim != 1 or _has_bool(raw):
        i = _first(raw, _is_int)
        raise LineProblem(f"labels[{i}]", "must be an integer category id", short_value(raw[i]))
    scores = _numbers(_list(d, "scores", n), "scores", (n,), "a number")
    bboxes = _numbers(_list(d, "bboxes", n), "bboxes", (n, 4), "[x, y, w, h] (4 numbers)")
    masks = _list(d, "masks", n)  # each checked to be counts text by chunk_problems
    soft = None
    if d.get("soft"):
        if not soft_size:
            raise LineProblem("soft", "is given but the header has no soft_size")
        try:
            buf = base64.b64decode(d["soft"], validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise LineProblem("soft", "is not base64 text", str(d["soft"])[:40]) from None
        if len(buf) != n * soft_size * soft_size:
            raise LineProblem("soft", f"holds {len(buf)} bytes; {n} masks of the header's "
                              f"soft_size {soft_size}×{soft_size} are "
                              f"{n * soft_size * soft_size}", len(buf))
        soft = np.frombuffer(buf, np.uint8).reshape(n, soft_size, soft_size).copy()
    probs, prob_ids, prob_values, prob_owner = [], _NO_IDS, _NO_IDS, _NO_OWNER
    if d.get("attr_probs"):
        ap = _list(d, "attr_probs", n)
        if not all(isinstance(a, list) for a in ap):
            i = _first(ap, lambda a: isinstance(a, list))
            raise LineProblem(f"attr_probs[{i}]", "must be a list of [attribute id, probability]",
                       short_value(ap[i]))
        pairs = [x for a in ap for x in a]
        try:
            arr = np.asarray(pairs, np.float64).reshape(len(pairs), 2)
        except (ValueError, TypeError):
            i = _first(ap, lambda a: all(isinstance(x, list) and len(x) == 2 and not any(
                isinstance(v, (str, list, dict)) or v is None for v in x) for x in a))
            raise LineProblem(f"attr_probs[{i}]", "must be a list of [attribute id, probability] "
                       "pairs", short_value(ap[i])) from None
        prob_ids, prob_values = arr[:, 0], arr[:, 1]
        prob_owner = np.repeat(np.arange(n), [len(a) for a in ap])
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(prob_ids) | (prob_ids != np.floor(prob_ids)) | (
                np.abs(prob_ids) > 10 ** fields.MAX_DIGITS)
        if bad.any():
            i = int(np.argmax(bad))
            raise LineProblem(f"attr_probs[{prob_owner[i]}]", "has an attribute id that is not an "
                       "integer", float(prob_ids[i]))
        probs = [{int(k): float(v) for k, v in a} for a in ap]
        if any(len(p) != len(a) for p, a in zip(probs, ap)):
            i = next(i for i, (p, a) in enumerate(zip(probs, ap)) if len(p) != len(a))
            raise LineProblem(f"attr_probs[{i}]", "repeats an attribute id", short_value(ap[i]))
    attrs, set_ids, set_owner = [], _NO_IDS, _NO_OWNER
    if d.get("attributes"):
        at = _list(d, "attributes", n)
        if not all(isinstance(a, list) and all(_is_int(x) for x in a) for a in at):
            i = _first(at, lambda a: isinstance(a, list) and all(_is_int(x) for x in a))
            raise LineProblem(f"attributes[{i}]", "must be a list of integer attribute ids",
                       short_value(at[i]))
        attrs = [tuple(a) for a in at]
        set_ids = np.asarray([x for a in at for x in a], np.float64)
        set_owner = np.repeat(np.arange(n), [len(a) for a in at])
    if probs and not attrs:
        attrs = attribute_sets(probs)
    pred = ImagePrediction(key, d["height"], d["width"], labels.astype(np.int64), scores,
                           bboxes, masks, soft, attrs, probs)
    return pred, FlatAttributes(prob_ids, prob_values, prob_owner, set_ids, set_owner)


def image_problem(pred: ImagePrediction, expected: Expected | None) -> LineProblem | None:
    """An image line against the split's images: a key it lacks, a size it does not have."""
    if expected is None or expected.images is None:
        return None
    size = expected.images.get(pred.image_key)
    if size is None:
        return LineProblem("image_key", f"is not an image of {expected.split} (predictions of "
                    "another fold or dataset?)", pred.image_key)
    if (pred.height, pred.width) != tuple(size):
        return LineProblem("height" if pred.height != size[0] else "width",
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


def chunk_problems(items: list[tuple[int, ImagePrediction, FlatAttributes]],
                    expected: Expected | None) -> list[tuple[int, int, LineProblem]]:
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
        first(~ok, 1, lambda i, j: LineProblem(f"labels[{j}]", f"is not a category id{where}",
                                        int(labels[i])))
        scores = np.concatenate([p.scores for p in preds])
        first(~((scores >= 0) & (scores <= 1)), 2, lambda i, j: LineProblem(
            f"scores[{j}]", "must be within 0..1", float(scores[i])))
        boxes = np.concatenate([p.bboxes for p in preds])
        bad = ~np.isfinite(boxes).all(1) | ~(boxes[:, 2] >= 0) | ~(boxes[:, 3] >= 0)
        first(bad, 3, lambda i, j: LineProblem(f"bboxes[{j}]", "must be finite [x, y, w, h] with "
                                        "w, h >= 0", boxes[i].tolist()))
        texts = [m for p in preds for m in p.masks]
        totals, malformed = rle_mod.coco_strings_totals(texts)
        npix = np.repeat([p.height * p.width for p in preds], ns)

        def size(i: int) -> str:
            p = preds[int(np.searchsorted(np.cumsum(ns), i, side="right"))]
            return f"{p.height}×{p.width}"

        first(malformed | (totals != npix), 4, lambda i, j: LineProblem(
            f"masks[{j}]", "is not COCO compressed counts text" if malformed[i] else
            f"covers {totals[i]} pixels, not the image's {size(i)} = {npix[i]} (a mask "
            "encoded at another size?)", texts[i]))
    known = None if expected is None else expected.attribute_ids
    where = "" if known is None else f" of {expected.labels_from}"
    for field_name, order in (("attr_probs", 5), ("attributes", 7)):
        probs = field_name == "attr_probs"
        of_line = [(f.prob_ids, f.prob_owner) if probs else (f.set_ids, f.set_owner)
                   for _, _, f in items]
        ids = np.concatenate([line_ids for line_ids, _ in of_line])
        if not ids.size:
            continue
        ids_row = np.concatenate([np.full(line_ids.size, r)
                                  for (r, _, _), (line_ids, _) in zip(items, of_line)])
        owner = np.concatenate([line_owner for _, line_owner in of_line])
        bad = ~(_in_set(ids, known) if known is not None else ids >= 0)
        if bad.any():
            i = int(np.argmax(bad))
            out.append((int(ids_row[i]), order, LineProblem(
                f"{field_name}[{owner[i]}]", f"has attribute id {int(ids[i])}, not an "
                f"attribute{where}", int(ids[i]))))
        if probs:
            values = np.concatenate([f.prob_values for _, _, f in items])
            bad = ~((values >= 0) & (values <= 1))
            if bad.any():
                i = int(np.argmax(bad))
                out.append((int(ids_row[i]), 6, LineProblem(
                    f"attr_probs[{owner[i]}]", "has a probability outside 0..1 (attribute "
                    f"{int(ids[i])})", float(values[i]))))
    return out


def parse_line(line: str, soft_size: int | None = None) -> ImagePrediction:
    """One image line, with the checks that need no knowledge of the data (see
    :func:`~imat_kit.predictions.reader.iter_predictions`); a problem raises
    :class:`ValueError` naming the field."""
    try:
        pred, flat = parse_line_fields(json.loads(line), soft_size)
        problems = chunk_problems([(0, pred, flat)], None)
    except LineProblem as e:
        raise ValueError(e.text()) from None
    if problems:
        raise ValueError(min(problems, key=lambda t: t[:2])[2].text())
    return pred
