"""What a model family cannot do on iMaterialist, caught before training (``IMatRunner``, so
``mim train`` and ``imat-kit train`` alike) with a message that names the setting, instead of a
silently empty run or a shape error deep inside mmdet:

* a training pipeline (the dataset's, a dataset wrapper's, or a ``PipelineSwitchHook``'s) that
  loads no masks, loads the RLE masks with ``poly2mask=False`` (mmdet then marks every instance
  ignored, silently), or uses a transform that cannot move masks (``RandomAffine``);
* a model that predicts no masks (a detection-only recipe), or whose class count is not the
  competition's 46;
* Mask2Former set up for panoptic output (stuff classes, ``panoptic_on``) instead of instances;
* an attribute dataset without an attribute branch, or the other way round.
"""

from __future__ import annotations

from imat_kit.errors import KitError
from imat_kit.mmdet_ext.config import LOAD_ANNOTATIONS, is_attribute_model

#: transforms that cannot move instance masks (mmdet 3.3), and why
MASK_UNSAFE = {
    "RandomAffine": "mmdet's RandomAffine supports boxes only (NotImplementedError on masks); "
                    "use Rotate/ShearX/TranslateX (+ RecomputeBBoxFromMasks) or RandomResize",
}
NUM_CLASSES = 46


def _steps(pipeline) -> list:
    """Every transform of a pipeline, those nested in RandomApply/RandomChoice/Compose too."""
    out = []
    for t in pipeline or []:
        if isinstance(t, (list, tuple)):  # RandomChoice's sub-pipelines
            out += _steps(t)
            continue
        if not isinstance(t, dict):
            continue
        out.append(t)
        if t.get("type") in ("RandomApply", "RandomChoice", "Compose", "RandomOrder"):
            out += _steps(t.get("transforms"))
    return out


def train_pipelines(cfg) -> list[tuple[str, list]]:
    """``(where, pipeline)`` of every pipeline that training runs."""
    found = []
    ds, where = cfg.train_dataloader.dataset, "train_dataloader.dataset"
    while isinstance(ds, dict):
        if ds.get("pipeline") is not None:
            found.append((where + ".pipeline", list(ds["pipeline"])))
        if "datasets" in ds:  # ConcatDataset
            for i, d in enumerate(ds["datasets"]):
                found.append((f"{where}.datasets.{i}.pipeline", list(d.get("pipeline") or [])))
            break
        ds, where = ds.get("dataset"), where + ".dataset"
    for i, h in enumerate(cfg.get("custom_hooks") or []):
        if h.get("type") == "PipelineSwitchHook":
            found.append((f"custom_hooks.{i}.switch_pipeline", list(h["switch_pipeline"])))
    return found


def check_pipeline(where: str, pipeline: list, file: str | None = None) -> None:
    steps = _steps(pipeline)
    loads = [t for t in steps if t.get("type") in LOAD_ANNOTATIONS]
    if pipeline and steps and steps[0].get("type") == "LoadImageFromFile" and not loads:
        raise KitError(f"{where} loads no annotations: add IMatLoadAnnotations(with_bbox=True, "
                       "with_mask=True)", file=file)
    for t in loads:
        if not t.get("with_mask", False):
            raise KitError(f"{where}: LoadAnnotations without with_mask=True trains no masks "
                           "(iMaterialist is instance segmentation)", file=file, value=t)
        if t.get("poly2mask", True) is False:
            raise KitError(f"{where}: LoadAnnotations(poly2mask=False) marks every iMaterialist "
                           "instance ignored (its masks are RLE, not polygons): remove "
                           "poly2mask=False", file=file, value=t)
    for t in steps:
        why = MASK_UNSAFE.get(t.get("type"))
        if why:
            raise KitError(f"{where}: {t['type']} cannot move masks: {why}", file=file)


def model_classes(model) -> list[tuple[str, int]]:
    """``(where, class count)`` of every classifying head the config names."""
    found = []

    def add(where, head):
        for i, h in enumerate(head if isinstance(head, (list, tuple)) else [head]):
            if isinstance(h, dict) and "num_classes" in h:
                found.append((f"{where}.{i}" if isinstance(head, (list, tuple)) else where,
                              int(h["num_classes"])))

    roi = model.get("roi_head") or {}
    add("model.roi_head.bbox_head", roi.get("bbox_head"))
    add("model.roi_head.mask_head", roi.get("mask_head"))
    add("model.bbox_head", model.get("bbox_head"))
    add("model.mask_head", model.get("mask_head"))
    pan = model.get("panoptic_head")
    if pan is not None:
        found.append(("model.panoptic_head.num_things_classes",
                      int(pan.get("num_things_classes", -1))))
    return found


def predicts_masks(model) -> bool:
    roi = model.get("roi_head") or {}
    if roi.get("mask_head") is not None or model.get("mask_head") is not None:
        return True
    if model.get("panoptic_head") is not None:
        return True
    return "Ins" in str((model.get("bbox_head") or {}).get("type", ""))


def check_model(cfg, file: str | None = None) -> None:
    model = cfg.model
    if not predicts_masks(model):
        raise KitError(f"the model ({model.get('type')}) predicts no masks: iMaterialist needs "
                       "an instance-segmentation model (an R-CNN with a mask head, YOLACT, "
                       "RTMDet-Ins, Mask2Former)", file=file)
    for where, n in model_classes(model):
        if n != NUM_CLASSES:
            raise KitError(f"{where} has {n} classes, iMaterialist {NUM_CLASSES}: set it from "
                           "the data base's imat_num_classes", file=file, value=n)
    pan = model.get("panoptic_head")
    if pan is not None:
        test = model.get("test_cfg") or {}
        if int(pan.get("num_stuff_classes", 0)) != 0 or test.get("panoptic_on", True) or \
                not test.get("instance_on", False):
            raise KitError("Mask2Former/MaskFormer must be set up for instances only: "
                           "num_stuff_classes=0 and test_cfg panoptic_on=False, "
                           "instance_on=True (iMaterialist has no stuff classes)", file=file)


def check_attributes(cfg, file: str | None = None) -> None:
    wants = bool(cfg.train_dataloader.dataset.get("attributes", False))
    has = is_attribute_model(cfg)
    if wants and not has:
        raise KitError("the dataset loads attributes (attributes=True) but the model has no "
                       "attribute branch: the kit's branch exists for Mask R-CNN, Cascade "
                       "Mask R-CNN and HTC (roi_head type AttributeRoIHead, "
                       "AttributeCascadeRoIHead, AttributeHTCRoIHead)", file=file)
    if has and not wants:
        raise KitError("the model has an attribute branch but the training dataset loads no "
                       "attributes: set train_dataloader.dataset attributes=True and "
                       "num_attributes", file=file)


def check_training_config(cfg) -> None:
    """Every check of the module docstring; raises :class:`KitError` on the first failure."""
    file = str(cfg.get("filename") or "") or None
    for where, pipeline in train_pipelines(cfg):
        check_pipeline(where, pipeline, file)
    check_model(cfg, file)
    check_attributes(cfg, file)
