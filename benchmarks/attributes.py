"""Does the attribute branch learn? Attribute F1 of the tiny attribute config against the
per-category prior, on a held-out fold of the synthetic 2020 set.

Generates ``--images`` synthetic 2020-layout images (seed ``--seed``), prepares 5 folds, trains
``tiny_maskrcnn_imat_attr2020.py`` on the other folds for ``--iters`` iterations (CPU), predicts
the held-out fold ``--fold`` and compares, over the instances matched to a truth of the same
category at mask IoU >= 0.5 (score >= 0.3):

* the model: each instance's attributes with probability >= 0.5;
* the prior: each instance gets the k attributes most frequent for its category in the
  training folds (k = that category's median attribute count): what a model that ignores the
  pixels would say.

Reports micro F1 (summed counts) and macro F1 (mean over the attributes with support).
Target (issue 10): model micro F1 >= 0.8 and >= 0.2 above the prior.

    python benchmarks/attributes.py [--images 800] [--iters 1800] [--fold 0]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, machine

from imat_kit.data.paths import read_ann
from imat_kit.eval.analysis import attribute_f1, category_prior, f1_summary, with_prior
from imat_kit.predictions import read_predictions

CONFIG = REPO / "imat_kit" / "configs" / "tiny_maskrcnn_imat_attr2020.py"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=800)
    ap.add_argument("--iters", type=int, default=1800)
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "outputs" / "bench" / "attributes"))
    ap.add_argument("--config", default=str(CONFIG))
    ap.add_argument("--cfg-options", nargs="*", default=[], help="passed to imat-kit train")
    a = ap.parse_args()
    out = Path(a.out)
    data = out / "data"
    kit = [sys.executable, "-m", "imat_kit.cli"]
    t0 = time.perf_counter()
    if not (data / "annotations" / "all.json").exists():
        subprocess.run([*kit, "synth", "--out", str(data), "--images", str(a.images), "--seed",
                        str(a.seed), "--year", "2020", "-q"], check=True)
        subprocess.run([*kit, "prepare", "--data", str(data), "-q"], check=True)
    t_data = time.perf_counter() - t0
    t0 = time.perf_counter()
    config = Path(a.config)
    subprocess.run([*kit, "train", str(config), "--data-root", f"{data}/", "--work-root",
                    str(out / "work"), "--folds", str(a.fold), "-q", "--cfg-options",
                    f"train_cfg.max_iters={a.iters}", f"train_cfg.val_interval={a.iters}",
                    f"param_scheduler.1.end={a.iters}",
                    f"param_scheduler.1.milestones=[{int(a.iters * 0.85)}]",
                    f"default_hooks.checkpoint.interval={a.iters}", *a.cfg_options], check=True)
    t_train = time.perf_counter() - t0
    ckpt = out / "work" / config.stem / f"fold{a.fold}" / f"iter_{a.iters}.pth"
    preds_path = out / f"fold{a.fold}_val.jsonl"
    subprocess.run([*kit, "predict", str(config), str(ckpt), "--split", "val", "--fold",
                    str(a.fold), "--data-root", f"{data}/", "--out", str(preds_path), "-q",
                    *(["--cfg-options", *a.cfg_options] if a.cfg_options else [])],
                   check=True)
    _, preds = read_predictions(preds_path)
    gt = read_ann(data, "val", a.fold)
    prior = category_prior(read_ann(data, "train", a.fold))
    model = f1_summary(attribute_f1(gt, preds, matched_only=True))
    base = f1_summary(attribute_f1(gt, with_prior(preds, prior), matched_only=True))
    result = {"machine": machine(), "config": config.name, "cfg_options": a.cfg_options,
              "images": a.images, "iters": a.iters, "fold": a.fold,
              "seed": a.seed, "train_s": round(t_train, 1), "data_s": round(t_data, 1),
              "model": model, "prior": base,
              "micro_gain": model["micro_f1"] - base["micro_f1"]}
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(f"attribute F1 on held-out fold {a.fold} ({a.images} synthetic 2020 images, "
          f"{a.iters} iterations, {t_train / 60:.1f} min of training on {machine()}):")
    print(f"{'':8} {'micro F1':>9} {'macro F1':>9} {'TP':>6} {'FP':>6} {'FN':>6}")
    for name, r in (("model", model), ("prior", base)):
        print(f"{name:8} {r['micro_f1']:9.3f} {r['macro_f1']:9.3f} {r['tp']:6d} {r['fp']:6d} "
              f"{r['fn']:6d}")
    ok = model["micro_f1"] >= 0.8 and result["micro_gain"] >= 0.2
    print(f"micro F1 gain over the prior: {result['micro_gain']:+.3f} "
          f"(target: >= 0.8 and >= +0.2: {'met' if ok else 'NOT met'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
