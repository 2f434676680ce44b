"""Encode speed: ``imat_kit.data.rle.encode`` against the common notebook kernel, same run.

The notebook kernel (flatten in Fortran order, pad with zeros, diff) is what most 2019
kernels used to write EncodedPixels. Masks are 1500×1000 garment-like blobs (uint8 0/1).
Target: ours ≥ 2× faster.

    python benchmarks/rle.py [--masks 300]
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import best_of, machine

from imat_kit.data import rle


def notebook_encode(img: np.ndarray) -> str:
    pixels = img.flatten(order="F")
    pixels = np.concatenate([[0], pixels, [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def notebook_decode(mask_rle: str, shape: tuple[int, int]) -> np.ndarray:
    s = mask_rle.split()
    starts, lengths = (np.asarray(x, dtype=int) for x in (s[0:][::2], s[1:][::2]))
    starts -= 1
    ends = starts + lengths
    img = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    for lo, hi in zip(starts, ends):
        img[lo:hi] = 1
    return img.reshape(shape, order="F")


def garment_masks(n: int, h: int = 1500, w: int = 1000, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for _ in range(n):
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        ry, rx = rng.uniform(0.1, 0.35) * h, rng.uniform(0.1, 0.35) * w
        wobble = 1 + 0.15 * np.sin(xx / rng.uniform(20, 60))
        m = (((yy - cy) / ry) ** 2 + ((xx - cx) / (rx * wobble)) ** 2) < 1
        out.append(m.astype(np.uint8))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--masks", type=int, default=300)
    a = ap.parse_args()
    masks = garment_masks(a.masks)
    for m in masks[:20]:
        assert rle.encode(m) == notebook_encode(m)
    t_nb = best_of(lambda: [notebook_encode(m) for m in masks])
    t_us = best_of(lambda: [rle.encode(m) for m in masks])
    texts = [rle.encode(m) for m in masks]
    t_nb_dec = best_of(lambda: [notebook_decode(s, (1500, 1000)) for s in texts])
    t_us_dec = best_of(lambda: [rle.decode(s, 1500, 1000) for s in texts])
    n = len(masks)
    print(f"machine: {machine()}; {n} masks of 1500x1000, mean "
          f"{np.mean([len(t.split()) // 2 for t in texts]):.0f} runs")
    print(f"encode  notebook {n / t_nb:8.0f} masks/s   imat_kit {n / t_us:8.0f} masks/s   "
          f"ratio {t_nb / t_us:.1f}x (target >= 2x)")
    print(f"decode  notebook {n / t_nb_dec:8.0f} masks/s   imat_kit {n / t_us_dec:8.0f} masks/s   "
          f"ratio {t_nb_dec / t_us_dec:.1f}x")


if __name__ == "__main__":
    main()
