"""The demo pipeline end to end in a reduced form (few images, a few iterations), so CI covers
the path `make demo` takes; and its resumption."""

import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest

# imported before the spies, so tune's own tune_thresholds calls are not counted as demo steps
import imat_kit.tune.nested  # noqa: F401
from imat_kit.cli.demo import run_demo
from imat_kit.errors import KitError
from imat_kit.eval.attr_eval import match_instances
from imat_kit.eval.runs import read_fold_runs
from tests.helpers import REPO
from tests.helpers.predictions import fold_predictions, write_val
from tests.helpers.report import check_report

#: the step function of each `imat-kit` command the demo runs (module, function)
COMMAND_STEPS = [("imat_kit.data.synth", "generate_images"),
                 ("imat_kit.data.prepare", "prepare"), ("imat_kit.mmdet_ext.train", "train_folds"),
                 ("imat_kit.mmdet_ext.predict", "predict"),
                 ("imat_kit.eval.evaluate", "evaluate_to"),
                 ("imat_kit.eval.attr_eval", "tune_thresholds"), ("imat_kit.tune.nested", "tune"),
                 ("imat_kit.ensemble", "ensemble_files"), ("imat_kit.submission", "submit"),
                 ("imat_kit.submission", "score_submission"), ("imat_kit.plots", "make_plot"),
                 ("imat_kit.report", "build_report")]


def _spy(monkeypatch) -> dict:
    """Count the calls of every command's step function (still calling it)."""
    import importlib

    calls: dict = {}
    for module, name in COMMAND_STEPS:
        mod = importlib.import_module(module)
        real = getattr(mod, name)

        def wrapper(*a, _real=real, _name=name, **k):
            calls[_name] = calls.get(_name, 0) + 1
            return _real(*a, **k)

        monkeypatch.setattr(mod, name, wrapper)
    return calls


@pytest.mark.slow
def test_demo_end_to_end_and_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out, sub = tmp_path / "demo", tmp_path / "submissions" / "demo.csv"
    calls = _spy(monkeypatch)
    config = REPO / "tests" / "configs" / "tiny_test_attr.py"
    s = run_demo(out, images=24, folds=(0, 1), iters=4, seed=0, submission=sub,
                 config=config, quiet=True)
    # the demo is the user's commands in order: every step is the command's own function
    assert set(calls) == {name for _, name in COMMAND_STEPS}, calls
    assert calls["predict"] == 4 and calls["make_plot"] == 6 and calls["submit"] == 3
    # all folds, then each fold from the other: 3 tunings
    assert calls["tune_thresholds"] == 3
    for key in ("evaluation", "submission", "manifest", "report"):
        assert os.path.exists(s[key]), key
    page = check_report(Path(s["report"]))
    assert str(sub.name) in page  # the submission's manifest is in the provenance
    figs = sorted(p.name for p in (out / "figures").glob("*.*"))
    assert figs == ["attribute_f1.png", "category_distribution.png", "confusion_matrix.png",
                    "loss_curves.png", "overlays.jpg", "pr_curves.png"]
    table = pd.read_csv(out / "eval" / "evaluation.csv")
    assert table.fold.tolist() == ["0", "1", "mean", "std"]
    # the summary's figures are the fold table's means; an attribute F1 is NaN exactly for a
    # fold where no detection matched a truth (a 4-iteration model; test_demo_figures_*
    # checks the figures themselves on predictions that do match)
    assert s["val_segm_AP_mean"] == table.segm_AP[2] and 0 <= s["val_segm_AP_mean"] <= 1
    assert s["val_AP_iou_f1_mean"] == pytest.approx(table.AP_iou_f1[2])
    assert 0 <= s["val_AP_iou_f1_mean"] <= 1
    preds = out / "predictions" / "tiny_test_attr"  # the run's folder of the demo's model
    runs = read_fold_runs(out / "data", [str(preds / f"fold{k}_val.jsonl") for k in (0, 1)])
    matched = [len(match_instances(r.gt, r.preds)[0]) for r in runs]
    for k, n in enumerate(matched):
        for col in ("attr_micro_f1", "prior_micro_f1"):
            v = table.loc[k, col]
            assert (math.isnan(v) if n == 0 else 0 <= v <= 1), (k, col, n, v)
    for key, col in (("val_attr_micro_f1_mean", "attr_micro_f1"),
                     ("val_prior_micro_f1_mean", "prior_micro_f1")):
        assert s[key] == pytest.approx(table[col][2], nan_ok=True), key
    assert (out / "eval" / "per_attribute.csv").exists()
    thr = json.loads((out / "eval" / "attribute_thresholds.json").read_text())
    assert thr["format"] == "imat-kit-postprocess" and thr["tuned_by"] == "tune-attributes"
    assert s["year"] == 2019 and s["test_rule"].startswith("2019")
    man = json.loads(sub.with_suffix(".json").read_text())
    assert len(man["fold_scores"]) == 4 and len(man["source"]["inputs"]) == 2
    csv = pd.read_csv(sub, dtype=str, keep_default_na=False)
    assert list(csv.columns) == ["ImageId", "EncodedPixels", "ClassId"]
    assert not csv.ClassId.str.contains("_").any()  # the 2019 demo: categories only
    assert man["attribute_thresholds"] is None and man["postprocess"]["sha256"]
    pp = json.loads((out / "eval" / "postprocess.json").read_text())
    assert man["postprocess"]["settings"] == pp["settings"]  # written with the tuned settings
    assert pp["nested"] is not None and len(pp["per_fold"]) == 2  # each fold by the other
    assert s["val_score_tuned_nested_mean"] == pytest.approx(pp["nested"]["tuned"])
    tuning = pd.read_csv(out / "eval" / "tuning.csv")
    assert tuning.fold.tolist() == ["0", "1", "mean", "std"]
    sample = pd.read_csv(out / "data" / "sample_submission.csv")
    assert list(dict.fromkeys(csv.ImageId)) == sample.ImageId.tolist()
    assert 0 <= s["test_competition_ensemble"] <= 1
    # the demo is `imat-kit run`: its manifest names the checkpoints with their SHA-256
    run_man = json.loads((out / "manifest.json").read_text())
    assert len(run_man["models"][0]["folds"]) == 2 and s["run_manifest"]
    # a second run reuses every finished step: no training, no prediction
    kept = [*preds.glob("fold*.jsonl"), *(out / "work_dirs").rglob("*.pth"), sub,
            out / "report.html"]
    mtimes = {p: p.stat().st_mtime_ns for p in kept}
    s2 = run_demo(out, images=24, folds=(0, 1), iters=4, seed=0, submission=sub,
                  config=config, quiet=True)
    assert len(mtimes) >= 8 and {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert s2["test_competition_ensemble"] == s["test_competition_ensemble"]
    # another --iters must not reuse the first run's checkpoints: it stops and says why
    with pytest.raises(KitError, match=r"other options.*iters: was 4, now 5.*--overwrite"):
        run_demo(out, images=24, folds=(0, 1), iters=5, seed=0, submission=sub,
                 config=config, quiet=True)
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


@pytest.mark.slow
def test_demo_2020_writes_validates_and_scores_a_2020_submission(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out, sub = tmp_path / "demo2020", tmp_path / "demo2020.csv"
    s = run_demo(out, images=20, folds=(0,), iters=2, seed=1, submission=sub, year=2020,
                 config=REPO / "tests" / "configs" / "tiny_test_attr2020.py", quiet=True)
    assert s["year"] == 2020 and s["test_rule"].startswith("2020")
    csv = pd.read_csv(sub, dtype=str, keep_default_na=False)
    assert list(csv.columns) == ["ImageId", "EncodedPixels", "ClassId", "AttributesIds"]
    assert 0 <= s["test_competition_ensemble"] <= s["test_competition_masks_only"] + 1e-9
    man = json.loads(sub.with_suffix(".json").read_text())
    assert man["layout"] == 2020 and man["postprocess"]["metric"] == "competition2020"
    assert s["val_score_tuned_nested_mean"] is None  # one fold: no honest figure exists


def test_demo_figures_from_predictions_that_match(prepared, tmp_path):
    """The run's evaluation and attribute-threshold steps (the demo's figures) on exact
    predictions that carry the true attributes: every figure is known."""
    from imat_kit.pipeline.run import Run
    from imat_kit.pipeline.spec import ModelSpec, RunSpec
    from imat_kit.pipeline.steps import POST_STEPS

    spec = RunSpec(data=prepared, out=tmp_path, folds=(0, 1),
                   models=(ModelSpec(config=REPO / "tests" / "configs" / "x.py", name="m"),))
    run = Run(spec, quiet=True)
    for k in spec.folds:
        write_val(run.pred("m", k, "val"), fold_predictions(prepared, k, attributes=True), k)
    steps = {s.name: s for s in POST_STEPS}
    mean = steps["evaluate"].do(run)["mean"]
    assert mean["segm_AP"] == pytest.approx(1.0) and mean["competition"] == pytest.approx(1.0)
    assert mean["AP_iou_f1"] == pytest.approx(1.0)
    assert mean["attr_micro_f1"] == pytest.approx(1.0)
    assert 0 < mean["prior_micro_f1"] < 1  # the per-category prior is no oracle
    cross = steps["tune_attributes"].do(run)["cross_folds"]
    assert cross["attr_micro_f1"] == pytest.approx(1.0)
    assert cross["AP_iou_f1"] == pytest.approx(1.0)
    assert (tmp_path / "eval" / "attribute_thresholds.json").exists()


def test_demo_refuses_a_config_without_attributes(tmp_path, monkeypatch):
    """The demo reports attribute figures: a config without the branch is refused early,
    before any training (the spy sees no train call)."""
    calls = _spy(monkeypatch)
    with pytest.raises(KitError, match="predicts no attributes"):
        run_demo(tmp_path / "d", images=4, folds=(0,), iters=1, quiet=True,
                 config=REPO / "tests" / "configs" / "tiny_test.py")
    assert not calls and not (tmp_path / "d").exists()


def test_overwrite_starts_afresh_even_with_the_same_options(tmp_path):
    """--overwrite means afresh: with unchanged options the earlier run's data, checkpoints and
    predictions must still go (new code can render other data under the same options)."""
    from imat_kit.cli.demo import OPTIONS, OUTPUTS, _check_options

    opts = {"images": 24, "iters": 4}
    _check_options(tmp_path, opts, overwrite=False, quiet=True)
    made = []
    for name in OUTPUTS:
        if name == OPTIONS:
            continue
        if "." in name:
            (tmp_path / name).write_text("old")
        else:
            (tmp_path / name).mkdir(parents=True, exist_ok=True)
            (tmp_path / name / "x").write_text("old")
        made.append(tmp_path / name)
    (tmp_path / "mine.txt").write_text("not the demo's")
    _check_options(tmp_path, opts, overwrite=False, quiet=True)  # same options: kept
    assert all(p.exists() for p in made)
    _check_options(tmp_path, opts, overwrite=True, quiet=True)
    assert not any(p.exists() for p in made) and (tmp_path / "mine.txt").exists()
