"""``imat-kit prepare``: competition files → COCO json, folds and per-fold COCO files.

Reads ``DATA/train.csv`` (+ ``train/`` images, ``label_descriptions.json``,
``sample_submission.csv`` and ``test/`` when present), or Fashionpedia's
``instances_attributes_train2020.json`` (+ ``train/``; see :mod:`imat_kit.data.fashionpedia`) when
DATA has no ``train.csv`` or ``annotations=`` names such a file, and writes into ``OUT``
(default DATA)::

    annotations/all.json                 every training image and instance
    annotations/fold{k}_train.json       images of the other folds
    annotations/fold{k}_val.json         images of fold k
    annotations/test.json                the test images (no annotations), when test/ exists
    folds.csv                            ImageId,fold: the single truth for the splits
    fold_balance.csv                     per category: images per fold, max relative deviation
    rejected_rows.csv                    rows left out (--skip-bad-rows) and size fixes
    prepare_report.json                  what was done, with counts and the balance summary
    label_descriptions.json              Fashionpedia only, when OUT has none: the file's
                                         categories and attributes, for the later steps
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from imat_kit.data.coco import NO_ANNOTATIONS, CocoData, csv_to_coco
from imat_kit.data.fashionpedia import fashionpedia_to_coco, find_fashionpedia
from imat_kit.data.folds import (
    balance_report,
    make_folds,
    presence_matrix,
    summarise_balance,
    write_folds_csv,
)
from imat_kit.data.paths import ann_relpath, find_labels, test_images
from imat_kit.errors import KitError
from imat_kit.files import atomic_open
from imat_kit.progress import progress


def prepare(data_dir: str | Path, out_dir: str | Path | None = None, *, n_folds: int = 5,
            split: str = "stratified", seed: int = 0, size_mismatch: str = "error",
            image_check: bool = True, skip_bad_rows: bool = False,
            annotations: str | Path | None = None, quiet: bool = False) -> dict:
    """Run the whole preparation; returns the report written to ``prepare_report.json``.
    ``annotations`` names a Fashionpedia json to read instead of ``train.csv``."""
    data_dir = Path(data_dir)
    out = Path(out_dir) if out_dir is not None else data_dir
    source = Path(annotations) if annotations is not None else (
        data_dir / "train.csv" if (data_dir / "train.csv").exists()
        else find_fashionpedia(data_dir))
    if source is None or not source.exists():
        missing = source or data_dir / "train.csv"
        raise KitError(f"no train.csv (or Fashionpedia instances_attributes_train2020.json) in "
                       f"{data_dir} (point --data at the competition files)", file=str(missing))
    if image_check and not (data_dir / "train").is_dir():
        raise KitError(f"no image folder {data_dir / 'train'}; pass --no-image-check to convert "
                       "without images", file=str(data_dir / "train"))
    img_dir = data_dir / "train" if image_check else None
    if source.suffix == ".json":
        data, labels = fashionpedia_to_coco(source, image_dir=img_dir,
                                            size_mismatch=size_mismatch,
                                            skip_bad_rows=skip_bad_rows, quiet=quiet)
        if not (out / "label_descriptions.json").exists():
            out.mkdir(parents=True, exist_ok=True)
            with atomic_open(out / "label_descriptions.json", "w", encoding="utf-8") as f:
                json.dump(labels.to_json(), f, indent=1)
    else:
        labels = find_labels(data_dir)
        data = csv_to_coco(source, labels=labels, image_dir=img_dir,
                           size_mismatch=size_mismatch, skip_bad_rows=skip_bad_rows,
                           quiet=quiet)
    if not data.images:
        rows = [r for r in data.rejected if r.reason != NO_ANNOTATIONS]
        first = f"; the first: {rows[0]}" if rows else ""
        raise KitError(f"no usable training image left: all {len(rows)} row(s) were rejected"
                       f"{first}", file=str(source))
    n_img = len(data.images)
    presence = presence_matrix(data.ann_image, data.ann_category, n_img, labels.num_classes)
    try:  # before any output: it may refuse (too few images for the folds)
        folds = make_folds(presence, n_folds, split, seed)
    except KitError as e:
        raise e.located(file=str(source)) from None
    data.write(out / ann_relpath("all"))
    keys = [im["image_key"] for im in data.images]
    write_folds_csv(out / "folds.csv", keys, folds)
    write_fold_files(data, folds, out, quiet=quiet)

    report = balance_report(presence, folds, labels.class_names,
                            [c["id"] for c in labels.categories])
    with atomic_open(out / "fold_balance.csv", "w", newline="") as f:
        report.to_csv(f, index=False, float_format="%.4f")
    with atomic_open(out / "rejected_rows.csv", "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["file", "row", "ImageId", "reason"])
        for r in data.rejected:
            wr.writerow([r.file, r.row, r.image_id, r.reason])
        for fix in data.size_fixes:
            wr.writerow(["", "", "", fix])

    n_test = None
    has_test = (data_dir / "test").is_dir() and (data_dir / "sample_submission.csv").exists()
    if image_check and has_test:
        tests = test_images(data_dir, quiet=quiet)
        n_test = len(tests)
        test = CocoData(images=tests, categories=data.categories, attributes=data.attributes,
                        annotations=[], ann_image=np.zeros(0, np.int64),
                        ann_category=np.zeros(0, np.int64), info=data.info)
        test.write(out / ann_relpath("test"))

    summary = {
        "data": str(data_dir), "source": str(source), "out": str(out),
        "layout": data.info.get("layout"), "attributes": labels.num_attributes,
        "labels": labels.source, "images": n_img, "annotations": len(data.annotations),
        "test_images": n_test, "folds": n_folds, "split": split, "seed": seed,
        "images_per_fold": np.bincount(folds, minlength=n_folds).tolist(),
        "balance": summarise_balance(report), "rejected_rows": len(data.rejected),
        "size_fixes": data.size_fixes, "size_mismatch": size_mismatch,
        "image_check": image_check,
    }
    with atomic_open(out / "prepare_report.json", "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def write_fold_files(data: CocoData, folds: np.ndarray, out: Path, *,
                     quiet: bool = False) -> None:
    """``fold{k}_train.json`` / ``fold{k}_val.json`` for every fold in ``folds``."""
    k = int(folds.max()) + 1
    for f in progress(range(k), desc="fold files", quiet=quiet, unit="fold"):
        data.write(out / ann_relpath("train", f), np.flatnonzero(folds != f))
        data.write(out / ann_relpath("val", f), np.flatnonzero(folds == f))
