"""What ``submit`` does to predictions, as settings a file can hold: ``imat-kit tune`` writes them,
``submit --postprocess`` / ``evaluate --postprocess`` apply them.

With a re-scorer (``tune --rescore``, :mod:`rescore`) every score is first replaced by the
model's (:func:`apply_postprocess`, ``submit``; the steps below then read the new scores). For
each image, in this order (:func:`kept_instances`, the one function both the submission writer
and the tuner use):

1. an instance is kept when its score reaches its category's threshold (``category_thr``, else
   the global ``score_thr``);
2. the kept ones, by descending score, are capped at ``max_per_image``;
3. with ``mask_thr`` set, each mask is rebuilt from the stored soft mask (the box's
   probabilities, ``predict --soft-size``) pasted into its box and cut at ``mask_thr``;
4. within a class, each pixel stays with the highest-scoring instance (same-class overlaps are
   removed on runs, no H×W masks), and an instance whose leftover is under ``min_area`` pixels
   (at least 1) is dropped; a dropped instance takes no pixels from later ones;
5. attribute sets are decoded from the probabilities (:class:`AttributeDecoder`): a
   threshold per attribute (``tune-attributes``' rule, default a global 0.5), a threshold per
   (category, attribute) pair, or the ``k`` most probable attributes of the instance, ``k``
   per category.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_util

from imat_kit import fields
from imat_kit.data import rle as rle_mod
from imat_kit.data.masks import pair_ious, score_order, soft_counts_at
from imat_kit.errors import KitError, KitWarning
from imat_kit.files import atomic_open
from imat_kit.predictions import ATTRIBUTE_THRESHOLD

FORMAT = "imat-kit-postprocess"
#: the defaults of every setting (the writer's when nothing was tuned): read everywhere from here
SCORE_THR = 0.3
MAX_PER_IMAGE = 100
MIN_AREA = 20
#: the format of the files ``tune-attributes`` writes
THRESHOLDS_FORMAT = "imat-kit-attribute-thresholds"
DECODINGS = ("threshold", "topk", "pair")


@dataclass(frozen=True)
class AttributeThresholds:
    """A global threshold and per-attribute ones (attribute id → threshold)."""

    global_threshold: float = ATTRIBUTE_THRESHOLD
    per_attribute: dict = field(default_factory=dict)

    def of(self, attribute_id: int) -> float:
        return self.per_attribute.get(int(attribute_id), self.global_threshold)

    def cut(self, probs: dict[int, float]) -> tuple[int, ...]:
        return tuple(sorted(k for k, v in probs.items() if v >= self.of(k)))


def load_thresholds(path: str | Path | None, labels=None) -> AttributeThresholds:
    """The per-attribute thresholds of a postprocess file (``imat-kit tune-attributes`` writes
    one whose settings are the defaults with its thresholds; ``None``: a global 0.5), checked
    as :func:`load_postprocess` checks it. A file whose attributes are decoded otherwise
    (top-k) is refused: it goes in as ``--postprocess``. A thresholds file of an earlier
    imat-kit (``"format": "imat-kit-attribute-thresholds"``) is read as before (thresholds
    within 0..1, every attribute id one of the data's), with a
    :class:`~imat_kit.errors.KitWarning` saying how to replace it."""
    if path is None:
        return AttributeThresholds()
    file = str(path)
    try:
        text = fields.read_text(path, file=file)
    except OSError as e:
        raise KitError(f"cannot read the thresholds file: {e.strerror}", file=file) from None
    d = fields.loads(text, what="thresholds file", file=file)
    if isinstance(d, dict) and d.get("format") == FORMAT:
        decoder = _checked(d, text, file, labels).attributes
        if decoder.decoding != "threshold":
            raise KitError(f"this postprocess file decodes attributes by {decoder.decoding}, "
                           "not by per-attribute thresholds: give it as --postprocess",
                           file=file, row=fields.key_line(text, "decoding"))
        return decoder.thresholds
    if not isinstance(d, dict) or d.get("format") != THRESHOLDS_FORMAT:
        raise KitError(f"not a postprocess file (needs \"format\": \"{FORMAT}\"; write one with "
                       "imat-kit tune-attributes or imat-kit tune)", file=file)
    warnings.warn(KitWarning(
        f"{file}: an attribute thresholds file of an earlier imat-kit, read as the "
        "thresholds it holds; imat-kit tune-attributes writes a postprocess file now (run "
        "it again to replace this one)"), stacklevel=2)
    g = d.get("global_threshold")
    if not fields.is_number(g) or not 0 <= g <= 1:
        raise KitError("global_threshold must be a number in 0..1", file=file,
                       row=fields.key_line(text, "global_threshold"), value=g)
    per = {}
    attrs = d.get("attributes") or {}
    if not isinstance(attrs, dict):
        raise KitError("attributes must map attribute ids to {\"threshold\": …}", file=file,
                       row=fields.key_line(text, "attributes"), value=attrs)
    for k, v in attrs.items():
        t = v.get("threshold") if isinstance(v, dict) else None
        if not fields.is_digits(k) or not fields.is_number(t) or not 0 <= t <= 1:
            raise KitError("each attribute needs an integer id and a threshold in 0..1",
                           file=file, row=fields.key_line(text, k), value=f"{k}: {v}")
        if labels is not None and int(k) not in labels.attribute_ids:
            raise KitError(f"attribute id {k} is not an attribute of the data's label file "
                           f"({labels.source or 'label_descriptions.json'}): thresholds tuned "
                           "on another label space?", file=file, row=fields.key_line(text, k),
                           value=int(k))
        per[int(k)] = float(t)
    return AttributeThresholds(float(g), per)


def thresholds_from(content: dict) -> AttributeThresholds:
    """The thresholds of a :func:`tune_thresholds` result still in memory (what
    :func:`load_thresholds` reads back from its file)."""
    return AttributeThresholds(float(content["global_threshold"]),
                               {int(a): float(v["threshold"])
                                for a, v in content["attributes"].items()})


def apply_thresholds(preds: dict, thresholds: AttributeThresholds) -> dict:
    """The predictions with each instance's attribute set cut from its probabilities by
    ``thresholds`` (instances without stored probabilities keep their sets)."""
    return {k: replace(p, attributes=[thresholds.cut(a) for a in p.attr_probs])
            if p.attr_probs else p for k, p in preds.items()}


@dataclass(frozen=True)
class AttributeDecoder:
    """How an instance's attribute set is read from its probabilities: ``threshold`` (the
    ``thresholds``: per attribute, else global), ``topk`` (the ``topk[category]`` most
    probable, ties by id; a category not listed gets none) or ``pair`` (a threshold per
    (category, attribute) in ``pairs``, else the attribute's in ``thresholds``)."""

    decoding: str = "threshold"
    thresholds: AttributeThresholds = field(default_factory=AttributeThresholds)
    topk: dict = field(default_factory=dict)
    pairs: dict = field(default_factory=dict)  # (category, attribute) → threshold ("pair")

    def __post_init__(self) -> None:
        if self.decoding not in DECODINGS:
            raise KitError(f"attribute decoding must be one of {', '.join(DECODINGS)}",
                           value=self.decoding)

    def decode(self, category: int, probs: dict[int, float]) -> tuple[int, ...]:
        if self.decoding == "threshold":
            return self.thresholds.cut(probs)
        if self.decoding == "pair":
            c = int(category)
            return tuple(sorted(a for a, v in probs.items()
                                if v >= self.pairs.get((c, int(a)), self.thresholds.of(a))))
        k = int(self.topk.get(int(category), 0))
        ranked = sorted(probs.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        return tuple(sorted(int(a) for a, _ in ranked))

    def apply(self, preds: dict) -> dict:
        """The predictions with every attribute set decoded from its probabilities
        (instances without stored probabilities keep their sets)."""
        return {key: replace(p, attributes=[self.decode(c, a) for c, a in
                                            zip(p.labels.tolist(), p.attr_probs)])
                if p.attr_probs else p for key, p in preds.items()}

    def as_dict(self) -> dict:
        if self.decoding == "topk":
            return {"decoding": "topk", "topk": {str(c): int(k) for c, k in
                                                 sorted(self.topk.items())}}
        t = self.thresholds
        out = {"decoding": self.decoding, "global_threshold": t.global_threshold,
               "per_attribute": {str(a): v for a, v in sorted(t.per_attribute.items())}}
        if self.decoding == "pair":
            out["per_pair"] = {f"{c}_{a}": v for (c, a), v in sorted(self.pairs.items())}
        return out


@dataclass(frozen=True)
class PostProcess:
    """Every setting ``submit`` applies to predictions (see the module doc); the defaults are
    the writer's (:data:`SCORE_THR`, :data:`MAX_PER_IMAGE`, :data:`MIN_AREA`, masks as stored,
    attributes at :data:`~imat_kit.predictions.ATTRIBUTE_THRESHOLD`)."""

    score_thr: float = SCORE_THR
    category_thr: dict = field(default_factory=dict)
    max_per_image: int = MAX_PER_IMAGE
    min_area: int = MIN_AREA
    mask_thr: float | None = None
    attributes: AttributeDecoder = field(default_factory=AttributeDecoder)
    rescore: object = None  # a rescore.Rescorer: replaces the scores before the rest

    def __post_init__(self) -> None:
        for c, t in [(None, self.score_thr), *self.category_thr.items()]:
            if not isinstance(t, (int, float)) or not 0 <= t <= 1:
                raise KitError("score thresholds must be within 0..1",
                               value=t if c is None else f"category {c}: {t}")
        if self.max_per_image < 1 or self.min_area < 0:
            raise KitError("max_per_image must be >= 1 and min_area >= 0",
                           value=(self.max_per_image, self.min_area))
        if self.mask_thr is not None and not 0 < self.mask_thr < 1:
            raise KitError("mask_thr must be within (0, 1)", value=self.mask_thr)

    def thresholds_of(self, labels: np.ndarray) -> np.ndarray:
        """The score threshold of each instance (by its category)."""
        if not self.category_thr:
            return np.full(len(labels), self.score_thr)
        return np.array([self.category_thr.get(int(c), self.score_thr) for c in labels],
                        np.float64).reshape(-1)

    def values(self) -> dict:
        """Every value, as the postprocess file and the submission manifest record them."""
        return {"score_thr": self.score_thr,
                "category_thr": {str(c): t for c, t in sorted(self.category_thr.items())},
                "max_per_image": self.max_per_image, "min_area": self.min_area,
                "mask_thr": self.mask_thr, "attributes": self.attributes.as_dict(),
                "rescore": None if self.rescore is None else self.rescore.summary()}


def kept_instances(pred, post: PostProcess) -> list[tuple[int, str, int]]:
    """Steps 1–4 of the module doc on one image: ``(index, counts, area)`` of each instance
    kept, in descending score order, ``counts`` its leftover mask (COCO counts text). With a
    re-scorer, the image's scores are its (callers with many images apply it to all at once
    first, :meth:`rescore.Rescorer.apply`, and pass settings without it)."""
    if post.rescore is not None:
        pred = replace(pred, scores=post.rescore.scores([pred])[0])
    keep = np.flatnonzero(pred.scores >= post.thresholds_of(pred.labels))
    keep = keep[score_order(pred.scores[keep])][: post.max_per_image]
    if not keep.size:
        return []
    h, w = pred.height, pred.width
    masks = masks_of(pred, keep, post)
    floor = max(post.min_area, 1)
    labels = pred.labels[keep]
    out = []
    for c in np.unique(labels):
        idx = keep[labels == c]
        rles = [{"size": [h, w], "counts": masks[int(i)]} for i in idx]
        out.extend((int(idx[r]), counts, area)
                   for r, counts, area in class_leftovers(rles, floor, h * w))
    rank = {int(i): r for r, i in enumerate(keep.tolist())}
    out.sort(key=lambda t: rank[t[0]])
    return out


def touching(rles: list[dict]) -> np.ndarray:
    """N × N: which masks share a pixel (mask IoU > 0)."""
    return pair_ious(rles, rles) > 0


def masks_of(pred, idx: np.ndarray, post: PostProcess) -> dict[int, str]:
    """The masks (COCO counts text) of instances ``idx``: as stored, or with ``mask_thr``
    rebuilt from the soft masks (step 3)."""
    if post.mask_thr is None:
        return {int(i): pred.masks[i] for i in idx}
    return {i: m[0] for i, m in masks_at(pred, idx, (post.mask_thr,)).items()}


def masks_at(pred, idx: np.ndarray, thresholds) -> dict[int, list[str]]:
    """The masks of instances ``idx`` rebuilt from the soft masks at each of ``thresholds``."""
    if pred.soft is None:
        raise KitError(f"the settings rebuild masks from soft masks (mask_thr "
                       f"{', '.join(map(str, thresholds))}) but these predictions store none "
                       "(predict --soft-size)", value=pred.image_key)
    return {int(i): soft_counts_at(pred.bboxes[i], pred.soft[i], pred.height, pred.width,
                                   thresholds) for i in idx}


def class_leftovers(rles: list[dict], floor: int, npix: int,
                    touch: np.ndarray | None = None,
                    areas: np.ndarray | None = None) -> list[tuple[int, str, int]]:
    """Same-class overlap removal (step 4) over masks in descending score order: ``(position,
    counts, area)`` of each one kept, its leftover at least ``floor`` pixels. Only masks that
    share a pixel with an earlier kept one are cut on runs; the others keep their text (the
    same object). ``touch`` (which masks share a pixel, :func:`touching`) and ``areas`` when
    already known."""
    touch = touching(rles) if touch is None else touch
    areas = mask_util.area(rles) if areas is None else areas
    runs: dict[int, tuple] = {}

    def runs_of(q: int) -> tuple:
        if q not in runs:
            runs[q] = rle_mod.coco_to_runs(rles[q])
        return runs[q]

    kept: list[int] = []
    out = []
    for r in range(len(rles)):
        earlier = [q for q in kept if touch[q, r]]
        if not earlier:
            if areas[r] >= floor:
                kept.append(r)
                out.append((r, rles[r]["counts"], int(areas[r])))
            continue
        cut = None if rle_mod._counts is None else rle_mod._counts.leftover(
            rles[r]["counts"], [rles[q]["counts"] for q in earlier], int(npix))
        if cut is None:  # numpy: where the C build is missing (or a text is not str)
            taken = runs_of(earlier[0])
            for q in earlier[1:]:
                taken = rle_mod.runs_union(taken, runs_of(q))
            mine = rle_mod.runs_difference(runs_of(r), taken)
            h, w = rles[r]["size"]
            cut = (rle_mod.counts_to_coco_string(
                rle_mod.runs_to_counts(mine[0], mine[1] - mine[0], npix), h, w),
                int((mine[1] - mine[0]).sum()))
        text, area = cut
        if area < floor:
            continue
        kept.append(r)
        out.append((r, text, int(area)))
    return out


def apply_postprocess(preds: dict, post: PostProcess) -> dict:
    """The predictions as ``submit`` would write them with ``post``: only the kept instances,
    each with its leftover mask and its decoded attribute set (probabilities dropped, so
    nothing re-cuts them); boxes as they were, scores the re-scorer's where ``post`` has one."""
    if post.rescore is not None:
        preds = post.rescore.apply(preds)
        post = replace(post, rescore=None)
    out = {}
    for key, p in preds.items():
        kept = kept_instances(p, post)
        q = p[np.array([i for i, _, _ in kept], np.int64)]
        attrs = ([post.attributes.decode(int(c), a) for c, a in zip(q.labels.tolist(),
                                                                     q.attr_probs)]
                 if q.attr_probs else q.attributes)
        out[key] = replace(q, masks=[c for _, c, _ in kept], attributes=attrs, attr_probs=[])
    return out


# --- the postprocess file -------------------------------------------------------------------

def sha256_of(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_postprocess(content: dict, out: str | Path) -> None:
    with atomic_open(out, "w") as f:
        json.dump(content, f, indent=2, default=float)


def from_values(v: dict, *, file: str = "<settings>", text: str = "") -> PostProcess:
    """A :class:`PostProcess` from its :meth:`PostProcess.values` (as a file holds them)."""
    def bad(key: str, msg: str, value: object) -> KitError:
        return KitError(msg, file=file, row=fields.key_line(text, key) if text else None,
                        value=value)

    def number(key: str, lo: float, hi: float, integer: bool = False) -> float:
        x = v.get(key)
        ok = isinstance(x, int) if integer else isinstance(x, (int, float))
        if isinstance(x, bool) or not ok or not lo <= x <= hi:
            raise bad(key, f"{key} must be {'an integer' if integer else 'a number'} within "
                      f"{lo:g}..{hi:g}", x)
        return x

    def mapping(d: object, key: str, message: str) -> dict:
        if d is not None and not isinstance(d, dict):
            raise bad(key, message, d)
        return d or {}

    def thresholds(d: object, key: str, message: str) -> dict[int, float]:
        """An ``{id: threshold in 0..1}`` map, each entry checked."""
        d = mapping(d, key, message)
        out = {}
        for k, t in d.items():
            if not fields.is_digits(k) or not fields.is_number(t) or not 0 <= t <= 1:
                raise bad(str(k), message, f"{k}: {t}")
            out[int(k)] = float(t)
        return out

    cats = thresholds(v.get("category_thr"), "category_thr", "each category_thr entry needs a "
                      "category id and a threshold in 0..1")
    mask = v.get("mask_thr")
    if mask is not None and (not fields.is_number(mask) or not 0 < mask < 1):
        raise bad("mask_thr", "mask_thr must be null or a number within (0, 1)", mask)
    a = v.get("attributes") or {"decoding": "threshold"}
    dec = a.get("decoding") if isinstance(a, dict) else None
    if dec not in DECODINGS:
        raise bad("decoding", f"attributes.decoding must be one of {', '.join(DECODINGS)}",
                  dec)
    if dec == "topk":
        topk = {}
        for c, k in mapping(a.get("topk"), "topk", "topk must map category ids to counts"
                            ).items():
            if not fields.is_digits(c) or not fields.is_int(k) or not 0 <= k <= 10**6:
                raise bad(str(c), "each topk entry needs a category id and a count >= 0",
                          f"{c}: {k}")
            topk[int(c)] = k
        decoder = AttributeDecoder("topk", topk=topk)
    else:
        g = a.get("global_threshold", 0.5)
        if not fields.is_number(g) or not 0 <= g <= 1:
            raise bad("global_threshold", "global_threshold must be within 0..1", g)
        per = thresholds(a.get("per_attribute"), "per_attribute", "each per_attribute entry "
                         "needs an attribute id and a threshold in 0..1")
        pairs = {}
        if dec == "pair":
            for k, t in mapping(a.get("per_pair"), "per_pair", "per_pair must map "
                                "CATEGORY_ATTRIBUTE ids to thresholds").items():
                ids = str(k).split("_")
                if (len(ids) != 2 or not all(fields.is_digits(x) for x in ids)
                        or not fields.is_number(t) or not 0 <= t <= 1):
                    raise bad(str(k), "each per_pair entry needs CATEGORY_ATTRIBUTE ids and a "
                              "threshold in 0..1", f"{k}: {t}")
                pairs[(int(ids[0]), int(ids[1]))] = float(t)
        decoder = AttributeDecoder(dec, AttributeThresholds(float(g), per), pairs=pairs)
    return PostProcess(score_thr=float(number("score_thr", 0, 1)), category_thr=cats,
                       max_per_image=int(number("max_per_image", 1, 10**6, True)),
                       min_area=int(number("min_area", 0, 10**9, True)),
                       mask_thr=None if mask is None else float(mask), attributes=decoder)


def load_postprocess(path: str | Path, labels=None) -> tuple[PostProcess, dict]:
    """A file written by ``imat-kit tune``: its settings (checked) and the whole content.
    Given the data's ``labels``, every category and attribute id must be the label file's,
    and the file's recorded label space the data's: a file tuned on other data is refused."""
    from imat_kit.data.readers import read_json_text

    file = str(path)
    text, d = read_json_text(path, what="postprocess file")
    return _checked(d, text, file, labels), d


def _checked(d: object, text: str, file: str, labels) -> PostProcess:
    """The settings of a postprocess file's content ``d`` (its ``text`` locates the errors),
    checked as :func:`load_postprocess` says."""
    if not isinstance(d, dict) or d.get("format") != FORMAT or not isinstance(
            d.get("settings"), dict):
        raise KitError(f"not a postprocess file (needs \"format\": \"{FORMAT}\" and "
                       "\"settings\"; write one with imat-kit tune)", file=file)
    post = from_values(d["settings"], file=file, text=text)
    post = _with_rescorer(post, d, file, text)
    if labels is not None:
        source = labels.source or "label_descriptions.json"
        for c in sorted(post.category_thr) + sorted(post.attributes.topk):
            if c not in labels.category_ids:
                raise KitError(f"category id {c} is not a category of the data's label file "
                               f"({source}): settings tuned on another label space?",
                               file=file, row=fields.key_line(text, str(c)), value=c)
        for c, _ in sorted(post.attributes.pairs):
            if c not in labels.category_ids:
                raise KitError(f"category id {c} is not a category of the data's label file "
                               f"({source}): settings tuned on another label space?",
                               file=file, row=fields.key_line(text, "per_pair"), value=c)
        for a in sorted(set(post.attributes.thresholds.per_attribute)
                        | {a for _, a in post.attributes.pairs}):
            if a not in labels.attribute_ids:
                raise KitError(f"attribute id {a} is not an attribute of the data's label file "
                               f"({source}): settings tuned on another label space?",
                               file=file, row=fields.key_line(text, str(a)), value=a)
        space = d.get("label_space")
        if isinstance(space, dict):
            from imat_kit.predictions import label_space

            mine = label_space(labels)
            for key in ("categories", "attributes"):
                if key in space and space[key] != mine[key]:
                    raise KitError(f"tuned on data with other {key} than this data's label "
                                   f"file ({source})", file=file,
                                   row=fields.key_line(text, "label_space"))
    return post


def _with_rescorer(post: PostProcess, d: dict, file: str, text: str) -> PostProcess:
    """The settings with the file's re-scorer (``"rescore"``, written by ``tune --rescore``),
    checked (:func:`rescore.from_dict`: arrays only, nothing executed) and matched to the
    digest the settings record."""
    from imat_kit import rescore as rescore_mod

    model, named = d.get("rescore"), d["settings"].get("rescore")
    if model is None and named is None:
        return post
    row = fields.key_line(text, "rescore") if text else None
    if model is None or not isinstance(named, dict):
        raise KitError("the settings and the file disagree on the re-scorer (one names it, "
                       "the other has none)", file=file, row=row)
    rescorer = rescore_mod.from_dict(model, file=file, row=row)
    if named.get("sha256") != rescorer.digest():
        raise KitError("the re-scorer is not the one the settings name (its SHA-256 "
                       "differs: edited?)", file=file, row=row)
    return replace(post, rescore=rescorer)
