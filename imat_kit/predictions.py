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

Writing is append-only (a killed run keeps every finished image; :func:`read_predictions`
ignores a torn last line), which is what makes ``imat-kit predict`` resumable.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import KitError
from .io import atomic_open

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
        d = json.loads(line)
        n = len(d["labels"])
        soft = None
        if d.get("soft") and soft_size:
            soft = np.frombuffer(base64.b64decode(d["soft"]), np.uint8).reshape(
                n, soft_size, soft_size).copy()
        probs = [{int(k): float(v) for k, v in a} for a in d.get("attr_probs", [])]
        attrs = [tuple(int(x) for x in a) for a in d.get("attributes", [])]
        if probs and not attrs:
            attrs = attribute_sets(probs)
        for what, items in (("attr_probs", probs), ("attributes", attrs)):
            if items and len(items) != n:
                raise ValueError(f"{what} has {len(items)} entries for {n} instances")
        return cls(d["image_key"], int(d["height"]), int(d["width"]),
                   np.asarray(d["labels"], np.int64), np.asarray(d["scores"], np.float32),
                   np.asarray(d["bboxes"], np.float32).reshape(n, 4), list(d["masks"]), soft,
                   attrs, probs)


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
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    try:
        h = json.loads(first)
    except json.JSONDecodeError:
        h = None
    if not isinstance(h, dict) or h.get("format") != FORMAT:
        raise KitError(f"not an imat-kit predictions file (first line must be a {FORMAT} "
                       "header)", file=file, row=1, value=first.strip()[:60] or None)
    if not isinstance(h.get("version"), int) or not 1 <= h["version"] <= VERSION:
        raise KitError(f"predictions format version {h.get('version')!r} is not one this "
                       f"imat-kit reads (1–{VERSION}); a newer imat-kit wrote it?", file=file,
                       row=1, value=h.get("version"))
    return h


def iter_predictions(path: str | Path) -> Iterator[ImagePrediction]:
    """The images of a predictions file, in file order; a torn last line is ignored."""
    h = read_header(path)
    soft = h.get("soft_size")
    with open(path, encoding="utf-8") as f:
        f.readline()
        for i, line in enumerate(f, start=2):
            if not line.endswith("\n"):
                return  # torn by a kill mid-write: the image is predicted again on resume
            try:
                yield ImagePrediction.from_json(line, soft)
            except (json.JSONDecodeError, KeyError, ValueError, TypeError) as e:
                what = f"missing key {e}" if isinstance(e, KeyError) else str(e)
                raise KitError(f"malformed prediction line: {what}", file=str(path),
                               row=i, value=line.strip()[:60]) from None


def read_predictions(path: str | Path, *,
                     require_images: bool = True) -> tuple[dict, dict[str, ImagePrediction]]:
    """Header and ``image_key → prediction`` (a later line for the same image wins). A file
    without any image line is an error unless ``require_images`` is False."""
    head, preds = read_header(path), {p.image_key: p for p in iter_predictions(path)}
    if require_images and not preds:
        raise KitError("the predictions file holds no image (only its header)", file=str(path),
                       row=2)
    return head, preds
