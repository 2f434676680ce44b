"""Valid predictions files for a prepared synthetic set, and the one-field corruptions that
every reader of predictions must refuse (issue 18's table)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_util

from imat_kit.cli.commands import main
from imat_kit.data.labels import labels_from_dict
from imat_kit.predictions import ImagePrediction, sparse_probs, write_predictions

SOFT = 8


def _box_mask(rng, h: int, w: int) -> tuple[str, list[float]]:
    """A random rectangle's COCO counts text and box."""
    x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
    x1, y1 = int(rng.integers(x0 + 4, w + 1)), int(rng.integers(y0 + 4, h + 1))
    m = np.zeros((h, w), np.uint8, order="F")
    m[y0:y1, x0:x1] = 1
    return mask_util.encode(m)["counts"].decode("ascii"), [x0, y0, x1 - x0, y1 - y0]


def make_predictions(data: Path, split: str, fold: int = 0, *, seed: int = 0) -> dict:
    """``image_key → ImagePrediction`` for every image of a prepared split: for validation,
    each truth instance (score 0.6–0.99) plus one rectangle false positive; for the test set,
    two rectangles. Every instance has attribute probabilities of the label file (its truth's
    attributes at 0.9, one other at 0.3) and an 8×8 soft mask."""
    name = "test.json" if split == "test" else f"fold{fold}_val.json"
    gt = json.loads((data / "annotations" / name).read_text())
    labels = labels_from_dict(gt, name)
    ids = list(labels.attribute_id_list)
    anns: dict[int, list] = {}
    for a in gt.get("annotations", []):
        anns.setdefault(a["image_id"], []).append(a)
    rng = np.random.default_rng(seed)
    out = {}
    for im in gt["images"]:
        h, w = im["height"], im["width"]
        masks, boxes, cats, attrs = [], [], [], []
        for a in anns.get(im["id"], []):
            masks.append(a["segmentation"]["counts"])
            boxes.append(a["bbox"])
            cats.append(a["category_id"])
            attrs.append(a.get("attribute_ids", []))
        for _ in range(1 if split == "val" else 2):
            m, b = _box_mask(rng, h, w)
            masks.append(m)
            boxes.append(b)
            cats.append(int(rng.integers(0, 46)))
            attrs.append([])
        n = len(masks)
        p = np.zeros((n, len(ids)), np.float32)
        for i, at in enumerate(attrs):
            p[i, [ids.index(x) for x in at]] = 0.9
            p[i, int(rng.integers(0, len(ids)))] = 0.3
        probs = sparse_probs(p, ids)
        out[im["image_key"]] = ImagePrediction(
            im["image_key"], h, w, np.array(cats, np.int64),
            np.round(rng.uniform(0.6, 0.99, n), 3).astype(np.float32),
            np.array(boxes, np.float32).reshape(n, 4), masks,
            rng.integers(0, 256, (n, SOFT, SOFT)).astype(np.uint8),
            [tuple(sorted(k for k, v in q.items() if v >= 0.5)) for q in probs], probs)
    return out


def write_case(path: Path, data: Path, split: str, fold: int = 0, *, seed: int = 0,
               header: dict | None = None) -> Path:
    """A valid predictions file of the split (with ``label_space`` and ``soft_size``)."""
    gt = json.loads((data / "annotations" / (
        "test.json" if split == "test" else f"fold{fold}_val.json")).read_text())
    meta = {"split": split, "fold": fold if split == "val" else None, "soft_size": SOFT,
            "attribute_model": True, "label_space": _label_space(labels_from_dict(gt, "gt")),
            **(header or {})}
    write_predictions(path, meta, make_predictions(data, split, fold, seed=seed).values())
    return path


def _label_space(labels) -> dict:
    return {"categories": sorted(labels.category_ids),
            "attributes": sorted(labels.attribute_ids)}


#: one field changed at a time, on the second image line (line 3 of the file)
CORRUPTIONS = {
    "garbage_counts": lambda d, ctx: d["masks"].__setitem__(0, "!!not-rle!!"),
    "mask_other_size": lambda d, ctx: d["masks"].__setitem__(
        0, mask_util.encode(np.ones((5, 5), np.uint8, order="F"))["counts"].decode()),
    "label_99": lambda d, ctx: d["labels"].__setitem__(0, 99),
    "score_nan": lambda d, ctx: d["scores"].__setitem__(0, float("nan")),
    "score_7.5": lambda d, ctx: d["scores"].__setitem__(0, 7.5),
    "scores_short": lambda d, ctx: d["scores"].pop(),
    "attribute_unknown": lambda d, ctx: d["attr_probs"][0].append([ctx["bad_attribute"], 0.7]),
    "attribute_prob_3": lambda d, ctx: d["attr_probs"][0].__setitem__(0, [
        d["attr_probs"][0][0][0], 3.0]),
    "image_not_in_split": lambda d, ctx: d.__setitem__("image_key", ctx["foreign_key"]),
    "height_differs": lambda d, ctx: d.__setitem__("height", d["height"] + 1),
}

#: what the message names for each case (besides the file and line 3)
NAMED = {"garbage_counts": "masks[0]", "mask_other_size": "masks[0]", "label_99": "labels[0]",
         "score_nan": "scores[0]", "score_7.5": "scores[0]", "scores_short": "scores",
         "attribute_unknown": "attr_probs[0]", "attribute_prob_3": "attr_probs[0]",
         "image_not_in_split": "image_key", "height_differs": "height"}


def corrupt(src: Path, dst: Path, case: str, ctx: dict) -> Path:
    """``src`` with one field of its second image line changed (see :data:`CORRUPTIONS`)."""
    lines = src.read_text().splitlines(keepends=True)
    d = json.loads(lines[2])
    CORRUPTIONS[case](d, ctx)
    lines[2] = json.dumps(d) + "\n"
    dst.write_text("".join(lines))
    return dst


def _digest(path, drop_column: str | None = None) -> str:
    text = path.read_text()
    if drop_column:  # a column holding this run's temporary paths
        rows = list(csv.reader(io.StringIO(text)))
        k = rows[0].index(drop_column)
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([r[:k] + r[k + 1:] for r in rows])
        text = buf.getvalue()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pipeline_digests(data, folder) -> dict:
    """evaluate, tune-attributes, ensemble and submit on valid files of ``data``."""
    v0 = write_case(folder / "fold0_val.jsonl", data, "val", 0, seed=0)
    write_case(folder / "fold1_val.jsonl", data, "val", 1, seed=1)
    t0 = write_case(folder / "t0.jsonl", data, "test", seed=10)
    t1 = write_case(folder / "t1.jsonl", data, "test", seed=11)
    pat = str(v0).replace("fold0", "fold*")
    q = ["--quiet"]
    assert main(["evaluate", *q, "--bbox", "--data", str(data), "--predictions", pat, "--out",
                 str(folder / "ev")]) == 0
    assert main(["tune-attributes", *q, "--data", str(data), "--predictions", pat, "--out",
                 str(folder / "thr.json")]) == 0
    assert main(["ensemble", *q, "--inputs", str(t0), str(t1), "--out",  # the rule then
                 str(folder / "ens.jsonl"), "--scores", "mean"]) == 0
    assert main(["submit", *q, "--data", str(data), "--predictions", str(folder / "ens.jsonl"),
                 "--out", str(folder / "sub.csv"), "--attribute-thresholds",
                 str(folder / "thr.json")]) == 0
    ens = folder / "ens_lines.jsonl"
    ens.write_text("".join((folder / "ens.jsonl").read_text().splitlines(keepends=True)[1:]))
    thr = json.loads((folder / "thr.json").read_text())
    values = thr["attribute_tuning"]["attributes"]
    (folder / "thr_values.json").write_text(json.dumps(values, sort_keys=True))
    return {"evaluation": _digest(folder / "ev" / "evaluation.csv", "file"),
            "per_category": _digest(folder / "ev" / "per_category_ap.csv"),
            "per_attribute": _digest(folder / "ev" / "per_attribute.csv"),
            "thresholds": _digest(folder / "thr_values.json"),
            "ensemble": _digest(ens), "submission": _digest(folder / "sub.csv")}
