"""Masks kept as runs until the pipeline has resized them (``IMatLoadAnnotations``): the same
pixels as mmdet's ``BitmapMasks`` after the same steps, decoded only at the final size."""

from __future__ import annotations

import copy
import pickle

import cv2
import mmcv
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mmcv.transforms import Compose
from mmdet.structures.mask import BitmapMasks
from mmengine.registry import init_default_scope
from pycocotools import mask as mask_utils

import imat_kit.mmdet_ext  # noqa: F401  (registers the transforms)
from imat_kit.data.rle import coco_to_runs
from imat_kit.mmdet_ext.run_masks import RunMasks, nearest_index


def _blobs(rng: np.random.Generator, h: int, w: int, n: int, ragged: bool = True) -> np.ndarray:
    masks = np.zeros((n, h, w), np.uint8)
    for k in range(n):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(2, h / 2), rng.uniform(2, w / 2)
        cv2.ellipse(masks[k], (int(cx), int(cy)), (int(rx), int(ry)), float(rng.uniform(0, 180)),
                    0, 360, 1, -1)
        if ragged and k % 3 == 2:  # pixel noise: holes and a ragged edge
            masks[k] &= (rng.random((h, w)) < 0.8).astype(np.uint8)
    return masks


def _both(masks: np.ndarray) -> tuple[BitmapMasks, RunMasks]:
    h, w = masks.shape[1:]
    runs = [coco_to_runs(mask_utils.encode(np.asfortranarray(m))) for m in masks]
    return BitmapMasks(masks, h, w), RunMasks.from_runs(runs, h, w)


def _assert_same(expected: BitmapMasks, got: BitmapMasks) -> None:
    assert (got.height, got.width) == (expected.height, expected.width)
    assert np.array_equal(got.masks, expected.masks)


@settings(max_examples=60, deadline=None)
@given(src=st.integers(1, 12000), dst=st.integers(1, 12000))
def test_nearest_index_is_opencvs(src, dst):
    row = np.arange(src, dtype=np.float32)[None, :].repeat(2, 0)
    expected = cv2.resize(row, (dst, 2), interpolation=cv2.INTER_NEAREST)[0].astype(np.int64)
    assert np.array_equal(nearest_index(src, dst), expected)


_STEP = st.one_of(
    st.tuples(st.just("rescale"), st.floats(0.05, 2.5)),
    st.tuples(st.just("resize"), st.integers(1, 300), st.integers(1, 300)),
    st.tuples(st.just("flip"), st.sampled_from(["horizontal", "vertical", "diagonal"])),
    st.tuples(st.just("crop"), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1),
              st.floats(0, 1)),
    st.tuples(st.just("expand"), st.integers(0, 40), st.integers(0, 40)),
    st.tuples(st.just("pad"), st.integers(0, 30), st.integers(0, 30)),
    st.tuples(st.just("index"), st.integers(0, 2**16)),
    st.tuples(st.just("translate"), st.integers(-60, 60), st.booleans(), st.integers(-20, 20),
              st.integers(-20, 20)),
)


def _apply(masks, step):
    kind = step[0]
    if kind == "rescale":
        if min(mmcv.rescale_size((masks.width, masks.height), step[1])) < 1:
            return masks  # a zero side: mmcv refuses it for both
        return masks.rescale(step[1])
    if kind == "resize":
        return masks.resize((step[1], step[2]))
    if kind == "flip":
        return masks.flip(step[1])
    if kind == "crop":
        x = sorted((int(step[1] * masks.width), int(step[3] * masks.width)))
        y = sorted((int(step[2] * masks.height), int(step[4] * masks.height)))
        return masks.crop(np.array([x[0], y[0], x[1], y[1]]))
    if kind == "expand":
        return masks.expand(masks.height + 2 * step[1], masks.width + 2 * step[2], step[1],
                            step[2])
    if kind == "pad":
        return masks.pad((masks.height + step[1], masks.width + step[2]))
    if kind == "translate":
        out_shape = (max(masks.height + step[3], 1), max(masks.width + step[4], 1))
        return masks.translate(out_shape, step[1],
                               "horizontal" if step[2] else "vertical")
    keep = np.array([(step[1] >> k) & 1 for k in range(len(masks))], bool)
    return masks[keep]


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**31), steps=st.lists(_STEP, max_size=5))
def test_any_chain_of_steps_gives_bitmapmasks_pixels(seed, steps):
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(8, 160, 2))
    expected, got = _both(_blobs(rng, h, w, int(rng.integers(0, 5))))
    for step in steps:
        expected, got = _apply(expected, step), _apply(got, step)
    assert not got.decoded
    _assert_same(expected, got)
    assert np.array_equal(got.areas, expected.areas)
    _assert_same(expected, pickle.loads(pickle.dumps(got)))


def test_other_steps_decode_and_run_mmdets_code():
    expected, got = _both(_blobs(np.random.default_rng(3), 90, 70, 4))
    small_e, small_g = expected.rescale(0.5), got.rescale(0.5)
    _assert_same(small_e.rotate((45, 35), 30), small_g.rotate((45, 35), 30))
    _assert_same(small_e.shear((45, 35), 0.3), small_g.shear((45, 35), 0.3))
    _assert_same(small_e.translate((45, 35), 7), small_g.translate((45, 35), 7))
    assert np.array_equal(small_g.get_bboxes("hbox").numpy(), small_e.get_bboxes("hbox").numpy())
    _assert_same(BitmapMasks.cat([small_e, small_e]), RunMasks.cat([small_g, small_g]))


def test_warps_of_more_than_128_masks_work_where_opencv_5_refuses_mmdets():
    """mmdet warps all masks as one image of N channels; OpenCV 5 takes at most 128 (an
    RTMDet mosaic plus mix-up of the competition's images reaches 163): RunMasks warps them
    128 at a time, with the pixels mmdet's code gives each chunk."""
    expected, got = _both(_blobs(np.random.default_rng(5), 40, 30, 150, ragged=False))
    for step, args in (("translate", ((40, 30), 3.5)), ("rotate", ((40, 30), 20)),
                       ("shear", ((40, 30), 0.2))):
        out = getattr(got, step)(*args)
        assert out.masks.shape == (150, 40, 30)
        parts = [getattr(expected[i:i + 100], step)(*args).masks for i in (0, 100)]
        assert np.array_equal(out.masks, np.concatenate(parts))
    with pytest.raises(cv2.error):
        expected.rotate((40, 30), 20)  # mmdet's own, in one piece
    # what a mosaic makes of them (cat, then a rescale) stays ours, and warps in chunks
    mosaic = RunMasks.cat([got[:100].rescale(0.5), got[100:].rescale(0.5)]).rescale(2.0)
    assert isinstance(mosaic, RunMasks) and len(mosaic) == 150
    assert mosaic.translate((40, 30), 5).masks.shape == (150, 40, 30)
    # mmdet's caching transforms (CachedMosaic, CachedMixUp) deep-copy results
    for kept in (copy.deepcopy(mosaic), copy.deepcopy(got)):
        assert isinstance(kept, RunMasks) and kept.rotate((40, 30), 20).masks.shape[0] == 150


def test_resized_masks_leave_a_worker_decoded_original_ones_as_runs():
    _, masks = _both(_blobs(np.random.default_rng(4), 50, 60, 3))
    assert isinstance(pickle.loads(pickle.dumps(masks)), RunMasks)
    assert not pickle.loads(pickle.dumps(masks)).decoded
    moved = pickle.loads(pickle.dumps(masks.rescale(0.5)))
    assert type(moved) is BitmapMasks and moved.masks.shape == (3, 25, 30)


def _image(folder, ragged: bool) -> dict:
    """A 2400 x 1600 JPEG with 12 instances, as the pipeline's results dict."""
    rng = np.random.default_rng(7)
    h, w = 2400, 1600
    path = folder / "big.jpg"
    cv2.imwrite(str(path), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    masks = _blobs(rng, h, w, 12, ragged)
    instances = []
    for k, m in enumerate(masks):
        rle = mask_utils.encode(np.asfortranarray(m))
        x, y, bw, bh = mask_utils.toBbox(rle)
        rle["counts"] = rle["counts"].decode()
        instances.append(dict(bbox=[x, y, x + bw, y + bh], bbox_label=k % 46, ignore_flag=0,
                              mask=rle))
    return dict(img_path=str(path), img_id=0, instances=instances)


@pytest.fixture(scope="module")
def big_image(tmp_path_factory):
    return _image(tmp_path_factory.mktemp("big"), ragged=True)


def _run(pipeline: list, results: dict) -> dict:
    init_default_scope("mmdet")
    np.random.seed(0)  # mmdet's random transforms draw from numpy's global generator
    return Compose(pipeline)(dict(results, instances=[dict(i) for i in results["instances"]]))


@pytest.mark.parametrize("steps", [
    [dict(type="Resize", scale=(1024, 800), keep_ratio=True)],
    [dict(type="Resize", scale=(512, 512), keep_ratio=False),
     dict(type="RandomFlip", prob=1.0, direction="horizontal"),
     dict(type="Pad", size=(640, 640))],
    [dict(type="RandomResize", scale=(1024, 1024), ratio_range=(0.7, 0.7), keep_ratio=True),
     dict(type="RandomCrop", crop_size=(600, 600), crop_type="absolute",
          recompute_bbox=True, allow_negative_crop=True),
     dict(type="FilterAnnotations", min_gt_bbox_wh=(1, 1), by_mask=True)],
])
def test_pipelines_give_the_masks_and_boxes_of_mmdets_loader(big_image, steps):
    load = dict(with_bbox=True, with_mask=True)
    head = [dict(type="LoadImageFromFile")]
    expected = _run([*head, dict(type="LoadAnnotations", **load), *steps], big_image)
    lazy = _run([*head, dict(type="IMatLoadAnnotations", **load), *steps], big_image)
    np.testing.assert_array_equal(lazy["gt_bboxes"].numpy(), expected["gt_bboxes"].numpy())
    np.testing.assert_array_equal(lazy["gt_bboxes_labels"], expected["gt_bboxes_labels"])
    _assert_same(expected["gt_masks"], lazy["gt_masks"])


def test_masks_are_decoded_only_at_the_resized_size(big_image):
    pipe = [dict(type="LoadImageFromFile"),
            dict(type="IMatLoadAnnotations", with_bbox=True, with_mask=True),
            dict(type="Resize", scale=(1024, 800), keep_ratio=True)]
    masks = _run(pipe, big_image)["gt_masks"]
    assert isinstance(masks, RunMasks) and not masks.decoded
    assert masks.masks.shape == (12, 1024, 683)


def test_shrink_to_fit_keeps_masks_within_one_percent_of_a_direct_resize(tmp_path):
    """The augmentation pipeline shrinks a large image to the largest size RandomResize can
    ask for before augmenting: after the final resize, the image has the same size and each
    mask (a garment's shape, not pixel noise, which no resampling keeps) agrees with a
    direct resize of the original: IoU >= 0.99 from 5,000 px (a 70 x 70 garment) at the
    final size, >= 0.95 below, where two nearest-neighbour samplings differ by a boundary
    pixel here and there."""
    big_image = _image(tmp_path, ragged=False)
    head = [dict(type="LoadImageFromFile")]
    final = dict(type="Resize", scale=(800, 600), keep_ratio=True)
    direct = _run([*head, dict(type="LoadAnnotations", with_bbox=True, with_mask=True), final],
                  big_image)
    shrunk = _run([*head, dict(type="IMatLoadAnnotations", with_bbox=True, with_mask=True),
                   dict(type="ShrinkToFit", scale=(1200, 900)), final], big_image)
    assert shrunk["img"].shape == direct["img"].shape
    a, b = direct["gt_masks"].masks.astype(bool), shrunk["gt_masks"].masks.astype(bool)
    inter = (a & b).sum(axis=(1, 2))
    union = (a | b).sum(axis=(1, 2))
    iou, area = inter / union, a.sum(axis=(1, 2))
    assert (area >= 5000).sum() >= 6 and iou[area >= 5000].min() >= 0.99
    assert iou.min() >= 0.95


def test_shrink_to_fit_leaves_a_small_image_alone(big_image):
    out = _run([dict(type="LoadImageFromFile"), dict(type="ShrinkToFit", scale=(4000, 3000))],
               big_image)
    assert out["img"].shape[:2] == (2400, 1600) and "scale_factor" not in out
