"""``imat-kit predict``: run a trained model over a fold's validation images or the test set and
store per-image predictions (:mod:`imat_kit.predictions`), batched and resumable.

**Batching never changes a prediction.** MMDetection pads the images of a batch to one shape,
so an image batched with a larger one would be seen with extra padding and predicted
differently than alone. Images are therefore batched only with images that pad to the same
shape as they do alone (their resized shape rounded up to the model's ``pad_size_divisor``),
and the finished file lists the images in the split's order: the file is the same for every
batch size.

**Resuming never mixes runs.** The header records what shaped the predictions: split, fold,
the split's annotation file (SHA-256: which images), the resolved config (with
``--cfg-options``), the checkpoint's content (SHA-256), flip TTA, the soft-mask size and the
attribute floor. An existing output (or an interrupted ``.partial``) is continued only when all
of these match; otherwise predict names what differs and stops, and ``overwrite=True``
(``--overwrite``) discards the old file and predicts everything again.

**Attributes.** A model with an attribute branch (``AttributeRoIHead``) gives each instance
attribute probabilities; they are stored sparse (those at or above ``attribute_floor``) under
the label file's attribute ids (the prepared annotation file's ``attributes`` list, in id
order: the same map the dataset used for training). Flip TTA averages them like the masks.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_util

from imat_kit.data.labels import labels_from_dict
from imat_kit.data.masks import box_pixels
from imat_kit.data.paths import ann_relpath, find_labels, image_dir, read_ann
from imat_kit.ensemble import fuse_image
from imat_kit.errors import KitError
from imat_kit.files import atomic_open, describe_differences, file_fingerprint, json_fingerprint
from imat_kit.mmdet_ext.box_masks import BoxMasks, box_mask_heads
from imat_kit.mmdet_ext.config import (
    LOAD_ANNOTATIONS,
    flat_settings,
    is_attribute_model,
    load_config,
)
from imat_kit.mmdet_ext.runtime import setup_runtime
from imat_kit.predictions import (
    ATTRIBUTE_FLOOR,
    VERSION,
    ImagePrediction,
    attribute_sets,
    header,
    iter_predictions,
    label_space,
    read_header,
    sparse_probs,
)
from imat_kit.progress import progress

SPLITS = ("val", "test")

#: header fields that must match for an existing predictions file to be continued
RESUME_KEYS = ("version", "split", "fold", "data_sha256", "config_sha256", "checkpoint_sha256",
               "tta", "tta_scales", "soft_size", "attribute_floor")
TTAS = ("flip", "scales", "scales+flip")
DEFAULT_TTA_SCALES = (0.8, 1.0, 1.2)


@dataclass(frozen=True)
class Predicted:
    """What a prediction step did: the split's images, those predicted now (the others were
    in the file with the same settings), the file, the checkpoints fused (1 for one model),
    and which settings made it predict again (``tta: was None, now 'flip'``)."""

    images: int
    predicted_now: int
    out: str
    checkpoints: int = 1
    changed: list[str] = field(default_factory=list)


def tta_passes(tta: str | None, scales=None) -> list[tuple[float, bool]]:
    """The ``(scale factor, mirrored)`` passes of a TTA: none → one plain pass; ``flip`` →
    plain and mirrored; ``scales`` → one pass per factor of the test resize; ``scales+flip``
    → each factor plain and mirrored."""
    if tta is not None and tta not in TTAS:
        raise KitError(f"tta must be one of {', '.join(TTAS)} or nothing", value=tta)
    if scales is not None and (tta is None or "scales" not in tta):
        raise KitError("--tta-scales needs --tta scales or scales+flip", value=list(scales))
    factors = [1.0]
    if tta and "scales" in tta:
        factors = [float(x) for x in (scales or DEFAULT_TTA_SCALES)]
        if not factors or any(not 0.1 <= x <= 4 for x in factors) or \
                len(set(factors)) != len(factors):
            raise KitError("TTA scale factors must be distinct, each within 0.1..4",
                           value=factors)
    flips = (False, True) if tta in ("flip", "scales+flip") else (False,)
    return [(f, m) for f in factors for m in flips]


def _scaled(steps: list, factor: float) -> list:
    """The test pipeline with its ``Resize`` (and a fixed-size ``Pad``) scaled by ``factor``
    (1: as it is)."""
    if factor == 1.0:
        return list(steps)
    out, found = [], False
    for t in steps:
        if t["type"] == "Resize":
            t = dict(t)
            sc = t.get("scale")
            if isinstance(sc, int):
                sc = (sc, sc)
            if not sc:
                raise KitError("multi-scale TTA needs the test pipeline's Resize to have a "
                               "scale", value=t)
            t["scale"] = tuple(max(1, round(v * factor)) for v in sc)
            found = True
        elif t["type"] == "Pad" and t.get("size"):  # a fixed-size pad (RTMDet) grows with it
            t = dict(t, size=tuple(max(1, round(v * factor)) for v in t["size"]))
        out.append(t)
    if not found:
        raise KitError("multi-scale TTA needs a Resize in the test pipeline")
    return out


def _to_prediction(sample, key: str, flip: bool = False, soft_size: int = 0,
                   attribute_ids: tuple[int, ...] = (),
                   attribute_floor: float = ATTRIBUTE_FLOOR) -> ImagePrediction:
    """One mmdet result as an :class:`ImagePrediction`. With ``soft_size`` the model was run
    with ``mask_thr_binary=-1`` (masks are probabilities 0–255): masks are binarised at 0.5 and
    each instance's probabilities inside its box are kept at soft_size × soft_size. Attribute
    probabilities (``pred_instances.attributes``, column i = ``attribute_ids[i]``) are kept
    sparse, at or above ``attribute_floor``."""
    inst = sample.pred_instances
    h, w = (int(v) for v in sample.ori_shape[:2])
    labels = inst.labels.cpu().numpy().astype(np.int64)
    scores = inst.scores.cpu().numpy().astype(np.float32)
    boxed = len(inst) and isinstance(inst.masks, BoxMasks)  # box_mask_heads: no N×H×W
    masks = (inst.masks if boxed else inst.masks.cpu().numpy() if len(inst)
             else np.zeros((0, h, w), np.uint8))
    boxes = inst.bboxes.cpu().numpy().astype(np.float32) if len(inst) else np.zeros((0, 4))
    # one order for exact ties (an untrained dense head, or constant padding, scores many
    # places alike; torch.sort orders those differently by batch): score, then label and box
    order = np.lexsort((*boxes.T[::-1], labels, -scores)) if len(scores) else np.arange(0)
    labels, scores, masks, boxes = labels[order], scores[order], masks[order], boxes[order]
    probs = []
    if "attributes" in inst:
        a = inst.attributes.cpu().numpy()[order]
        if a.shape[1] != len(attribute_ids):
            raise KitError(f"the model predicts {a.shape[1]} attributes, the data's label file "
                           f"has {len(attribute_ids)}: use the attribute config of this label "
                           "space (2019: 92, 2020/Fashionpedia: 294)", value=key)
        probs = sparse_probs(a, attribute_ids, attribute_floor)
    if flip:  # the image went in mirrored: mirror the outputs back
        masks = masks.mirrored() if boxed else masks[:, :, ::-1]
        boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1) \
            if len(boxes) else boxes
    if soft_size and masks.dtype == bool:
        raise KitError("the model's mask head gives binary masks only, not probabilities: "
                       "predict without --soft-size, or use the kit's config of this family "
                       "(RTMDet-Ins: IMatRTMDetInsSepBNHead; Mask2Former: "
                       "IMatMaskFormerFusionHead)", value=key)
    xywh = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    xywh[:, 2:] -= xywh[:, :2]
    if boxed:  # one instance at a time, inside its paste region
        texts = [masks.counts(j, 128 if soft_size else None) for j in range(len(masks))]
        crops = [masks.crop(j, *box_pixels(b, h, w)) for j, b in enumerate(xywh)] \
            if soft_size else []
    else:
        binary = (masks >= 128) if soft_size else masks.astype(bool)
        rles = mask_util.encode(np.asfortranarray(binary.transpose(1, 2, 0).astype(np.uint8))) \
            if len(masks) else []
        texts = [r["counts"].decode("ascii") for r in rles]
        crops = [m[y0:y1, x0:x1] for m, (x0, y0, x1, y1) in
                 zip(masks, (box_pixels(b, h, w) for b in xywh))] if soft_size else []
    soft = None
    if soft_size:
        soft = np.stack([_resampled(c, soft_size) for c in crops]) \
            if len(crops) else np.zeros((0, soft_size, soft_size), np.uint8)
    return ImagePrediction(key, h, w, labels, scores, xywh, texts, soft,
                           attribute_sets(probs), probs)


def crop_soft(prob: np.ndarray, xywh: np.ndarray, size: int) -> np.ndarray:
    """Probabilities (H×W uint8) inside the box (:func:`imat_kit.data.masks.box_pixels`: where
    ``submit`` pastes them back), resampled to size×size (uint8)."""
    x0, y0, x1, y1 = box_pixels(xywh, *prob.shape)
    return _resampled(prob[y0:y1, x0:x1], size)


def _resampled(crop: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_LINEAR)


def predict(config: str | Path, checkpoint: str | Path, *, split: str, fold: int = 0,
            out: str | Path, data_root: str | None = None, tta: str | None = None,
            tta_scales=None, batch_size: int = 2, device: str | None = None,
            soft_size: int = 0,
            cfg_options: list[str] | None = None, overwrite: bool = False,
            attribute_floor: float = ATTRIBUTE_FLOOR, quiet: bool = False) -> dict:
    """Predict every image of the split into ``out`` (see the module docstring for the batching
    and resume rules); returns what it did (:class:`Predicted`)."""
    import torch
    from mmdet.utils import register_all_modules

    if split not in SPLITS:
        raise KitError(f"split must be one of {', '.join(SPLITS)}", value=split)
    passes = tta_passes(tta, tta_scales)
    if batch_size < 1:
        raise KitError("batch size must be at least 1", value=batch_size)
    if not 0 < attribute_floor < 1:
        raise KitError("the attribute floor must be within (0, 1)", value=attribute_floor)
    if not Path(checkpoint).is_file():
        raise KitError("checkpoint not found", file=str(checkpoint))
    register_all_modules()
    cfg = load_config(config, fold=fold, data_root=data_root, options=cfg_options)
    if soft_size:  # probabilities instead of binary masks from the mask head
        test_cfg = cfg.model.test_cfg
        (test_cfg.rcnn if "rcnn" in test_cfg else test_cfg).mask_thr_binary = -1.0
    root = Path(cfg.train_dataloader.dataset.data_root)
    ann = read_ann(root, split, fold)
    images = ann["images"]
    labels = (labels_from_dict(ann, str(root / ann_relpath(split, fold)))
              if ann.get("categories") and ann.get("attributes") else find_labels(root))
    attribute_ids = labels.attribute_id_list if ann.get("attributes") else ()
    img_dir = image_dir(root, split)
    meta = {"split": split, "fold": fold if split == "val" else None,
            "data_sha256": file_fingerprint(root / ann_relpath(split, fold))["sha256"],
            "config": str(config),
            "config_sha256": json_fingerprint(flat_settings(cfg)),
            "checkpoint": str(checkpoint),
            "checkpoint_sha256": file_fingerprint(checkpoint)["sha256"], "tta": tta,
            "tta_scales": ([f for f, m in passes if not m] if tta and "scales" in tta
                           else None),
            "soft_size": soft_size or None, "cfg_options": list(cfg_options or []),
            "attribute_floor": attribute_floor,
            # an attribute model that detects nothing still is one (evaluate reports it)
            "attribute_model": is_attribute_model(cfg),
            "label_space": label_space(labels)}
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    keys = [im["image_key"] for im in images]
    changed: list[str] = []
    done = _resume(out, partial, meta, overwrite, keys, changed)
    if done is None:
        return Predicted(images=len(images), predicted_now=0, out=str(out))
    todo = [im for im in images if im["image_key"] not in done]
    if todo:
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        _predict_into(partial, todo, img_dir, cfg, checkpoint, device=device, passes=passes,
                      soft_size=soft_size, batch_size=batch_size, quiet=quiet,
                      attributes=(attribute_ids, attribute_floor))
    _finish(partial, out, keys)
    return Predicted(images=len(images), predicted_now=len(todo), out=str(out),
                     changed=changed)


def last_checkpoints(work_dir: str | Path, n: int) -> list[Path]:
    """The ``n`` latest checkpoints (``iter_K.pth`` or ``epoch_K.pth``, by K) of a work dir."""
    import re

    d = Path(work_dir)
    if n < 1:
        raise KitError("--last-checkpoints needs at least 1", value=n)
    if not d.is_dir():
        raise KitError("not a work dir (a folder of checkpoints)", file=str(d))
    found = []
    for f in d.iterdir():
        m = re.fullmatch(r"(iter|epoch)_(\d+)\.pth", f.name)
        if m:
            found.append((m.group(1), int(m.group(2)), f))
    if len({k for k, _, _ in found}) > 1:
        raise KitError("the work dir holds both iter_*.pth and epoch_*.pth checkpoints: name "
                       "them with --checkpoints", file=str(d))
    found.sort(key=lambda t: t[1])
    if len(found) < n:
        raise KitError(f"the work dir holds {len(found)} checkpoint(s), {n} asked for",
                       file=str(d))
    return [f for _, _, f in found[-n:]]


def predict_checkpoints(config: str | Path, checkpoints: list[str | Path], *, out: str | Path,
                        overwrite: bool = False, quiet: bool = False, **kw) -> dict:
    """A checkpoint ensemble: :func:`predict` with each checkpoint into ``OUT.checkpoints/``
    (one file per checkpoint, named by its SHA-256; each resumable as ``predict`` is, so a
    killed run redoes only what is missing), then the files fused by the ensemble's rule into
    ``out``, whose header records every checkpoint (path and SHA-256) with its own header."""
    from imat_kit.ensemble import ensemble_files

    if len(checkpoints) < 2:
        raise KitError("a checkpoint ensemble needs at least 2 checkpoints",
                       value=[str(c) for c in checkpoints])
    for c in checkpoints:
        if not Path(c).is_file():
            raise KitError("checkpoint not found", file=str(c))
    shas = [file_fingerprint(c)["sha256"] for c in checkpoints]
    if len(set(shas)) < len(shas):
        raise KitError("the same checkpoint is given twice (same SHA-256)",
                       value=[str(c) for c in checkpoints])
    out = Path(out)
    parts_dir = out.with_name(out.name + ".checkpoints")
    parts, now, changed = [], 0, []
    for c, sha in zip(checkpoints, shas):
        part = parts_dir / f"{sha[:16]}.jsonl"
        r = predict(config, c, out=part, overwrite=overwrite, quiet=quiet, **kw)
        now += r.predicted_now
        changed += [d for d in r.changed if d not in changed]
        parts.append(part)
    heads = [{"file": str(f), **read_header(f)} for f in parts]
    if out.exists() and not overwrite and not now:
        old = read_header(out)
        if old.get("inputs") == heads:
            return Predicted(images=r.images, predicted_now=0, out=str(out),
                             checkpoints=len(parts))
    ensemble_files(parts, out, method="fusion", quiet=quiet,
                   meta={"checkpoints": [{"checkpoint": str(c), "sha256": h}
                                         for c, h in zip(checkpoints, shas)]})
    return Predicted(images=r.images, predicted_now=now, out=str(out),
                     checkpoints=len(parts), changed=changed)


def _usable(path: Path, meta: dict, overwrite: bool, changed: list[str]) -> bool:
    """Whether an existing predictions file was made with ``meta``'s settings; one made with
    other settings is deleted (``overwrite``; what differed goes to ``changed``) or refused
    with what differs."""
    if not path.exists():
        return False
    diffs = describe_differences(read_header(path), {"version": VERSION, **meta}, RESUME_KEYS)
    if not diffs:
        return True
    if not overwrite:
        raise KitError("it holds predictions made with other settings: " + "; ".join(diffs)
                       + ". Pass --overwrite to predict every image again, or choose another "
                       "--out", file=str(path))
    changed.extend(d for d in diffs if d not in changed)
    path.unlink()
    return False


def _resume(out: Path, partial: Path, meta: dict, overwrite: bool,
            keys: list[str], changed: list[str]) -> set[str] | None:
    """Prepare ``partial`` for appending and return the images it already holds; None when
    ``out`` is finished with the same settings and every image (nothing to do, untouched).
    A file made with other settings is deleted under ``overwrite``, what differed going to
    ``changed``."""
    have_partial = _usable(partial, meta, overwrite, changed)
    if _usable(out, meta, overwrite, changed) and not have_partial:
        done = {p.image_key for p in iter_predictions(out, resumable=True)}
        if done >= set(keys):
            return None
        os.replace(out, partial)  # a file that lacks images: predict only those
        have_partial = True
    if have_partial:
        done = {p.image_key for p in iter_predictions(partial, resumable=True)}
        with open(partial, "rb+") as f:  # drop a torn last line before appending
            data = f.read()
            f.truncate(data.rfind(b"\n") + 1)
        return done
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_text(header(**meta) + "\n")
    return set()


def _finish(partial: Path, out: Path, order: list[str]) -> None:
    """The partial file's lines (the last line of an image wins) in the split's image order,
    written atomically to ``out``; the partial file is removed."""
    with open(partial, encoding="utf-8") as f:
        head = f.readline()
        lines = {}
        for line in f:
            if line.endswith("\n"):
                lines[json.loads(line)["image_key"]] = line
    with atomic_open(out, "w", encoding="utf-8") as f:
        f.write(head)
        for key in order:
            if key in lines:
                f.write(lines[key])
    partial.unlink()


def build_detector(cfg, checkpoint: str | Path, device: str):
    """The model of ``cfg`` with the checkpoint's weights, in eval mode on ``device``: what
    ``mmdet.apis.init_detector`` does, without its side effects on the process (it turns every
    warning filter to ``once``) and without mmengine's "Loads checkpoint" print."""
    import contextlib
    import io

    from mmdet.registry import MODELS
    from mmengine.model.utils import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint

    setup_runtime()  # mmengine checkpoints under torch >= 2.6, an offline https load_from
    init_default_scope(cfg.get("default_scope", "mmdet"))
    if "init_cfg" in cfg.model.get("backbone", {}):
        cfg.model.backbone.init_cfg = None  # the checkpoint has the weights: no download
    model = revert_sync_batchnorm(MODELS.build(cfg.model))  # SyncBN needs a process group
    with contextlib.redirect_stdout(io.StringIO()):
        load_checkpoint(model, str(checkpoint), map_location="cpu")
    model.cfg = cfg
    return model.to(device).eval()


def _pad_key(sample, divisor: int) -> tuple[int, int]:
    """The shape an image is padded to when it is predicted alone."""
    h, w = sample.metainfo["img_shape"][:2]
    d = max(int(divisor), 1)
    return (-(-int(h) // d) * d, -(-int(w) // d) * d)


def _predict_into(partial: Path, todo: list[dict], img_dir: Path, cfg, checkpoint, *,
                  device: str, passes: list[tuple[float, bool]], soft_size: int,
                  batch_size: int, quiet: bool,
                  attributes: tuple = ((), ATTRIBUTE_FLOOR)) -> None:
    """Append the predictions of ``todo`` to ``partial``, batching only images that pad alike
    in every TTA pass; several passes are mapped back to the image and fused
    (:func:`ensemble.fuse_image`, the ensemble's rule, soft masks included)."""
    import torch
    from mmengine.dataset import Compose, pseudo_collate

    model = build_detector(cfg, checkpoint, device)
    divisor = getattr(model.data_preprocessor, "pad_size_divisor", 1)
    steps = [t for t in cfg.test_dataloader.dataset.pipeline if t["type"] not in LOAD_ANNOTATIONS]
    flip = dict(type="RandomFlip", prob=1.0, direction="horizontal")
    pipelines = {}
    for factor, mirrored in passes:
        sc = _scaled(steps, factor)
        pipelines[factor, mirrored] = Compose([*sc[:-1], flip, sc[-1]] if mirrored else sc)
    buckets: dict[tuple[int, int], list] = {}
    held = 0
    bar = progress(range(len(todo)), desc=f"predict {len(todo)} images", quiet=quiet,
                   unit="img")

    with open(partial, "a", encoding="utf-8") as f, torch.no_grad(), box_mask_heads():
        def run(key: tuple[int, int]) -> None:
            nonlocal held
            batch = buckets.pop(key)
            held -= len(batch)
            out = {}
            for pk in pipelines:
                samples = model.test_step(pseudo_collate([items[pk] for _, items in batch]))
                out[pk] = [_to_prediction(s, im["image_key"], pk[1], soft_size, *attributes)
                           for s, (im, _) in zip(samples, batch)]
            for i in range(len(batch)):
                p = out[passes[0]][i]
                if len(passes) > 1:
                    p = fuse_image([out[pk][i] for pk in passes], method="fusion")
                    floor = attributes[1]  # a mean of sparse values: drop what fell below
                    p.attr_probs = [{k: v for k, v in a.items() if v >= floor}
                                    for a in p.attr_probs]
                f.write(p.to_json() + "\n")
            f.flush()
            bar.update(len(batch))

        for im in todo:
            src = dict(img_path=str(img_dir / im["file_name"]), img_id=im["id"])
            items = {pk: pipe(dict(src)) for pk, pipe in pipelines.items()}
            key = tuple(_pad_key(items[pk]["data_samples"], divisor) for pk in passes)
            buckets.setdefault(key, []).append((im, items))
            held += 1
            if len(buckets[key]) >= batch_size:
                run(key)
            elif held >= 4 * batch_size:  # bound memory: a partial batch is still same-shape
                run(max(buckets, key=lambda k: len(buckets[k])))
        for key in list(buckets):
            run(key)
    bar.close()


