"""``imat-kit`` commands on figures and the report: plot, report (matplotlib loads when the
command runs). Each command's options (``add_…``) sit beside what
it runs (``run_…``)."""

from __future__ import annotations

import argparse

from imat_kit.cli.formatting import plot_lines
from imat_kit.cli.options import (
    average_option,
    fold_files,
    fold_inputs,
    postprocess_option,
    thresholds_option,
)
from imat_kit.plots import PLOTS
from imat_kit.postprocess import SCORE_THR


def add_plot(sub, parents) -> None:
    s = sub.add_parser("plot", parents=parents, help="figures (PNG)")
    s.add_argument("what", choices=PLOTS)
    s.add_argument("--out", required=True, help="PNG file")
    s.add_argument("--work-dirs", nargs="+", help="losses: mmengine work dirs")
    s.add_argument("--labels", nargs="+", help="losses: a name per work dir")
    s.add_argument("--data", help="pr/confusion/overlays/categories/attributes: the prepared "
                   "data")
    s.add_argument("--predictions", help="pr/confusion/overlays/attributes: a predictions "
                   ".jsonl (attributes: a fold's validation file)")
    s.add_argument("--score-thr", type=float, default=SCORE_THR)
    s.add_argument("--images", nargs="+", help="overlays: these ImageIds")
    s.add_argument("--n", type=int, default=6, help="overlays: random images")
    s.add_argument("--seed", type=int, default=0)
    thresholds_option(s)
    s.set_defaults(func=run_plot)


def run_plot(a: argparse.Namespace) -> int:
    from imat_kit.plots import make_plot

    r = make_plot(a.what, a.out, work_dirs=a.work_dirs, labels=a.labels, data=a.data,
                  predictions=a.predictions, score_thr=a.score_thr, images=a.images, n=a.n,
                  seed=a.seed, attribute_thresholds=a.attribute_thresholds)
    for line in plot_lines(r, a.what, a.out):
        print(line)
    return 0


def add_report(sub, parents) -> None:
    s = sub.add_parser("report", parents=parents, help="one self-contained HTML page: fold "
                       "table, provenance, per-category AP, error breakdown, curves, gallery")
    fold_inputs(s)
    s.add_argument("--out", default="report.html", help="the HTML file (default report.html)")
    s.add_argument("--work-dirs", nargs="+", default=None,
                   help="training work dirs, for the loss curves")
    s.add_argument("--submission", default=None,
                   help="a submission CSV: its manifest (NAME.json) goes into the provenance")
    s.add_argument("--gallery", type=int, default=6, help="worst and best images shown")
    average_option(s)
    s.add_argument("--score-thr", type=float, default=SCORE_THR)
    thresholds_option(s)
    postprocess_option(s, "a file of `imat-kit tune`: the fold figures at its settings beside the "
                 "defaults, and its nested figure")
    s.set_defaults(func=run_report)


def run_report(a: argparse.Namespace) -> int:
    from imat_kit.report import build_report

    files = fold_files(a.predictions)
    r = build_report(a.data, files, a.out, work_dirs=a.work_dirs, submission=a.submission,
                     gallery=a.gallery, average=a.average, score_thr=a.score_thr,
                     attribute_thresholds=a.attribute_thresholds, quiet=a.quiet,
                     postprocess=a.postprocess)
    print(f"report of {len(files)} fold(s) → {r.out}")
    return 0

#: command → the function that adds its parser
PARSERS = {"plot": add_plot, "report": add_report}
