"""Training masks that stay run-length encoded until the pipeline has made them small.

mmdet's ``LoadAnnotations`` decodes every instance's RLE at the image's original size, as one
``N × H × W`` uint8 array, before ``Resize`` shrinks it: on a 10717 × 6824 competition image
with 50 instances that is 3.6 GB per loader worker for masks the network sees at 1024 × 652
(mmdet issue #7718).
:class:`IMatLoadAnnotations` loads the same instances as :class:`RunMasks`: each instance's
runs at the source size, plus one source row per output row and one source column per output
column. ``Resize``/``rescale`` (nearest, as mmdet's masks resize), flips, crops,
``pad``/``expand`` (zero rows and columns), whole-pixel translations and instance indexing only
rewrite those two index lists, so the pixels are decoded once, at the size the pipeline has
reached, within each instance's box, into exactly the array mmdet's ``BitmapMasks`` would hold
after the same steps. Anything else (rotate, shear, sub-pixel translations,
``crop_and_resize``, ``to_tensor``, ``.masks``) decodes first and runs mmdet's own code, so a
transform that knows only ``BitmapMasks`` works unchanged (a ``RunMasks`` is one); the warps
run on at most 128 masks at a time, which OpenCV 5 needs (mmdet's own ``BitmapMasks`` fail
there on an image of more than 128 instances, which RTMDet's mosaic and mix-up of the
competition's images reach).

Leaving a loader worker, resized masks travel decoded (the decoding stays in the worker, as
with mmdet's loader); masks still at the original size (validation pipelines load them after
``Resize``, at the original size, for nothing but the validation loss) travel as runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import mmcv
import numpy as np
from mmdet.datasets.transforms import LoadAnnotations
from mmdet.registry import TRANSFORMS
from mmdet.structures.mask import BitmapMasks
from pycocotools import mask as mask_utils

from imat_kit.data.rle import coco_to_runs


def nearest_index(src: int, dst: int) -> np.ndarray:
    """The source index of each of ``dst`` output positions when ``src`` positions are resized
    to ``dst`` by OpenCV's ``INTER_NEAREST`` (what ``mmcv.imresize(..., 'nearest')`` calls):
    ``floor(i / (dst / src))``, clipped to the last source position."""
    step = 1.0 / (dst / src)
    return np.minimum(np.floor(np.arange(dst) * step).astype(np.int64), src - 1)


def _runs_of(segmentation, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of one instance, 0-based column-major over ``height × width``, from
    what mmdet's ``LoadAnnotations`` accepts: a COCO RLE (compressed or not) or polygons."""
    if isinstance(segmentation, list):  # polygons, merged into one RLE as mmdet does
        segmentation = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    return coco_to_runs(segmentation)


class RunMasks(BitmapMasks):
    """``BitmapMasks`` kept as runs until their pixels are needed (see the module doc).

    Built by :meth:`from_runs`; ``RunMasks(array, height, width)`` (what mmdet's ``cat`` and
    ``__getitem__`` call) is a decoded one."""

    def __init__(self, masks, height: int, width: int) -> None:
        self._lazy = None
        super().__init__(masks, height, width)

    @classmethod
    def from_runs(cls, runs: Sequence[tuple[np.ndarray, np.ndarray]], height: int,
                  width: int) -> RunMasks:
        """Masks of an image of ``height × width`` from each instance's 0-based column-major
        (starts, ends) (end exclusive, starts increasing)."""
        starts = [np.asarray(s, np.int64) for s, _ in runs]
        ends = [np.asarray(e, np.int64) for _, e in runs]
        return cls._lazy_masks(starts, ends, int(height), np.arange(height, dtype=np.int64),
                               np.arange(width, dtype=np.int64))

    @classmethod
    def _lazy_masks(cls, starts: list, ends: list, src_height: int, rows: np.ndarray,
                    cols: np.ndarray) -> RunMasks:
        self = cls.__new__(cls)
        self.height, self.width = len(rows), len(cols)
        self._lazy = (starts, ends, src_height, rows, cols)
        self._decoded = None
        return self

    # -- the pixels, decoded on first use ---------------------------------------------------
    @property
    def masks(self) -> np.ndarray:
        if self._lazy is None:
            return self._decoded
        if self._decoded is None:
            self._decoded = self._decode()
        return self._decoded

    @masks.setter
    def masks(self, value: np.ndarray) -> None:
        self._decoded = value

    @property
    def decoded(self) -> bool:
        """Whether the pixels exist as an array (else only the runs and the index lists)."""
        return self._lazy is None or self._decoded is not None

    def _decode(self) -> np.ndarray:
        starts, ends, src_h, rows, cols = self._lazy
        out = np.zeros((len(starts), len(rows), len(cols)), np.uint8)
        for k in range(len(starts)):
            self._paint(out[k], starts[k], ends[k], src_h, rows, cols)
        return out

    @staticmethod
    def _paint(out: np.ndarray, starts: np.ndarray, ends: np.ndarray, src_h: int,
               rows: np.ndarray, cols: np.ndarray) -> None:
        """Set ``out[i, j]`` to whether source pixel (rows[i], cols[j]) lies in a run, looking
        only at output rows and columns inside the instance's source box."""
        if starts.size == 0:
            return
        first_col, last_col = starts[0] // src_h, (ends[-1] - 1) // src_h
        if np.any(starts // src_h != (ends - 1) // src_h):  # a run wraps to the next column
            top, bottom = 0, src_h - 1
        else:
            top, bottom = int((starts % src_h).min()), int(((ends - 1) % src_h).max())
        js = np.flatnonzero((cols >= first_col) & (cols <= last_col))
        is_ = np.flatnonzero((rows >= top) & (rows <= bottom))
        if js.size == 0 or is_.size == 0:
            return
        pos = cols[js][:, None] * src_h + rows[is_][None, :]  # (J, I): column-major positions
        run = np.searchsorted(starts, pos, side="right") - 1
        inside = (run >= 0) & (pos < ends[np.maximum(run, 0)])
        out[np.ix_(is_, js)] = inside.T

    def _with(self, rows: np.ndarray | None = None, cols: np.ndarray | None = None,
              keep: np.ndarray | None = None) -> RunMasks:
        starts, ends, src_h, old_rows, old_cols = self._lazy
        if keep is not None:
            starts, ends = [starts[k] for k in keep], [ends[k] for k in keep]
        return self._lazy_masks(starts, ends, src_h, old_rows if rows is None else rows,
                                old_cols if cols is None else cols)

    @property
    def resized(self) -> bool:
        """Whether a step has changed the size or the sampling since loading."""
        if self._lazy is None:
            return True
        _, _, src_h, rows, cols = self._lazy
        return not (np.array_equal(rows, np.arange(src_h))
                    and np.array_equal(cols, np.arange(len(cols))))

    def __deepcopy__(self, memo) -> RunMasks:
        """A copy that stays a ``RunMasks`` (mmdet's caching transforms deep-copy results:
        their masks must keep warping 128 at a time)."""
        if self._lazy is None or self._decoded is not None:
            return _kept(BitmapMasks(self.masks.copy(), self.height, self.width))
        starts, ends, src_h, rows, cols = self._lazy
        return self._lazy_masks(list(starts), list(ends), src_h, rows.copy(), cols.copy())

    def __reduce__(self):
        if self._lazy is not None and not self.resized:
            starts, ends, src_h, rows, cols = self._lazy
            return (_rebuild, (starts, ends, src_h, rows, cols))
        return (BitmapMasks, (self.masks, self.height, self.width))

    # -- steps that only move index lists -----------------------------------------------------
    def __len__(self) -> int:
        return len(self._lazy[0]) if self._lazy is not None else len(self._decoded)

    def __getitem__(self, index):
        if self.decoded:
            return _kept(super().__getitem__(index))
        keep = np.arange(len(self))[index].reshape(-1)
        return self._with(keep=keep)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(num_masks={len(self)}, height={self.height}, "
                f"width={self.width}, decoded={self.decoded})")

    def rescale(self, scale, interpolation: str = "nearest"):
        if self.decoded or interpolation != "nearest":
            return _kept(super().rescale(scale, interpolation))
        new_w, new_h = mmcv.rescale_size((self.width, self.height), scale)
        return self.resize((new_h, new_w))

    def resize(self, out_shape, interpolation: str = "nearest"):
        if self.decoded or interpolation != "nearest":
            return _kept(super().resize(out_shape, interpolation))
        _, _, _, rows, cols = self._lazy
        h, w = (int(v) for v in out_shape)
        return self._with(rows=rows[nearest_index(len(rows), h)],
                          cols=cols[nearest_index(len(cols), w)])

    def flip(self, flip_direction: str = "horizontal"):
        if self.decoded:
            return _kept(super().flip(flip_direction))
        assert flip_direction in ("horizontal", "vertical", "diagonal")
        _, _, _, rows, cols = self._lazy
        if flip_direction in ("vertical", "diagonal"):
            rows = rows[::-1].copy()
        if flip_direction in ("horizontal", "diagonal"):
            cols = cols[::-1].copy()
        return self._with(rows=rows, cols=cols)

    def pad(self, out_shape, pad_val=0):
        h, w = (int(v) for v in out_shape)
        if self.decoded or pad_val != 0 or h < self.height or w < self.width:
            return _kept(super().pad(out_shape, pad_val))
        return self.expand(h, w, 0, 0)

    def expand(self, expanded_h, expanded_w, top, left):
        h, w, top, left = int(expanded_h), int(expanded_w), int(top), int(left)
        if (self.decoded or top < 0 or left < 0 or top + self.height > h
                or left + self.width > w):
            return _kept(super().expand(expanded_h, expanded_w, top, left))
        _, _, _, rows, cols = self._lazy
        new_rows, new_cols = np.full(h, -1, np.int64), np.full(w, -1, np.int64)
        new_rows[top:top + self.height] = rows
        new_cols[left:left + self.width] = cols
        return self._with(rows=new_rows, cols=new_cols)

    def crop(self, bbox):
        if self.decoded:
            return _kept(super().crop(bbox))
        assert isinstance(bbox, np.ndarray) and bbox.ndim == 1
        bbox = bbox.copy()
        bbox[0::2] = np.clip(bbox[0::2], 0, self.width)
        bbox[1::2] = np.clip(bbox[1::2], 0, self.height)
        x1, y1, x2, y2 = (int(v) for v in bbox)
        w, h = max(x2 - x1, 1), max(y2 - y1, 1)
        _, _, _, rows, cols = self._lazy
        return self._with(rows=rows[y1:y1 + h], cols=cols[x1:x1 + w])

    def translate(self, out_shape, offset, direction="horizontal", border_value=0,
                  interpolation="bilinear"):
        h, w = (int(v) for v in out_shape)
        if self.decoded or border_value != 0 or float(offset) != int(offset):
            return self._by_chunks("translate", out_shape, offset, direction, border_value,
                                   interpolation)
        _, _, _, rows, cols = self._lazy
        # mmdet first cuts or zero-pads to out_shape, then shifts (a whole-pixel shift of a
        # bilinear warp moves pixels exactly), filling with zeros
        rows = np.concatenate([rows[:h], np.full(max(h - len(rows), 0), -1, np.int64)])
        cols = np.concatenate([cols[:w], np.full(max(w - len(cols), 0), -1, np.int64)])
        step = int(offset)
        if direction == "horizontal":
            cols = _shifted(cols, step)
        else:
            rows = _shifted(rows, step)
        return self._with(rows=rows, cols=cols)

    def rotate(self, *args, **kwargs):
        return self._by_chunks("rotate", *args, **kwargs)

    def shear(self, *args, **kwargs):
        return self._by_chunks("shear", *args, **kwargs)

    def _by_chunks(self, step: str, *args, **kwargs) -> BitmapMasks:
        """mmdet's ``step`` on the decoded masks, at most 128 at a time: OpenCV 5's warpAffine
        refuses an image of more than 128 channels, and mmdet warps all the masks as one image
        (a mosaic of four images and a mix-up reach that on the competition's data)."""
        masks = self.masks
        out = [getattr(BitmapMasks(masks[i:i + _CHANNELS], self.height, self.width),
                       step)(*args, **kwargs) for i in range(0, max(len(masks), 1), _CHANNELS)]
        return _kept(out[0] if len(out) == 1 else BitmapMasks.cat(out))

    @property
    def areas(self) -> np.ndarray:
        if self.decoded:
            return super().areas
        starts, ends, src_h, rows, cols = self._lazy
        if not self.resized:
            return np.array([float((e - s).sum()) for s, e in zip(starts, ends)])
        out = np.zeros(len(starts))
        for k in range(len(starts)):  # one instance's pixels at a time
            one = np.zeros((len(rows), len(cols)), np.uint8)
            self._paint(one, starts[k], ends[k], src_h, rows, cols)
            out[k] = one.sum()
        return out

    @classmethod
    def cat(cls, masks):
        return _kept(BitmapMasks.cat(masks))


_CHANNELS = 128  # the most channels OpenCV 5's warpAffine takes


def _shifted(index: np.ndarray, step: int) -> np.ndarray:
    """``index`` moved by ``step`` places (out[i] = index[i - step]), zero (-1) where it left."""
    out = np.full(len(index), -1, np.int64)
    if step >= 0:
        out[step:] = index[:max(len(index) - step, 0)]
    else:
        out[:step] = index[-step:]
    return out


def _kept(masks: BitmapMasks) -> RunMasks:
    """mmdet's result of a step on decoded masks, as (decoded) :class:`RunMasks`, so that later
    warps still go 128 masks at a time (mosaic's ``cat`` and the steps after it included)."""
    if isinstance(masks, RunMasks):
        return masks
    out = RunMasks.__new__(RunMasks)
    out._lazy, out._decoded = None, masks.masks
    out.height, out.width = masks.height, masks.width
    return out


def _rebuild(starts, ends, src_h, rows, cols) -> RunMasks:
    return RunMasks._lazy_masks(starts, ends, src_h, rows, cols)


@TRANSFORMS.register_module()
class IMatLoadAnnotations(LoadAnnotations):
    """mmdet's ``LoadAnnotations`` whose masks are :class:`RunMasks`: the same instances,
    boxes, labels and ignore flags, the same pixels after the same steps, without the
    original-size ``N × H × W`` array (see the module doc). Everything else (``with_seg``,
    ``poly2mask=False`` for polygons) is mmdet's."""

    def _load_masks(self, results: dict) -> None:
        if not self.poly2mask:
            return super()._load_masks(results)
        h, w = results["ori_shape"]
        runs = [_runs_of(m, h, w) for m in self._process_masks(results)]
        results["gt_masks"] = RunMasks.from_runs(runs, h, w)
