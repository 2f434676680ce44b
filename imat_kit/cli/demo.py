"""``imat-kit demo`` (``make demo``): the whole pipeline on a seeded synthetic dataset.

synthetic data → prepare (5 stratified folds) → train the tiny CPU Mask R-CNN with its
attribute branch on some folds → predict each fold's validation images and the test set →
fold-wise evaluation (segm AP, AP^{IoU+F1}, attribute F1 against the per-category prior) →
per-attribute thresholds (tuned on the validation folds; each fold's figure uses thresholds
tuned on the *other* folds) → post-processing tuned (``imat-kit tune``: score thresholds, cap,
min area, attribute decoding; each fold scored with settings tuned on the other folds) →
ensemble → submission + manifest with the tuned settings → validate → score against the
synthetic test solution → figures.

``year=2019`` (``make demo``) writes the 2019 submission (category-only ``ClassId``);
``year=2020`` works on the synthetic 2020 set and writes, validates and scores a 2020-layout
submission (``AttributesIds``) with the 2020 rule.

Each step is the function the matching ``imat-kit`` command calls, so the demo is literally the
user's commands in order. Every step reuses what an earlier run finished with the same inputs
(training and prediction check their recorded settings; the demo checks its own options in
``OUT/demo_options.json``): a second run is quick, an interrupted one resumes, and a run with
other options (``--iters``, ``--images``, ``--seed``) stops and says what differs instead of
reusing the first run's results; ``--overwrite`` starts such a run afresh.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from imat_kit.cli.formatting import (
    demo_summary_lines,
    print_attribute_figures,
    print_evaluation,
    threshold_lines,
    tune_lines,
)
from imat_kit.errors import KitError
from imat_kit.files import atomic_open, describe_differences, file_fingerprint

#: what the demo writes under OUT (all of it is removed by --overwrite, nothing else)
OUTPUTS = ("data", "work_dirs", "predictions", "eval", "figures", "summary.json",
           "demo_options.json", "report.html")
OPTIONS = "demo_options.json"
#: the tiny CPU config with the attribute branch of each year's label space
CONFIGS = {2019: "tiny_maskrcnn_imat_attr.py", 2020: "tiny_maskrcnn_imat_attr2020.py"}


def default_config(year: int = 2019) -> Path:
    """The tiny CPU attribute config of ``year``, shipped inside the package (found from any
    working folder)."""
    if year not in CONFIGS:
        raise KitError("the demo's year must be 2019 or 2020", value=year)
    return Path(str(resources.files("imat_kit") / "configs" / CONFIGS[year]))


def _schedule(iters: int) -> list[str]:
    """cfg-options that give the tiny config a schedule of ``iters`` iterations, validated
    twice (half-way and at the end: the AP curve's points; each pass costs ~25 s on 2 cores)."""
    return [f"train_cfg.max_iters={iters}", f"train_cfg.val_interval={max(iters // 2, 1)}",
            f"param_scheduler.0.end={max(1, min(100, iters // 4))}",
            f"param_scheduler.1.end={iters}",
            f"param_scheduler.1.milestones=[{int(iters * 0.85)}]",
            f"default_hooks.checkpoint.interval={iters}"]


def _check_options(out: Path, options: dict, *, overwrite: bool, quiet: bool) -> None:
    """Refuse (or, with ``overwrite``, clear) a demo folder made with other options."""
    path = out / OPTIONS
    if path.exists():
        old = json.loads(path.read_text())
        diffs = describe_differences(old, options)
        if diffs and not overwrite:
            raise KitError("this demo folder holds a run made with other options, whose "
                           "results would be reused: " + "; ".join(diffs) + ". Pass "
                           "--overwrite to start afresh, or choose another --out", file=str(out))
        if diffs or overwrite:  # --overwrite always starts afresh
            if not quiet:
                print(f"--overwrite: removing the earlier demo run in {out}", flush=True)
            for name in OUTPUTS:
                target = out / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
    with atomic_open(path, "w") as f:
        json.dump(options, f, indent=2)


def _nested(tuned: dict, key: str) -> float | None:
    n = tuned.get("nested")
    return None if n is None or key not in n else float(n[key])


def _tuning_table(tuned: dict):
    """Per fold: the tuned metric at the defaults, with settings tuned on the other folds
    (the honest figure; also without the re-scorer where it was kept) and on every fold
    (in-sample); mean and std rows."""
    import pandas as pd

    rows = [{"fold": str(p["fold"]), "defaults": p["defaults"],
             "tuned_on_other_folds": p.get("nested", float("nan")),
             "without_rescore_other_folds": p.get("nested_without_rescore",
                                                  p.get("nested", float("nan"))),
             "tuned_in_sample": p["tuned_in_sample"],
             "attr_micro_f1_defaults": p.get("attr_micro_f1_defaults", float("nan")),
             "attr_micro_f1_other_folds": p.get("attr_micro_f1_nested", float("nan"))}
            for p in tuned["per_fold"]]
    df = pd.DataFrame(rows)
    nums = df.drop(columns=["fold"])
    return pd.concat([df, pd.DataFrame([{"fold": "mean", **nums.mean().to_dict()},
                                        {"fold": "std", **nums.std(ddof=0).to_dict()}])],
                     ignore_index=True)


@dataclass
class Demo:
    """One demo run: its options and folders, and what each step hands to the next."""

    out: Path
    images: int
    folds: tuple
    iters: int
    seed: int
    year: int
    submission: Path
    config: Path
    overwrite: bool = False
    verbose: bool = False
    quiet: bool = False
    #: filled in by the steps, in order
    results: dict = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.out / "data"

    @property
    def preds(self) -> Path:
        return self.out / "predictions"

    @property
    def eval_dir(self) -> Path:
        return self.out / "eval"

    @property
    def work_dirs(self) -> list[Path]:
        return [self.out / "work_dirs" / self.config.stem / f"fold{k}" for k in self.folds]

    def val_files(self) -> list[str]:
        return [str(self.preds / f"fold{k}_val.jsonl") for k in self.folds]

    def show(self, *lines: str) -> None:
        if not self.quiet:
            for line in lines:
                print(line, flush=True)


def _synth(d: Demo) -> None:
    from imat_kit.data.synth import generate_images

    if not (d.data / "train.csv").exists():
        generate_images(d.data, images=d.images, seed=d.seed, year=d.year, quiet=d.quiet)


def _prepare(d: Demo) -> None:
    from imat_kit.data.prepare import prepare

    if not (d.data / "prepare_report.json").exists():
        prepare(d.data, n_folds=5, split="stratified", seed=d.seed, quiet=d.quiet)


def _train(d: Demo) -> None:
    from imat_kit.mmdet_ext.train import train_folds

    recs = train_folds(d.config, list(d.folds), work_root=d.out / "work_dirs",
                       data_root=str(d.data),
                       cfg_options=[*_schedule(d.iters), f"randomness.seed={d.seed}"],
                       overwrite=d.overwrite, verbose=d.verbose, quiet=d.quiet,
                       echo=None if d.quiet else d.show)
    d.results["checkpoints"] = {r["fold"]: r["checkpoint"] for r in recs}


def _predict(d: Demo) -> None:
    from imat_kit.mmdet_ext.predict import predict

    for k in d.folds:
        for split in ("val", "test"):
            predict(d.config, d.results["checkpoints"][k], split=split, fold=k,
                    out=d.preds / f"fold{k}_{split}.jsonl", data_root=str(d.data),
                    overwrite=d.overwrite, quiet=d.quiet)


def _evaluate(d: Demo) -> None:
    from imat_kit.data.paths import find_labels
    from imat_kit.eval.evaluate import evaluate_to, read_fold_runs

    # read once: evaluation, tuning and the cross-fold figures all use them
    d.results["runs"] = runs = read_fold_runs(d.data, d.val_files())
    d.results["labels"] = find_labels(d.data)
    d.results["table"], _ = evaluate_to(d.data, d.val_files(), d.eval_dir, runs=runs, bbox=True)
    if not d.quiet:
        print_evaluation(d.results["table"], "image")
        print_attribute_figures(d.results["table"])


def _tune_attributes(d: Demo) -> None:
    from imat_kit.eval.attr_eval import thresholds_from, tune_thresholds, write_thresholds
    from imat_kit.eval.evaluate import attribute_columns

    runs, labels = d.results["runs"], d.results["labels"]
    ids = list(labels.attribute_id_list)
    thr_file = d.eval_dir / "attribute_thresholds.json"
    tuned = tune_thresholds(runs, ids)
    write_thresholds(tuned, thr_file)
    cross = []
    for run in runs:  # each fold scored with thresholds tuned on the others
        others = [r for r in runs if r is not run] or [run]
        cross.append(attribute_columns(run, labels, thresholds_from(tune_thresholds(others, ids))))
    cross_mean = {k: sum(c[k] for c in cross) / len(cross) for k in cross[0]}
    d.results.update(thresholds_file=thr_file, thresholds=tuned, attr_cross_folds=cross_mean)
    n_tuned = sum(v["tuned"] for v in tuned["attributes"].values())
    d.show(*threshold_lines(tuned, labels),
           f"{n_tuned} attributes tuned → {thr_file}; with thresholds from the other folds: "
           f"AP^IoU+F1 {100 * cross_mean['AP_iou_f1']:.1f}, attribute micro F1 "
           f"{cross_mean['attr_micro_f1']:.3f} (global 0.5: "
           f"{d.results['table'].iloc[-2].attr_micro_f1:.3f}; prior "
           f"{cross_mean['prior_micro_f1']:.3f})")


def _tune(d: Demo) -> None:
    from imat_kit.postprocess import write_postprocess
    from imat_kit.tune import tune

    metric = "competition2020" if d.year == 2020 else "competition"
    pp_file = d.eval_dir / "postprocess.json"
    tuned = tune(d.results["runs"], d.results["labels"], metric=metric, quiet=d.quiet,
                 data=d.data, rescore=True, seed=d.seed)
    write_postprocess(tuned, pp_file)
    tuning = _tuning_table(tuned)
    with atomic_open(d.eval_dir / "tuning.csv", "w", newline="") as f:
        tuning.to_csv(f, index=False, float_format="%.4f")
    d.results.update(tune_metric=metric, postprocess_file=pp_file, postprocess=tuned)
    d.show(tuning.to_string(index=False, float_format=lambda v: f"{v:.4f}"), *tune_lines(tuned))


def _ensemble_submit(d: Demo) -> None:
    from imat_kit.ensemble import ensemble_files
    from imat_kit.submission import score_submission, submit

    ens = d.preds / "ensemble_test.jsonl"
    ensemble_files([d.preds / f"fold{k}_test.jsonl" for k in d.folds], ens, data=d.data,
                   quiet=d.quiet)
    pp_file = d.results["postprocess_file"]
    _, problems = submit(ens, d.data, d.submission, evaluation=d.eval_dir / "evaluation.csv",
                         postprocess=pp_file, manifest={"data": str(d.data)}, quiet=d.quiet)
    if problems:
        raise KitError("the demo's submission failed validation: "
                       + "; ".join(map(str, problems[:5])), file=str(d.submission))
    solution = d.data / "test_solution.csv"

    def score(sub: Path, year: int = d.year, quiet: bool = True) -> float:
        return score_submission(sub, solution, d.data, year=year, quiet=quiet)["score"]

    d.results["test_ensemble"] = score(d.submission, quiet=d.quiet)
    d.results["test_masks_only"] = (score(d.submission, year=2019) if d.year == 2020
                                    else d.results["test_ensemble"])  # the 2019 rule: masks
    single = []  # each fold model's own submission, for comparison with the ensemble
    for k in d.folds:
        own = d.eval_dir / f"fold{k}_only.csv"
        submit(d.preds / f"fold{k}_test.jsonl", d.data, own, postprocess=pp_file, quiet=True)
        single.append(score(own))
    d.results["test_single_folds"] = single


def _plots(d: Demo) -> None:
    from imat_kit.plots import make_plot

    figs, thr = d.out / "figures", d.results["thresholds_file"]
    val0 = d.preds / f"fold{d.folds[0]}_val.jsonl"
    make_plot("losses", figs / "loss_curves.png", work_dirs=d.work_dirs,
              labels=[f"fold {k}" for k in d.folds])
    make_plot("pr", figs / "pr_curves.png", data=d.data, predictions=val0)
    make_plot("confusion", figs / "confusion_matrix.png", data=d.data, predictions=val0)
    make_plot("overlays", figs / "overlays.jpg", data=d.data, predictions=val0, n=6, seed=d.seed,
              attribute_thresholds=thr)
    make_plot("categories", figs / "category_distribution.png", data=d.data)
    make_plot("attributes", figs / "attribute_f1.png", data=d.data, predictions=val0,
              attribute_thresholds=thr)


def _report(d: Demo) -> None:
    from imat_kit.report import build_report

    d.results["report"] = build_report(
        d.data, d.val_files(), d.out / "report.html", work_dirs=d.work_dirs,
        submission=d.submission, attribute_thresholds=d.results["thresholds_file"],
        postprocess=d.results["postprocess_file"], quiet=d.quiet)["out"]


@dataclass(frozen=True)
class Step:
    key: str
    heading: Callable[[Demo], str]
    run: Callable[[Demo], None]


#: the user's commands, in order: each step calls the function its ``imat-kit`` command calls
STEPS = (
    Step("synth", lambda d: f"imat-kit synth: {d.images} training images, seed {d.seed}, "
         f"{d.year} layout", _synth),
    Step("prepare", lambda d: "imat-kit prepare: COCO json, 5 stratified folds", _prepare),
    Step("train", lambda d: f"imat-kit train {d.config.name} on folds {list(d.folds)} "
         f"({d.iters} iterations each, CPU)", _train),
    Step("predict", lambda d: "imat-kit predict: each fold's validation images and the test "
         "set", _predict),
    Step("evaluate", lambda d: "imat-kit evaluate: fold-wise evaluation (attributes at a global "
         "0.5)", _evaluate),
    Step("tune_attributes", lambda d: "imat-kit tune-attributes: a threshold per attribute from "
         "the validation folds (each fold scored with thresholds tuned on the others)",
         _tune_attributes),
    Step("tune", lambda d: "imat-kit tune: submit's post-processing tuned on the validation "
         "folds (each fold scored with settings tuned on the others)", _tune),
    Step("ensemble_submit", lambda d: "imat-kit ensemble + submit + score: the fold models' test "
         "predictions fused, the submission written, validated and scored", _ensemble_submit),
    Step("figures", lambda d: "imat-kit plot: figures", _plots),
    Step("report", lambda d: "imat-kit report: one HTML page with the error analysis", _report),
)


def _rescoring(pp: dict, key: str) -> float | None:
    """A nested figure of the re-scoring comparison (``without`` / ``with``), if any."""
    nested = (pp.get("rescoring") or {}).get("nested")
    return None if nested is None else float(nested[key])


def summarize(d: Demo, seconds: dict, total_seconds: float) -> dict:
    """The key figures of a finished run (``OUT/summary.json``)."""
    r, sub = d.results, d.submission
    mean, cross, pp = r["table"].iloc[-2], r["attr_cross_folds"], r["postprocess"]
    return {
        "data": str(d.data), "work_dirs": str(d.out / "work_dirs"),
        "predictions": str(d.preds), "evaluation": str(d.eval_dir / "evaluation.csv"),
        "submission": str(sub), "manifest": str(sub.with_suffix(".json")),
        "figures": str(d.out / "figures"), "report": r["report"],
        "folds_trained": list(d.folds), "iterations": d.iters, "year": d.year,
        "config": str(d.config),
        "val_segm_AP_mean": float(mean.segm_AP), "val_segm_AP50_mean": float(mean.segm_AP50),
        "val_competition_mean": float(mean.competition),
        "val_AP_iou_f1_mean": float(mean.AP_iou_f1),
        "val_AP_iou_f1_tuned_mean": cross["AP_iou_f1"],
        "val_attr_micro_f1_mean": float(mean.attr_micro_f1),
        "val_attr_micro_f1_tuned_mean": cross["attr_micro_f1"],
        "val_prior_micro_f1_mean": float(mean.prior_micro_f1),
        "attribute_thresholds": str(r["thresholds_file"]),
        "postprocess": str(r["postprocess_file"]), "tune_metric": r["tune_metric"],
        "val_score_defaults_mean": _nested(pp, "defaults"),
        "val_score_tuned_nested_mean": _nested(pp, "tuned"),
        "val_score_nested_gain": _nested(pp, "gain"),
        "val_score_nested_gain_std": _nested(pp, "gain_std"),
        "val_attr_micro_f1_nested_mean": _nested(pp, "attr_micro_f1_tuned"),
        "postprocess_groups_kept": pp["groups_kept"],
        "tune_formula": ("TP/(TP+FP)" if pp.get("fn") == "ignore" else "TP/(TP+FP+FN)")
        if r["tune_metric"] == "competition2020" else "TP/(TP+FP+FN)",
        "rescore_kept": bool((pp.get("rescoring") or {}).get("kept")),
        "val_score_nested_without_rescore": _rescoring(pp, "without"),
        "val_score_nested_with_rescore": _rescoring(pp, "with"),
        "attributes_tuned": sum(v["tuned"] for v in r["thresholds"]["attributes"].values()),
        "test_rule": "2020 (IoU + attribute F1)" if d.year == 2020 else "2019 (categories)",
        "test_competition_ensemble": r["test_ensemble"],
        "test_competition_single_folds": r["test_single_folds"],
        "test_competition_masks_only": r["test_masks_only"],
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "total_seconds": round(total_seconds, 1),
    }


def run_demo(out: str | Path = "outputs/demo", *, images: int = 300, folds: tuple = (0, 1),
             iters: int = 360, seed: int = 0, submission: str | Path = "submissions/demo.csv",
             config: str | Path | None = None, year: int = 2019, overwrite: bool = False,
             verbose: bool = False, quiet: bool = False) -> dict:
    """Run (or resume) the demo; returns the key figures, also written to ``OUT/summary.json``."""
    from imat_kit.mmdet_ext.config import is_attribute_model, load_config

    config = Path(config) if config else default_config(year)
    if not config.is_file():
        raise KitError("config not found", file=str(config))
    if not is_attribute_model(load_config(config)):
        raise KitError("the demo's config predicts no attributes (it needs the attribute "
                       "branch, as configs/tiny_maskrcnn_imat_attr.py has)", file=str(config))
    d = Demo(Path(out), images, tuple(folds), iters, seed, year, Path(submission), config,
             overwrite=overwrite, verbose=verbose, quiet=quiet)
    _check_options(d.out, {"images": images, "seed": seed, "iters": iters, "year": year,
                           "config_sha256": file_fingerprint(config)["sha256"]},
                   overwrite=overwrite, quiet=quiet)
    t_all = time.perf_counter()
    seconds = {}
    for step in STEPS:
        d.show(f"\n== {step.heading(d)}")
        t = time.perf_counter()
        step.run(d)
        seconds[step.key] = time.perf_counter() - t
    summary = summarize(d, seconds, time.perf_counter() - t_all)
    with atomic_open(d.out / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    d.show(*demo_summary_lines(summary))
    return summary
