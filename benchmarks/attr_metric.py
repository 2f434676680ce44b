"""AP^{IoU+F1}: ``imat_kit.attr_metric.fashionpedia_eval`` against Fashionpedia's own ``FPEval``
(package ``fashionpedia`` 1.1), same data, same run: equal figures, and the time of each.

A Fashionpedia-sized validation case: images of 512×512 with 3–8 garments each (46 categories,
294 attributes of the 2020 label file, 0–5 per instance), 20 detections per image (noisy copies
of the truth with right or perturbed attributes, and false positives). Target: the same 15
figures within 1e-6, and ours no slower than the reference.

    python benchmarks/attr_metric.py [--images 200]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from _common import REPO, machine
from pycocotools import mask as mask_util

from imat_kit.attr_metric import fashionpedia_eval
from imat_kit.labels import load_labels

sys.path.insert(0, str(REPO))
from tests.coco_helpers import fpeval_results


def make_case(images: int, seed: int = 0, size: int = 512):
    rng = np.random.default_rng(seed)
    attrs = list(load_labels(year=2020).attribute_id_list)

    def rle(m):
        r = mask_util.encode(np.asfortranarray(m))
        r["counts"] = r["counts"].decode("ascii")
        return r

    def blob():
        m = np.zeros((size, size), np.uint8)
        y, x = rng.integers(0, size - 120, 2)
        h, w = rng.integers(30, 120, 2)
        m[y:y + h, x:x + w] = 1
        return m

    def attr_set():
        return sorted(int(a) for a in rng.choice(attrs, size=rng.integers(0, 6), replace=False))

    ims, anns, dets = [], [], []
    for i in range(images):
        ims.append({"id": i + 1, "height": size, "width": size})
        truths = []
        for _ in range(rng.integers(3, 9)):
            m = blob()
            a = {"id": len(anns) + 1, "image_id": i + 1, "category_id": int(rng.integers(0, 46)),
                 "segmentation": rle(m), "area": int(m.sum()), "iscrowd": 0,
                 "attribute_ids": attr_set()}
            anns.append(a)
            truths.append((m, a))
        for _ in range(20):
            if rng.random() < 0.6:
                m, a = truths[rng.integers(len(truths))]
                m = np.roll(m, rng.integers(-8, 9), axis=int(rng.integers(2)))
                cat = a["category_id"]
                at = a["attribute_ids"] if rng.random() < 0.5 else attr_set()
            else:
                m, cat, at = blob(), int(rng.integers(0, 46)), attr_set()
            dets.append({"image_id": i + 1, "category_id": cat, "score": float(rng.random()),
                         "segmentation": rle(m), "attribute_ids": at})
    gt = {"images": ims, "annotations": anns,
          "categories": [{"id": c, "name": f"c{c}"} for c in range(46)],
          "attributes": [{"id": a, "name": f"a{a}"} for a in attrs]}
    return gt, dets, attrs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=200)
    a = ap.parse_args()
    gt, dets, attrs = make_case(a.images)
    print(f"{machine()}; {a.images} images, {len(gt['annotations'])} truths, {len(dets)} "
          "detections, 294 attributes")
    t = time.perf_counter()
    ref = fpeval_results(gt, dets)
    t_ref = time.perf_counter() - t
    t = time.perf_counter()
    ours = fashionpedia_eval(gt, dets, attribute_ids=attrs)
    t_ours = time.perf_counter() - t
    worst = 0.0
    for mode in ("iou_f1", "iou", "f1"):
        for k, v in ours[mode].items():
            worst = max(worst, abs((-1.0 if np.isnan(v) else v) - ref[mode][k]))
    print(f"AP^IoU+F1 {100 * ours['iou_f1']['AP']:.2f}, AP^IoU {100 * ours['iou']['AP']:.2f}, "
          f"AP^F1 {100 * ours['f1']['AP']:.2f}; largest difference from FPEval {worst:.1e}")
    print(f"FPEval {t_ref:.1f} s, ours {t_ours:.1f} s: {t_ref / t_ours:.1f}x")


if __name__ == "__main__":
    main()
