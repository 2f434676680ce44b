"""pycocotools' own COCOeval, run straight from its objects: the reference our numbers meet."""

from __future__ import annotations

import contextlib
import io

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
