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
from importlib import resources
from pathlib import Path

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


def _step(name: str, quiet: bool) -> float:
    if not quiet:
        print(f"\n== {name}", flush=True)
    return time.perf_counter()


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
    (the honest figure) and on every fold (in-sample); mean and std rows."""
    import pandas as pd

    rows = [{"fold": str(p["fold"]), "defaults": p["defaults"],
             "tuned_on_other_folds": p.get("nested", float("nan")),
             "tuned_in_sample": p["tuned_in_sample"],
             "attr_micro_f1_defaults": p.get("attr_micro_f1_defaults", float("nan")),
             "attr_micro_f1_other_folds": p.get("attr_micro_f1_nested", float("nan"))}
            for p in tuned["per_fold"]]
    df = pd.DataFrame(rows)
    nums = df.drop(columns=["fold"])
    return pd.concat([df, pd.DataFrame([{"fold": "mean", **nums.mean().to_dict()},
                                        {"fold": "std", **nums.std(ddof=0).to_dict()}])],
                     ignore_index=True)


def run_demo(out: str | Path = "outputs/demo", *, images: int = 300, folds: tuple = (0, 1),
             iters: int = 360, seed: int = 0, submission: str | Path = "submissions/demo.csv",
             config: str | Path | None = None, year: int = 2019, overwrite: bool = False,
             quiet: bool = False) -> dict:
    """Run (or resume) the demo; returns the key figures, also written to ``OUT/summary.json``."""
    from imat_kit.data.paths import find_labels
    from imat_kit.data.prepare import prepare
    from imat_kit.data.synth import generate_images
    from imat_kit.ensemble import ensemble_files
    from imat_kit.eval.attr_eval import thresholds_from, tune_thresholds, write_thresholds
    from imat_kit.eval.evaluate import attribute_columns, evaluate_to, read_fold_runs
    from imat_kit.mmdet_ext.predict import predict
    from imat_kit.mmdet_ext.train import train_folds
    from imat_kit.plots import make_plot
    from imat_kit.postprocess import write_postprocess
    from imat_kit.report import build_report
    from imat_kit.submission import score_submission, submit
    from imat_kit.tune import tune

    out = Path(out)
    data, preds_dir, figs = out / "data", out / "predictions", out / "figures"
    config = Path(config) if config else default_config(year)
    if not config.is_file():
        raise KitError("config not found", file=str(config))
    from imat_kit.mmdet_ext.config import is_attribute_model, load_config

    if not is_attribute_model(load_config(config)):
        raise KitError("the demo's config predicts no attributes (it needs the attribute "
                       "branch, as configs/tiny_maskrcnn_imat_attr.py has)", file=str(config))
    _check_options(out, {"images": images, "seed": seed, "iters": iters, "year": year,
                         "config_sha256": file_fingerprint(config)["sha256"]},
                   overwrite=overwrite, quiet=quiet)
    t_all = time.perf_counter()
    timings = {}

    t = _step(f"imat-kit synth: {images} training images, seed {seed}, {year} layout", quiet)
    if not (data / "train.csv").exists():
        generate_images(data, images=images, seed=seed, year=year, quiet=quiet)
    timings["synth"] = time.perf_counter() - t

    t = _step("imat-kit prepare: COCO json, 5 stratified folds", quiet)
    if not (data / "prepare_report.json").exists():
        prepare(data, n_folds=5, split="stratified", seed=seed, quiet=quiet)
    timings["prepare"] = time.perf_counter() - t

    t = _step(f"imat-kit train {config.name} on folds {list(folds)} ({iters} iterations "
              "each, CPU)", quiet)
    recs = train_folds(config, list(folds), work_root=out / "work_dirs", data_root=str(data),
                       cfg_options=[*_schedule(iters), f"randomness.seed={seed}"],
                       overwrite=overwrite, quiet=quiet)
    ckpt = {r["fold"]: r["checkpoint"] for r in recs}
    timings["train"] = time.perf_counter() - t

    t = _step("imat-kit predict: each fold's validation images and the test set", quiet)
    for k in folds:
        for split in ("val", "test"):
            predict(config, ckpt[k], split=split, fold=k, out=preds_dir / f"fold{k}_{split}.jsonl",
                    data_root=str(data), overwrite=overwrite, quiet=quiet)
    timings["predict"] = time.perf_counter() - t

    t = _step("imat-kit evaluate: fold-wise evaluation (attributes at a global 0.5)", quiet)
    val_files = [str(preds_dir / f"fold{k}_val.jsonl") for k in folds]
    runs = read_fold_runs(data, val_files)  # read once: evaluation, tuning, cross-fold figures
    table, _ = evaluate_to(data, val_files, out / "eval", runs=runs)
    if not quiet:
        from imat_kit.cli.commands import print_attribute_figures, print_evaluation

        print_evaluation(table, "image")
        print_attribute_figures(table)
    timings["evaluate"] = time.perf_counter() - t

    t = _step("imat-kit tune-attributes: a threshold per attribute from the validation folds "
              "(each fold scored with thresholds tuned on the others)", quiet)
    labels = find_labels(data)
    ids = list(labels.attribute_id_list)
    thr_file = out / "eval" / "attribute_thresholds.json"
    tuned = tune_thresholds(runs, ids)
    write_thresholds(tuned, thr_file)
    cross = []
    for run in runs:
        others = [r for r in runs if r is not run] or [run]
        thr = thresholds_from(tune_thresholds(others, ids))
        cross.append(attribute_columns(run, labels, thr))
    cross_mean = {k: sum(c[k] for c in cross) / len(cross) for k in cross[0]}
    if not quiet:
        from imat_kit.eval.attr_eval import threshold_lines

        for line in threshold_lines(tuned, labels):
            print(line)
        n_tuned = sum(v["tuned"] for v in tuned["attributes"].values())
        print(f"{n_tuned} attributes tuned → {thr_file}; with thresholds from the other folds: "
              f"AP^IoU+F1 {100 * cross_mean['AP_iou_f1']:.1f}, attribute micro F1 "
              f"{cross_mean['attr_micro_f1']:.3f} (global 0.5: "
              f"{table.iloc[-2].attr_micro_f1:.3f}; prior {cross_mean['prior_micro_f1']:.3f})")
    timings["tune_attributes"] = time.perf_counter() - t

    t = _step("imat-kit tune: submit's post-processing tuned on the validation folds (each "
              "fold scored with settings tuned on the others)", quiet)
    metric = "competition2020" if year == 2020 else "competition"
    pp_file = out / "eval" / "postprocess.json"
    tuned_pp = tune(runs, labels, metric=metric, quiet=quiet, data=data)
    write_postprocess(tuned_pp, pp_file)
    tuning = _tuning_table(tuned_pp)
    with atomic_open(out / "eval" / "tuning.csv", "w", newline="") as f:
        tuning.to_csv(f, index=False, float_format="%.4f")
    if not quiet:
        from imat_kit.cli.commands import tune_lines

        print(tuning.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        for line in tune_lines(tuned_pp):
            print(line)
    timings["tune"] = time.perf_counter() - t

    t = _step("imat-kit ensemble + submit + score: the fold models' test predictions fused, the "
              "submission written, validated and scored", quiet)
    ens = preds_dir / "ensemble_test.jsonl"
    ensemble_files([preds_dir / f"fold{k}_test.jsonl" for k in folds], ens, data=data,
                   quiet=quiet)
    sub = Path(submission)
    _, problems = submit(ens, data, sub, evaluation=out / "eval" / "evaluation.csv",
                         postprocess=pp_file, manifest={"data": str(data)}, quiet=quiet)
    if problems:
        raise KitError("the demo's submission failed validation: "
                       + "; ".join(map(str, problems[:5])), file=str(sub))
    solution = data / "test_solution.csv"
    test_score = score_submission(sub, solution, data, year=year, quiet=quiet)["score"]
    masks_only = (score_submission(sub, solution, data, quiet=True)["score"] if year == 2020
                  else test_score)
    single = []  # each fold model's own submission, for comparison with the ensemble
    for k in folds:
        own = out / "eval" / f"fold{k}_only.csv"
        submit(preds_dir / f"fold{k}_test.jsonl", data, own, postprocess=pp_file, quiet=True)
        single.append(score_submission(own, solution, data, year=year, quiet=True)["score"])
    timings["ensemble_submit"] = time.perf_counter() - t

    t = _step("imat-kit plot: figures", quiet)
    val0 = preds_dir / f"fold{folds[0]}_val.jsonl"
    work_dirs = [out / "work_dirs" / config.stem / f"fold{k}" for k in folds]
    make_plot("losses", figs / "loss_curves.png", work_dirs=work_dirs,
              labels=[f"fold {k}" for k in folds])
    make_plot("pr", figs / "pr_curves.png", data=data, predictions=val0)
    make_plot("confusion", figs / "confusion_matrix.png", data=data, predictions=val0)
    make_plot("overlays", figs / "overlays.jpg", data=data, predictions=val0, n=6, seed=seed,
              attribute_thresholds=thr_file)
    make_plot("categories", figs / "category_distribution.png", data=data)
    make_plot("attributes", figs / "attribute_f1.png", data=data, predictions=val0,
              attribute_thresholds=thr_file)
    timings["figures"] = time.perf_counter() - t

    t = _step("imat-kit report: one HTML page with the error analysis", quiet)
    report = build_report(data, [str(preds_dir / f"fold{k}_val.jsonl") for k in folds],
                          out / "report.html", work_dirs=work_dirs, submission=sub,
                          attribute_thresholds=thr_file, postprocess=pp_file, quiet=quiet)
    timings["report"] = time.perf_counter() - t

    mean = table.iloc[-2]
    summary = {
        "data": str(data), "work_dirs": str(out / "work_dirs"), "predictions": str(preds_dir),
        "evaluation": str(out / "eval" / "evaluation.csv"), "submission": str(sub),
        "manifest": str(sub.with_suffix(".json")), "figures": str(figs),
        "report": report["out"],
        "folds_trained": list(folds), "iterations": iters, "year": year,
        "config": str(config),
        "val_segm_AP_mean": float(mean.segm_AP), "val_segm_AP50_mean": float(mean.segm_AP50),
        "val_competition_mean": float(mean.competition),
        "val_AP_iou_f1_mean": float(mean.AP_iou_f1),
        "val_AP_iou_f1_tuned_mean": cross_mean["AP_iou_f1"],
        "val_attr_micro_f1_mean": float(mean.attr_micro_f1),
        "val_attr_micro_f1_tuned_mean": cross_mean["attr_micro_f1"],
        "val_prior_micro_f1_mean": float(mean.prior_micro_f1),
        "attribute_thresholds": str(thr_file), "postprocess": str(pp_file),
        "tune_metric": metric,
        "val_score_defaults_mean": _nested(tuned_pp, "defaults"),
        "val_score_tuned_nested_mean": _nested(tuned_pp, "tuned"),
        "val_score_nested_gain": _nested(tuned_pp, "gain"),
        "val_score_nested_gain_std": _nested(tuned_pp, "gain_std"),
        "val_attr_micro_f1_nested_mean": _nested(tuned_pp, "attr_micro_f1_tuned"),
        "postprocess_groups_kept": tuned_pp["groups_kept"],
        "attributes_tuned": sum(v["tuned"] for v in tuned["attributes"].values()),
        "test_rule": "2020 (IoU + attribute F1)" if year == 2020 else "2019 (categories)",
        "test_competition_ensemble": test_score, "test_competition_single_folds": single,
        "test_competition_masks_only": masks_only,
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "total_seconds": round(time.perf_counter() - t_all, 1),
    }
    with atomic_open(out / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    if not quiet:
        print(f"\n== done in {summary['total_seconds'] / 60:.1f} min")
        print(f"validation segm AP (mean of folds {list(folds)}): "
              f"{100 * summary['val_segm_AP_mean']:.1f} (AP50 "
              f"{100 * summary['val_segm_AP50_mean']:.1f})")
        print(f"attributes: AP^IoU+F1 {100 * summary['val_AP_iou_f1_mean']:.1f} (tuned "
              f"thresholds from the other folds: {100 * cross_mean['AP_iou_f1']:.1f}); micro F1 "
              f"{summary['val_attr_micro_f1_mean']:.3f} (tuned "
              f"{cross_mean['attr_micro_f1']:.3f}) vs the per-category prior "
              f"{summary['val_prior_micro_f1_mean']:.3f}")
        if tuned_pp["nested"] is not None:
            print(f"post-processing ({metric}): {summary['val_score_defaults_mean']:.4f} at "
                  f"the defaults → {summary['val_score_tuned_nested_mean']:.4f} with settings "
                  f"tuned on the other folds (gain {summary['val_score_nested_gain']:+.4f} ± "
                  f"{summary['val_score_nested_gain_std']:.4f}); attribute micro F1 "
                  f"{summary['val_attr_micro_f1_nested_mean']:.3f}")
        print(f"test competition score, {summary['test_rule']} rule: ensemble "
              f"{test_score:.4f}, single folds " + ", ".join(f"{s:.4f}" for s in single)
              + (f"; masks and categories only {masks_only:.4f}" if year == 2020 else ""))
        for key in ("data", "work_dirs", "predictions", "evaluation", "attribute_thresholds",
                    "postprocess", "submission", "manifest", "figures", "report"):
            print(f"  {key:<12} {summary[key]}")
        print(f"\nopen the report: {Path(report['out']).resolve()}")
    return summary
