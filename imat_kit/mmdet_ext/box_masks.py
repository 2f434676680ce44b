"""Instance masks at the original image size without an N × H × W array (issue 29).

mmdet's R-CNN mask heads (``FCNMaskHead`` and its HTC/Cascade kin) paste every instance's
28 × 28 prediction into a full-size ``N × H × W`` tensor: 100 instances of a 10717 × 6824
image are 7.3 GB per copy. :func:`box_mask_heads` makes them paste each instance alone, inside
its paste region (mmdet's own ``_do_paste_mask(skip_empty=True)``, what mmdet does on CPU),
and keep only that region: a :class:`BoxMasks`. :meth:`BoxMasks.counts` then encodes one
instance at a time into the full image's COCO counts — the same text pycocotools gives for the
full mask (tested), so predictions files do not change.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from imat_kit.data import rle as rle_mod


class BoxMasks:
    """N masks of an H × W image, each kept as its paste region: ``tops``/``lefts`` (the
    region's first row and column) and ``regions`` (bool, or uint8 probabilities 0–255);
    every pixel outside its region is 0."""

    def __init__(self, height: int, width: int, tops: list[int], lefts: list[int],
                 regions: list[np.ndarray]) -> None:
        self.height, self.width = int(height), int(width)
        self.tops, self.lefts, self.regions = list(tops), list(lefts), list(regions)

    def __len__(self) -> int:
        return len(self.regions)

    def __getitem__(self, index) -> BoxMasks:
        idx = np.arange(len(self))[np.asarray(index.cpu() if hasattr(index, "cpu") else index)]
        idx = np.atleast_1d(idx)
        return BoxMasks(self.height, self.width, [self.tops[i] for i in idx],
                        [self.lefts[i] for i in idx], [self.regions[i] for i in idx])

    @property
    def dtype(self):
        return self.regions[0].dtype if self.regions else np.dtype(bool)

    def mirrored(self) -> BoxMasks:
        """The masks of the horizontally mirrored image."""
        return BoxMasks(self.height, self.width, self.tops,
                        [self.width - left - r.shape[1] for left, r in zip(self.lefts,
                                                                          self.regions)],
                        [r[:, ::-1] for r in self.regions])

    def binary(self, j: int, threshold: int | None) -> np.ndarray:
        """Instance ``j``'s region as 0/1 (``threshold``: probabilities at or above it)."""
        r = self.regions[j]
        return (r >= threshold) if threshold is not None else r.astype(bool)

    def counts(self, j: int, threshold: int | None = None) -> str:
        """Instance ``j`` as the full image's compressed COCO counts text."""
        return rle_mod.region_counts(self.binary(j, threshold), self.tops[j], self.lefts[j],
                                     self.height, self.width)

    def crop(self, j: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Pixels ``[y0:y1, x0:x1]`` of instance ``j``'s full mask (0 outside its region)."""
        r, top, left = self.regions[j], self.tops[j], self.lefts[j]
        out = np.zeros((y1 - y0, x1 - x0), r.dtype)
        ya, yb = max(y0, top), min(y1, top + r.shape[0])
        xa, xb = max(x0, left), min(x1, left + r.shape[1])
        if ya < yb and xa < xb:
            out[ya - y0:yb - y0, xa - x0:xb - x0] = r[ya - top:yb - top, xa - left:xb - left]
        return out


def paste_one_by_one(mask_preds, bboxes, img_h: int, img_w: int, threshold: float
                     ) -> BoxMasks:
    """mmdet's paste (``_do_paste_mask``, ``skip_empty=True``) one instance at a time, each
    region moved to host memory as it is made: bool at ``threshold`` (≥ 0), else uint8
    probabilities × 255 (mmdet's soft output)."""
    import torch
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask

    tops, lefts, regions = [], [], []
    for i in range(len(mask_preds)):
        chunk, (ys, xs) = _do_paste_mask(mask_preds[i:i + 1], bboxes[i:i + 1], img_h, img_w,
                                         skip_empty=True)
        chunk = chunk[0]
        chunk = (chunk >= threshold) if threshold >= 0 else (chunk * 255).to(torch.uint8)
        tops.append(int(ys.start))
        lefts.append(int(xs.start))
        regions.append(chunk.cpu().numpy())
    return BoxMasks(img_h, img_w, tops, lefts, regions)


def _predict_by_feat_single(self, mask_preds, bboxes, labels, img_meta, rcnn_test_cfg,
                            rescale: bool = False, activate_map: bool = False) -> BoxMasks:
    """``FCNMaskHead._predict_by_feat_single`` (mmdet 3.3) with the paste of
    :func:`paste_one_by_one`: the same pixels, kept per instance."""
    scale_factor = bboxes.new_tensor(img_meta["scale_factor"]).repeat((1, 2))
    img_h, img_w = img_meta["ori_shape"][:2]
    mask_preds = mask_preds.sigmoid() if not activate_map else bboxes.new_tensor(mask_preds)
    if rescale:
        bboxes /= scale_factor
    else:
        w_scale, h_scale = scale_factor[0, 0], scale_factor[0, 1]
        img_h = np.round(img_h * h_scale.item()).astype(np.int32)
        img_w = np.round(img_w * w_scale.item()).astype(np.int32)
    n = len(mask_preds)
    if not self.class_agnostic:
        mask_preds = mask_preds[range(n), labels][:, None]
    return paste_one_by_one(mask_preds, bboxes, int(img_h), int(img_w),
                            rcnn_test_cfg.mask_thr_binary)


@contextlib.contextmanager
def box_mask_heads() -> Iterator[None]:
    """For the duration, mmdet's ``FCNMaskHead`` (and its subclasses: HTC's, the cascade's,
    the kit's attribute heads) give :class:`BoxMasks` instead of N × H × W tensors."""
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import FCNMaskHead

    before = FCNMaskHead._predict_by_feat_single
    FCNMaskHead._predict_by_feat_single = _predict_by_feat_single
    try:
        yield
    finally:
        FCNMaskHead._predict_by_feat_single = before
