"""``imat-kit predict``: run a trained model over a fold's validation images or the test set and
store per-image predictions (:mod:`imat_kit.predictions`), batched and resumable."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_util

from ..ensemble import fuse_image
from ..errors import KitError
from ..io import progress
from ..predictions import ImagePrediction, header, iter_predictions
from ..prepare import ann_relpath

SPLITS = ("val", "test")


def _images(data_root: Path, split: str, fold: int) -> tuple[list[dict], Path]:
    ann = data_root / ann_relpath(split, fold)
    if not ann.exists():
        raise KitError(f"{ann} does not exist: run `imat-kit prepare` first", file=str(ann))
    images = json.loads(ann.read_text())["images"]
    return images, data_root / ("train" if split == "val" else "test")


def _to_prediction(sample, key: str, flip: bool = False,
                   soft_size: int = 0) -> ImagePrediction:
    """One mmdet result as an :class:`ImagePrediction`. With ``soft_size`` the model was run
    with ``mask_thr_binary=-1`` (masks are probabilities 0–255): masks are binarised at 0.5 and
    each instance's probabilities inside its box are kept at soft_size × soft_size."""
    inst = sample.pred_instances
    h, w = (int(v) for v in sample.ori_shape[:2])
    masks = inst.masks.cpu().numpy() if len(inst) else np.zeros((0, h, w), np.uint8)
    boxes = inst.bboxes.cpu().numpy().astype(np.float32) if len(inst) else np.zeros((0, 4))
    if flip:  # the image went in mirrored: mirror the outputs back
        masks = masks[:, :, ::-1]
        boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1) \
            if len(boxes) else boxes
    binary = (masks >= 128) if soft_size else masks.astype(bool)
    rles = mask_util.encode(np.asfortranarray(binary.transpose(1, 2, 0).astype(np.uint8))) \
        if len(masks) else []
    xywh = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    xywh[:, 2:] -= xywh[:, :2]
    soft = None
    if soft_size:
        soft = np.stack([crop_soft(m, b, soft_size) for m, b in zip(masks, xywh)]) \
            if len(masks) else np.zeros((0, soft_size, soft_size), np.uint8)
    return ImagePrediction(key, h, w, inst.labels.cpu().numpy().astype(np.int64),
                           inst.scores.cpu().numpy().astype(np.float32), xywh,
                           [r["counts"].decode("ascii") for r in rles], soft)


def crop_soft(prob: np.ndarray, xywh: np.ndarray, size: int) -> np.ndarray:
    """Probabilities (H×W uint8) inside the box, resampled to size×size (uint8)."""
    import cv2

    h, w = prob.shape
    x0, y0 = int(np.clip(np.floor(xywh[0]), 0, w - 1)), int(np.clip(np.floor(xywh[1]), 0, h - 1))
    x1 = int(np.clip(np.ceil(xywh[0] + xywh[2]), x0 + 1, w))
    y1 = int(np.clip(np.ceil(xywh[1] + xywh[3]), y0 + 1, h))
    return cv2.resize(np.ascontiguousarray(prob[y0:y1, x0:x1]), (size, size),
                      interpolation=cv2.INTER_LINEAR)


def predict(config: str | Path, checkpoint: str | Path, *, split: str, fold: int = 0,
            out: str | Path, data_root: str | None = None, tta: str | None = None,
            batch_size: int = 2, device: str | None = None, soft_size: int = 0,
            cfg_options: dict | None = None, quiet: bool = False) -> dict:
    """Predict every image of the split into ``out``: images already in ``out`` or in
    ``out.partial`` (an interrupted run) are not predicted again."""
    import torch
    from mmdet.apis import init_detector
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.dataset import Compose, pseudo_collate

    if split not in SPLITS:
        raise KitError(f"split must be one of {', '.join(SPLITS)}", value=split)
    if tta not in (None, "flip"):
        raise KitError("tta must be 'flip' or nothing", value=tta)
    register_all_modules()
    os.environ["IMAT_FOLD"] = str(fold)
    if data_root is not None:
        os.environ["IMAT_DATA_ROOT"] = data_root if data_root.endswith("/") else data_root + "/"
    cfg = Config.fromfile(str(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if soft_size:  # probabilities instead of binary masks from the mask head
        test_cfg = cfg.model.test_cfg
        (test_cfg.rcnn if "rcnn" in test_cfg else test_cfg).mask_thr_binary = -1.0
    root = Path(cfg.train_dataloader.dataset.data_root)
    images, img_dir = _images(root, split, fold)
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    if out.exists() and not partial.exists():
        os.replace(out, partial)  # a finished file: predict only what it lacks
    done: set[str] = set()
    if partial.exists():
        done = {p.image_key for p in iter_predictions(partial)}
        with open(partial, "rb+") as f:  # drop a torn last line before appending
            data = f.read()
            f.truncate(data.rfind(b"\n") + 1)
    else:
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(header(split=split, fold=fold if split == "val" else None,
                                  config=str(config), checkpoint=str(checkpoint), tta=tta,
                                  soft_size=soft_size or None) + "\n")
    todo = [im for im in images if im["image_key"] not in done]
    if not todo:
        os.replace(partial, out)
        return {"images": len(images), "predicted_now": 0, "out": str(out)}
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = init_detector(cfg, str(checkpoint), device=device)
    steps = [t for t in cfg.test_dataloader.dataset.pipeline if t["type"] != "LoadAnnotations"]
    pipelines = {False: Compose(steps)}
    if tta == "flip":
        flip = dict(type="RandomFlip", prob=1.0, direction="horizontal")
        pipelines[True] = Compose([*steps[:-1], flip, steps[-1]])
    bar = progress(range(0, len(todo), batch_size), desc=f"predict {split}", quiet=quiet,
                   unit="batch")
    with open(partial, "a", encoding="utf-8") as f, torch.no_grad():
        for start in bar:
            batch = todo[start:start + batch_size]
            passes = {}
            for flipped, pipe in pipelines.items():
                items = [pipe(dict(img_path=str(img_dir / im["file_name"]), img_id=im["id"]))
                         for im in batch]
                samples = model.test_step(pseudo_collate(items))
                passes[flipped] = [_to_prediction(s, im["image_key"], flipped, soft_size)
                                   for s, im in zip(samples, batch)]
            for i in range(len(batch)):
                p = passes[False][i]
                if tta == "flip":
                    p = fuse_image([passes[False][i], passes[True][i]], method="fusion")
                f.write(p.to_json() + "\n")
            f.flush()
    os.replace(partial, out)
    return {"images": len(images), "predicted_now": len(todo), "out": str(out)}
