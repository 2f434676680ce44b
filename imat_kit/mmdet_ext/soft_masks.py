"""Mask probabilities from the single-stage and query-based families, for ``predict
--soft-size``.

Mask R-CNN, Cascade and HTC give mask probabilities when ``test_cfg.rcnn.mask_thr_binary`` is
negative (mmdet's ``FCNMaskHead``: uint8, probability × 255). RTMDet-Ins and Mask2Former
always threshold. The two heads here are mmdet's, except that with a negative
``test_cfg.mask_thr_binary`` their masks are image-sized probabilities in the same uint8
convention (boxes, labels, scores unchanged: computed by mmdet's code at the usual 0.5), which
``predict`` crops to each box as it does for the R-CNNs. With any other threshold they are
exactly mmdet's heads, so a checkpoint of mmdet's own heads loads into them as it is.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from mmdet.models.dense_heads import RTMDetInsSepBNHead
from mmdet.models.seg_heads.panoptic_fusion_heads import MaskFormerFusionHead
from mmdet.registry import MODELS


def _soft(cfg) -> bool:
    return cfg is not None and float(cfg.get("mask_thr_binary", 0.5)) < 0


def _uint8(prob: torch.Tensor) -> torch.Tensor:
    return (prob * 255).to(torch.uint8)


@MODELS.register_module()
class IMatRTMDetInsSepBNHead(RTMDetInsSepBNHead):
    """``RTMDetInsSepBNHead`` with soft masks on request (module docstring)."""

    def _bbox_mask_post_process(self, results, mask_feat, cfg, rescale: bool = False,
                                with_nms: bool = True, img_meta: dict | None = None):
        if not _soft(cfg):
            return super()._bbox_mask_post_process(results, mask_feat, cfg, rescale=rescale,
                                                   with_nms=with_nms, img_meta=img_meta)
        hard = cfg.copy()
        hard.mask_thr_binary = 0.5
        results = super()._bbox_mask_post_process(results, mask_feat, hard, rescale=rescale,
                                                  with_nms=with_nms, img_meta=img_meta)
        if len(results) == 0 or results.bboxes.numel() == 0:
            results.masks = results.masks.to(torch.uint8)
            return results
        # the kept detections' mask logits, resized as mmdet resizes them (then thresholded)
        stride = self.prior_generator.strides[0][0]
        logits = self._mask_predict_by_feat_single(mask_feat, results.kernels, results.priors)
        logits = F.interpolate(logits.unsqueeze(0), scale_factor=stride, mode="bilinear")
        if rescale:
            inv = [1 / s for s in img_meta["scale_factor"]]
            ori_h, ori_w = img_meta["ori_shape"][:2]
            logits = F.interpolate(
                logits, size=[math.ceil(logits.shape[-2] * inv[0]),
                              math.ceil(logits.shape[-1] * inv[1])],
                mode="bilinear", align_corners=False)[..., :ori_h, :ori_w]
        results.masks = _uint8(logits.sigmoid().squeeze(0))
        return results


@MODELS.register_module()
class IMatMaskFormerFusionHead(MaskFormerFusionHead):
    """``MaskFormerFusionHead`` (Mask2Former's post-processing) with soft instance masks on
    request (module docstring)."""

    def instance_postprocess(self, mask_cls, mask_pred):
        results = super().instance_postprocess(mask_cls, mask_pred)
        if not _soft(self.test_cfg):
            return results
        # the queries mmdet kept: its top-k over (query, class) scores, things only
        k = self.test_cfg.get("max_per_image", 100)
        scores = F.softmax(mask_cls, dim=-1)[:, :-1]
        top = scores.flatten(0, 1).topk(k, sorted=False)[1]
        labels = top % self.num_classes
        queries = (top // self.num_classes)[labels < self.num_things_classes]
        results.masks = _uint8(mask_pred[queries].sigmoid())
        return results
