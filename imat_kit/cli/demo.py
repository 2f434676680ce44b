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

The demo is ``imat-kit run`` (:mod:`imat_kit.pipeline`) on the synthetic data it writes first,
with the tiny config: the same steps, the same resume rules, the same files (``OUT`` is the
run's folder, the data in ``OUT/data``). A second run is quick and an interrupted one resumes;
the demo also checks its own options in ``OUT/demo_options.json``: a run with other options
(``--iters``, ``--images``, ``--seed``) stops and says what differs instead of reusing the
first run's data and checkpoints; ``--overwrite`` starts such a run afresh.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from imat_kit.cli.formatting import demo_summary_lines
from imat_kit.cli.options import echo, jobs_option, overwrite_option, parse_folds, verbose_option
from imat_kit.errors import KitError
from imat_kit.files import atomic_open, describe_differences, file_fingerprint

#: what the demo writes under OUT (all of it is removed by --overwrite, nothing else)
OUTPUTS = ("data", "work_dirs", "predictions", "eval", "figures", "logs", ".steps",
           "summary.json", "demo_options.json", "report.html", "manifest.json", "run.log")
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


def _rescoring(pp: dict, key: str) -> float | None:
    """A nested figure of the re-scoring comparison (``without`` / ``with``), if any."""
    nested = (pp.get("rescoring") or {}).get("nested")
    return None if nested is None else float(nested[key])


def summarize(out: Path, spec, result, config: Path, iters: int, year: int,
              total_seconds: float) -> dict:
    """The key figures of a finished demo run (``OUT/summary.json``), from the run's steps."""
    r = result.results
    mean, cross = result.fold_table.mean, r["tune_attributes"]["cross_folds"]
    ev = out / "eval"
    pp = json.loads((ev / "postprocess.json").read_text())
    score, sub = r["score"], spec.submission_path
    metric = r["tune"]["metric"]
    return {
        "data": str(spec.data), "work_dirs": str(out / "work_dirs"),
        "predictions": str(out / "predictions"), "evaluation": str(ev / "evaluation.csv"),
        "submission": str(sub), "manifest": str(sub.with_suffix(".json")),
        "run_manifest": result.manifest,
        "figures": str(out / "figures"), "report": result.report,
        "folds_trained": list(spec.folds), "iterations": iters, "year": year,
        "config": str(config),
        "val_segm_AP_mean": float(mean["segm_AP"]),
        "val_segm_AP50_mean": float(mean["segm_AP50"]),
        "val_competition_mean": float(mean["competition"]),
        "val_AP_iou_f1_mean": float(mean["AP_iou_f1"]),
        "val_AP_iou_f1_tuned_mean": cross["AP_iou_f1"],
        "val_attr_micro_f1_mean": float(mean["attr_micro_f1"]),
        "val_attr_micro_f1_tuned_mean": cross["attr_micro_f1"],
        "val_prior_micro_f1_mean": float(mean["prior_micro_f1"]),
        "attribute_thresholds": str(ev / "attribute_thresholds.json"),
        "postprocess": str(ev / "postprocess.json"), "tune_metric": metric,
        "val_score_defaults_mean": _nested(pp, "defaults"),
        "val_score_tuned_nested_mean": _nested(pp, "tuned"),
        "val_score_nested_gain": _nested(pp, "gain"),
        "val_score_nested_gain_std": _nested(pp, "gain_std"),
        "val_attr_micro_f1_nested_mean": _nested(pp, "attr_micro_f1_tuned"),
        "postprocess_groups_kept": pp["groups_kept"],
        "tune_formula": ("TP/(TP+FP)" if pp.get("fn") == "ignore" else "TP/(TP+FP+FN)")
        if metric == "competition2020" else "TP/(TP+FP+FN)",
        "rescore_kept": bool((pp.get("rescoring") or {}).get("kept")),
        "val_score_nested_without_rescore": _rescoring(pp, "without"),
        "val_score_nested_with_rescore": _rescoring(pp, "with"),
        "attributes_tuned": r["tune_attributes"]["n_tuned"],
        "test_rule": score["rule"],
        "test_competition_ensemble": score["ensemble"],
        "test_competition_single_folds": list(score["single"].values()),
        "test_competition_masks_only": score["masks_only"],
        "seconds": {st.name: round(st.seconds, 1) for st in result.steps},
        "total_seconds": round(total_seconds, 1),
    }


def run_demo(out: str | Path = "outputs/demo", *, images: int = 300, folds: tuple = (0, 1),
             iters: int = 360, seed: int = 0, submission: str | Path = "submissions/demo.csv",
             config: str | Path | None = None, year: int = 2019, overwrite: bool = False,
             verbose: bool = False, quiet: bool = False,
             echo: Callable[[str], None] | None = None, jobs: int = 1) -> dict:
    """Run (or resume) the demo: synthetic data, then ``imat-kit run`` on it with the tiny
    config; returns the key figures, also written to ``OUT/summary.json``. ``echo`` hears the
    run's lines (one per step); ``jobs`` trains and predicts that many folds at once on the
    CPU (``make demo``: 2)."""
    from imat_kit.mmdet_ext.config import is_attribute_model, load_config
    from imat_kit.pipeline.chain import run_pipeline
    from imat_kit.pipeline.spec import ModelSpec, RunSpec, check_models

    config = Path(config) if config else default_config(year)
    if not config.is_file():
        raise KitError("config not found", file=str(config))
    if not is_attribute_model(load_config(config)):
        raise KitError("the demo's config predicts no attributes (it needs the attribute "
                       "branch, as configs/tiny_maskrcnn_imat_attr.py has)", file=str(config))
    out = Path(out)
    spec = RunSpec(data=out / "data", out=out, folds=tuple(folds), seed=seed,
                   models=(ModelSpec(config=config, cfg_options=tuple(_schedule(iters))),),
                   submission=Path(submission), jobs=jobs)
    check_models(spec.models)
    _check_options(out, {"images": images, "seed": seed, "iters": iters, "year": year,
                         "config_sha256": file_fingerprint(config)["sha256"]},
                   overwrite=overwrite, quiet=quiet)
    t_all = time.perf_counter()

    def synth(run) -> None:  # the demo's own first step: its data
        from imat_kit.data.synth import generate_images

        if (spec.data / "train.csv").exists():
            run.say(f"{'synth':<16} skipped (written before): {images} training images, "
                    f"seed {seed}, {year} layout")
            return
        generate_images(spec.data, images=images, seed=seed, year=year, quiet=quiet)
        run.say(f"{'synth':<16} done: {images} training images, seed {seed}, {year} layout "
                f"→ {spec.data}")

    result = run_pipeline(spec, verbose=verbose, quiet=quiet, echo=echo, before=synth)
    summary = summarize(out, spec, result, config, iters, year, time.perf_counter() - t_all)
    with atomic_open(out / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def add_demo(sub, parents) -> None:
    s = sub.add_parser("demo", parents=parents, help="the whole pipeline on synthetic data "
                       "(resumable)")
    s.add_argument("--out", default=None, help="default outputs/demo (2020: outputs/demo2020)")
    s.add_argument("--year", type=int, choices=[2019, 2020], default=2019,
                   help="2020: the synthetic 2020 set, a 2020-layout submission and rule")
    s.add_argument("--images", type=int, default=300)
    s.add_argument("--folds", type=parse_folds, default=[0, 1], help="folds to train")
    s.add_argument("--iters", type=int, default=360, help="training iterations per fold")
    jobs_option(s, 2)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--submission", default=None,
                   help="default submissions/demo.csv (2020: submissions/demo2020.csv)")
    overwrite_option(s, "start afresh when OUT holds a demo run with other options")
    verbose_option(s)
    s.set_defaults(func=run_command)


def run_command(a: argparse.Namespace) -> int:
    suffix = "2020" if a.year == 2020 else ""
    s = run_demo(a.out or f"outputs/demo{suffix}", images=a.images, folds=tuple(a.folds),
                 iters=a.iters, seed=a.seed, year=a.year,
                 submission=a.submission or f"submissions/demo{suffix}.csv",
                 overwrite=a.overwrite, verbose=a.verbose, quiet=a.quiet, echo=echo,
                 jobs=a.jobs)
    for line in demo_summary_lines(s):
        print(line)
    return 0


#: command → the function that adds its parser
PARSERS = {"demo": add_demo}
