"""The field's own evaluators, run straight from their objects: the references our numbers
meet (pycocotools' COCOeval; Fashionpedia's FPEval); and the COCO cases they are run on."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import sys
import types

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from imat_kit.predictions import ImagePrediction


def pycocotools_stats(gt: dict, results: list[dict], iou_type: str = "segm") -> np.ndarray:
    """COCOeval's 12 summary numbers (AP, AP50, AP75, …) of ``results`` against ``gt``."""
    with contextlib.redirect_stdout(io.StringIO()):
        api = COCO()
        api.dataset = gt
        api.createIndex()
        ev = COCOeval(api, api.loadRes(results), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def pycocotools_eval(gt: dict, results: list[dict], iou_type: str = "segm"
                     ) -> tuple[np.ndarray, dict]:
    """COCOeval's 12 summary numbers and per-category AP (mean precision over IoU thresholds
    and recall points, area all, 100 detections; NaN without truth), on copies of the
    inputs (``loadRes`` adds keys to them)."""
    with contextlib.redirect_stdout(io.StringIO()):
        api = COCO()
        api.dataset = copy.deepcopy(gt)
        api.createIndex()
        ev = COCOeval(api, api.loadRes(copy.deepcopy(results)), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval["precision"][:, :, :, 0, -1]
    per = {}
    for k, cid in enumerate(ev.params.catIds):
        p = prec[:, :, k]
        per[int(cid)] = float(p[p > -1].mean()) if (p > -1).any() else float("nan")
    return ev.stats, per


def fpeval_results(gt: dict, detections: list[dict]) -> dict:
    """Fashionpedia's ``FPEval`` (package ``fashionpedia`` 1.1) on a ground truth with
    ``attributes`` and detections with ``attribute_ids``: ``{"iou_f1", "iou", "f1"}`` → its
    summary dicts. The package imports ``skimage.io`` (for its viewer only) and uses
    ``np.float`` (removed in numpy 1.24): a stub module and the old alias let it run."""
    if "skimage" not in sys.modules:
        sk = types.ModuleType("skimage")
        sk.io = types.ModuleType("skimage.io")
        sys.modules["skimage"], sys.modules["skimage.io"] = sk, sk.io
    np.float = float  # the alias FPEval's accumulate() uses
    from fashionpedia.fp import Fashionpedia
    from fashionpedia.fp_eval import FPEval

    with contextlib.redirect_stdout(io.StringIO()):
        api = Fashionpedia()
        api.dataset = copy.deepcopy(gt)
        api.createIndex()
        ev = FPEval(api, api.loadRes(copy.deepcopy(detections)), "segm")
        ev.run()
    return {"iou_f1": ev.results, "iou": ev.resultDet, "f1": ev.resultF1}


def random_attribute_case(seed: int, *, images: int, size: int, categories: list[int],
                          attributes: list[int], truths: tuple[int, int],
                          detections: tuple[int, int], blob: tuple[int, int],
                          shift: int, score_decimals: int | None = None
                          ) -> tuple[dict, list[dict]]:
    """A random ground truth with attributes and detections for it: rectangles of ``blob``
    (min, max) sides; per image ``truths`` and ``detections`` (low, high-exclusive) counts;
    60% of detections are copies of a truth shifted by up to ``shift`` px (85% keeping its
    category, half its attributes), the rest random; 0–3 (of at most 5) attributes each.
    ``score_decimals`` rounds the scores (ties)."""
    from pycocotools import mask as mask_util

    rng = np.random.default_rng(seed)

    def rle(m):
        r = mask_util.encode(np.asfortranarray(m))
        r["counts"] = r["counts"].decode("ascii")
        return r

    def rect():
        m = np.zeros((size, size), np.uint8)
        y, x = rng.integers(0, size - blob[1], 2)
        h, w = rng.integers(blob[0], blob[1], 2)
        m[y:y + h, x:x + w] = 1
        return m

    def attr_set():
        k = int(rng.integers(0, 4))
        return sorted(int(a) for a in rng.choice(attributes, size=k, replace=False))

    ims, anns, dets = [], [], []
    for i in range(images):
        ims.append({"id": i + 1, "height": size, "width": size})
        mine = []
        for _ in range(rng.integers(*truths)):
            m = rect()
            a = {"id": len(anns) + 1, "image_id": i + 1,
                 "category_id": int(rng.choice(categories)), "segmentation": rle(m),
                 "area": int(m.sum()), "iscrowd": 0, "attribute_ids": attr_set()}
            anns.append(a)
            mine.append((m, a))
        for _ in range(rng.integers(*detections)):
            if mine and rng.random() < 0.6:
                m, a = mine[rng.integers(len(mine))]
                m = np.roll(m, rng.integers(-shift, shift + 1), axis=int(rng.integers(2)))
                cat = a["category_id"] if rng.random() < 0.85 else int(rng.choice(categories))
                at = a["attribute_ids"] if rng.random() < 0.5 else attr_set()
            else:
                m, cat, at = rect(), int(rng.choice(categories)), attr_set()
            score = float(rng.random())
            if score_decimals is not None:
                score = round(score, score_decimals)
            dets.append({"image_id": i + 1, "category_id": cat, "score": score,
                         "segmentation": rle(m), "attribute_ids": at})
    gt = {"images": ims, "annotations": anns,
          "categories": [{"id": c, "name": f"c{c}"} for c in range(46)],
          "attributes": [{"id": a, "name": f"a{a}"} for a in attributes]}
    return gt, dets


def _rle(m: np.ndarray) -> dict:
    r = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


def corner_case(seed: int, *, images: int = 14, cats: int = 4) -> tuple[dict, dict]:
    """Random truths and predictions: sizes 12–60 px, rectangles of 1 px to half the image,
    scores rounded to one decimal (ties), one image without truth, one without predictions,
    one image with 130 detections of one category (past COCO's 100)."""
    rng = np.random.default_rng(seed)
    ims, anns, preds = [], [], {}
    for i in range(images):
        h, w = int(rng.integers(12, 60)), int(rng.integers(12, 60))
        key = f"im{i}"
        ims.append({"id": i + 1, "file_name": key + ".jpg", "image_key": key, "height": h,
                    "width": w})

        def rect(h=h, w=w):
            m = np.zeros((h, w), np.uint8)
            y, x = int(rng.integers(0, h - 1)), int(rng.integers(0, w - 1))
            m[y:y + int(rng.integers(1, h // 2 + 2)), x:x + int(rng.integers(1, w // 2 + 2))] = 1
            return m

        truths = [] if i == 1 else [(rect(), int(rng.integers(0, cats)))
                                    for _ in range(int(rng.integers(0, 6)))]
        if i == 3:
            truths.append((rect(), 0))
        for m, c in truths:
            r = _rle(m)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": c,
                         "segmentation": r, "area": float(mask_util.area(r)),
                         "bbox": mask_util.toBbox(r).tolist(), "iscrowd": 0})
        items = []
        if i != 2:
            for m, c in truths:
                if rng.random() < 0.8:
                    m2 = np.roll(m, int(rng.integers(-2, 3)), axis=int(rng.integers(2)))
                    items.append((m2, c if rng.random() < 0.85 else int(rng.integers(0, cats))))
            items += [(rect(), int(rng.integers(0, cats))) for _ in range(int(rng.integers(0, 5)))]
        if i == 3:
            items += [(rect(), 0) for _ in range(130)]
        labels = np.array([c for _, c in items], np.int64)
        scores = np.round(rng.random(len(items)), 1).astype(np.float32)
        masks = [_rle(m) for m, _ in items]
        boxes = np.array([mask_util.toBbox(r) + rng.normal(0, 0.5, 4) for r in masks],
                         np.float32).reshape(-1, 4)
        preds[key] = ImagePrediction(key, h, w, labels, scores, boxes,
                                     [r["counts"] for r in masks])
    gt = {"images": ims, "annotations": anns,
          "categories": [{"id": c, "name": f"c{c}"} for c in range(cats + 1)]}
    return gt, preds


def results_for_pycocotools(gt: dict, preds: dict, iou_type: str) -> list[dict]:
    """The predictions as pycocotools results, built independently of the kit's engine."""
    out = []
    for im in gt["images"]:
        p = preds.get(im["image_key"])
        for j in range(len(p) if p is not None else 0):
            r = {"image_id": im["id"], "category_id": int(p.labels[j]),
                 "score": float(p.scores[j]),
                 "segmentation": {"size": [p.height, p.width], "counts": p.masks[j]}}
            if iou_type == "bbox":
                r["bbox"] = [float(v) for v in p.bboxes[j]]
            out.append(r)
    return out


def jittered_fold(prep, fold: int, seed: int) -> tuple[dict, dict]:
    """A prepared fold's validation truth and imperfect predictions of it: each truth found
    (shifted a few pixels, sometimes in another category) or missed, plus false positives
    (another truth's mask in another category), random scores with ties."""
    gt = json.loads((prep / "annotations" / f"fold{fold}_val.json").read_text())
    rng = np.random.default_rng(seed)
    cats = [c["id"] for c in gt["categories"]]
    by_img: dict = {}
    for a in gt["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a)
    preds = {}
    for im in gt["images"]:
        h, w = im["height"], im["width"]
        items = []
        for a in by_img.get(im["id"], []):
            m = mask_util.decode(a["segmentation"])
            if rng.random() < 0.85:
                m2 = np.roll(m, int(rng.integers(-4, 5)), axis=int(rng.integers(2)))
                items.append((m2, a["category_id"] if rng.random() < 0.9
                              else int(rng.choice(cats))))
            if rng.random() < 0.3:
                items.append((m, int(rng.choice(cats))))
        masks = [_rle(m) for m, _ in items]
        preds[im["image_key"]] = ImagePrediction(
            im["image_key"], h, w, np.array([c for _, c in items], np.int64),
            np.round(rng.random(len(items)), 2).astype(np.float32),
            np.array([mask_util.toBbox(r) for r in masks], np.float32).reshape(-1, 4),
            [r["counts"] for r in masks])
    return gt, preds
