"""The MMDetection side: configs, dataset, transforms, checkpoints, training runs (CPU, small)."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import REPO

CONFIGS = sorted((REPO / "configs").glob("*.py")) + sorted((REPO / "configs" / "tiny").glob("*.py"))
TEST_CONFIGS = REPO / "tests" / "configs"


@pytest.fixture()
def env(prepared) -> dict:
    e = dict(os.environ)
    e["IMAT_DATA_ROOT"] = str(prepared) + "/"
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


@pytest.fixture()
def kit_env(env, monkeypatch) -> dict:
    """``env`` set in this process, for ``imat-kit`` run in it (its `mim train` inherits it)."""
    for key in ("IMAT_DATA_ROOT", "PYTHONPATH"):
        monkeypatch.setenv(key, env[key])
    return env


def _cfg(path, prepared, fold=0):
    from mmengine.config import Config

    saved = {k: os.environ.get(k) for k in ("IMAT_DATA_ROOT", "IMAT_FOLD")}
    os.environ["IMAT_DATA_ROOT"] = str(prepared) + "/"
    os.environ["IMAT_FOLD"] = str(fold)
    try:
        return Config.fromfile(str(path))
    finally:  # the environment as it was
        for k, v in saved.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_builds(path, prepared):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from imat_kit.mmdet_ext.checks import check_training_config, model_classes
    from imat_kit.mmdet_ext.config import is_attribute_model
    from imat_kit.mmdet_ext.runner import fold_work_dir

    register_all_modules()
    cfg = _cfg(path, prepared, fold=2)
    model = MODELS.build(cfg.model)
    classes = model_classes(cfg.model)  # every classifying head, each stage of a cascade
    assert classes and all(n == 46 for _, n in classes), classes
    built = [m.num_classes for m in model.modules()  # (the RPN's one class: object or not)
             if isinstance(getattr(m, "num_classes", None), int) and type(m).__name__ != "RPNHead"]
    assert built and set(built) == {46}, built
    check_training_config(cfg)  # nothing the kit refuses before training
    dataset = cfg.train_dataloader.dataset
    if is_attribute_model(cfg):  # the branch's label space is the dataset's
        assert dataset.attributes is True
        assert model.roi_head.attribute_head.num_attributes == dataset.num_attributes
        assert dataset.num_attributes == (294 if "2020" in path.stem else 92)
    else:
        assert not dataset.get("attributes", False)
    assert cfg.train_dataloader.dataset.type == "IMatDataset"
    assert str(cfg.train_dataloader.dataset.fold) == "2"
    # COCO AP and the competition score, of the same fold; the best checkpoint kept by the
    # score of the data's year
    assert [e.type for e in cfg.val_evaluator] == ["IMatCocoMetric", "IMatCompetitionMetric"]
    assert all(e.ann_file.endswith("annotations/fold2_val.json") for e in cfg.val_evaluator)
    assert cfg.default_hooks.checkpoint.save_best == (
        "imat/competition2020" if "2020" in path.stem else "imat/competition")
    # one source: the work dir (per fold) and phase 2's checkpoint come from IMatRunner
    assert cfg.runner_type == "IMatRunner" and "work_dir" not in cfg
    assert fold_work_dir(f"work_dirs/{path.stem}", cfg.fold) == f"work_dirs/{path.stem}/fold2"
    text = path.read_text()
    assert "num_classes=46" not in text.replace(" ", "") and "epoch_" not in text
    if cfg.get("imat_previous_phase"):  # phase 2: starts from phase 1's run on the same fold
        assert cfg.load_from == "imat:previous-phase"
        assert (path.parent / cfg.imat_previous_phase).is_file()
    elif path.stem.startswith("tiny_") or path.parent.name == "tiny":
        assert cfg.load_from is None  # from scratch: no download
    else:
        assert str(cfg.load_from).startswith("https://download.openmmlab.com/")
    if cfg.get("imat_next_phase") or cfg.get("imat_previous_phase"):
        assert "paramwise_cfg" not in cfg.optim_wrapper  # would drop frozen params


def test_dataset_splits(prepared):
    from mmdet.utils import register_all_modules

    from imat_kit.mmdet_ext import IMAT_CLASSES, IMatDataset

    register_all_modules()
    folds = __import__("pandas").read_csv(prepared / "folds.csv")
    val = IMatDataset(data_root=str(prepared), fold=1, split="val", test_mode=True,
                      pipeline=[])
    assert len(val) == int((folds.fold == 1).sum())
    assert val.metainfo["classes"] == IMAT_CLASSES and len(IMAT_CLASSES) == 46
    tr = IMatDataset(data_root=str(prepared), fold=1, split="train", pipeline=[],
                     filter_cfg=dict(filter_empty_gt=True))
    assert len(tr) == int((folds.fold != 1).sum())
    item = tr[0]
    assert item["img_path"].startswith(str(prepared / "train"))
    assert all(0 <= inst["bbox_label"] < 46 for inst in item["instances"])
    test = IMatDataset(data_root=str(prepared), split="test", pipeline=[])
    assert len(test) == 6 and test[0]["img_path"].startswith(str(prepared / "test"))
    with pytest.raises(ValueError, match="split must be one of"):
        IMatDataset(data_root=str(prepared), split="holdout", pipeline=[])


def test_seed_augmentation_keeps_masks_in_boxes(prepared):
    from mmdet.utils import register_all_modules
    from mmengine.dataset import Compose
    from mmengine.registry import init_default_scope

    from imat_kit.mmdet_ext import IMatDataset

    register_all_modules()
    init_default_scope("mmdet")
    cfg = _cfg(REPO / "configs" / "maskrcnn_r50_imat_all.py", prepared)
    pipeline = Compose(cfg.train_pipeline_aug[:-1])  # all but PackDetInputs
    ds = IMatDataset(data_root=str(prepared), fold=0, split="train", pipeline=[])
    rng_state = np.random.get_state()
    np.random.seed(0)
    seen = kept = 0
    try:
        for _ in range(3):
            for i in range(len(ds)):
                out = pipeline(ds[i])
                if out is None:
                    continue
                masks, boxes = out["gt_masks"], out["gt_bboxes"].tensor.numpy()
                assert len(masks) == len(boxes) == len(out["gt_bboxes_labels"])
                areas = np.asarray(masks.areas)
                assert (areas > 0).all(), "an empty-after-crop instance was not dropped"
                tight = masks.get_bboxes(type(out["gt_bboxes"])).tensor.numpy()
                # one pixel of resize rounding, and float32's last digits (240.99998 + 1)
                assert (tight[:, :2] >= boxes[:, :2] - 1 - 1e-3).all()
                assert (tight[:, 2:] <= boxes[:, 2:] + 1 + 1e-3).all()
                h, w = out["img"].shape[:2]
                assert masks.height == h and masks.width == w
                seen += 1
                kept += len(masks)
    finally:
        np.random.set_state(rng_state)
    assert seen > 50 and kept > 100


def test_recompute_bbox_drops_empty_masks():
    from mmdet.structures.bbox import HorizontalBoxes
    from mmdet.structures.mask import BitmapMasks

    from imat_kit.mmdet_ext import RecomputeBBoxFromMasks

    m = np.zeros((3, 10, 12), np.uint8)
    m[0, 2:5, 3:9] = 1
    m[2, 0, 0] = 1
    res = RecomputeBBoxFromMasks()({
        "gt_masks": BitmapMasks(m, 10, 12),
        "gt_bboxes": HorizontalBoxes(torch.tensor([[0, 0, 12, 10]] * 3, dtype=torch.float32)),
        "gt_bboxes_labels": np.array([4, 5, 6]), "gt_ignore_flags": np.zeros(3, bool)})
    assert res["gt_bboxes_labels"].tolist() == [4, 6]
    assert res["gt_bboxes"].tensor.tolist() == [[3, 2, 9, 5], [0, 0, 1, 1]]


def test_runner_checkpoint_loads_with_weights_only(tmp_path):
    from mmengine.logging import HistoryBuffer

    import imat_kit.mmdet_ext  # noqa: F401

    buf = HistoryBuffer()
    buf.update(np.float64(1.5))
    ckpt = {"meta": {"eta": np.float64(3.0), "seed": np.int64(1)},
            "message_hub": {"log_scalars": {"loss": buf}},
            "state_dict": {"w": torch.ones(2)}}
    path = tmp_path / "c.pth"
    torch.save(ckpt, path)
    back = torch.load(path)  # weights_only=True is torch's default
    assert back["message_hub"]["log_scalars"]["loss"].mean() == 1.5


@pytest.mark.slow
def test_80_class_checkpoint_into_46_class_model(tmp_path, prepared):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.runner import load_checkpoint

    import imat_kit.mmdet_ext  # noqa: F401

    register_all_modules()
    cfg = _cfg(REPO / "configs" / "maskrcnn_r50_imat.py", prepared)
    coco_cfg = copy.deepcopy(cfg.model)
    coco_cfg.roi_head.bbox_head.num_classes = 80
    coco_cfg.roi_head.mask_head.num_classes = 80
    torch.manual_seed(0)
    coco = MODELS.build(coco_cfg)
    path = tmp_path / "coco.pth"
    torch.save({"meta": {}, "state_dict": coco.state_dict()}, path)
    torch.manual_seed(1)
    model = MODELS.build(cfg.model)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    load_checkpoint(model, str(path), map_location="cpu", strict=False)
    sd, src = model.state_dict(), coco.state_dict()
    assert sd["roi_head.bbox_head.fc_cls.weight"].shape == (47, 1024)
    for k in ["roi_head.bbox_head.fc_cls.weight", "roi_head.bbox_head.fc_reg.weight",
              "roi_head.mask_head.conv_logits.weight"]:
        assert torch.equal(sd[k], fresh[k])  # class-specific: kept fresh
    for k in ["backbone.layer3.0.conv1.weight", "neck.fpn_convs.0.conv.weight",
              "roi_head.bbox_head.shared_fcs.0.weight", "rpn_head.rpn_conv.weight"]:
        assert torch.equal(sd[k], src[k])  # everything else copied


def test_offline_url_fails_fast_and_cache_is_used(tmp_path, monkeypatch):
    from mmengine.runner.checkpoint import CheckpointLoader

    from imat_kit.mmdet_ext import checkpoint as ck

    url = "https://download.openmmlab.com/mmdetection/v2.0/x/some_model_1234.pth"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(ck, "_reachable", lambda u, timeout=5.0: False)  # no traffic in tests
    t = time.perf_counter()
    with pytest.raises(ck.OfflineCheckpointError, match="load_from=None"):
        CheckpointLoader.load_checkpoint(url, map_location="cpu")
    assert time.perf_counter() - t < 5
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.zeros(1)}}, cache / "some_model_1234.pth")
    assert "state_dict" in CheckpointLoader.load_checkpoint(url, map_location="cpu")


def _scalars(work_dir: Path) -> list[dict]:
    files = sorted(work_dir.glob("*/vis_data/scalars.json"))
    return [json.loads(line) for f in files for line in f.read_text().splitlines()]


def _main(capsys, *args):
    """``imat-kit ARGS`` in this process (mmdet is imported once): exit code, stdout, stderr."""
    from types import SimpleNamespace

    from imat_kit.cli.commands import main

    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


@pytest.mark.usefixtures("kit_env")
@pytest.mark.slow
def test_save_best_keeps_the_checkpoint_of_the_best_competition_score(tmp_path, prepared,
                                                                       capsys):
    """Validation every 2 iterations: the checkpoint kept as best is the one of the first
    validation with the highest ``imat/competition`` (what the configs select by)."""
    r = _main(capsys, "train", str(TEST_CONFIGS / "tiny_test.py"), "--folds", "0",
              "--work-root", str(tmp_path), "-q", "--cfg-options", "train_cfg.val_interval=2")
    assert r.returncode == 0, r.stderr[-3000:]
    wd = tmp_path / "tiny_test" / "fold0"
    scores = [x["imat/competition"] for x in _scalars(wd) if "imat/competition" in x]
    assert len(scores) == 3  # at iterations 2, 4 and 6, in order
    best = 2 * (int(np.argmax(scores)) + 1)
    assert [p.name for p in wd.glob("best_imat_competition_iter_*.pth")] == \
        [f"best_imat_competition_iter_{best}.pth"]


def _kit(*args, env, timeout=600):
    return subprocess.run([sys.executable, "-m", "imat_kit.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.mark.usefixtures("kit_env")
@pytest.mark.slow
def test_train_tiny_then_skip_finished(tmp_path, env, prepared, capsys):
    """`imat-kit train` in this process (it runs `mim train` for each phase, as for a user)."""
    r = _main(capsys, "train", str(TEST_CONFIGS / "tiny_test.py"), "--folds", "0,1", "--work-root",
             str(tmp_path), "--tensorboard", "-q")
    assert r.returncode == 0, r.stderr[-3000:]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((tmp_path / "tiny_test" / "fold0").glob("*/vis_data/events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(events[0]))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss", "lr", "coco/segm_mAP", "val_loss"} <= tags, tags
    assert len(acc.Scalars("loss")) == 6
    for k in (0, 1):
        wd = tmp_path / "tiny_test" / f"fold{k}"
        done = json.loads((wd / "imat_done.json").read_text())
        assert done["checkpoint"].endswith("iter_6.pth")
        s = _scalars(wd)
        assert [x["iter"] for x in s if "loss" in x and "coco/segm_mAP" not in x] == \
            list(range(1, 7))
        val = [x for x in s if "coco/segm_mAP" in x]
        assert len(val) == 1 and val[0]["val_loss"] > 0 and "val_loss_mask" in val[0]
        assert 0 <= val[0]["imat/competition"] <= 1  # the competition score, logged
        assert list(wd.glob("best_imat_competition_iter_*.pth"))
    r = _main(capsys, "train", str(TEST_CONFIGS / "tiny_test.py"), "--folds", "0,1", "--work-root",
             str(tmp_path), "--tensorboard")
    assert r.returncode == 0 and r.stdout.count("skipped (finished)") == 2
    # other settings: never a silent skip or resume of the old run
    more = ["--cfg-options", "train_cfg.max_iters=8", "param_scheduler.1.end=8"]
    r = _main(capsys, "train", str(TEST_CONFIGS / "tiny_test.py"), "--folds", "0", "--work-root",
             str(tmp_path), *more)
    assert r.returncode == 2, r.stdout[-2000:]
    assert "train_cfg.max_iters: was 6, now 8" in r.stderr and "--overwrite" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = _main(capsys, "train", str(TEST_CONFIGS / "tiny_test.py"), "--folds", "0", "--work-root",
             str(tmp_path), *more, "--overwrite")
    assert r.returncode == 0, r.stderr[-3000:]
    # the terminal: the decisions and a progress bar; mmengine's output is in the run's log
    log = tmp_path / "tiny_test" / "fold0" / "train.log"
    assert f"its output → {log}" in r.stdout and "--overwrite: deleting" in r.stdout
    assert "Iter(train)" not in r.stdout + r.stderr and "Config:" not in r.stdout + r.stderr
    assert "fold 0 tiny_test" in r.stderr and "loss" in r.stderr  # the bar (tqdm on stderr)
    assert "Iter(train) [8/8]" in log.read_text()
    done0 = json.loads((tmp_path / "tiny_test" / "fold0" / "imat_done.json").read_text())
    assert done0["checkpoint"].endswith("iter_8.pth")
    runs = [d for d in (tmp_path / "tiny_test" / "fold0").iterdir() if d.is_dir()]
    assert len(runs) == 1  # the old run (its own timestamped log folder) is gone
    record = json.loads((tmp_path / "tiny_test" / "fold0" / "imat_run.json").read_text())
    assert record["settings"]["train_cfg.max_iters"] == 8
    # a runner checkpoint (message hub, numpy scalars) loads in `mim test` under torch's
    # weights_only default, with no environment variable
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in env
    ckpt = json.loads((tmp_path / "tiny_test" / "fold0" / "imat_done.json").read_text())
    t = subprocess.run([str(Path(sys.executable).parent / "mim"), "test", "mmdet",
                        str(TEST_CONFIGS / "tiny_test.py"), "--checkpoint", ckpt["checkpoint"],
                        "--work-dir", str(tmp_path / "test")], env=env, capture_output=True,
                       text=True, timeout=600)
    assert t.returncode == 0, (t.stdout + t.stderr)[-3000:]
    assert "coco/segm_mAP" in t.stdout + t.stderr


def test_training_progress_is_read_from_mmengine_lines():
    from imat_kit.mmdet_ext.train import training_progress

    line = ("2026/12/01 11:47:33 - mmengine - INFO - Iter(train) [ 20/360]  lr: 6.6e-05  "
            "eta: 0:03:16  loss: 5.6240  loss_rpn_cls: 0.6779")
    assert training_progress(line, None) == (20, 360)
    line = "… - Epoch(train)  [3][ 50/500]  lr: 2.0e-02  loss: 1.2"
    assert training_progress(line, 12) == (1050, 6000)
    assert training_progress("… - Epoch(val) [3][ 10/100]  eta: 0:00:05", 12) is None
    assert training_progress("Config:", None) is None


@pytest.mark.usefixtures("kit_env")
@pytest.mark.slow
def test_a_failed_training_run_shows_the_end_of_its_log(tmp_path, capsys):
    r = _main(capsys, "train", str(TEST_CONFIGS / "tiny_test.py"), "--folds", "0", "--work-root",
             str(tmp_path), "--cfg-options", "model.type=NoSuchDetector")
    log = tmp_path / "tiny_test" / "fold0" / "train.log"
    assert r.returncode == 2, r.stdout[-2000:]
    assert f"the end of its log ({log})" in r.stderr
    assert "NoSuchDetector" in r.stderr and "NoSuchDetector" in log.read_text()
    assert "Re-run the same command to resume" in r.stderr
    # --verbose: the same output live, on the terminal
    r = _main(capsys, "train", str(TEST_CONFIGS / "tiny_test.py"), "--folds", "0", "--work-root",
             str(tmp_path), "--cfg-options", "model.type=NoSuchDetector", "--verbose")
    assert r.returncode == 2 and "NoSuchDetector" in r.stdout


@pytest.mark.slow
def test_yolact_trains_a_few_iterations(tmp_path, env):
    wd = tmp_path / "fold0"
    r = subprocess.run(
        [str(Path(sys.executable).parent / "mim"), "train", "mmdet",
         str(REPO / "configs" / "yolact_r50_imat.py"), "--work-dir", str(wd),
         "--cfg-options", "load_from=None", "train_dataloader.batch_size=2",
         "train_dataloader.num_workers=0", "train_dataloader.persistent_workers=False",
         "val_dataloader.num_workers=0", "val_dataloader.persistent_workers=False",
         "train_cfg.max_epochs=1", "default_hooks.logger.interval=1",
         "train_dataloader.dataset.indices=4", "val_dataloader.dataset.indices=2"],
        env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    s = _scalars(wd)
    losses = [x["loss"] for x in s if "loss" in x]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert (wd / "epoch_1.pth").exists()


def scheduled_lrs(config: Path, options: dict, iters: int) -> dict[int, float]:
    """The learning rate of each iteration (1-based) of an uninterrupted run: the config's
    schedulers stepped on a one-parameter optimizer, as mmengine's runner steps them."""
    import mmengine.optim  # noqa: F401  (registers the schedulers)
    from mmengine.config import Config
    from mmengine.registry import PARAM_SCHEDULERS

    cfg = Config.fromfile(str(config))
    cfg.merge_from_dict(options)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.optim_wrapper.optimizer.lr)
    schedulers = [PARAM_SCHEDULERS.build(dict(s, optimizer=opt)) for s in cfg.param_scheduler]
    lrs = {}
    for it in range(1, iters + 1):
        lrs[it] = opt.param_groups[0]["lr"]
        opt.step()
        for s in schedulers:
            s.step()
    return lrs


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path, env):
    cfg = TEST_CONFIGS / "tiny_test.py"
    options = {"train_cfg.max_iters": 10, "train_cfg.val_interval": 10,
               "param_scheduler.1.end": 10, "param_scheduler.1.milestones": [7]}
    opts = ["--cfg-options", *(f"{k}={v}".replace(" ", "") for k, v in options.items())]
    wd = tmp_path / "killed" / "fold0"  # IMatRunner keeps a work dir that ends in the fold
    cmd = [str(Path(sys.executable).parent / "mim"), "train", "mmdet", str(cfg), "--work-dir",
           str(wd), *opts]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    deadline = time.time() + 300
    while not (wd / "iter_4.pth").exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    os.killpg(p.pid, signal.SIGKILL)  # mid-run, after the iteration-4 checkpoint
    p.wait()
    assert not (wd / "iter_10.pth").exists()
    r = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    log = "".join(f.read_text() for f in wd.glob("*/*.log"))
    assert "resumed" in log.lower()
    got = {x["iter"]: x for x in _scalars(wd) if "loss" in x and "coco/bbox_mAP" not in x}
    want = scheduled_lrs(cfg, options, 10)  # what an uninterrupted run logs
    assert max(got) == 10 and (wd / "iter_10.pth").exists()
    for it in range(5, 11):  # the schedule continues where it stopped
        assert got[it]["lr"] == pytest.approx(want[it]), it
    assert want[10] == pytest.approx(want[6] * 0.1)


@pytest.mark.usefixtures("kit_env")
@pytest.mark.slow
def test_two_phases_on_two_cpu_processes(tmp_path, capsys):
    r = _main(capsys, "train", str(TEST_CONFIGS / "two_phase_test.py"), "--folds", "0",
              "--launcher", "pytorch", "--gpus", "2", "--work-root", str(tmp_path))
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    heads, all_ = tmp_path / "two_phase_test" / "fold0", tmp_path / "two_phase_all_test" / "fold0"
    d = {(ph, k): json.loads((wd / f"digest_rank{k}.json").read_text())
         for ph, wd in [("heads", heads), ("all", all_)] for k in (0, 1)}
    for k in (0, 1):
        # phase 1: backbone fixed, heads trained
        assert d["heads", k]["start"]["backbone"] == d["heads", k]["end"]["backbone"]
        assert d["heads", k]["start"]["roi_head"] != d["heads", k]["end"]["roi_head"]
        # phase 2 starts from phase 1's weights and changes the backbone
        assert d["all", k]["start"] == d["heads", k]["end"]
        assert d["all", k]["end"]["backbone"] != d["all", k]["start"]["backbone"]
    assert d["all", 0]["end"] == d["all", 1]["end"]  # replicas identical after phase 2
    assert d["heads", 0]["end"] == d["heads", 1]["end"]


@pytest.mark.usefixtures("kit_env")
@pytest.mark.slow
def test_r50_recipe_both_phases_from_cached_coco_weights(tmp_path, prepared, capsys,
                                                         monkeypatch):
    """The R50 config as written (COCO weights from its URL, here served from the torch hub
    cache without network: an 80-class checkpoint), both phases chained, one tiny epoch each."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import imat_kit.mmdet_ext  # noqa: F401

    register_all_modules()
    cfg = _cfg(REPO / "configs" / "maskrcnn_r50_imat.py", prepared)
    coco = copy.deepcopy(cfg.model)
    coco.roi_head.bbox_head.num_classes = coco.roi_head.mask_head.num_classes = 80
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save({"meta": {}, "state_dict": MODELS.build(coco).state_dict()},
               hub / Path(cfg.load_from).name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    r = _main(capsys, "train", str(REPO / "configs" / "maskrcnn_r50_imat.py"), "--folds", "1",
              "--work-root", str(tmp_path / "wd"), "--cfg-options", "train_cfg.max_epochs=1",
              "train_dataloader.dataset.indices=2", "val_dataloader.dataset.indices=1",
              "train_dataloader.num_workers=0", "train_dataloader.persistent_workers=False",
              "val_dataloader.num_workers=0", "val_dataloader.persistent_workers=False")
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    heads = tmp_path / "wd" / "maskrcnn_r50_imat" / "fold1"
    all_ = tmp_path / "wd" / "maskrcnn_r50_imat_all" / "fold1"
    log1 = "".join(f.read_text() for f in heads.glob("*/*.log"))
    out = (heads / "train.log").read_text()  # mmengine's output, kept in the run's log
    # 81 → 47 rows: the class-dependent layers stay fresh, named in IMatRunner's one line
    assert ("re-initialised (not in the checkpoint, or another shape): roi_head.bbox_head."
            "fc_cls, roi_head.bbox_head.fc_reg, roi_head.mask_head.conv_logits;") in out
    assert f"Load checkpoint from {cfg.load_from}" in log1
    assert "annotations/fold1_val.json" in log1
    log2 = "".join(f.read_text() for f in all_.glob("*/*.log"))
    assert f"Load checkpoint from {heads}/epoch_1.pth" in log2
    assert json.loads((all_ / "imat_done.json").read_text())["checkpoint"].endswith("epoch_1.pth")


@pytest.mark.xdist_group("tiny_checkpoint")
@pytest.mark.slow
def test_predict_resumes_and_flip_tta(tiny_checkpoint, prepared, tmp_path, env, capsys):
    """In this process (one subprocess checks the terminal of a real `imat-kit predict`)."""
    from imat_kit.predictions import read_predictions

    out = tmp_path / "val.jsonl"
    base = ["predict", str(TEST_CONFIGS / "tiny_test.py"), str(tiny_checkpoint), "--split",
            "val", "--fold", "0", "--data-root", str(prepared), "--cfg-options",
            "model.test_cfg.rcnn.score_thr=0.0", "-q"]
    r = _main(capsys, *base, "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    val = json.loads((prepared / "annotations" / "fold0_val.json").read_text())["images"]
    head, preds = read_predictions(out)
    assert head["split"] == "val" and head["fold"] == 0
    assert [p for p in preds] == [im["image_key"] for im in val]
    p = next(iter(preds.values()))
    assert len(p) > 0 and (p.labels < 46).all()
    from pycocotools import mask as mask_util
    assert mask_util.decode(p.rles()[0]).shape == (p.height, p.width)
    # resume: keep the header and the first image, tear the next line
    lines = out.read_text().splitlines(keepends=True)
    partial = tmp_path / "again.jsonl.partial"
    partial.write_text(lines[0] + lines[1] + lines[2][:40])
    r = _main(capsys, *base, "--out", str(tmp_path / "again.jsonl"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"({len(val) - 1} predicted now)" in r.stdout
    assert not partial.exists()
    assert read_predictions(tmp_path / "again.jsonl")[1].keys() == preds.keys()
    r = _main(capsys, *base, "--out", str(tmp_path / "again.jsonl"))  # all there already
    assert r.returncode == 0 and "(0 predicted now)" in r.stdout
    # a resumed file is the file an uninterrupted run writes, and so is any batch size's
    assert (tmp_path / "again.jsonl").read_bytes() == out.read_bytes()
    for bs in ("1", "4"):
        run = (lambda *a: _kit(*a, env=env)) if bs == "1" else (lambda *a: _main(capsys, *a))
        r = run(*base, "--batch-size", bs, "--out", str(tmp_path / f"b{bs}.jsonl"))
        assert r.returncode == 0 and r.stderr == "", r.stderr[-3000:]  # no third-party noise
        assert r.stdout.strip().splitlines() == [f"{len(val)} images ({len(val)} predicted now)"
                                                 f" → {tmp_path / f'b{bs}.jsonl'}"]
        assert (tmp_path / f"b{bs}.jsonl").read_bytes() == out.read_bytes(), bs
    # --folds: each fold with its own model, {fold} in the checkpoint path and in --out: the
    # same file as --fold; without {fold} in --out, refused before anything runs
    per_fold = str(tiny_checkpoint.parent.parent / "fold{fold}" / tiny_checkpoint.name)
    folds = ["predict", base[1], per_fold, *base[3:5], "--folds", "0", *base[7:]]
    r = _main(capsys, *folds, "--out", str(tmp_path / "f{fold}.jsonl"))
    assert r.returncode == 0 and r.stdout.startswith("fold 0: "), r.stderr[-3000:]
    assert (tmp_path / "f0.jsonl").read_bytes() == out.read_bytes()
    r = _main(capsys, *folds, "--out", str(tmp_path / "f.jsonl"))
    assert r.returncode == 2 and "--folds needs {fold} in --out" in r.stderr
    assert not (tmp_path / "f.jsonl").exists()
    # never silently stale: another checkpoint, TTA or config value stops with what differs
    other = tiny_checkpoint.with_name("iter_4.pth")
    again = str(tmp_path / "again.jsonl")
    r = _main(capsys, *base[:2], str(other), *base[3:], "--out", again)
    assert r.returncode == 2 and "checkpoint_sha256: was" in r.stderr and "--overwrite" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = _main(capsys, *base, "--tta", "flip", "--out", again)
    assert r.returncode == 2 and "tta: was None, now 'flip'" in r.stderr
    r = _main(capsys, *base[:-2], "model.test_cfg.rcnn.score_thr=0.05", "-q", "--out", again)
    assert r.returncode == 2 and "config_sha256: was" in r.stderr
    r = _main(capsys, *base[:2], str(other), *base[3:], "--out", again, "--overwrite")
    assert r.returncode == 0 and f"({len(val)} predicted now)" in r.stdout
    from imat_kit.files import file_fingerprint

    assert read_predictions(again)[0]["checkpoint_sha256"] == file_fingerprint(other)["sha256"]
    # flip TTA on the test split
    r = _main(capsys, *base[:3], "--split", "test", "--data-root", str(prepared), "--tta", "flip",
             "--soft-size", "14", "--out", str(tmp_path / "test.jsonl"), "--cfg-options",
             "model.test_cfg.rcnn.score_thr=0.0", "-q")
    assert r.returncode == 0, r.stderr[-3000:]
    head, test = read_predictions(tmp_path / "test.jsonl")
    assert head["tta"] == "flip" and head["soft_size"] == 14 and len(test) == 6
    p = next(p for p in test.values() if len(p))
    assert p.soft.shape == (len(p), 14, 14) and p.soft.max() > 128
