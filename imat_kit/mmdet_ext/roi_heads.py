"""Attribute prediction for Mask R-CNN, Cascade Mask R-CNN and HTC: a multi-label branch on
the RoI features.

:class:`AttributeRoIHead` is mmdet's ``StandardRoIHead`` plus an :class:`AttributeHead`;
:class:`AttributeCascadeRoIHead` and :class:`AttributeHTCRoIHead` add the same branch to
``CascadeRoIHead`` and ``HybridTaskCascadeRoIHead``, on the last stage's positive RoIs:

* **Training**: the positive RoIs are scored against the attributes of the ground truth each
  was assigned to (``gt_instances.attributes``, from ``IMatDataset(attributes=True)``). Their
  features (``attribute_features``): ``'mask'``, the mask branch's RoI features (14×14 in
  Mask R-CNN, already pooled for the mask loss: the 2020 winning solution's choice), ``'bbox'``,
  the box branch's (7×7), or ``'own'``, an own ``attribute_roi_extractor``. The loss is
  configurable (``CrossEntropyLoss(use_sigmoid=True)``: Fashionpedia's Attribute-Mask R-CNN;
  ``FocalLoss(use_sigmoid=True)``: the 2020 winning solution), summed over the attributes and
  averaged over the RoIs whose truth has a category in ``attribute_categories`` (RoIs of other
  categories add nothing; ``None``: every category), so its scale does not depend on the size
  of the label space.
* **Inference**: mmdet 3.3's ``multiclass_nms`` does not say which RoI survived, so the
  features are pooled again on the final boxes (as the mask branch does) and every final
  detection gets ``pred_instances.attributes``: N × A probabilities (sigmoid).
"""

from __future__ import annotations

import torch
from mmdet.models.roi_heads import CascadeRoIHead, HybridTaskCascadeRoIHead, StandardRoIHead
from mmdet.models.task_modules.samplers import SamplingResult
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox2roi
from mmengine.model import BaseModule
from torch import Tensor, nn


@MODELS.register_module()
class AttributeHead(BaseModule):
    """RoI features (C × S × S) → ``num_attributes`` logits: ``num_convs`` 3×3 convs (the first
    with stride ``first_stride``), one FC layer, the output layer, whose bias starts at the
    log-odds of ``prior_prob`` (most attributes are absent: a start at 0.5 would spend the first
    iterations unlearning that).

    ``with_geometry``: the hidden layer also sees the RoI's shape (log of height / width, and
    its square) through a layer of its own (``fc_geometry``, so two numbers are not drowned
    among the thousands of pooled features at initialisation). RoI pooling resamples every box
    to the same S × S grid, which erases exactly what lengths (mini / knee / maxi) and other
    proportions are about.

    ``attribute_categories``: the category labels whose instances carry attributes in the
    label space (Fashionpedia: 0–12, 28, 29, 31–33); RoIs assigned to other categories are left
    out of the loss.

    ``num_classes``: a learnt bias per (category, attribute) is added to the logits, for the
    RoI's category (training: its truth's; inference: the detection's label). Attributes
    depend on the category first (a skirt has a length, a jacket an opening): the bias learns
    that prior within a few iterations, and the features are left to learn what differs
    between instances of one category. ``feature_grad`` scales the gradient that flows from
    this branch into the shared features (1: joint training; below 1: the branch disturbs the
    detector's features less, which matters when both train from scratch for a short while).
    """

    def __init__(self, num_attributes: int, in_channels: int = 256, roi_feat_size: int = 7,
                 num_convs: int = 2, conv_out_channels: int = 256, fc_out_channels: int = 1024,
                 first_stride: int = 1, prior_prob: float = 0.01, with_geometry: bool = True,
                 attribute_categories: list[int] | None = None, num_classes: int | None = None,
                 feature_grad: float = 1.0, loss_attr: dict | None = None,
                 init_cfg: dict | list | None = None) -> None:
        import math

        if init_cfg is None:
            bias = -math.log((1 - prior_prob) / prior_prob)
            init_cfg = [dict(type="Kaiming", layer="Conv2d"),
                        dict(type="Xavier", layer="Linear", distribution="uniform"),
                        dict(type="Normal", std=0.01, bias=bias, override=dict(name="fc_attr"))]
        super().__init__(init_cfg=init_cfg)
        if num_attributes < 1:
            raise ValueError(f"num_attributes must be positive, got {num_attributes}")
        self.num_attributes = int(num_attributes)
        convs, c, size = [], in_channels, roi_feat_size
        for i in range(num_convs):
            stride = first_stride if i == 0 else 1
            convs += [nn.Conv2d(c, conv_out_channels, 3, stride=stride, padding=1),
                      nn.ReLU(inplace=True)]
            c, size = conv_out_channels, (size - 1) // stride + 1
        self.convs = nn.Sequential(*convs)
        self.with_geometry = bool(with_geometry)
        self.fc = nn.Linear(c * size * size, fc_out_channels)
        if self.with_geometry:
            self.fc_geometry = nn.Linear(2, fc_out_channels)
        self.fc_attr = nn.Linear(fc_out_channels, self.num_attributes)
        self.attribute_categories = (None if attribute_categories is None
                                     else sorted(int(c) for c in attribute_categories))
        if not 0.0 <= feature_grad <= 1.0:
            raise ValueError(f"feature_grad must be within 0..1, got {feature_grad}")
        self.feature_grad = float(feature_grad)
        self.category_bias = None
        if num_classes is not None:
            self.category_bias = nn.Embedding(int(num_classes), self.num_attributes)
            nn.init.zeros_(self.category_bias.weight)  # fc_attr's bias holds the start
        self.loss_attr = MODELS.build(loss_attr or dict(type="CrossEntropyLoss",
                                                        use_sigmoid=True, loss_weight=1.0))

    def forward(self, feats: Tensor, rois: Tensor | None = None,
                labels: Tensor | None = None) -> Tensor:
        """Logits of the RoIs (``rois``: N × 5, batch index and x1, y1, x2, y2; needed with
        ``with_geometry``; ``labels``: their categories, needed with ``num_classes``)."""
        if self.feature_grad < 1.0:
            feats = feats * self.feature_grad + feats.detach() * (1.0 - self.feature_grad)
        hidden = self.fc(self.convs(feats).flatten(1))
        if self.with_geometry:
            if rois is None:
                raise ValueError("AttributeHead(with_geometry=True) needs the RoIs' boxes")
            wh = (rois[:, 3:5] - rois[:, 1:3]).clamp(min=1.0)
            aspect = torch.log(wh[:, 1] / wh[:, 0])[:, None]
            hidden = hidden + self.fc_geometry(torch.cat([aspect, aspect * aspect], 1))
        logits = self.fc_attr(torch.relu(hidden))
        if self.category_bias is not None:
            if labels is None:
                raise ValueError("AttributeHead(num_classes=...) needs the RoIs' categories")
            logits = logits + self.category_bias(labels.long())
        return logits

    def loss(self, logits: Tensor, targets: Tensor, labels: Tensor) -> dict:
        """Loss of the RoIs' ``logits`` against their truth's multi-hot ``targets``; ``labels``
        are the truth categories (for ``attribute_categories``)."""
        if self.attribute_categories is None:
            rows = torch.ones_like(labels, dtype=torch.float32)
        else:
            cats = labels.new_tensor(self.attribute_categories)
            rows = torch.isin(labels, cats).float()
        n = rows.sum()
        if logits.numel() == 0 or n == 0:  # keep the graph: every parameter gets a gradient
            return dict(loss_attr=logits.sum() * 0.0)
        weight = rows[:, None].expand_as(logits)
        loss = self.loss_attr(logits, targets.float(), weight, avg_factor=float(n))
        return dict(loss_attr=loss)


class AttributeBranch:
    """The attribute branch of an RoI head (mixed into mmdet's Standard, Cascade and HTC RoI
    heads): builds the :class:`AttributeHead`, its loss on positive RoIs and the attribute
    probabilities of the final detections. ``attribute_features``: ``'mask'``/``'bbox'`` pool
    with the mask / box branch's RoI extractor (of the last stage in a cascade), ``'own'`` with
    an own ``attribute_roi_extractor``."""

    FEATURES = ("mask", "bbox", "own")

    def _init_attributes(self, attribute_head: dict, attribute_features: str,
                         attribute_roi_extractor: dict | None) -> None:
        if not self.with_mask:
            raise ValueError(f"{type(self).__name__} needs a mask head (mask_roi_extractor and "
                             "mask_head)")
        if attribute_features not in self.FEATURES:
            raise ValueError(f"attribute_features must be one of {self.FEATURES}, got "
                             f"{attribute_features!r}")
        if (attribute_features == "own") != (attribute_roi_extractor is not None):
            raise ValueError("attribute_roi_extractor goes with attribute_features='own' (and "
                             "only with it)")
        if attribute_features == "mask" and getattr(self, "share_roi_extractor", False):
            attribute_features = "bbox"  # the mask branch reuses the box branch's features
        self.attribute_features = attribute_features
        self.attribute_head = MODELS.build(attribute_head)
        if attribute_roi_extractor is not None:
            self.attribute_roi_extractor = MODELS.build(attribute_roi_extractor)

    def _attribute_extractor(self):
        ext = {"mask": getattr(self, "mask_roi_extractor", None),
               "bbox": getattr(self, "bbox_roi_extractor", None),
               "own": getattr(self, "attribute_roi_extractor", None)}[self.attribute_features]
        return ext[-1] if isinstance(ext, nn.ModuleList) else ext

    def _attribute_feats(self, x: tuple[Tensor], rois: Tensor) -> Tensor:
        """The attribute branch's RoI features of ``rois``, pooled as in training."""
        ext = self._attribute_extractor()
        feats = ext(x[:ext.num_inputs], rois)
        if self.attribute_features != "own" and getattr(self, "with_shared_head", False):
            feats = self.shared_head(feats)
        return feats

    def attribute_loss(self, x: tuple[Tensor], sampling_results: list[SamplingResult],
                       batch_gt_instances: list, feats: Tensor | None = None) -> dict:
        """``loss_attr`` of the positive RoIs against their truths' attributes (``feats``: their
        features when already pooled)."""
        pos_rois = bbox2roi([r.pos_priors for r in sampling_results])
        if feats is None:
            feats = self._attribute_feats(x, pos_rois)
        targets, labels = [], []
        for res, gt in zip(sampling_results, batch_gt_instances):
            if "attributes" not in gt:
                raise KeyError("gt_instances have no 'attributes': train an attribute model "
                               "on IMatDataset(attributes=True, num_attributes=...)")
            targets.append(gt.attributes[res.pos_assigned_gt_inds])
            labels.append(gt.labels[res.pos_assigned_gt_inds])
        labels = torch.cat(labels)
        logits = self.attribute_head(feats, pos_rois, labels)
        return self.attribute_head.loss(logits, torch.cat(targets), labels)

    def predict_attributes(self, x: tuple[Tensor], results_list: list) -> list:
        """``attributes`` (N × A probabilities) on each image's detections; boxes must still
        be at the network input's scale."""
        rois = bbox2roi([res.bboxes for res in results_list])
        num_attr = self.attribute_head.num_attributes
        if rois.shape[0] == 0:
            probs = rois.new_zeros((0, num_attr))
        else:
            labels = torch.cat([res.labels for res in results_list])
            probs = self.attribute_head(self._attribute_feats(x, rois), rois, labels).sigmoid()
        for res, p in zip(results_list, probs.split([len(r) for r in results_list], 0)):
            res.attributes = p
        return results_list


@MODELS.register_module()
class AttributeRoIHead(AttributeBranch, StandardRoIHead):
    """``StandardRoIHead`` with an attribute branch (see the module docstring). Needs the mask
    branch (its training step is where the positive RoIs are at hand)."""

    def __init__(self, attribute_head: dict, attribute_features: str = "mask",
                 attribute_roi_extractor: dict | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self._init_attributes(attribute_head, attribute_features, attribute_roi_extractor)

    def mask_loss(self, x: tuple[Tensor], sampling_results: list[SamplingResult],
                  bbox_feats: Tensor, batch_gt_instances: list) -> dict:
        """The mask loss, plus ``loss_attr`` on the positive RoIs (whose mask-branch features
        the mask loss has just pooled)."""
        results = super().mask_loss(x, sampling_results, bbox_feats, batch_gt_instances)
        feats = None
        if self.attribute_features == "mask":
            feats = results["mask_feats"]
        elif self.attribute_features == "bbox":
            pos = torch.cat([torch.cat([bbox_feats.new_ones(len(r.pos_priors), dtype=torch.bool),
                                        bbox_feats.new_zeros(len(r.neg_priors),
                                                             dtype=torch.bool)])
                             for r in sampling_results])
            feats = bbox_feats[pos]
        loss = self.attribute_loss(x, sampling_results, batch_gt_instances, feats)
        results["loss_mask"] = {**results["loss_mask"], **loss}
        return results

    def predict_mask(self, x: tuple[Tensor], batch_img_metas: list, results_list: list,
                     rescale: bool = False) -> list:
        """Attributes on the final boxes (still at the input's scale), then the masks."""
        results_list = self.predict_attributes(x, results_list)
        return super().predict_mask(x, batch_img_metas, results_list, rescale=rescale)


class _CascadeAttributes(AttributeBranch):
    """The attribute branch on a cascade: trained on the last stage's positive RoIs, predicted
    on the final boxes. ``loss_attr`` is not scaled by the last stage's loss weight (the
    cascade scales every ``loss*`` of stage s by ``stage_loss_weights[s]``): it keeps the
    weight its head's ``loss_attr`` config gives it, as on Mask R-CNN."""

    def _attribute_mask_loss(self, stage: int, results: dict, x, sampling_results,
                             batch_gt_instances) -> dict:
        if stage == self.num_stages - 1:
            loss = self.attribute_loss(x, sampling_results, batch_gt_instances)
            w = float(self.stage_loss_weights[stage]) or 1.0
            results["loss_mask"] = {**results["loss_mask"],
                                    **{k: v / w for k, v in loss.items()}}
        return results


@MODELS.register_module()
class AttributeCascadeRoIHead(_CascadeAttributes, CascadeRoIHead):
    """Cascade Mask R-CNN's RoI head with the attribute branch (see :class:`AttributeBranch`)."""

    def __init__(self, attribute_head: dict, attribute_features: str = "mask",
                 attribute_roi_extractor: dict | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self._init_attributes(attribute_head, attribute_features, attribute_roi_extractor)

    def mask_loss(self, stage: int, x: tuple[Tensor], sampling_results: list[SamplingResult],
                  batch_gt_instances: list) -> dict:
        results = super().mask_loss(stage, x, sampling_results, batch_gt_instances)
        return self._attribute_mask_loss(stage, results, x, sampling_results,
                                         batch_gt_instances)

    def predict_mask(self, x: tuple[Tensor], batch_img_metas: list, results_list: list,
                     rescale: bool = False) -> list:
        results_list = self.predict_attributes(x, results_list)
        return super().predict_mask(x, batch_img_metas, results_list, rescale=rescale)


@MODELS.register_module()
class AttributeHTCRoIHead(_CascadeAttributes, HybridTaskCascadeRoIHead):
    """HTC's RoI head with the attribute branch (see :class:`AttributeBranch`)."""

    def __init__(self, attribute_head: dict, attribute_features: str = "mask",
                 attribute_roi_extractor: dict | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self._init_attributes(attribute_head, attribute_features, attribute_roi_extractor)

    def mask_loss(self, stage: int, x: tuple[Tensor], sampling_results: list[SamplingResult],
                  batch_gt_instances: list, semantic_feat: Tensor | None = None) -> dict:
        results = super().mask_loss(stage, x, sampling_results, batch_gt_instances,
                                    semantic_feat=semantic_feat)
        return self._attribute_mask_loss(stage, results, x, sampling_results,
                                         batch_gt_instances)

    def predict_mask(self, x: tuple[Tensor], semantic_heat: Tensor | None,
                     batch_img_metas: list, results_list: list, rescale: bool = False) -> list:
        results_list = self.predict_attributes(x, results_list)
        return super().predict_mask(x, semantic_heat, batch_img_metas, results_list,
                                    rescale=rescale)
