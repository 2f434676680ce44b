"""The MMDetection side of the kit's own commands: flip TTA lands on the original instance,
evaluate agrees with mmdet's CocoMetric, cfg-options parse as mim's, the environment is left
alone, run rules of IMatRunner, and the installed (non-editable) package finds its configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_util

from tests.helpers import REPO

TEST_CONFIGS = REPO / "tests" / "configs"


def _blob_data(root: Path) -> np.ndarray:
    """A test split of one image: a bright L-shaped blob in the left part of a dark image,
    far from mirror-symmetric. Returns the blob's mask (H×W bool)."""
    h, w = 70, 120
    m = np.zeros((h, w), bool)
    m[10:60, 8:22] = True   # the L's upright
    m[45:60, 8:50] = True   # its foot
    img = np.where(m[..., None], 230, 20).astype(np.uint8).repeat(3, axis=2)
    (root / "test").mkdir(parents=True)
    Image.fromarray(img).save(root / "test" / "blob.png")
    (root / "annotations").mkdir()
    (root / "annotations" / "test.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "blob.png", "height": h, "width": w,
                    "image_key": "blob.png"}], "annotations": [], "categories": []}))
    return m


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_flip_tta_lands_on_the_original_instance(tmp_path):
    from imat_kit.mmdet_ext.predict import predict
    from imat_kit.predictions import read_predictions
    from tests.helpers.mmdet import BrightBlobDetector

    truth = _blob_data(tmp_path / "data")
    ckpt = tmp_path / "blob.pth"
    torch.save({"meta": {}, "state_dict": BrightBlobDetector().state_dict()}, ckpt)
    cfg = TEST_CONFIGS / "blob_detector.py"
    masks = {}
    for tta in (None, "flip"):
        out = tmp_path / f"{tta}.jsonl"
        predict(cfg, ckpt, split="test", out=out, data_root=str(tmp_path / "data"), tta=tta,
                device="cpu", quiet=True)
        p = read_predictions(out)[1]["blob.png"]
        assert len(p) == 1 and p.labels.tolist() == [6]
        masks[tta] = mask_util.decode(p.rles()[0]).astype(bool)
    plain = masks[None]
    assert _iou(plain, truth) > 0.9  # the detector finds the blob
    assert _iou(masks["flip"], truth) > 0.9  # the mirrored pass, mirrored back, lands on it
    assert _iou(plain[:, ::-1], truth) < 0.3  # (a pass left mirrored would not)
    # the mirrored pass alone, as predict turns it back
    from mmdet.utils import register_all_modules
    from mmengine.dataset import Compose, pseudo_collate

    from imat_kit.mmdet_ext.config import load_config
    from imat_kit.mmdet_ext.predict import _to_prediction, build_detector

    register_all_modules()
    c = load_config(cfg, data_root=tmp_path / "data")
    model = build_detector(c, ckpt, "cpu")
    steps = list(c.test_dataloader.dataset.pipeline)
    flip = Compose([*steps[:-1], dict(type="RandomFlip", prob=1.0, direction="horizontal"),
                    steps[-1]])
    item = flip(dict(img_path=str(tmp_path / "data" / "test" / "blob.png"), img_id=1))
    sample = model.test_step(pseudo_collate([item]))[0]
    mirrored = sample.pred_instances.masks[0].numpy()
    assert _iou(mirrored, truth) < 0.3 and _iou(mirrored[:, ::-1], truth) > 0.9
    back = _to_prediction(sample, "blob.png", flip=True)
    assert _iou(mask_util.decode(back.rles()[0]).astype(bool), truth) > 0.9
    x, y, bw, _ = back.bboxes[0]
    ys, xs = np.nonzero(truth)
    assert abs(x - xs.min()) <= 2 and abs(x + bw - xs.max() - 1) <= 2 and abs(y - ys.min()) <= 2


def test_cfg_options_parse_as_mim_and_environment_is_restored(monkeypatch):
    from imat_kit.errors import KitError
    from imat_kit.mmdet_ext.config import imat_env, load_config, parse_cfg_options

    got = parse_cfg_options(["a.b=False", "c=None", "d=[1,2]", "e=0.5", "f=text", "g=3"])
    assert got == {"a.b": False, "c": None, "d": [1, 2], "e": 0.5, "f": "text", "g": 3}
    with pytest.raises(KitError, match="KEY=VALUE"):
        parse_cfg_options(["oops"])
    monkeypatch.delenv("IMAT_FOLD", raising=False)
    monkeypatch.setenv("IMAT_DATA_ROOT", "/somewhere/")
    with imat_env(3, "/data/x"):
        assert os.environ["IMAT_FOLD"] == "3" and os.environ["IMAT_DATA_ROOT"] == "/data/x/"
    assert "IMAT_FOLD" not in os.environ and os.environ["IMAT_DATA_ROOT"] == "/somewhere/"
    cfg = load_config(REPO / "configs" / "tiny_maskrcnn_imat.py", fold=2, data_root="/d",
                      options=["train_cfg.max_iters=7", "model.backbone.norm_eval=True"])
    assert cfg.train_cfg.max_iters == 7 and cfg.model.backbone.norm_eval is True
    assert str(cfg.fold) == "2" and cfg.train_dataloader.dataset.data_root == "/d/"
    assert "IMAT_FOLD" not in os.environ and os.environ["IMAT_DATA_ROOT"] == "/somewhere/"


def test_runner_rules_fold_work_dir_and_previous_phase(tmp_path):
    from mmengine.config import Config

    from imat_kit.errors import KitError
    from imat_kit.mmdet_ext.runner import apply_run_rules

    cfg = Config(dict(work_dir=str(tmp_path / "maskrcnn_r50_imat_all"), fold="1",
                      imat_previous_phase="maskrcnn_r50_imat.py",
                      load_from="imat:previous-phase"))
    with pytest.raises(KitError, match="holds none: train that phase first"):
        apply_run_rules(cfg.copy())
    prev = tmp_path / "maskrcnn_r50_imat" / "fold1"
    prev.mkdir(parents=True)
    (prev / "epoch_7.pth").write_bytes(b"x")
    (prev / "last_checkpoint").write_text(str(prev / "epoch_7.pth"))
    c = cfg.copy()
    apply_run_rules(c)
    assert c.work_dir == str(tmp_path / "maskrcnn_r50_imat_all" / "fold1")
    assert c.load_from == str(prev / "epoch_7.pth") and c.resume is False
    c2 = Config(dict(work_dir=str(tmp_path / "x" / "fold1"), fold=1, load_from="given.pth",
                     imat_previous_phase="maskrcnn_r50_imat.py"))
    apply_run_rules(c2)  # an explicit load_from wins; a work dir ending in its fold is kept
    assert c2.work_dir == str(tmp_path / "x" / "fold1") and c2.load_from == "given.pth"
    c4 = cfg.copy()
    c4.load_from = None  # from scratch, deliberately
    apply_run_rules(c4)
    assert c4.load_from is None
    c3 = Config(dict(work_dir="w", fold=0, imat_tensorboard=True,
                     visualizer=dict(type="DetLocalVisualizer",
                                     vis_backends=[dict(type="LocalVisBackend")])))
    apply_run_rules(c3)
    assert [b["type"] for b in c3.visualizer.vis_backends] == ["LocalVisBackend",
                                                               "TensorboardVisBackend"]


@pytest.mark.xdist_group("tiny_checkpoint")
@pytest.mark.slow
def test_evaluate_agrees_with_mmdet_cocometric(tiny_checkpoint, prepared, tmp_path):
    """mmdet's own test loop (CocoMetric, batch 1) and `imat-kit predict` + `evaluate` on the
    same checkpoint and images: the same detections, the same AP."""
    from mmdet.utils import register_all_modules
    from mmengine.runner import Runner

    from imat_kit.data.paths import read_ann
    from imat_kit.eval.evaluate import evaluate_fold
    from imat_kit.mmdet_ext.config import load_config
    from imat_kit.mmdet_ext.predict import predict
    from imat_kit.predictions import read_predictions
    from tests.helpers.coco import pycocotools_stats

    opts = ["model.test_cfg.rcnn.score_thr=0.0"]
    predict(TEST_CONFIGS / "tiny_test.py", tiny_checkpoint, split="val", fold=0,
            out=tmp_path / "val.jsonl", data_root=str(prepared), cfg_options=opts,
            batch_size=3, device="cpu", quiet=True)
    ours = read_predictions(tmp_path / "val.jsonl")[1]
    register_all_modules()
    cfg = load_config(TEST_CONFIGS / "tiny_test.py", fold=0, data_root=prepared,
                      options=[*opts, f"test_evaluator.0.outfile_prefix={tmp_path / 'mmdet'}"])
    cfg.work_dir, cfg.load_from = str(tmp_path / "wd"), str(tiny_checkpoint)
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=50)
    metrics = Runner.from_cfg(cfg).test()
    gt = read_ann(prepared, "val", 0)
    theirs = json.loads((tmp_path / "mmdet.segm.json").read_text())
    key_of = {im["id"]: im["image_key"] for im in gt["images"]}
    by_img: dict = {}
    for d in theirs:
        by_img.setdefault(key_of[d["image_id"]], []).append(d)
    n = 0
    for key, p in ours.items():
        t = sorted(by_img.get(key, []), key=lambda d: -d["score"])
        assert len(t) == len(p), key
        for j, d in enumerate(t):
            assert int(p.labels[j]) == d["category_id"]
            assert p.scores[j] == pytest.approx(d["score"], abs=1e-5)
            assert p.masks[j] == d["segmentation"]["counts"]
            n += 1
    assert n > 0
    stats = pycocotools_stats(gt, theirs, "segm")
    mine = evaluate_fold(gt, ours)["row"]
    assert mine["segm_AP"] == pytest.approx(max(stats[0], 0.0), abs=1e-4)
    assert round(mine["segm_AP"], 3) == pytest.approx(metrics["coco/segm_mAP"], abs=1e-3)
    # the competition score of mmdet's loop (IMatCompetitionMetric) is evaluate's
    assert metrics["imat/competition"] == pytest.approx(mine["competition"], abs=1e-12)


@pytest.mark.slow
def test_installed_package_finds_its_configs(tmp_path):
    """After a plain `pip install .` (not editable), the demo and its tiny config are found from
    any working folder."""
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
                        "--target", str(target), str(REPO)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(target)}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = subprocess.run([sys.executable, "-m", "imat_kit.cli", "demo", "--help"], env=env,
                       cwd=elsewhere, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--iters" in r.stdout, r.stderr
    code = ("import imat_kit, sys; from imat_kit.cli.demo import default_config; "
            "from mmengine.config import Config; p = default_config(); "
            "c = Config.fromfile(str(p)); print(imat_kit.__file__); print(p); "
            "print(c.model.roi_head.bbox_head.num_classes, c.runner_type); "
            "t = Config.fromfile(str(p.parent / 'tiny' / 'htc_imat.py')); "
            "print(t.model.roi_head.bbox_head[2]['num_classes'])")
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=elsewhere,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    where, config, classes, htc = r.stdout.strip().splitlines()[-4:]
    assert where.startswith(str(target)) and config.startswith(str(target))
    assert classes == "46 IMatRunner" and htc == "46"  # the tiny/ family configs ship too


def test_multiscale_tta_passes_map_back_onto_the_truth(tmp_path):
    """Each pass of --tta scales+flip sees the image at another size (and mirrored), and each,
    mapped back, lands on the blob; the fused result too, recorded in the header."""
    from mmdet.utils import register_all_modules
    from mmengine.dataset import Compose, pseudo_collate

    from imat_kit.errors import KitError
    from imat_kit.mmdet_ext.config import load_config
    from imat_kit.mmdet_ext.predict import (
        _scaled,
        _to_prediction,
        build_detector,
        predict,
        tta_passes,
    )
    from imat_kit.predictions import read_header, read_predictions
    from tests.helpers.mmdet import BrightBlobDetector

    truth = _blob_data(tmp_path / "data")
    ckpt = tmp_path / "blob.pth"
    torch.save({"meta": {}, "state_dict": BrightBlobDetector().state_dict()}, ckpt)
    cfg = TEST_CONFIGS / "blob_detector.py"
    assert tta_passes("scales+flip", [0.5, 1.5]) == [(0.5, False), (0.5, True), (1.5, False),
                                                      (1.5, True)]
    assert tta_passes(None) == [(1.0, False)]
    for bad in (("flip", [0.5]), ("scales", [0.0]), ("scales", [1.0, 1.0]), ("oops", None)):
        with pytest.raises(KitError):
            tta_passes(*bad)
    register_all_modules()
    c = load_config(cfg, data_root=tmp_path / "data")
    model = build_detector(c, ckpt, "cpu")
    steps = list(c.test_dataloader.dataset.pipeline)
    shapes = set()
    for factor, mirrored in tta_passes("scales+flip", [0.5, 1.0, 1.5]):
        sc = _scaled(steps, factor)
        pipe = Compose([*sc[:-1], dict(type="RandomFlip", prob=1.0, direction="horizontal"),
                        sc[-1]] if mirrored else sc)
        item = pipe(dict(img_path=str(tmp_path / "data" / "test" / "blob.png"), img_id=1))
        shapes.add(tuple(item["data_samples"].metainfo["img_shape"][:2]))
        back = _to_prediction(model.test_step(pseudo_collate([item]))[0], "blob.png", mirrored)
        assert _iou(mask_util.decode(back.rles()[0]).astype(bool), truth) > 0.85, (factor,
                                                                                   mirrored)
    assert len(shapes) == 3  # three input sizes, as the factors ask
    out = tmp_path / "ms.jsonl"
    predict(cfg, ckpt, split="test", out=out, data_root=str(tmp_path / "data"),
            tta="scales+flip", tta_scales=[0.5, 1.0, 1.5], device="cpu", quiet=True)
    head = read_header(out)
    assert head["tta"] == "scales+flip" and head["tta_scales"] == [0.5, 1.0, 1.5]
    p = read_predictions(out)[1]["blob.png"]
    assert len(p) == 1 and _iou(mask_util.decode(p.rles()[0]).astype(bool), truth) > 0.9
    with pytest.raises(KitError, match="tta_scales"):  # another TTA is another prediction
        predict(cfg, ckpt, split="test", out=out, data_root=str(tmp_path / "data"),
                tta="scales+flip", tta_scales=[0.8, 1.0], device="cpu", quiet=True)


def test_checkpoint_ensemble_resumes_after_a_kill(tmp_path, monkeypatch):
    """predict --checkpoints: one file per checkpoint, fused; a run killed after the first
    checkpoint redoes only the second; the header records every checkpoint's SHA-256."""
    import imat_kit.mmdet_ext.predict as pr
    from imat_kit.files import file_fingerprint
    from imat_kit.predictions import read_header, read_predictions
    from tests.helpers.mmdet import BrightBlobDetector

    truth = _blob_data(tmp_path / "data")
    wd = tmp_path / "work"
    wd.mkdir()
    for k in (2, 4, 6):  # three different files of the same weights
        torch.save({"meta": {"iter": k}, "state_dict": BrightBlobDetector().state_dict()},
                   wd / f"iter_{k}.pth")
    ckpts = pr.last_checkpoints(wd, 2)
    assert [c.name for c in ckpts] == ["iter_4.pth", "iter_6.pth"]
    cfg = TEST_CONFIGS / "blob_detector.py"
    kw = dict(split="test", out=tmp_path / "ens.jsonl", data_root=str(tmp_path / "data"),
              device="cpu", quiet=True)
    real = pr.predict
    calls = []

    def killed(config, checkpoint, **k):
        calls.append(Path(checkpoint).name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the run is killed while the second checkpoint predicts
        return real(config, checkpoint, **k)

    monkeypatch.setattr(pr, "predict", killed)
    with pytest.raises(KeyboardInterrupt):
        pr.predict_checkpoints(cfg, ckpts, **kw)
    assert not (tmp_path / "ens.jsonl").exists()
    monkeypatch.setattr(pr, "predict", real)
    done = []

    def counting(config, checkpoint, **k):
        r = real(config, checkpoint, **k)
        done.append((Path(checkpoint).name, r.predicted_now))
        return r

    monkeypatch.setattr(pr, "predict", counting)
    r = pr.predict_checkpoints(cfg, ckpts, **kw)
    assert done == [("iter_4.pth", 0), ("iter_6.pth", 1)]  # only what was missing
    head = read_header(tmp_path / "ens.jsonl")
    assert [c["sha256"] for c in head["checkpoints"]] == [
        file_fingerprint(c)["sha256"] for c in ckpts]
    assert [h["checkpoint_sha256"] for h in head["inputs"]] == [
        c["sha256"] for c in head["checkpoints"]]
    p = read_predictions(tmp_path / "ens.jsonl")[1]["blob.png"]
    assert len(p) == 1 and _iou(mask_util.decode(p.rles()[0]).astype(bool), truth) > 0.9
    assert r.predicted_now == 1
    done.clear()
    assert pr.predict_checkpoints(cfg, ckpts, **kw).predicted_now == 0  # nothing to redo


@pytest.mark.xdist_group("tiny_checkpoint")
@pytest.mark.slow
def test_masks_pasted_per_instance_give_the_same_predictions_files(tiny_checkpoint, prepared,
                                                                  tmp_path, monkeypatch):
    """``predict`` keeps each instance's mask inside its paste region (``box_mask_heads``: no
    N × H × W array) and encodes it alone: byte-identical predictions files to mmdet's
    full-size masks, plain, with flip TTA and with soft masks."""
    import contextlib

    from imat_kit.mmdet_ext import box_masks
    from imat_kit.mmdet_ext import predict as pr

    opts = ["model.test_cfg.rcnn.score_thr=0.0"]
    cases = {"plain": {}, "flip": {"tta": "flip"}, "soft": {"soft_size": 14}}
    pasted = []
    real = box_masks.paste_one_by_one
    for name, kw in cases.items():
        files = {}
        for way in ("per_instance", "full_size"):
            if way == "full_size":
                monkeypatch.setattr(pr, "box_mask_heads", contextlib.nullcontext)
            else:
                monkeypatch.setattr(box_masks, "paste_one_by_one",
                                    lambda *a, **k: pasted.append(1) or real(*a, **k))
            files[way] = tmp_path / f"{name}_{way}.jsonl"
            pr.predict(TEST_CONFIGS / "tiny_test.py", tiny_checkpoint, split="val", fold=0,
                       out=files[way], data_root=str(prepared), cfg_options=opts,
                       device="cpu", quiet=True, **kw)
            monkeypatch.undo()
        a, b = (files[w].read_bytes() for w in ("per_instance", "full_size"))
        assert a.count(b"\n") > 2 and b'"masks":["' in a
        assert a == b, name
    assert pasted  # the per-instance paste did run


@pytest.mark.xdist_group("tiny_checkpoint")
@pytest.mark.slow
def test_validation_with_masks_kept_per_instance_gives_the_same_metrics(tiny_checkpoint,
                                                                         prepared, tmp_path):
    """mmdet's test loop under ``IMatRunner`` (which registers ``BoxMasksHook``: masks kept
    per instance, encoded one by one by the kit's metrics) and under mmengine's plain
    ``Runner`` (full-size masks): the same COCO and competition figures."""
    from mmdet.utils import register_all_modules
    from mmengine.runner import Runner

    from imat_kit.mmdet_ext.config import load_config
    from imat_kit.mmdet_ext.hooks import BoxMasksHook
    from imat_kit.mmdet_ext.runner import IMatRunner

    register_all_modules()
    out = {}
    for name, cls in (("per_instance", IMatRunner), ("full_size", Runner)):
        cfg = load_config(TEST_CONFIGS / "tiny_test.py", fold=0, data_root=prepared,
                          options=["model.test_cfg.rcnn.score_thr=0.0",
                                   f"test_evaluator.0.outfile_prefix={tmp_path / name}"])
        cfg.work_dir, cfg.load_from = str(tmp_path / name), str(tiny_checkpoint)
        cfg.default_hooks.logger = dict(type="LoggerHook", interval=50)
        runner = cls.from_cfg(cfg)
        assert any(isinstance(h, BoxMasksHook) for h in runner.hooks) == (cls is IMatRunner)
        out[name] = runner.test()
    assert {"coco/segm_mAP", "imat/competition"} <= set(out["per_instance"])
    assert out["per_instance"] == out["full_size"]
    # every mask the COCO metric scored, the same text
    segm = [json.loads((tmp_path / f"{n}.segm.json").read_text()) for n in out]
    assert len(segm[0]) > 10 and segm[0] == segm[1]


def test_box_masks_hold_each_instance_as_its_region_of_the_full_mask():
    """region_of keeps the rectangle of a full-size map's mask pixels (grown to a soft mask's
    box); BoxMasks hold bool regions packed 8 to a byte and give back exactly the full mask's
    COCO text, crops and mirror image (the text pycocotools writes for the full mask)."""
    import torch

    from imat_kit.mmdet_ext.box_masks import BoxMasks, region_of

    rng = np.random.default_rng(8)
    for it in range(60):
        h, w = int(rng.integers(1, 40)), int(rng.integers(1, 40))
        full = np.zeros((h, w), bool)
        if it % 6:
            y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
            full[y0:int(rng.integers(y0, h)) + 1, x0:int(rng.integers(x0, w)) + 1] = \
                rng.random() < 2
            full &= rng.random((h, w)) < 0.8
        soft = (full * rng.integers(128, 256, (h, w)) + ~full * rng.integers(0, 128, (h, w))
                ).astype(np.uint8)
        bx, by = int(rng.integers(0, w)), int(rng.integers(0, h))  # as box_pixels gives it
        box = (bx, by, int(rng.integers(bx + 1, w + 1)), int(rng.integers(by + 1, h + 1)))
        for m, b in ((full, None), (soft, box)):
            top, left, region = region_of(torch.from_numpy(m), b)
            masks = BoxMasks(h, w, [top], [left], [region])
            thr = 128 if m.dtype == np.uint8 else None
            binary = m >= 128 if thr else m
            want = mask_util.encode(np.asfortranarray(binary.astype(np.uint8)))["counts"].decode()
            assert masks.counts(0, thr) == want
            assert masks.mirrored().counts(0, thr) == mask_util.encode(np.asfortranarray(
                binary[:, ::-1].astype(np.uint8)))["counts"].decode()
            if b is not None:  # a soft mask's box: its probabilities, exactly
                x0, y0, x1, y1 = b
                assert np.array_equal(masks.crop(0, x0, y0, x1, y1), m[y0:y1, x0:x1])
            assert masks[[0]].counts(0, thr) == want
