"""``imat-kit demo`` (``make demo``): the whole pipeline on a seeded synthetic dataset.

synthetic data → prepare (5 stratified folds) → train the tiny CPU Mask R-CNN on some folds →
fold-wise evaluation → predict the test set with each fold model → ensemble → submission +
manifest → validate → score against the synthetic test solution → figures. Every step reuses
what a previous run finished, so a second run is quick and an interrupted one resumes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .errors import KitError

REPO = Path(__file__).resolve().parents[1]


def _step(name: str, quiet: bool) -> float:
    if not quiet:
        print(f"\n== {name}", flush=True)
    return time.perf_counter()


def _schedule(iters: int) -> list[str]:
    """cfg-options that give the tiny config a schedule of ``iters`` iterations, validated 4
    times (for the loss and AP curves)."""
    return [f"train_cfg.max_iters={iters}", f"train_cfg.val_interval={max(iters // 4, 1)}",
            f"param_scheduler.0.end={min(100, iters // 4)}",
            f"param_scheduler.1.end={iters}",
            f"param_scheduler.1.milestones=[{int(iters * 0.85)}]",
            f"default_hooks.checkpoint.interval={iters}"]


def run_demo(out: str | Path = "outputs/demo", *, images: int = 300, folds: tuple = (0, 1),
             iters: int = 500, seed: int = 0, submission: str | Path = "submissions/demo.csv",
             config: str | Path | None = None, quiet: bool = False) -> dict:
    """Run (or resume) the demo; returns the key figures, also written to ``OUT/summary.json``."""
    from . import plots
    from .ensemble import ensemble
    from .evaluate import evaluate_files
    from .io import atomic_open
    from .metric import coco_eval, competition_score
    from .mmdet_ext.predict import predict
    from .mmdet_ext.train import train_folds
    from .predictions import header, read_predictions
    from .prepare import ann_relpath, find_labels, prepare, test_image_sizes
    from .stats import dataset_stats, plot_category_distribution
    from .submission import (
        SubmitConfig,
        csv_instances,
        sample_image_ids,
        validate_submission,
        write_submission,
    )
    from .synth import generate_images

    out = Path(out)
    data, preds_dir, figs = out / "data", out / "predictions", out / "figures"
    config = Path(config) if config else REPO / "configs" / "tiny_maskrcnn_imat.py"
    t_all = time.perf_counter()
    timings = {}

    t = _step(f"synthetic dataset: {images} training images, seed {seed}", quiet)
    if not (data / "train.csv").exists():
        generate_images(data, images=images, seed=seed, quiet=quiet)
    timings["synth"] = time.perf_counter() - t

    t = _step("prepare: COCO json, 5 stratified folds", quiet)
    if not (data / "prepare_report.json").exists():
        prepare(data, n_folds=5, split="stratified", seed=seed, quiet=quiet)
    timings["prepare"] = time.perf_counter() - t

    t = _step(f"train {config.name} on folds {list(folds)} ({iters} iterations each, CPU)",
              quiet)
    recs = train_folds(config, list(folds), work_root=out / "work_dirs", data_root=str(data),
                       cfg_options=[*_schedule(iters), f"randomness.seed={seed}"], quiet=quiet)
    ckpt = {r["fold"]: r["checkpoint"] for r in recs}
    timings["train"] = time.perf_counter() - t

    t = _step("predict each fold's validation images and the test set", quiet)
    for k in folds:
        for split in ("val", "test"):
            f = preds_dir / f"fold{k}_{split}.jsonl"
            if not f.exists():
                predict(config, ckpt[k], split=split, fold=k, out=f, data_root=str(data),
                        quiet=quiet)
    timings["predict"] = time.perf_counter() - t

    t = _step("fold-wise evaluation", quiet)
    table, cats = evaluate_files(data, [str(preds_dir / f"fold{k}_val.jsonl") for k in folds])
    names = find_labels(data).class_names
    cats.insert(0, "category", [names[i] for i in cats.index])
    (out / "eval").mkdir(parents=True, exist_ok=True)
    with atomic_open(out / "eval" / "evaluation.csv", "w", newline="") as f:
        table.to_csv(f, index=False, float_format="%.4f")
    with atomic_open(out / "eval" / "per_category_ap.csv", "w", newline="") as f:
        cats.to_csv(f, float_format="%.4f")
    if not quiet:
        cols = ["fold", "segm_AP", "segm_AP50", "segm_AP75", "bbox_AP", "competition"]
        print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    timings["evaluate"] = time.perf_counter() - t

    t = _step("ensemble the fold models' test predictions, write and validate the submission",
              quiet)
    inputs, heads = [], []
    for k in folds:
        h, p = read_predictions(preds_dir / f"fold{k}_test.jsonl")
        heads.append({"file": str(preds_dir / f"fold{k}_test.jsonl"), **h})
        inputs.append(p)
    fused = ensemble(inputs, quiet=quiet)
    ens = preds_dir / "ensemble_test.jsonl"
    with atomic_open(ens, "w") as f:
        f.write(header(split="test", method="fusion", iou=0.5, inputs=heads) + "\n")
        for p in fused.values():
            f.write(p.to_json() + "\n")
    ids = sample_image_ids(data)
    fold_scores = table[["fold", "segm_AP", "segm_AP50", "segm_AP75", "competition"]] \
        .to_dict(orient="records")
    sub = Path(submission)
    write_submission(fused, ids, sub, SubmitConfig(), quiet=quiet,
                     manifest={"predictions": str(ens), "source": {"inputs": heads},
                               "fold_scores": fold_scores, "data": str(data)})
    sizes = test_image_sizes(data)
    problems = validate_submission(sub, ids, sizes, find_labels(data))
    if problems:
        raise KitError("the demo's submission failed validation: "
                       + "; ".join(map(str, problems[:5])), file=str(sub))
    truth = csv_instances(data / "test_solution.csv", sizes, use_attributes=False)
    test_score = competition_score(truth, csv_instances(sub, sizes, use_attributes=False,
                                                        with_scores=True))["score"]
    single = []  # each fold model's own submission, for comparison with the ensemble
    for k, p in zip(folds, inputs):
        own = out / f"fold{k}_only.csv"
        write_submission(p, ids, own, SubmitConfig(), quiet=True)
        single.append(competition_score(truth, csv_instances(
            own, sizes, use_attributes=False, with_scores=True))["score"])
    timings["ensemble_submit"] = time.perf_counter() - t

    t = _step("figures", quiet)
    figs.mkdir(parents=True, exist_ok=True)
    plots.plot_losses([out / "work_dirs" / config.stem / f"fold{k}" for k in folds],
                      figs / "loss_curves.png", [f"fold {k}" for k in folds])
    gt0 = json.loads((data / ann_relpath("val", folds[0])).read_text())
    _, val0 = read_predictions(preds_dir / f"fold{folds[0]}_val.jsonl")
    plots.plot_pr_curves(coco_eval(gt0, val0, "segm"), figs / "pr_curves.png",
                         f"Precision-recall, fold {folds[0]} validation")
    plots.plot_confusion(plots.confusion_matrix(gt0, val0, len(names)), names,
                         figs / "confusion_matrix.png")
    plots.plot_overlays(gt0, val0, data / "train", figs / "overlays.png", n=6, seed=seed)
    plot_category_distribution(dataset_stats(data / "train.csv", find_labels(data))
                               ["categories"], figs / "category_distribution.png")
    timings["figures"] = time.perf_counter() - t

    mean = table.iloc[-2]
    summary = {
        "data": str(data), "work_dirs": str(out / "work_dirs"), "predictions": str(preds_dir),
        "evaluation": str(out / "eval" / "evaluation.csv"), "submission": str(sub),
        "manifest": str(sub.with_suffix(".json")), "figures": str(figs),
        "folds_trained": list(folds), "iterations": iters,
        "val_segm_AP_mean": float(mean.segm_AP), "val_segm_AP50_mean": float(mean.segm_AP50),
        "val_competition_mean": float(mean.competition),
        "test_competition_ensemble": test_score, "test_competition_single_folds": single,
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
        print(f"test competition score: ensemble {test_score:.4f}, single folds "
              + ", ".join(f"{s:.4f}" for s in single))
        for key in ("data", "work_dirs", "predictions", "evaluation", "submission", "manifest",
                    "figures"):
            print(f"  {key:<12} {summary[key]}")
    return summary

