"""AP^{IoU+F1}: ``imat_kit.eval.attr_metric.fashionpedia_eval`` against Fashionpedia's own
``FPEval`` (package ``fashionpedia`` 1.1), same data, same run: equal figures, and the time of each.

A Fashionpedia-sized validation case (``tests.coco_helpers.random_attribute_case``, as the
test's): images of 512×512 with 3–8 garments each (46 categories, 294 attributes of the 2020
label file, 0–3 per instance), 20 detections per image (noisy copies
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

from imat_kit.data.labels import load_labels
from imat_kit.eval.attr_metric import fashionpedia_eval

sys.path.insert(0, str(REPO))
from tests.coco_helpers import fpeval_results, random_attribute_case


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=200)
    a = ap.parse_args()
    attrs = list(load_labels(year=2020).attribute_id_list)
    gt, dets = random_attribute_case(0, images=a.images, size=512, categories=list(range(46)),
                                     attributes=attrs, truths=(3, 9), detections=(20, 21),
                                     blob=(30, 120), shift=8)
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
