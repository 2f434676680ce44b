"""The iMaterialist dataset for MMDetection: the 46 categories, and the annotation file chosen
by ``fold`` and ``split`` from what ``imat-kit prepare`` writes; optionally each instance's
attributes (2019: 92, 2020 / Fashionpedia: 294)."""

from __future__ import annotations

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS

from imat_kit.data.labels import labels_from_dict, load_labels
from imat_kit.data.paths import ANN_SPLITS, ann_relpath
from imat_kit.mmdet_ext.attributes import attribute_pipeline

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

    ``attributes=True`` loads each instance's ``attribute_ids`` as a multi-hot vector over the
    attribute space of the file (its ``attributes`` list, in id order: position i is
    ``Labels.attribute_id_list[i]``) and rewrites the pipeline with
    :func:`~imat_kit.mmdet_ext.attributes.attribute_pipeline`, so the vectors stay aligned with
    their instances through every transform and arrive in ``gt_instances.attributes``.
    ``num_attributes`` (the model's) must equal the file's count: a 92-attribute model cannot
    train on 2020 data by mistake.
    """

    METAINFO = dict(classes=IMAT_CLASSES, palette=None)  # noqa: RUF012 (mmdet API)

    def __init__(self, *args, fold: int = 0, split: str = "train", ann_file: str = "",
                 data_prefix: dict | None = None, attributes: bool = False,
                 num_attributes: int | None = None, pipeline: list = (), **kwargs) -> None:
        self.fold, self.split = int(fold), split
        self.with_attributes = bool(attributes) and split != "test"
        self.expected_attributes = num_attributes
        self._index: dict[int, int] | None = None  # attribute id -> position, read once
        if not ann_file:
            ann_file = ann_file_for(split, fold)
        if data_prefix is None:
            data_prefix = dict(img="test/" if split == "test" else "train/")
        if split == "test":
            kwargs.setdefault("test_mode", True)
        if self.with_attributes:
            if num_attributes is None:
                raise ValueError("IMatDataset(attributes=True) needs num_attributes (the "
                                 "model's attribute count)")
            pipeline = attribute_pipeline(list(pipeline), num_attributes)
        super().__init__(*args, ann_file=ann_file, data_prefix=data_prefix,
                         pipeline=list(pipeline), **kwargs)

    def parse_data_info(self, raw_data_info: dict) -> dict:
        data_info = super().parse_data_info(raw_data_info)
        if not self.with_attributes:
            return data_info
        index = self._attribute_index()
        by_seg = {id(a.get("segmentation")): a for a in raw_data_info["raw_ann_info"]}
        for inst in data_info["instances"]:
            ann = by_seg.get(id(inst.get("mask")))
            if ann is None:  # pragma: no cover - mmdet no longer passes the segmentation on
                raise RuntimeError("cannot pair an instance with its annotation")
            try:
                inst["attributes"] = tuple(sorted(index[a] for a in ann.get("attribute_ids", [])))
            except KeyError as e:
                raise ValueError(f"{self.ann_file}: annotation id {ann.get('id')}: attribute id "
                                 f"{e.args[0]} is not in the file's attribute list") from None
        return data_info

    def _attribute_index(self) -> dict[int, int]:
        if self._index is None:
            labels = labels_from_dict({"categories": self.coco.dataset["categories"],
                                       "attributes": self.coco.dataset.get("attributes", [])},
                                      self.ann_file)
            if labels.num_attributes != self.expected_attributes:
                raise ValueError(
                    f"{self.ann_file} has {labels.num_attributes} attributes, the model "
                    f"{self.expected_attributes}: use the attribute config of this data's label "
                    "space (2019: 92 attributes; 2020 and Fashionpedia: 294)")
            self._index = labels.attribute_index()
        return self._index
