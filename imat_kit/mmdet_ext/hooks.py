"""Hooks: validation loss (so train and val loss curves can be drawn from mmengine's logs), and the
attribute branch's start at the per-category prior."""

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


@HOOKS.register_module()
class AttributePriorHook(Hook):
    """Start the attribute branch at the per-category prior of the training data.

    Before the first training iteration (not after a resume, not when ``load_from`` brings
    trained weights), the branch's per-category bias (``AttributeHead(num_classes=...)``) is
    set so that, before any feature has been learnt, each attribute's probability for a RoI of
    category c is its frequency among the training instances of c, smoothed towards the head's
    start (``prior_prob``) by ``smoothing`` pseudo-instances. Without it the bias must climb
    from the 1% start (log-odds −4.6) to a frequent attribute's log-odds one optimiser step at a
    time: Adam moves a parameter by about its learning rate per step (3e-4 for the tiny
    config), so a short run never reaches even the prior.
    """

    priority = "LOW"

    def __init__(self, smoothing: float = 1.0) -> None:
        if smoothing <= 0:
            raise ValueError(f"smoothing must be positive, got {smoothing}")
        self.smoothing = float(smoothing)

    def before_train(self, runner) -> None:
        if runner.iter > 0 or runner.cfg.get("load_from"):
            runner.logger.info("AttributePriorHook: trained weights loaded, prior not set")
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        head = getattr(getattr(model, "roi_head", None), "attribute_head", None)
        if head is None or getattr(head, "category_bias", None) is None:
            raise ValueError("AttributePriorHook needs an AttributeHead with num_classes (the "
                             "per-category bias it sets)")
        dataset = runner.train_dataloader.dataset
        while not hasattr(dataset, "get_data_info") and hasattr(dataset, "dataset"):
            dataset = dataset.dataset  # RepeatDataset and the like
        counts, n = attribute_counts(dataset, head.category_bias.num_embeddings,
                                     head.num_attributes)
        set_category_prior(head, counts, n, self.smoothing)
        runner.logger.info(f"AttributePriorHook: per-category attribute prior set from "
                           f"{int(n.sum())} training instances")


def attribute_counts(dataset, num_classes: int, num_attributes: int):
    """Per category: how many training instances carry each attribute, and how many there
    are (``IMatDataset(attributes=True)`` entries: ``bbox_label`` and ``attributes``)."""
    import numpy as np

    counts = np.zeros((num_classes, num_attributes))
    n = np.zeros(num_classes)
    for i in range(len(dataset)):
        for inst in dataset.get_data_info(i).get("instances", []):
            if inst.get("ignore_flag") or "attributes" not in inst:
                continue
            c = int(inst["bbox_label"])
            n[c] += 1
            counts[c, list(inst["attributes"])] += 1
    return counts, n


def set_category_prior(head, counts, n, smoothing: float = 1.0) -> None:
    """Set ``head.category_bias`` so that sigmoid(output bias + category bias) is each
    attribute's smoothed frequency in its category (categories without instances: zero)."""
    import numpy as np

    start = torch.sigmoid(head.fc_attr.bias.detach()).cpu().numpy().astype(np.float64)
    freq = (counts + smoothing * start) / (n[:, None] + smoothing)
    freq = np.clip(freq, 1e-4, 1 - 1e-4)
    logit = np.log(freq / (1 - freq)) - head.fc_attr.bias.detach().cpu().numpy()
    logit[n == 0] = 0.0
    with torch.no_grad():
        w = head.category_bias.weight
        w.copy_(torch.as_tensor(logit, dtype=w.dtype, device=w.device))


@HOOKS.register_module()
class BoxMasksHook(Hook):
    """Validation and test in bounded memory: while a val or test epoch runs, the R-CNN mask
    heads keep each instance's mask inside its paste region (:mod:`box_masks`), and the kit's
    metrics encode them one at a time, never an N × H × W array at the original size.
    ``IMatRunner`` registers it for every config."""

    priority = "VERY_HIGH"

    def _enter(self, runner) -> None:
        import contextlib

        from imat_kit.mmdet_ext.box_masks import box_mask_heads

        self._stack = contextlib.ExitStack()
        self._stack.enter_context(box_mask_heads())

    def _exit(self, runner, metrics=None) -> None:
        stack = getattr(self, "_stack", None)
        if stack is not None:
            stack.close()
            self._stack = None

    before_val_epoch = before_test_epoch = _enter
    after_val_epoch = after_test_epoch = _exit
