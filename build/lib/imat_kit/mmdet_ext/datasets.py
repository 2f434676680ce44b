"""The iMaterialist dataset for MMDetection: the 46 categories, and the annotation file chosen
by ``fold`` and ``split`` from what ``imat-kit prepare`` writes."""

from __future__ import annotations

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS

from ..labels import load_labels
from ..layout import ANN_SPLITS, ann_relpath

#: category names in id order (0..45), as a tuple (a list breaks mmdet's confusion matrix)
IMAT_CLASSES: tuple[str, ...] = load_labels().class_names

SPLITS = ANN_SPLITS


def ann_file_for(split: str, fold: int) -> str:
    """The file under ``data_root`` that ``imat-kit prepare`` writes for a split."""
    if split not in SPLITS:
        raise ValueError(f"IMatDataset split must be one of {', '.join(SPLITS)}, got {split!r}")
    return ann_relpath(split, fold)


@DATASETS.register_module()
class IMatDataset(CocoDataset):
    """``CocoDataset`` over prepared iMaterialist files.

    ``split='train'|'val'`` reads ``annotations/fold{fold}_{split}.json``, ``'all'`` reads
    ``all.json``, ``'test'`` reads ``test.json`` (the images of ``sample_submission.csv``,
    without annotations) from ``test/``. An explicit ``ann_file`` wins over ``fold``/``split``.
    Labels are the competition category ids (the json's categories are 0..45 in order).
    """

    METAINFO = dict(classes=IMAT_CLASSES, palette=None)  # noqa: RUF012 (mmdet API)

    def __init__(self, *args, fold: int = 0, split: str = "train", ann_file: str = "",
                 data_prefix: dict | None = None, **kwargs) -> None:
        self.fold, self.split = int(fold), split
        if not ann_file:
            ann_file = ann_file_for(split, fold)
        if data_prefix is None:
            data_prefix = dict(img="test/" if split == "test" else "train/")
        if split == "test":
            kwargs.setdefault("test_mode", True)
        super().__init__(*args, ann_file=ann_file, data_prefix=data_prefix, **kwargs)
