"""Mask geometry (imat_kit.data.masks): soft masks cut at thresholds are the bilinear
stretch thresholded, in C as in numpy."""


from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_util

from imat_kit.data.masks import soft_counts


def _stretched(box, soft, h, w):
    """The soft mask stretched over its box as a full h x w array of values (0..255): the
    definition soft_counts_at cuts, evaluated pixel by pixel in float64."""
    from imat_kit.data.masks import _taps, box_pixels

    x0, y0, x1, y1 = box_pixels(box, h, w)
    src = soft.astype(np.float64)
    lo, a = _taps(x1 - x0, src.shape[1])
    prof = src[:, lo] * (1 - a) + src[:, np.minimum(lo + 1, src.shape[1] - 1)] * a
    ly, b = _taps(y1 - y0, src.shape[0])
    hy = np.minimum(ly + 1, src.shape[0] - 1)
    full = np.full((h, w), -1.0)
    full[y0:y1, x0:x1] = prof[ly] * (1 - b[:, None]) + prof[hy] * b[:, None]
    return full


def _soft_cases(n: int, seed: int):
    rng = np.random.default_rng(seed)
    for it in range(n):
        h, w = int(rng.integers(1, 50)), int(rng.integers(1, 50))
        box = [0, 0, w, h] if it % 4 == 0 else [rng.uniform(-3, w), rng.uniform(-3, h),
                                                 rng.uniform(0, w), rng.uniform(0, h)]
        soft = rng.integers(0, 256, (int(rng.integers(1, 15)), int(rng.integers(1, 15))))
        if it % 9 == 0:
            soft[:] = rng.choice([0, 255])
        yield box, soft.astype(np.uint8), h, w, [float(t) for t in rng.uniform(0, 1, 3)] + [0.5]


def test_soft_mask_cut_is_the_bilinear_stretch_thresholded():
    """Each pixel of the cut mask is in exactly when the bilinear stretch (cv2's
    INTER_LINEAR, in float64) reaches 255 t; a value within 1e-9 of the threshold (a tie of
    the two roundings) may fall either way. And the stretch is cv2's own on these cases."""
    import cv2

    from imat_kit.data.masks import box_pixels, soft_counts_at

    for box, soft, h, w, ts in _soft_cases(400, 2):
        full = _stretched(box, soft, h, w)
        for t, counts in zip(ts, soft_counts_at(box, soft, h, w, ts)):
            got = mask_util.decode({"size": [h, w], "counts": counts.encode()}).astype(bool)
            differ = got != (full >= t * 255)
            assert not differ.any() or np.abs(full[differ] - t * 255).max() < 1e-9
        x0, y0, x1, y1 = box_pixels(box, h, w)
        ref = cv2.resize(soft.astype(np.float32), (x1 - x0, y1 - y0),
                         interpolation=cv2.INTER_LINEAR)
        assert np.allclose(full[y0:y1, x0:x1], ref, atol=1e-3)
    assert soft_counts([0, 0, 3, 3], np.full((2, 2), 200, np.uint8), 4, 4, 0.5) == \
        mask_util.encode(np.asfortranarray(np.pad(np.ones((3, 3), np.uint8),
                                                  ((0, 1), (0, 1)))))["counts"].decode()


def test_soft_mask_cut_in_c_equals_numpy():
    """The C build and the numpy fallback give the same texts, bit for bit."""
    from imat_kit.data import rle
    from imat_kit.data.masks import box_pixels, soft_counts_at, soft_counts_numpy

    if rle._counts is None:
        pytest.skip("the C extension is not built here: only the numpy path runs")
    for box, soft, h, w, ts in _soft_cases(1500, 3):
        assert soft_counts_at(box, soft, h, w, ts) == \
            soft_counts_numpy(box_pixels(box, h, w), soft, h, w, ts)
