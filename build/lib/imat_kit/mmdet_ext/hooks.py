"""Hooks: validation loss, so train and val loss curves can be drawn from mmengine's logs."""

from __future__ import annotations

import torch
from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper


@HOOKS.register_module()
class ValLossHook(Hook):
    """Compute the training losses on the validation set during each validation.

    The val dataloader must load annotations (``LoadAnnotations`` in the test pipeline, as in
    ``configs/_base_/imat_instance.py``). Per batch the model's ``loss`` runs under
    ``no_grad``; the means are logged as ``val_loss`` and ``val_<name>`` (in
    ``vis_data/scalars.json``, on the validation line beside ``coco/...``).
    The model stays in eval mode (BN statistics untouched). Test pipelines load annotations
    after ``Resize`` (so metrics compare at the original size); the ground truth is scaled to
    the network input here before the loss.
    """

    priority = "ABOVE_NORMAL"  # before LoggerHook writes the metrics

    def before_val_epoch(self, runner) -> None:
        self._sums: dict[str, float] = {}
        self._n = 0

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if data_batch is None:
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        for sample in data_batch["data_samples"]:
            _gt_to_input_scale(sample)
        with torch.no_grad():
            data = model.data_preprocessor(data_batch, training=True)
            if not all(len(s.gt_instances) for s in data["data_samples"]):
                return  # an image without ground truth has no loss to speak of
            losses = model.loss(data["inputs"], data["data_samples"])
        total = 0.0
        for name, value in losses.items():
            if "loss" not in name:
                continue
            v = sum(x.sum() for x in value) if isinstance(value, (list, tuple)) else value
            v = float(v.detach().mean())
            self._sums[name] = self._sums.get(name, 0.0) + v
            total += v
        self._sums["loss"] = self._sums.get("loss", 0.0) + total
        self._n += 1

    def after_val_epoch(self, runner, metrics: dict | None = None) -> None:
        if not self._n:
            return
        for name, total in self._sums.items():
            key = f"val_{name}"  # val_loss, val_loss_cls, ...
            # RuntimeInfoHook has already copied `metrics` into the message hub, where the
            # logger reads them: put ours there too (and into metrics, for later hooks)
            runner.message_hub.update_scalar(f"val/{key}", total / self._n)
            if metrics is not None:
                metrics[key] = total / self._n


def _gt_to_input_scale(sample) -> None:
    """Scale a val sample's ground truth from the original image to the resized input, once."""
    if sample.metainfo.get("_imat_gt_rescaled"):
        return
    sf = sample.metainfo.get("scale_factor")
    gt = sample.gt_instances
    if sf is not None and len(gt):
        if hasattr(gt.bboxes, "rescale_"):
            gt.bboxes.rescale_(sf)
        else:
            gt.bboxes = gt.bboxes * gt.bboxes.new_tensor([sf[0], sf[1], sf[0], sf[1]])
        if "masks" in gt:
            gt.masks = gt.masks.resize(sample.metainfo["img_shape"][:2])
    sample.set_metainfo({"_imat_gt_rescaled": True})
