"""The COCO metric of validation during training: mmdet's ``CocoMetric`` on faster-coco-eval,
and an empty prediction set scored 0 instead of nothing."""

from __future__ import annotations

import contextlib

import numpy as np
from faster_coco_eval import COCOeval_faster
from mmdet.evaluation import CocoMetric
from mmdet.evaluation.metrics import coco_metric as _coco_metric
from mmdet.registry import METRICS

_ITEMS = ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")
ENGINES = ("faster", "pycocotools")


class PycocotoolsLayoutCOCOeval(COCOeval_faster):
    """faster-coco-eval's ``COCOeval_faster`` behind pycocotools' ``COCOeval`` interface as
    mmdet's ``CocoMetric`` uses it: constructed from (gt, dt, iou type), printing its summary
    lines, and ``stats`` in pycocotools' layout for mmdet's three ``maxDets`` (the AP at 100
    detections, AP50/75 and the area APs at the last ``maxDets``; faster-coco-eval's own
    ``summarize`` takes every AP at the last)."""

    def __init__(self, cocoGt=None, cocoDt=None, iouType="segm"):
        super().__init__(cocoGt, cocoDt, iouType, print_function=print)

    def summarize(self):
        m = list(self.params.maxDets)
        if len(m) != 3 or 100 not in m or self.params.iouType not in ("segm", "bbox"):
            return super().summarize()
        s = self._summarize
        self.stats = np.array([
            s(1), s(1, iouThr=0.5, maxDets=m[2]), s(1, iouThr=0.75, maxDets=m[2]),
            s(1, areaRng="small", maxDets=m[2]), s(1, areaRng="medium", maxDets=m[2]),
            s(1, areaRng="large", maxDets=m[2]), s(0, maxDets=m[0]), s(0, maxDets=m[1]),
            s(0, maxDets=m[2]), s(0, areaRng="small", maxDets=m[2]),
            s(0, areaRng="medium", maxDets=m[2]), s(0, areaRng="large", maxDets=m[2])])
        return None


@contextlib.contextmanager
def _engine(engine: str):
    """mmdet's ``CocoMetric`` with ``engine``'s COCOeval for the duration (it looks the class
    up in its module when it evaluates)."""
    if engine == "pycocotools":
        yield
        return
    before = _coco_metric.COCOeval
    _coco_metric.COCOeval = PycocotoolsLayoutCOCOeval
    try:
        yield
    finally:
        _coco_metric.COCOeval = before


@METRICS.register_module()
class IMatCocoMetric(CocoMetric):
    """mmdet's ``CocoMetric`` (bbox and segm AP) with faster-coco-eval as its engine
    (``engine='faster'``, the default: pycocotools' figures, its loops in C++, so validation
    during training on a real fold takes a fraction of the time; ``'pycocotools'``: mmdet's
    own), and when the model predicts nothing at all on the whole set (early in training, or a
    broken checkpoint) the AP figures are 0.0 rather than missing. Missing keys would crash
    ``CheckpointHook(save_best='coco/segm_mAP')`` and leave holes in the logged curves."""

    def __init__(self, *args, engine: str = "faster", **kwargs) -> None:
        if engine not in ENGINES:
            raise ValueError(f"IMatCocoMetric engine must be one of {', '.join(ENGINES)}, "
                             f"not {engine!r}")
        super().__init__(*args, **kwargs)
        self.engine = engine

    def compute_metrics(self, results: list) -> dict:
        with _engine("pycocotools" if self.use_mp_eval else self.engine):
            out = super().compute_metrics(results)
        if self.format_only:
            return out
        for metric in self.metrics:
            if metric in ("bbox", "segm") and f"{metric}_mAP" not in out:
                for item in _ITEMS:
                    out[f"{metric}_{item}"] = 0.0
        return out
