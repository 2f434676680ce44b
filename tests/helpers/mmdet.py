"""Test-only hooks, loaded by the test configs through custom_imports."""

from __future__ import annotations

import hashlib
import json

import torch
from mmcv.transforms import BaseTransform
from mmdet.models.detectors import BaseDetector
from mmdet.registry import HOOKS, MODELS, TRANSFORMS
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper


def _digest(module: torch.nn.Module) -> str:
    """Of the parameters (weights), not the buffers: with BN statistics updated per process
    and broadcast_buffers=False, buffers may legitimately differ between ranks."""
    h = hashlib.sha256()
    for name, p in sorted(module.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@HOOKS.register_module()
class ParamDigestHook(Hook):
    """Writes ``digest_rank{r}.json``: digests of the backbone and of the rest of the model at
    the start and end of training, per process."""

    def before_train(self, runner) -> None:
        self._start = self._digests(runner)

    def after_train(self, runner) -> None:
        out = {"start": self._start, "end": self._digests(runner)}
        path = f"{runner.work_dir}/digest_rank{get_rank()}.json"
        with open(path, "w") as f:
            json.dump(out, f)

    @staticmethod
    def _digests(runner) -> dict:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        return {"backbone": _digest(model.backbone), "neck": _digest(model.neck),
                "roi_head": _digest(model.roi_head)}


@MODELS.register_module()
class BrightBlobDetector(BaseDetector):
    """A detector without learning, for checking the predict path: one instance per image, the
    pixels brighter than mid-grey in the network input, mapped back to the original image size
    the way mmdet's heads do (crop the padding, resize to ``ori_shape``). It knows nothing of
    flips: a mirrored input gives a mirrored mask, which ``predict`` must mirror back."""

    def __init__(self, data_preprocessor=None, init_cfg=None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.dummy = torch.nn.Parameter(torch.zeros(1))  # a checkpoint needs a state dict

    def predict(self, batch_inputs, batch_data_samples, rescale: bool = True):
        import torch.nn.functional as F
        from mmengine.structures import InstanceData

        for img, sample in zip(batch_inputs, batch_data_samples):
            h, w = sample.metainfo["img_shape"][:2]
            oh, ow = sample.metainfo["ori_shape"][:2]
            bright = (img[:, :h, :w].float().mean(0) > 128).float()[None, None]
            mask = F.interpolate(bright, size=(oh, ow), mode="nearest")[0, 0] > 0.5
            ys, xs = torch.nonzero(mask, as_tuple=True)
            inst = InstanceData()
            if len(ys):
                inst.bboxes = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]],
                                           dtype=torch.float32)
                inst.scores = torch.tensor([0.9])
                inst.labels = torch.tensor([6])
                inst.masks = mask[None]
            else:
                inst.bboxes = torch.zeros((0, 4))
                inst.scores = torch.zeros(0)
                inst.labels = torch.zeros(0, dtype=torch.long)
                inst.masks = torch.zeros((0, oh, ow), dtype=torch.bool)
            sample.pred_instances = inst
        return batch_data_samples

    def loss(self, batch_inputs, batch_data_samples):  # pragma: no cover - never trained
        raise NotImplementedError

    def _forward(self, batch_inputs, batch_data_samples=None):  # pragma: no cover
        raise NotImplementedError

    def extract_feat(self, batch_inputs):  # pragma: no cover
        raise NotImplementedError


@TRANSFORMS.register_module()
class TagInstanceIds(BaseTransform):
    """Writes each instance's 1-based index into its own mask's pixel values (instead of 1):
    an instance id that travels with the mask itself, independent of the code that keeps
    per-instance fields aligned (which the attribute alignment test checks)."""

    def transform(self, results: dict) -> dict:
        import numpy as np
        from mmdet.structures.mask import BitmapMasks

        m = results["gt_masks"]
        ids = np.arange(1, len(m) + 1, dtype=np.uint8)[:, None, None]
        results["gt_masks"] = BitmapMasks(m.masks.astype(np.uint8) * ids, m.height, m.width)
        return results
