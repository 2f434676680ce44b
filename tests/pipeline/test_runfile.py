"""`imat-kit run`'s inputs: the run file (every error located by file, line and value, nothing
written) and the command line's options."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from imat_kit.cli.commands import main
from imat_kit.errors import KitError
from imat_kit.pipeline.runfile import read_run_file
from imat_kit.pipeline.spec import parse_gpus, spec_from_options
from tests.helpers import REPO

TINY = REPO / "tests" / "configs" / "tiny_test_attr.py"


def _file(tmp_path: Path, text: str) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    p = tmp_path / "run.yaml"
    p.write_text(text)
    return p


GOOD = f"""\
data: data
out: runs/a
folds: [0, 1]
seed: 3
gpus: 0,1
models:
  - {TINY}
  - config: {TINY}
    name: flipped
    tta: flip
    tta_scales: [0.9, 1.1]
    checkpoints: 2
    soft_size: 28
    weight: 2
    cfg_options: [train_cfg.max_iters=4]
ensemble: {{iou: 0.6}}
tune: {{rescore: false, min_support: 5}}
"""


def test_a_run_file_becomes_the_spec_with_paths_from_its_folder(tmp_path):
    spec = read_run_file(_file(tmp_path, GOOD))
    assert spec.data == tmp_path / "data" and spec.out == tmp_path / "runs" / "a"
    assert spec.folds == (0, 1) and spec.seed == 3 and spec.gpus == ("0", "1")
    a, b = spec.models
    assert a.name == "tiny_test_attr" and a.tta is None and a.checkpoints == 1
    assert (b.name, b.tta, b.tta_scales, b.checkpoints, b.soft_size, b.weight) == (
        "flipped", "flip", (0.9, 1.1), 2, 28, 2.0)
    assert b.cfg_options == ("train_cfg.max_iters=4",)
    assert spec.ensemble_iou == 0.6 and spec.tune_rescore is False
    assert spec.tune_min_support == 5
    assert spec.submission_path == spec.out / "submission.csv"
    assert not (tmp_path / "runs").exists()  # reading writes nothing


@pytest.mark.parametrize("edit, line, message, value", [
    (("seed: 3", "seed: three"), 4, "seed must be a whole number", "three"),
    (("folds: [0, 1]", "folds: [0, -1]"), 3, "folds must be a list", "[0, -1]"),
    (("ensemble: {iou: 0.6}", "ensemble: {iuo: 0.6}"), 16, "unknown key in ensemble", "iuo"),
    (("seed: 3", "sede: 3"), 4, "unknown key", "sede"),
    (("    tta: flip", "    tta: mirror"), 10, "tta must be one of", "mirror"),
    (("    checkpoints: 2", "    checkpoints: 0"), 12, "checkpoints must be at least 1", "0"),
    (("    name: flipped", "    name: tiny_test_attr"), 9, "two models are named",
     "tiny_test_attr"),
    (("gpus: 0,1", "gpus: 0,x"), 5, "gpus takes GPU ids", "0,x"),
    (("    cfg_options: [train_cfg.max_iters=4]", "    cfg_options: [max_iters]"), 15,
     "KEY=VALUE", "max_iters"),
    (("    soft_size: 28", "    soft_size: 28\n    soft_size: 14"), 14, "given twice",
     "soft_size"),
])
def test_a_bad_run_file_names_the_file_line_and_value(tmp_path, edit, line, message, value):
    text = GOOD.replace(*edit)
    assert text != GOOD
    with pytest.raises(KitError) as e:
        read_run_file(_file(tmp_path, text))
    assert e.value.file == str(tmp_path / "run.yaml") and e.value.row == line, str(e.value)
    assert message in str(e.value) and value in str(e.value)
    assert "\n" not in str(e.value)


def test_an_unknown_config_is_named_with_its_line(tmp_path):
    text = GOOD.replace(f"  - {TINY}\n", "  - configs/nope.py\n")
    with pytest.raises(KitError, match=r"run.yaml:7: config not found") as e:
        read_run_file(_file(tmp_path, text))
    assert e.value.value == str(tmp_path / "configs" / "nope.py")  # from the run file's folder


def test_a_config_that_does_not_load_is_named(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("model = dict(\n")
    text = GOOD.replace(f"  - {TINY}\n", f"  - {broken}\n")
    with pytest.raises(KitError, match=r"run.yaml:7: config does not load"):
        read_run_file(_file(tmp_path, text))


def test_yaml_syntax_errors_and_missing_keys(tmp_path):
    with pytest.raises(KitError, match=r"run.yaml:4: not valid YAML"):
        read_run_file(_file(tmp_path, "data: data\nout: o\nmodels: [a\n  b: c\n"))
    with pytest.raises(KitError, match="needs 'models'"):
        read_run_file(_file(tmp_path, "data: data\nout: o\n"))
    with pytest.raises(KitError, match="empty"):
        read_run_file(_file(tmp_path, "\n"))
    with pytest.raises(KitError, match="the data folder does not exist"):
        read_run_file(_file(tmp_path, GOOD.replace("data: data", "data: elsewhere")))


def test_the_command_line_refuses_bad_input_in_one_line_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    out = tmp_path / "run"
    code = main(["run", str(tmp_path / "nope.py"), "--data", str(tmp_path / "data"),
                 "--out", str(out), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "config not found" in err and "nope.py" in err
    code = main(["run", str(_file(tmp_path, GOOD.replace("seed: 3", "seed: x"))), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "run.yaml:4: seed must be a whole number" in err
    code = main(["run", str(tmp_path / "run.yaml"), "--data", "d", "-q"])
    assert code == 2 and "the run file holds these settings" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_options_become_one_spec_for_every_model(tmp_path):
    (tmp_path / "d").mkdir()
    spec = spec_from_options([str(TINY)], data=str(tmp_path / "d"), out=str(tmp_path / "r"),
                             folds=[0, 2], gpus="1,3", tta="flip", checkpoints=2,
                             cfg_options=["a=1"])
    (m,) = spec.models
    assert spec.gpus == ("1", "3") and spec.folds == (0, 2)
    assert (m.tta, m.checkpoints, m.cfg_options) == ("flip", 2, ("a=1",))
    with pytest.raises(KitError, match="below prepare's fold count"):
        spec_from_options([str(TINY)], data=str(tmp_path / "d"), out="r", folds=[5])
    with pytest.raises(KitError, match="needs --data and --out"):
        spec_from_options([str(TINY)], data=None, out="r", folds=[0])


def test_gpus_are_ids_or_with_a_launcher_a_count():
    assert parse_gpus("0,1,2,3", "none") == (("0", "1", "2", "3"), 1)
    assert parse_gpus("2", "none") == (("2",), 1)
    assert parse_gpus("4", "pytorch") == ((), 4)
    assert parse_gpus([0, 1], "none") == (("0", "1"), 1)
    for text, launcher in (("0,0", "none"), ("0,1", "pytorch"), ("a", "none"),
                           ("0", "slurm")):
        with pytest.raises(KitError):
            parse_gpus(text, launcher)


def test_the_run_file_of_the_docs_is_valid(tmp_path):
    """docs/run.md's example names every key: it must read as it is written (its paths moved to
    the repository's configs and a data folder here)."""
    import re

    page = (REPO / "docs" / "run.md").read_text()
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", page, re.S) if "models:" in b]
    (tmp_path / "data").mkdir()
    text = block.replace("../configs/", f"{REPO}/configs/").replace("../data/imat2019", "data")
    spec = read_run_file(_file(tmp_path, text))
    assert [m.name for m in spec.models] == ["maskrcnn_r50_imat", "htc"]
    htc = spec.models[1]
    assert (htc.tta, htc.checkpoints, htc.soft_size, htc.amp) == ("scales+flip", 3, 28, "bf16")
    assert spec.gpus == ("0", "1", "2", "3") and spec.tune_rescore


def test_cpu_jobs_take_a_share_of_the_cores_and_gpu_jobs_their_gpu(tmp_path):
    import os

    from imat_kit.pipeline.run import Run

    (tmp_path / "d").mkdir()
    spec = spec_from_options([str(TINY)], data=str(tmp_path / "d"), out=str(tmp_path / "r"),
                             folds=[0, 1], jobs=2)
    run = Run(spec)
    assert run.devices == ("cpu0", "cpu1")
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    assert run.slot_env("cpu1") == {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": threads,
                                    "MKL_NUM_THREADS": threads}
    assert run.slot_env(None) is None
    gpu = Run(spec_from_options([str(TINY)], data=str(tmp_path / "d"),
                                out=str(tmp_path / "r"), folds=[0], gpus="2,5"))
    assert gpu.devices == ("2", "5") and gpu.slot_env("5") == {
        "CUDA_VISIBLE_DEVICES": "5", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    assert Run(dataclasses.replace(spec, jobs=1)).devices == ()
    with pytest.raises(KitError, match="jobs must be 1 with gpus"):
        spec_from_options([str(TINY)], data=str(tmp_path / "d"), out="r", folds=[0],
                          gpus="0,1", jobs=2)
    text = GOOD.replace("gpus: 0,1", "jobs: 2")
    assert read_run_file(_file(tmp_path, text)).jobs == 2
    with pytest.raises(KitError, match=r"run.yaml:6: jobs must be 1 with gpus"):
        read_run_file(_file(tmp_path, GOOD.replace("gpus: 0,1", "gpus: 0,1\njobs: 3")))
