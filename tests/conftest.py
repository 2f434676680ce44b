"""Shared fixtures: one small synthetic dataset per session, and its prepared folds."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# `make test` runs 2 workers on 2 cores: one thread each (and in every training subprocess,
# which inherits it), instead of 2 × 2 OpenMP threads contending for 2 cores
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

from tests.helpers import REPO


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A small synthetic competition dataset (read-only for tests: copy before changing)."""
    from imat_kit.data.synth import generate_images

    out = tmp_path_factory.mktemp("synth") / "data"
    generate_images(out, images=40, test_images=6, seed=3, min_side=96, max_side=160,
                    quiet=True)
    return out


@pytest.fixture()
def synth_copy(synth_dir, tmp_path) -> Path:
    """A private copy of the synthetic dataset that a test may modify."""
    dst = tmp_path / "data"
    shutil.copytree(synth_dir, dst)
    return dst


@pytest.fixture(scope="session")
def prepared(synth_dir, tmp_path_factory) -> Path:
    """The synthetic competition files (linked) with a 3-fold `imat-kit prepare` beside them."""
    from imat_kit.data.prepare import prepare

    out = tmp_path_factory.mktemp("prepared")
    for name in ["train", "test", "train.csv", "sample_submission.csv",
                 "label_descriptions.json"]:
        (out / name).symlink_to(synth_dir / name)
    prepare(out, n_folds=3, seed=0, quiet=True)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(prepared, tmp_path_factory) -> Path:
    """A 6-iteration run of tests/configs/tiny_test.py on fold 0 (checkpoints at 4 and 6)."""
    import os
    import subprocess
    import sys

    wd = tmp_path_factory.mktemp("tiny_ckpt")
    e = {**os.environ, "IMAT_DATA_ROOT": str(prepared) + "/",
         "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([str(Path(sys.executable).parent / "mim"), "train", "mmdet",
                        str(REPO / "tests" / "configs" / "tiny_test.py"), "--work-dir", str(wd),
                        "--cfg-options", "train_cfg.val_interval=100"],
                       env=e, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return wd / "fold0" / "iter_6.pth"


@pytest.fixture(scope="session")
def prepared2020(tmp_path_factory) -> Path:
    """A small synthetic 2020-layout dataset (294 attributes), prepared into 3 folds."""
    from imat_kit.data.prepare import prepare
    from imat_kit.data.synth import generate_images

    out = tmp_path_factory.mktemp("synth2020") / "data"
    generate_images(out, images=30, test_images=4, seed=5, min_side=96, max_side=160,
                    year=2020, quiet=True)
    prepare(out, n_folds=3, seed=0, quiet=True)
    return out


@pytest.fixture()
def prep(prepared):
    """The prepared dataset, under the name the evaluation tests use."""
    return prepared
