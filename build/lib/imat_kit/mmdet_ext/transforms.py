"""Data transforms that mmdet lacks."""

from __future__ import annotations

import numpy as np
from mmcv.transforms import BaseTransform
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
