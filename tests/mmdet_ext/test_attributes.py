"""Attributes, part 1: synthetic data with visible attributes (both years), Fashionpedia files,
attributes through the data pipeline, the attribute branch, predictions that carry them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pycocotools import mask as mask_util

from imat_kit.data.labels import load_labels, parse_class_id
from imat_kit.data.synth import attribute_groups, generate_images, render_image
from imat_kit.errors import KitError
from tests.helpers import REPO
from tests.helpers.files import tree_digest

CONFIGS = REPO / "imat_kit" / "configs"


# --- synthetic data ------------------------------------------------------------------------

def test_synth_2020_layout(prepared2020):
    lab = load_labels(year=2020)
    df = pd.read_csv(prepared2020 / "train.csv", dtype=str, keep_default_na=False)
    assert list(df.columns) == ["ImageId", "EncodedPixels", "Height", "Width", "ClassId",
                                "AttributesIds"]
    assert df.ImageId.str.fullmatch(r"[0-9a-f]{32}").all()  # 2020 ids carry no .jpg
    assert df.ClassId.str.fullmatch(r"\d+").all()
    assert len(json.loads((prepared2020 / "label_descriptions.json").read_text())
               ["attributes"]) == 294
    for cat, attrs in zip(df.ClassId.astype(int), df.AttributesIds):
        ids = [int(x) for x in attrs.split(",")] if attrs else []
        assert ids == sorted(ids) and set(ids) <= lab.attribute_ids
        assert bool(ids) == (cat <= 12)  # every garment, and only garments
    sub = pd.read_csv(prepared2020 / "sample_submission.csv")
    assert list(sub.columns) == ["ImageId", "EncodedPixels", "ClassId", "AttributesIds"]
    coco = json.loads((prepared2020 / "annotations" / "all.json").read_text())
    assert len(coco["attributes"]) == 294 and coco["info"]["layout"] == 2020


def _garments(year: int, n: int = 60):
    labels = load_labels(year=year)
    names = {a["id"]: a["name"] for a in labels.attributes}
    out = []
    for i in range(n):
        img, insts = render_image(11, i, year=year, labels=labels)
        gray = img.astype(np.float64).mean(2)
        for inst in insts:
            if inst.cat <= 12:
                out.append((inst, gray, {names[a] for a in inst.attrs}))
    return out


@pytest.mark.parametrize("year", [2019, 2020])
def test_synth_attributes_are_drawn(year):
    """Each attribute group changes the pixels: patterns the texture, lengths the height."""
    garments = _garments(year)
    groups = attribute_groups(load_labels(year=year))
    assert set(groups) == ({"pattern", "length", "opening", "sleeve"} if year == 2020
                           else {"pattern", "length", "opening"})
    spread = {"plain": [], "patterned": []}
    for inst, gray, names in garments:
        inner = inst.mask.copy()
        for axis in (0, 1):  # leave the outline out
            inner[1:-1] &= np.roll(inst.mask, 1, axis)[1:-1] & np.roll(inst.mask, -1, axis)[1:-1]
        if inner.sum() < 200:
            continue
        key = "plain" if "plain (pattern)" in names else "patterned"
        v = gray[inner]  # median absolute deviation: parts drawn on top do not count
        spread[key].append(np.median(np.abs(v - np.median(v))))
    assert len(spread["plain"]) > 10 and len(spread["patterned"]) > 5
    assert np.median(spread["patterned"]) > 3 * np.median(spread["plain"]), spread
    # frequencies are skewed: plain is the commonest pattern, chevron the rarest
    counts = pd.Series([n for _, _, names in garments for n in names]).value_counts()
    assert counts.idxmax() == "plain (pattern)"
    assert counts.get("chevron", 0) < counts["stripe"]
    # length: a maxi skirt/dress/coat/cape is taller for its width than a mini of the same
    # category (compared within a category: the categories' shapes differ)
    ratio: dict = {}
    for inst, _, names in garments:
        ys, xs = np.nonzero(inst.mask)
        for k in ("mini (length)", "maxi (length)"):
            if k in names and inst.mask.sum() > 300:
                ratio.setdefault(inst.cat, {}).setdefault(k, []).append(
                    (np.ptp(ys) + 1) / (np.ptp(xs) + 1))
    both = {c: r for c, r in ratio.items()
            if len(r.get("mini (length)", [])) >= 3 and len(r.get("maxi (length)", [])) >= 3}
    assert both, ratio
    for c, r in both.items():
        assert np.median(r["maxi (length)"]) > 1.2 * np.median(r["mini (length)"]), (c, r)


def test_synth_2019_attributes_in_classid(synth_dir):
    lab = load_labels()
    df = pd.read_csv(synth_dir / "train.csv", dtype=str)
    parsed = [parse_class_id(c, lab) for c in df.ClassId]
    pattern_ids = {a["id"] for a in lab.attributes if a["supercategory"] == "textile pattern"}
    for cat, attrs in parsed:
        assert (len(set(attrs) & pattern_ids) == 1) == (cat <= 12)


def test_synth_2020_deterministic(tmp_path):
    for name, seed in [("a", 4), ("b", 4), ("c", 5)]:
        generate_images(tmp_path / name, images=5, test_images=1, seed=seed, min_side=64,
                        max_side=96, year=2020, quiet=True)
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b") != tree_digest(tmp_path / "c")
    with pytest.raises(KitError, match="--year must be 2019 or 2020"):
        generate_images(tmp_path / "d", images=1, year=2021)


# --- Fashionpedia --------------------------------------------------------------------------

def _fashionpedia_file(prepared2020: Path, out: Path) -> tuple[Path, dict]:
    """Fashionpedia's layout from the synthetic 2020 set: polygons for a third of the
    annotations, uncompressed RLE for a third, compressed RLE for the rest; original ids."""
    import cv2

    coco = json.loads((prepared2020 / "annotations" / "all.json").read_text())
    (out / "train").mkdir(parents=True)
    images = []
    for im in coco["images"]:
        (out / "train" / im["file_name"]).symlink_to(prepared2020 / "train" / im["file_name"])
        images.append({"id": 1000 + im["id"], "file_name": im["file_name"],
                       "height": im["height"], "width": im["width"], "license": 1})
    anns = []
    for i, a in enumerate(coco["annotations"]):
        h, w = a["segmentation"]["size"]
        m = mask_util.decode(a["segmentation"])
        if i % 3 == 0:
            contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            seg = [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]
        elif i % 3 == 1:
            seg = {"size": [h, w], "counts": _uncompressed(m.reshape(-1, order="F"))}
        else:
            seg = a["segmentation"]
        anns.append({"id": 500 + a["id"], "image_id": 1000 + a["image_id"],
                     "category_id": a["category_id"], "attribute_ids": a["attribute_ids"],
                     "segmentation": seg, "bbox": a["bbox"], "area": a["area"], "iscrowd": 0})
    raw = {"info": {"year": 2020}, "images": images, "annotations": anns,
           "categories": coco["categories"], "attributes": coco["attributes"]}
    path = out / "instances_attributes_train2020.json"
    path.write_text(json.dumps(raw))
    return path, coco


def _uncompressed(flat: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE counts (column-major runs, starting with a run of zeros)."""
    counts, current, run = [], 0, 0
    for v in flat.tolist():
        if v != current:
            counts.append(run)
            current, run = v, 0
        run += 1
    counts.append(run)
    return counts


def test_prepare_fashionpedia_file(prepared2020, tmp_path, capsys):
    from imat_kit.cli.commands import main

    data = tmp_path / "fp"
    _, coco = _fashionpedia_file(prepared2020, data)
    assert main(["prepare", "--data", str(data), "--folds", "3", "-q"]) == 0
    assert "fashionpedia layout, 294 attributes" in capsys.readouterr().out
    out = json.loads((data / "annotations" / "all.json").read_text())
    assert len(out["annotations"]) == len(coco["annotations"])
    assert len(out["images"]) == len(coco["images"]) and len(out["attributes"]) == 294
    for i, (a, b) in enumerate(zip(coco["annotations"], out["annotations"])):
        assert a["attribute_ids"] == b["attribute_ids"] and a["category_id"] == b["category_id"]
        iou = mask_util.iou([b["segmentation"]], [a["segmentation"]], [0])[0, 0]
        # RLE (uncompressed or compressed): exact; a polygon through the outline's pixel
        # centres loses up to half a pixel all round: close for any mask of some size
        if i % 3:
            assert iou == 1.0, (i, iou)
        elif a["area"] >= 400:
            assert iou > 0.8, (i, iou)
        assert b["bbox"] == [int(v) for v in mask_util.toBbox(b["segmentation"])]
    assert (data / "folds.csv").exists() and (data / "annotations" / "fold2_val.json").exists()
    assert len(json.loads((data / "label_descriptions.json").read_text())["attributes"]) == 294
    assert load_labels(data / "label_descriptions.json").year == 2020


def test_fashionpedia_bad_attribute_named(prepared2020, tmp_path, capsys):
    from imat_kit.cli.commands import main

    data = tmp_path / "fp"
    path, _ = _fashionpedia_file(prepared2020, data)
    raw = json.loads(path.read_text())
    raw["annotations"][4]["attribute_ids"] = [317, 999]
    bad_id = raw["annotations"][4]["id"]
    path.write_text(json.dumps(raw))
    assert main(["prepare", "--data", str(data), "-q"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and f"annotations[5] (id {bad_id})" in err
    assert "unknown attribute id 999" in err and "(value '999')" in err
    # --skip-bad-rows leaves it out and lists it
    assert main(["prepare", "--data", str(data), "--skip-bad-rows", "-q"]) == 0
    rejected = pd.read_csv(data / "rejected_rows.csv")
    assert rejected.row.tolist() == [5] and "999" in rejected.reason[0]
    raw["annotations"][4]["attribute_ids"] = [317]
    raw["annotations"][7]["segmentation"] = {"size": [3, 3], "counts": [9]}
    path.write_text(json.dumps(raw))
    assert main(["prepare", "--data", str(data), "-q"]) == 2
    assert "annotations[8]" in capsys.readouterr().err


def test_bad_attribute_ids_in_train_csv_named(prepared2020, synth_copy, tmp_path, capsys):
    import shutil

    from imat_kit.cli.commands import main

    data = tmp_path / "d2020"
    shutil.copytree(prepared2020, data, ignore=shutil.ignore_patterns("annotations"))
    lines = (data / "train.csv").read_text().splitlines()
    cells = lines[3].split(",")
    lines[3] = ",".join(cells[:5]) + ',"317,342"'  # 342: not a 2020 attribute id
    (data / "train.csv").write_text("\n".join(lines) + "\n")
    assert main(["prepare", "--data", str(data), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"{data / 'train.csv'}:4:" in err and "unknown attribute id 342" in err
    lines = (synth_copy / "train.csv").read_text().splitlines()
    cells = lines[2].rsplit(",", 1)
    lines[2] = f"{cells[0]},{cells[1].split('_')[0]}_92"  # 2019 ids are 0..91
    (synth_copy / "train.csv").write_text("\n".join(lines) + "\n")
    assert main(["prepare", "--data", str(synth_copy), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"{synth_copy / 'train.csv'}:3:" in err and "unknown attribute id 92" in err


# --- predictions files -----------------------------------------------------------------------

def _pred(key="a.jpg", probs=None):
    from imat_kit.predictions import ImagePrediction, attribute_sets

    m = np.zeros((20, 30), np.uint8, order="F")
    m[2:10, 3:12] = 1
    rle = mask_util.encode(m)["counts"].decode()
    probs = probs if probs is not None else [{115: 0.91234, 317: 0.4}, {}]
    n = len(probs)
    return ImagePrediction(key, 20, 30, np.array([1, 31][:n]), np.array([0.9, 0.5][:n],
                                                                         np.float32),
                           np.array([[3, 2, 9, 8]] * n, np.float32), [rle] * n, None,
                           attribute_sets(probs), probs)


def test_predictions_roundtrip_with_attribute_probabilities(tmp_path):
    from imat_kit.predictions import read_predictions, sparse_probs, write_predictions

    p = _pred()
    write_predictions(tmp_path / "p.jsonl", {"split": "val"}, [p])
    head, back = read_predictions(tmp_path / "p.jsonl")
    q = back["a.jpg"]
    assert head["version"] == 2
    assert q.attr_probs == [{115: 0.9123, 317: 0.4}, {}]
    assert q.attributes == [(115,), ()]  # the default 0.5 threshold
    assert q[np.array([1, 0])].attr_probs == [{}, {115: 0.9123, 317: 0.4}]
    sp = sparse_probs(np.array([[0.01, 0.2, 0.9]]), [4, 7, 340], floor=0.05)
    assert sp == [{7: pytest.approx(0.2), 340: pytest.approx(0.9)}]


def test_version1_predictions_still_read_and_unknown_versions_refused(tmp_path):
    from imat_kit.predictions import read_predictions

    v1 = tmp_path / "v1.jsonl"
    v1.write_text(json.dumps({"format": "imat-kit-predictions", "version": 1, "split": "val"})
                  + "\n" + json.dumps({"image_key": "a.jpg", "height": 4, "width": 4,
                                       "labels": [6], "scores": [0.9],
                                       "bboxes": [[0, 0, 2, 2]], "masks": ["02208"],
                                       "attributes": [[28, 77]]}) + "\n")
    head, preds = read_predictions(v1)
    assert head["version"] == 1 and preds["a.jpg"].attributes == [(28, 77)]
    assert preds["a.jpg"].attr_probs == []
    v9 = tmp_path / "v9.jsonl"
    v9.write_text(v1.read_text().replace('"version": 1', '"version": 9'))
    with pytest.raises(KitError, match="version 9 is not one this imat-kit reads") as e:
        read_predictions(v9)
    assert str(v9) in str(e.value)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(v1.read_text().replace('"attributes": [[28, 77]]',
                                          '"attr_probs": [[[28, 0.9]], [[77, 0.8]]]'))
    with pytest.raises(KitError, match="attr_probs has 2 entries for 1 labels") as e:
        read_predictions(bad)
    assert f"{bad}:2:" in str(e.value)


def test_fusion_averages_attribute_probabilities():
    from imat_kit.ensemble import fuse_image

    a = _pred(probs=[{115: 0.9, 317: 0.4}])
    b = _pred(probs=[{115: 0.5, 160: 0.8}])
    f = fuse_image([a, b], method="fusion")
    assert len(f) == 1
    wa, wb = 0.9, 0.9  # weights: model weight 1 x score
    assert f.attr_probs[0] == pytest.approx({115: (0.9 * wa + 0.5 * wb) / (wa + wb),
                                             160: 0.8 * wb / (wa + wb),
                                             317: 0.4 * wa / (wa + wb)})
    assert f.attributes == [(115,)]
    n = fuse_image([a, b], method="nms")
    assert n.attr_probs == [{115: 0.9, 317: 0.4}]


# --- the data pipeline ---------------------------------------------------------------------

def _cfg(path: Path, data: Path):
    from imat_kit.mmdet_ext.config import load_config

    return load_config(path, fold=0, data_root=f"{data}/")


def _register():
    from mmdet.utils import register_all_modules
    from mmengine.registry import init_default_scope

    register_all_modules()
    init_default_scope("mmdet")
    import imat_kit.mmdet_ext  # noqa: F401
    import tests.helpers.mmdet  # noqa: F401  (TagInstanceIds)


def test_dataset_loads_attributes_and_checks_the_space(prepared2020, prepared):
    _register()
    from imat_kit.mmdet_ext import IMatDataset

    ds = IMatDataset(data_root=str(prepared2020), fold=0, split="train", pipeline=[],
                     attributes=True, num_attributes=294)
    coco = json.loads((prepared2020 / "annotations" / "fold0_train.json").read_text())
    ids = load_labels(year=2020).attribute_id_list
    by_img = {}
    for a in coco["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a["attribute_ids"])
    for i in range(len(ds)):
        item = ds[i]
        got = [sorted(ids[k] for k in inst["attributes"]) for inst in item["instances"]]
        assert got == by_img[item["img_id"]]
    with pytest.raises(ValueError, match="has 294 attributes, the model 92"):
        IMatDataset(data_root=str(prepared2020), fold=0, split="train", pipeline=[],
                    attributes=True, num_attributes=92)
    with pytest.raises(ValueError, match="needs num_attributes"):
        IMatDataset(data_root=str(prepared), fold=0, split="train", pipeline=[],
                    attributes=True)


def test_dataset_names_an_attribute_id_outside_the_file(prepared2020, tmp_path):
    import shutil

    _register()
    from imat_kit.mmdet_ext import IMatDataset

    root = tmp_path / "d"
    shutil.copytree(prepared2020 / "annotations", root / "annotations")
    path = root / "annotations" / "fold0_train.json"
    coco = json.loads(path.read_text())
    ann = next(a for a in coco["annotations"] if a["attribute_ids"])
    ann["attribute_ids"] = [*ann["attribute_ids"], 341]  # 2020 ids end at 340
    path.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match=rf"fold0_train.json: annotation id {ann['id']}: "
                       "attribute id 341 is not in the file's attribute list"):
        IMatDataset(data_root=str(root), fold=0, split="train", pipeline=[], attributes=True,
                    num_attributes=294)


@pytest.mark.parametrize("wrapped", [True, False], ids=["aligned", "naive"])
def test_attributes_stay_with_their_instances_through_the_seed_augmentation(prepared2020,
                                                                            wrapped):
    """Property: run the full phase-2 pipeline (seed augmentation incl. RandomCrop, Rotate,
    RecomputeBBoxFromMasks; RandomResize; FilterAnnotations) with each instance's id written
    into its own mask's pixel values (a carrier independent of the code under test); every
    surviving instance must keep its own attribute vector and label. Without the wrapper (the
    trap) the same run must catch a mismatch, which shows the test can fail."""
    _register()
    from mmengine.dataset import Compose

    from imat_kit.mmdet_ext import IMatDataset
    from imat_kit.mmdet_ext.attributes import attribute_pipeline

    cfg = _cfg(CONFIGS / "maskrcnn_r50_imat_attr2020_all.py", prepared2020)
    steps = attribute_pipeline(cfg.train_pipeline_aug, 294)
    assert [s["type"] for s in steps] == ["LoadImageFromFile", "IMatLoadAnnotations",
                                          "LoadInstanceAttributes", "KeepInstanceFieldsAligned",
                                          "PackIMatInputs"]
    middle = steps[3]["transforms"]
    for s in middle:  # smaller images: a quicker test, the same transforms
        if s["type"] == "RandomResize":
            s["scale"] = (256, 200)
    tag = dict(type="TagInstanceIds")
    if wrapped:
        pipe = Compose([*steps[:3], tag, dict(steps[3], transforms=middle)])
    else:
        pipe = Compose([*steps[:3], tag, *middle])
    ds = IMatDataset(data_root=str(prepared2020), fold=0, split="train", pipeline=[],
                     attributes=True, num_attributes=294)
    state = np.random.get_state()
    np.random.seed(0)
    checked = dropped = mismatched = 0
    try:
        for _ in range(4):
            for i in range(len(ds)):
                info = ds[i]
                out = pipe(dict(info))
                if out is None:
                    continue
                n0 = len(info["instances"])
                attrs0 = np.zeros((n0, 294), np.float32)
                for k, inst in enumerate(info["instances"]):
                    attrs0[k, list(inst["attributes"])] = 1
                labels0 = np.array([inst["bbox_label"] for inst in info["instances"]])
                masks = out["gt_masks"].masks
                dropped += n0 - len(masks)
                if len(out["gt_attributes"]) != len(masks):
                    mismatched += 1
                    continue
                for j in range(len(masks)):
                    if (masks[j] > 0).sum() < 30:
                        # bilinear warps lower edge values: a sliver's id is not reliable
                        continue
                    k = int(masks[j].max()) - 1  # the instance's own id
                    if not (np.array_equal(out["gt_attributes"][j], attrs0[k])
                            and out["gt_bboxes_labels"][j] == labels0[k]):
                        mismatched += 1
                    checked += 1
    finally:
        np.random.set_state(state)
    assert dropped > 0, "no instance was dropped: the property was not exercised"
    if wrapped:
        assert checked > 100 and mismatched == 0
    else:
        assert mismatched > 0


def test_packed_attributes_arrive_in_gt_instances(prepared2020):
    _register()
    from imat_kit.mmdet_ext import IMatDataset

    cfg = _cfg(CONFIGS / "tiny_maskrcnn_imat_attr2020.py", prepared2020)
    ds_cfg = dict(cfg.train_dataloader.dataset)
    ds_cfg.pop("type")
    ds = IMatDataset(**ds_cfg)
    sample = ds[0]["data_samples"]
    gt = sample.gt_instances
    assert gt.attributes.shape == (len(gt.labels), 294)
    garments = gt.labels <= 12
    assert (gt.attributes[garments].sum(1) >= 1).all()
    assert (gt.attributes[~garments].sum(1) == 0).all()


# --- the attribute branch ------------------------------------------------------------------

def _model_and_batch(prepared2020, config="tiny_maskrcnn_imat_attr2020.py"):
    import torch
    from mmdet.registry import MODELS
    from mmengine.dataset import pseudo_collate

    from imat_kit.mmdet_ext import IMatDataset

    _register()
    cfg = _cfg(CONFIGS / config, prepared2020)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    ds_cfg = dict(cfg.train_dataloader.dataset)
    ds_cfg.pop("type")
    ds = IMatDataset(**ds_cfg)
    items = [it for it in (ds[i] for i in range(len(ds)))  # each sample through the pipeline once
             if (it["data_samples"].gt_instances.labels <= 12).any()][:2]
    return model, pseudo_collate(items), cfg


@pytest.mark.slow
def test_attribute_loss_decreases_on_a_tiny_overfit(prepared2020):
    import torch

    model, batch, _ = _model_and_batch(prepared2020)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = model.data_preprocessor(batch, True)
    torch.manual_seed(0)
    losses = []
    for _ in range(25):
        out = model(**data, mode="loss")
        assert set(out) >= {"loss_attr", "loss_mask", "loss_cls"}
        total = sum(v for k, v in out.items() if "loss" in k and torch.is_tensor(v))
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(float(out["loss_attr"].detach()))
    assert losses[-1] < 0.5 * losses[0], losses


def test_attribute_head_category_bias_and_feature_grad():
    """``num_classes``: one learnt bias row per category, added for the RoI's category (zero
    at the start, so the output bias alone sets the prior); ``feature_grad`` scales the gradient
    into the features (0: none) without changing the forward pass."""
    import torch

    _register()
    from mmdet.registry import MODELS

    def build(**kw):
        torch.manual_seed(0)
        head = MODELS.build(dict(type="AttributeHead", num_attributes=4, in_channels=8,
                                 roi_feat_size=4, num_convs=1, fc_out_channels=16,
                                 with_geometry=False, **kw))
        head.init_weights()
        return head

    plain, biased = build(), build(num_classes=3)
    feats = torch.randn(2, 8, 4, 4)
    labels = torch.tensor([0, 2])

    def without_bias(head):
        bias, head.category_bias = head.category_bias, None
        try:
            return head(feats)
        finally:
            head.category_bias = bias

    assert (biased.category_bias.weight == 0).all()  # zero at the start, after init_weights
    assert torch.allclose(without_bias(biased), biased(feats, labels=labels))
    with pytest.raises(ValueError, match="needs the RoIs' categories"):
        biased(feats)
    with torch.no_grad():
        biased.category_bias.weight[2, 1] = 3.0
    out = biased(feats, labels=labels) - without_bias(biased)
    assert out[1, 1].item() == pytest.approx(3.0, abs=1e-5) and out[0].abs().max() == 0
    for grad_scale, expect_grad in ((0.0, False), (0.5, True)):
        head = build(feature_grad=grad_scale)
        f = feats.clone().requires_grad_(True)
        y = head(f)
        assert torch.allclose(y, plain(feats))  # same forward pass
        y.sum().backward()
        assert (f.grad.abs().sum() > 0) == expect_grad
    with pytest.raises(ValueError, match="feature_grad"):
        build(feature_grad=1.5)


def test_attribute_prior_hook_starts_at_the_category_frequencies():
    """Before any feature is learnt, a RoI of category c gets each attribute's (smoothed)
    frequency among c's training instances; the hook leaves loaded or resumed weights alone."""
    import types

    import torch

    _register()
    from mmdet.registry import MODELS

    from imat_kit.mmdet_ext.hooks import AttributePriorHook

    head = MODELS.build(dict(type="AttributeHead", num_attributes=3, in_channels=4,
                             roi_feat_size=2, num_convs=0, fc_out_channels=8,
                             with_geometry=False, num_classes=4))
    head.init_weights()
    infos = [{"instances": [{"bbox_label": 1, "attributes": (0, 2)},
                            {"bbox_label": 1, "attributes": (0,)},
                            {"bbox_label": 1, "attributes": (), "ignore_flag": 1},
                            {"bbox_label": 3, "attributes": (1,)}]},
             {"instances": [{"bbox_label": 1, "attributes": (0,)}]}]
    dataset = type("D", (), {"get_data_info": lambda self, i: infos[i],
                             "__len__": lambda self: len(infos)})()
    model = types.SimpleNamespace(roi_head=types.SimpleNamespace(attribute_head=head))
    logs = []
    runner = types.SimpleNamespace(
        iter=0, cfg={"load_from": None}, model=model,
        train_dataloader=types.SimpleNamespace(dataset=dataset),
        logger=types.SimpleNamespace(info=logs.append))
    AttributePriorHook(smoothing=1.0).before_train(runner)
    feats = torch.zeros(3, 4, 2, 2)  # no signal from the features: the prior alone
    with torch.no_grad():
        base = torch.sigmoid(head.fc_attr.bias)
        p = torch.sigmoid(head(feats, labels=torch.tensor([1, 3, 0])) - head.fc(
            torch.zeros(3, 16)).relu() @ head.fc_attr.weight.T)
    start = base.numpy()
    want1 = (np.array([3, 0, 1]) + start) / (3 + 1)  # 3 counted instances of category 1
    want3 = (np.array([0, 1, 0]) + start) / (1 + 1)
    np.testing.assert_allclose(p[0].numpy(), want1, rtol=1e-5)
    np.testing.assert_allclose(p[1].numpy(), want3, rtol=1e-5)
    np.testing.assert_allclose(p[2].numpy(), start, rtol=1e-5)  # no instance: untouched
    assert "4 training instances" in logs[-1]
    # resumed or loaded weights: left alone
    with torch.no_grad():
        head.category_bias.weight.fill_(7.0)
    for it, load in ((5, None), (0, "phase1.pth")):
        runner.iter, runner.cfg = it, {"load_from": load}
        AttributePriorHook().before_train(runner)
        assert (head.category_bias.weight == 7.0).all()


def test_attribute_head_loss_excludes_categories_and_takes_focal():
    import torch

    _register()
    from mmdet.registry import MODELS

    head = MODELS.build(dict(type="AttributeHead", num_attributes=5, in_channels=4,
                             roi_feat_size=2, num_convs=1, conv_out_channels=4,
                             fc_out_channels=8, attribute_categories=[0, 1],
                             with_geometry=False))
    logits = torch.zeros(3, 5, requires_grad=True)
    targets = torch.tensor([[1, 0, 0, 0, 0], [0, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).float()
    with_all = head.loss(logits, targets, torch.tensor([0, 1, 0]))["loss_attr"].detach()
    excluded = head.loss(logits, targets, torch.tensor([0, 1, 40]))["loss_attr"].detach()
    none = head.loss(logits, targets, torch.tensor([30, 40, 45]))["loss_attr"]
    # every entry at p = 0.5: summed over the 5 attributes, averaged over the kept RoIs
    assert float(with_all) == pytest.approx(5 * np.log(2))
    assert float(excluded) == pytest.approx(5 * np.log(2))
    assert float(none) == 0.0
    none.backward()  # the graph is kept when nothing counts
    logits2 = torch.tensor([[5.0, -5, -5, -5, -5]])
    # an attribute-less category's RoI is not pushed towards "no attributes"
    assert float(head.loss(logits2, torch.zeros(1, 5), torch.tensor([40]))["loss_attr"]) == 0
    focal = MODELS.build(dict(type="AttributeHead", num_attributes=5, in_channels=4,
                              roi_feat_size=2, num_convs=1, conv_out_channels=4,
                              fc_out_channels=8, with_geometry=False,
                              loss_attr=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0,
                                             alpha=0.25, loss_weight=50.0)))
    good = focal.loss(torch.tensor([[5.0, -5, -5, -5, -5]]), targets[:1], torch.tensor([0]))
    bad = focal.loss(torch.tensor([[-5.0, 5, 5, 5, 5]]), targets[:1], torch.tensor([0]))
    assert float(good["loss_attr"]) < 0.01 < float(bad["loss_attr"])


@pytest.mark.slow
def test_every_final_detection_gets_attributes(prepared2020):
    import torch

    model, batch, _ = _model_and_batch(prepared2020)
    model.eval()
    model.roi_head.test_cfg.score_thr = 0.0  # an untrained model: keep every detection
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
        results = model(**data, mode="predict")
        # the same boxes pooled by hand give the same probabilities
        feats = model.extract_feat(data["inputs"])
    for r in results:
        p = r.pred_instances
        assert len(p) > 0 and p.attributes.shape == (len(p), 294)
        assert (p.attributes >= 0).all() and (p.attributes <= 1).all()
    from mmdet.structures.bbox import bbox2roi

    r = results[0].pred_instances
    scale = r.bboxes.new_tensor(batch["data_samples"][0].metainfo["scale_factor"]).repeat(2)
    rois = bbox2roi([r.bboxes * scale])
    with torch.no_grad():
        x = tuple(f[:1] for f in feats)
        head = model.roi_head
        again = head.attribute_head(head._attribute_feats(x, rois), rois, r.labels).sigmoid()
    assert torch.allclose(again, r.attributes, atol=1e-4)


@pytest.mark.slow
def test_predict_writes_attribute_probabilities(prepared2020, tmp_path):
    import torch

    from imat_kit.mmdet_ext.predict import predict
    from imat_kit.predictions import read_predictions

    model, _, _ = _model_and_batch(prepared2020)
    with torch.no_grad():  # untrained, the output bias says 1% everywhere: make it 50%
        model.roi_head.attribute_head.fc_attr.bias.zero_()
    ckpt = tmp_path / "untrained.pth"
    torch.save({"state_dict": model.state_dict(), "meta": {}}, ckpt)
    config = CONFIGS / "tiny_maskrcnn_imat_attr2020.py"
    opts = ["model.test_cfg.rcnn.score_thr=0.0"]
    files = []
    for bs in (1, 3):
        out = tmp_path / f"b{bs}.jsonl"
        predict(config, ckpt, split="val", fold=0, out=out, data_root=f"{prepared2020}/",
                batch_size=bs, tta="flip", cfg_options=opts, attribute_floor=0.2, quiet=True)
        files.append(out.read_bytes())
    assert files[0] == files[1]  # batch size changes nothing, attributes included
    head, preds = read_predictions(tmp_path / "b1.jsonl")
    assert head["version"] == 2 and head["attribute_floor"] == 0.2
    assert len(head["data_sha256"]) == 64  # which images: the split's annotation file
    ids = set(load_labels(year=2020).attribute_ids)
    n = 0
    for p in preds.values():
        assert len(p.attr_probs) == len(p)
        for a in p.attr_probs:
            assert set(a) <= ids and all(v >= 0.2 - 1e-6 for v in a.values())
            n += len(a)
    assert n > 0
    # another floor is another prediction: refused without --overwrite
    with pytest.raises(KitError, match=r"attribute_floor: was 0\.2, now 0\.05"):
        predict(config, ckpt, split="val", fold=0, out=tmp_path / "b1.jsonl",
                data_root=f"{prepared2020}/", tta="flip", cfg_options=opts, quiet=True)
    # a 92-attribute model on 294-attribute data: a clear error, not a wrong file
    from mmdet.registry import MODELS

    m92 = MODELS.build(_cfg(CONFIGS / "tiny_maskrcnn_imat_attr.py", prepared2020).model)
    torch.save({"state_dict": m92.state_dict(), "meta": {}}, tmp_path / "m92.pth")
    with pytest.raises(KitError, match="the model predicts 92 attributes, the data's label "
                       "file has 294"):
        predict(CONFIGS / "tiny_maskrcnn_imat_attr.py", tmp_path / "m92.pth", split="val",
                fold=0, out=tmp_path / "m92.jsonl", data_root=f"{prepared2020}/",
                cfg_options=opts, quiet=True)
    assert not (tmp_path / "m92.jsonl").exists()


# --- the learnability figures --------------------------------------------------------------

def test_matched_attribute_f1_and_the_category_prior():
    from imat_kit.eval.analysis import attribute_f1, category_prior, f1_summary, with_prior

    m = np.zeros((20, 30), np.uint8, order="F")
    m[2:10, 3:12] = 1
    seg = mask_util.encode(m)
    seg["counts"] = seg["counts"].decode()
    other = np.zeros((20, 30), np.uint8, order="F")
    other[12:18, 15:28] = 1
    seg2 = mask_util.encode(other)
    seg2["counts"] = seg2["counts"].decode()
    gt = {"images": [{"id": 1, "image_key": "a.jpg", "height": 20, "width": 30}],
          "annotations": [
              {"id": 1, "image_id": 1, "category_id": 1, "segmentation": seg,
               "attribute_ids": [115, 317]},
              {"id": 2, "image_id": 1, "category_id": 10, "segmentation": seg2,
               "attribute_ids": [154]}]}  # never detected
    pred = _pred(probs=[{115: 0.9, 160: 0.7, 317: 0.2}])  # one instance, category 1, on truth 1
    preds = {"a.jpg": pred}
    full = f1_summary(attribute_f1(gt, preds))
    matched = f1_summary(attribute_f1(gt, preds, matched_only=True))
    assert (full["tp"], full["fp"], full["fn"]) == (1, 1, 2)  # 154 of the missed truth counts
    assert (matched["tp"], matched["fp"], matched["fn"]) == (1, 1, 1)
    assert matched["micro_f1"] == pytest.approx(2 / 4)
    # macro: mean over the attributes with support (115: 1.0, 317: 0.0)
    assert matched["macro_f1"] == pytest.approx(0.5)
    train = {"annotations": [{"category_id": 1, "attribute_ids": a} for a in
                             ([115, 317], [317, 160], [317, 115], [317])]}
    prior = category_prior(train)
    assert prior == {1: (115, 317)}  # median count 2: the two most frequent
    base = f1_summary(attribute_f1(gt, with_prior(preds, prior), matched_only=True))
    assert (base["tp"], base["fp"], base["fn"]) == (2, 0, 0) and base["micro_f1"] == 1.0


def test_training_record_names_the_data(prepared2020, tmp_path):
    """Training reuses a finished run only for the same data: the record carries the content
    hash of the fold's annotation files (regenerated data under the same path is another
    run)."""
    import shutil

    from imat_kit.files import describe_differences
    from imat_kit.mmdet_ext.train import phase_chain, run_record

    root = tmp_path / "d"
    shutil.copytree(prepared2020 / "annotations", root / "annotations")
    phase = phase_chain(CONFIGS / "tiny_maskrcnn_imat_attr2020.py")[0]
    kw = dict(cfg_options=[], launcher="none", gpus=1, auto_scale_lr=False,
              start_checkpoint=None)
    a = run_record(phase, 0, data_root=f"{root}/", **kw)
    assert a["settings"]["(train data sha256)"] and a["settings"]["(val data sha256)"]
    path = root / "annotations" / "fold0_train.json"
    path.write_text(path.read_text().replace('"iscrowd":0', '"iscrowd":0 '))
    b = run_record(phase, 0, data_root=f"{root}/", **kw)
    assert [d.split(":")[0] for d in describe_differences(a["settings"], b["settings"])] == \
        ["(train data sha256)"]
