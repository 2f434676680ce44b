"""Predictions built from the truth: the synthetic test solution, a prepared fold."""

import json

import numpy as np
import pandas as pd
from pycocotools import mask as mask_util

from imat_kit.data import rle
from imat_kit.data.labels import parse_class_id
from imat_kit.predictions import ImagePrediction, write_predictions


def truth_predictions(data, attributes=True):
    """Perfect predictions from the synthetic test_solution.csv (2019 or 2020 layout)."""
    df = pd.read_csv(data / "test_solution.csv", dtype=str, keep_default_na=False)
    if "AttributesIds" not in df.columns:
        df["AttributesIds"] = ""
    preds = {}
    for key, g in df.groupby("ImageId", sort=False):
        h, w = int(g.Height.iloc[0]), int(g.Width.iloc[0])
        masks, labels, attrs, boxes = [], [], [], []
        for enc, cid, at in zip(g.EncodedPixels, g.ClassId, g.AttributesIds):
            r = rle.kaggle_to_coco(enc, h, w)
            c, a = parse_class_id(cid)
            a = tuple(sorted({*a, *(int(x) for x in at.split(",") if x)}))
            masks.append(r["counts"])
            labels.append(c)
            attrs.append(a if attributes else ())
            boxes.append(mask_util.toBbox(r).tolist())
        n = len(labels)
        preds[key] = ImagePrediction(key, h, w, np.array(labels), np.linspace(0.99, 0.5, n)
                                     .astype(np.float32), np.array(boxes, np.float32), masks,
                                     attributes=attrs)
    return preds


def fold_predictions(prep, fold, drop_every=0, attributes=False):
    """Perfect predictions (score 0.9) of a prepared fold's validation images; every
    ``drop_every``-th instance left out; ``attributes``: probability 0.9 for each true
    attribute, none for the others."""
    gt = json.loads((prep / "annotations" / f"fold{fold}_val.json").read_text())
    by = {im["id"]: im for im in gt["images"]}
    anns: dict = {}
    for i, a in enumerate(gt["annotations"]):
        if drop_every and i % drop_every == 0:
            continue
        anns.setdefault(a["image_id"], []).append(a)
    preds = {}
    for iid, im in by.items():
        a = anns.get(iid, [])
        preds[im["image_key"]] = ImagePrediction(
            im["image_key"], im["height"], im["width"],
            np.array([x["category_id"] for x in a], np.int64), np.full(len(a), 0.9, np.float32),
            np.array([x["bbox"] for x in a], np.float32).reshape(-1, 4),
            [x["segmentation"]["counts"] for x in a],
            attr_probs=[{i: 0.9 for i in x.get("attribute_ids", ())} for x in a]
            if attributes else [])
    return preds


def write_val(path, preds, fold):
    """A fold's validation predictions file."""
    write_predictions(path, {"split": "val", "fold": fold}, preds.values())
