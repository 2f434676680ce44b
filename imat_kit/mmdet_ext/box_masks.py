"""Instance masks at the original image size without an N × H × W array (issue 29).

mmdet's mask heads make every instance's mask at the original size at once, as one
``N × H × W`` tensor: 100 instances of a 10717 × 6824 image are 7.3 GB per copy (29 GB as the
float logits the single-stage and query-based heads resize). Within :func:`box_mask_heads`
they make one instance at a time and keep only the part of the image it can be non-zero in, a
:class:`BoxMasks`:

* the R-CNN heads (``FCNMaskHead`` and its HTC/Cascade kin) paste each instance alone inside
  its paste region (mmdet's own ``_do_paste_mask(skip_empty=True)``, what mmdet does on CPU);
* YOLACT's protonet, RTMDet-Ins (the kit's ``IMatRTMDetInsSepBNHead``) and Mask2Former (the
  kit's ``IMatMaskFormerFusionHead``) resize each instance's map to the original size alone
  (mmdet's operations on one instance give the same values as on all of them) and keep its
  pixels' bounding rectangle, with the detection's box when it keeps probabilities.

:meth:`BoxMasks.counts` then encodes one instance at a time into the full image's COCO counts
— the same text pycocotools gives for the full mask (tested), so predictions files do not
change.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from imat_kit.data import rle as rle_mod


class _Bits:
    """A bool region packed 8 pixels to a byte (a model's mask can cover most of a 73-Mpx
    image: 100 of them are 7.3 GB as bool, 0.9 GB packed)."""

    __slots__ = ("data", "shape")
    dtype = np.dtype(bool)

    def __init__(self, region: np.ndarray) -> None:
        self.shape = region.shape
        self.data = np.packbits(region, axis=None)

    def unpacked(self) -> np.ndarray:
        n = int(np.prod(self.shape))
        return np.unpackbits(self.data, count=n).view(bool).reshape(self.shape)


class BoxMasks:
    """N masks of an H × W image, each kept as its paste region: ``tops``/``lefts`` (the
    region's first row and column) and its pixels (bool, held packed 8 to a byte, or uint8
    probabilities 0–255); every pixel outside its region is 0."""

    def __init__(self, height: int, width: int, tops: list[int], lefts: list[int],
                 regions: list) -> None:
        self.height, self.width = int(height), int(width)
        self.tops, self.lefts = list(tops), list(lefts)
        self._regions = [_Bits(r) if isinstance(r, np.ndarray) and r.dtype == bool else r
                         for r in regions]

    def __len__(self) -> int:
        return len(self._regions)

    def region(self, j: int) -> np.ndarray:
        """Instance ``j``'s region (bool or uint8)."""
        r = self._regions[j]
        return r.unpacked() if isinstance(r, _Bits) else r

    def __getitem__(self, index) -> BoxMasks:
        idx = np.arange(len(self))[np.asarray(index.cpu() if hasattr(index, "cpu") else index)]
        idx = np.atleast_1d(idx)
        return BoxMasks(self.height, self.width, [self.tops[i] for i in idx],
                        [self.lefts[i] for i in idx], [self._regions[i] for i in idx])

    @property
    def dtype(self):
        return self._regions[0].dtype if self._regions else np.dtype(bool)

    def mirrored(self) -> BoxMasks:
        """The masks of the horizontally mirrored image."""
        return BoxMasks(self.height, self.width, self.tops,
                        [self.width - left - r.shape[1] for left, r in zip(self.lefts,
                                                                          self._regions)],
                        [self.region(j)[:, ::-1] for j in range(len(self))])

    def binary(self, j: int, threshold: int | None) -> np.ndarray:
        """Instance ``j``'s region as 0/1 (``threshold``: probabilities at or above it)."""
        r = self.region(j)
        return (r >= threshold) if threshold is not None else r.astype(bool)

    def counts(self, j: int, threshold: int | None = None) -> str:
        """Instance ``j`` as the full image's compressed COCO counts text."""
        return rle_mod.region_counts(self.binary(j, threshold), self.tops[j], self.lefts[j],
                                     self.height, self.width)

    def crop(self, j: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Pixels ``[y0:y1, x0:x1]`` of instance ``j``'s full mask (0 outside its region)."""
        r, top, left = self.region(j), self.tops[j], self.lefts[j]
        out = np.zeros((y1 - y0, x1 - x0), r.dtype)
        ya, yb = max(y0, top), min(y1, top + r.shape[0])
        xa, xb = max(x0, left), min(x1, left + r.shape[1])
        if ya < yb and xa < xb:
            out[ya - y0:yb - y0, xa - x0:xb - x0] = r[ya - top:yb - top, xa - left:xb - left]
        return out


_ACTIVE = [False]  # inside box_mask_heads (the kit's own heads read it)


def active() -> bool:
    """Whether the heads should give :class:`BoxMasks` (inside :func:`box_mask_heads`)."""
    return _ACTIVE[0]


def region_of(full, box=None) -> tuple[int, int, np.ndarray]:
    """``(top, left, region)`` of one instance's full-size map (a 2-D tensor: bool, or uint8
    probabilities × 255, where pixels from 128 on are the mask): the bounding rectangle of its
    mask's pixels, grown to the pixel rectangle ``box`` (x0, y0, x1, y1) when given (where a
    soft mask is cropped from), as :func:`stored`. Empty (0 × 0) when there is neither."""
    import torch

    on = full >= 128 if full.dtype == torch.uint8 else full
    rows = torch.nonzero(on.any(dim=1)).flatten()
    cols = torch.nonzero(on.any(dim=0)).flatten()
    spans = []
    if len(rows):
        spans.append((int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1))
    if box is not None:
        x0, y0, x1, y1 = box
        spans.append((y0, y1, x0, x1))
    if not spans:
        return 0, 0, full[:0, :0].cpu().numpy()
    y0, y1 = min(t[0] for t in spans), max(t[1] for t in spans)
    x0, x1 = min(t[2] for t in spans), max(t[3] for t in spans)
    return y0, x0, stored(full[y0:y1, x0:x1].cpu().numpy())


def stored(region: np.ndarray):
    """A region as :class:`BoxMasks` holds it: bool packed, uint8 copied out of the full map
    it may be a view of (so that the map can be freed)."""
    return _Bits(region) if region.dtype == bool else np.array(region, copy=True)


def one_by_one(n: int, full_of, height: int, width: int) -> BoxMasks:
    """:class:`BoxMasks` of ``n`` instances from ``full_of(i)``: instance i's full-size map and
    the pixel rectangle its soft mask is cropped from, or None (see :func:`region_of`), made
    and cut one at a time."""
    tops, lefts, regions = [], [], []
    for i in range(n):
        top, left, region = region_of(*full_of(i))
        tops.append(top)
        lefts.append(left)
        regions.append(region)
    return BoxMasks(height, width, tops, lefts, regions)


def pixel_boxes(bboxes, height: int, width: int) -> list[tuple[int, int, int, int]]:
    """Each x1y1x2y2 box's pixel rectangle (``data.masks.box_pixels``: where ``predict``
    crops a soft mask)."""
    from imat_kit.data.masks import box_pixels

    xyxy = bboxes.detach().cpu().double().numpy().reshape(-1, 4)
    return [box_pixels(np.array([b[0], b[1], b[2] - b[0], b[3] - b[1]], np.float32), height,
                       width) for b in xyxy]


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
        regions.append(stored(chunk.cpu().numpy()))
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


def _yolact_predict_by_feat_single(self, mask_preds, bboxes, img_meta: dict, rescale: bool,
                                   cfg=None) -> BoxMasks:
    """``YOLACTProtonet._predict_by_feat_single`` (mmdet 3.3), one instance at a time."""
    import torch.nn.functional as F

    cfg = self.test_cfg if cfg is None else cfg
    scale_factor = bboxes.new_tensor(img_meta["scale_factor"]).repeat((1, 2))
    img_h, img_w = img_meta["ori_shape"][:2]
    if rescale:
        bboxes /= scale_factor
    else:
        w_scale, h_scale = scale_factor[0, 0], scale_factor[0, 1]
        img_h = int(np.round(img_h * h_scale.item()))
        img_w = int(np.round(img_w * w_scale.item()))
    soft = cfg.mask_thr_binary < 0
    boxes = pixel_boxes(bboxes, img_h, img_w) if soft else None

    def full(i: int):
        import torch

        m = F.interpolate(mask_preds[i:i + 1].unsqueeze(0), (img_h, img_w), mode="bilinear",
                          align_corners=False).squeeze(0)[0] > cfg.mask_thr
        return ((m * 255).to(dtype=torch.uint8), boxes[i]) if soft else (m, None)

    return one_by_one(len(mask_preds), full, img_h, img_w)


@contextlib.contextmanager
def box_mask_heads() -> Iterator[None]:
    """For the duration, mmdet's ``FCNMaskHead`` (and its subclasses: HTC's, the cascade's,
    the kit's attribute heads), YOLACT's protonet and the kit's RTMDet-Ins and Mask2Former
    heads give :class:`BoxMasks` instead of N × H × W tensors."""
    from mmdet.models.dense_heads.yolact_head import YOLACTProtonet
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import FCNMaskHead

    before = FCNMaskHead._predict_by_feat_single, YOLACTProtonet._predict_by_feat_single
    FCNMaskHead._predict_by_feat_single = _predict_by_feat_single
    YOLACTProtonet._predict_by_feat_single = _yolact_predict_by_feat_single
    _ACTIVE[0] = True
    try:
        yield
    finally:
        FCNMaskHead._predict_by_feat_single, YOLACTProtonet._predict_by_feat_single = before
        _ACTIVE[0] = False
