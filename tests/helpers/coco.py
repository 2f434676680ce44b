"""The field's own evaluators, run straight from their objects: the references our numbers
meet (pycocotools' COCOeval; Fashionpedia's FPEval)."""

from __future__ import annotations

import contextlib
import copy
import io
import sys
import types

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


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
