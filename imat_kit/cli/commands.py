"""The ``imat-kit`` command line: parses arguments, calls the step functions, prints results.

Every command exits 0 on success, 2 on bad input (one line naming the file, row and value),
1 when a submission fails validation, 130 when interrupted. Each command's work is one
function of the core (or of ``imat_kit.mmdet_ext``) that ``imat-kit demo`` calls too.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings
from pathlib import Path

from imat_kit import __version__
from imat_kit.cli.formatting import (
    print_attribute_figures,
    print_evaluation,
    threshold_lines,
    tune_lines,
)
from imat_kit.errors import KitError

DESCRIPTION = """\
From the iMaterialist Fashion competition files to a scored submission with MMDetection.

Typical run (real data in data/imat2019, 5 folds):
  imat-kit prepare  --data data/imat2019
  imat-kit train    configs/maskrcnn_r50_imat.py --folds 0,1,2,3,4 --data-root data/imat2019
  imat-kit predict  CONFIG CHECKPOINT --split val --fold 0 --out preds/fold0_val.jsonl
  imat-kit evaluate --data data/imat2019 --predictions 'preds/fold*_val.jsonl'
  imat-kit ensemble --inputs preds/fold*_test.jsonl --out preds/ensemble_test.jsonl
  imat-kit submit   --predictions preds/ensemble_test.jsonl --data data/imat2019 \\
                    --out submissions/mine.csv
Try it all on synthetic data first: imat-kit demo (make demo)."""

#: modules whose import-time deprecation notices are not the user's business
_THIRD_PARTY = r"(mmcv|mmdet|mmengine|mim|torch|pkg_resources|setuptools|albumentations|" \
               r"albucore|pycocotools|matplotlib|openxlab|yapf|numpy|pandas|cv2)(\.|$)"


def quiet_third_party_warnings() -> None:
    """Hide the deprecation warnings that mmcv/mmdet/mmengine and friends raise on import (and
    pkg_resources' notice about itself); warnings of imat-kit itself still show."""
    for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=_THIRD_PARTY)
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated as an API")


def _echo(line: str) -> None:
    print(line, flush=True)


def _parse_folds(text: str) -> list[int]:
    try:
        folds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"folds must be like 0,1,2 (got {text!r})") from None
    if not folds or min(folds) < 0:
        raise argparse.ArgumentTypeError(f"folds must be non-negative (got {text!r})")
    return folds


def _quiet_parent() -> argparse.ArgumentParser:
    q = argparse.ArgumentParser(add_help=False)
    q.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    return q


# --- synth, prepare, stats ------------------------------------------------------------------


def _cmd_synth(a: argparse.Namespace) -> int:
    from imat_kit.data import synth

    if a.scale == "full":
        images = a.images or synth.FULL_IMAGES
        rows = round(images * synth.FULL_ROWS / synth.FULL_IMAGES)
        s = synth.generate_full_csv(a.out, seed=a.seed, images=images, rows=rows, quiet=a.quiet)
        print(f"wrote {a.out}/train.csv: {s['train_images']:,} images, {s['rows']:,} rows "
              "(full scale, no images)")
    elif a.scale == "real":
        if a.year != 2019:
            raise KitError("synth --scale real writes the 2019 layout only (its images serve "
                           "loading and memory benchmarks, where the layout does not matter)",
                           value=a.year)
        s = synth.generate_real_images(a.out, images=a.images or 200,
                                       test_images=a.test_images, seed=a.seed, quiet=a.quiet)
        w, h = s["mean_size"]
        print(f"wrote {a.out}: {s['train_images']} train images at real sizes (mean "
              f"{w:.0f} × {h:.0f}, the largest 10717 × 6824), {s['rows']} instances, "
              f"{s['test_images']} test images")
    else:
        s = synth.generate_images(a.out, images=a.images or 200, test_images=a.test_images,
                                  seed=a.seed, year=a.year, quiet=a.quiet)
        print(f"wrote {a.out} ({a.year} layout): {s['train_images']} train images "
              f"({s['rows']} instances, "
              f"{s['attr_rows']} with attributes), {s['test_images']} test images")
    return 0


def _cmd_prepare(a: argparse.Namespace) -> int:
    from imat_kit.data.prepare import prepare

    r = prepare(a.data, a.out, n_folds=a.folds, split=a.split, seed=a.seed,
                size_mismatch=a.size_mismatch, image_check=not a.no_image_check,
                skip_bad_rows=a.skip_bad_rows, annotations=a.annotations, quiet=a.quiet)
    out = Path(r["out"])
    b = r["balance"]
    print(f"{r['images']:,} images, {r['annotations']:,} instances ({r['layout']} layout, "
          f"{r['attributes']} attributes) → {out / 'annotations'}/all.json")
    print(f"{r['folds']} {r['split']} folds (seed {r['seed']}), images per fold "
          f"{r['images_per_fold']} → {out / 'folds.csv'}")
    print(f"category balance (images per fold): mean max relative deviation "
          f"{b['mean_max_rel_dev']:.4f}, worst {b['worst_max_rel_dev']:.4f} "
          f"({b['worst_category']}) → {out / 'fold_balance.csv'}")
    if r["test_images"] is not None:
        print(f"{r['test_images']} test images → {out / 'annotations'}/test.json")
    for fix in r["size_fixes"]:
        print(f"size fix: {fix}")
    if r["rejected_rows"]:
        print(f"{r['rejected_rows']} row(s) left out, listed in {out / 'rejected_rows.csv'}")
    return 0


def _cmd_stats(a: argparse.Namespace) -> int:
    import json

    from imat_kit.data.paths import find_labels
    from imat_kit.data.stats import dataset_stats
    from imat_kit.plots import plot_category_distribution

    data = Path(a.data)
    s = dataset_stats(data / "train.csv", find_labels(data))
    cats = s["categories"]
    if a.json:
        out = {k: v for k, v in s.items() if k not in ("categories", "attributes")}
        out["categories"] = cats.to_dict(orient="records")
        out["attributes"] = s["attributes"].to_dict(orient="records")
        print(json.dumps(out, indent=2, default=int))
    else:
        print(f"{s['rows']:,} instances on {s['images']:,} images ({s['layout']} layout); "
              f"{s['instances_per_image']['mean']:.2f} per image (max "
              f"{s['instances_per_image']['max']}); {s['rows_with_attributes']:,} rows with "
              "attributes")
        print(f"height {s['height']}, width {s['width']}; smallest {s['smallest'][0]}x"
              f"{s['smallest'][1]}, largest {s['largest'][0]}x{s['largest'][1]} (HxW)")
        print(cats.sort_values("instances", ascending=False).to_string(index=False))
        if len(s["attributes"]):
            top = s["attributes"].sort_values("rows", ascending=False).head(15)
            print("\nmost frequent attributes:")
            print(top.to_string(index=False))
    if a.plot:
        plot_category_distribution(cats, a.plot)
        print(f"category distribution → {a.plot}")
    return 0


# --- train, predict --------------------------------------------------------------------------


def _cmd_train(a: argparse.Namespace) -> int:
    from imat_kit.mmdet_ext.train import train_folds

    options = [*(a.cfg_options or []), *(["imat_tensorboard=True"] if a.tensorboard else [])]
    recs = train_folds(a.config, a.folds, work_root=a.work_root, data_root=a.data_root,
                       cfg_options=options, launcher=a.launcher, gpus=a.gpus,
                       auto_scale_lr=a.auto_scale_lr, amp=a.amp, dry_run=a.dry_run,
                       overwrite=a.overwrite, verbose=a.verbose, quiet=a.quiet,
                       echo=None if a.quiet else _echo)
    for r in recs:
        if "command" in r:
            print(f"fold {r['fold']} {r['phase']} ({r['would_be']}, dry run): "
                  f"IMAT_FOLD={r['fold']} " + shlex.join(r["command"]))
        else:
            print(f"fold {r['fold']} {r['phase']}: {r['status']}"
                  + (f" → {r['checkpoint']}" if "checkpoint" in r else ""))
    return 0


def _tta_scales(text: str | None) -> list[float] | None:
    """``--tta-scales 0.8,1.0,1.2`` as factors (None when not given)."""
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise KitError("--tta-scales takes factors like 0.8,1.0,1.2", value=text) from None


def _cmd_predict(a: argparse.Namespace) -> int:
    from imat_kit.errors import KitError
    from imat_kit.mmdet_ext.predict import last_checkpoints, predict, predict_checkpoints

    scales = _tta_scales(a.tta_scales)
    if a.checkpoints and a.checkpoint:
        raise KitError("give one checkpoint, or several with --checkpoints, not both",
                       value=a.checkpoint)
    if a.last_checkpoints is not None and (not a.checkpoint or a.checkpoints):
        raise KitError("--last-checkpoints N takes the work dir in place of the checkpoint")
    given = a.checkpoints or ([a.checkpoint] if a.checkpoint else [])
    if not given:
        raise KitError("predict needs a checkpoint (or --checkpoints A B …, or a work dir with "
                       "--last-checkpoints N)")
    if a.folds is not None:  # one model per fold: {fold} names each one's files
        for what, texts in (("--out", [a.out]), ("the checkpoint path", given)):
            bad = [t for t in texts if "{fold}" not in t]
            if bad:
                raise KitError(f"--folds needs {{fold}} in {what} (one per fold), e.g. "
                               "work_dirs/cfg/fold{fold}/iter_3000.pth and "
                               "preds/fold{fold}_val.jsonl", value=bad[0])
    for fold in a.folds if a.folds is not None else [a.fold]:
        def at(text: str, fold: int = fold) -> str:
            return text.replace("{fold}", str(fold))

        kw = dict(split=a.split, fold=fold, out=at(a.out), data_root=a.data_root, tta=a.tta,
                  tta_scales=scales, batch_size=a.batch_size, device=a.device,
                  soft_size=a.soft_size, cfg_options=a.cfg_options, overwrite=a.overwrite,
                  attribute_floor=a.attribute_floor, quiet=a.quiet)
        ckpts = ([str(c) for c in last_checkpoints(at(a.checkpoint), a.last_checkpoints)]
                 if a.last_checkpoints is not None else [at(c) for c in given])
        lead = f"fold {fold}: " if a.folds is not None else ""
        if len(ckpts) > 1:
            r = predict_checkpoints(a.config, ckpts, **kw)
            print(f"{lead}{r['images']} images ({r['predicted_now']} predicted now) × "
                  f"{r['checkpoints']} checkpoints, fused → {r['out']}")
        else:
            r = predict(a.config, ckpts[0], **kw)
            print(f"{lead}{r['images']} images ({r['predicted_now']} predicted now) → "
                  f"{r['out']}")
    return 0


# --- evaluate, ensemble, submit, validate, score ---------------------------------------------


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from imat_kit.data.paths import find_labels
    from imat_kit.eval.evaluate import evaluate_to
    from imat_kit.postprocess import load_postprocess, load_thresholds

    files = _fold_files(a.predictions)
    labels = find_labels(a.data)
    thresholds = load_thresholds(a.attribute_thresholds, labels)
    post = None if a.postprocess is None else load_postprocess(a.postprocess, labels)[0]
    table, _ = evaluate_to(a.data, files, a.out, average=a.average, score_thr=a.score_thr,
                           thresholds=thresholds, postprocess=post, bbox=a.bbox, fn=a.fn)
    print_evaluation(table, a.average)
    print_attribute_figures(table)
    out = Path(a.out)
    extra = ", " + str(out / "per_attribute.csv") if "AP_iou_f1" in table.columns else ""
    print(f"→ {out / 'evaluation.csv'}, {out / 'per_category_ap.csv'}{extra}")
    return 0


def _cmd_tune(a: argparse.Namespace) -> int:
    from imat_kit.data.paths import find_labels
    from imat_kit.eval.runs import read_fold_runs
    from imat_kit.postprocess import write_postprocess
    from imat_kit.tune.nested import tune

    labels = find_labels(a.data)
    metric = a.metric or ("competition2020" if labels.year == 2020 else "competition")
    runs = read_fold_runs(a.data, _fold_files(a.predictions))
    r = tune(runs, labels, metric=metric, min_support=a.min_support, quiet=a.quiet,
             data=a.data, fn=a.fn, rescore=a.rescore, seed=a.seed)
    write_postprocess(r, a.out)
    for line in tune_lines(r):
        print(line)
    print(f"→ {a.out}")
    return 0


def _cmd_tune_attributes(a: argparse.Namespace) -> int:
    from imat_kit.data.paths import find_labels
    from imat_kit.eval.attr_eval import tune_thresholds, write_thresholds
    from imat_kit.eval.evaluate import read_fold_runs

    runs = read_fold_runs(a.data, _fold_files(a.predictions))
    r = tune_thresholds(runs, list(find_labels(a.data).attribute_id_list),
                        min_support=a.min_support, global_threshold=a.global_threshold,
                        score_thr=a.score_thr)
    write_thresholds(r, a.out)
    if not a.quiet:
        for line in threshold_lines(r, find_labels(a.data), limit=20):
            print(line)
    att = r["attributes"].values()
    tuned = [v for v in att if v["tuned"]]
    gain = sum(v["f1"] - v["f1_at_global"] for v in tuned) / max(len(tuned), 1)
    print(f"{len(tuned)} of {len(r['attributes'])} attributes with truth tuned (support >= "
          f"{a.min_support}) over {r['matched_instances']} matched instances of folds "
          f"{r['folds']}; mean F1 gain of the tuned ones {gain:+.3f}; global threshold "
          f"{r['global_threshold']:.3f}{' (tuned)' if r['global_tuned'] else ''}; micro F1 "
          f"{r['micro_f1_at_0.5']:.3f} at 0.5 → {r['micro_f1']:.3f} (on the folds it was "
          f"tuned on) → {a.out}")
    return 0


def _cmd_ensemble(a: argparse.Namespace) -> int:
    from imat_kit.ensemble import ensemble_files

    r = ensemble_files(a.inputs, a.out, method=a.method, iou=a.iou, weights=a.weights,
                       data=a.data, quiet=a.quiet, scores=a.scores)
    print(f"{r['inputs']} inputs → {r['images']} images, {r['instances']} instances "
          f"({a.method}) → {a.out}")
    return 0


def _cmd_submit(a: argparse.Namespace) -> int:
    from imat_kit.errors import KitError
    from imat_kit.submission import SubmitConfig, submit

    given = {k: v for k, v in (("--score-thr", a.score_thr), ("--max-per-image", a.max_per_image),
                               ("--min-area", a.min_area),
                               ("--attribute-thresholds", a.attribute_thresholds),
                               ("--attributes", a.attributes or None)) if v is not None}
    if a.postprocess is not None and given:
        raise KitError(f"{', '.join(given)}: the postprocess file holds these settings (give "
                       "one or the other)", file=a.postprocess)
    d = SubmitConfig()

    def pick(v, default):
        return default if v is None else v

    cfg = SubmitConfig(score_thr=pick(a.score_thr, d.score_thr),
                       max_per_image=pick(a.max_per_image, d.max_per_image),
                       min_area=pick(a.min_area, d.min_area), mask_size=a.mask_size,
                       attributes=a.attributes)
    man, problems = submit(a.predictions, a.data, a.out, cfg, evaluation=a.evaluation,
                           attribute_thresholds=a.attribute_thresholds, quiet=a.quiet,
                           postprocess=a.postprocess)
    written = Path(a.out).with_name(man["submission"])
    print(f"{man['layout']} layout: {man['rows']} rows for {man['images']} images "
          f"({man['images_without_prediction']} without a mask) → {written}, manifest "
          f"{written.with_suffix('.json')}")
    for p in problems:
        print(f"{written}: {p}", file=sys.stderr)
    if problems:
        print(f"imat-kit submit: {len(problems)} validation problem(s): the CSV is kept as "
              f"{written} for inspection, nothing was written to {a.out}", file=sys.stderr)
        return 1
    print("validated: no problems")
    return 0


def _cmd_validate(a: argparse.Namespace) -> int:
    from imat_kit.data.paths import find_labels, sample_image_ids, test_image_sizes
    from imat_kit.submission import validate_submission

    data = Path(a.data)
    problems = validate_submission(a.submission, sample_image_ids(data),
                                   test_image_sizes(data, quiet=a.quiet), find_labels(data),
                                   mask_size=a.mask_size)
    for p in problems:
        print(f"{a.submission}: {p}")
    if problems:
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{a.submission}: valid")
    return 0


def _cmd_score(a: argparse.Namespace) -> int:
    from imat_kit.submission import score_submission

    r = score_submission(a.submission, a.solution, a.data, average=a.average,
                         attributes=a.attributes, year=a.year, sweep=a.sweep, f1=a.f1,
                         fn=a.fn, quiet=a.quiet)
    rule = (f"2020 rule: {FN_TEXT[a.fn]}, IoU and attribute F1 ({a.f1}, {a.sweep} sweep)"
            if a.year == 2020
            else f"attributes {'matched' if a.attributes else 'ignored'}")
    print(f"competition score ({a.average} average, {rule}): {r['score']:.4f} over "
          f"{r['count']} {'images' if a.average == 'image' else 'units'}")
    return 0


# --- plot, demo -----------------------------------------------------------------------------


def _cmd_plot(a: argparse.Namespace) -> int:
    from imat_kit.plots import make_plot

    r = make_plot(a.what, a.out, work_dirs=a.work_dirs, labels=a.labels, data=a.data,
                  predictions=a.predictions, score_thr=a.score_thr, images=a.images, n=a.n,
                  seed=a.seed, attribute_thresholds=a.attribute_thresholds)
    if "images" in r:
        print("images: " + " ".join(r["images"]))
    if r.get("points") == 0:
        print("no training loss logged yet: the figure says so")
    if "attributes" in r:
        print(f"{r['attributes']} attributes with truth among the matched instances")
    print(f"{a.what} → {a.out}")
    return 0


def _cmd_report(a: argparse.Namespace) -> int:
    from imat_kit.report import build_report

    files = _fold_files(a.predictions)
    r = build_report(a.data, files, a.out, work_dirs=a.work_dirs, submission=a.submission,
                     gallery=a.gallery, average=a.average, score_thr=a.score_thr,
                     attribute_thresholds=a.attribute_thresholds, quiet=a.quiet,
                     postprocess=a.postprocess)
    print(f"report of {len(files)} fold(s) → {r['out']}")
    return 0


def _cmd_demo(a: argparse.Namespace) -> int:
    from imat_kit.cli.demo import run_demo
    from imat_kit.cli.formatting import demo_summary_lines

    suffix = "2020" if a.year == 2020 else ""
    s = run_demo(a.out or f"outputs/demo{suffix}", images=a.images, folds=tuple(a.folds),
                 iters=a.iters, seed=a.seed, year=a.year,
                 submission=a.submission or f"submissions/demo{suffix}.csv",
                 overwrite=a.overwrite, verbose=a.verbose, quiet=a.quiet, echo=_echo,
                 jobs=a.jobs)
    for line in demo_summary_lines(s):
        print(line)
    return 0


def _cmd_run(a: argparse.Namespace) -> int:
    from imat_kit.cli.formatting import run_summary_lines
    from imat_kit.pipeline.chain import run_pipeline
    from imat_kit.pipeline.runfile import RUN_FILE_SUFFIXES, read_run_file
    from imat_kit.pipeline.spec import spec_from_options

    files = [t for t in a.targets if Path(t).suffix in RUN_FILE_SUFFIXES]
    if files:
        if len(a.targets) > 1:
            raise KitError("give one run file, or configs, not both", value=" ".join(a.targets))
        given = [flag for flag, v in (("--data", a.data), ("--out", a.out),
                                      ("--gpus", a.gpus), ("--cfg-options", a.cfg_options),
                                      ("--tta", a.tta), ("--submission", a.submission))
                 if v is not None]
        if given:
            raise KitError(f"{', '.join(given)}: the run file holds these settings (give them "
                           "there)", file=files[0])
        spec = read_run_file(files[0])
    else:
        spec = spec_from_options(a.targets, data=a.data, out=a.out, folds=a.folds,
                                 seed=a.seed, gpus=a.gpus, jobs=a.jobs,
                                 launcher=a.launcher,
                                 cfg_options=a.cfg_options, tta=a.tta,
                                 tta_scales=_tta_scales(a.tta_scales),
                                 soft_size=a.soft_size, checkpoints=a.checkpoints,
                                 checkpoint=a.checkpoint, submission=a.submission,
                                 rescore=not a.no_rescore, figures=not a.no_figures)
    if a.dry_run:
        from imat_kit.pipeline.chain import plan

        for line in plan(spec):
            print(line)
        return 0
    result = run_pipeline(spec, retrain=a.retrain, verbose=a.verbose, quiet=a.quiet,
                          echo=_echo)
    for line in run_summary_lines(result):
        print(line)
    return 0


# --- the parser ------------------------------------------------------------------------------
# Options that several commands share are declared once, by the helpers below.

def _data(s, help: str = "the prepared data folder") -> None:
    s.add_argument("--data", required=True, help=help)


def _verbose(s) -> None:
    s.add_argument("--verbose", "-v", action="store_true",
                   help="show mmengine's whole training output live (by default one progress "
                   "bar per run; the output is in the run's train.log either way)")


def _overwrite(s, what: str) -> None:
    s.add_argument("--overwrite", action="store_true", help=f"{what} (default: stop and say "
                   "what differs)")


def _cfg_options(s, example: str) -> None:
    s.add_argument("--cfg-options", nargs="+", default=None, metavar="KEY=VALUE",
                   help=f"config overrides, parsed as mim parses them, e.g. {example}")


def _fold_inputs(s) -> None:
    """The prepared data and one validation predictions file per fold."""
    _data(s)
    s.add_argument("--predictions", nargs="+", required=True,
                   help="validation predictions, one file per fold (glob patterns allowed)")


def _fold_files(patterns: list[str]) -> list[str]:
    """The files the ``--predictions`` patterns match, sorted; none is an error."""
    import glob

    files = sorted({f for pat in patterns for f in glob.glob(pat)})
    if not files:
        raise KitError(f"no predictions file matches {' '.join(patterns)}")
    return files


def _jobs(s, default: int) -> None:
    s.add_argument("--jobs", type=int, default=default, metavar="N",
                   help="without GPUs: N (model, fold) trainings and predictions at once on the "
                   f"CPU, each with its share of the cores (default {default}; on 2 cores 2 "
                   "jobs train the demo's folds about 25%% faster than one after another)")


def _mask_size(s) -> None:
    s.add_argument("--mask-size", choices=["original", "512"], default="original")


def _thresholds(s) -> None:
    s.add_argument("--attribute-thresholds", default=None, metavar="FILE",
                   help="per-attribute thresholds of `imat-kit tune-attributes` (default: a "
                   "global 0.5)")


def _postprocess(s, help: str) -> None:
    s.add_argument("--postprocess", default=None, metavar="FILE", help=help)


def _average(s) -> None:
    from imat_kit.eval.metric import AVERAGES

    s.add_argument("--average", choices=AVERAGES, default="image",
                   help="how the competition score averages (docs/metrics.md)")


#: how each ``--fn`` choice is named in a score's line
FN_TEXT = {"ignore": "TP/(TP+FP)", "count": "TP/(TP+FP+FN)"}


def _fn(s) -> None:
    from imat_kit.eval.metric import FN_RULES

    s.add_argument("--fn", choices=FN_RULES, default="ignore",
                   help="2020: false negatives not counted, TP/(TP+FP) as the competition "
                   "published (ignore), or counted as in 2019 (count)")


def _parser_data_steps(sub, parents) -> None:
    from imat_kit.data.coco import SIZE_POLICIES
    from imat_kit.data.folds import METHODS

    s = sub.add_parser("synth", parents=parents, help="write a synthetic dataset in the "
                       "competition layout")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--images", type=int, default=None,
                   help="training images (default 200; 45,625 with --scale full)")
    s.add_argument("--test-images", type=int, default=None,
                   help="test images (default: a fifth of --images)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--scale", choices=["small", "full", "real"], default="small",
                   help="small: 192-320 px images that a tiny model learns (the default); "
                   "full: only a full-size train.csv (45,625 images, ~333k rows, real image "
                   "sizes), for benchmarks; real: JPEGs at the real sizes (mean about 1710 × "
                   "2151, up to 10717 × 6824, 7.3 instances per image), for loading and "
                   "memory benchmarks")
    s.add_argument("--year", type=int, choices=[2019, 2020], default=2019,
                   help="competition layout and label file: 2019 (ClassId 6_28_77, 92 "
                   "attributes) or 2020 (AttributesIds column, 294 attributes)")
    s.set_defaults(func=_cmd_synth)

    s = sub.add_parser("prepare", parents=parents, help="train.csv → COCO json, folds, "
                       "per-fold COCO files")
    _data(s, "folder with the competition files")
    s.add_argument("--out", default=None, help="output folder (default: --data)")
    s.add_argument("--folds", type=int, default=5)
    s.add_argument("--split", choices=METHODS, default="stratified")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size-mismatch", choices=SIZE_POLICIES, default="error",
                   help="when a CSV Height/Width disagrees with the JPEG: fail (default), "
                   "transpose the masks of an exact swap, or drop the image")
    s.add_argument("--no-image-check", action="store_true",
                   help="convert without the train/ images (sizes are not checked)")
    s.add_argument("--skip-bad-rows", action="store_true",
                   help="leave malformed rows out (listed in rejected_rows.csv) instead of "
                   "failing")
    s.add_argument("--annotations", default=None,
                   help="a Fashionpedia instances_attributes_*.json to read instead of "
                   "train.csv (default: DATA/instances_attributes_train2020.json when DATA "
                   "has no train.csv)")
    s.set_defaults(func=_cmd_prepare)

    s = sub.add_parser("stats", parents=parents, help="category/attribute counts, image sizes")
    _data(s, "folder with train.csv")
    s.add_argument("--plot", default=None, help="write the category distribution to this PNG")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=_cmd_stats)


def _parser_model_steps(sub, parents) -> None:
    s = sub.add_parser("train", parents=parents, help="train folds one after another, each "
                       "through its config's phases (resumable)")
    s.add_argument("config", help="an MMDetection config, e.g. configs/maskrcnn_r50_imat.py")
    s.add_argument("--folds", type=_parse_folds, default=[0], help="e.g. 0,1,2,3,4 (default 0)")
    s.add_argument("--work-root", default="work_dirs",
                   help="work dirs go to WORK_ROOT/<config name>/fold<k> (default work_dirs)")
    s.add_argument("--data-root", default=None,
                   help="the prepared data folder (sets IMAT_DATA_ROOT; default: the config's)")
    s.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none",
                   help="pytorch: N processes on this machine; slurm: through srun (mim)")
    s.add_argument("--gpus", type=int, default=1, help="processes/GPUs with --launcher")
    _cfg_options(s, "load_from=None train_cfg.max_epochs=2 (passed to every run)")
    s.add_argument("--auto-scale-lr", action="store_true",
                   help="scale lr to the real total batch (mmdet's auto_scale_lr)")
    s.add_argument("--amp", nargs="?", const="bf16", choices=["bf16", "fp16"], default=None,
                   help="mixed precision on a CUDA GPU (AmpOptimWrapper): bf16 (default) or "
                   "fp16")
    s.add_argument("--tensorboard", action="store_true",
                   help="also log to TensorBoard (tensorboard --logdir WORK_ROOT)")
    _overwrite(s, "delete a phase's earlier run when it was made with other settings")
    s.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    _verbose(s)
    s.set_defaults(func=_cmd_train)

    s = sub.add_parser("predict", parents=parents, help="run a model over a fold's val images "
                       "or the test set; resumable")
    s.add_argument("config")
    s.add_argument("checkpoint", nargs="?", default=None,
                   help="a .pth (or, with --last-checkpoints, a work dir)")
    s.add_argument("--checkpoints", nargs="+", default=None, metavar="PTH",
                   help="a checkpoint ensemble: predict with each, fuse (resumable per "
                   "checkpoint)")
    s.add_argument("--last-checkpoints", type=int, default=None, metavar="N",
                   help="a checkpoint ensemble of the work dir's N latest checkpoints")
    s.add_argument("--split", choices=["val", "test"], required=True)
    which = s.add_mutually_exclusive_group()
    which.add_argument("--fold", type=int, default=0)
    which.add_argument("--folds", type=_parse_folds, default=None, metavar="K,K,…",
                       help="each fold in turn, with its own model: {fold} in the checkpoint "
                       "path and in --out, e.g. work_dirs/cfg/fold{fold}/iter_3000.pth "
                       "--out preds/fold{fold}_val.jsonl")
    s.add_argument("--out", required=True, help="predictions .jsonl")
    s.add_argument("--data-root", default=None, help="prepared data (default: the config's)")
    s.add_argument("--tta", choices=["flip", "scales", "scales+flip"], default=None,
                   help="test-time augmentation, passes fused by the ensemble's rule: a "
                   "mirrored pass, several scales of the test resize, or both")
    s.add_argument("--tta-scales", default=None, metavar="F,F,…",
                   help="factors of the test resize for --tta scales (default 0.8,1.0,1.2)")
    s.add_argument("--batch-size", type=int, default=2,
                   help="images per forward pass (the predictions do not depend on it)")
    s.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if any)")
    s.add_argument("--soft-size", type=int, default=0,
                   help="also keep each mask's probabilities inside its box at SxS (e.g. 28), "
                   "for soft ensembling")
    s.add_argument("--attribute-floor", type=float, default=0.05,
                   help="attribute models: store each instance's attribute probabilities at "
                   "or above this (default 0.05)")
    _cfg_options(s, "model.test_cfg.rcnn.score_thr=0.01")
    _overwrite(s, "predict every image again when OUT holds predictions made with other "
               "settings")
    s.set_defaults(func=_cmd_predict)


def _parser_result_steps(sub, parents) -> None:
    from imat_kit.ensemble import METHODS
    from imat_kit.plots import PLOTS

    s = sub.add_parser("evaluate", parents=parents, help="fold table: COCO AP and competition "
                       "score per fold, mean ± std, per-category AP")
    _fold_inputs(s)
    s.add_argument("--out", default=".", help="folder for evaluation.csv, per_category_ap.csv")
    _average(s)
    s.add_argument("--score-thr", type=float, default=0.3,
                   help="score threshold for the competition score (COCO AP uses all)")
    s.add_argument("--bbox", action="store_true",
                   help="add the box AP (column bbox_AP): a second COCO pass over the boxes")
    _thresholds(s)
    _postprocess(s, "a file of `imat-kit tune`: add the fold figures at its settings "
                 "(columns *_post) beside the defaults")
    _fn(s)
    s.set_defaults(func=_cmd_evaluate)

    s = sub.add_parser("tune", parents=parents, help="tune submit's post-processing (score "
                       "thresholds, cap, min area, mask threshold, attribute decoding) on the "
                       "validation folds, with a nested cross-fold figure")
    _fold_inputs(s)
    s.add_argument("--out", default="postprocess.json", help="the settings JSON")
    s.add_argument("--metric", choices=["competition", "competition2020", "ap_iou_f1"],
                   default=None, help="what to maximise (default: competition2020 for 2020 "
                   "data, else competition)")
    _fn(s)
    s.add_argument("--rescore", action="store_true",
                   help="also fit a model of each prediction's chance to be right (the 2020 "
                   "winner's move) whose output replaces the score; kept only where its nested "
                   "gain is positive (docs/predict-and-submit.md)")
    s.add_argument("--seed", type=int, default=0, help="--rescore: the model's seed")
    s.add_argument("--min-support", type=int, default=20,
                   help="categories with at least this many matched truths get their own "
                   "score threshold (default 20)")
    s.set_defaults(func=_cmd_tune)

    s = sub.add_parser("tune-attributes", parents=parents, help="one probability threshold "
                       "per attribute, maximising its F1 over the validation folds")
    _fold_inputs(s)
    s.add_argument("--out", default="attribute_thresholds.json", help="the thresholds JSON")
    s.add_argument("--min-support", type=int, default=10,
                   help="attributes with fewer matched truths keep the global threshold")
    s.add_argument("--global-threshold", type=float, default=None,
                   help="the threshold of the attributes below --min-support (default: tuned "
                   "for the micro F1 of all attributes pooled)")
    s.add_argument("--score-thr", type=float, default=0.3,
                   help="detections below this score are not matched")
    s.set_defaults(func=_cmd_tune_attributes)

    s = sub.add_parser("ensemble", parents=parents, help="fuse several prediction files")
    s.add_argument("--inputs", nargs="+", required=True, help="predictions .jsonl files")
    s.add_argument("--out", required=True)
    s.add_argument("--method", choices=METHODS, default="fusion")
    s.add_argument("--iou", type=float, default=0.5, help="mask IoU to group/suppress")
    s.add_argument("--weights", type=float, nargs="+", default=None,
                   help="one weight per input (default equal)")
    s.add_argument("--data", default=None,
                   help="the prepared data: check the inputs against its label file and the "
                   "split's images (default: against the label space the inputs' headers "
                   "record)")
    s.add_argument("--scores", choices=["members", "mean"], default="members",
                   help="fusion: the fused scores on one input's scale, so that settings tuned "
                   "on single models keep as many predictions (members), or the weighted mean "
                   "over all inputs (mean)")
    s.set_defaults(func=_cmd_ensemble)

    s = sub.add_parser("submit", parents=parents, help="predictions → competition CSV + "
                       "manifest, validated")
    s.add_argument("--predictions", required=True, help="a predictions .jsonl (test split)")
    _data(s, "folder with sample_submission.csv and test/")
    s.add_argument("--out", required=True, help="e.g. submissions/NAME.csv")
    s.add_argument("--score-thr", type=float, default=None, help="default 0.3")
    s.add_argument("--max-per-image", type=int, default=None, help="default 100")
    s.add_argument("--min-area", type=int, default=None,
                   help="drop instances left with fewer pixels after overlap removal "
                   "(default 20)")
    _mask_size(s)
    s.add_argument("--attributes", action="store_true",
                   help="2019 layout: write ClassId with attributes when predictions carry "
                   "them (a 2020 submission always writes them in AttributesIds)")
    s.add_argument("--evaluation", default=None,
                   help="evaluation.csv of `imat-kit evaluate`: fold scores for the manifest")
    _thresholds(s)
    _postprocess(s, "apply the settings of `imat-kit tune` (instead of --score-thr, "
                 "--max-per-image, --min-area and --attribute-thresholds)")
    s.set_defaults(func=_cmd_submit)

    s = sub.add_parser("validate", parents=parents, help="check a submission CSV")
    s.add_argument("--submission", required=True)
    _data(s, "folder with sample_submission.csv and test/")
    _mask_size(s)
    s.set_defaults(func=_cmd_validate)

    s = sub.add_parser("score", parents=parents, help="score a submission against a solution "
                       "in train.csv layout (e.g. the synthetic test_solution.csv)")
    s.add_argument("--submission", required=True)
    s.add_argument("--solution", required=True)
    _data(s, "folder with test/ (image sizes)")
    _average(s)
    s.add_argument("--attributes", action="store_true",
                   help="2019: ClassIds must match attributes")
    s.add_argument("--year", type=int, choices=[2019, 2020], default=2019,
                   help="2020: a match needs IoU > t and, for a truth with attributes, "
                   "attribute F1 > t")
    s.add_argument("--sweep", choices=["grid", "paired"], default="grid",
                   help="2020: every (IoU, F1) threshold pair, or both moved together")
    s.add_argument("--f1", choices=["binary_macro", "positive"], default="binary_macro",
                   help="2020: Fashionpedia's F1 of attribute vectors, or the positive class's")
    _fn(s)
    s.set_defaults(func=_cmd_score)

    s = sub.add_parser("plot", parents=parents, help="figures (PNG)")
    s.add_argument("what", choices=PLOTS)
    s.add_argument("--out", required=True, help="PNG file")
    s.add_argument("--work-dirs", nargs="+", help="losses: mmengine work dirs")
    s.add_argument("--labels", nargs="+", help="losses: a name per work dir")
    s.add_argument("--data", help="pr/confusion/overlays/categories/attributes: the prepared "
                   "data")
    s.add_argument("--predictions", help="pr/confusion/overlays/attributes: a predictions "
                   ".jsonl (attributes: a fold's validation file)")
    s.add_argument("--score-thr", type=float, default=0.3)
    s.add_argument("--images", nargs="+", help="overlays: these ImageIds")
    s.add_argument("--n", type=int, default=6, help="overlays: random images")
    s.add_argument("--seed", type=int, default=0)
    _thresholds(s)
    s.set_defaults(func=_cmd_plot)

    s = sub.add_parser("report", parents=parents, help="one self-contained HTML page: fold "
                       "table, provenance, per-category AP, error breakdown, curves, gallery")
    _fold_inputs(s)
    s.add_argument("--out", default="report.html", help="the HTML file (default report.html)")
    s.add_argument("--work-dirs", nargs="+", default=None,
                   help="training work dirs, for the loss curves")
    s.add_argument("--submission", default=None,
                   help="a submission CSV: its manifest (NAME.json) goes into the provenance")
    s.add_argument("--gallery", type=int, default=6, help="worst and best images shown")
    _average(s)
    s.add_argument("--score-thr", type=float, default=0.3)
    _thresholds(s)
    _postprocess(s, "a file of `imat-kit tune`: the fold figures at its settings beside the "
                 "defaults, and its nested figure")
    s.set_defaults(func=_cmd_report)

    s = sub.add_parser("demo", parents=parents, help="the whole pipeline on synthetic data "
                       "(resumable)")
    s.add_argument("--out", default=None, help="default outputs/demo (2020: outputs/demo2020)")
    s.add_argument("--year", type=int, choices=[2019, 2020], default=2019,
                   help="2020: the synthetic 2020 set, a 2020-layout submission and rule")
    s.add_argument("--images", type=int, default=300)
    s.add_argument("--folds", type=_parse_folds, default=[0, 1], help="folds to train")
    s.add_argument("--iters", type=int, default=360, help="training iterations per fold")
    _jobs(s, 2)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--submission", default=None,
                   help="default submissions/demo.csv (2020: submissions/demo2020.csv)")
    _overwrite(s, "start afresh when OUT holds a demo run with other options")
    _verbose(s)
    s.set_defaults(func=_cmd_demo)

    s = sub.add_parser("run", parents=parents, help="the whole chain for every model and fold, "
                       "to a tuned, validated submission: prepare, train, predict, evaluate, "
                       "tune, ensemble, submit, validate, report (resumable)")
    s.add_argument("targets", nargs="+", metavar="CONFIG|RUN.yaml",
                   help="one or more model configs, or one run file (docs/run.md)")
    s.add_argument("--data", default=None, help="the competition files (prepared when not "
                   "yet)")
    s.add_argument("--out", default=None, help="the run's folder")
    s.add_argument("--folds", type=_parse_folds, default=[0, 1, 2, 3, 4],
                   help="folds to train (default 0,1,2,3,4)")
    s.add_argument("--seed", type=int, default=0,
                   help="the folds', the trainings' and the re-scorer's seed")
    s.add_argument("--gpus", default=None, metavar="IDS|N",
                   help="GPU ids (0,1,2,3): the (model, fold) trainings and predictions run "
                   "at once, one per GPU; with --launcher, the count of each fold's processes")
    _jobs(s, 1)
    s.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none",
                   help="pytorch: each fold in DDP over --gpus N processes; slurm: through "
                   "srun (mim)")
    _cfg_options(s, "train_cfg.max_epochs=24 (every model, training and prediction)")
    s.add_argument("--tta", choices=["flip", "scales", "scales+flip"], default=None,
                   help="test-time augmentation of every model's predictions")
    s.add_argument("--tta-scales", default=None, metavar="F,F,…",
                   help="factors of the test resize for --tta scales")
    s.add_argument("--soft-size", type=int, default=0,
                   help="keep soft masks at SxS for the fusion (e.g. 28)")
    s.add_argument("--checkpoints", type=int, default=1, metavar="N",
                   help="predict with each fold's last N checkpoints, fused")
    s.add_argument("--checkpoint", choices=["last", "best"], default="last",
                   help="best: the checkpoint save_best kept (the competition score on the "
                   "fold)")
    s.add_argument("--submission", default=None, help="default RUN/submission.csv")
    s.add_argument("--no-rescore", action="store_true",
                   help="tune without the learned re-scorer")
    s.add_argument("--no-figures", action="store_true", help="skip the figures")
    s.add_argument("--retrain", action="store_true",
                   help="train again a fold whose work dir holds a run made with other "
                   "settings (default: stop and say what differs)")
    s.add_argument("--dry-run", action="store_true",
                   help="check the configs and the run file, print the jobs and steps, run "
                   "and write nothing")
    _verbose(s)
    s.set_defaults(func=_cmd_run)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imat-kit", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"imat-kit {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parents = [_quiet_parent()]
    for add in (_parser_data_steps, _parser_model_steps, _parser_result_steps):
        add(sub, parents)
    return p


def main(argv: list[str] | None = None) -> int:
    quiet_third_party_warnings()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KitError as e:
        print(f"imat-kit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed: not an error of ours
        sys.stderr.close()
        return 0

