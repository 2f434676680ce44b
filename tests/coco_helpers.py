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
