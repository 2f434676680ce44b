"""Per-instance attributes through MMDetection's data pipeline.

An instance's attributes travel as one row of ``gt_attributes`` (N × A, float32 multi-hot over
the dataset's attribute space, in the order of
:attr:`imat_kit.data.labels.Labels.attribute_id_list`) and arrive in
``data_sample.gt_instances.attributes``.

The trap this module closes: mmdet 3.3's ``FilterAnnotations`` and ``RandomCrop`` (and our
``RecomputeBBoxFromMasks``, and any transform that drops instances) subset only the keys they
know (boxes, labels, masks, ignore flags), so an extra per-instance array silently keeps its
old length and order and is then paired with the wrong instances.
:class:`KeepInstanceFieldsAligned` runs its inner transforms with ``gt_bboxes_labels``
replaced by the instances' indices 0…N-1 (labels are subset by every transform and read by
none of ours), then takes the labels and every extra field by the surviving indices.
:func:`attribute_pipeline` rewrites a pipeline so that this happens between
``LoadAnnotations`` and ``PackDetInputs``: ``IMatDataset(attributes=True)`` applies it, so a
config changes nothing else.
"""

from __future__ import annotations

import copy

import numpy as np
from mmcv.transforms import BaseTransform, Compose
from mmdet.datasets.transforms import PackDetInputs
from mmdet.registry import TRANSFORMS

from imat_kit.mmdet_ext.config import LOAD_ANNOTATIONS

ATTRIBUTE_KEY = "gt_attributes"


@TRANSFORMS.register_module()
class LoadInstanceAttributes(BaseTransform):
    """``results['instances'][i]['attributes']`` (indices into the attribute space) →
    ``gt_attributes`` (N × ``num_attributes`` float32 multi-hot), in the order in which
    ``LoadAnnotations`` loads the instances."""

    def __init__(self, num_attributes: int) -> None:
        self.num_attributes = int(num_attributes)

    def transform(self, results: dict) -> dict:
        instances = results.get("instances", [])
        out = np.zeros((len(instances), self.num_attributes), np.float32)
        for i, inst in enumerate(instances):
            idx = inst.get("attributes", ())
            if len(idx):
                out[i, list(idx)] = 1.0
        results[ATTRIBUTE_KEY] = out
        return results

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(num_attributes={self.num_attributes})"


@TRANSFORMS.register_module()
class KeepInstanceFieldsAligned(BaseTransform):
    """Run ``transforms`` and keep ``fields`` (per-instance arrays) aligned with the instances
    that survive them, in their order (see the module docstring)."""

    def __init__(self, transforms: list, fields: tuple[str, ...] = (ATTRIBUTE_KEY,)) -> None:
        self.transforms = Compose(transforms)
        self.fields = tuple(fields)

    def transform(self, results: dict) -> dict | None:
        labels = results.get("gt_bboxes_labels")
        extra = {k: results[k] for k in self.fields if k in results}
        if labels is None or not extra:
            return self.transforms(results)
        n = len(labels)
        for k, v in extra.items():
            if len(v) != n:
                raise ValueError(f"{k} has {len(v)} rows for {n} instances before "
                                 f"{self.__class__.__name__}")
        results["gt_bboxes_labels"] = np.arange(n, dtype=np.int64)
        out = self.transforms(results)
        if out is None:
            return None
        idx = np.asarray(out["gt_bboxes_labels"], dtype=np.int64)
        out["gt_bboxes_labels"] = labels[idx]
        for k, v in extra.items():
            out[k] = v[idx]
        return out

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(fields={self.fields}, transforms={self.transforms})"


@TRANSFORMS.register_module()
class PackIMatInputs(PackDetInputs):
    """``PackDetInputs`` that also packs ``gt_attributes`` into ``gt_instances.attributes``
    (split by the ignore flags like the boxes and labels)."""

    mapping_table = {**PackDetInputs.mapping_table, ATTRIBUTE_KEY: "attributes"}  # noqa: RUF012


def _type(step: dict) -> str:
    return str(step.get("type", "")).split(".")[-1]


def attribute_pipeline(pipeline: list, num_attributes: int) -> list:
    """``pipeline`` (a list of transform configs) made to carry attributes: after
    ``LoadAnnotations`` a :class:`LoadInstanceAttributes`, the transforms between it and the
    final ``PackDetInputs`` wrapped in :class:`KeepInstanceFieldsAligned`, and
    :class:`PackIMatInputs` in place of ``PackDetInputs``. A pipeline without
    ``LoadAnnotations`` (prediction) is returned unchanged."""
    steps = [copy.deepcopy(s) if isinstance(s, dict) else s for s in pipeline]
    names = [_type(s) if isinstance(s, dict) else type(s).__name__ for s in steps]
    loads = [i for i, name in enumerate(names) if name in LOAD_ANNOTATIONS]
    if not loads:
        return steps
    load = loads[0]
    if names[-1] not in ("PackDetInputs", "PackIMatInputs"):
        raise ValueError("a pipeline that carries attributes must end with PackDetInputs "
                         f"(this one ends with {names[-1]})")
    if not isinstance(steps[-1], dict):
        raise ValueError("attribute_pipeline needs the transforms as config dicts")
    pack = dict(steps[-1], type="PackIMatInputs")
    middle = steps[load + 1:-1]
    out = [*steps[:load + 1], dict(type="LoadInstanceAttributes",
                                   num_attributes=int(num_attributes))]
    if middle:
        out.append(dict(type="KeepInstanceFieldsAligned", transforms=middle))
    return [*out, pack]
