"""`imat-kit run` end to end on a small synthetic set with the tiny config (2 folds, 4
iterations): a valid submission, the fold table, the tuned settings, the report and the
manifest; a second run that runs nothing; a changed TTA that re-runs prediction and what
follows, not training; a killed run that resumes; a changed training setting that stops unless
--retrain; two models on two (fake) GPUs whose predictions are fused."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import pandas as pd
import pytest

from imat_kit.cli.commands import main
from imat_kit.cli.demo import _schedule
from imat_kit.data import paths
from imat_kit.errors import KitError
from imat_kit.files import file_fingerprint
from imat_kit.pipeline.chain import run_pipeline
from imat_kit.pipeline.spec import ModelSpec, RunSpec
from imat_kit.submission import validate_submission
from tests.helpers import REPO
from tests.helpers.report import check_report

TINY = REPO / "tests" / "configs" / "tiny_test_attr.py"


def _statuses(result) -> dict[str, str]:
    return {s.name: s.status for s in result.steps}


def _no_training(monkeypatch) -> None:
    """Fail the test if any training process starts."""
    import imat_kit.mmdet_ext.train as train

    def refuse(*_a, **_k):
        raise AssertionError("a training process started")

    monkeypatch.setattr(train, "run_logged", refuse)


def _problems(sub, data) -> list:
    return validate_submission(sub, paths.sample_image_ids(data),
                               paths.test_image_sizes(data, quiet=True), paths.find_labels(data))


def _files(root) -> dict:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*")
            if p.is_file() and p.suffix in (".pth", ".jsonl", ".csv")}


@pytest.mark.slow
def test_run_end_to_end_resumes_and_reruns_what_changed(synth_dir, tmp_path, monkeypatch,
                                                         capsys):
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    model = ModelSpec(config=TINY, name="a", cfg_options=tuple(_schedule(4)))
    spec = RunSpec(data=data, out=tmp_path / "run", models=(model,), folds=(0, 1),
                   prepare_folds=3, tune_rescore=False)
    lines: list[str] = []
    first = run_pipeline(spec, quiet=True, echo=lines.append)
    assert all(s == "ran" for s in _statuses(first).values()), _statuses(first)
    assert list(_statuses(first)) == ["prepare", "train + predict", "evaluate",
                                      "tune_attributes", "tune", "ensemble", "submit",
                                      "validate", "score", "figures", "report", "manifest"]
    # one line per step: started (with why) and done (with its headline)
    assert any(line.startswith("tune ") and "started: first run" in line for line in lines)
    out = spec.out
    sub = out / "submission.csv"
    assert _problems(sub, data) == []
    table = pd.read_csv(out / "eval" / "evaluation.csv")
    assert table.fold.tolist() == ["0", "1", "mean", "std"]
    assert first.results["evaluate"]["mean"]["competition"] == pytest.approx(
        table.competition[2])
    pp = json.loads((out / "eval" / "postprocess.json").read_text())
    assert len(pp["per_fold"]) == 2 and pp["nested"] is not None
    check_report(out / "report.html")
    man = json.loads((out / "manifest.json").read_text())
    (m,) = man["models"]
    assert m["config_sha256"] == file_fingerprint(TINY)["sha256"]
    for k in ("0", "1"):
        (ck,) = m["folds"][k]["checkpoints"]
        assert ck["sha256"] == file_fingerprint(ck["checkpoint"])["sha256"]
    assert man["submission"]["sha256"] == file_fingerprint(sub)["sha256"]
    assert man["settings"]["postprocess"] == pp["settings"]
    assert man["scores"]["test"]["ensemble"] == first.results["score"]["ensemble"]

    # the same inputs again: nothing runs, nothing is rewritten
    before = _files(out)
    with monkeypatch.context() as mp:
        _no_training(mp)
        second = run_pipeline(spec, quiet=True)
    assert set(_statuses(second).values()) == {"skipped"}, _statuses(second)
    assert _files(out) == before and len(before) >= 10
    assert second.results["score"] == first.results["score"]

    # a changed TTA: prediction and what follows run again, training does not
    flip = dataclasses.replace(spec, models=(dataclasses.replace(model, tta="flip"),))
    with monkeypatch.context() as mp:
        _no_training(mp)
        third = run_pipeline(flip, quiet=True)
    st = _statuses(third)
    assert st["prepare"] == "skipped" and st["train + predict"] == "ran"
    predicted = next(s for s in third.steps if s.name == "train + predict").headline
    assert "0 of 2 training run(s) trained" in predicted and "tta" in predicted
    assert all(st[k] == "ran" for k in ("evaluate", "tune", "submit", "report", "manifest"))
    why = next(s for s in third.steps if s.name == "evaluate").why
    assert why.startswith("inputs changed") and "fold0_val.jsonl changed" in why
    assert json.loads((out / "manifest.json").read_text())["spec"]["models"][0]["tta"] == "flip"

    # killed during tuning: the next run keeps what finished and resumes from there
    import imat_kit.tune.nested as tune_module

    def killed(*_a, **_k):
        raise KeyboardInterrupt

    with monkeypatch.context() as mp:
        mp.setattr(tune_module, "tune", killed)
        with pytest.raises(KeyboardInterrupt):
            run_pipeline(spec, quiet=True)
    with monkeypatch.context() as mp:
        _no_training(mp)
        resumed = run_pipeline(spec, quiet=True)
    st = _statuses(resumed)
    assert st["train + predict"] == "skipped" and st["evaluate"] == "skipped"
    assert st["tune"] == "ran" and st["submit"] == "ran" and st["manifest"] == "ran"
    assert resumed.results["score"] == first.results["score"]  # back to the first settings

    # a changed training setting stops and names it; it is never trained over silently
    longer = dataclasses.replace(spec, models=(dataclasses.replace(
        model, cfg_options=tuple(_schedule(5))),))
    with monkeypatch.context() as mp:
        _no_training(mp)
        with pytest.raises(KitError, match=r"train a fold 0: failed.*max_iters.*--retrain"):
            run_pipeline(longer, quiet=True)

    # a second model, both trained and predicted on two (fake) GPUs, fused
    other = ModelSpec(config=TINY, name="b",
                      cfg_options=(*_schedule(4), "optim_wrapper.optimizer.lr=0.01"))
    two = dataclasses.replace(spec, models=(model, other), gpus=("0", "1"))
    lines.clear()
    fused = run_pipeline(two, quiet=True, echo=lines.append)
    st = _statuses(fused)
    assert st["fuse_val"] == "ran" and st["ensemble"] == "ran"
    assert any("train b fold 1: done" in line for line in lines)
    assert any("on GPUs 0,1" in line for line in lines)
    ens = json.loads((out / "predictions" / "test_ensemble.jsonl").open().readline())
    assert len(ens["inputs"]) == 4  # 2 models × 2 folds
    val = json.loads((out / "predictions" / "ensemble" / "fold0_val.jsonl").open().readline())
    assert {h["file"].split("/")[-2] for h in val["inputs"]} == {"a", "b"}
    assert set(fused.results["evaluate"]["models"]) == {"a", "b"}
    man = json.loads((out / "manifest.json").read_text())
    assert [m["name"] for m in man["models"]] == ["a", "b"]
    assert (out / "logs" / "predict_b_fold1_test.log").exists()  # a process per GPU job
    assert _problems(sub, data) == []

    # the same run as a run file, through the command line: nothing to do, the final table
    runfile = tmp_path / "two.yaml"
    opts = json.dumps(list(_schedule(4)))[1:-1]  # quoted: a YAML list of strings
    runfile.write_text(f"""\
data: data
out: run
folds: [0, 1]
gpus: 0,1
prepare: {{folds: 3}}
tune: {{rescore: false}}
models:
  - {{config: "{TINY}", name: a, cfg_options: [{opts}]}}
  - {{config: "{TINY}", name: b, cfg_options: [{opts}, optim_wrapper.optimizer.lr=0.01]}}
""")
    with monkeypatch.context() as mp:
        _no_training(mp)
        assert main(["run", str(runfile), "-q"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert sum("skipped (same" in line for line in shown) >= 12, shown
    assert any(line.startswith("mean ") for line in shown)  # the fold table's mean row
    assert any(line.startswith("submit") and str(sub) in line for line in shown)
