"""``imat-kit`` commands on the test set: ensemble, submit, validate,
score. Each command's options (``add_…``) sit beside what
it runs (``run_…``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from imat_kit.cli.formatting import ensemble_line, score_line, submitted_line
from imat_kit.cli.options import (
    average_option,
    data_option,
    fn_option,
    mask_size_option,
    postprocess_option,
    thresholds_option,
)
from imat_kit.data.paths import find_labels, sample_image_ids, test_image_sizes
from imat_kit.ensemble import METHODS, ensemble_files
from imat_kit.postprocess import (
    MAX_PER_IMAGE,
    MIN_AREA,
    SCORE_THR,
    PostProcess,
)
from imat_kit.submission import score_submission, submit, validate_submission


def add_ensemble(sub, parents) -> None:
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
    s.set_defaults(func=run_ensemble)


def run_ensemble(a: argparse.Namespace) -> int:
    r = ensemble_files(a.inputs, a.out, method=a.method, iou=a.iou, weights=a.weights,
                       data=a.data, quiet=a.quiet, scores=a.scores)
    print(ensemble_line(r, a.method, a.out))
    return 0


def add_submit(sub, parents) -> None:
    s = sub.add_parser("submit", parents=parents, help="predictions → competition CSV + "
                       "manifest, validated")
    s.add_argument("--predictions", required=True, help="a predictions .jsonl (test split)")
    data_option(s, "folder with sample_submission.csv and test/")
    s.add_argument("--out", required=True, help="e.g. submissions/NAME.csv")
    s.add_argument("--score-thr", type=float, default=None, help=f"default {SCORE_THR}")
    s.add_argument("--max-per-image", type=int, default=None, help=f"default {MAX_PER_IMAGE}")
    s.add_argument("--min-area", type=int, default=None,
                   help="drop instances left with fewer pixels after overlap removal "
                   f"(default {MIN_AREA})")
    mask_size_option(s)
    s.add_argument("--attributes", action="store_true",
                   help="2019 layout: write ClassId with attributes when predictions carry "
                   "them (a 2020 submission always writes them in AttributesIds)")
    s.add_argument("--evaluation", default=None,
                   help="evaluation.csv of `imat-kit evaluate`: fold scores for the manifest")
    thresholds_option(s)
    postprocess_option(s, "apply the settings of `imat-kit tune` (--score-thr, "
                       "--max-per-image, --min-area and --attribute-thresholds given too "
                       "replace the file's values)")
    s.set_defaults(func=run_submit)


def run_submit(a: argparse.Namespace) -> int:
    given = {k: v for k, v in (("score_thr", a.score_thr), ("max_per_image", a.max_per_image),
                               ("min_area", a.min_area)) if v is not None}
    PostProcess(**given)  # a bad value is refused before anything is read
    man, problems = submit(a.predictions, a.data, a.out, mask_size=a.mask_size,
                           attributes=a.attributes, evaluation=a.evaluation,
                           attribute_thresholds=a.attribute_thresholds, quiet=a.quiet,
                           postprocess=a.postprocess, overrides=given)
    written = Path(a.out).with_name(man["submission"])
    print(submitted_line(man, written))
    for p in problems:
        print(f"{written}: {p}", file=sys.stderr)
    if problems:
        print(f"imat-kit submit: {len(problems)} validation problem(s): the CSV is kept as "
              f"{written} for inspection, nothing was written to {a.out}", file=sys.stderr)
        return 1
    print("validated: no problems")
    return 0


def add_validate(sub, parents) -> None:
    s = sub.add_parser("validate", parents=parents, help="check a submission CSV")
    s.add_argument("--submission", required=True)
    data_option(s, "folder with sample_submission.csv and test/")
    mask_size_option(s)
    s.set_defaults(func=run_validate)


def run_validate(a: argparse.Namespace) -> int:
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


def add_score(sub, parents) -> None:
    s = sub.add_parser("score", parents=parents, help="score a submission against a solution "
                       "in train.csv layout (e.g. the synthetic test_solution.csv)")
    s.add_argument("--submission", required=True)
    s.add_argument("--solution", required=True)
    data_option(s, "folder with test/ (image sizes)")
    average_option(s)
    s.add_argument("--attributes", action="store_true",
                   help="2019: ClassIds must match attributes")
    s.add_argument("--year", type=int, choices=[2019, 2020], default=2019,
                   help="2020: a match needs IoU > t and, for a truth with attributes, "
                   "attribute F1 > t")
    s.add_argument("--sweep", choices=["grid", "paired"], default="grid",
                   help="2020: every (IoU, F1) threshold pair, or both moved together")
    s.add_argument("--f1", choices=["binary_macro", "positive"], default="binary_macro",
                   help="2020: Fashionpedia's F1 of attribute vectors, or the positive class's")
    fn_option(s)
    s.set_defaults(func=run_score)


def run_score(a: argparse.Namespace) -> int:
    r = score_submission(a.submission, a.solution, a.data, average=a.average,
                         attributes=a.attributes, year=a.year, sweep=a.sweep, f1=a.f1,
                         fn=a.fn, quiet=a.quiet)
    print(score_line(r, average=a.average, year=a.year, fn=a.fn, f1=a.f1, sweep=a.sweep,
                     attributes=a.attributes))
    return 0

#: command → the function that adds its parser
PARSERS = {"ensemble": add_ensemble, "submit": add_submit, "validate": add_validate,
           "score": add_score}
