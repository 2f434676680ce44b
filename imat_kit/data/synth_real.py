"""Synthetic data at the real competition's scale, for benchmarks: a full-size ``train.csv``
(45,625 images, ~333k rows, real image sizes, no images) and JPEGs at the real sizes (mean
about 1710 × 2151, up to 10717 × 6824, 7.3 instances per image). :mod:`imat_kit.data.synth`
holds the small synthetic set a tiny model learns."""

from __future__ import annotations

import csv
import shutil
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from imat_kit.data.labels import SHIPPED_LABELS, format_class_id
from imat_kit.data.rle import runs_to_string
from imat_kit.data.synth import (
    FULL_IMAGES,
    FULL_ROWS,
    NUM_CATEGORIES,
    SHAPES,
    SynthSummary,
    category_weights,
    image_name,
    random_attributes,
)
from imat_kit.errors import KitError
from imat_kit.files import atomic_open
from imat_kit.progress import progress

#: Real image sizes as best known (DESIGN.md §1): Fashionpedia's (FGVC7's) images are reported to
#: average about 1710 × 2151 px (width × height; a secondary summary of the Fashionpedia paper),
#: the 2019 set spans 236 × 304 … 10717 × 6824 (the competition's files), and mostly portrait
#: (fashion photographs). The long side is log-normal with that mean, the short/long ratio normal
#: around 1710 / 2151.
REAL_MEAN_SIZE = (2151, 1710)  # (long, short)
REAL_EXTREMES = ((10717, 6824), (236, 304))  # (height, width)
#: instances per image: 7.3 on average (Fashionpedia's and 2019's 333,415 rows / 45,625
#: images), at most 74 (Fashionpedia)
REAL_INSTANCES_MEAN, REAL_INSTANCES_MAX = 7.3, 74


def real_image_sizes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) of ``n`` images drawn from the real distribution (:data:`REAL_MEAN_SIZE`): long
    side log-normal (σ 0.45) with mean 2151 px, short side about 0.795 of it, 80% portrait,
    within the real extremes, both extremes present (the first and the last image)."""
    sigma = 0.45
    median = REAL_MEAN_SIZE[0] / np.exp(sigma**2 / 2)
    long = np.clip(np.exp(rng.normal(np.log(median), sigma, n)), 304, 10717).round()
    ratio = np.clip(rng.normal(REAL_MEAN_SIZE[1] / REAL_MEAN_SIZE[0], 0.1, n), 0.45, 1.0)
    short = np.maximum((long * ratio).round(), 236)
    portrait = rng.random(n) < 0.8
    hgt = np.where(portrait, long, short).astype(np.int64)
    wid = np.where(portrait, short, long).astype(np.int64)
    (hgt[0], wid[0]), (hgt[-1], wid[-1]) = REAL_EXTREMES
    return hgt, wid


def _convex_runs(rng: np.random.Generator, h: int, w: int, frac: float,
                 elongation: float) -> tuple[np.ndarray, np.ndarray]:
    """Runs of a random ellipse-like blob (one run per column) covering ~``frac`` of the
    short side: built column by column as ``(start, length)``, 0-based column-major."""
    short = min(h, w)
    ry = max(2.0, frac * short * 0.5 * np.sqrt(elongation))
    rx = max(2.0, frac * short * 0.5 / np.sqrt(elongation))
    ry, rx = min(ry, h / 2 - 1), min(rx, w / 2 - 1)
    cy = rng.uniform(ry, h - ry)
    cx = rng.uniform(rx, w - rx)
    x = np.arange(int(np.ceil(cx - rx)), int(np.floor(cx + rx)) + 1)
    x = x[(x >= 0) & (x < w)]
    t = np.clip((x + 0.5 - cx) / rx, -1, 1)
    half = ry * np.sqrt(1 - t * t) * (1 + 0.08 * np.sin(x * (0.05 + 0.1 * rng.random())))
    top = np.clip(np.floor(cy - half), 0, h - 1).astype(np.int64)
    bot = np.clip(np.ceil(cy + half), 0, h).astype(np.int64)
    keep = bot > top
    x, top, bot = x[keep], top[keep], bot[keep]
    if x.size == 0:
        return np.array([int(cy) + int(cx) * h]), np.array([1])
    return x * h + top, bot - top


def generate_full_csv(out: str | Path, *, seed: int = 0, images: int = FULL_IMAGES,
                      rows: int = FULL_ROWS, quiet: bool = False) -> dict:
    """Write a full-size synthetic ``train.csv`` (no images) and the label file into ``out``."""
    if images < 2 or rows < images:
        raise KitError("need at least 2 images and one row per image", value=(images, rows))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(resources.files("imat_kit.data") / "label_descriptions_2019.json",
                    out / "label_descriptions.json")
    rng = np.random.default_rng([seed, 1])
    hgt, wid = real_image_sizes(rng, images)
    # instances per image: 1 + multinomial spread of the rest, so the total is exact
    per = 1 + rng.multinomial(rows - images, np.full(images, 1.0 / images))
    cats = rng.choice(NUM_CATEGORIES, size=rows, p=category_weights(1.0))
    names_rng = np.random.default_rng([seed, 7])
    r = 0
    with atomic_open(out / "train.csv", "w", newline="") as f:
        f.write("ImageId,EncodedPixels,Height,Width,ClassId\n")
        for i in progress(range(images), desc="synth full train.csv", quiet=quiet, unit="img"):
            name = image_name(names_rng)
            h, w = int(hgt[i]), int(wid[i])
            irng = np.random.default_rng([seed, 2, i])
            lines = []
            for _ in range(int(per[i])):
                cat = int(cats[r])
                r += 1
                _, aspect, size = SHAPES[cat]
                starts, lengths = _convex_runs(irng, h, w, size * irng.uniform(0.6, 1.4),
                                               1.0 / aspect)
                attrs = random_attributes(irng, cat, 0.06, 92)
                lines.append(f"{name},{runs_to_string(starts, lengths)},{h},{w},"
                             f"{format_class_id(cat, attrs)}\n")
            f.write("".join(lines))
    return SynthSummary(train_images=images, rows=rows)


def _real_counts(rng: np.random.Generator, n: int) -> np.ndarray:
    """Instances per image: 1 + Poisson, mean :data:`REAL_INSTANCES_MEAN`, at most
    :data:`REAL_INSTANCES_MAX`; the first image (the largest) carries 50, the second the most."""
    per = np.minimum(1 + rng.poisson(REAL_INSTANCES_MEAN - 1, n), REAL_INSTANCES_MAX)
    if n == 0:
        return per
    per[0] = 50
    if n > 2:
        per[1] = REAL_INSTANCES_MAX
    return per


def _paint_real(rng: np.random.Generator, h: int, w: int, count: int,
                cats: np.ndarray) -> tuple[np.ndarray, list[tuple[int, np.ndarray, np.ndarray]]]:
    """One real-size photograph stand-in (H×W×3 uint8: a smooth background with grain, each
    instance a textured convex silhouette) and its instances as (category, starts, lengths)."""
    small = rng.uniform(120, 235, (max(h // 64, 2), max(w // 64, 2), 3)).astype(np.float32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.uint8)
    out = []
    for cat in cats[:count]:
        cat = int(cat)
        _, aspect, size = SHAPES[cat]
        starts, lengths = _convex_runs(rng, h, w, size * rng.uniform(0.6, 1.4), 1.0 / aspect)
        color = rng.uniform(20, 235, 3)
        period = float(rng.uniform(8, 40)) * max(h, w) / 1000
        stripes = (0.8 + 0.2 * np.sin(np.arange(h) * (2 * np.pi / period)))[:, None]
        shade = np.clip(stripes * color[None, :], 0, 255).astype(np.uint8)
        for start, length in zip(starts.tolist(), lengths.tolist()):
            x, top = divmod(start, h)
            img[top:top + length, x] = shade[top:top + length]
        out.append((cat, starts, lengths))
    for y in range(0, h, 1024):  # grain, in bands: no float copy of a 73-Mpx image
        band = img[y:y + 1024]
        noise = rng.integers(0, 13, band.shape, dtype=np.uint8)
        np.add(band, noise, out=band, casting="unsafe")
        np.subtract(band, 6, out=band, where=band >= 6, casting="unsafe")
    return img, out


def generate_real_images(out: str | Path, *, images: int = 200, test_images: int | None = None,
                         seed: int = 0, quiet: bool = False) -> dict:
    """Write a 2019-layout dataset of JPEGs at the competition's real sizes into ``out``: sizes
    from :func:`real_image_sizes` (mean about 1710 × 2151; in each split the first image is
    10717 × 6824 with 50 instances, the last 236 × 304), 7.3 instances per image on average
    (the second image
    carries the most, 74), categories at the real skew, invisible attributes as in the
    full-size CSV. For benchmarks of what grows with the pixels (data loading, training and
    prediction memory); the images carry no learnable pattern beyond their silhouettes."""
    if images < 3:
        raise KitError("--scale real needs at least 3 images (the extremes are two of them)",
                       value=images)
    out = Path(out)
    test_images = max(1, images // 5) if test_images is None else test_images
    for sub in ("train", "test"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(resources.files("imat_kit.data") / SHIPPED_LABELS[2019],
                    out / "label_descriptions.json")
    rng = np.random.default_rng([seed, 11])
    names_rng = np.random.default_rng([seed, 7])
    # each split holds both extremes
    hgt, wid = (np.concatenate(v) for v in zip(real_image_sizes(rng, images),
                                               real_image_sizes(rng, max(test_images, 0))))
    per = np.concatenate([_real_counts(rng, images), _real_counts(rng, max(test_images, 0))])
    summary = {"train_images": images, "test_images": test_images, "rows": 0, "attr_rows": 0,
               "year": 2019, "mean_size": [float(wid[:images].mean()), float(hgt[:images].mean())]}
    names = [image_name(names_rng) for _ in range(images + test_images)]
    with atomic_open(out / "train.csv", "w", newline="") as f_train, \
            atomic_open(out / "test_solution.csv", "w", newline="") as f_test:
        writers = {"train": csv.writer(f_train), "test": csv.writer(f_test)}
        for wr in writers.values():
            wr.writerow(["ImageId", "EncodedPixels", "Height", "Width", "ClassId"])
        for i in progress(range(images + test_images), desc="synth real-size JPEGs",
                          quiet=quiet, unit="img"):
            sub = "train" if i < images else "test"
            irng = np.random.default_rng([seed, 12, i])
            h, w = int(hgt[i]), int(wid[i])
            cats = irng.choice(NUM_CATEGORIES, size=int(per[i]), p=category_weights(1.0))
            img, insts = _paint_real(irng, h, w, int(per[i]), cats)
            ok, jpeg = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
            if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
                raise KitError("could not encode a JPEG", value=(h, w))
            (out / sub / names[i]).write_bytes(jpeg.tobytes())
            del img
            for cat, starts, lengths in insts:
                attrs = random_attributes(irng, cat, 0.06, 92)
                writers[sub].writerow([names[i], runs_to_string(starts, lengths), h, w,
                                       format_class_id(cat, attrs)])
                if sub == "train":
                    summary["rows"] += 1
                    summary["attr_rows"] += bool(attrs)
    with atomic_open(out / "sample_submission.csv", "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["ImageId", "EncodedPixels", "ClassId"])
        for name in names[images:]:
            wr.writerow([name, "1 1", "23"])
    return SynthSummary(**summary)
