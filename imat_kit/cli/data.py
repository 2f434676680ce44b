"""``imat-kit`` commands on the data: synth, prepare, stats. Each command's options
(``add_…``) sit beside what it runs (``run_…``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from imat_kit.cli.formatting import prepare_lines, stats_lines, synth_line
from imat_kit.cli.options import data_option
from imat_kit.data import synth, synth_real
from imat_kit.data.coco import SIZE_POLICIES
from imat_kit.data.folds import METHODS
from imat_kit.data.paths import find_labels
from imat_kit.data.prepare import prepare
from imat_kit.data.stats import dataset_stats
from imat_kit.errors import KitError


def add_synth(sub, parents) -> None:
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
    s.set_defaults(func=run_synth)


def run_synth(a: argparse.Namespace) -> int:
    if a.scale == "full":
        images = a.images or synth.FULL_IMAGES
        rows = round(images * synth.FULL_ROWS / synth.FULL_IMAGES)
        s = synth_real.generate_full_csv(a.out, seed=a.seed, images=images, rows=rows,
                                         quiet=a.quiet)
    elif a.scale == "real":
        if a.year != 2019:
            raise KitError("synth --scale real writes the 2019 layout only (its images serve "
                           "loading and memory benchmarks, where the layout does not matter)",
                           value=a.year)
        s = synth_real.generate_real_images(a.out, images=a.images or 200,
                                            test_images=a.test_images, seed=a.seed,
                                            quiet=a.quiet)
    else:
        s = synth.generate_images(a.out, images=a.images or 200, test_images=a.test_images,
                                  seed=a.seed, year=a.year, quiet=a.quiet)
    print(synth_line(s, a.out, a.scale))
    return 0


def add_prepare(sub, parents) -> None:
    s = sub.add_parser("prepare", parents=parents, help="train.csv → COCO json, folds, "
                       "per-fold COCO files")
    data_option(s, "folder with the competition files")
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
    s.set_defaults(func=run_prepare)


def run_prepare(a: argparse.Namespace) -> int:
    r = prepare(a.data, a.out, n_folds=a.folds, split=a.split, seed=a.seed,
                size_mismatch=a.size_mismatch, image_check=not a.no_image_check,
                skip_bad_rows=a.skip_bad_rows, annotations=a.annotations, quiet=a.quiet)
    for line in prepare_lines(r):
        print(line)
    return 0


def add_stats(sub, parents) -> None:
    s = sub.add_parser("stats", parents=parents, help="category/attribute counts, image sizes")
    data_option(s, "folder with train.csv")
    s.add_argument("--plot", default=None, help="write the category distribution to this PNG")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=run_stats)


def run_stats(a: argparse.Namespace) -> int:
    from imat_kit.plots import plot_category_distribution

    data = Path(a.data)
    s = dataset_stats(data / "train.csv", find_labels(data))
    for line in stats_lines(s, as_json=a.json):
        print(line)
    if a.plot:
        plot_category_distribution(s["categories"], a.plot)
        print(f"category distribution → {a.plot}")
    return 0

#: command → the function that adds its parser
PARSERS = {"synth": add_synth, "prepare": add_prepare, "stats": add_stats}
