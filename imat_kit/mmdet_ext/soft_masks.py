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
from mmengine.structures import InstanceData

from imat_kit.mmdet_ext import box_masks


def _soft(cfg) -> bool:
    return cfg is not None and float(cfg.get("mask_thr_binary", 0.5)) < 0


def _uint8(prob: torch.Tensor) -> torch.Tensor:
    return (prob * 255).to(torch.uint8)


@MODELS.register_module()
class IMatRTMDetInsSepBNHead(RTMDetInsSepBNHead):
    """``RTMDetInsSepBNHead`` with soft masks on request (module docstring)."""

    def _bbox_mask_post_process(self, results, mask_feat, cfg, rescale: bool = False,
                                with_nms: bool = True, img_meta: dict | None = None):
        if box_masks.active():
            return self._boxed_post_process(results, mask_feat, cfg, rescale, with_nms,
                                            img_meta)
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


    def _boxed_post_process(self, results, mask_feat, cfg, rescale: bool, with_nms: bool,
                            img_meta: dict):
        """mmdet 3.3's ``RTMDetInsHead._bbox_mask_post_process`` with each kept detection's
        mask resized and cut alone (:class:`~imat_kit.mmdet_ext.box_masks.BoxMasks`): the same
        boxes, scores and pixels, never all masks at the original size at once."""
        from mmcv.ops import batched_nms
        from mmdet.structures.bbox import get_box_tensor, get_box_wh, scale_boxes

        stride = self.prior_generator.strides[0][0]
        if rescale:
            scale_factor = [1 / s for s in img_meta["scale_factor"]]
            results.bboxes = scale_boxes(results.bboxes, scale_factor)
        if hasattr(results, "score_factors"):
            results.scores = results.scores * results.pop("score_factors")
        if cfg.get("min_bbox_size", -1) >= 0:
            w, h = get_box_wh(results.bboxes)
            valid = (w > cfg.min_bbox_size) & (h > cfg.min_bbox_size)
            if not valid.all():
                results = results[valid]
        assert with_nms, "with_nms must be True for RTMDet-Ins"
        out_h, out_w = (img_meta["ori_shape"] if rescale else img_meta["img_shape"])[:2]
        if results.bboxes.numel() == 0:
            results.masks = box_masks.BoxMasks(out_h, out_w, [], [], [])
            return results
        det, keep = batched_nms(get_box_tensor(results.bboxes), results.scores,
                                results.labels, cfg.nms)
        results = results[keep]
        results.scores = det[:, -1]
        results = results[:cfg.max_per_img]
        logits = self._mask_predict_by_feat_single(mask_feat, results.kernels, results.priors)
        soft = _soft(cfg)

        boxes = box_masks.pixel_boxes(results.bboxes, out_h, out_w) if soft else None

        def full(i: int) -> tuple:
            m = F.interpolate(logits[i:i + 1].unsqueeze(0), scale_factor=stride,
                              mode="bilinear")
            if rescale:
                m = F.interpolate(m, size=[math.ceil(m.shape[-2] * scale_factor[0]),
                                           math.ceil(m.shape[-1] * scale_factor[1])],
                                  mode="bilinear", align_corners=False)[..., :out_h, :out_w]
            prob = m.sigmoid()[0, 0]
            return (_uint8(prob), boxes[i]) if soft else (prob > cfg.mask_thr_binary, None)

        results.masks = box_masks.one_by_one(len(results), full, out_h, out_w)
        return results


@MODELS.register_module()
class IMatMaskFormerFusionHead(MaskFormerFusionHead):
    """``MaskFormerFusionHead`` (Mask2Former's post-processing) with soft instance masks on
    request (module docstring)."""

    def predict(self, mask_cls_results, mask_pred_results, batch_data_samples,
                rescale: bool = False, **kwargs):
        if not box_masks.active() or self.test_cfg.get("panoptic_on", True) \
                or not self.test_cfg.get("instance_on", False):
            return super().predict(mask_cls_results, mask_pred_results, batch_data_samples,
                                   rescale=rescale, **kwargs)
        out = []
        for mask_cls, mask_pred, sample in zip(mask_cls_results, mask_pred_results,
                                               batch_data_samples):
            meta = sample.metainfo
            img_h, img_w = meta["img_shape"][:2]
            size = meta["ori_shape"][:2] if rescale else (img_h, img_w)
            out.append({"ins_results": self._boxed_instances(
                mask_cls, mask_pred[:, :img_h, :img_w], size if rescale else None)})
        return out

    def _boxed_instances(self, mask_cls, mask_pred, size):
        """mmdet 3.3's ``MaskFormerFusionHead.instance_postprocess`` (after ``predict``'s
        resize to ``size``, when given) with each kept query's mask resized and cut alone
        (:class:`~imat_kit.mmdet_ext.box_masks.BoxMasks`): the same scores, boxes and
        pixels, never all queries' masks at the original size at once."""
        from mmdet.structures.mask import mask2bbox

        k = self.test_cfg.get("max_per_image", 100)
        num_queries = mask_cls.shape[0]
        scores = F.softmax(mask_cls, dim=-1)[:, :-1]
        labels = torch.arange(self.num_classes, device=mask_cls.device).unsqueeze(0).repeat(
            num_queries, 1).flatten(0, 1)
        top_scores, top = scores.flatten(0, 1).topk(k, sorted=False)
        top_labels = labels[top]
        queries = top // self.num_classes
        thing = top_labels < self.num_things_classes
        top_scores, top_labels, queries = top_scores[thing], top_labels[thing], queries[thing]
        height, width = size if size is not None else mask_pred.shape[-2:]
        soft = _soft(self.test_cfg)
        mask_scores, bboxes = [], []
        query_list = queries.tolist()

        def full(i: int) -> tuple:  # one query's mask at the full size at a time
            m = mask_pred[query_list[i]:query_list[i] + 1]
            if size is not None:
                m = F.interpolate(m[:, None], size=tuple(size), mode="bilinear",
                                  align_corners=False)[:, 0]
            binary = (m > 0).float()
            mask_scores.append((m.sigmoid() * binary).flatten(1).sum(1)
                               / (binary.flatten(1).sum(1) + 1e-6))
            box = mask2bbox(binary.bool())
            bboxes.append(box)
            if soft:
                return (_uint8(m.sigmoid()[0]),
                        box_masks.pixel_boxes(box, int(height), int(width))[0])
            return binary.bool()[0], None

        masks = box_masks.one_by_one(len(query_list), full, int(height), int(width))
        results = InstanceData()
        results.bboxes = torch.cat(bboxes) if bboxes else mask_pred.new_zeros((0, 4))
        results.labels = top_labels
        results.scores = top_scores * (torch.cat(mask_scores) if mask_scores
                                       else top_scores.new_zeros(0))
        results.masks = masks
        return results

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
