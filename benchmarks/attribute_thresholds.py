"""Per-attribute thresholds (``imat-kit tune-attributes``) against the global 0.5, honestly: the
validation images are split in two halves (seeded); thresholds tuned on one half score the
other, and the two halves' counts are pooled. Reports attribute micro/macro F1 over matched
instances at 0.5, with the cross-half thresholds, and the per-category prior's.

Default input: the validation predictions `benchmarks/attributes.py` leaves in
``outputs/bench/attributes`` (the tiny attribute config on the synthetic 2020 set).

    python benchmarks/attribute_thresholds.py [--data D --predictions F] [--min-support 10]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from _common import REPO, machine

from imat_kit.data.paths import find_labels, read_ann
from imat_kit.eval.analysis import f1_from_counts
from imat_kit.eval.attr_eval import attribute_table, micro_f1, tune_thresholds
from imat_kit.eval.evaluate import read_fold_runs
from imat_kit.postprocess import AttributeThresholds


def _half(run: dict, keys: set[str]) -> dict:
    gt = run["gt"]
    images = [im for im in gt["images"] if im["image_key"] in keys]
    ids = {im["id"] for im in images}
    return {**run, "gt": {**gt, "images": images,
                          "annotations": [a for a in gt["annotations"] if a["image_id"] in ids]},
            "preds": {k: p for k, p in run["preds"].items() if k in keys}}


def _macro(table: pd.DataFrame, prefix: str = "") -> float:
    """Mean F1 over the attributes with support, the halves' counts summed per attribute."""
    cols = [prefix + c for c in ("tp", "fp", "fn")]
    summed = table.groupby("attribute_id")[cols].sum()
    t = f1_from_counts(summed.set_axis(["tp", "fp", "fn"], axis=1))
    return float(t[t.support > 0].f1.fillna(0).mean())


def main() -> None:
    bench = REPO / "outputs" / "bench" / "attributes"
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(bench / "data"))
    ap.add_argument("--predictions", default=str(bench / "fold0_val.jsonl"))
    ap.add_argument("--min-support", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    labels = find_labels(a.data)
    ids = list(labels.attribute_id_list)
    (run,) = read_fold_runs(a.data, [a.predictions])
    run["train_gt"] = read_ann(a.data, "train", run["fold"])
    keys = sorted(im["image_key"] for im in run["gt"]["images"])
    perm = np.random.default_rng(a.seed).permutation(len(keys))
    halves = [{keys[i] for i in perm[: len(keys) // 2]}, {keys[i] for i in perm[len(keys) // 2:]}]
    parts = [_half(run, h) for h in halves]
    at_global, tuned = [], []
    for i, part in enumerate(parts):
        other = tune_thresholds([parts[1 - i]], ids, min_support=a.min_support)["attributes"]
        thr = AttributeThresholds(0.5, {int(k): v["threshold"] for k, v in other.items()})
        at_global.append(attribute_table([part], labels, AttributeThresholds()))
        tuned.append(attribute_table([part], labels, thr))
    g, t = pd.concat(at_global), pd.concat(tuned)
    print(f"{machine()}; {a.predictions}: {len(keys)} images in 2 halves (seed {a.seed}), "
          f"min support {a.min_support}")
    print("| | micro F1 | macro F1 |\n|---|---|---|")
    print(f"| global threshold 0.5 | {micro_f1(g):.3f} | {_macro(g):.3f} |")
    print(f"| per-attribute thresholds tuned on the other half | {micro_f1(t):.3f} | "
          f"{_macro(t):.3f} |")
    print(f"| per-category prior | {micro_f1(g, 'prior_'):.3f} | {_macro(g, 'prior_'):.3f} |")


if __name__ == "__main__":
    main()
