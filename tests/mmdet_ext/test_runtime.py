"""Importing the MMDetection extension changes nothing in the process; ``setup_runtime`` makes
the run's changes, once; ``--cfg-options imat_fold=K`` moves a config to fold K."""

import subprocess
import sys

import pytest

from tests.helpers import REPO

SNAPSHOT = """
import torch, mmengine.runner.checkpoint as ck
def state():
    g = torch.serialization.get_safe_globals() if hasattr(torch.serialization,
        'get_safe_globals') else []
    return (torch.cuda.set_device, dict(ck.CheckpointLoader._schemes), list(g))
before = state()
import imat_kit.mmdet_ext
from mmengine.config import Config
Config.fromfile('{config}')
after_import = state()
from imat_kit.mmdet_ext.runtime import setup_runtime
setup_runtime()
after_setup = state()
setup_runtime()
print(before == after_import, after_setup != before, after_setup == state())
print(ck.CheckpointLoader._schemes['https://'] is before[1]['https://'],
      len(after_setup[2]) > len(before[2]))
"""


def test_importing_the_extension_changes_nothing_until_setup_runtime():
    config = REPO / "imat_kit" / "configs" / "tiny_maskrcnn_imat.py"
    r = subprocess.run([sys.executable, "-c", SNAPSHOT.format(config=config)],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    unchanged, changed, idempotent = r.stdout.split()[:3]
    loader_kept, globals_added = r.stdout.split()[3:5]
    assert (unchanged, changed, idempotent) == ("True", "True", "True")
    assert (loader_kept, globals_added) == ("False", "True")


def test_the_runner_sets_up_the_runtime(monkeypatch):
    from imat_kit.mmdet_ext import runner

    calls = []
    monkeypatch.setattr(runner, "setup_runtime", lambda: calls.append(1))
    with pytest.raises(Exception):  # noqa: B017  (an empty config: mmengine refuses it)
        runner.IMatRunner.from_cfg(__import__("mmengine").Config(dict()))
    assert calls


def test_imat_fold_moves_datasets_and_metrics(tmp_path, monkeypatch):
    from imat_kit.errors import KitError
    from imat_kit.mmdet_ext.config import load_config

    monkeypatch.delenv("IMAT_FOLD", raising=False)
    config = REPO / "imat_kit" / "configs" / "tiny_maskrcnn_imat.py"
    plain = load_config(config, data_root=tmp_path)
    moved = load_config(config, data_root=tmp_path, options=["imat_fold=3"])
    assert plain.fold in (0, "0")
    assert moved.fold == 3
    assert moved.train_dataloader.dataset.fold == moved.val_dataloader.dataset.fold == 3
    files = [e["ann_file"] for e in moved.val_evaluator]
    assert files and all(f.endswith("annotations/fold3_val.json") for f in files)
    assert [e["ann_file"] for e in plain.val_evaluator] == [
        f.replace("fold3", "fold0") for f in files]
    assert load_config(config, fold=3, data_root=tmp_path).to_dict()["val_evaluator"] == \
        moved.to_dict()["val_evaluator"]
    with pytest.raises(KitError, match="imat_fold"):
        load_config(config, fold=1, options=["imat_fold=2"])
    with pytest.raises(KitError, match="fold number"):
        load_config(config, options=["imat_fold=x"])


def test_mim_trains_the_fold_of_cfg_options(tmp_path, monkeypatch):
    """What ``mim train CONFIG --cfg-options imat_fold=2`` builds: IMatRunner's work dir, the
    datasets and the evaluators of fold 2."""
    from mmengine.config import Config

    import imat_kit.mmdet_ext  # noqa: F401  (as the config's custom_imports does)
    from imat_kit.mmdet_ext.runner import IMatRunner

    monkeypatch.delenv("IMAT_FOLD", raising=False)
    cfg = Config.fromfile(str(REPO / "imat_kit" / "configs" / "tiny_maskrcnn_imat.py"))
    cfg.merge_from_dict({"imat_fold": 2, "load_from": None, "work_dir": str(tmp_path)})
    runner = IMatRunner.from_cfg(cfg)
    assert runner.work_dir == str(tmp_path / "fold2")
    assert runner.cfg.train_dataloader.dataset.fold == 2
    assert all(e["ann_file"].endswith("fold2_val.json") for e in runner.cfg.val_evaluator)
