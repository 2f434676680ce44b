"""A synthetic dataset in the exact competition layout, deterministic by seed.

``generate_images`` writes what the competition ships, in the 2019 layout (default)::

    OUT/train.csv               ImageId,EncodedPixels,Height,Width,ClassId ("6_28_77")
    OUT/train/<ImageId>         JPEGs of varied sizes (ImageId ends in .jpg)
    OUT/test/<ImageId>          JPEGs without annotations
    OUT/sample_submission.csv   ImageId,EncodedPixels,ClassId, every test image once
    OUT/label_descriptions.json the 2019 label file (92 attributes)

or, with ``year=2020``, the 2020 (FGVC7) layout: ``train.csv`` with
``ImageId,EncodedPixels,Height,Width,ClassId,AttributesIds`` (``"115,136,143"``), ImageIds
without the ``.jpg`` of their files, ``sample_submission.csv`` with an ``AttributesIds``
column, and the 2020 label file (294 attributes with non-contiguous ids).

plus ``OUT/test_solution.csv`` (the test ground truth in ``train.csv`` form), which the real
competition never gave out and which lets the demo score a submission.

Images hold several garment-like shapes: each category has its own silhouette (a tee, trousers,
a skirt, a shoe, …), colour and stripe texture, so a small model can learn them. Garments and
accessories (categories 0–26) occlude each other; garment parts (27–45: sleeves, pockets,
necklines, …) sit on top of garments and overlap their masks, as in the real data. Category
frequencies follow the real 2019 counts (flattened by an exponent so rare classes still appear
in a small set).

**Attributes are drawn, so a model can learn them.** Every garment of categories 0–12 (the
garments the real data gives attributes) carries real attributes of the year's label file,
each of which changes the pixels:

* textile pattern (every garment): plain, stripe, dot, check or chevron, as its texture;
* length (skirt, coat, dress, cape): mini, knee or maxi, as the silhouette's height;
* sleeve length (2020 only; tops, sweaters, cardigans, jackets, coats): sleeveless, short or
  wrist-length, as the silhouette's sleeves (2019's label file has no sleeve lengths);
* zip-up (cardigan, jacket, coat, some of them): a dark zip down the middle.

Their frequencies are skewed like the real ones (plain is most of the patterns, chevron rare).
Other categories keep a fixed per-category stripe texture and carry no attributes.

``generate_full_csv`` writes only a full-size ``train.csv`` (45,625 images, ~333k rows,
realistic image and mask sizes) for benchmarks: masks are built directly as runs, one per
column of each convex silhouette, without any image.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from imat_kit.data.labels import SHIPPED_LABELS, Labels, format_class_id, load_labels
from imat_kit.data.rle import encode
from imat_kit.errors import KitError
from imat_kit.files import atomic_open
from imat_kit.progress import progress

# Approximate per-category instance counts of the 2019 train.csv (for frequencies only).
REAL_COUNTS = np.array([
    6161, 16548, 1494, 1107, 7833, 719, 12414, 2756, 5046, 3124, 18739, 922, 152, 4855, 2518,
    3470, 1457, 777, 3389, 6851, 112, 4326, 2582, 46374, 7217, 1374, 135, 927, 6720, 5972, 874,
    59448, 27179, 34258, 3300, 7991, 3529, 5084, 528, 1367, 1044, 633, 10485, 3130, 1003, 1178,
], dtype=np.float64)
NUM_CATEGORIES = 46
PART_FIRST = 27  # categories 27..45 are garment parts and decorations
ATTR_CATEGORIES = 13  # only categories 0..12 carry attributes
YEARS = (2019, 2020)

#: visible attribute groups: name → (categories, {label-file name: (look, frequency)}); a
#: garment of the group's categories gets exactly one attribute of the group (zip: maybe none)
ATTRIBUTE_GROUPS: dict[str, tuple[frozenset[int], dict[str, tuple[str, float]]]] = {
    "pattern": (frozenset(range(ATTR_CATEGORIES)), {
        "plain (pattern)": ("plain", .55), "stripe": ("stripe", .20), "dot": ("dot", .13),
        "check": ("check", .08), "chevron": ("chevron", .04)}),
    "length": (frozenset({8, 9, 10, 12}), {
        "mini (length)": ("mini", .35), "knee (length)": ("knee", .45),
        "maxi (length)": ("maxi", .20)}),
    "sleeve": (frozenset({0, 1, 2, 3, 4, 9}), {
        "sleeveless": ("sleeveless", .20), "short (length)": ("short", .45),
        "wrist-length": ("wrist", .35)}),
    "opening": (frozenset({3, 4, 9}), {"zip-up": ("zip", .30), "": ("", .70)}),
}
_STRETCH = {"mini": 0.7, "knee": 1.0, "maxi": 1.35}  # silhouette height by length
FULL_IMAGES = 45_625
FULL_ROWS = 333_415

# Silhouettes in a unit box (x right, y down), as polygons.
_T = {
    "tee": [(.3, 0), (.7, 0), (1, .2), (.88, .38), (.75, .3), (.75, 1), (.25, 1), (.25, .3),
            (.12, .38), (0, .2)],
    "vest": [(.25, 0), (.42, 0), (.5, .25), (.58, 0), (.75, 0), (.85, .3), (.85, 1), (.15, 1),
             (.15, .3)],
    "coat": [(.3, 0), (.7, 0), (1, .15), (.95, .6), (.8, .55), (.85, 1), (.15, 1), (.2, .55),
             (.05, .6), (0, .15)],
    "pants": [(.1, 0), (.9, 0), (1, 1), (.62, 1), (.5, .35), (.38, 1), (0, 1)],
    "skirt": [(.3, 0), (.7, 0), (1, 1), (0, 1)],
    "dress": [(.35, 0), (.65, 0), (.7, .35), (1, 1), (0, 1), (.3, .35)],
    "shoe": [(0, 0), (.4, 0), (.45, .5), (1, .65), (1, 1), (0, 1)],
    "bag": [(.3, 0), (.7, 0), (.7, .3), (1, .3), (1, 1), (0, 1), (0, .3), (.3, .3)],
    "hat": [(.25, 0), (.75, 0), (.85, .7), (1, .75), (1, 1), (0, 1), (0, .75), (.15, .7)],
    "strip": [(0, 0), (1, 0), (1, 1), (0, 1)],
    "oval": [(0.5 + 0.5 * np.cos(a), 0.5 + 0.5 * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 20,
                                                                                   endpoint=False)],
    "tri": [(0, 0), (1, .5), (0, 1)],
    "v": [(0, 0), (.25, 0), (.5, .7), (.75, 0), (1, 0), (.5, 1)],
    "bow": [(0, 0), (.5, .4), (1, 0), (1, 1), (.5, .6), (0, 1)],
    "star": [(0.5 + (0.5 if i % 2 == 0 else 0.22) * np.cos(a), 0.5 + (0.5 if i % 2 == 0 else 0.22)
              * np.sin(a)) for i, a in enumerate(np.linspace(0, 2 * np.pi, 10, endpoint=False))],
    "comb": [(0, 0), (1, 0), (1, 1), (.85, 1), (.85, .4), (.7, .4), (.7, 1), (.55, 1), (.55, .4),
             (.4, .4), (.4, 1), (.25, 1), (.25, .4), (.1, .4), (.1, 1), (0, 1)],
    # tops by sleeve length (2020): the body of a tee with no, short or wrist-long sleeves
    "top_sleeveless": [(.3, 0), (.7, 0), (.8, .12), (.75, 1), (.25, 1), (.2, .12)],
    "top_short": [(.3, 0), (.7, 0), (1, .2), (.88, .38), (.75, .3), (.75, 1), (.25, 1),
                  (.25, .3), (.12, .38), (0, .2)],
    "top_wrist": [(.3, 0), (.7, 0), (.95, .15), (1, .85), (.87, .87), (.78, .3), (.75, 1),
                  (.25, 1), (.22, .3), (.13, .87), (0, .85), (.05, .15)],
}
# category -> (template, width/height aspect, size as a fraction of the image's short side)
SHAPES: dict[int, tuple[str, float, float]] = {
    0: ("tee", 1.0, .55), 1: ("tee", 1.2, .45), 2: ("coat", 1.1, .5), 3: ("vest", .9, .55),
    4: ("coat", 1.0, .6), 5: ("vest", .7, .45), 6: ("pants", .6, .65), 7: ("pants", 1.1, .35),
    8: ("skirt", .9, .45), 9: ("coat", .7, .75), 10: ("dress", .6, .75), 11: ("pants", .45, .8),
    12: ("skirt", 1.6, .5), 13: ("bow", 2.5, .12), 14: ("hat", 1.4, .25), 15: ("strip", 4.0, .08),
    16: ("v", .3, .35), 17: ("oval", .6, .15), 18: ("oval", 1.0, .08), 19: ("strip", 6.0, .07),
    20: ("strip", .4, .3), 21: ("pants", .4, .7), 22: ("shoe", .6, .2), 23: ("shoe", 1.6, .16),
    24: ("bag", 1.0, .3), 25: ("comb", 2.0, .2), 26: ("hat", 1.8, .5), 27: ("hat", 1.0, .25),
    28: ("v", 2.0, .12), 29: ("tri", .5, .2), 30: ("strip", 2.0, .05), 31: ("strip", .4, .3),
    32: ("strip", .9, .12), 33: ("v", 1.5, .1), 34: ("oval", 1.3, .06), 35: ("strip", .12, .35),
    36: ("star", 1.0, .12), 37: ("oval", 1.0, .04), 38: ("bow", 1.8, .1), 39: ("star", 1.0, .1),
    40: ("comb", 2.0, .1), 41: ("strip", 5.0, .05), 42: ("oval", 1.0, .03), 43: ("comb", 3.0, .07),
    44: ("oval", 1.0, .035), 45: ("comb", .5, .1),
}


def _category_look(cat: int) -> tuple[np.ndarray, float, float]:
    """Category colour (RGB 0–255), stripe angle and stripe period: fixed per category."""
    rng = np.random.default_rng(10_000 + cat)
    hue = (cat * 0.618034) % 1.0
    rgb = _hsv_to_rgb(hue, 0.55 + 0.4 * rng.random(), 0.45 + 0.5 * rng.random())
    return rgb, float(rng.uniform(0, np.pi)), float(rng.uniform(4, 14))


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array([r, g, b]) * 255


@dataclass(frozen=True)
class SynthSummary:
    """What a synthetic dataset holds: training images and their rows (instances), rows
    with attributes, test images; the layout's year; real-size images' mean size (width,
    height)."""

    train_images: int
    rows: int
    test_images: int = 0
    attr_rows: int = 0
    year: int = 2019
    mean_size: tuple[float, float] | None = None


def category_weights(flatten: float = 1.0) -> np.ndarray:
    """Sampling probability per category: the real counts raised to ``flatten`` (1 = real)."""
    w = REAL_COUNTS ** flatten
    return w / w.sum()


def random_attributes(rng: np.random.Generator, cat: int, prob: float,
                       num_attributes: int) -> tuple:
    """Random (invisible) attributes: only for the full-size CSV, which has no images."""
    if cat >= ATTR_CATEGORIES or rng.random() >= prob:
        return ()
    pool = np.random.default_rng(20_000 + cat).choice(num_attributes, 12, replace=False)
    return tuple(sorted(rng.choice(pool, int(rng.integers(1, 4)), replace=False).tolist()))


def attribute_groups(labels: Labels) -> dict[str, tuple[frozenset[int], list[tuple]]]:
    """:data:`ATTRIBUTE_GROUPS` with the label file's ids: group → (categories,
    [(attribute id or -1 for none, look, frequency)]); groups the file lacks are left out."""
    by_name = {a["name"]: a["id"] for a in labels.attributes}
    out = {}
    for group, (cats, options) in ATTRIBUTE_GROUPS.items():
        if not all(name in by_name for name in options if name):
            continue  # e.g. sleeve lengths: 2020 only
        out[group] = (cats, [(by_name[n] if n else -1, look, p)
                             for n, (look, p) in options.items()])
    return out


def _draw_attributes(rng: np.random.Generator, cat: int, groups: dict) -> tuple[dict, tuple]:
    """The looks ({group: look}) and the sorted attribute ids of one garment."""
    looks, ids = {}, []
    for group, (cats, options) in groups.items():
        if cat not in cats:
            continue
        p = np.array([o[2] for o in options])
        aid, look, _ = options[int(rng.choice(len(options), p=p / p.sum()))]
        looks[group] = look
        if aid >= 0:
            ids.append(aid)
    return looks, tuple(sorted(ids))


def _transform(cat: int, cx: float, cy: float, size: float, angle: float, stretch: float):
    """The unit box → image map of one instance: ``f(points (N, 2)) -> points``."""
    _, aspect, _ = SHAPES[cat]
    hgt = size / np.sqrt(aspect)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, s], [-s, c]])

    def f(pts: np.ndarray) -> np.ndarray:
        return ((np.asarray(pts, np.float64) - 0.5) * (hgt * aspect, hgt * stretch)) @ rot \
            + (cx, cy)
    return f


def _polygon(template: str, f, rng: np.random.Generator) -> list[tuple[float, float]]:
    pts = np.array(_T[template], dtype=np.float64)
    pts += rng.normal(0, 0.015, pts.shape)  # a little jitter: no two instances alike
    return [(float(x), float(y)) for x, y in f(pts)]


def _texture(look: str, xx: np.ndarray, yy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness factor (H×W, 0.35–1) of a textile pattern."""
    period = float(rng.uniform(20, 28))  # bold: a few repeats across a garment, as in photos
    ang = float(rng.uniform(0, np.pi))
    u = xx * np.cos(ang) + yy * np.sin(ang)
    v = -xx * np.sin(ang) + yy * np.cos(ang)
    if look == "plain":
        return np.ones_like(xx, dtype=np.float64)
    if look == "stripe":
        return np.where(np.sin(u * 2 * np.pi / period) > 0, 1.0, 0.4)
    if look == "dot":
        du, dv = u % period - period / 2, v % period - period / 2
        return np.where(du * du + dv * dv < (0.3 * period) ** 2, 0.35, 1.0)
    if look == "check":
        return np.where((np.sin(u * 2 * np.pi / period) > 0)
                        ^ (np.sin(v * 2 * np.pi / period) > 0), 1.0, 0.45)
    if look == "chevron":
        zig = np.abs((v / period) % 2 - 1) * period
        return np.where(np.sin((u + zig) * 2 * np.pi / period) > 0, 1.0, 0.4)
    raise ValueError(look)


@dataclass
class _Instance:
    cat: int
    attrs: tuple
    mask: np.ndarray  # H×W bool


def render_image(seed: int, index: int, *, min_side: int = 192, max_side: int = 320,
                 flatten: float = 0.6, year: int = 2019,
                 labels: Labels | None = None) -> tuple[np.ndarray, list[_Instance]]:
    """One synthetic image (H×W×3 uint8) and its visible instances, deterministic by
    ``(seed, index, year)``; attribute ids are those of ``labels`` (default: the year's
    shipped label file)."""
    groups = attribute_groups(labels or load_labels(year=year))
    rng = np.random.default_rng([seed, index])
    h, w = (int(v) for v in rng.integers(min_side, max_side + 1, 2))
    short = min(h, w)
    weights_g = category_weights(flatten)[:PART_FIRST]
    weights_g /= weights_g.sum()
    weights_p = category_weights(flatten)[PART_FIRST:]
    weights_p /= weights_p.sum()

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    bg = rng.uniform(150, 235, 3)
    img = bg + rng.normal(0, 10, (h, w, 3))
    garments: list[_Instance] = []
    parts: list[_Instance] = []

    def place(cat: int, cx: float, cy: float, scale: float) -> _Instance | None:
        looks, attrs = _draw_attributes(rng, cat, groups) if cat < ATTR_CATEGORIES else ({}, ())
        size = SHAPES[cat][2] * short * scale
        f = _transform(cat, cx, cy, size, float(rng.normal(0, 0.2)),
                       _STRETCH[looks.get("length", "knee")])
        template = f"top_{looks['sleeve']}" if "sleeve" in looks else SHAPES[cat][0]
        canvas = Image.new("L", (w, h), 0)
        ImageDraw.Draw(canvas).polygon(_polygon(template, f, rng), fill=1)
        m = np.asarray(canvas, dtype=bool)
        if m.sum() < 30:
            return None
        rgb, ang, period = _category_look(cat)
        col = np.clip(rgb + rng.normal(0, 12, 3), 0, 255)
        if "pattern" in looks:
            tex = _texture(looks["pattern"], xx, yy, rng)
        else:  # no attributes: the category's own fixed stripes
            tex = 0.8 + 0.2 * np.sin((xx * np.cos(ang) + yy * np.sin(ang)) * (2 * np.pi / period))
        img[m] = col[None, :] * tex[m][:, None] + rng.normal(0, 6, (int(m.sum()), 3))
        if looks.get("opening") == "zip":  # a dark zip down the middle
            zip_canvas = Image.new("L", (w, h), 0)
            (x0, y0), (x1, y1) = f(np.array([[0.5, 0.02], [0.5, 0.98]]))
            ImageDraw.Draw(zip_canvas).line([(x0, y0), (x1, y1)], fill=1,
                                             width=max(4, round(short / 40)))
            z = np.asarray(zip_canvas, dtype=bool) & m
            img[z] = (35, 35, 35)
        return _Instance(cat, attrs, m)

    for _ in range(int(rng.integers(1, 4))):
        cat = int(rng.choice(PART_FIRST, p=weights_g))
        inst = place(cat, rng.uniform(.2, .8) * w, rng.uniform(.2, .8) * h, rng.uniform(.8, 1.25))
        if inst is not None:
            for g in garments:  # the new garment hides what it covers
                g.mask &= ~inst.mask
            garments.append(inst)
    cover = np.zeros((h, w), dtype=bool)
    for g in garments:
        cover |= g.mask
    for _ in range(int(rng.poisson(3.5))):
        cat = int(PART_FIRST + rng.choice(NUM_CATEGORIES - PART_FIRST, p=weights_p))
        if cover.any():
            ys, xs = np.nonzero(cover)
            j = int(rng.integers(ys.size))
            cy, cx = float(ys[j]), float(xs[j])
        else:
            cx, cy = rng.uniform(.2, .8) * w, rng.uniform(.2, .8) * h
        inst = place(cat, cx, cy, rng.uniform(.8, 1.25))
        if inst is not None:
            for p in parts:
                p.mask &= ~inst.mask
            parts.append(inst)
    visible = [i for i in garments + parts if i.mask.sum() >= 20]
    return np.clip(img, 0, 255).astype(np.uint8), visible


def image_name(rng: np.random.Generator) -> str:
    return rng.bytes(16).hex() + ".jpg"


def generate_images(out: str | Path, *, images: int = 200, test_images: int | None = None,
                    seed: int = 0, min_side: int = 192, max_side: int = 320, year: int = 2019,
                    quiet: bool = False) -> dict:
    """Write a small synthetic competition dataset into ``out`` (see the module doc), in the
    ``year``'s layout (2019 or 2020).

    Returns a :class:`SynthSummary`: counts of images, rows and rows with attributes.
    """
    if year not in YEARS:
        raise KitError("--year must be 2019 or 2020", value=year)
    if images < 1:
        raise KitError("--images must be at least 1", value=images)
    if not 16 <= min_side <= max_side:
        raise KitError("need 16 <= min_side <= max_side", value=(min_side, max_side))
    out = Path(out)
    test_images = max(1, images // 5) if test_images is None else test_images
    names_rng = np.random.default_rng([seed, 7])
    train_names = [image_name(names_rng) for _ in range(images)]
    test_names = [image_name(names_rng) for _ in range(test_images)]
    for sub in ("train", "test"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(resources.files("imat_kit.data") / SHIPPED_LABELS[year],
                    out / "label_descriptions.json")
    labels = load_labels(year=year)
    header = ["ImageId", "EncodedPixels", "Height", "Width", "ClassId"]
    if year == 2020:
        header.append("AttributesIds")
    summary = {"train_images": images, "test_images": test_images, "rows": 0, "attr_rows": 0,
               "year": year}

    def row(name: str, inst: _Instance, h: int, w: int) -> list:
        if year == 2019:
            return [name, encode(inst.mask), h, w, format_class_id(inst.cat, inst.attrs)]
        return [name.removesuffix(".jpg"), encode(inst.mask), h, w, inst.cat,
                ",".join(map(str, inst.attrs))]

    def write_split(names: list[str], offset: int, sub: str, csv_name: str) -> None:
        with atomic_open(out / csv_name, "w", newline="") as f:
            wr = csv.writer(f)
            wr.writerow(header)
            for i, name in enumerate(progress(names, desc=f"synth {sub}", quiet=quiet,
                                              unit="img")):
                img, insts = render_image(seed, offset + i, min_side=min_side,
                                          max_side=max_side, year=year, labels=labels)
                Image.fromarray(img).save(out / sub / name, quality=92)
                h, w = img.shape[:2]
                for inst in insts:
                    wr.writerow(row(name, inst, h, w))
                    if sub == "train":
                        summary["rows"] += 1
                        summary["attr_rows"] += bool(inst.attrs)

    write_split(train_names, 0, "train", "train.csv")
    write_split(test_names, images, "test", "test_solution.csv")
    with atomic_open(out / "sample_submission.csv", "w", newline="") as f:
        wr = csv.writer(f)
        if year == 2019:
            wr.writerow(["ImageId", "EncodedPixels", "ClassId"])
            for name in test_names:
                wr.writerow([name, "1 1", "23"])
        else:
            wr.writerow(["ImageId", "EncodedPixels", "ClassId", "AttributesIds"])
            for name in test_names:
                wr.writerow([name.removesuffix(".jpg"), "1 1", "23", ""])
    return SynthSummary(**summary)
