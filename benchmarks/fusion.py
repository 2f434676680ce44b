"""Do settings tuned on single models' out-of-fold predictions suit the fusion of the fold
models' test predictions? A simulation at a scale where noise cannot decide: K models, each the
truth plus its own independent errors (missed garments, jittered masks, scores that fall with
mask quality, lower-scoring duplicates, false positives); the validation images split into K
folds, fold k predicted by model k (the out-of-fold predictions `tune` sees); every model
predicts the test images, which are then fused (`imat-kit ensemble`). The settings `tune` finds
on the out-of-fold predictions are applied to each single model's test predictions and to the
fusion, with the fused scores as the weighted mean over all models (``--scores mean``) and mapped
onto the members' score distribution (``--scores members``, the default).

    python benchmarks/fusion.py [--val 3000] [--test 2000] [--models 5] [--metric competition]

Goal (issue 28): fused + tuned above the best single model + tuned.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from _common import machine
from tune import ellipse_counts, jittered

from imat_kit.data.labels import load_labels
from imat_kit.ensemble import ensemble
from imat_kit.eval.runs import FoldRun
from imat_kit.postprocess import from_values
from imat_kit.predictions import ImagePrediction
from imat_kit.progress import progress
from imat_kit.tune.nested import fold_scores, tune

SIZE = 160
N_CAT = 46


def truth_of(rng, n: int, first: int) -> tuple[list, list, dict]:
    """``n`` images of SIZE×SIZE: 1 + Poisson(4) ellipses each, categories Dirichlet."""
    cat_p = np.random.default_rng(99).dirichlet(np.full(N_CAT, 0.6))
    images, anns, shapes = [], [], {}
    for i in range(n):
        key = f"img{first + i:06d}"
        iid = first + i + 1
        images.append({"id": iid, "image_key": key, "file_name": key + ".jpg",
                       "height": SIZE, "width": SIZE})
        items = []
        for _ in range(1 + rng.poisson(4)):
            c = int(rng.choice(N_CAT, p=cat_p))
            ry, rx = SIZE * rng.uniform(0.06, 0.25), SIZE * rng.uniform(0.06, 0.25)
            cy, cx = rng.uniform(ry, SIZE - ry), rng.uniform(rx, SIZE - rx)
            text, box = ellipse_counts(SIZE, SIZE, cy, cx, ry, rx)
            anns.append({"id": len(anns) + 1 + iid * 100, "image_id": iid, "category_id": c,
                         "segmentation": {"size": [SIZE, SIZE], "counts": text}, "bbox": box,
                         "area": 0, "iscrowd": 0, "attribute_ids": []})
            items.append((c, cy, cx, ry, rx))
        shapes[key] = items
    return images, anns, shapes


def model_of(rng, shapes: dict) -> dict:
    """One model's predictions of the images in ``shapes``: its own independent errors."""
    out = {}
    for key, items in shapes.items():
        pred = []  # (category, counts, box, score)
        for c, cy, cx, ry, rx in items:
            if rng.random() < 0.8:
                q = rng.uniform(0, 0.35)
                t, b = jittered(rng, SIZE, SIZE, cy, cx, ry, rx, q)
                pred.append((c, t, b, float(np.clip(0.9 - 1.5 * q + rng.normal(0, 0.12),
                                                    0.02, 1))))
                if rng.random() < 0.2:
                    t, b = ellipse_counts(SIZE, SIZE, cy + 0.3 * ry, cx, ry * 0.7, rx * 0.8)
                    pred.append((c, t, b, float(rng.uniform(0.05, 0.5))))
        for _ in range(rng.poisson(4)):
            ry, rx = SIZE * rng.uniform(0.03, 0.15), SIZE * rng.uniform(0.03, 0.15)
            t, b = ellipse_counts(SIZE, SIZE, rng.uniform(ry, SIZE - ry),
                                  rng.uniform(rx, SIZE - rx), ry, rx)
            pred.append((int(rng.integers(N_CAT)), t, b, float(rng.beta(1.5, 4))))
        pred.sort(key=lambda p: -p[3])
        out[key] = ImagePrediction(key, SIZE, SIZE, np.array([p[0] for p in pred], np.int64),
                                   np.array([p[3] for p in pred], np.float32),
                                   np.array([p[2] for p in pred], np.float32).reshape(-1, 4),
                                   [p[1] for p in pred])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--val", type=int, default=3000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--models", type=int, default=5)
    ap.add_argument("--metric", default="competition",
                    choices=["competition", "competition2020"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    labels = load_labels(year=2019)
    cats = [{"id": c["id"], "name": c["name"]} for c in labels.categories]
    t0 = time.perf_counter()
    runs = []
    per = np.array_split(np.arange(a.val), a.models)
    for k, idx in enumerate(progress(per, desc="validation folds", unit="fold")):
        images, anns, shapes = truth_of(rng, len(idx), int(idx[0]))
        runs.append(FoldRun(f"<fold {k}>", k, {"split": "val"}, model_of(rng, shapes),
                            {"images": images, "annotations": anns, "categories": cats}))
    images, anns, shapes = truth_of(rng, a.test, 10**6)
    test_gt = {"images": images, "annotations": anns, "categories": cats}
    models = [model_of(rng, shapes) for _ in progress(range(a.models), desc="test models")]
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    tuned = tune(runs, labels, metric=a.metric, min_support=20, quiet=True)
    t_tune = time.perf_counter() - t0
    post = from_values(tuned["settings"])
    defaults = from_values({"score_thr": 0.3, "max_per_image": 100, "min_area": 20})

    def score(preds: dict, settings) -> float:
        run = FoldRun("<test>", 0, {"split": "test"}, preds, test_gt)
        return fold_scores([run], settings, labels, metric=a.metric)[0]

    t0 = time.perf_counter()
    fused = {m: ensemble(models, scores=m, quiet=True) for m in ("members", "mean")}
    t_fuse = time.perf_counter() - t0
    singles_tuned = [score(m, post) for m in models]
    singles_default = [score(m, defaults) for m in models]
    out = {"machine": machine(), "val_images": a.val, "test_images": a.test,
           "models": a.models, "metric": a.metric, "build_s": round(build, 1),
           "tune_s": round(t_tune, 1), "fuse_s": round(t_fuse, 1),
           "settings": tuned["settings"], "nested": tuned["nested"]["tuned"],
           "single_default": singles_default, "single_tuned": singles_tuned,
           "best_single_tuned": max(singles_tuned),
           "fused_members_default": score(fused["members"], defaults),
           "fused_members_tuned": score(fused["members"], post),
           "fused_mean_default": score(fused["mean"], defaults),
           "fused_mean_tuned": score(fused["mean"], post)}
    print(json.dumps(out, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    ok = out["fused_members_tuned"] > out["best_single_tuned"]
    print(f"fused + tuned {out['fused_members_tuned']:.4f} vs best single + tuned "
          f"{out['best_single_tuned']:.4f} (mean-score fusion + tuned "
          f"{out['fused_mean_tuned']:.4f}): {'met' if ok else 'NOT met'}", file=sys.stderr)


if __name__ == "__main__":
    main()
