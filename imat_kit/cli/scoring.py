"""``imat-kit`` commands on the validation folds: evaluate, tune, tune-attributes. Each
command's options (``add_…``) sit beside what it runs (``run_…``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from imat_kit.cli.formatting import (
    print_attribute_figures,
    print_evaluation,
    threshold_lines,
    tune_lines,
    tuned_attributes_line,
)
from imat_kit.cli.options import (
    average_option,
    fn_option,
    fold_files,
    fold_inputs,
    postprocess_option,
    thresholds_option,
)
from imat_kit.data.paths import find_labels
from imat_kit.eval.attr_eval import tune_thresholds, write_thresholds
from imat_kit.eval.evaluate import evaluate_to
from imat_kit.eval.runs import read_fold_runs
from imat_kit.postprocess import SCORE_THR, load_postprocess, load_thresholds, write_postprocess
from imat_kit.tune.nested import tune


def add_evaluate(sub, parents) -> None:
    s = sub.add_parser("evaluate", parents=parents, help="fold table: COCO AP and competition "
                       "score per fold, mean ± std, per-category AP")
    fold_inputs(s)
    s.add_argument("--out", default=".", help="folder for evaluation.csv, per_category_ap.csv")
    average_option(s)
    s.add_argument("--score-thr", type=float, default=SCORE_THR,
                   help="score threshold for the competition score (COCO AP uses all)")
    s.add_argument("--bbox", action="store_true",
                   help="add the box AP (column bbox_AP): a second COCO pass over the boxes")
    thresholds_option(s)
    postprocess_option(s, "a file of `imat-kit tune`: add the fold figures at its settings "
                 "(columns *_post) beside the defaults")
    fn_option(s)
    s.set_defaults(func=run_evaluate)


def run_evaluate(a: argparse.Namespace) -> int:
    files = fold_files(a.predictions)
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


def add_tune(sub, parents) -> None:
    s = sub.add_parser("tune", parents=parents, help="tune submit's post-processing (score "
                       "thresholds, cap, min area, mask threshold, attribute decoding) on the "
                       "validation folds, with a nested cross-fold figure")
    fold_inputs(s)
    s.add_argument("--out", default="postprocess.json", help="the settings JSON")
    s.add_argument("--metric", choices=["competition", "competition2020", "ap_iou_f1"],
                   default=None, help="what to maximise (default: competition2020 for 2020 "
                   "data, else competition)")
    fn_option(s)
    s.add_argument("--rescore", action="store_true",
                   help="also fit a model of each prediction's chance to be right (the 2020 "
                   "winner's move) whose output replaces the score; kept only where its nested "
                   "gain is positive (docs/predict-and-submit.md)")
    s.add_argument("--seed", type=int, default=0, help="--rescore: the model's seed")
    s.add_argument("--min-support", type=int, default=20,
                   help="categories with at least this many matched truths get their own "
                   "score threshold (default 20)")
    s.set_defaults(func=run_tune)


def run_tune(a: argparse.Namespace) -> int:
    labels = find_labels(a.data)
    metric = a.metric or ("competition2020" if labels.year == 2020 else "competition")
    runs = read_fold_runs(a.data, fold_files(a.predictions))
    r = tune(runs, labels, metric=metric, min_support=a.min_support, quiet=a.quiet,
             data=a.data, fn=a.fn, rescore=a.rescore, seed=a.seed)
    write_postprocess(r, a.out)
    for line in tune_lines(r):
        print(line)
    print(f"→ {a.out}")
    return 0


def add_tune_attributes(sub, parents) -> None:
    s = sub.add_parser("tune-attributes", parents=parents, help="one probability threshold "
                       "per attribute, maximising its F1 over the validation folds")
    fold_inputs(s)
    s.add_argument("--out", default="attribute_thresholds.json",
                   help="a postprocess file: the defaults, attributes decoded at the tuned "
                   "thresholds (for --attribute-thresholds or --postprocess)")
    s.add_argument("--min-support", type=int, default=10,
                   help="attributes with fewer matched truths keep the global threshold")
    s.add_argument("--global-threshold", type=float, default=None,
                   help="the threshold of the attributes below --min-support (default: tuned "
                   "for the micro F1 of all attributes pooled)")
    s.add_argument("--score-thr", type=float, default=SCORE_THR,
                   help="detections below this score are not matched")
    s.set_defaults(func=run_tune_attributes)


def run_tune_attributes(a: argparse.Namespace) -> int:
    runs = read_fold_runs(a.data, fold_files(a.predictions))
    labels = find_labels(a.data)
    r = tune_thresholds(runs, list(labels.attribute_id_list),
                        min_support=a.min_support, global_threshold=a.global_threshold,
                        score_thr=a.score_thr)
    write_thresholds(r, a.out, labels, a.data)
    if not a.quiet:
        for line in threshold_lines(r, labels, limit=20):
            print(line)
    print(tuned_attributes_line(r, a.min_support, a.out))
    return 0

#: command → the function that adds its parser
PARSERS = {"evaluate": add_evaluate, "tune": add_tune, "tune-attributes": add_tune_attributes}
