"""Data transforms that mmdet lacks."""

from __future__ import annotations

import numpy as np
from mmcv.transforms import BaseTransform
from mmdet.datasets.transforms import Resize
from mmdet.registry import TRANSFORMS


@TRANSFORMS.register_module()
class RecomputeBBoxFromMasks(BaseTransform):
    """Make every box the tight box of its mask and drop instances whose mask became empty.

    mmdet's geometric transforms (Rotate, Shear, Translate) move the box corners, not the box,
    so after them a box is looser than its mask; a crop or translation can also push a mask out
    of the image. Needs ``gt_masks`` and ``gt_bboxes``; also filters ``gt_bboxes_labels`` and
    ``gt_ignore_flags``.
    """

    def __init__(self, min_area: int = 1) -> None:
        self.min_area = min_area

    def transform(self, results: dict) -> dict:
        masks = results.get("gt_masks")
        boxes = results.get("gt_bboxes")
        if masks is None or boxes is None or len(masks) == 0:
            return results
        keep = np.asarray(masks.areas) >= self.min_area
        results["gt_masks"] = masks[keep]
        tight = results["gt_masks"].get_bboxes(type(boxes))
        results["gt_bboxes"] = tight
        for key in ("gt_bboxes_labels", "gt_ignore_flags"):
            if key in results:
                results[key] = results[key][keep]
        return results

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(min_area={self.min_area})"


@TRANSFORMS.register_module()
class ShrinkToFit(Resize):
    """mmdet's ``Resize(keep_ratio=True)`` for images larger than ``scale`` only: an image
    whose long side exceeds ``max(scale)`` or whose short side exceeds ``min(scale)`` is
    shrunk to fit (image, boxes, masks, as ``Resize`` does), a smaller one passes unchanged.

    Placed before augmentations that must touch every pixel (rotate, shear, photometric), with
    ``scale`` the largest size the pipeline's later ``RandomResize`` can ask for, it makes
    them run at that size instead of the original (a 10717 × 6824 competition image); the
    later resize then only shrinks further."""

    def __init__(self, scale: tuple[int, int], **kwargs) -> None:
        if kwargs.get("keep_ratio", True) is not True:
            raise ValueError("ShrinkToFit keeps the aspect ratio (keep_ratio=True)")
        super().__init__(scale=scale, keep_ratio=True, **kwargs)

    def transform(self, results: dict) -> dict:
        h, w = results["img"].shape[:2]
        factor = min(max(self.scale) / max(h, w), min(self.scale) / min(h, w))
        if factor >= 1:
            return results
        return super().transform(results)
