"""Noisy predictions of a known truth, for the tuner's tests: every truth found with a shifted
mask, some found twice (a lower-scoring overlapping duplicate), low-scoring false positives, one
category whose false positives score high, soft masks and attribute probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_util

from imat_kit.data.labels import labels_from_dict
from imat_kit.predictions import ImagePrediction, label_space, write_predictions

SOFT = 8


def _encode(m: np.ndarray) -> str:
    return mask_util.encode(np.asfortranarray(m.astype(np.uint8)))["counts"].decode("ascii")


def _shift(m: np.ndarray, dx: int, dy: int) -> np.ndarray:
    out = np.zeros_like(m)
    h, w = m.shape
    ys, xs = slice(max(dy, 0), h + min(dy, 0)), slice(max(dx, 0), w + min(dx, 0))
    yd, xd = slice(max(-dy, 0), h + min(-dy, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    out[ys, xs] = m[yd, xd]
    return out


def _soft(m: np.ndarray, box: list[float], rng) -> np.ndarray:
    """The mask's probabilities inside its box at SOFT×SOFT: the mask blurred, with noise."""
    h, w = m.shape
    x0, y0 = int(np.clip(np.floor(box[0]), 0, w - 1)), int(np.clip(np.floor(box[1]), 0, h - 1))
    x1 = int(np.clip(np.ceil(box[0] + box[2]), x0 + 1, w))
    y1 = int(np.clip(np.ceil(box[1] + box[3]), y0 + 1, h))
    crop = cv2.GaussianBlur(m[y0:y1, x0:x1].astype(np.float32), (5, 5), 1.5)
    crop = np.clip(crop + rng.normal(0, 0.05, crop.shape), 0, 1)
    return cv2.resize((crop * 255).astype(np.uint8), (SOFT, SOFT),
                      interpolation=cv2.INTER_LINEAR)


def _box(m: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(m)
    if not ys.size:
        return [0.0, 0.0, 1.0, 1.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
            float(ys.max() - ys.min() + 1)]


def _images(gt: dict, seed: int):
    """``(rng, image, its annotations)`` for each image of a COCO truth, one seeded rng."""
    rng = np.random.default_rng(seed)
    anns: dict[int, list] = {}
    for a in gt.get("annotations", []):
        anns.setdefault(a["image_id"], []).append(a)
    for im in gt["images"]:
        yield rng, im, anns.get(im["id"], [])


def _prediction(im: dict, items: list, probs: list, rng, soft: bool,
                sets: list | None = None) -> ImagePrediction:
    """An ``ImagePrediction`` of ``(category, mask, score, ...)`` items with their attribute
    probabilities (``sets``: the attribute sets, default those at 0.5)."""
    boxes = [_box(it[1]) for it in items]
    return ImagePrediction(
        im["image_key"], im["height"], im["width"],
        np.array([it[0] for it in items], np.int64),
        np.array([it[2] for it in items], np.float32),
        np.array(boxes, np.float32).reshape(-1, 4), [_encode(it[1]) for it in items],
        np.stack([_soft(it[1], b, rng) for it, b in zip(items, boxes)])
        if soft and items else (np.zeros((0, SOFT, SOFT), np.uint8) if soft else None),
        sets if sets is not None else
        [tuple(sorted(k for k, v in p.items() if v >= 0.5)) for p in probs], probs)


def noisy_predictions(gt: dict, *, seed: int = 0, hot_category: int | None = None,
                      soft: bool = True) -> dict[str, ImagePrediction]:
    """``image_key → ImagePrediction`` for the images of a COCO truth (see the module doc).
    ``hot_category``: that category gets a false positive scoring 0.75–0.9 on every image,
    and its true detections score 0.92–0.99 (so its own threshold should be about 0.9)."""
    labels = labels_from_dict(gt, "truth")
    ids = list(labels.attribute_id_list)
    out = {}
    for rng, im, own in _images(gt, seed):
        h, w = im["height"], im["width"]
        items = []  # (category, mask, score, attribute truth)
        for a in own:
            m = mask_util.decode(a["segmentation"])
            t = set(a.get("attribute_ids", []))
            d = int(max(1, 0.08 * np.sqrt(m.sum())))
            lo = 0.92 if a["category_id"] == hot_category else 0.45
            items.append((a["category_id"], _shift(m, int(rng.integers(-d, d + 1)),
                                                   int(rng.integers(-d, d + 1))),
                          float(rng.uniform(lo, 0.99)), t))
            if rng.random() < 0.3:  # a duplicate, mostly overlapping the first
                items.append((a["category_id"], _shift(m, d, d), float(rng.uniform(0.3, 0.45)),
                              t))
        for _ in range(3):  # low-scoring false positives
            m = np.zeros((h, w), np.uint8)
            x0, y0 = int(rng.integers(0, w - 8)), int(rng.integers(0, h - 8))
            m[y0:y0 + int(rng.integers(4, 20)), x0:x0 + int(rng.integers(4, 20))] = 1
            items.append((int(rng.integers(0, 46)), m, float(rng.uniform(0.05, 0.4)), set()))
        if hot_category is not None:
            m = np.zeros((h, w), np.uint8)
            m[: h // 4, : w // 4] = 1
            items.append((hot_category, m, float(rng.uniform(0.75, 0.9)), set()))
        probs = []
        for _, _, _, t in items:
            p = {a: float(np.clip((0.7 if a in t else 0.1) + rng.normal(0, 0.15), 0.05, 1))
                 for a in ids if a in t or rng.random() < 0.05}
            probs.append(p)
        out[im["image_key"]] = _prediction(im, items, probs, rng, soft)
    return out


def one_sure_predictions(gt: dict, *, seed: int = 0, soft: bool = True
                         ) -> dict[str, ImagePrediction]:
    """A case where one prediction per image is best under the published 2020 formula: each
    image's first truth predicted exactly (score 0.99), each other truth predicted at 0.97 —
    exactly half the time, else moved off it (a false positive). No score threshold of the
    grid (≤ 0.95) separates them; TP / (TP + FP) is highest at one per image, TP / (TP + FP +
    FN) with all of them."""
    out = {}
    for rng, im, own in _images(gt, seed):
        h, w = im["height"], im["width"]
        items = []
        for k, a in enumerate(own):
            m = mask_util.decode(a["segmentation"])
            if k and rng.random() < 0.5:
                m = _shift(m, w // 2, h // 2) | _shift(m, -w // 2, -h // 2)
            items.append((a["category_id"], m, 0.99 if k == 0 else 0.97,
                          set(a.get("attribute_ids", []))))
        out[im["image_key"]] = _prediction(im, items, [{a: 0.9 for a in it[3]} for it in items],
                                           rng, soft, [tuple(sorted(it[3])) for it in items])
    return out


def strip_predictions(gt: dict, *, seed: int = 0, soft: bool = True
                      ) -> dict[str, ImagePrediction]:
    """A case where the score says nothing but the shape does: every truth predicted exactly,
    and per image three false positives of the image's own categories, each a thin
    horizontal strip (3 px high, across the image);
    every score drawn from U(0.3, 0.99). No score threshold, cap, minimum area or
    per-category threshold separates them; the box's aspect (a re-scoring feature) does."""
    out = {}
    for rng, im, own in _images(gt, seed):
        h, w = im["height"], im["width"]
        items = []
        for a in own:
            items.append((a["category_id"], mask_util.decode(a["segmentation"]),
                          set(a.get("attribute_ids", []))))
        for _ in range(3 if own else 0):
            m = np.zeros((h, w), np.uint8)
            y0 = int(rng.integers(0, h - 3))
            m[y0:y0 + 3, 3:w - 3] = 1
            items.append((own[int(rng.integers(len(own)))]["category_id"], m, set()))
        order = rng.permutation(len(items))
        scores = rng.uniform(0.3, 0.99, len(items))
        items = [(c, m, float(sc), t) for (c, m, t), sc in zip([items[i] for i in order],
                                                               scores)]
        out[im["image_key"]] = _prediction(im, items, [{a: 0.9 for a in it[3]} for it in items],
                                           rng, soft, [tuple(sorted(it[3])) for it in items])
    return out


def write_noisy(path: Path, data: Path, split: str, fold: int = 0, *, make=None, **kw) -> Path:
    """:func:`noisy_predictions` (or ``make``, a function of the same signature) of a prepared
    split, written as a predictions file."""
    name = "test.json" if split == "test" else f"fold{fold}_val.json"
    gt = json.loads((data / "annotations" / name).read_text())
    preds = (make or noisy_predictions)(gt, **kw)
    labels = labels_from_dict(gt, name)
    meta = {"split": split, "fold": fold if split == "val" else None, "attribute_model": True,
            "attribute_floor": 0.05, "label_space": label_space(labels),
            "soft_size": SOFT if kw.get("soft", True) else None}
    write_predictions(path, meta, [preds[im["image_key"]] for im in gt["images"]])
    return path


def solution_path(data: Path) -> Path:
    """The synthetic test solution of a data folder (or of the folder its files link to)."""
    here = data / "test_solution.csv"
    return here if here.exists() else (data / "train.csv").resolve().parent / here.name


def solution_coco(data: Path) -> dict:
    """The synthetic test set's truth (``test_solution.csv``) as a COCO dict over
    ``annotations/test.json``'s images."""
    from imat_kit.data.paths import find_labels, test_image_sizes
    from imat_kit.submission import csv_instances

    gt = json.loads((data / "annotations" / "test.json").read_text())
    truth = csv_instances(solution_path(data), test_image_sizes(data, quiet=True),
                          by_category=True)
    ids = {im["image_key"]: im["id"] for im in gt["images"]}
    anns = []
    for key, items in truth.items():
        for t in items:
            anns.append({"id": len(anns) + 1, "image_id": ids[key], "category_id": t.key,
                         "segmentation": t.rle, "attribute_ids": list(t.attributes),
                         "bbox": [float(v) for v in mask_util.toBbox(t.rle)],
                         "area": int(mask_util.area(t.rle)), "iscrowd": 0})
    labels = find_labels(data)
    return {**gt, "annotations": anns, "categories": list(labels.categories),
            "attributes": list(labels.attributes)}


def write_noisy_test(path: Path, data: Path, *, make=None, **kw) -> tuple[Path, dict]:
    """Noisy test predictions (or ``make``'s) of the synthetic test truth; returns the file
    and the truth."""
    gt = solution_coco(data)
    preds = (make or noisy_predictions)(gt, **kw)
    labels = labels_from_dict(gt, "test_solution.csv")
    meta = {"split": "test", "fold": None, "attribute_model": True, "attribute_floor": 0.05,
            "label_space": label_space(labels), "soft_size": SOFT if kw.get("soft", True)
            else None}
    write_predictions(path, meta, [preds[im["image_key"]] for im in gt["images"]])
    return path, gt


def shrinkage_case(labels, *, images: int = 60, folds: int = 3, hot: int = 4, seed: int = 0):
    """Validation runs built in memory (``images`` of 64×64 over ``folds``): three truths an
    image (one of category ``hot``), each predicted exactly — ``hot``'s at 0.97–1.0, the others
    at 0.5–1.0 — plus two false positives of ``hot`` an image scoring 0.7–0.94 and one
    low-scoring false positive of another category. The right threshold for ``hot`` is 0.95;
    a threshold shrunk toward the global one keeps its false positives."""
    from imat_kit.eval.runs import FoldRun

    rng = np.random.default_rng(seed)
    cats = [{"id": c["id"], "name": c["name"]} for c in labels.categories]
    runs = []
    per = np.array_split(np.arange(images), folds)
    for k, idx in enumerate(per):
        ims, anns, preds = [], [], {}
        for i in idx.tolist():
            key = f"im{i:03d}"
            ims.append({"id": i + 1, "image_key": key, "file_name": key + ".jpg",
                        "height": 64, "width": 64})
            items = []
            for j, c in enumerate([hot, int(rng.integers(10, 20)), int(rng.integers(20, 30))]):
                m = np.zeros((64, 64), np.uint8)
                m[4 + 20 * j: 18 + 20 * j, 4:30] = 1
                anns.append({"id": len(anns) + 1 + 10 * i, "image_id": i + 1, "category_id": c,
                             "segmentation": mask_util.encode(np.asfortranarray(m)),
                             "bbox": _box(m), "area": int(m.sum()), "iscrowd": 0,
                             "attribute_ids": []})
                anns[-1]["segmentation"]["counts"] = anns[-1]["segmentation"]["counts"].decode()
                items.append((c, m, float(rng.uniform(0.97, 1.0) if c == hot
                                          else rng.uniform(0.5, 1.0))))
            for j in range(3):
                m = np.zeros((64, 64), np.uint8)
                m[4 + 20 * j: 18 + 20 * j, 36:60] = 1
                items.append((hot, m, float(rng.uniform(0.7, 0.94))) if j < 2 else
                             (int(rng.integers(10, 30)), m, float(rng.uniform(0.05, 0.25))))
            preds[key] = ImagePrediction(
                key, 64, 64, np.array([c for c, _, _ in items], np.int64),
                np.array([s for _, _, s in items], np.float32),
                np.array([_box(m) for _, m, _ in items], np.float32),
                [_encode(m) for _, m, _ in items])
        runs.append(FoldRun(f"<fold {k}>", k, {"split": "val"}, preds,
                            {"images": ims, "annotations": anns, "categories": cats}))
    return runs


def postprocess_file(tmp_path: Path, settings: dict, **extra) -> Path:
    """``tmp_path/pp.json``: a postprocess file holding ``settings`` (and ``extra`` keys)."""
    p = tmp_path / "pp.json"
    p.write_text(json.dumps({"format": "imat-kit-postprocess", "settings": settings, **extra},
                            indent=2))
    return p
