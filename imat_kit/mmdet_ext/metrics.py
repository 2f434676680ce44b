"""The metrics of validation during training: mmdet's ``CocoMetric`` on faster-coco-eval (an
empty prediction set scored 0 instead of nothing), and the competition's own score
(``IMatCompetitionMetric``), by which a checkpoint can be selected."""

from __future__ import annotations

import contextlib

import numpy as np
from faster_coco_eval import COCOeval_faster
from mmdet.evaluation import CocoMetric
from mmdet.evaluation.metrics import coco_metric as _coco_metric
from mmdet.registry import METRICS
from mmengine.evaluator import BaseMetric

from imat_kit.postprocess import SCORE_THR

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

    def process(self, data_batch, data_samples) -> None:
        from imat_kit.mmdet_ext.box_masks import BoxMasks

        own = []  # copies: the other metrics of the evaluator get the same samples
        for s in data_samples:  # masks kept per instance (BoxMasksHook): encoded one by one
            m = s.get("pred_instances", {}).get("masks")
            if isinstance(m, BoxMasks):
                s = {**s, "pred_instances": {**s["pred_instances"], "masks": [
                    {"size": [m.height, m.width], "counts": m.counts(j).encode("ascii")}
                    for j in range(len(m))]}}
            own.append(s)
        super().process(data_batch, own)

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


@METRICS.register_module()
class IMatCompetitionMetric(BaseMetric):
    """The competition's score of the validation fold, beside ``IMatCocoMetric`` in
    ``val_evaluator``, so that ``default_hooks.checkpoint.save_best`` can keep the checkpoint
    that scores best on what the leaderboard measures: ``imat/competition`` (the 2019 formula at
    a score threshold of ``score_thr``, masks as predicted: ``imat-kit evaluate``'s
    ``competition`` column) and, on 2020 data (the truth file's label space), also
    ``imat/competition2020`` (the 2020 rule, TP / (TP + FP) by default (``fn``), at the
    default post-processing ``submit`` applies: ``evaluate --postprocess``'s
    ``competition2020`` column). Each image's masks are encoded as it is processed (what is
    kept is run-length text, never the N × H × W arrays)."""

    default_prefix = "imat"

    def __init__(self, ann_file: str, score_thr: float = SCORE_THR, fn: str = "ignore",
                 average: str = "image", collect_device: str = "cpu",
                 prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.ann_file, self.score_thr, self.fn, self.average = ann_file, score_thr, fn, average
        self._truth = None

    def truth(self) -> tuple[dict, object]:
        """The fold's truth (COCO, with image keys) and its label space, read once."""
        if self._truth is None:
            from imat_kit.data.labels import labels_from_dict
            from imat_kit.data.readers import read_json

            gt = read_json(self.ann_file, what="validation annotation file")
            self._truth = (gt, labels_from_dict(gt, self.ann_file))
        return self._truth

    def process(self, data_batch, data_samples) -> None:
        from mmdet.structures import DetDataSample
        from mmengine.structures import InstanceData

        from imat_kit.mmdet_ext.predict import _to_prediction

        ids = self.truth()[1].attribute_id_list
        for s in data_samples:
            sample = DetDataSample(metainfo={"ori_shape": tuple(s["ori_shape"])})
            sample.pred_instances = InstanceData(**s["pred_instances"])
            pred = _to_prediction(sample, str(s["img_id"]), attribute_ids=tuple(ids)
                                  if "attributes" in s["pred_instances"] else ())
            self.results.append((int(s["img_id"]), pred))

    def compute_metrics(self, results: list) -> dict:
        from dataclasses import replace

        from imat_kit.eval.evaluate import competition2020
        from imat_kit.eval.metric import competition_from_ious
        from imat_kit.postprocess import PostProcess

        gt, labels = self.truth()
        key_of = {im["id"]: im["image_key"] for im in gt["images"]}
        preds = {key_of[i]: replace(p, image_key=key_of[i]) for i, p in results if i in key_of}
        out = {"competition": competition_from_ious(gt, preds, {}, score_thr=self.score_thr,
                                                    average=self.average)["score"]}
        if labels.year == 2020:
            out["competition2020"] = competition2020(gt, preds, labels, PostProcess(),
                                                     average=self.average, fn=self.fn)
        return out
