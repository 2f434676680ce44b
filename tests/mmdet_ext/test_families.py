"""The competition-grade families through the kit: HTC, Cascade Mask R-CNN, RTMDet-Ins,
Mask2Former and YOLACT. Each tiny variant (configs/tiny/) trains a few iterations through
`mim train`, predicts (soft masks, batch-size independent, flip TTA where the masks are
image-sized) and evaluates; the attribute variants give every detection attribute
probabilities; two families fuse into a valid submission; what a family cannot do is refused
before training. (Every shipped config building through the registry is
test_mmdet.test_every_config_builds.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import REPO

TINY = REPO / "configs" / "tiny"
ITERS = 3
#: family -> (tiny config, options that keep every detection of an untrained model); Cascade
#: and HTC through their attribute variants, which run the plain heads and the branch (the plain
#: tiny configs are built by test_mmdet.test_every_config_builds)
FAMILIES = {
    "rtmdet_ins": ("rtmdet_ins_imat", ["model.test_cfg.score_thr=0.0"]),
    "mask2former": ("mask2former_imat", []),
    "yolact": ("yolact_imat", ["model.test_cfg.score_thr=0.0"]),
    "cascade_attr": ("cascade_imat_attr", ["model.test_cfg.rcnn.score_thr=0.0"]),
    "htc_attr": ("htc_imat_attr", ["model.test_cfg.rcnn.score_thr=0.0"]),
}
#: families whose masks are image-sized probabilities of the kit's heads (not 0/255)
SOFT_HEADS = ("rtmdet_ins", "mask2former", "cascade_attr", "htc_attr")


#: dense heads whose untrained scores are near-ties everywhere (see _same_predictions)
NEAR_TIES = ("rtmdet_ins",)


def _same_predictions(p, q, exact: bool) -> None:
    """Batch 1 and batch 3 give the same predictions: exactly (R-CNNs, Mask2Former, YOLACT).
    RTMDet-Ins after 3 iterations scores every point within ~1e-5 of its 0.01 prior, and
    exactly alike over the constant padding; the CPU's batched convolutions differ from
    single-image ones in the last float digits, and torch's top-k orders exact ties by
    layout, enough to swap such near-ties at the cut: there the scores must agree to 1e-4 and
    the same boxes make up most of the kept detections."""
    if exact:
        assert p.to_json() == q.to_json(), (p.image_key, p.scores[:8], q.scores[:8])
        return
    assert len(p.scores) == len(q.scores)
    np.testing.assert_allclose(np.sort(p.scores), np.sort(q.scores), atol=1e-4)
    boxes = {(int(c), *np.round(b, 1)) for c, b in zip(p.labels, p.bboxes)}
    common = sum((int(c), *np.round(b, 1)) in boxes for c, b in zip(q.labels, q.bboxes))
    assert common >= 0.6 * len(p.scores), (common, len(p.scores))


@pytest.fixture(scope="session")
def family_checkpoint(prepared, tmp_path_factory):
    """``get(family)``: the checkpoint of the family's tiny config after ITERS iterations on
    fold 0 (trained once per session, through `mim train` as a user runs it)."""
    root = tmp_path_factory.mktemp("families")
    done: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in done:
            name = FAMILIES[family][0]
            env = {**os.environ, "IMAT_DATA_ROOT": str(prepared) + "/",
                   "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   "PYTHONWARNINGS": "ignore"}
            wd = root / name
            r = subprocess.run(
                [str(Path(sys.executable).parent / "mim"), "train", "mmdet",
                 str(TINY / f"{name}.py"), "--work-dir", str(wd), "--cfg-options",
                 f"train_cfg.max_iters={ITERS}", "train_cfg.val_interval=1000",
                 f"default_hooks.checkpoint.interval={ITERS}",
                 "default_hooks.logger.interval=1", f"param_scheduler.1.end={ITERS}",
                 f"param_scheduler.1.milestones=[{ITERS - 1}]"],
                env=env, capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
            log = next(wd.glob("fold0/*/*.log")).read_text()
            assert f"Iter(train) [{ITERS}/{ITERS}]" in log
            losses = [float(x.split("loss: ")[1].split()[0])
                      for x in log.splitlines() if "Iter(train)" in x]
            assert len(losses) == ITERS and all(np.isfinite(losses)), losses
            done[family] = wd / "fold0" / f"iter_{ITERS}.pth"
        return done[family]

    return get


def _predict(family, ckpt, prepared, out, **kw):
    from imat_kit.mmdet_ext.predict import predict

    name, opts = FAMILIES[family]
    return predict(TINY / f"{name}.py", ckpt, fold=0, out=out, data_root=str(prepared),
                   cfg_options=opts, device="cpu", quiet=True, **kw)


@pytest.mark.xdist_group("families")
@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_tiny_family_trains_predicts_and_evaluates(family, family_checkpoint, prepared,
                                                   tmp_path):
    from imat_kit.data.paths import read_ann
    from imat_kit.eval.evaluate import evaluate_fold
    from imat_kit.predictions import read_header, read_predictions

    ckpt = family_checkpoint(family)
    floor = 1e-9  # keep every attribute probability: each detection must have all of them
    files = {}
    for bs in (1, 3):
        files[bs] = tmp_path / f"val_b{bs}.jsonl"
        _predict(family, ckpt, prepared, files[bs], split="val", batch_size=bs, soft_size=16,
                 attribute_floor=floor)
    preds = read_predictions(files[1])[1]
    batched = read_predictions(files[3])[1]
    for k, p in preds.items():
        _same_predictions(p, batched[k], exact=family not in NEAR_TIES)
    gt = read_ann(prepared, "val", 0)
    assert set(preds) == {im["image_key"] for im in gt["images"]}
    n = sum(len(p.scores) for p in preds.values())
    assert n > 0
    for p in preds.values():
        assert p.soft is not None and p.soft.shape == (len(p.scores), 16, 16)
        assert len(p.masks) == len(p.scores) == len(p.bboxes)
        assert np.all((p.labels >= 0) & (p.labels < 46))
    values = np.unique(np.concatenate([p.soft.ravel() for p in preds.values() if len(p.soft)]))
    if family in SOFT_HEADS:  # probabilities, not a binary mask times 255
        assert not set(values.tolist()) <= {0, 255}, values
    attr_model = family.endswith("_attr")
    assert read_header(files[1])["attribute_model"] is attr_model
    if attr_model:  # every detection: all 92 attribute probabilities
        assert all(len(a) == 92 for p in preds.values() for a in p.attr_probs)
    else:
        assert not any(a for p in preds.values() for a in p.attr_probs)
    row = evaluate_fold(gt, preds)["row"]
    assert 0.0 <= row["segm_AP"] <= 1.0 and 0.0 <= row["competition"] <= 1.0
    assert row["images"] == len(gt["images"])
    if family in ("rtmdet_ins", "mask2former"):  # image-sized masks through flip TTA
        flip = tmp_path / "val_flip.jsonl"
        _predict(family, ckpt, prepared, flip, split="val", batch_size=2, soft_size=16,
                 tta="flip")
        fused = read_predictions(flip)[1]
        assert set(fused) == set(preds)
        assert sum(len(p.scores) for p in fused.values()) >= n


@pytest.mark.xdist_group("families")
@pytest.mark.slow
def test_two_families_fuse_into_a_valid_submission(family_checkpoint, prepared, tmp_path):
    """An HTC fold and a Mask2Former fold (box-based R-CNN masks and image-sized query masks)
    fused by `imat-kit ensemble`, written by `submit`, accepted by `validate`."""
    from imat_kit.cli.commands import main
    from imat_kit.predictions import read_header, read_predictions

    files = []
    for family in ("htc_attr", "mask2former"):  # an attribute model beside one without
        out = tmp_path / f"test_{family}.jsonl"
        _predict(family, family_checkpoint(family), prepared, out, split="test", soft_size=16)
        files.append(out)
    fused = tmp_path / "fused.jsonl"
    assert main(["ensemble", "-q", "--inputs", *map(str, files), "--out", str(fused)]) == 0
    head = read_header(fused)
    assert [Path(i["file"]).name for i in head["inputs"]] == [f.name for f in files]
    assert [Path(i["config"]).stem for i in head["inputs"]] == ["htc_imat_attr", "mask2former_imat"]
    preds = read_predictions(fused)[1]
    assert sum(len(p.scores) for p in preds.values()) > 0
    sub = tmp_path / "submission.csv"
    assert main(["submit", "-q", "--data", str(prepared), "--predictions", str(fused),
                 "--out", str(sub), "--score-thr", "0.0"]) == 0
    assert main(["validate", "-q", "--submission", str(sub), "--data", str(prepared)]) == 0
    assert len(sub.read_text().splitlines()) > 1 + len(preds) - 1


@pytest.mark.xdist_group("families")
@pytest.mark.slow
def test_soft_masks_from_a_binary_only_head_are_refused(family_checkpoint, prepared,
                                                        tmp_path):
    from imat_kit.errors import KitError
    from imat_kit.mmdet_ext.predict import predict

    ckpt = family_checkpoint("rtmdet_ins")
    with pytest.raises(KitError, match="binary masks only"):
        predict(TINY / "rtmdet_ins_imat.py", ckpt, split="val", fold=0,
                out=tmp_path / "v.jsonl", data_root=str(prepared), soft_size=16, quiet=True,
                cfg_options=["model.bbox_head.type=RTMDetInsSepBNHead",
                             "model.test_cfg.score_thr=0.0"])
    assert not (tmp_path / "v.jsonl").exists()


def _cfg(name, prepared):
    from imat_kit.mmdet_ext.config import load_config

    return load_config(REPO / "configs" / name, fold=0, data_root=prepared)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.train_dataloader.dataset.pipeline[1].update(poly2mask=False),
     "poly2mask=False"),
    (lambda c: c.train_dataloader.dataset.pipeline[1].update(with_mask=False),
     "without with_mask"),
    (lambda c: c.train_dataloader.dataset.pipeline.insert(2, dict(type="RandomAffine")),
     "RandomAffine cannot move masks"),
    (lambda c: c.custom_hooks.append(dict(type="PipelineSwitchHook", switch_epoch=1,
                                          switch_pipeline=[dict(type="LoadImageFromFile")])),
     "switch_pipeline loads no annotations"),
    (lambda c: c.model.bbox_head.update(type="RTMDetSepBNHead"), "predicts no masks"),
    (lambda c: c.model.bbox_head.update(num_classes=80), "has 80 classes"),
    (lambda c: c.train_dataloader.dataset.update(attributes=True, num_attributes=92),
     "no attribute branch"),
])
def test_what_rtmdet_cannot_do_is_refused_before_training(change, message, prepared):
    """IMatRunner (what `mim train` builds) refuses the config before it builds anything."""
    from imat_kit.errors import KitError
    from imat_kit.mmdet_ext.runner import IMatRunner

    cfg = _cfg("rtmdet_ins_s_imat.py", prepared)
    change(cfg)
    with pytest.raises(KitError, match=message):
        IMatRunner.from_cfg(cfg)


def test_mask2former_in_panoptic_mode_and_attributes_without_data_are_refused(prepared):
    from imat_kit.errors import KitError
    from imat_kit.mmdet_ext.checks import check_training_config

    cfg = _cfg("mask2former_r50_imat.py", prepared)
    check_training_config(cfg)
    cfg.model.test_cfg.panoptic_on = True
    with pytest.raises(KitError, match="instances only"):
        check_training_config(cfg)
    cfg = _cfg("cascade_maskrcnn_r50_imat_attr.py", prepared)
    check_training_config(cfg)
    cfg.train_dataloader.dataset.attributes = False
    with pytest.raises(KitError, match="loads no attributes"):
        check_training_config(cfg)


@pytest.mark.slow
def test_mim_train_refuses_the_recipe_pipeline_that_drops_rle_masks(prepared, tmp_path):
    """mmdet's own RTMDet-Ins pipeline (poly2mask=False) through `mim train`: a one-line
    reason and a non-zero exit before any iteration, not a run on zero instances."""
    env = {**os.environ, "IMAT_DATA_ROOT": str(prepared) + "/",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONWARNINGS": "ignore"}
    r = subprocess.run(
        [str(Path(sys.executable).parent / "mim"), "train", "mmdet",
         str(TINY / "rtmdet_ins_imat.py"), "--work-dir", str(tmp_path / "wd"),
         "--cfg-options", "train_dataloader.dataset.pipeline.1.poly2mask=False"],
        env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "poly2mask=False" in r.stderr and "Iter(train)" not in r.stdout + r.stderr


def test_imat_kit_train_plans_each_family_and_refuses_before_running(prepared, tmp_path):
    """`imat-kit train` chains no phases for the new families (each trains in one run with its
    own recipe) and refuses a bad config before it starts `mim train`."""
    from imat_kit.errors import KitError
    from imat_kit.mmdet_ext.train import train_folds

    for name in ("htc_x101_dcn_imat.py", "cascade_maskrcnn_r50_imat_attr2020.py",
                 "rtmdet_ins_l_imat.py", "mask2former_r50_imat.py"):
        recs = train_folds(REPO / "configs" / name, [0, 2], work_root=tmp_path,
                           data_root=str(prepared), dry_run=True, quiet=True)
        assert [(r.fold, r.phase, r.status) for r in recs] == \
            [(0, Path(name).stem, "dry run"), (2, Path(name).stem, "dry run")]
        assert recs[1].command[:3] == [str(Path(sys.executable).parent / "mim"), "train",
                                          "mmdet"]
    with pytest.raises(KitError, match="poly2mask=False"):
        train_folds(TINY / "rtmdet_ins_imat.py", [0], work_root=tmp_path,
                    data_root=str(prepared), quiet=True,
                    cfg_options=["train_dataloader.dataset.pipeline.1.poly2mask=False"])
    assert not (tmp_path / "rtmdet_ins_imat").exists()


@pytest.mark.xdist_group("families")
@pytest.mark.slow
@pytest.mark.parametrize("family", ["rtmdet_ins", "mask2former", "yolact"])
def test_masks_made_per_instance_give_the_same_predictions_files(family, family_checkpoint,
                                                                 prepared, tmp_path,
                                                                 monkeypatch):
    """RTMDet-Ins, Mask2Former and YOLACT resize each instance's mask to the original size
    alone and keep its bounding rectangle (``box_mask_heads``: never all masks at that size at
    once): byte-identical predictions files to mmdet's all-at-once masks, plain and with
    soft masks."""
    import contextlib

    from imat_kit.mmdet_ext import box_masks
    from imat_kit.mmdet_ext import predict as pr

    ckpt = family_checkpoint(family)
    made = []
    real = box_masks.region_of
    for name, kw in {"plain": {}, "soft": {"soft_size": 16}}.items():
        files = {}
        for way in ("per_instance", "all_at_once"):
            if way == "all_at_once":
                monkeypatch.setattr(pr, "box_mask_heads", contextlib.nullcontext)
            else:
                monkeypatch.setattr(box_masks, "region_of",
                                    lambda *a, **k: made.append(1) or real(*a, **k))
            files[way] = tmp_path / f"{name}_{way}.jsonl"
            _predict(family, ckpt, prepared, files[way], split="val", batch_size=2, **kw)
            monkeypatch.undo()
        a, b = (files[w].read_bytes() for w in ("per_instance", "all_at_once"))
        assert a.count(b"\n") > 2 and b'"masks":["' in a
        assert a == b, name
    assert made  # the per-instance path did run
