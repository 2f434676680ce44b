"""K-fold splits of the training images, and how well they balance the categories.

``folds.csv`` (``ImageId,fold``) is the single truth for splits; the per-fold COCO files are
derived from it. Two methods:

* ``stratified``: iterstrat's ``MultilabelStratifiedKFold`` on the image × category-presence
  matrix (shuffled with the seed), so every fold sees each category in about 1/K of its images;
* ``random``: scikit-learn's ``KFold`` (shuffled with the seed). Fold 0 against the rest is
  the plain random 80/20 split of the reference study when K = 5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from imat_kit.data.readers import read_csv
from imat_kit.errors import KitError
from imat_kit.files import atomic_open

METHODS = ("stratified", "random")


def presence_matrix(ann_image: np.ndarray, ann_category: np.ndarray, n_images: int,
                    n_categories: int) -> np.ndarray:
    """``n_images × n_categories`` uint8: 1 where the image has the category."""
    y = np.zeros((n_images, n_categories), dtype=np.uint8)
    y[ann_image, ann_category] = 1
    return y


def make_folds(presence: np.ndarray, n_folds: int = 5, method: str = "stratified",
               seed: int = 0) -> np.ndarray:
    """The fold (0..K-1) of every image, deterministic for a given seed."""
    n = len(presence)
    if method not in METHODS:
        raise KitError(f"split method must be one of {', '.join(METHODS)}", value=method)
    if n_folds < 2:
        raise KitError("need at least 2 folds", value=n_folds)
    if n < n_folds:
        raise KitError(f"cannot split {n} image(s) into {n_folds} folds", value=n_folds)
    folds = np.full(n, -1, dtype=np.int64)
    if method == "stratified":
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

        splitter = MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(n), presence)
    else:
        from sklearn.model_selection import KFold

        splits = KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(np.zeros(n))
    for k, (_, val) in enumerate(splits):
        folds[val] = k
    return folds


def balance_report(counts: np.ndarray, folds: np.ndarray, names: list[str] | tuple[str, ...],
                   ids: list[int] | None = None) -> pd.DataFrame:
    """Per category: its count in each fold, the mean, and the max relative deviation from
    the mean (``max_k |c_k - mean| / mean``; 0 for a perfect split, NaN for an absent
    category). ``counts`` is an images × categories matrix (presence or instances)."""
    k = int(folds.max()) + 1
    per_fold = np.stack([counts[folds == f].sum(axis=0) for f in range(k)], axis=1)
    mean = per_fold.mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        dev = np.abs(per_fold - mean[:, None]).max(axis=1) / mean
    df = pd.DataFrame(per_fold, columns=[f"fold{f}" for f in range(k)])
    df.insert(0, "category", list(names))
    df.insert(0, "category_id", ids if ids is not None else list(range(len(names))))
    df["total"] = per_fold.sum(axis=1)
    df["mean"] = mean
    df["max_rel_dev"] = dev
    return df


def summarise_balance(report: pd.DataFrame) -> dict:
    """Mean and worst ``max_rel_dev`` over present categories, and the worst category."""
    present = report[report["total"] > 0]
    worst = present.loc[present["max_rel_dev"].idxmax()]
    return {"mean_max_rel_dev": float(present["max_rel_dev"].mean()),
            "worst_max_rel_dev": float(worst["max_rel_dev"]),
            "worst_category": str(worst["category"])}


def write_folds_csv(path: str | Path, image_keys: list[str], folds: np.ndarray) -> None:
    with atomic_open(path, "w", newline="") as f:
        pd.DataFrame({"ImageId": image_keys, "fold": folds}).to_csv(f, index=False)


def read_folds_csv(path: str | Path) -> pd.DataFrame:
    """Read and check a ``folds.csv``: columns ``ImageId,fold``, integer folds ≥ 0, no
    duplicate images."""
    file = str(path)
    df = read_csv(path, what="folds file", required=["ImageId", "fold"],
                  usecols=["ImageId", "fold"])[["ImageId", "fold"]]
    ok = df["fold"].str.fullmatch(r"\d+")
    if not ok.all():
        i = int(np.flatnonzero(~ok.to_numpy())[0])
        raise KitError("fold must be a non-negative integer", file=file, row=i + 2,
                       value=df["fold"].iat[i])
    dup = df["ImageId"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise KitError("ImageId listed twice", file=file, row=i + 2, value=df["ImageId"].iat[i])
    return df.assign(fold=df["fold"].astype(np.int64))
