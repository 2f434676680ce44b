"""Counts of a competition ``train.csv``: categories, attributes, image sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from imat_kit import fields
from imat_kit.data.coco import detect_layout
from imat_kit.data.labels import Labels, parse_attributes_ids, parse_class_id
from imat_kit.data.readers import csv_columns, read_csv
from imat_kit.errors import KitError


def dataset_stats(csv_path: str | Path, labels: Labels) -> dict:
    """Per-category instance and image counts, per-attribute counts, image size summary.

    Reads only the ``ImageId``, ``Height``, ``Width``, ``ClassId`` (and ``AttributesIds``)
    columns; masks are not decoded.
    """
    file = str(csv_path)
    year = detect_layout(csv_columns(csv_path, what="train.csv"), file)
    cols = ["ImageId", "Height", "Width", "ClassId"] + (["AttributesIds"] if year == 2020 else [])
    df = read_csv(csv_path, what="train.csv", usecols=cols)
    cache: dict = {}
    cats = np.empty(len(df), dtype=np.int64)
    attr_counts: dict[int, int] = {}
    attr_rows = 0
    at = df["AttributesIds"].tolist() if year == 2020 else [None] * len(df)
    for i, (c, a) in enumerate(zip(df["ClassId"].tolist(), at)):
        key = (c, a)
        if key not in cache:
            cat, attrs = parse_class_id(c, labels, file=file, row=i + 2)
            if a is not None:
                attrs = parse_attributes_ids(a, labels, file=file, row=i + 2)
            cache[key] = (cat, attrs)
        cat, attrs = cache[key]
        cats[i] = cat
        attr_rows += bool(attrs)
        for x in attrs:
            attr_counts[x] = attr_counts.get(x, 0) + 1
    ids = np.array([t.strip() for t in df["ImageId"].tolist()], dtype=object)
    for i, t in enumerate(ids.tolist()):
        if not t:
            raise KitError("empty ImageId", file=file, row=i + 2)
        if fields.has_control(t):
            raise KitError("ImageId holds a control character", file=file, row=i + 2, value=t)
    def sides(col: str) -> np.ndarray:  # 0: not a side (each distinct text read once)
        cells = df[col].tolist()
        read = {t: fields.int_or_none(t, 1, fields.MAX_SIDE) or 0 for t in set(cells)}
        return np.array([read[t] for t in cells], np.int64)

    h, w = sides("Height"), sides("Width")
    bad = np.flatnonzero((h == 0) | (w == 0))
    if bad.size:
        i = int(bad[0])
        raise KitError(f"Height/Width must be positive integers (ASCII digits, at most "
                       f"{fields.MAX_SIDE})", file=file, row=i + 2,
                       value=f"{df['Height'].iat[i]}x{df['Width'].iat[i]}")
    sizes = pd.DataFrame({"ImageId": ids, "Height": h, "Width": w})
    first = sizes.groupby("ImageId", sort=False)[["Height", "Width"]].transform("first")
    differ = np.flatnonzero((first["Height"].to_numpy() != h) | (first["Width"].to_numpy() != w))
    if differ.size:
        i = int(differ[0])
        raise KitError("Height/Width differ from an earlier row's for the same image",
                       file=file, row=i + 2, value=f"{ids[i]} {h[i]}x{w[i]}")
    hw = images = sizes.drop_duplicates("ImageId")[["Height", "Width"]]
    cat_ids = [c["id"] for c in labels.categories]
    inst = np.array([(cats == c).sum() for c in cat_ids])
    img_per_cat = np.array([len(np.unique(ids[cats == c])) for c in cat_ids])
    per_cat = pd.DataFrame({"category_id": cat_ids, "name": labels.class_names,
                            "supercategory": [c["supercategory"] for c in labels.categories],
                            "instances": inst, "images": img_per_cat})
    area = (hw["Height"] * hw["Width"]).to_numpy()
    return {
        "layout": year, "rows": len(df), "images": len(images),
        "rows_with_attributes": attr_rows,
        "instances_per_image": {"mean": len(df) / max(len(images), 1),
                                "max": int(df.groupby("ImageId").size().max())},
        "height": _summary(hw["Height"].to_numpy()), "width": _summary(hw["Width"].to_numpy()),
        "smallest": [int(v) for v in hw.iloc[int(np.argmin(area))]],
        "largest": [int(v) for v in hw.iloc[int(np.argmax(area))]],
        "categories": per_cat,
        "attributes": pd.DataFrame(
            {"attribute_id": sorted(attr_counts),
             "name": [labels.attribute_name(a) for a in sorted(attr_counts)],
             "rows": [attr_counts[a] for a in sorted(attr_counts)]}),
    }


def _summary(v: np.ndarray) -> dict:
    return {"min": int(v.min()), "median": float(np.median(v)), "max": int(v.max())}
