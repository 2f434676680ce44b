"""COCO metric that scores an empty prediction set as 0 instead of returning nothing."""

from __future__ import annotations

from mmdet.evaluation import CocoMetric
from mmdet.registry import METRICS

_ITEMS = ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")


@METRICS.register_module()
class IMatCocoMetric(CocoMetric):
    """mmdet's ``CocoMetric`` (pycocotools COCOeval, bbox and segm), except that when the model
    predicts nothing at all on the whole set (early in training, or a broken checkpoint) the AP
    figures are 0.0 rather than missing. Missing keys would crash ``CheckpointHook(save_best=
    'coco/segm_mAP')`` and leave holes in the logged curves."""

    def compute_metrics(self, results: list) -> dict:
        out = super().compute_metrics(results)
        if self.format_only:
            return out
        for metric in self.metrics:
            if metric in ("bbox", "segm") and f"{metric}_mAP" not in out:
                for item in _ITEMS:
                    out[f"{metric}_{item}"] = 0.0
        return out
