"""One image's predicted instances (:class:`ImagePrediction`: indexing and ``cat`` carry every
per-instance field) and the constants of the predictions format (the package doc has it)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field, replace

import numpy as np

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

    def __getitem__(self, idx) -> ImagePrediction:
        """The instances ``idx`` (an index, indices in any order, or a boolean mask) as a
        prediction of the same image; every per-instance field follows
        (:data:`INSTANCE_FIELDS`; an optional one absent stays absent)."""
        idx = np.asarray(idx)
        idx = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64).reshape(-1)
        rows = idx.tolist()
        picked = {}
        for name in INSTANCE_FIELDS:
            v = getattr(self, name)
            picked[name] = (v if v is None or (isinstance(v, list) and not v) else
                            v[idx] if isinstance(v, np.ndarray) else [v[i] for i in rows])
        return replace(self, **picked)

    @classmethod
    def cat(cls, preds: list[ImagePrediction]) -> ImagePrediction:
        """The instances of several predictions of one image, in order (detectron2's
        ``Instances.cat``): an optional field (soft masks of one size, attribute sets,
        attribute probabilities) is kept only when every prediction with instances has it."""
        if not preds:
            raise ValueError("cat needs at least one prediction")
        ref = preds[0]
        if any((p.image_key, p.height, p.width) != (ref.image_key, ref.height, ref.width)
               for p in preds):
            raise ValueError("cat joins predictions of one image")
        full = [p for p in preds if len(p)] or [ref]
        out = {}
        for name in INSTANCE_FIELDS:
            values = [getattr(p, name) for p in full]
            if name == "soft":  # of one size S × S in every prediction, or none
                kept = (all(v is not None for v in values)
                        and len({v.shape[1:] for v in values}) == 1)
                out[name] = np.concatenate(values) if kept else None
            elif isinstance(values[0], np.ndarray):
                out[name] = np.concatenate(values)
            else:  # lists: kept when every prediction has them
                out[name] = [x for v in values for x in v] if all(values) else []
        return replace(ref, **out)

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


#: the fields with one entry per instance (what indexing and :meth:`ImagePrediction.cat` carry)
INSTANCE_FIELDS = ("labels", "scores", "bboxes", "masks", "soft", "attributes", "attr_probs")


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


def label_space(labels) -> dict:
    """The ``label_space`` header field: the category and attribute ids predictions use."""
    return {"categories": sorted(labels.category_ids), "attributes": sorted(labels.attribute_ids)}
